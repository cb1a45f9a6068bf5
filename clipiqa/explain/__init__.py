"""Explain quality scores: pixel attributions and quantified diagnostics (DESIGN 7).

``attribute(model, images, method)`` gives maps aligned with the input pixels for every method in
``METHODS``; ``clipiqa.explain.diagnostics`` asks whether a score tracks distortions or content, and how far an
adapted model's scene understanding drifted from zero-shot CLIP; ``clipiqa.explain.plots`` draws the results.
"""
from .attribution import METHODS, ZeroShot, attribute, attribute_channels, completeness_error, make_baseline, \
    zero_shot

__all__ = ["METHODS", "ZeroShot", "attribute", "attribute_channels", "completeness_error", "make_baseline",
           "zero_shot"]
