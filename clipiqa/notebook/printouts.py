"""What a notebook prints about its model: the weights line and the caveat of random-init weights or the lesson
toy (the words come from :mod:`clipiqa.caveats`)."""
from __future__ import annotations

from ..caveats import caveat_of

__all__ = ["caveat", "say_if_random_init", "say_model"]

def caveat(obj) -> str:
    """What a figure or printout made with ``obj`` (an ``IQAModel`` or a ``Session``) must say: the random-init
    warning, the lesson toy's caveat, or '' for real weights (:func:`clipiqa.caveats.caveat_of`, its text)."""
    return caveat_of(obj).text


def say_if_random_init(model) -> None:
    """Print the caveat of ``model`` (an ``IQAModel`` or a ``Session``) under a notebook cell's numbers: random-init
    weights or the lesson toy, and how to get real numbers; nothing for real weights."""
    if caveat(model):
        print(f"⚠ {caveat(model)}. Set SMOKE = False for real numbers.")


def say_model(model) -> None:
    """Print the weights line of ``model`` (which model, weights file or hub repository, fingerprint, device,
    precision; :func:`clipiqa.weights.weights_line`) and its caveat: what a notebook shows once its model is
    loaded, in smoke and in real mode alike."""
    from ..weights import weights_line
    print(weights_line(model))
    say_if_random_init(model)
