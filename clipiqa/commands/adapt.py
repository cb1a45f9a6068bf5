"""``clipiqa adapt``: few-shot fine-tuning on a label CSV, written as a checkpoint plus ``history.csv``.

    clipiqa adapt --labels labels.csv --model vitb16-openai --init runs/meta/best --out runs/adapted
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..hashing import file_sha256
from ..presets import DEFAULT_MODEL
from .common import EXIT_OK, UsageError, command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", required=True,
                   help="label CSV: path,score (the labelling panel's output) or a pyiqa-style meta-info CSV; "
                        "comma-, semicolon- or tab-separated")
    p.add_argument("--images-root", default=None, help="folder that relative paths resolve against "
                                                       "(default: the CSV's folder); paths must lie inside it")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help="the labels are this dataset's (live, csiq, kadid10k, livec, koniq10k, tid2013, spaq; "
                        "aliases accepted): use its declared score range and direction (e.g. a pyiqa DMOS "
                        "file); livec drops its 7 practice images t1-t7")
    p.add_argument("--score-range", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                   help="the scale of the scores (default 1 5, or the --dataset's); any other range needs "
                        "--higher-better or --lower-better")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--higher-better", action="store_true",
                           help="higher scores mean better quality (MOS; the default on the 1-5 scale)")
    direction.add_argument("--lower-better", action="store_true",
                           help="lower scores mean better quality (e.g. DMOS)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="accept label paths outside --images-root (without it: relative paths that climb "
                        "out of the CSV's folder)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"backbone preset (default {DEFAULT_MODEL})")
    p.add_argument("--weights", default=None, help="local weights file or open_clip folder (never uses the network)")
    p.add_argument("--init", default=None, help="checkpoint to start from (e.g. a meta checkpoint DIR/best)")
    p.add_argument("--out", required=True, help="checkpoint folder to write (adapter.safetensors, card.json, "
                                                "history.csv); its parent folder must exist")
    p.add_argument("--force", action="store_true", help="overwrite a checkpoint that already exists at --out")
    p.add_argument("--recipe", default=None,
                   help="start from a named recipe (grmp, coop, grmp-released; see `clipiqa bench --list-methods`); "
                        "the flags below override it. grmp-released selects on --test-labels: optimistic")
    p.add_argument("--trainable", choices=("last-blocks", "prompts", "text"), default=None,
                   help="last-blocks: text context + last 4 blocks of both encoders (default; GRMP-IQA's set); "
                        "prompts: text + visual prompts (light, CPU-friendly); text: context only (CoOp)")
    p.add_argument("--epochs", type=int, default=None, help="default 50 (or the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (or the recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="default 192 (or the recipe's)")
    qgr = p.add_mutually_exclusive_group()
    qgr.add_argument("--qgr-lam", type=_lam_arg, default=5.0,
                     help="QGR strength lam (default 5, the released code's; 0 = off; auto = chosen per run by "
                          "content-grouped cross-validation on the labelled images alone, descent guard on)")
    qgr.add_argument("--no-qgr", action="store_true", help="plain fine-tuning (QGR off)")
    p.add_argument("--selection", choices=("fixed", "val", "test-oracle"), default=None,
                   help="fixed epoch budget (default), best epoch on a held-out part of the labels (val), or on "
                        "--test-labels (test-oracle: the released protocol, optimistic)")
    p.add_argument("--test-labels", default=None,
                   help="label CSV of the test split, read like --labels; only for --selection test-oracle / "
                        "--recipe grmp-released")
    p.add_argument("--augment", choices=("none", "model", "grmp"), default=None,
                   help="training crops: model (default: backbone preprocessing + random crop/flip), grmp "
                        "(the released GRMP-IQA crops: 244 squash, 224 crop, ImageNet mean/std), "
                        "none (one centre crop)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default auto)")
    p.add_argument("--seed", type=int, default=0)


def _read(args: argparse.Namespace):
    """The labels, read with the scale and direction the flags declare (never guessed upside down).

    Afterwards ``args.score_range`` and ``args.lower_better`` hold what was used (the dataset's when
    ``--dataset`` is given), so the checkpoint card records the real scale.
    """
    from ..data import DATASETS, LabelScaleError, read_labels
    from ..data.readers import canonical_name
    score_range = None
    if args.score_range is not None:
        lo, hi = args.score_range
        if not hi > lo:
            raise UsageError(f"--score-range {lo:g} {hi:g} is not allowed; give LO HI with HI > LO")
        score_range = (lo, hi)
    direction = True if args.higher_better else False if args.lower_better else None
    if args.dataset is not None:
        try:
            spec = DATASETS[canonical_name(args.dataset)]
        except ValueError as e:
            raise UsageError(f"--dataset: {e}") from e
        if direction is not None and direction != spec.higher_better:
            flag = "--higher-better" if direction else "--lower-better"
            raise UsageError(f"--dataset {args.dataset}: {spec.title} declares that "
                             f"{'higher' if spec.higher_better else 'lower'} scores are better; drop {flag}")
    try:
        labels = read_labels(args.labels, args.images_root, dataset=args.dataset, score_range=score_range,
                             higher_better=direction, allow_outside_root=args.allow_outside_root)
    except LabelScaleError as e:
        raise UsageError(f"{e.path}: {e.reason}; pass --dataset NAME ({', '.join(sorted(DATASETS))}), or "
                         "--score-range LO HI together with --higher-better or --lower-better") from e
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e).replace("allow_outside_root=True", "--allow-outside-root")) from e
    args.score_range = tuple(labels.attrs["score_range"])
    args.lower_better = not labels.attrs["higher_better"]
    return labels


CLI_DEFAULTS = {"trainable": "last-blocks", "epochs": 50, "lr": 1e-3, "batch_size": 192, "augment": "model",
                "selection": "fixed"}
"""What ``clipiqa adapt`` trains with when neither a flag nor ``--recipe`` says otherwise."""


def _lam_arg(value: str):
    """``--qgr-lam``: a number, or ``auto``."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number or 'auto'") from None


