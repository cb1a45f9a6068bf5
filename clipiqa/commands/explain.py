"""``clipiqa explain``: attribution overlays for image files, plus optional demo-set diagnostics.

Writes ``OUT/<image-stem>_<method>.png`` (the model-input crop with the attribution overlay) and
``OUT/diagnostics.csv``: one row per image and method (``kind=image``: score, ``top10_share`` = share of the
absolute attribution mass in the 10 % strongest pixels, the overlay file), one error row per unreadable image,
and with ``--diagnostics`` the summary rows of the demo-set distortion focus (per method) and
content-vs-distortion (``kind``, ``metric``, ``value``); their detailed tables and figures go beside it.
Exit codes: 0 all images explained, 1 usage error, 2 some images failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipiqa.cli import (EXIT_OK, EXIT_PARTIAL, UsageError, add_model_args, check_out_folder, command,
                         describe_skipped, load_model_from_args, random_init_warning, scan_inputs, tqdm_progress)
from clipiqa.csvio import write_csv

COLUMNS = ["kind", "path", "method", "score", "logit_margin", "top10_share", "overlay", "metric", "value", "status",
           "error", "model", "note"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    add_model_args(p)
    p.add_argument("--method", action="append", default=None,
                   help="attribution method, repeatable or comma-separated (default ig); one of "
                        "ig, occlusion, smoothgrad, gradcam, gradcam-conv1")
    p.add_argument("--out", required=True, help="output folder for the overlays and diagnostics.csv")
    p.add_argument("--diagnostics", action="store_true",
                   help="also run the distortion-focus and content-vs-distortion diagnostics on the embedded demo set")
    p.add_argument("--demo-images", type=int, default=None,
                   help="with --diagnostics: use only the first N demo photos (default all)")
    p.add_argument("--demo-types", default=None,
                   help="with --diagnostics: comma-separated distortion types for content vs distortion "
                        "(default one per category)")
    p.add_argument("--zero-shot", action="store_true", help="explain the zero-shot CLIP (prompts switched off)")
    p.add_argument("--ig-steps", type=int, default=32, help="integration steps for ig (default 32)")
    p.add_argument("--baseline", default="black", choices=("black", "zero", "blur"),
                   help="ig baseline (default black)")


def parse_methods(values: list[str] | None) -> list[str]:
    """``["ig,occlusion", "gradcam"]`` -> ``["ig", "occlusion", "gradcam"]``; unknown names are a usage error."""
    from clipiqa.explain import METHODS
    methods = [m.strip() for v in (values or ["ig"]) for m in v.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"unknown method(s) {', '.join(unknown) or '(none)'}; use one or more of "
                         f"{', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def parse_demo_types(value: str | None) -> list[str] | None:
    """``"gaussian_blur,jpeg"`` -> a list of distortion names (None = the demo default); unknown -> usage error."""
    if value is None:
        return None
    from clipiqa.data.distortions import DISTORTIONS
    types = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in types if t not in DISTORTIONS]
    if unknown or not types:
        raise UsageError(f"unknown distortion type(s) {', '.join(unknown) or '(none)'}; use "
                         f"{', '.join(DISTORTIONS)}")
    return types


def method_options(method: str, args: argparse.Namespace) -> dict[str, Any]:
    if args.ig_steps < 1:
        raise UsageError(f"--ig-steps {args.ig_steps} is not allowed; use a positive integer")
    return {"n_steps": args.ig_steps, "baseline": args.baseline} if method == "ig" else {}


def top_share(attr_map: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the absolute attribution mass in the ``fraction`` strongest pixels (``fraction`` = uniform)."""
    a = np.sort(np.abs(np.asarray(attr_map, dtype=np.float64)).ravel())[::-1]
    total = a.sum()
    return float(a[:max(1, int(round(fraction * a.size)))].sum() / total) if total > 0 else float("nan")


