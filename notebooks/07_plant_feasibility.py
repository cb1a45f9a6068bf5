# %% [markdown]
# # 07 Feasibility check on your plant images
#
# *Plant* here means a factory or an inspection line. The question: **with my own photos and a few dozen
# labels, how well can a CLIP quality score work, and how many labels do I need?**
#
# 1. Point `IMAGES` at a folder of your photos and label 20-50 of them in the panel (ACR scale).
# 2. For 10, 20, 30, ... labels: adapt on that many and measure SRCC on labelled images held out from
#    training, with a bootstrap CI and the chance band; repeat on a few seeded splits.
# 3. Read the learning curve and the plain-language verdict: how good, and whether more labels would help.
#
# Two baselines run on the same splits: **zero-shot** CLIP (no labels used) and a **CLIP-free ridge on
# classical image statistics** (sharpness, noise, contrast, exposure...): if that one does as well, your
# quality problem is low-level and simple tools may do.
#
# *In smoke mode* (and whenever `IMAGES` is None) the images are the embedded demo photos with plant-style
# distortions (conveyor motion blur, defocus, sensor noise, glare, ...) and the labels come from their
# **synthetic severity**, not from a person. Smoke mode also uses the lesson toy model, so its verdict is about
# the procedure only.

# %% tags=["parameters"]
import os

from clipiqa.notebook import image_folder, settings, short_errors, stand_in

short_errors()  # clipiqa's user errors (no weights, a mistyped name, ...) as one short message

SMOKE = True  # True: the lesson toy model (trained here on synthetic blur and noise) + embedded demo photos
              #   at its 64 px (any CPU, seconds; a toy: the machinery learns, it says nothing of real CLIP)
              # False: real weights (MODEL), on a GPU when there is one (the sizes below are a GPU's)
SMOKE = SMOKE or os.environ.get("CLIPIQA_SMOKE") == "1"  # CI forces smoke mode without editing this cell
# what follows from SMOKE, computed by clipiqa.notebook.settings (which also reads CLIPIQA_MODEL, CLIPIQA_DEVICE
# and CLIPIQA_REHEARSAL); to change one, set it on a line below, e.g. MODEL = "vitl14-openai" (any model:
# `clipiqa models`) or WEIGHTS = "path/to/weights" (real runs without model-hub access)
REHEARSAL, MODEL, WEIGHTS, DEVICE, DEMO_LIMIT, WORK, DEMO_TYPES, SIZE = settings(SMOKE)

IMAGES = None  # a folder of your plant photos; None = demo photos with plant-style distortions
IMAGES = image_folder(IMAGES)  # a typo or an empty folder stops here, naming the folder
SESSION = f"{WORK}/plant-session"
LABEL_COUNTS = [10, 20, 30, 40] if SMOKE else [10] if REHEARSAL else [10, 20, 30, 40, 50]  # learning curve
N_SPLITS = 1 if SMOKE or REHEARSAL else 5  # seeded 80/20 splits per point
EPOCHS = 3 if SMOKE else 1 if REHEARSAL else 30
METHOD = "coop+vpt" if SMOKE else "ft+qgr"  # prompts only on a CPU; last-blocks + QGR on a GPU
N_VIEWS = 1 if SMOKE or REHEARSAL else 4  # random crops cached per training image
N_IMAGES = 60 if SMOKE else DEMO_LIMIT or 120  # demo photos in the session (IMAGES None)

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from clipiqa.data import build_demo_set, list_distortions
from clipiqa.session import Session
from clipiqa.weights import weights_line
from clipiqa.widgets import LabelPanel

plant_types = list_distortions(plant=True)
if IMAGES is None:
    demo = build_demo_set(types=plant_types[:4] if SMOKE or REHEARSAL else plant_types, size=SIZE)
    images = demo.sample(n=min(len(demo), N_IMAGES), random_state=0)
else:
    images = IMAGES
session = Session(SESSION, images=images, model_name=MODEL, weights=WEIGHTS, device=DEVICE)
print(weights_line(session.model))  # which model, weights, device and precision run
print(session, "\nplant-style distortions:", ", ".join(plant_types))

