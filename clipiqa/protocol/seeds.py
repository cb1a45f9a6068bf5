"""Claims over several seeds: a comparison of arms that rests on many split draws, never on one.

``per_split`` tables of several protocol runs (one per seed of the split draws, a ``seed`` column added) are
summarised two ways: per seed (the mean over that seed's splits), then mean ± std over the seeds; and pairwise,
per split (how often one arm beats another, with a two-sided sign test over the splits that differ). Pure
functions of the tables; ``benchmarks/ablation_lesson.py`` and the README's ablation table use them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest

__all__ = ["over_seeds", "paired_wins", "paired_verdict"]


def over_seeds(per_split: pd.DataFrame, metrics: Sequence[str] = ("srcc",)) -> pd.DataFrame:
    """Per method: the mean of each metric over every split of every seed, and the mean ± std (ddof 1) of the
    per-seed means; ``n_seeds`` and ``n_splits`` (ok rows only)."""
    ok = per_split[per_split["status"] == "ok"] if "status" in per_split else per_split
    rows = []
    for method, part in ok.groupby("method", sort=False):
        row = {"method": method, "n_seeds": int(part["seed"].nunique()), "n_splits": len(part)}
        for m in metrics:
            if m not in part:
                continue
            values = pd.to_numeric(part[m], errors="coerce")
            seed_means = values.groupby(part["seed"]).mean()
            row[f"{m}_mean"] = float(values.mean())
            row[f"{m}_seed_mean"] = float(seed_means.mean())
            row[f"{m}_seed_std"] = float(seed_means.std(ddof=1)) if len(seed_means) > 1 else float("nan")
            row[f"{m}_split_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def paired_wins(per_split: pd.DataFrame, a: str, b: str, metric: str = "srcc") -> dict:
    """``a`` against ``b`` on every (seed, split) both finished: wins, losses, ties of ``a``, the mean
    difference, and the sign test's two-sided p-value over the splits that differ (1.0 when none do)."""
    keys = [k for k in ("seed", "split") if k in per_split]
    ok = per_split[per_split["status"] == "ok"] if "status" in per_split else per_split
    left = ok[ok["method"] == a].set_index(keys)[metric].astype(float)
    right = ok[ok["method"] == b].set_index(keys)[metric].astype(float)
    both = left.index.intersection(right.index)
    diff = (left.loc[both] - right.loc[both]).to_numpy()
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return {"a": a, "b": b, "n": len(diff), "wins": wins, "losses": losses, "ties": len(diff) - wins - losses,
            "mean_diff": float(np.mean(diff)) if len(diff) else float("nan"), "p_sign": float(p)}


def paired_verdict(w: dict, alpha: float = 0.05) -> str:
    """One line for a paired comparison: better / worse when the sign test says so at ``alpha``, else
    inconclusive, always with its numbers."""
    numbers = (f"{w['a']} - {w['b']}: mean {w['mean_diff']:+.3f}, {w['a']} better on {w['wins']}, worse on "
               f"{w['losses']}, equal on {w['ties']} of {w['n']} splits (sign test p = {w['p_sign']:.2g})")
    if w["n"] == 0:
        return f"{w['a']} vs {w['b']}: no split finished by both"
    if w["p_sign"] < alpha:
        return f"{w['a']} {'beats' if w['wins'] > w['losses'] else 'loses to'} {w['b']}: " + numbers
    return f"{w['a']} vs {w['b']} inconclusive: " + numbers
