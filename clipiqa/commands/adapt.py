"""``clipiqa adapt``: few-shot fine-tuning on a label CSV, written as a checkpoint plus ``history.csv``.

    clipiqa adapt --labels labels.csv --model vitb16-openai --init runs/meta/best --out runs/adapted
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from ..cli import EXIT_OK, UsageError, command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", required=True,
                   help="label CSV: path,score (the labelling panel's output) or a pyiqa-style meta-info CSV")
    p.add_argument("--images-root", default=None, help="folder that relative paths resolve against "
                                                       "(default: the CSV's folder)")
    p.add_argument("--score-range", nargs=2, type=float, metavar=("LO", "HI"), default=(1.0, 5.0),
                   help="the scale of the scores (default 1 5)")
    p.add_argument("--lower-better", action="store_true", help="lower scores mean better quality (e.g. DMOS)")
    p.add_argument("--model", default="vitb16-openai", help="backbone preset (default vitb16-openai)")
    p.add_argument("--weights", default=None, help="local weights file or open_clip folder (never uses the network)")
    p.add_argument("--init", default=None, help="checkpoint to start from (e.g. a meta checkpoint DIR/best)")
    p.add_argument("--out", required=True, help="checkpoint folder to write (adapter.safetensors, card.json, "
                                                "history.csv)")
    p.add_argument("--trainable", choices=("paper", "prompts", "text"), default="paper",
                   help="paper: text context + last 4 blocks of both encoders (default); prompts: text + visual "
                        "prompts (light, CPU-friendly); text: context only (CoOp)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=192)
    qgr = p.add_mutually_exclusive_group()
    qgr.add_argument("--qgr-lam", type=float, default=5.0,
                     help="QGR strength lam (default 5, the released code's; 0 = off)")
    qgr.add_argument("--no-qgr", action="store_true", help="plain fine-tuning (QGR off)")
    p.add_argument("--selection", choices=("fixed", "val"), default="fixed",
                   help="fixed epoch budget (default) or best epoch on a held-out part of the labels")
    p.add_argument("--augment", choices=("none", "model", "paper"), default="model",
                   help="training crops: model (default: backbone preprocessing + random crop/flip), paper "
                        "(244 squash, 224 crop, ImageNet mean/std), none (one centre crop)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default auto)")
    p.add_argument("--seed", type=int, default=0)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read(args: argparse.Namespace):
    from ..data import read_labels
    lo, hi = args.score_range
    if not hi > lo:
        raise UsageError(f"--score-range {lo:g} {hi:g} is not allowed; give LO HI with HI > LO")
    try:
        return read_labels(args.labels, args.images_root, score_range=(lo, hi), higher_better=not args.lower_better)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from e


def _config(args: argparse.Namespace):
    from ..finetune import AdaptConfig
    from ..qgr import QGRConfig
    lam = 0.0 if args.no_qgr else args.qgr_lam
    try:
        return AdaptConfig(trainable=args.trainable, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                           augment=args.augment, selection=args.selection, seed=args.seed,
                           qgr=QGRConfig(lam=lam, enabled=lam > 0))
    except ValueError as e:
        raise UsageError(str(e)) from e


def _load(args: argparse.Namespace):
    from ..model import load_model
    from ..weights import WeightsUnavailableError
    try:
        return load_model(args.model, weights=args.weights, device=args.device, prompts=args.init, seed=args.seed)
    except (WeightsUnavailableError, FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e


def _step_bar(total: int):
    from tqdm.auto import tqdm
    bar = tqdm(total=total, desc="adapting", unit="step", file=sys.stderr, disable=None)

    def on_step(record: dict) -> None:
        if record.get("kind") == "step":
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", epoch=record["epoch"])
        elif record.get("kind") == "eval":
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k.startswith("srcc_")})
    return on_step, bar


def _training_srcc(model, table, batch_size: int = 32) -> float:
    from ..metrics import srcc
    from ..scoring import score_files
    scores = score_files(model, list(table["path"]), batch_size=batch_size)
    return float(srcc(scores["score"].to_numpy(float), table["q"].to_numpy(float)))


@command("adapt", "few-shot fine-tuning on a label CSV; writes a checkpoint")(_configure)
def cmd_adapt(args: argparse.Namespace) -> int:
    import math

    import pandas as pd

    from ..finetune import AdaptationDivergedError, adapt
    from ..checkpoint import save_checkpoint
    from ..cli import random_init_warning
    from ..data.splits import split_hash

    labels = _read(args)
    if len(labels) < 2:
        raise UsageError(f"{args.labels} has {len(labels)} labelled image(s); adaptation needs at least 2")
    config = _config(args)
    model = _load(args)
    random_init_warning(model)
    steps = math.ceil(len(labels) * (1 - config.val_fraction if config.selection == "val" else 1) / config.batch_size)
    on_step, bar = _step_bar(config.epochs * steps)
    try:
        history = adapt(model, labels, config, on_step=on_step)
    except AdaptationDivergedError as e:
        bar.close()
        raise UsageError(str(e)) from e
    except ValueError as e:
        bar.close()
        raise UsageError(str(e)) from e
    bar.close()

    metrics = {"train_srcc": _training_srcc(model, labels), "n_labelled": len(labels),
               "selected_epoch": history.selected_epoch, "seconds": history.seconds}
    evals = history.evals_frame()
    if config.selection == "val" and len(evals):
        chosen = evals[evals["epoch"] == history.selected_epoch]
        metrics["val_srcc"] = float((chosen if len(chosen) else evals)["srcc_val"].iloc[-1])
    data = {"labels": str(Path(args.labels).resolve()), "labels_sha256": file_sha256(args.labels),
            "images_hash": split_hash(labels), "score_range": list(args.score_range),
            "higher_better": not args.lower_better, "n_images": len(labels)}
    out = Path(args.out)
    save_checkpoint(model, out, trainable=config.trainable, training={**config.to_dict(), "init": args.init},
                    data=data, metrics=metrics)
    history_path = out.with_suffix(".history.csv") if out.suffix == ".safetensors" else out / "history.csv"
    pd.concat([history.steps_frame(), evals], ignore_index=True).to_csv(history_path, index=False)
    line = f"train SRCC {metrics['train_srcc']:.3f}"
    if "val_srcc" in metrics:
        line += f", val SRCC {metrics['val_srcc']:.3f} (epoch {history.selected_epoch})"
    if model.random_init:
        line += " [random-init model: meaningless]"
    print(f"wrote {out} ({len(history.steps)} steps, {history.seconds:.1f} s); {line}")
    return EXIT_OK
