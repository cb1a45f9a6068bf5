"""The work behind ``clipiqa explain`` (:mod:`clipiqa.commands.explain` holds only its command line): attribution
overlays for image files, their ``diagnostics.csv`` rows, and the demo-set diagnostics with their tables and
figures.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from ..caveats import caveat_of
from ..csvio import write_csv
from ..data.demo import PHOTOS, demo_references
from ..imageio import ImageLoadError, load_image
from ..inference import p_high_target
from .attribution import attribute
from .diagnostics import content_vs_distortion, distortion_focus, score_tensors, to_model_input
from .plots import plot_attribution, plot_content_vs_distortion, plot_focus

COLUMNS = ["kind", "path", "method", "score", "logit_margin", "top10_share", "overlay", "metric", "value", "status",
           "error", "model", "note"]


def top_share(attr_map: "np.ndarray", fraction: float = 0.1) -> float:
    """Share of the absolute attribution mass in the ``fraction`` strongest pixels (``fraction`` = uniform)."""
    a = np.sort(np.abs(np.asarray(attr_map, dtype=np.float64)).ravel())[::-1]
    total = a.sum()
    return float(a[:max(1, int(round(fraction * a.size)))].sum() / total) if total > 0 else float("nan")


def overlay_names(paths: list[str]) -> list[str]:
    """Unique file stems for the overlays (a repeated stem gets ``-2``, ``-3`` ...)."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        stem = Path(p).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def write_diagnostics(rows: list[dict], label: str, model, out: Path) -> pd.DataFrame:
    """``OUT/diagnostics.csv`` from the rows (every row names the model; its caveat, random init or toy, is
    every row's ``note``)."""
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    table["model"] = label
    table["note"] = caveat_of(model).text
    write_csv(table, out / "diagnostics.csv")
    return table


def model_label(model, zero_shot: bool) -> str:
    label = model.source.preset + (" (zero-shot)" if zero_shot else "")
    return label + caveat_of(model).bracket()


def explain_images(model, paths: list[str], methods: list[str], options: dict, out: Path,
                   progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """One row per image and method; one error row for an image that cannot be read or explained."""
    rows = []
    for i, (path, stem) in enumerate(zip(paths, overlay_names(paths))):
        try:
            rows += explain_one(model, load_image(path), path, stem, methods, options, out)
        except ImageLoadError as e:
            rows.append({"kind": "image", "path": path, "status": "error", "error": str(e)})
        except Exception as e:  # an odd image must not stop the batch; the error is reported, never hidden
            rows.append({"kind": "image", "path": path, "status": "error",
                         "error": f"cannot explain {path}: {type(e).__name__}: {e}"})
        if progress is not None:
            progress(i + 1, len(paths))
    return rows


def explain_one(model, image, path: str, stem: str, methods: list[str], options: dict, out: Path) -> list[dict]:
    x, crop = to_model_input(model, image)
    margin = float(score_tensors(model, x[None])[0])  # what the attributions explain
    score = float(score_tensors(model, x[None], target_fn=p_high_target)[0])
    rows = []
    for method in methods:
        attr = attribute(model, x[None], method, **options[method])[0].numpy()
        overlay = out / f"{stem}_{method}.png"
        fig = plot_attribution(crop, attr, title=f"{stem} - {method} - score {score:.3f}, margin {margin:+.2f}",
                               random_init=model.random_init)
        fig.savefig(overlay, dpi=100, bbox_inches="tight")
        plt.close(fig)
        rows.append({"kind": "image", "path": path, "method": method, "score": score, "logit_margin": margin,
                     "top10_share": top_share(attr), "overlay": str(overlay), "status": "ok", "error": ""})
    return rows


def demo_diagnostics(model, methods: list[str], options: dict, out: Path, n_images: int | None,
                      types: list[str] | None) -> list[dict]:
    """Distortion focus (per method) and content vs distortion on the embedded demo photos."""
    refs = demo_references(size=256, names=list(PHOTOS)[:n_images])
    rows, focus_tables = [], []
    for method in methods:
        result = distortion_focus(model, refs, method=method, keep_maps=False, **options[method])
        focus_tables.append(result.table)
        rows += summary_rows("distortion_focus", method, result.summary)
        fig = plot_focus(result.table)
        fig.savefig(out / f"demo_focus_{method}.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    write_csv(pd.concat(focus_tables, ignore_index=True), out / "demo_focus.csv")
    cvd = content_vs_distortion(model, refs, types)
    write_csv(cvd.table, out / "demo_content_vs_distortion.csv")
    fig = plot_content_vs_distortion(cvd.table)
    fig.savefig(out / "demo_content_vs_distortion.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return rows + summary_rows("content_vs_distortion", "", cvd.summary)


def summary_rows(kind: str, method: str, summary: dict) -> list[dict]:
    """The numeric entries of a diagnostics summary as ``kind, method, metric, value`` rows."""
    return [{"kind": kind, "method": method, "metric": k, "value": float(v), "status": "ok", "error": ""}
            for k, v in summary.items() if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)]
