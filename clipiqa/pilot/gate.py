"""A site threshold ("gate") on the logit margin: which inspection images pass, at what cost of mistakes.

From a session's labels (ACR 1-5 MOS per image) and one model's scores of the same images, with a pass level
(MOS >= ``pass_at`` is acceptable) and the costs of a false accept (a bad image passed) and a false reject (a good
image stopped), :func:`fit_gate` picks the margin threshold that minimises the expected cost per image on the
labelled images, and reports what an engineer needs to trust it: the ROC curve and its AUC, the confusion matrix,
the false-accept and false-reject rates with bootstrap confidence intervals, and a plain warning when the labels
are too few for the rates to mean anything.

The threshold is chosen on the same images the rates are measured on, so the rates are optimistic; the bootstrap
refits the threshold in every resample, so its intervals include the uncertainty of the choice itself.

A gate belongs to one model version: it records the model's identity (backbone fingerprint and checkpoint
SHA-256) and :meth:`Gate.check_model` refuses another, because a margin of 0.3 means something else under
another checkpoint.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..configs import invalid
from ..csvio import atomic_write

GATE_FORMAT = "clipiqa-gate"
MIN_PER_CLASS = 10
"""Below this many acceptable or unacceptable labelled images, the error rates are flagged as not meaningful."""


class GateMismatchError(ValueError):
    """A gate was fitted for another model version than the one scoring now."""


@dataclass(frozen=True)
class Gate:
    """A fitted threshold: ``decide(margin)`` is "pass" when ``margin >= threshold``."""

    threshold: float
    pass_at: float
    cost_false_accept: float
    cost_false_reject: float
    model: dict[str, Any]
    n_labelled: int
    n_acceptable: int
    auc: float
    false_accept_rate: float
    false_reject_rate: float
    false_accept_ci: tuple[float, float]
    false_reject_ci: tuple[float, float]
    expected_cost_per_1000: float
    confusion: dict[str, int]
    roc: list[tuple[float, float, float]] = field(default_factory=list)  # (threshold, fpr, tpr)
    warning: str = ""

    def decide(self, margins) -> list[str | None]:
        """"pass" / "reject" per margin; None where the margin is missing or not finite (a row that failed)."""
        out: list[str | None] = []
        for m in margins:
            try:
                m = float(m)
            except (TypeError, ValueError):
                out.append(None)
                continue
            out.append(None if not math.isfinite(m) else "pass" if m >= self.threshold else "reject")
        return out

    def check_model(self, model: dict[str, Any], gate_path: str | os.PathLike = "gate.json") -> None:
        """Refuse a model whose identity differs from the one the gate was fitted for, naming what differs."""
        differs = [k for k in ("fingerprint", "checkpoint_sha256") if self.model.get(k) != model.get(k)]
        if differs:
            said = "; ".join(f"{k}: gate {self.model.get(k)!r}, model {model.get(k)!r}" for k in differs)
            raise GateMismatchError(
                f"{gate_path} was fitted for another model version ({said}). A threshold on the margin holds only "
                "for the model it was fitted with: fit a new gate with this model's scores (clipiqa gate fit), or "
                "score with the model the gate names")

    def to_dict(self) -> dict[str, Any]:
        return {"format": GATE_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Gate":
        if data.get("format") != GATE_FORMAT:
            raise ValueError(f"not a clipiqa gate (format {data.get('format')!r}, expected {GATE_FORMAT!r})")
        fields = {k: v for k, v in data.items() if k != "format"}
        for key in ("false_accept_ci", "false_reject_ci"):
            fields[key] = tuple(fields[key])
        fields["roc"] = [tuple(r) for r in fields.get("roc", [])]
        return cls(**fields)

    def save(self, path: str | os.PathLike) -> None:
        with atomic_write(path) as f:
            f.write(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Gate":
        try:
            return cls.from_dict(json.loads(open(path, encoding="utf-8").read()))
        except FileNotFoundError:
            raise FileNotFoundError(f"gate file {path} does not exist; make one with clipiqa gate fit") from None
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a readable clipiqa gate ({e}); fit it again with clipiqa gate fit") \
                from None


# ------------------------------------------------------------------------------------------------ the math
def candidate_thresholds(margins: np.ndarray) -> np.ndarray:
    """Every distinct decision: below all margins (all pass), between neighbours, above all (all reject)."""
    u = np.unique(margins)
    mids = (u[:-1] + u[1:]) / 2 if len(u) > 1 else np.array([])
    return np.concatenate([[u[0] - 1.0], mids, [u[-1] + 1.0]])


def confusion(margins: np.ndarray, acceptable: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts of true/false accepts and rejects at ``threshold`` (accept = pass = margin >= threshold)."""
    passed = margins >= threshold
    return {"true_accept": int(np.sum(passed & acceptable)), "false_accept": int(np.sum(passed & ~acceptable)),
            "true_reject": int(np.sum(~passed & ~acceptable)), "false_reject": int(np.sum(~passed & acceptable))}


