# %% [markdown]
# # 05 Explain: does the score look at distortions or at content?
#
# An **attribution map** says which pixels pushed the score up or down. Methods (all through Captum):
# Integrated Gradients (`ig`), `occlusion`, `smoothgrad`, and Grad-CAM on the patch-token grid (`gradcam`,
# and `gradcam-conv1` on the patch embedding).
#
# A map alone is easy to over-read, so the diagnostics put numbers on it, and each is read for you in one computed
# line, "distortion or content?", with the numbers it rests on:
#
# * **distortion focus**: distort a known rectangle (the *test region*, drawn dashed on the figures) of a clean
#   photo; the share of attribution mass inside it relative to its area (1 = no preference). Compare it with
#   **the same region of the clean photo** (`focus_clean`): the photo's own detail may already draw the
#   attribution there (focus 2 or more is common), so "above 1" alone proves nothing. What the distortion does is
#   the gain `focus - focus_clean`: above 0 the attribution moves onto the damage, below 0 away from it (to the
#   detail left intact), within its spread it does not move;
# * **content vs distortion**: on a grid photos x distortion types x levels, the share of score variance
#   explained by the level versus by the photo (eta squared), per distortion type too;
# * **scene drift**: how far the adapted model's scene predictions moved from zero-shot CLIP;
# * **randomisation sanity check** (Adebayo et al. 2018): the maps must change when the model's last image
#   blocks are re-initialised (on a copy); maps that stay alike show the image more than the model.
#
# Units: **p(good)** is the score of notebook 01 (in [0, 1]); the maps and diagnostics explain the **margin**
# `z_good - z_bad` (p(good) = sigmoid(margin): the same ranking, but the margin does not saturate). Every label
# below says which of the two it shows.

# %% tags=["parameters"]
import os

from clipiqa.notebook import settings, short_errors, stand_in

short_errors()  # clipiqa's user errors (no weights, a mistyped name, ...) as one short message

SMOKE = True  # True: the lesson toy model (trained here on synthetic blur and noise) + embedded demo photos
              #   at its 64 px (any CPU, seconds; a toy: the machinery learns, it says nothing of real CLIP)
              # False: real weights (MODEL), on a GPU when there is one (the sizes below are a GPU's)
SMOKE = SMOKE or os.environ.get("CLIPIQA_SMOKE") == "1"  # CI forces smoke mode without editing this cell
# what follows from SMOKE, computed by clipiqa.notebook.settings (which also reads CLIPIQA_MODEL, CLIPIQA_DEVICE
# and CLIPIQA_REHEARSAL); to change one, set it on a line below, e.g. MODEL = "vitl14-openai" (any model:
# `clipiqa models`) or WEIGHTS = "path/to/weights" (real runs without model-hub access)
REHEARSAL, MODEL, WEIGHTS, DEVICE, DEMO_LIMIT, WORK, DEMO_TYPES, SIZE = settings(SMOKE)

CHECKPOINT = None  # a checkpoint from notebook 03 to explain; None = adapt one here on demo labels
EPOCHS = 40 if SMOKE else 1 if REHEARSAL else 50
TRAINABLE = "last-blocks"
LR = 3e-2 if SMOKE else 1e-3
OPTIONS = {"momentum": 0.9} if SMOKE else {}  # more AdaptConfig settings
METHOD = "ig"
METHOD_OPTIONS = {"n_steps": 4} if REHEARSAL else {}  # e.g. integration steps for ig (default 32)
N_REFS = 4 if SMOKE else 1 if REHEARSAL else 6  # photos for the diagnostics (3 or more: a spread for the verdicts)
N_VIEWS = 1 if SMOKE or REHEARSAL else 4  # random crops cached per training image

# %%
import matplotlib.pyplot as plt

import clipiqa
from clipiqa.finetune import AdaptConfig
from clipiqa.data import build_demo_set, demo_references
from clipiqa.explain import ATTRIBUTION_METHODS, frozen_clip
from clipiqa.explain.diagnostics import compare_models
from clipiqa.explain.plots import plot_content_vs_distortion, plot_focus, plot_scene_drift
from clipiqa.notebook import say_if_random_init, say_model
from clipiqa.session import Session
from clipiqa.widgets import AttributionViewer

demo = build_demo_set(types=DEMO_TYPES, size=SIZE)
if CHECKPOINT:
    model = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE, prompts=CHECKPOINT)