def _config(args: argparse.Namespace):
    from ..finetune import AdaptConfig
    from ..qgr import QGRConfig
    from ..recipes import RECIPES
    lam = 0.0 if args.no_qgr else args.qgr_lam
    if args.recipe is not None and args.recipe not in RECIPES:
        raise UsageError(f"--recipe {args.recipe!r} is not known; use one of {', '.join(RECIPES)}")
    settings = dict(RECIPES[args.recipe].settings) if args.recipe else dict(CLI_DEFAULTS)
    flags = {"trainable": args.trainable, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
             "augment": args.augment, "selection": args.selection}
    settings.update({k: v for k, v in flags.items() if v is not None})
    try:
        qgr = QGRConfig(lam="auto", enabled=True) if lam == "auto" else QGRConfig(lam=lam, enabled=lam > 0)
        return AdaptConfig(**settings, seed=args.seed, qgr=qgr)
    except ValueError as e:
        raise UsageError(str(e)) from e


def _test_labels(args: argparse.Namespace, config):
    """The test split for a test-oracle selection (read with the same scale flags as --labels), or None."""
    if config.selection != "test-oracle":
        if args.test_labels is not None:
            raise UsageError("--test-labels is only used by --selection test-oracle (or --recipe grmp-released)")
        return None
    if args.test_labels is None:
        raise UsageError("test-oracle selection picks the best epoch on the test split: give it with --test-labels "
                         "(the result is optimistic and labelled so)")
    labels_flag = args.labels
    try:
        args.labels = args.test_labels
        return _read(args)
    finally:
        args.labels = labels_flag


def _load(args: argparse.Namespace):
    from ..factory import load_model
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
    return float(srcc(scores["logit_margin"].to_numpy(float), table["q"].to_numpy(float)))


@command("adapt", "few-shot fine-tuning on a label CSV; writes a checkpoint")(_configure)
def cmd_adapt(args: argparse.Namespace) -> int:
    import math

    import pandas as pd

    from ..finetune import AdaptationDivergedError, adapt
    from ..recipes import OPTIMISTIC_RECIPE_NOTE
    from ..checkpoint import save_checkpoint
    from ..explain.prompt_words import prompt_words
    from .common import check_out_checkpoint, random_init_warning, write_table
    from ..data.splits import split_hash

    check_out_checkpoint(args.out, args.force)  # before any work: a missing folder or an old checkpoint
    labels = _read(args)
    if len(labels) < 2:
        raise UsageError(f"{args.labels} has {len(labels)} labelled image(s); adaptation needs at least 2")
    config = _config(args)
    test = _test_labels(args, config)
    model = _load(args)
    random_init_warning(model)
    steps = math.ceil(len(labels) * (1 - config.val_fraction if config.selection == "val" else 1) / config.batch_size)
    on_step, bar = _step_bar(config.epochs * steps)
    before = prompt_words(model)  # what the text context reads like before training, for the card
    try:
        history = adapt(model, labels, config, on_step=on_step, test=test)
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
    for kind in ("val", "test"):
        if f"srcc_{kind}" in evals and config.selection in (kind, f"{kind}-oracle"):
            chosen = evals[evals["epoch"] == history.selected_epoch]
            metrics[f"{kind}_srcc"] = float((chosen if len(chosen) else evals)[f"srcc_{kind}"].iloc[-1])
    if config.selection == "test-oracle":
        metrics["optimistic"] = OPTIMISTIC_RECIPE_NOTE
    if history.note:
        metrics["note"] = history.note
    data = {"labels": str(Path(args.labels).resolve()), "labels_sha256": file_sha256(args.labels),
            "images_hash": split_hash(labels), "score_range": list(args.score_range),
            "higher_better": not args.lower_better, "dataset": labels.attrs.get("dataset"), "n_images": len(labels)}
    out = Path(args.out)
    save_checkpoint(model, out, trainable=config.trainable, training={**config.to_dict(), "init": args.init},
                    data=data, metrics=metrics, qgr=history.qgr_record(), prompt_words_before=before)
    history_path = out.with_suffix(".history.csv") if out.suffix == ".safetensors" else out / "history.csv"
    write_table(pd.concat([history.steps_frame(), evals], ignore_index=True), history_path)
    line = f"train SRCC {metrics['train_srcc']:.3f}"
    if "val_srcc" in metrics:
        line += f", val SRCC {metrics['val_srcc']:.3f} (epoch {history.selected_epoch})"
    if "test_srcc" in metrics:
        line += f", test SRCC {metrics['test_srcc']:.3f} (epoch {history.selected_epoch}; {OPTIMISTIC_RECIPE_NOTE})"
    line += model.source.caveat.bracket()
    print(f"wrote {out} ({len(history.steps)} steps, {history.seconds:.1f} s); {line}")
    if history.note:
        print(f"note: {history.note}", file=sys.stderr)
    return EXIT_OK