def expected_cost(margins: np.ndarray, acceptable: np.ndarray, threshold: float, cost_fa: float,
                  cost_fr: float) -> float:
    """Mean cost per image at ``threshold``: (cost_fa * false accepts + cost_fr * false rejects) / n."""
    c = confusion(margins, acceptable, threshold)
    return (cost_fa * c["false_accept"] + cost_fr * c["false_reject"]) / len(margins)


def best_threshold(margins: np.ndarray, acceptable: np.ndarray, cost_fa: float, cost_fr: float) -> float:
    """The candidate threshold with the least expected cost; ties go to the middle of the tied run (the most
    margin on both sides), so one relabelled image moves it least."""
    cands = candidate_thresholds(margins)
    costs = np.array([expected_cost(margins, acceptable, t, cost_fa, cost_fr) for t in cands])
    best = np.flatnonzero(np.isclose(costs, costs.min(), rtol=0, atol=1e-12))
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    run = max(runs, key=len)
    return float(cands[run[len(run) // 2]])


def roc_curve(margins: np.ndarray, acceptable: np.ndarray) -> tuple[list[tuple[float, float, float]], float]:
    """ROC points ``(threshold, false-accept rate, true-accept rate)`` over every candidate threshold, and AUC
    (the probability that an acceptable image has the higher margin, ties counting half)."""
    pos, neg = margins[acceptable], margins[~acceptable]
    points = [(float(t), float(np.mean(neg >= t)) if len(neg) else math.nan,
               float(np.mean(pos >= t)) if len(pos) else math.nan) for t in candidate_thresholds(margins)[::-1]]
    if len(pos) == 0 or len(neg) == 0:
        return points, math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return points, float(greater / (len(pos) * len(neg)))


def _rates(c: dict[str, int]) -> tuple[float, float]:
    bad, good = c["false_accept"] + c["true_reject"], c["false_reject"] + c["true_accept"]
    return (c["false_accept"] / bad if bad else math.nan, c["false_reject"] / good if good else math.nan)


def bootstrap_rates(margins: np.ndarray, acceptable: np.ndarray, cost_fa: float, cost_fr: float,
                    n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile CIs of the false-accept and false-reject rates, refitting the threshold in every resample
    (images drawn with replacement); resamples without both classes are skipped."""
    rng = np.random.default_rng(seed)
    fa, fr = [], []
    n = len(margins)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        m, a = margins[idx], acceptable[idx]
        if a.all() or not a.any():
            continue
        rate_fa, rate_fr = _rates(confusion(m, a, best_threshold(m, a, cost_fa, cost_fr)))
        fa.append(rate_fa)
        fr.append(rate_fr)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    ci = (lambda v: tuple(float(x) for x in np.percentile(v, q)) if v else (math.nan, math.nan))
    return ci(fa), ci(fr)


# ------------------------------------------------------------------------------------------------ fitting
def join_labels_scores(labels: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Labelled images with a usable score: ``labels`` (``path``, ``mos``) joined on ``path`` with ``scores``
    (``path``, ``logit_margin``, optional ``status``); rows that failed to score are left out, and so said."""
    for name, frame, need in (("labels", labels, ("path", "mos")), ("scores", scores, ("path", "logit_margin"))):
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise ValueError(f"the {name} table lacks column(s) {', '.join(missing)}; it has "
                             f"{', '.join(map(str, frame.columns))}")
    ok = scores if "status" not in scores.columns else scores[scores["status"] == "ok"]
    ok = ok[np.isfinite(pd.to_numeric(ok["logit_margin"], errors="coerce"))]
    joined = labels[["path", "mos"]].merge(ok[["path", "logit_margin"]], on="path", how="inner")
    return joined.astype({"mos": float, "logit_margin": float})


def fit_gate(labels: pd.DataFrame, scores: pd.DataFrame, *, pass_at: float = 3.0, cost_false_accept: float = 1.0,
             cost_false_reject: float = 1.0, model: dict[str, Any] | None = None, n_boot: int = 1000,
             seed: int = 0) -> Gate:
    """Fit the site threshold (see the module docstring). ``model``: the identity of the model that made
    ``scores`` (``model_identity``); the gate is refused with any other."""
    for name, value in (("cost_false_accept", cost_false_accept), ("cost_false_reject", cost_false_reject)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            invalid("fit_gate", name, value, "use a finite cost >= 0 (e.g. minutes or money per mistake)")
    if cost_false_accept == 0 and cost_false_reject == 0:
        invalid("fit_gate", "cost_false_accept", 0, "at least one of the two costs must be positive")
    data = join_labels_scores(labels, scores)
    if len(data) < 2:
        raise ValueError(f"{len(data)} labelled image(s) have a score; a gate needs labelled images on both sides "
                         f"of the pass level {pass_at}")
    margins, acceptable = data["logit_margin"].to_numpy(), (data["mos"] >= pass_at).to_numpy()
    n_good, n_bad = int(acceptable.sum()), int((~acceptable).sum())
    if n_good == 0 or n_bad == 0:
        raise ValueError(f"all {len(data)} labelled images are {'acceptable' if n_bad == 0 else 'unacceptable'} at "
                         f"pass level {pass_at}: a threshold needs examples of both; label some "
                         f"{'bad' if n_bad == 0 else 'good'} images or change --pass-at")
    threshold = best_threshold(margins, acceptable, cost_false_accept, cost_false_reject)
    c = confusion(margins, acceptable, threshold)
    rate_fa, rate_fr = _rates(c)
    ci_fa, ci_fr = bootstrap_rates(margins, acceptable, cost_false_accept, cost_false_reject, n_boot, seed)
    roc, auc = roc_curve(margins, acceptable)
    warning = ""
    if min(n_good, n_bad) < MIN_PER_CLASS:
        warning = (f"only {n_good} acceptable and {n_bad} unacceptable labelled images: with fewer than "
                   f"{MIN_PER_CLASS} of each the error rates are too uncertain to plan with (see their intervals); "
                   "label more images near the threshold")
    cost = 1000 * expected_cost(margins, acceptable, threshold, cost_false_accept, cost_false_reject)
    return Gate(threshold=threshold, pass_at=float(pass_at), cost_false_accept=float(cost_false_accept),
                cost_false_reject=float(cost_false_reject), model=dict(model or {}), n_labelled=len(data),
                n_acceptable=n_good, auc=auc, false_accept_rate=rate_fa, false_reject_rate=rate_fr,
                false_accept_ci=ci_fa, false_reject_ci=ci_fr, expected_cost_per_1000=cost, confusion=c,
                roc=roc, warning=warning)


def model_identity(model, checkpoint: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a gate records of the model that scores: preset, backbone fingerprint and the checkpoint's SHA-256
    (None for the zero-shot model)."""
    sha = None
    if checkpoint is not None:
        from ..checkpoint import read_checkpoint
        sha = (read_checkpoint(checkpoint).card.get("integrity") or {}).get("sha256")
    return {"model": model.source.preset, "fingerprint": model.source.fingerprint, "checkpoint_sha256": sha}


def describe_gate(gate: Gate) -> str:
    """The gate in a few plain lines for an engineer (what passes, what it costs, how sure)."""
    def pct(x: float) -> str:
        return "n/a" if not math.isfinite(x) else f"{100 * x:.1f} %"

    def ci(pair: Sequence[float]) -> str:
        return f"[{pct(pair[0])}, {pct(pair[1])}]"

    lines = [f"threshold: logit margin >= {gate.threshold:.4g} passes (acceptable = MOS >= {gate.pass_at:g})",
             f"fitted on {gate.n_labelled} labelled images ({gate.n_acceptable} acceptable); ROC AUC {gate.auc:.3f}",
             f"false accepts: {pct(gate.false_accept_rate)} of unacceptable images, 95 % CI {ci(gate.false_accept_ci)}",
             f"false rejects: {pct(gate.false_reject_rate)} of acceptable images, 95 % CI {ci(gate.false_reject_ci)}",
             f"expected cost per 1,000 images: {gate.expected_cost_per_1000:.1f} (false accept "
             f"{gate.cost_false_accept:g}, false reject {gate.cost_false_reject:g}; rates measured on the images the "
             "threshold was chosen on, so optimistic)",
             f"model: {gate.model.get('model')} checkpoint {gate.model.get('checkpoint_sha256') or '(zero-shot)'}"]
    if gate.warning:
        lines.append(f"WARNING: {gate.warning}")
    return "\n".join(lines)