# %% [markdown]
# Label here (autosaved; resume any time). Aim for 20-50 labels spread over the range of quality you see;
# *Suggest next* picks diverse images first. If many photos show the same scene, give them a `content_id`
# (pass a table with `path` and `content_id` as `IMAGES`) so that testing is on unseen scenes.

# %%
panel = LabelPanel(session)
if IMAGES is None:  # demo photos: stand-in ratings from synthetic severity (NOT human opinion)
    severity = demo.set_index("path")["q"]
    with stand_in(session):  # rater "stand-in": synthetic severity, not an opinion
        for path in session.images:
            if path not in session.labels:
                session.label(path, 1 + round(4 * severity[path]))
    panel.refresh()
panel

# %%
from functools import partial

import clipiqa
from clipiqa.protocol import run_protocol

table = session.labelled_table()
counts = [n for n in LABEL_COUNTS if n <= int(0.8 * len(table))]
runs = []
for n in counts:  # the same seeded splits for every n; the smaller draws are nested in the larger ones
    result = run_protocol(table, methods=["zero-shot", "classical-ridge", METHOD], shots=n, n_splits=N_SPLITS,
                          model_factory=partial(clipiqa.load_model, MODEL, WEIGHTS, DEVICE),
                          overrides={"epochs": EPOCHS, "n_views": N_VIEWS}, n_boot=300)
    runs.append(result.per_split)
held_out = result.predictions.get((0, METHOD)) if counts else None  # split 0's test images, most labels
curve = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame()
if not counts:
    print(f"only {len(table)} labels: label at least {int(LABEL_COUNTS[0] / 0.8) + 1} images, then rerun")
else:
    print(f"{len(table)} labels; test sets of about {int(curve['n_test'].mean())} images per split")

# %%
from clipiqa.feasibility import learning_curve, small_n_note
from clipiqa.notebook import caveat
from clipiqa.plots import plot_learning_curve

ceiling = session.agreement(n_boot=300)  # inter-rater (split-half, Spearman-Brown) and test-retest SRCC
if len(curve):
    agg = learning_curve(curve)
    note = small_n_note(agg)  # what the figure says when its held-out sets are too small to judge
    fig, ax = plt.subplots(figsize=(7.5, 3.8), layout="constrained")
    plot_learning_curve(agg, ceiling=ceiling, note=note, caveat=caveat(session), ax=ax)
    plt.show()
    display(agg.round(3))
    if note:
        print(note)

# %% [markdown]
# What the adapted model predicts for the held-out images of the first split (at the largest label count): its
# predictions against your labels, the images in its order from worst to best, and the ones it ranks furthest
# from your labels (look at those first: a label slip, an unusual defect, or what the model cannot see yet).

# %%
from clipiqa.plots import plot_fit, plot_gallery, plot_worst
from clipiqa.review import fit_summary, gallery_picks, worst_predictions

if held_out is not None and len(held_out):
    what = f"{METHOD}, {len(held_out)} held-out images of split 0 ({int(agg['n_train'].max())} labels)"
    display(plot_fit(held_out["pred"], held_out["q"], fit_summary(held_out["pred"], held_out["q"]), what=what,
                     xlabel="your label (q, 0 = worst)", ylabel="prediction (logit margin)", caveat=caveat(session)))
    display(plot_gallery(gallery_picks(held_out, "pred", k=12), "pred", label="q", score_name="pred",
                         caveat=caveat(session)))
    display(plot_worst(worst_predictions(held_out, "pred", "q", k=6), caveat=caveat(session)))

# %% [markdown]
# ## Verdict
#
# `clipiqa.feasibility.verdict` writes it, by rules you can read in its docstring: first the size of the
# held-out sets (fewer than 20 images: too few to judge, whatever the numbers say); then the grade of the
# method's SRCC with its confidence interval against the chance band; then the human ceiling (how well your
# raters agree with each other: no model can be expected to agree with them better); and a trend only when the
# confidence intervals support one.

# %%
from clipiqa.feasibility import verdict

print(ceiling)
print(verdict(curve, METHOD, ceiling=ceiling, random_init=session.random_init, synthetic=IMAGES is None))