else:  # adapt on synthetic-severity labels of the demo photos (a stand-in for your labels)
    session = Session(f"{WORK}/explain-session", images=demo.sample(n=DEMO_LIMIT or 40, random_state=1),
                      model_name=MODEL, weights=WEIGHTS, device=DEVICE)
    severity = demo.set_index("path")["q"]
    with stand_in(session):  # rater "stand-in": synthetic severity, not an opinion
        for path in session.images:
            session.label(path, 1 + round(4 * severity[path]))
    if not session.adapted:
        session.adapt(AdaptConfig(trainable=TRAINABLE, epochs=EPOCHS, n_views=N_VIEWS, lr=LR, **OPTIONS))
    model = session.model
say_model(model)
for name, m in ATTRIBUTION_METHODS.items():
    print(f"{name:>14}: {m.description}")

# %% [markdown]
# The viewer: pick an image and a method; *before* is zero-shot CLIP (the same weights with the learned parts
# switched off), *after* is the adapted model. The overlay slider redraws without recomputing; the colour
# bar says what the colours mean. While a new selection is computed the panel says "computing ..." and dims the
# old figure; click as fast as you like: only your latest choice is computed and shown. *Diagnostics* measures
# the focus and scene drift for the selected image: the focus test distorts a rectangle of the image's clean
# photo with **the image's own distortion** (noise for a noise image, blur for a blurred one), draws that test
# region on its own attribution figure, and the table follows the image you pick.

# %%
import pandas as pd

picks = demo[demo["distortion"] != "reference"].sample(n=6, random_state=0)
clean = demo[(demo["distortion"] == "reference") & demo["content_id"].isin(picks["content_id"])]
viewer = AttributionViewer(model, images=pd.concat([picks, clean]), before_model=frozen_clip(model),
                           method=METHOD, method_options={METHOD: METHOD_OPTIONS})
viewer

# %%
viewer.diagnostics()

# %% [markdown]
# ## The diagnostics over several photos
#
# One table for both models (with the unit of each number), then per model the computed verdict, per
# distortion type a small table (the focus gain with its standard error, the margin drop, and within that type
# the rank correlation of the margin with the level and the eta-squared shares), and the figures: the focus per
# photo, the test itself (the attribution on the photo with its distorted rectangle, dashed), the margin
# against the distortion level with the eta-squared shares, and the scene drift.

# %%
from IPython.display import display

from clipiqa.explain.reading import type_table, verdicts

refs = demo_references(SIZE, names=["astronaut", "chelsea", "coffee", "rocket", "china", "flower"][:N_REFS])
table, tables = compare_models({"zero-shot": frozen_clip(model), "adapted": model}, refs, method=METHOD,
                               distortion=DEMO_TYPES, types=DEMO_TYPES, levels=(1, 3, 5), return_tables=True,
                               keep_maps=True, **METHOD_OPTIONS)
display(table.pivot_table(index=["diagnostic", "metric", "unit"], columns="model", values="value", sort=False))
for name, line in verdicts(tables).items():
    print(f"{name}: {line}")
for kind, per_type in type_table(tables["focus"], tables["content"]).groupby("distortion", sort=False):
    display(per_type.drop(columns="distortion").set_index("model").style.set_caption(kind).format(precision=2))

# %%
from clipiqa.explain.plots import plot_focus_maps

plot_focus(tables["focus"])
plot_focus_maps({f"{name}: {kind}": r for (name, kind), r in tables["focus_results"].items() if name == "adapted"})
plot_content_vs_distortion(tables["content"])
plot_scene_drift(tables["scene"])
plt.show()

# %% [markdown]
# ## Sanity check: do the maps depend on what the model learned?
#
# Re-initialise the last image blocks of a copy of the model (cascading: the last block, then the last two) and
# attribute the same photos again. Maps that explain the model must change; the rank correlation (Spearman) of
# each map with the trained model's says how much they stayed alike, and the line below says whether the method
# passes (correlation under 0.5 for every map) or fails the sanity check.

# %%
from clipiqa.explain.plots import plot_sanity_check
from clipiqa.explain.sanity import randomization_check

sanity = randomization_check(model, refs, METHOD, blocks=2, mode="cascading", **METHOD_OPTIONS)
print(sanity.line)
display(sanity.table.drop(columns="note"))
plot_sanity_check(sanity)
plt.show()

# %% [markdown]
# **Reading it.** The verdict lines above are computed from the numbers beside them: a score that tracks
# distortions has a large eta squared for the level and a small one for the photo, and its attribution moves when
# a region is distorted (onto the damage, or away from it to the intact detail: both say the map reacts to the
# distortion; no shift says the photo decides where the map goes). A method that fails the sanity check shows
# the image more than the model: do not read its maps as the model's reasons. In smoke mode every number is the
# lesson toy model's: it shows the machinery, never how real CLIP behaves.
