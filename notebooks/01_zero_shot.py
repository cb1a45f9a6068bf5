# %% [markdown]
# # 01 Zero-shot quality scores
#
# CLIP was trained to match images with captions. CLIP-IQA turns that into a quality score without any
# training: encode the image, encode two **antonym prompts** ("Good photo." / "Bad photo."), and take the
# softmax of the two cosine similarities. The score is *p(good)*, in [0, 1], higher = better.
#
# You will: load a model, score the embedded demo set (photos with synthetic distortions of known severity),
# and measure how well the score ranks severity (Spearman correlation, SRCC) with its uncertainty.

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

N_IMAGES = 80 if SMOKE else 16 if REHEARSAL else None  # how many demo images to score (None: all)
TYPE_INSTANCES = 1 if REHEARSAL else 4  # per held-out pattern kind, in the per-type table

# %%
import matplotlib.pyplot as plt

import clipiqa
from clipiqa.data import build_demo_set
from clipiqa.metrics import bootstrap_ci, chance_band, srcc
from clipiqa.notebook import say_if_random_init, say_model

model = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE)
say_model(model)  # which model, weights, device and precision run (and the toy / random-init caveat)
print("antonym prompts:", model.prompt_config.antonyms)

# %% [markdown]
# The demo set: every photo clean plus each distortion type at levels 1 (mild) to 5 (severe). Its labels are
# **synthetic severities** (`q = 1 - level/5`), not human opinion scores: they tell us which image is more
# distorted, not how people would rate it.

# %%
demo = build_demo_set(types=DEMO_TYPES, size=SIZE)
table = demo if N_IMAGES is None else demo.sample(n=min(N_IMAGES, len(demo)), random_state=0)
with model.adapters_off():  # zero-shot: the learnable prompts are switched off
    scored = clipiqa.score_files(model, table["path"])
table = table.assign(score=scored["score"].to_numpy())
table[["content_id", "distortion", "level", "q", "score"]].head()

# %%
rho = srcc(table["score"], table["q"])
lo, hi = bootstrap_ci(table["score"], table["q"], "srcc", n_boot=1000)
band = chance_band(len(table))
print(f"SRCC(score, severity) = {rho:.3f}, 95% bootstrap CI [{lo:.3f}, {hi:.3f}], n = {len(table)}")
print(f"a random scorer lands within +-{band:.3f} of 0 (95% chance band)")
say_if_random_init(model)

# %% [markdown]
# **Reading it.** An SRCC inside the chance band is indistinguishable from guessing. The bootstrap CI says
# how much the number would move with another sample of images of the same kind.
#
# Per distortion type, the score should fall as the level rises:

# %%
from clipiqa.notebook import caveat
from clipiqa.plots import plot_levels
from clipiqa.review import level_summary

levels = level_summary(table[table["level"] > 0])  # mean, SD and n per distortion and level
fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
plot_levels(levels, ylabel="zero-shot score p(good)", caveat=caveat(model), ax=ax)
ax.set_ylim(0, 1)  # the score's whole range: a small difference looks small
plt.show()

# %% [markdown]
# ## Which distortions does zero-shot rank?
#
# A zero-shot score ranks what the model learned to see. The lesson toy of smoke mode was trained on two types
# only (`gaussian_blur`, `white_noise`); below, per type, the SRCC of its zero-shot score against the level on
# photos and patterns it never saw, with n and the chance band for n. The held-out types are those where its
# zero-shot score is weak (`clipiqa.lesson.WEAK_HELD_OUT_TYPES`): notebook 03 teaches one of them with labels.
# (With real CLIP, `SMOKE = False`, "trained" only names the toy's two types.)

# %%
from clipiqa.caveats import caveat_of
from clipiqa.lesson import WEAK_HELD_OUT_TYPES
from clipiqa.lesson_views import lesson_recipe, plot_type_srcc, types_takeaway, zero_shot_types

by_type = zero_shot_types(model, lesson_recipe().pretrain_types, WEAK_HELD_OUT_TYPES, instances=TYPE_INSTANCES)
print(by_type.round(3).to_string(index=False))
fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
plot_type_srcc(by_type, caveat(model), ax=ax)
plt.show()
print(types_takeaway(by_type, caveat_of(model)))

# %% [markdown]
# The images themselves, from the lowest score to the highest (a few, evenly spread over the order), and every
# score against its severity label: a good scorer puts the dots on a rising band.

# %%
from IPython.display import display

from clipiqa.plots import plot_fit, plot_gallery
from clipiqa.review import fit_summary, gallery_picks

display(plot_gallery(gallery_picks(table, "score", k=12), label="q", score_name="p(good)", caveat=caveat(model)))
display(plot_fit(table["score"], table["q"], fit_summary(table["score"], table["q"]), what="zero-shot",
                 xlabel="synthetic severity label q", ylabel="zero-shot score p(good)", caveat=caveat(model)))

# %% [markdown]
# ## The scene branch
#
# The same model also has **scene prompts** ("a photo of a landscape", ...). Adaptation uses them to keep
# CLIP's understanding of content while learning quality. Note: the scene *plant* means a plant that grows
# (botanical), never a factory.

# %%
import torch

from clipiqa import SCENE_LABELS
from clipiqa.imageio import load_image

refs = table[table["level"] == 0].head(4) if (table["level"] == 0).any() else table.head(4)
batch = torch.stack([model.preprocess(load_image(p)) for p in refs["path"]]).to(model.device)
with torch.no_grad(), model.adapters_off():
    probs = model.scene_logits(batch).softmax(-1).cpu()
for name, p in zip(refs["content_id"], probs):
    top = p.argmax().item()
    print(f"{name:>22}: {SCENE_LABELS[model.scenes[top]]} ({p[top]:.2f})")
say_if_random_init(model)
