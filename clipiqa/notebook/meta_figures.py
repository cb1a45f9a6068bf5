"""The meta pre-training lesson's figure and words (notebook 06): :func:`plot_meta_history` and
:func:`meta_selection_text`, which would otherwise be plotting code in a notebook cell."""
from __future__ import annotations

from ..caveats import RANDOM_INIT, caveat_for, caveat_of

__all__ = ["meta_selection_text", "plot_meta_history"]

def meta_selection_text(history) -> str:
    """What the selection of a meta pre-training run means, in words (epoch 0 is the starting point), ending with
    the run's own note when the selected init is the untouched start or moved less than 1 % from it (the same
    words as ``clipiqa pretrain`` prints and the best/ card holds)."""
    from ..meta.loop import selection_note  # torch: this helper runs after the notebook has trained anyway
    epoch, score = history.best_epoch, history.best_score
    if epoch is None or score is None:
        return "no held-out evaluation gave a finite SRCC: best/ is the last state"
    text = f"best/ = the parameters after epoch {epoch} (held-out SRCC {score:.3f})"
    if epoch == 0:
        text = (f"best/ = the starting parameters (epoch 0 is the evaluation before any meta step; held-out SRCC "
                f"{score:.3f}): no meta epoch scored higher on the held-out tasks, so the selected init is the "
                "initial one. The run's last state is in last/")
    if history.rel_move is not None:
        text += f"; the meta parameters moved {100 * history.rel_move:.3g} % of their norm over the run"
    step = getattr(history, "best_meta_step", None)
    selected = [row.get("rel_move") for row in history.evals
                if row.get("epoch") == epoch and step in (None, row.get("meta_step"))]
    note = selection_note(epoch, selected[-1] if selected else None)
    return f"{text}. NOTE: {note}" if note else text


def plot_meta_history(history, random_init: bool = False, fig=None, model=None):
    """Held-out SRCC per epoch (at the meta init and after the inner adaptation steps, mean over the held-out
    tasks, epoch 0 = before any meta step, the selected epoch marked) and, when the records have it, how far the
    meta parameters moved (``rel_move``, per meta step, in % on an axis from 0 to at least 1 %: a 0.1 % move looks
    as small as it is). Draws on ``fig`` (e.g. ``plt.figure()`` in a notebook, so that it shows inline), else on a
    new bare ``matplotlib.figure.Figure``; returns the figure. ``model``: its :func:`caveat` (toy, random init)
    goes on the figure; without it, ``random_init`` marks random-init weights."""
    # imported here: clipiqa.session imports this module for the error rendering, and matplotlib alone took
    # 1.3 s to import on the 2-core CI machine; only notebook 06 draws this figure
    import pandas as pd
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    evals = pd.DataFrame(history.evals)
    steps = pd.DataFrame(history.steps)
    has_move = "rel_move" in steps and steps["rel_move"].notna().any()
    if fig is None:
        fig = Figure(figsize=(10 if has_move else 6, 3.4), layout="constrained")
    axes = fig.subplots(1, 2 if has_move else 1, squeeze=False)[0]
    ax = axes[0]
    names = {"srcc_init": "at the meta init (no adaptation)", "srcc_adapted": "after the inner steps"}
    if len(evals):
        by_epoch = evals.groupby("epoch")[[c for c in names if c in evals]].mean()
        for column, label in names.items():
            if column in by_epoch:
                ax.plot(by_epoch.index, by_epoch[column], marker="o", label=label)
        if history.best_epoch is not None:
            ax.axvline(history.best_epoch, color="grey", ls="--", lw=1, label=f"selected (epoch {history.best_epoch})")
        ax.legend(fontsize=8, loc="best")
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("epoch (0 = before any meta step)")
    ax.set_ylabel("held-out SRCC (mean over tasks)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("held-out source tasks", fontsize=10)
    if has_move:
        ax2 = axes[1]
        x = steps["meta_step"] if "meta_step" in steps else range(1, len(steps) + 1)
        moved = 100 * steps["rel_move"]
        ax2.plot(x, moved, marker="o" if len(steps) < 30 else None)
        ax2.set_ylim(0, max(1.0, 1.15 * float(moved.max())))  # from 0: the axis does not blow up a small move
        ax2.annotate(f"{float(moved.iloc[-1]):.2g} %", (list(x)[-1], float(moved.iloc[-1])), xytext=(0, 5),
                     textcoords="offset points", ha="center", fontsize=8)
        ax2.set_xlabel("meta step")
        ax2.set_ylabel("|θ - θ0| / |θ0|  (%)")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_title("how far the meta parameters moved", fontsize=10)
    note = caveat_of(model) if model is not None else caveat_for(random_init)
    if note:
        fig.suptitle(note.text, color="red" if note == RANDOM_INIT else "#a15c00", fontsize=9)
    return fig
