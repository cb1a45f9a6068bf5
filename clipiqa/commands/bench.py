"""``clipiqa bench``: the evaluation protocol (docs/design.md, 'Evaluation protocol') from the command line.

    clipiqa bench --dataset demo --model tiny --shots 20 --splits 2
    clipiqa bench --dataset koniq10k:/data/koniq --shots 50 --model vitb16-openai --meta-init runs/meta/best
"""
from __future__ import annotations

import argparse
import sys
import time
from functools import partial

from ..caveats import RANDOM_INIT
from ..presets import DEFAULT_MODEL
from .common import EXIT_OK, EXIT_PARTIAL, UsageError, check_out_folder, command

TINY_EPOCHS = 15
DEMO_TYPES = ("gaussian_blur", "white_noise", "jpeg", "darken")
"""A small default subset of the demo set's distortion types (blur, noise, compression, brightness)."""


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None,
                   help="demo (the embedded demo set: synthetic severities, not human MOS) or NAME:ROOT for a "
                        "local dataset folder (koniq10k, livec, kadid10k, tid2013, csiq, live, spaq)")
    p.add_argument("--shots", default=None,
                   help="labelled images per split, drawn from the 80 %% side: an integer (25, 50, ...) or a "
                        "fraction such as 0.2 or 20%%")
    p.add_argument("--splits", type=int, default=10, help="number of seeded 80/20 splits (default 10)")
    p.add_argument("--methods", default=None,
                   help="comma-separated arms (default: zero-shot, ridge-probe, classical-ridge, coop, coop+vpt and "
                        "the paper's 2x2 ablation ft, ft+qgr, meta+ft, meta+ft+qgr); see --list-methods")
    p.add_argument("--list-methods", action="store_true", help="print the available methods and exit")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"backbone preset (default {DEFAULT_MODEL}); tiny for smoke runs")
    p.add_argument("--weights", default=None, help="local weights file or open_clip folder (never uses the network)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default auto)")
    p.add_argument("--out", default=None, help="folder for per_split.csv, summary.csv, summary.json, summary.png")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"override every adapted arm's epochs (default: each arm's recipe; {TINY_EPOCHS} with "
                        "--model tiny)")
    p.add_argument("--lr", type=float, default=None, help="override every adapted arm's learning rate (default: "
                                                          "each arm's recipe)")
    p.add_argument("--augment", choices=("none", "model", "grmp"), default=None,
                   help="override every adapted arm's training augmentation (default: each recipe's; none with "
                        "--model tiny)")
    p.add_argument("--recipe", default=None,
                   help="recipe for the arms on the paper's trainable set instead of their own 'grmp' (e.g. "
                        "grmp-released: the release's protocol, selected on the test split, optimistic)")
    p.add_argument("--selection", choices=("fixed", "val", "test-oracle"), default=None,
                   help="model selection of every adapted arm: fixed budget, val (held-out labelled part), "
                        "test-oracle (released code's protocol; optimistic, labelled so); default: each recipe's")
    p.add_argument("--meta-init", default=None,
                   help="meta checkpoint (DIR/best from `clipiqa pretrain`) for meta+ft and meta+ft+qgr, or 'auto' for "
                        "a quick meta pre-training on synthetic tasks from bundled photos outside the test split "
                        "(default with --dataset demo)")
    p.add_argument("--demo-types", default=None,
                   help=f"--dataset demo: comma-separated distortion types or 'all' (default {','.join(DEMO_TYPES)})")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass when scoring")
    p.add_argument("--seed", type=int, default=0, help="seed of the first split (default 0)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice); 1 is often fastest on a busy small machine")


def parse_shots(text: str) -> int | float:
    """``"50"`` -> 50, ``"0.2"`` or ``"20%"`` -> 0.2 (a fraction of the 80 % pool)."""
    try:
        if text.endswith("%"):
            value: int | float = float(text[:-1]) / 100.0
        elif "." in text:
            value = float(text)
        else:
            value = int(text)
    except ValueError:
        raise UsageError(f"--shots {text!r} is not allowed; use an integer count or a fraction like 0.2 / 20%")
    if (isinstance(value, int) and value < 2) or (isinstance(value, float) and not 0 < value <= 1):
        raise UsageError(f"--shots {text!r} is not allowed; use a count >= 2 or a fraction in (0, 1]")
    return value


def load_bench_dataset(spec: str, demo_types: str | None = None):
    """``demo`` -> the embedded demo set (small default subset of types); ``NAME:ROOT`` -> read_dataset."""
    from ..data import build_demo_set, read_dataset  # pandas: loaded when the command runs (clipiqa --help < 1 s)
    if spec.lower() == "demo":
        types = DEMO_TYPES if demo_types is None else ("all" if demo_types == "all" else
                                                       [t.strip() for t in demo_types.split(",") if t.strip()])
        try:
            return build_demo_set(types=types)
        except ValueError as e:
            raise UsageError(str(e)) from e
    name, sep, root = spec.partition(":")
    if not sep or not root:
        raise UsageError(f"--dataset {spec!r}: give demo, or NAME:ROOT with the dataset's local folder "
                         "(e.g. koniq10k:/data/koniq10k)")
    try:
        return read_dataset(name, root)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from e


