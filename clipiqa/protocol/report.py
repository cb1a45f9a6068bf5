"""What a protocol run reports: the per-method summary over splits, the notes that say what the numbers can and
cannot show, the fixed-width table, the SRCC figure, and :class:`ProtocolResult` with the four result files."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..checkpoint import library_versions
from ..csvio import write_csv
from ..finetune import OPTIMISTIC_NOTE
from ..metrics import summarize
from ..caveats import RANDOM_INIT, TOY
from ..palette import arm_palette
from ..recipes import OPTIMISTIC_RECIPE_NOTE, RECIPES

__all__ = ["METRICS", "NOTE_AUTO_META", "NOTE_RANDOM_INIT", "NOTE_SYNTHETIC_LABELS", "ProtocolResult",
           "complete_splits", "dataset_info", "format_summary", "plot_summary", "row_note", "run_notes",
           "summarize_methods", "zero_shot_configuration"]

NOTE_RANDOM_INIT = RANDOM_INIT.then("the numbers show that the pipeline runs, not that a method works")
NOTE_SYNTHETIC_LABELS = "synthetic severity labels, not human MOS"
NOTE_AUTO_META = ("meta auto: a quick, smoke-scale meta pre-training per split on synthetic distortions of bundled "
                  "photos that are not among the split's test contents, with distortion types not in the test split "
                  "where possible; it hands over the last parameters of that run (no held-out selection at this size)")
METRICS = ("srcc", "krcc", "plcc", "plcc_logistic", "rmse", "rmse_logistic")


def complete_splits(per_split: pd.DataFrame, methods: Sequence[str], column: str = "method") -> list[int]:
    """Splits on which every method has a row (a stopped run's last split may be partial); ``column`` names the
    rows' method (the compare panel's ``arm``)."""
    if per_split.empty:
        return []
    counts = per_split.groupby("split")[column].apply(lambda m: set(m) >= set(methods))
    return [int(s) for s, ok in counts.items() if ok]


def summarize_methods(per_split: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per method: mean, median and std over the splits that ran of each metric, plus counts, the mean
    chance band and seconds, and the first skip or error reason."""
    methods = list(methods) if methods is not None else list(dict.fromkeys(per_split["method"]))
    rows = []
    for method in methods:
        part = per_split[per_split["method"] == method]
        ok = part[part["status"] == "ok"]
        row: dict[str, Any] = {"method": method, "n_ok": len(ok), "n_skipped": int((part["status"] == "skipped").sum()),
                               "n_error": int((part["status"] == "error").sum())}
        for metric in METRICS:
            values = ok[metric].to_numpy(float)
            stats = summarize(values)
            row.update({f"{metric}_{k}": stats[k] for k in ("mean", "median", "std")})
            row[f"{metric}_splits"] = int(np.isfinite(values).sum())  # splits on which the metric is defined
        row["chance_band"] = float(ok["chance_band"].mean()) if len(ok) else float(part["chance_band"].mean())
        row["n_test_mean"] = float(part["n_test"].mean())
        row["seconds_mean"] = float(part["seconds"].mean())
        reasons = part.loc[part["status"] != "ok", "error"]
        row["reason"] = str(reasons.iloc[0]) if len(reasons) else ""
        row["selection"] = part["selection"].iloc[0] if len(part) else ""
        row["recipe"] = str(part["recipe"].iloc[0]) if len(part) else ""
        notes = [n for n in part.get("selection_note", pd.Series(dtype=str)).dropna().astype(str) if n]
        row["selection_note"] = notes[0] if notes else ""
        row["note"] = part["note"].iloc[0] if len(part) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def run_notes(dataset: pd.DataFrame, frozen, arm_selection: Mapping[str, str], meta_init, methods: Sequence[str],
           recipe: str | None) -> list[str]:
    notes = []
    if frozen.random_init:
        notes.append(NOTE_RANDOM_INIT)
    if _synthetic_labels(dataset):
        notes.append(NOTE_SYNTHETIC_LABELS)
    if any(s == "test-oracle" for s in arm_selection.values()):
        notes.append(OPTIMISTIC_NOTE)
    if recipe is not None and RECIPES[recipe].optimistic:
        notes.append(OPTIMISTIC_RECIPE_NOTE)
    if meta_init is not None and str(meta_init) == "auto" and any(m.startswith("meta") for m in methods):
        notes.append(NOTE_AUTO_META)
    if "zero-shot" in methods:
        notes.append(zero_shot_configuration(frozen))
    notes.append("uncertainty: |SRCC| below the chance band (95 %, about 1.96/sqrt(n_test - 1)) is indistinguishable "
                 "from a random predictor; srcc_ci_lo/hi are per-split bootstrap CIs")
    return notes


