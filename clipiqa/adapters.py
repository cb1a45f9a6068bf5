"""What is trainable, and how it is built (docs/design.md, 'The model and its adapters'): the names of the
trainable sets and the rule that says, for each learnable tensor of an :class:`~clipiqa.model.IQAModel`, whether a
set trains it. The model builds the parts (``add_visual_prompt``, ``add_tuned_blocks``); this module only decides,
with pure functions a test can read.

The sets:

* ``prompts``: the text context and VPT-deep visual prompts (built with ``DEFAULT_VISUAL_TOKENS`` tokens when the
  model has none);
* ``last-blocks``: the text context and tuned copies of the last ``k`` blocks of both towers with their final
  norms; no visual prompts are added, existing ones (from a meta checkpoint) stay frozen. This is the trainable set
  of GRMP-IQA (Li et al. 2024);
* ``text``: the text context only;
* ``none``: nothing (the adapters stay as they are).
"""
from __future__ import annotations

TRAINABLE_SETS = ("prompts", "last-blocks", "text", "none")
LAST_BLOCKS = "last-blocks"


def trainable_set(name: str, field: str = "trainable set") -> str:
    """``name`` when it names a trainable set; a ``ValueError`` naming the value and the allowed names otherwise."""
    if name not in TRAINABLE_SETS:
        raise ValueError(f"{field} {name!r} is not allowed; use one of {', '.join(TRAINABLE_SETS)}")
    return name


def tuned_block_count(k: int, n_visual: int, n_text: int) -> int:
    """How many last blocks ``last-blocks`` tunes for ``k`` asked: ``k``, but at most all blocks but the first of
    the shallower tower (the tiny test model has fewer than ``k + 1``), and at least 1."""
    return max(1, min(k, n_visual - 1, n_text - 1))


def trains(which: str, tensor_name: str) -> bool:
    """Whether the set ``which`` trains the adapter tensor called ``tensor_name`` (a name of
    ``IQAModel.adapter_parameters``: ``text_prompt.*``, ``visual_prompt.*`` or ``tuned.*``)."""
    which = trainable_set(which)
    tuned, text = tensor_name.startswith("tuned."), tensor_name.startswith("text_prompt.")
    if which == "prompts":
        return not tuned
    if which == LAST_BLOCKS:
        return tuned or text
    return which == "text" and text


__all__ = ["TRAINABLE_SETS", "LAST_BLOCKS", "trainable_set", "tuned_block_count", "trains"]
