"""Explain quality scores: pixel attributions and quantified diagnostics (docs/design.md, 'Explainability').

``attribute(model, images, method)`` gives maps aligned with the input pixels for every method in
``ATTRIBUTION_METHODS`` (add one with ``register_attribution``); ``clipiqa.explain.diagnostics`` asks whether a score tracks distortions or content, and how far an
adapted model's scene understanding drifted from zero-shot CLIP; ``clipiqa.explain.plots`` draws the results.

What is explained: an ``IQAModel`` maps images to its **logit margin** ``z_high - z_low`` (float32,
head outside autocast), so attributions and diagnostics explain the margin by default: p_high saturates at CLIP's
logit scale and its gradients vanish. Pass ``target_fn=p_high_target`` to explain p_high instead, or any
``target_fn(model, images) -> [B]``.
"""
from .attribution import (ATTRIBUTION_METHODS, AttributionFn, AttributionMethod, ScoreFn, FrozenCLIP, attribute,
                          attribute_channels, completeness_error, make_baseline, register_attribution, frozen_clip)
from ..inference import margin_target, p_high_target

__all__ = ["ATTRIBUTION_METHODS", "AttributionFn", "AttributionMethod", "ScoreFn", "register_attribution", "FrozenCLIP", "attribute", "attribute_channels", "completeness_error", "make_baseline",
           "frozen_clip", "margin_target", "p_high_target"]
