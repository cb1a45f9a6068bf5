"""From feasibility to a pilot on a production line: the site threshold (``gate``) first.

``fit_gate`` turns labels and one model's scores into a threshold on the logit margin with its error rates and
costs; ``Gate.decide`` applies it; a gate names the model version it was fitted for and refuses any other.
"""
from .gate import Gate, GateMismatchError, describe_gate, fit_gate, model_identity

__all__ = ["Gate", "GateMismatchError", "describe_gate", "fit_gate", "model_identity"]
