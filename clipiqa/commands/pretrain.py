"""``clipiqa pretrain``: meta pre-training over distortion-type tasks (docs/design.md, 'Meta-prompt pre-training').

Task sources (``--tasks``, one or more): ``demo`` (synthetic distortions of the bundled sample photos),
``folder:PATH`` (synthetic distortions of your own reference photos), ``kadid10k:ROOT``, ``tid2013:ROOT``.
Writes ``OUT/best`` (the meta init, selected on held-out *source* tasks), ``OUT/last``, ``OUT/history.csv``
and periodic state in ``OUT/state`` (rerun the same command to resume). Works under
``torchrun --nproc_per_node N -m clipiqa pretrain ...`` (tasks of each meta batch spread over ranks).

The outer optimizer defaults per algorithm (Reptile: SGD 1.0 annealed linearly to 0; FOMAML: Adam 1e-3); the
summary says how far the meta parameters moved (``|theta - theta0| / |theta0|``, also in ``history.csv``) and
warns below 1 %. ``--algorithm released`` runs the released code's loop, for comparison only (labelled so).
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from typing import Callable

from .common import EXIT_OK, UsageError, add_model_args, command, load_model_from_args, random_init_warning

EXIT_STOPPED = 130
DATASET_SOURCES = ("kadid10k", "tid2013")


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", nargs="+", default=["demo"], metavar="SOURCE",
                   help="demo | folder:PATH | kadid10k:ROOT | tid2013:ROOT (several may be pooled; default demo)")
    p.add_argument("--types", nargs="+", default=None,
                   help="keep only these distortion types: names for demo/folder (see clipiqa.data.list_distortions), "
                        "two-digit codes for KADID-10k/TID2013 (default: all)")
    p.add_argument("--levels", nargs="+", type=int, default=[1, 2, 3, 4, 5], help="synthetic levels (1-5)")
    p.add_argument("--size", type=int, default=256, help="synthetic reference size in pixels (default 256)")
    p.add_argument("--cache-dir", default=None, help="where synthetic task images are written")
    add_model_args(p)
    p.add_argument("--out", required=True, help="output folder: best/, last/, history.csv, state/")
    p.add_argument("--algorithm", choices=("reptile", "fomaml", "released"), default="reptile",
                   help="reptile (default), fomaml (first-order MAML), or released: the released code's loop (inner "
                        "model never reset, query steps, outer step per dataset phase), for comparison only")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--inner-lr", type=float, default=1e-4)
    p.add_argument("--meta-lr", type=float, default=None,
                   help="outer step size beta, or Adam's learning rate with --outer-optimizer adam (default per "
                        "algorithm: reptile 1.0, fomaml 1e-3, released 0.01)")
    p.add_argument("--outer-optimizer", choices=("sgd", "adam"), default=None,
                   help="outer optimizer (default per algorithm: reptile sgd, fomaml adam, released sgd)")
    p.add_argument("--meta-lr-schedule", choices=("constant", "linear"), default=None,
                   help="outer step size schedule; linear anneals to 0 over the run (default: reptile linear, "
                        "others constant)")
    p.add_argument("--tasks-per-batch", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32, help="images per inner step")
    p.add_argument("--holdout", default="0.2",
                   help="held-out source tasks for selection: a fraction, or comma-separated task names")
    p.add_argument("--trainable", choices=("prompts", "text", "last-blocks"), default="prompts",
                   help="what meta-training learns: prompts (default), text (context only), last-blocks (context + "
                        "tuned copies of the last blocks)")
    p.add_argument("--qgr-lam", type=float, default=0.0, help="QGR strength for inner steps (default 0 = off)")
    p.add_argument("--augment", choices=("model", "grmp", "none"), default="model",
                   help="training crops: model (default), grmp (the released GRMP-IQA crops), none")
    p.add_argument("--n-views", type=int, default=0, help="cached crops per support image (0 = fresh crops)")
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--checkpoint-every", type=int, default=1)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from OUT/state when it exists (default on)")
    p.add_argument("--force", action="store_true",
                   help="write into an --out that holds a run which cannot be resumed (overwrites best/, last/ ...)")
    p.add_argument("--seed", type=int, default=0)


# ------------------------------------------------------------------------------------------- helpers
def _holdout(text: str) -> float | tuple[str, ...]:
    try:
        return float(text)
    except ValueError:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        if not names:
            raise UsageError(f"--holdout {text!r} is not allowed; give a fraction or task names") from None
        return names


def _config(args: argparse.Namespace):
    from ..meta import MetaConfig
    from ..qgr import QGRConfig
    try:
        return MetaConfig(algorithm=args.algorithm, inner_steps=args.inner_steps, inner_lr=args.inner_lr,
                          meta_lr=args.meta_lr, outer_optimizer=args.outer_optimizer,
                          meta_lr_schedule=args.meta_lr_schedule, epochs=args.epochs,
                          tasks_per_batch=args.tasks_per_batch,
                          batch_size=args.batch_size, holdout_tasks=_holdout(args.holdout),
                          trainable=args.trainable, qgr=QGRConfig(lam=args.qgr_lam), augment=args.augment,
                          n_views=args.n_views, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                          seed=args.seed)
    except ValueError as e:
        raise UsageError(str(e)) from e


def _parse_source(spec: str) -> tuple[str, str | None]:
    kind, _, where = spec.partition(":")
    kind = kind.lower()
    if kind == "demo" and not where:
        return kind, None
    if kind in ("folder",) + DATASET_SOURCES and where:
        return kind, where
    raise UsageError(f"--tasks {spec!r} is not allowed; use demo, folder:PATH, kadid10k:ROOT or tid2013:ROOT")


def _source_tasks(kind: str, where: str | None, types: list[str] | None, args: argparse.Namespace,
                  cache_dir: str | None) -> list:
    from ..data import demo_references, read_dataset
    from ..data.distortions import DISTORTIONS
    from ..meta import synthetic_tasks, tasks_from_dataset
    if kind in DATASET_SOURCES:
        df = read_dataset(kind, where)
        codes = None if types is None else [t for t in types if t in set(df["distortion"].dropna().astype(str))]
        return tasks_from_dataset(df, types=codes)
    names = None if types is None else [t for t in types if t in DISTORTIONS]
    if names == []:
        return []
    refs = demo_references(args.size) if kind == "demo" else where
    return synthetic_tasks(refs, types=names, levels=args.levels, size=args.size, seed=args.seed,
                           cache_dir=cache_dir)


def build_tasks(args: argparse.Namespace) -> list:
    """The source tasks named by ``--tasks`` (and filtered by ``--types``); names are prefixed by the source
    when several synthetic sources are pooled, so they stay unique."""
    from ..data import DatasetFormatError
    from ..meta import Task
    sources = [_parse_source(s) for s in args.tasks]
    types = list(args.types) if args.types else None
    tasks, used = [], set()
    for i, (kind, where) in enumerate(sources):
        cache_dir = args.cache_dir if args.cache_dir is None or len(sources) == 1 else f"{args.cache_dir}/{i}-{kind}"
        try:
            part = _source_tasks(kind, where, types, args, cache_dir)
        except (ValueError, FileNotFoundError, DatasetFormatError) as e:
            raise UsageError(f"--tasks {kind}{':' + where if where else ''}: {e}") from e
        if len(sources) > 1 and kind not in DATASET_SOURCES:
            part = [Task(f"{kind}:{t.name}", t.table, t.description) for t in part]
        used.update(t.name.rsplit(":", 1)[-1] for t in part)
        tasks.extend(part)
    unknown = sorted(set(types or ()) - used)
    if unknown:
        raise UsageError(f"--types {' '.join(unknown)} matched no task of {', '.join(args.tasks)}")
    return tasks


def _collective_build(args: argparse.Namespace) -> list:
    """Rank 0 builds (and caches) the tasks first; the other ranks then read the same cache."""
    from .. import distributed as ddp
    tasks, error = None, None
    if ddp.is_main():
        try:
            tasks = build_tasks(args)
        except UsageError as e:
            error = e
    if ddp.all_reduce_max(error is not None) > 0:
        raise error if error is not None else UsageError("building the tasks failed on rank 0")
    return tasks if tasks is not None else build_tasks(args)


def _progress(total_hint: int) -> Callable[[dict], None]:
    from tqdm.auto import tqdm
    bar = None

    def on_step(record: dict) -> None:
        nonlocal bar
        if record.get("kind") == "inner":
            return
        if bar is None:
            bar = tqdm(total=record.get("total_steps", total_hint), desc="meta pre-training", unit="meta-step",
                       file=sys.stderr, disable=None)
        if record["kind"] == "step":
            bar.update(record["meta_step"] - bar.n)
            bar.set_postfix(loss=f"{record['loss_last']:.3f}", epoch=record["epoch"],
                            moved=f"{100 * record.get('rel_move', float('nan')):.2g}%")
            if bar.n >= bar.total:
                bar.close()
        elif record["kind"] == "eval":
            bar.write(f"epoch {record['epoch']}: held-out SRCC {record['srcc']:.3f}", file=sys.stderr)
    return on_step


class _StopOnSigint:
    """First Ctrl-C asks the run to stop after the current step (state is saved); a second one aborts."""

    def __init__(self):
        self.event = threading.Event()
        self._old = None

    def __enter__(self) -> "_StopOnSigint":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        print("\nstopping after this step (Ctrl-C again to abort) ...", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _summary(history, model, args: argparse.Namespace) -> None:
    meaningless = model.source.caveat.bracket()
    score = history.best_score
    shown = "n/a" if score is None or not math.isfinite(score) else f"{score:.3f}"
    print(f"held-out source tasks ({', '.join(history.holdout_tasks)}): best mean SRCC {shown} at epoch "
          f"{history.best_epoch}{meaningless}", file=sys.stderr)
    if history.rel_move is not None:
        outer = history.outer
        print(f"meta parameters moved {100 * history.rel_move:.3g} % of their norm from the start "
              f"(|theta - theta0| / |theta0|; outer {outer.get('optimizer')}, meta_lr {outer.get('lr')} "
              f"{outer.get('schedule')})", file=sys.stderr)
    if history.note:
        print(history.note, file=sys.stderr)
    print(f"wrote {args.out}/best (meta init), {args.out}/last, {args.out}/history.csv", file=sys.stderr)


def _check_out(args: argparse.Namespace) -> None:
    """Before any work: ``--out`` must be creatable, and a run already there is only continued (``--resume`` with
    ``OUT/state``) or overwritten with ``--force``, never overwritten silently."""
    from .common import check_out_folder
    out = check_out_folder(args.out)
    if args.force or not out.is_dir():
        return
    existing = [n for n in ("best", "last", "history.csv", "state") if (out / n).exists()]
    resumable = (out / "state" / "latest.json").is_file()
    if existing and not (args.resume and resumable):
        why = "--no-resume would start it again" if resumable else "it has no state/ to resume from"
        raise UsageError(f"--out {args.out} already holds a pre-training run ({', '.join(existing)}) and {why}; "
                         "give another --out, or add --force to overwrite it")


# ------------------------------------------------------------------------------------------- command
@command("pretrain", "meta-prompt pre-training over distortion-type tasks (Reptile or first-order MAML)")(_configure)
def cmd_pretrain(args: argparse.Namespace) -> int:
    from .. import distributed as ddp
    from ..meta import MetaDivergedError, meta_pretrain
    config = _config(args)
    _check_out(args)
    args.device = ddp.device_for_rank(args.device)
    ddp.init_distributed(device=args.device)
    try:
        tasks = _collective_build(args)
        model = load_model_from_args(args)
        main = ddp.is_main()
        if main:
            random_init_warning(model)
            print(f"{len(tasks)} source tasks; {ddp.get_world_size()} process(es)", file=sys.stderr)
        with _StopOnSigint() as sigint:
            try:
                history = meta_pretrain(model, tasks, config, out_dir=args.out, resume=args.resume,
                                        stop=sigint.event.is_set, on_step=_progress(0) if main else None)
            except ValueError as e:  # bad task split, resume with other settings ...
                raise UsageError(str(e)) from e
            except MetaDivergedError as e:
                raise UsageError(f"{e}; lower --inner-lr or --meta-lr") from e
        if main:
            _summary(history, model, args)
            if history.stopped:
                print(f"stopped; rerun the same command to resume from {args.out}/state", file=sys.stderr)
        return EXIT_STOPPED if history.stopped else EXIT_OK
    finally:
        ddp.cleanup()
