"""Checkpoints: the learned tensors as safetensors plus a JSON card. Nothing is unpickled (a checkpoint from someone
else must be data, not code; docs/design.md, 'Weights, checkpoints and export').

A checkpoint is a folder (or the pair ``NAME.safetensors`` + ``NAME.json``) holding only the adapter
tensors (text context, visual prompts, tuned block copies) and a card that records the backbone, the prompt
config, the trainable set, the training config, data and split hashes, metrics and library versions.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import load_file, save_file

from ._version import __version__
from .caveats import caveat_of
from .csvio import atomic_path, atomic_write
from .hashing import file_sha256
from .data.transforms import as_spec, backbone_spec

CARD_VERSION = 1


class CheckpointMismatchError(ValueError):
    """The checkpoint was made for another backbone or prompt layout."""


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    card: dict[str, Any]
    path: Path


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix(".safetensors"), path.with_suffix(".json")
    return path / "adapter.safetensors", path / "card.json"


def _card_beside(tensor_path: Path) -> Path:
    """The card that goes with a checkpoint's tensor file (``card.json`` in a folder, else ``NAME.json``)."""
    tensor_path = Path(tensor_path)
    return tensor_path.with_name("card.json") if tensor_path.name == "adapter.safetensors" \
        else tensor_path.with_suffix(".json")


def library_versions() -> dict[str, str]:

    return {"clipiqa": __version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
            "python": platform.python_version()}


