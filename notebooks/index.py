# %% [markdown]
# # clipiqa: few-shot image quality assessment with CLIP
#
# A quality score for photos that needs **no reference image** (blind IQA), built on CLIP and adapted to your
# own images with **a few dozen labels**. It implements and extends GRMP-IQA (Li et al., *Boosting CLIP
# Adaptation for Image Quality Assessment via Meta-Prompt Learning and Gradient Regularization*, ICCV 2025).
#
# The loop, one notebook per step:
#
# | notebook | what it teaches |
# |---|---|
# | [01 Zero-shot scoring](01_zero_shot.ipynb) | how CLIP rates quality with two antonym prompts, and how well that tracks distortions |
# | [02 Label a few images](02_label_a_few.ipynb) | rating images inline on the ACR scale (autosave, skip, undo, resume, suggestions) |
# | [03 Adapt on a GPU](03_adapt_on_gpu.ipynb) | few-shot fine-tuning of prompts and last blocks, live curves, Stop, checkpoints |
# | [04 With vs without QGR](04_qgr_compare.ipynb) | the gradient regularizer, compared fairly on identical splits and seeds |
# | [05 Explain](05_explain.ipynb) | attributions before/after adaptation; does the score look at distortions or at content? |
# | [06 Meta-prompt pre-training](06_meta_prompt_pretraining.ipynb) | learning a good prompt initialisation from synthetic distortion tasks |
# | [07 Plant feasibility check](07_plant_feasibility.ipynb) | your own factory/inspection photos: how well can this work, how many labels do I need? |
# | [08 A pilot on the line](08_line_dashboard.ipynb) | a site threshold with its error costs, a line monitor with drift alarms, the dashboard (also a Voila app) |
#
# **Smoke mode.** Every notebook has one *parameters* cell with `SMOKE = True`: the `lesson` model, a small
# **toy** CLIP that clipiqa trained itself on synthetic blur and noise (64 px, no download), and the embedded
# demo photos, so that everything runs on any CPU in seconds. Its curves are real behaviour of a toy: they
# show that zero-shot scoring, adaptation and QGR do something, never how real CLIP behaves, and every panel
# and figure says so. Set `SMOKE = False` (a GPU and the ViT-B/16 weights)
# for real numbers; nothing else needs to change.
#
# **Editing the notebooks (teachers).** Each notebook `NN_name.ipynb` has its source `NN_name.py` beside it, a
# plain Python file in Jupytext's percent format (`# %%` starts a code cell, `# %% [markdown]` a text cell):
# that is the file to edit and to review in git. After editing a `.py`, run
# `python -m clipiqa.notebook_sources sync notebooks` from the repository root: it rewrites each `.ipynb` from its
# `.py`, without outputs. In JupyterLab, saving a notebook also updates its `.py` (the pairing is set in
# `notebooks/jupytext.toml`); run the sync before committing all the same, since JupyterLab saves the outputs.
# The test suite fails on a pair out of sync (`python -m clipiqa.notebook_sources check notebooks` says which).
#
# Below: the embedded sample photos, clean and distorted, scored zero-shot.

# %% tags=["parameters"]
import os

from clipiqa.notebook import settings, short_errors

short_errors()  # clipiqa's user errors (no weights, a mistyped name, ...) as one short message

SMOKE = True  # True: the lesson toy model (trained here on synthetic blur and noise) + embedded demo photos
              #   at its 64 px (any CPU, seconds; a toy: the machinery learns, it says nothing of real CLIP)
              # False: real weights (MODEL), on a GPU when there is one (the sizes below are a GPU's)
SMOKE = SMOKE or os.environ.get("CLIPIQA_SMOKE") == "1"  # CI forces smoke mode without editing this cell
# what follows from SMOKE, computed by clipiqa.notebook.settings (which also reads CLIPIQA_MODEL, CLIPIQA_DEVICE
# and CLIPIQA_REHEARSAL); to change one, set it on a line below, e.g. MODEL = "vitl14-openai" (any model:
# `clipiqa models`) or WEIGHTS = "path/to/weights" (real runs without model-hub access)
REHEARSAL, MODEL, WEIGHTS, DEVICE, DEMO_LIMIT, WORK, DEMO_TYPES, SIZE = settings(SMOKE)

# %%
import matplotlib.pyplot as plt

import clipiqa
from clipiqa.data import apply_distortion, demo_references
from clipiqa.notebook import say_if_random_init
from clipiqa.weights import weights_line

model = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE)
print(weights_line(model))  # which model, weights, device and precision run, in one line
say_if_random_init(model)

# %% [markdown]
# The demo photos ship inside scikit-image, scikit-learn and matplotlib, so they load offline. We distort
# each one with a known severity (`apply_distortion`, levels 1-5) and score it **zero-shot**: the frozen
# CLIP compares the image with the prompts *"Good photo."* and *"Bad photo."*; the score is the probability
# of "good", in [0, 1], higher = better.

# %%
from clipiqa.notebook import caveat
refs = demo_references(SIZE, names=["astronaut", "chelsea", "coffee", "rocket"])
versions = [("reference", 0), ("gaussian_blur", 3), ("jpeg", 5), ("white_noise", 4)]
images, titles = [], []
for name, ref in refs.items():
    for distortion, level in versions:
        images.append(ref if level == 0 else apply_distortion(ref, distortion, level, rng=0))
        titles.append(f"{name}: {distortion} {level}" if level else f"{name}: clean")
with model.adapters_off():  # zero-shot: frozen CLIP + antonym prompts
    scores = clipiqa.score_images(model, images).numpy()

fig, axes = plt.subplots(len(refs), len(versions), figsize=(2.4 * len(versions), 2.5 * len(refs)))
for ax, image, title, score in zip(axes.flat, images, titles, scores):
    ax.imshow(image)
    ax.set_title(f"{title}\nscore {score:.3f}", fontsize=8)
    ax.set_axis_off()
if caveat(model):
    fig.suptitle(caveat(model), color="red", fontsize=9)
plt.show()

# %% [markdown]
# With real weights, clean photos usually score higher than their heavily distorted versions, but not
# always: zero-shot CLIP also reacts to *content* (what is in the picture). Notebook 01 measures how well the
# zero-shot score tracks distortion severity; the rest of the loop adapts it to your images.
#
# Everything here is also available from Python scripts and the command line (`clipiqa score`,
# `clipiqa adapt`, `clipiqa bench`, `clipiqa explain`, `clipiqa pretrain`; `clipiqa --help`).