def _overlay_names(paths: list[str]) -> list[str]:
    """Unique file stems for the overlays (a repeated stem gets ``-2``, ``-3`` ...)."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        stem = Path(p).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


@command("explain", "attribution overlays and distortion-vs-content diagnostics for a quality model")(_configure)
def cmd_explain(args: argparse.Namespace) -> int:
    methods = parse_methods(args.method)
    options = {m: method_options(m, args) for m in methods}
    demo_types = parse_demo_types(args.demo_types)
    if args.demo_images is not None and args.demo_images < 1:
        raise UsageError(f"--demo-images {args.demo_images} is not allowed; use a positive integer")
    out = check_out_folder(args.out)  # before any work: its parent folder must exist, nothing is created yet
    scan = scan_inputs(args.paths)
    for line in describe_skipped(scan):
        print(line, file=sys.stderr)
    paths = scan.images  # its parent folder must exist: nothing is created before the check
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder {out}: {e}") from e
    model = load_model_from_args(args)
    random_init_warning(model)
    if args.zero_shot:
        from clipiqa.explain import zero_shot
        model = zero_shot(model)
    label = _model_label(model, args.zero_shot)
    rows = _explain_images(model, paths, methods, options, out)
    if args.diagnostics:
        rows += _demo_diagnostics(model, methods, options, out, args.demo_images, demo_types)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    table["model"] = label
    table["note"] = "random-init weights: meaningless" if model.random_init else ""
    write_csv(table, out / "diagnostics.csv")
    failed = table[(table["kind"] == "image") & (table["status"] != "ok")]
    n_failed = failed["path"].nunique()
    print(f"explained {len(paths) - n_failed} of {len(paths)} images with {', '.join(methods)} -> {out}"
          + (f"; {n_failed} failed:" if n_failed else ""), file=sys.stderr)
    for error in dict.fromkeys(failed["error"]):
        print(f"  {error}", file=sys.stderr)
    return EXIT_PARTIAL if n_failed else EXIT_OK


def _model_label(model, zero_shot: bool) -> str:
    label = model.source.preset + (" (zero-shot)" if zero_shot else "")
    return label + (" [random init: meaningless]" if model.random_init else "")


def _explain_images(model, paths: list[str], methods: list[str], options: dict, out: Path) -> list[dict]:
    """One row per image and method; one error row for an image that cannot be read or explained."""
    from clipiqa.imageio import ImageLoadError, load_image
    progress = tqdm_progress("explaining")
    rows = []
    for i, (path, stem) in enumerate(zip(paths, _overlay_names(paths))):
        try:
            rows += _explain_one(model, load_image(path), path, stem, methods, options, out)
        except ImageLoadError as e:
            rows.append({"kind": "image", "path": path, "status": "error", "error": str(e)})
        except Exception as e:  # an odd image must not stop the batch; the error is reported, never hidden
            rows.append({"kind": "image", "path": path, "status": "error",
                         "error": f"cannot explain {path}: {type(e).__name__}: {e}"})
        progress(i + 1, len(paths))
    return rows


def _explain_one(model, image, path: str, stem: str, methods: list[str], options: dict, out: Path) -> list[dict]:
    from matplotlib import pyplot as plt

    from clipiqa.explain import attribute
    from clipiqa.explain.diagnostics import score_tensors, to_model_input
    from clipiqa.explain.plots import plot_attribution
    from clipiqa.inference import p_high_target
    x, crop = to_model_input(model, image)
    margin = float(score_tensors(model, x[None])[0])  # what the attributions explain (DESIGN 2.7)
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


def _demo_diagnostics(model, methods: list[str], options: dict, out: Path, n_images: int | None,
                      types: list[str] | None) -> list[dict]:
    """Distortion focus (per method) and content vs distortion on the embedded demo photos."""
    from matplotlib import pyplot as plt

    from clipiqa.data.demo import PHOTOS, demo_references
    from clipiqa.explain.diagnostics import content_vs_distortion, distortion_focus
    from clipiqa.explain.plots import plot_content_vs_distortion, plot_focus
    refs = demo_references(size=256, names=list(PHOTOS)[:n_images])
    rows, focus_tables = [], []
    for method in methods:
        result = distortion_focus(model, refs, method=method, keep_maps=False, **options[method])
        focus_tables.append(result.table)
        rows += _summary_rows("distortion_focus", method, result.summary)
        fig = plot_focus(result.table)
        fig.savefig(out / f"demo_focus_{method}.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    write_csv(pd.concat(focus_tables, ignore_index=True), out / "demo_focus.csv")
    cvd = content_vs_distortion(model, refs, types)
    write_csv(cvd.table, out / "demo_content_vs_distortion.csv")
    fig = plot_content_vs_distortion(cvd.table)
    fig.savefig(out / "demo_content_vs_distortion.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return rows + _summary_rows("content_vs_distortion", "", cvd.summary)


def _summary_rows(kind: str, method: str, summary: dict) -> list[dict]:
    """The numeric entries of a diagnostics summary as ``kind, method, metric, value`` rows."""
    return [{"kind": kind, "method": method, "metric": k, "value": float(v), "status": "ok", "error": ""}
            for k, v in summary.items() if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)]
