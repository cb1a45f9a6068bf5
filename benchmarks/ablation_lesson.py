"""The paper's 2x2 ablation ({random init, meta init} x {without QGR, with QGR}) plus the automatic-strength arm,
on the ``lesson`` toy model, over several seeds of the split draws and two groups of held-out types.

Held-out distortion types only (none of them seen in the lesson model's pre-training), every bundled photo and
procedural evaluation contents, 64 px (the model's input size), synthetic severity labels. The meta init is one
meta pre-training run of the prompts (text context + visual prompts) per seed, on source tasks made of the
*pre-training* types and a few others, none of them among the test types. Each (group, seed) runs the protocol on
``--splits`` content-disjoint splits and writes ``<out>/<group>-seed<k>/per_split.csv``; ``--report`` reads every
such file under ``<out>`` and prints the tables: per arm SRCC mean over all splits, mean ± std of the per-seed
means, scene retention (KL to the frozen teacher, top-scene agreement) and paired wins with a sign test.

    .venv/bin/python benchmarks/ablation_lesson.py --group weak --seeds 0 1 2 --out runs/ablation
    .venv/bin/python benchmarks/ablation_lesson.py --group near --seeds 0 1 2 --out runs/ablation
    .venv/bin/python benchmarks/ablation_lesson.py --report --out runs/ablation

A toy: the numbers show whether the machinery learns on synthetic distortions, never how real CLIP behaves.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import torch

GROUPS = {
    # where the toy's zero-shot is weak at 64 px (lesson.WEAK_HELD_OUT_TYPES, measured): labels have much to teach
    "weak": ("motion_blur", "jpeg", "pixelate"),
    # held-out types close to the pre-training ones (other blurs and noises): zero-shot already ranks them
    "near": ("lens_blur", "colour_noise", "impulse_noise"),
}
META_SOURCE_TYPES = ("gaussian_blur", "white_noise", "lens_blur", "colour_noise", "contrast_decrease")
METHODS = ("zero-shot", "ft", "ft+qgr", "meta+ft", "meta+ft+qgr", "ft+qgr-auto")
PAIRS = (("ft+qgr", "ft"), ("meta+ft+qgr", "meta+ft"), ("ft+qgr-auto", "ft"), ("ft+qgr-auto", "ft+qgr"),
         ("meta+ft", "ft"), ("ft", "zero-shot"))
VISUAL_TOKENS = 8  # visual prompt tokens the meta checkpoint learns (64-token lesson images; the paper uses 100)


def build_dataset(folder: Path, types, instances: int):
    from clipiqa import lesson
    from clipiqa.data.demo import PHOTOS
    from clipiqa.data.procedural import KINDS
    return lesson.write_lesson_set(folder, photos=list(PHOTOS), kinds=list(KINDS), types=list(types),
                                   instances=instances)


def meta_init(out: Path, epochs: int, seed: int) -> tuple[Path, dict]:
    """One meta pre-training of the prompts on source tasks from the training photos; returns ``last`` and facts.

    ``last``, not ``best``: selection reads one small held-out source task, whose SRCC is noise at this size, and
    picked epoch 0 (the random start itself) when tried, i.e. no meta init at all."""
    from clipiqa import lesson, meta
    from clipiqa.data.demo import demo_references
    from clipiqa.factory import load_model
    from clipiqa.presets import get_preset
    from clipiqa.prompts import PromptConfig
    recipe = lesson.LessonRecipe.from_dict(get_preset("lesson").lesson)
    size = lesson.lesson_image_size()
    tasks = meta.synthetic_tasks(demo_references(size, recipe.train_photos), types=META_SOURCE_TYPES,
                                 levels=(1, 2, 3, 4, 5), size=size, seed=seed, cache_dir=out / "tasks")
    model = load_model("lesson", device="cpu", prompts=PromptConfig(visual_tokens=VISUAL_TOKENS))
    config = meta.MetaConfig(epochs=epochs, trainable="prompts", inner_steps=3, inner_lr=1e-2, tasks_per_batch=1,
                             batch_size=16, augment="none", holdout_tasks=("contrast_decrease",), seed=seed)
    history = meta.meta_pretrain(model, tasks, config, out_dir=out / "meta", resume=False)
    evals = history.evals_frame().groupby("epoch")["srcc_adapted"].mean()
    return out / "meta" / "last", {"rel_move": history.rel_move, "best_epoch": history.best_epoch,
                                   "held_out_srcc_by_epoch": evals.round(3).to_dict()}


ARMS = {"zero-shot": ("frozen", "-"), "ft": ("random", "no"), "ft+qgr": ("random", "λ 5"),
        "meta+ft": ("meta", "no"), "meta+ft+qgr": ("meta", "λ 5"), "ft+qgr-auto": ("random", "λ chosen per split")}


def run_group(args) -> None:
    """One protocol run per seed for ``args.group``; each writes its own folder (skipped when already there)."""
    from clipiqa.factory import load_model
    from clipiqa.protocol import run_protocol
    out = Path(args.out)
    types = GROUPS[args.group]
    data = build_dataset(out / f"images-{args.group}", types, args.instances)
    overrides = {"epochs": args.epochs, "lr": args.lr, "momentum": 0.9, "augment": "none",
                 "batch_size": args.shots, "qgr": {"auto_grid": list(args.auto_grid), "auto_folds": args.auto_folds}}
    for seed in args.seeds:
        folder = out / f"{args.group}-seed{seed}"
        if (folder / "per_split.csv").is_file():
            print(f"{folder}: done already", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            init, facts = meta_init(out / f"meta-seed{seed}", args.meta_epochs, seed)
        result = run_protocol(data, methods=METHODS, shots=args.shots, n_splits=args.splits, seed=seed * 1000,
                              model_factory=partial(load_model, "lesson", device="cpu"), overrides=overrides,
                              meta_init=init, n_boot=200,
                              on_progress=lambda r: print(f"  {args.group} seed {seed} {r['done']}/{r['total']} "
                                                          f"split {r['split']} {r['method']}: {r['status']} "
                                                          f"{r['seconds']:.1f} s", file=sys.stderr))
        per = result.per_split.copy()
        per["seed"], per["group"] = seed, args.group
        folder.mkdir(parents=True, exist_ok=True)
        facts.update(types=list(types), n_images=len(data), n_contents=int(data["content_id"].nunique()),
                     overrides=overrides, minutes=(time.perf_counter() - t0) / 60, notes=result.notes)
        (folder / "facts.json").write_text(json.dumps(facts, indent=1, default=str))
        per.drop(columns=[c for c in per.columns if c.startswith("pred")], errors="ignore").to_csv(
            folder / "per_split.csv", index=False)


def report(out: Path) -> str:
    """Markdown tables of every ``per_split.csv`` under ``out``, one block per group of held-out types."""
    import pandas as pd
    from clipiqa.metrics import chance_band
    from clipiqa.protocol.seeds import over_seeds, paired_verdict, paired_wins
    frames = [pd.read_csv(p) for p in sorted(out.glob("*-seed*/per_split.csv"))]
    if not frames:
        return f"no per_split.csv under {out}"
    per = pd.concat(frames, ignore_index=True)
    blocks = []
    for group, part in per.groupby("group", sort=False):
        facts = json.loads(next(out.glob(f"{group}-seed*/facts.json")).read_text())
        n_test = int(part["n_test"].median())
        table = over_seeds(part, ("srcc", "scene_kl", "scene_agree"))
        lines = [f"**{group}**: held-out types {', '.join(facts['types'])} ({facts['n_images']} images of "
                 f"{facts['n_contents']} contents); {part['seed'].nunique()} seeds x "
                 f"{part['split'].nunique()} splits; about {n_test} test images per split (chance band "
                 f"±{chance_band(n_test):.2f})", "",
                 "| arm | init | QGR | SRCC, all splits | SRCC, seed means ± std | scene KL to teacher | "
                 "top scene kept | splits |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in table.to_dict("records"):
            init, qgr = ARMS.get(r["method"], ("?", "?"))
            kl = f"{r['scene_kl_mean']:.3f}" if pd.notna(r.get("scene_kl_mean")) else "-"
            agree = f"{r['scene_agree_mean']:.0%}" if pd.notna(r.get("scene_agree_mean")) else "-"
            lines.append(f"| {r['method']} | {init} | {qgr} | {r['srcc_mean']:.3f} | {r['srcc_seed_mean']:.3f} ± "
                         f"{r['srcc_seed_std']:.3f} | {kl} | {agree} | {r['n_splits']} |")
        lines.append("")
        lines += [f"- {paired_verdict(paired_wins(part, a, b))}" for a, b in PAIRS]
        if "qgr_lam" in part:
            lam = part[part["method"] == "ft+qgr-auto"]["qgr_lam"].value_counts().sort_index()
            lines.append("- ft+qgr-auto chose λ: " + ", ".join(f"{k:g} on {v}" for k, v in lam.items()))
        minutes = sum(json.loads(p.read_text())["minutes"] for p in out.glob(f"{group}-seed*/facts.json"))
        lines.append(f"- {minutes:.0f} min of compute for this group (1 thread, shared machine); overrides "
                     f"{facts['overrides']}; meta init rel_move {facts['rel_move']:.3f}")
        blocks.append("\n".join(lines))
    caption = ("Toy model (the `lesson` CLIP trained here on synthetic distortions) and synthetic severity labels: "
               "these numbers show what the machinery does on the toy, never how real CLIP behaves.")
    return caption + "\n\n" + "\n\n".join(blocks)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group", choices=sorted(GROUPS), default="weak")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--splits", type=int, default=10)
    p.add_argument("--shots", type=int, default=50)
    p.add_argument("--epochs", type=int, default=60, help="fine-tuning epochs of every adapted arm")
    p.add_argument("--lr", type=float, default=3e-2, help="fine-tuning SGD learning rate (momentum 0.9)")
    p.add_argument("--auto-grid", type=float, nargs="+", default=[0.0, 1.0, 5.0])
    p.add_argument("--auto-folds", type=int, default=2)
    p.add_argument("--meta-epochs", type=int, default=6)
    p.add_argument("--instances", type=int, default=1, help="evaluation instances of every procedural kind")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/ablation-lesson")
    p.add_argument("--report", action="store_true", help="print the tables of the runs under --out")
    args = p.parse_args(argv)
    if args.report:
        print(report(Path(args.out)))
        return 0
    torch.set_num_threads(args.threads)
    run_group(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
