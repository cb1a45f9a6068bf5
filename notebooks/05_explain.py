# %% [markdown]
# # 05 Explain: does the score look at distortions or at content?
#
# An **attribution map** says which pixels pushed the score up or down. Methods (all through Captum):
# Integrated Gradients (`ig`), `occlusion`, `smoothgrad`, and Grad-CAM on the patch-token grid (`gradcam`,
# and `gradcam-conv1` on the patch embedding).
#
# A map alone is easy to over-read, so the diagnostics put numbers on it:
#
# * **distortion focus**: blur a known rectangle of a clean photo; the share of attribution mass inside the
#   rectangle relative to its area (1 = no preference, > 1 = the score looks at the distortion);
# * **content vs distortion**: on a grid photos x distortion types x levels, the share of score variance
#   explained by the level versus by the photo (eta squared);
# * **scene drift**: how far the adapted model's scene predictions moved from zero-shot CLIP.

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
N_REFS = 2 if SMOKE else 1 if REHEARSAL else 6  # photos for the diagnostics
N_VIEWS = 1 if SMOKE or REHEARSAL else 4  # random crops cached per training image

# %%
import matplotlib.pyplot as plt

import clipiqa
from clipiqa.finetune import AdaptConfig
from clipiqa.data import build_demo_set, demo_references
from clipiqa.explain import METHODS, zero_shot
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
for name, m in METHODS.items():
    print(f"{name:>14}: {m.description}")

# %% [markdown]
# The viewer: pick an image and a method; *before* is zero-shot CLIP (the same weights with the learned parts
# switched off), *after* is the adapted model. The overlay slider redraws without recomputing; the colour
# bar says what the colours mean. *Diagnostics* measures the focus and scene drift for the selected image: the
# focus test distorts a rectangle of the image's clean photo with **the image's own distortion** (noise for a
# noise image, blur for a blurred one), and the table follows the image you pick.

# %%
import pandas as pd

picks = demo[demo["distortion"] != "reference"].sample(n=6, random_state=0)
clean = demo[(demo["distortion"] == "reference") & demo["content_id"].isin(picks["content_id"])]
viewer = AttributionViewer(model, images=pd.concat([picks, clean]), before_model=zero_shot(model),
                           method=METHOD, method_options={METHOD: METHOD_OPTIONS})
viewer

# %%
viewer.diagnostics()

# %% [markdown]
# ## The diagnostics over several photos
#
# One table for both models; the figures below show the focus per photo, the score against the distortion
# level per photo with the eta-squared shares, and the scene drift.

# %%
refs = demo_references(SIZE, names=["astronaut", "chelsea", "coffee", "rocket", "china", "flower"][:N_REFS])
table, tables = compare_models({"zero-shot": zero_shot(model), "adapted": model}, refs, method=METHOD,
                               types=DEMO_TYPES, levels=(1, 3, 5), return_tables=True, **METHOD_OPTIONS)
table.pivot_table(index=["diagnostic", "metric"], columns="model", values="value", sort=False)

# %%
plot_focus(tables["focus"])
plot_content_vs_distortion(tables["content"])
plot_scene_drift(tables["scene"])
plt.show()

# %% [markdown]
# **Reading it.** A quality score that tracks distortions has focus above 1, a large eta squared for the
# level and a small one for the content. In smoke mode these are the lesson toy model's numbers: it was
# trained on blur and noise only, so expect focus above 1 for noise and below 1 for blur (its attributions
# sit on the sharp edges that blur leaves elsewhere); they show the machinery, not CLIP.