def zero_shot_configuration(model) -> str:
    """What the zero-shot arm is, so nobody compares it with numbers made another way."""
    cfg = model.source.preprocess_cfg
    size = cfg.get("size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    good, bad = model.prompt_config.antonyms
    backbone = f"{model.source.preset} ({TOY.label})" if model.source.toy \
        else model.source.arch  # the lesson preset's arch only names open_clip's factory and tokenizer
    return (f"zero-shot: frozen {backbone} with the antonym prompts {good!r}/{bad!r}, one {size}-px "
            f"{cfg.get('resize_mode', 'shortest')}-resize centre crop, positional embedding on; CLIP-IQA's published "
            "zero-shot SRCC (KonIQ 0.66-0.70, LIVEC 0.61-0.70) come from RN50 at full resolution and are not "
            "directly comparable")


def row_note(notes: list[str], selection: str) -> str:
    keep = [n for n in notes if n in (NOTE_RANDOM_INIT, NOTE_SYNTHETIC_LABELS)]
    if selection == "test-oracle":
        keep.append(OPTIMISTIC_NOTE)
    return "; ".join(keep)


def _synthetic_labels(dataset: pd.DataFrame) -> bool:
    kind = str(dataset.attrs.get("label_kind", "")).lower()
    return kind.startswith("synthetic") or dataset.attrs.get("dataset") == "demo"


def dataset_info(dataset: pd.DataFrame, splits) -> dict:
    attrs = dataset.attrs
    return {"name": attrs.get("dataset", "custom"), "n_images": len(dataset),
            "n_contents": int(dataset["content_id"].nunique()) if "content_id" in dataset else None,
            "split_by": splits[0].by if splits else None, "label_kind": attrs.get("label_kind", "MOS"),
            "score_range": attrs.get("score_range"), "higher_better": attrs.get("higher_better"),
            "root": attrs.get("root") or attrs.get("cache_dir"),
            "split_hashes": [s.hash for s in splits]}


def _versions() -> dict:
    versions = library_versions()
    for name, distribution in (("numpy", "numpy"), ("pandas", "pandas"), ("scipy", "scipy"),
                               ("sklearn", "scikit-learn")):
        versions[name] = package_version(distribution)  # installed metadata: no import of the package needed
    return versions


def _jsonable(value: Any) -> Any:
    """Plain JSON: NaN/inf -> null, numpy scalars -> Python, tuples -> lists, anything else -> str."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


def format_summary(summary: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """Fixed-width text: per method SRCC mean +- std (median), KRCC, PLCC raw/logistic, RMSE, chance band, the
    splits that ran, seconds per split and the recipe; below a row, what limits its numbers."""
    w = max([12, *(len(str(m)) for m in summary.get("method", []))])  # the longest method name sets the column
    header = (f"{'method':<{w}} {'SRCC mean±std':>15} {'median':>7} {'KRCC':>6} {'PLCC':>6} {'PLCC-l4':>7} "
              f"{'RMSE':>6} {'chance±':>7} {'ok':>5} {'s/split':>8}  recipe")
    lines = [header, "-" * len(header)]
    for r in summary.to_dict("records"):
        n = r["n_ok"] + r["n_skipped"] + r["n_error"]
        recipe = r.get("recipe") or ""
        if r["n_ok"] == 0:
            status = "skipped" if r["n_skipped"] else "failed"
            lines.append(f"{r['method']:<{w}} {status}: {r['reason']}")
            continue
        lines.append(f"{r['method']:<{w}} {_f(r['srcc_mean']):>7}±{_f(r['srcc_std']):<7} {_f(r['srcc_median']):>7} "
                     f"{_f(r['krcc_mean']):>6} {_f(r['plcc_mean']):>6} {_f(r['plcc_logistic_mean']):>7} "
                     f"{_f(r['rmse_mean']):>6} {_f(r['chance_band']):>7} {r['n_ok']:>2}/{n:<2} "
                     f"{r['seconds_mean']:>8.1f}  {recipe}")
        undefined = [m for m in METRICS if r.get(f"{m}_splits", r["n_ok"]) < r["n_ok"]]
        if undefined:
            lines.append(f"{'':<{w}} defined on fewer splits: " + ", ".join(
                f"{m} {r[f'{m}_splits']}/{r['n_ok']}" for m in undefined))
        if r.get("selection_note"):
            lines.append(f"{'':<{w}} {r['selection_note']}")
        if r["n_error"]:
            lines.append(f"{'':<{w}} {r['n_error']} split(s) failed: {r['reason']}")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def _f(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.3f}"


def plot_summary(per_split: pd.DataFrame, summary: pd.DataFrame, notes: Sequence[str] = (), caveat: str = ""):
    """SRCC per method: one dot per split in the method's colour of every chart (:mod:`clipiqa.palette`), the mean
    with a std bar, the chance band shaded around 0; ``caveat`` (e.g. :func:`clipiqa.notebook.caveat` of the
    model: toy, random init) under the title.

    Uses a bare ``matplotlib.figure.Figure`` (no pyplot state, no backend change)."""
    # seaborn (with matplotlib) adds about 1 s to `import clipiqa.protocol` (measured on the 2-core machine):
    # paid only when a figure is drawn, not by `clipiqa bench --list-methods` or a run without --out
    import seaborn as sns
    from matplotlib.figure import Figure

    order = list(summary["method"])
    labels = [m if n else f"{m}\n(skipped)" for m, n in zip(order, summary["n_ok"])]
    fig = Figure(figsize=(max(6.0, 1.1 * len(order) + 2), 4.2))
    ax = fig.add_subplot()
    ok = per_split[per_split["status"] == "ok"]
    band = float(np.nanmean(summary["chance_band"])) if len(summary) else float("nan")
    if math.isfinite(band):
        ax.axhspan(-band, band, color="grey", alpha=0.2, label=f"chance band (95 %, ±{band:.2f})")
    ax.axhline(0.0, color="grey", lw=0.8)
    if len(ok):
        sns.stripplot(data=ok, x="method", y="srcc", order=order, ax=ax, hue="method", palette=arm_palette(order),
                      legend=False, alpha=0.8, size=6, jitter=0.15, zorder=3)  # dots over the mean marker
    x = np.arange(len(order))
    ax.errorbar(x, summary["srcc_mean"], yerr=summary["srcc_std"].fillna(0), fmt="D", color="black", capsize=4,
                markerfacecolor="none", markersize=9, label="mean ± std over splits")
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("SRCC on the held-out split")
    ax.set_xlabel("")
    warn = [n for n in notes if n in (NOTE_RANDOM_INIT, NOTE_SYNTHETIC_LABELS) or n == OPTIMISTIC_NOTE]
    ax.set_title("\n".join(["SRCC per method and split"] + warn + ([caveat] if caveat and caveat not in warn else [])),
                 fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


@dataclass
class ProtocolResult:
    """Per-split rows, the per-method summary, the run's configuration and the notes that go with the numbers.

    ``splits`` (:class:`~clipiqa.data.splits.Split`) and ``labelled`` (the few-shot draws) are what every method
    saw, split by split; ``histories`` what every adapted arm's training did."""

    per_split: pd.DataFrame
    summary: pd.DataFrame
    config: dict
    notes: list[str]
    random_init: bool
    dataset: dict
    out_dir: Path | None = None
    splits: list = field(default_factory=list, repr=False)
    stopped: bool = False
    histories: dict = field(default_factory=dict, repr=False)
    """``{(split index, arm): History}`` of every adapted arm (losses, gradient cosines, selection)."""
    labelled: list = field(default_factory=list, repr=False)
    predictions: dict = field(default_factory=dict, repr=False)
    """``{(split index, method): held-out rows}``: each split's test table with ``pred``, what the method predicted
    for every held-out image (the numbers behind its SRCC; ranking units: a CLIP arm's logit margin)."""

    def to_text(self) -> str:
        """The summary as a fixed-width table followed by the notes (what ``clipiqa bench`` prints)."""
        return format_summary(self.summary, self.notes)

    def plot(self, caveat: str = ""):
        """A matplotlib Figure: SRCC per split and method, mean with std, the chance band shaded; ``caveat`` (toy,
        random init) under the title."""
        return plot_summary(self.per_split, self.summary, self.notes, caveat)

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``per_split.csv``, ``summary.csv``, ``summary.json`` and ``summary.png``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {name: out / name for name in ("per_split.csv", "summary.csv", "summary.json", "summary.png")}
        write_csv(self.per_split, paths["per_split.csv"])
        write_csv(self.summary, paths["summary.csv"])
        payload = {"config": self.config, "dataset": self.dataset, "notes": self.notes,
                   "random_init": self.random_init, "versions": _versions(),
                   "summary": self.summary.to_dict("records")}
        paths["summary.json"].write_text(json.dumps(_jsonable(payload), indent=2))
        fig = self.plot()
        fig.savefig(paths["summary.png"], dpi=110, bbox_inches="tight")
        self.out_dir = out
        return paths