def save_checkpoint(model, path: str | os.PathLike, *, trainable: str | None = None,
                    training: dict | None = None, data: dict | None = None, metrics: dict | None = None,
                    extra: dict | None = None, qgr: dict | None = None, prompt_words_before=None) -> Path:
    """Save the adapter tensors of ``model`` and a card. ``path`` is a folder or ``NAME.safetensors``.

    ``qgr``: what the card says about the QGR strength the tensors were trained with (``History.qgr_record()``:
    the strength used and, when it was chosen automatically, the inner-CV score per grid value).
    ``prompt_words_before``: :func:`clipiqa.explain.prompt_words.prompt_words` of the model before training;
    given, the card also records what the learned text context has become (``prompt_words``: before and after),
    which ``clipiqa explain --prompts CKPT --prompt-words`` shows."""
    tensor_path, card_path = _paths(path)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.adapter_parameters()}
    card = {
        "format": "clipiqa-checkpoint", "version": CARD_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backbone": model.source.card(),
        "prompt_config": model.prompt_config.to_dict(),
        "tuned_blocks": model.n_tuned_blocks,
        "eval_transform": model.transform_spec.to_dict(),  # applied wherever this checkpoint scores
        "trainable": trainable,  # a label
        "training": training or {},
        "data": data or {},
        "metrics": metrics or {},
        "libraries": library_versions(),
        **({"qgr": qgr} if qgr is not None else {}),
        **(extra or {}),
    }
    if caveat_of(model):  # random-init backbone or the lesson toy
        card["warning"] = caveat_of(model).text
    if prompt_words_before is not None:
        from .explain.prompt_words import prompt_words  # one text-encoder pass, only when asked for
        card["prompt_words"] = {"before": prompt_words_before.to_dict(), "after": prompt_words(model).to_dict()}
    card = json.loads(json.dumps(card, default=str))  # exactly what the file will hold (the hashes cover that)
    with atomic_path(tensor_path) as tmp:  # tensors first, then the card that vouches for them (both atomic)
        save_file(tensors, tmp, metadata={"format": "clipiqa-checkpoint"})
        card["integrity"] = {**integrity_record(tmp, tensors), "card_fields_sha256": card_field_hashes(card)}
    with atomic_write(card_path) as f:
        f.write(json.dumps(card, indent=2))
    return tensor_path


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint; every problem is a :class:`CheckpointCorruptError` naming the file.

    Checked in order: the card is JSON, is a clipiqa card and has the :data:`REQUIRED_CARD_KEYS`; the
    safetensors file is whole (its header length, header JSON and data extent agree with the file size); its
    SHA-256 matches the card's ``integrity`` record (a mismatch names the tensors that changed); the card's own
    entries match ``integrity.card_fields_sha256`` (an edited card is refused, naming the entries: the
    preprocessing, prompt settings and backbone in it all change scores); every tensor is finite. Older cards
    load with a warning: one without an ``integrity`` record (no hash at all), one whose record has no
    ``card_fields_sha256`` (made before clipiqa hashed the card's entries; edits to it cannot be detected).
    """
    tensor_path, card_path = _paths(path)
    for p in (tensor_path, card_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file {p} is missing; a clipiqa checkpoint is a folder with "
                                    "adapter.safetensors + card.json, or NAME.safetensors + NAME.json")
    card = _read_card(card_path)
    _check_safetensors_layout(tensor_path)
    record = card.get("integrity")
    if record is None:
        warnings.warn(f"checkpoint card {card_path} has no SHA-256 of {tensor_path.name} (made before clipiqa "
                      "recorded one), so corruption of the tensors cannot be detected; save it again to add one",
                      UserWarning, stacklevel=2)
    else:
        _check_card_fields(card_path, card, record)
        _check_file_hash(tensor_path, card_path, record)
    try:
        tensors = load_file(str(tensor_path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type, naming no file
        raise CheckpointCorruptError(f"checkpoint tensors {tensor_path} cannot be read: {e}") from e
    _check_finite(tensor_path, tensors)
    return Checkpoint(tensors=tensors, card=card, path=tensor_path)


REQUIRED_CARD_KEYS = ("format", "backbone", "prompt_config")
"""Card entries a checkpoint cannot be applied without."""


class CheckpointCorruptError(ValueError):
    """A checkpoint file is damaged or incomplete; the message names the file and what is wrong."""


def integrity_record(tensor_file: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The card's ``integrity`` entry: SHA-256 and size of the tensor file, and SHA-256 of every tensor's bytes."""
    return {"algorithm": "sha256", "sha256": file_sha256(tensor_file), "size": os.path.getsize(tensor_file),
            "tensors_sha256": {name: tensor_sha256(t) for name, t in sorted(tensors.items())}}


def card_field_hashes(card: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of each card entry but ``integrity``, of its JSON written canonically (sorted keys, no spaces), so
    reformatting the file keeps the hashes and any changed value does not."""
    return {key: hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"),
                                           ensure_ascii=True).encode("ascii")).hexdigest()
            for key, value in card.items() if key != "integrity"}


def _check_card_fields(card_path: Path, card: dict[str, Any], record: Any) -> None:
    expected = record.get("card_fields_sha256") if isinstance(record, dict) else None
    if expected is None:
        warnings.warn(f"checkpoint card {card_path} has no hash of its own entries (made before clipiqa recorded "
                      "one), so an edit to its preprocessing or prompt settings cannot be detected; save the "
                      "checkpoint again to add one", UserWarning, stacklevel=3)
        return
    if not isinstance(expected, dict):
        raise CheckpointCorruptError(f"checkpoint card {card_path}: its integrity entry card_fields_sha256 is "
                                     "damaged; restore the card or save the checkpoint again")
    actual = card_field_hashes(card)
    changed = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
    if changed:
        raise CheckpointCorruptError(
            f"checkpoint card {card_path} was edited after it was saved (changed: {', '.join(changed)}); the "
            "card decides how images are scored (preprocessing, prompts, backbone), so it is refused. Restore the "
            "original card or save the checkpoint again (from the model, or by training again)")


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and raw bytes (CPU, contiguous)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _read_card(card_path: Path) -> dict[str, Any]:
    try:
        text = card_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointCorruptError(f"checkpoint card {card_path} cannot be read: {e}") from e
    try:
        card = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointCorruptError(f"checkpoint card {card_path} is not valid JSON ({e.msg} at line {e.lineno}, "
                                     f"column {e.colno}); it is damaged or was cut short: save the checkpoint "
                                     "again") from e
    if not isinstance(card, dict):
        raise CheckpointCorruptError(f"checkpoint card {card_path} holds a JSON {type(card).__name__}, not an "
                                     "object: it is not a clipiqa checkpoint card")
    if "format" in card and card.get("format") != "clipiqa-checkpoint":
        raise CheckpointCorruptError(f"{card_path} is not a clipiqa checkpoint card "
                                     f"(format={card.get('format')!r})")
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise CheckpointCorruptError(f"checkpoint card {card_path} is missing required entries: "
                                     f"{', '.join(missing)}; a clipiqa card needs {', '.join(REQUIRED_CARD_KEYS)} "
                                     "(it is damaged or was not written by clipiqa.save_checkpoint)")
    for key in ("backbone", "prompt_config"):
        if not isinstance(card[key], dict):
            raise CheckpointCorruptError(f"checkpoint card {card_path}: entry {key!r} is a "
                                         f"{type(card[key]).__name__}, not an object")
    return card


def _check_safetensors_layout(path: Path) -> None:
    """Header length, header JSON and data extent of a safetensors file, with a message naming what is wrong."""
    size = path.stat().st_size
    where = f"checkpoint tensors {path}"
    if size < 8:
        raise CheckpointCorruptError(f"{where} is truncated: {size} bytes, shorter than the 8-byte header length")
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > size - 8:
            raise CheckpointCorruptError(
                f"{where} has a bad header or is truncated: its header length field says {n:,} bytes but only "
                f"{size - 8:,} follow")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointCorruptError(f"{where} has a bad header: it is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointCorruptError(f"{where} has a bad header: not a JSON object")
    try:
        ends = [int(info["data_offsets"][1]) for name, info in header.items() if name != "__metadata__"]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise CheckpointCorruptError(f"{where} has a bad header: a tensor entry lacks valid data_offsets "
                                     f"({type(e).__name__}: {e})") from e
    need, have = max(ends, default=0), size - 8 - n
    if need > have:
        raise CheckpointCorruptError(f"{where} is truncated: its tensors need {need:,} bytes of data, the file "
                                     f"holds {have:,}")


def _check_file_hash(tensor_path: Path, card_path: Path, record: dict[str, Any]) -> None:
    expected = record.get("sha256") if isinstance(record, dict) else None
    if not isinstance(expected, str):
        raise CheckpointCorruptError(f"checkpoint card {card_path}: its integrity entry has no sha256")
    actual = file_sha256(tensor_path)
    if actual == expected:
        return
    changed = _changed_tensors(tensor_path, record.get("tensors_sha256") or {})
    raise CheckpointCorruptError(
        f"checkpoint tensors {tensor_path} do not match the SHA-256 recorded in {card_path.name} (the file changed "
        f"after it was saved: a flipped byte, a partial copy or an edit; or the two files come from different "
        f"saves){': tensors that differ: ' + ', '.join(changed) if changed else ''}. Use an intact copy or save the "
        "checkpoint again")


def _changed_tensors(tensor_path: Path, expected: dict[str, str]) -> list[str]:
    try:
        tensors = load_file(str(tensor_path))
    except Exception:  # noqa: BLE001 - only used to make the message more precise
        return []
    names = sorted(set(tensors) | set(expected))
    return [n for n in names if n not in tensors or n not in expected or tensor_sha256(tensors[n]) != expected[n]]


def _check_finite(tensor_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    bad = [name for name, t in sorted(tensors.items())
           if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointCorruptError(
            f"checkpoint tensors {tensor_path} hold NaN or infinite values in {', '.join(bad[:5])}"
            f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}: the training that wrote it diverged. It is "
            "refused because every score from it would be NaN; train again (e.g. with a lower learning rate)")


def check_compatible(model, card: dict[str, Any]) -> None:
    """Refuse a checkpoint made for another backbone or another adapter, saying what differs. A model without
    visual prompts or tuned blocks fits a card that declares them: ``apply_checkpoint`` builds them."""
    saved, here = card["backbone"], model.source.card()
    diffs = [f"{key}: checkpoint has {saved.get(key)!r}, this model has {here.get(key)!r}"
             for key in ("arch", "fingerprint") if saved.get(key) != here.get(key)]
    if diffs:
        raise CheckpointMismatchError(
            f"checkpoint was made for backbone {saved.get('preset')!r} ({saved.get('weights')}) and does not fit "
            f"this model ({here.get('preset')!r}, {here.get('weights')}): " + "; ".join(diffs)
            + ". Load the model with the same preset and weights the checkpoint names.")
    diffs = _adapter_diffs(model, card)
    if diffs:
        raise CheckpointMismatchError(
            "checkpoint adapter differs from this model's: " + "; ".join(diffs) + ". Load the model with "
            "load_model(..., prompts=<checkpoint path>) so its adapter is built from the card")


_BUILT_FROM_CARD = ("visual_tokens", "visual_depth")  # prompt parts a model without them gets from the card


def card_adapter_spec(card: dict[str, Any]) -> dict[str, Any]:
    """The adapter a card declares, in the form of ``IQAModel.adapter_spec``."""
    prompt = card.get("prompt_config") or {}
    return {"n_ctx": prompt.get("n_ctx"), "visual_tokens": int(prompt.get("visual_tokens") or 0),
            "visual_depth": prompt.get("visual_depth"), "tuned_blocks": int(card.get("tuned_blocks") or 0)}


def _adapter_diffs(model, card: dict[str, Any]) -> list[str]:
    """What keeps ``card``'s adapter from being built on ``model``: parts the model has in another form (parts it
    lacks are built), and prompt settings that differ."""
    saved, here = card_adapter_spec(card), model.adapter_spec
    keys = ["n_ctx"]
    if here["visual_tokens"]:
        keys += list(_BUILT_FROM_CARD)
    if here["tuned_blocks"]:
        keys.append("tuned_blocks")
    saved_prompt, here_prompt = card.get("prompt_config") or {}, model.prompt_config.to_dict()
    others = sorted((set(saved_prompt) | set(here_prompt)) - {"n_ctx", *_BUILT_FROM_CARD})
    return ([f"{k}: checkpoint has {saved[k]!r}, this model has {here[k]!r}" for k in keys if saved[k] != here[k]]
            + [f"{k}: checkpoint has {saved_prompt.get(k)!r}, this model has {here_prompt.get(k)!r}"
               for k in others if saved_prompt.get(k) != here_prompt.get(k)])


def build_declared_adapter(model, card: dict[str, Any]) -> None:
    """Build on ``model`` the adapter parts ``card`` declares that it lacks (visual prompts, tuned blocks)."""
    parts = card_adapter_spec(card)
    if parts["visual_tokens"]:
        model.add_visual_prompt(parts["visual_tokens"], parts["visual_depth"])
    if parts["tuned_blocks"]:
        model.add_tuned_blocks(parts["tuned_blocks"])


def apply_checkpoint(model, checkpoint: Checkpoint | str | os.PathLike) -> dict[str, Any]:
    """Copy the checkpoint's tensors into ``model`` (after checking it fits); returns the card."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = read_checkpoint(checkpoint)
    check_compatible(model, checkpoint.card)
    # the evaluation transform the checkpoint was trained with; cards without it: the backbone's own
    spec = checkpoint.card.get("eval_transform")
    if spec is not None:
        try:
            spec = as_spec(spec)
        except (TypeError, ValueError) as e:
            raise CheckpointMismatchError(f"checkpoint {checkpoint.path}: its card's eval_transform is unusable: "
                                          f"{e}") from e
        side = backbone_spec(model).size
        if spec.size != side and not getattr(model, "native_resolution", False):
            raise CheckpointMismatchError(
                f"checkpoint card {_card_beside(checkpoint.path)}: eval_transform size {spec.size} does not fit this "
                f"backbone, which takes {side} x {side} images (the card was edited or belongs to another "
                "backbone); restore the card or save the checkpoint again")
    build_declared_adapter(model, checkpoint.card)  # exactly the card's parts: nothing more, nothing less
    params = dict(model.adapter_parameters())
    missing = sorted(set(params) - set(checkpoint.tensors))
    unexpected = sorted(set(checkpoint.tensors) - set(params))
    if missing or unexpected:
        raise CheckpointMismatchError(f"checkpoint {checkpoint.path} tensors do not match the model: "
                                      f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            t = checkpoint.tensors[name]
            if t.shape != p.shape:
                raise CheckpointMismatchError(f"tensor {name}: checkpoint shape {tuple(t.shape)} != model "
                                              f"shape {tuple(p.shape)}")
            p.copy_(t.to(p.device, p.dtype))
    model.transform_spec = spec
    model.enable_adapters(True)
    return checkpoint.card