def _overrides(args: argparse.Namespace, tiny: bool) -> dict:
    """``AdaptConfig`` fields set on the command line for every adapted arm; CPU-friendly budget for tiny."""
    from ..finetune import AdaptConfig  # torch: loaded when the command runs (clipiqa --help < 1 s)
    kw: dict = {}
    if args.epochs is not None:
        kw["epochs"] = args.epochs
    elif tiny:
        kw["epochs"] = TINY_EPOCHS
    if args.augment is not None:
        kw["augment"] = args.augment
    elif tiny:
        kw["augment"] = "none"
    if args.lr is not None:
        kw["lr"] = args.lr
    try:
        AdaptConfig(**kw)
    except ValueError as e:
        raise UsageError(str(e)) from e
    return kw


def format_arms(names) -> str:
    """The arm table: name, what it trains, its init, its recipe."""
    from ..protocol import METHODS, arm_table_row  # torch: loaded when the command runs (clipiqa --help < 1 s)
    rows = [arm_table_row(METHODS[n]) for n in names]
    cols = ("arm", "trains", "init", "recipe", "budget")
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(f"{c:<{width[c]}}" for c in cols).rstrip()]
    lines += ["  ".join(f"{r[c]:<{width[c]}}" for c in cols).rstrip() for r in rows]
    return "\n".join(lines)


def _progress_bar(total_hint: int):
    from tqdm.auto import tqdm  # ~0.1 s: loaded when a run starts, not when the parser is built
    bar = tqdm(total=total_hint, desc="bench", unit="run", file=sys.stderr, disable=None)

    def update(info: dict) -> None:
        bar.set_postfix_str(f"split {info['split']} {info['method']} {info['status']}")
        bar.update(info["done"] - bar.n)
        if info["done"] >= info["total"]:
            bar.close()
    return update


@command("bench", "run baselines and the method on the same seeded splits (evaluation protocol)")(_configure)
def cmd_bench(args: argparse.Namespace) -> int:
    # torch, pandas and the model code: loaded when the command runs, not when the parser is built (--help < 1 s)
    import torch

    from ..factory import load_model
    from ..protocol import DEFAULT_METHODS, METHODS, run_protocol
    from ..recipes import RECIPES
    from ..weights import WeightsUnavailableError
    if args.list_methods:
        print(format_arms(METHODS))
        print("\nrecipes:")
        for recipe in RECIPES.values():
            print(f"  {recipe.name:<14} {recipe.source}")
        return EXIT_OK
    if args.dataset is None or args.shots is None:
        raise UsageError("--dataset and --shots are required (e.g. --dataset demo --shots 20)")
    shots = parse_shots(args.shots)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads} is not allowed; use a positive integer")
        torch.set_num_threads(args.threads)
    if args.splits < 1:
        raise UsageError(f"--splits {args.splits} is not allowed; use a positive integer")
    methods = DEFAULT_METHODS if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = METHODS.unknown(methods)
    if unknown or not methods:
        raise UsageError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(METHODS)}")
    demo = args.dataset.lower() == "demo"
    meta_init = args.meta_init if args.meta_init is not None else ("auto" if demo else None)
    if args.out is not None:
        check_out_folder(args.out)  # before any work: its parent folder must exist

    load = partial(load_model, args.model, weights=args.weights, device=args.device)
    try:
        probe = load()
    except (WeightsUnavailableError, FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e
    spare = [probe]

    def factory(prompts=None):
        """Fresh models for the protocol; the probe model serves as its first (frozen) one."""
        return spare.pop() if prompts is None and spare else load(prompts=prompts)
    tiny = args.model.lower() == "tiny"
    overrides = _overrides(args, tiny)
    if probe.random_init:
        print(f"WARNING: model {args.model!r}: "
              f"{RANDOM_INIT.then('the numbers show that the pipeline runs, never that a method works')}.",
              file=sys.stderr)
    cpu_defaults = tiny and (args.epochs is None or args.augment is None)
    if cpu_defaults:
        print(f"tiny model: CPU-friendly budget for every adapted arm {overrides} (override with --epochs / "
              "--augment)", file=sys.stderr)
    dataset = load_bench_dataset(args.dataset, args.demo_types)
    print(f"dataset {dataset.attrs.get('dataset', args.dataset)}: {len(dataset)} images; {args.splits} split(s); "
          f"{shots} labelled per split; methods {', '.join(methods)}", file=sys.stderr)

    t0 = time.perf_counter()
    try:
        result = run_protocol(dataset, methods, shots=shots, n_splits=args.splits, seed=args.seed,
                              model_factory=factory, overrides=overrides, recipe=args.recipe,
                              selection=args.selection, meta_init=meta_init, out_dir=args.out,
                              on_progress=_progress_bar(args.splits * len(methods)), batch_size=args.batch_size)
    except ValueError as e:  # e.g. more shots than the training pool holds, an unknown recipe
        raise UsageError(str(e)) from e
    print(f"model {args.model}{' (random init)' if probe.random_init else ''}; shots {shots}; splits {args.splits}; "
          f"overrides {overrides or 'none'}{' (CPU-friendly tiny budget)' if cpu_defaults else ''}; "
          f"recipe for the paper arms {args.recipe or 'grmp'}; selection {args.selection or 'per recipe'}; "
          f"meta init {meta_init or 'none'}")
    print(result.to_text())
    print(f"wall time {time.perf_counter() - t0:.1f} s" + (f"; results in {args.out}" if args.out else ""))
    return EXIT_PARTIAL if (result.per_split["status"] == "error").any() else EXIT_OK
