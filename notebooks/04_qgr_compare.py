# %% [markdown]
# # 04 With vs without gradient regularization (QGR)
#
# Every training step computes two gradients for each trainable tensor: `g_q` from the quality loss and `g_s`
# from the semantic (scene) loss. QGR, as in the released code, changes the quality gradient only where the
# two **agree**:
#
# $$ g = g_q - \lambda \frac{\langle g_q, g_s \rangle}{\lVert g_s \rVert^2} g_s \quad \text{if } \langle g_q, g_s\rangle > 0, \qquad g = g_q \text{ otherwise} $$
#
# With the released `lam = 5` the update is pushed *away* from CLIP's scene semantics, so that the quality
# head does not simply learn "what is in the picture". Whether that helps is an empirical question, so we
# compare fairly: **the same splits, the same labelled draws, the same initialisation and the same seeds**;
# the only difference between the arms is the regularizer. Zero-shot CLIP is shown for reference.
#
# The panel runs the evaluation protocol (`clipiqa.protocol.run_protocol`) with a pair of its arms that differ
# in QGR only: `ft` / `ft+qgr` for the paper's trainable set (`last-blocks`), `coop+vpt` / `coop+vpt+qgr` for
# prompts only.
# *Stop* ends the run after the current arm; the summary then uses only the splits that **every** arm
# finished, so both arms are always averaged over the same splits. When the two arms give the same numbers
# on every split, the panel says "identical: QGR never changed a gradient" (or "identical results" when its
# gradient records show that QGR did project gradients without changing any number).

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

from clipiqa.lesson import WEAK_HELD_OUT_TYPES

ADAPT_TYPE = WEAK_HELD_OUT_TYPES[0]  # smoke: a type held out of the toy's training, where zero-shot is weak
SHOTS = 40 if SMOKE else 8 if REHEARSAL else 50  # labelled images per split
N_SPLITS = 8 if SMOKE else 1 if REHEARSAL else 10  # a sign test needs >= 6 splits to conclude at p < 0.05
EPOCHS = 40 if SMOKE else 1 if REHEARSAL else 50
TRAINABLE = "last-blocks"
LR = 3e-2 if SMOKE else None  # None: the recipe's
LAM = 5.0
N_VIEWS = 1 if SMOKE or REHEARSAL else 4  # random crops cached per training image

# %%
from functools import partial

import clipiqa
from clipiqa.data import build_demo_set
from clipiqa.notebook import say_model
from clipiqa.widgets import ComparePanel

say_model(clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE))  # the backbone every arm starts from
if SMOKE:  # ADAPT_TYPE at levels 0-5 on every photo and pattern of the lesson (splits keep contents apart)
    from clipiqa.data.demo import PHOTOS
    from clipiqa.lesson import write_lesson_set
    from clipiqa.lesson_views import lesson_recipe
    kinds = [*lesson_recipe().train_kinds, *lesson_recipe().heldout_kinds]
    table = write_lesson_set(f"{WORK}/lesson-images/all", photos=list(PHOTOS), kinds=kinds, types=[ADAPT_TYPE],
                             instances=1)
else:
    table = build_demo_set(types=DEMO_TYPES, size=SIZE)  # synthetic severities; splits go by photo (content)
table = table if DEMO_LIMIT is None else table.sample(n=DEMO_LIMIT, random_state=0)
print(f"{len(table)} images of {table['content_id'].nunique()} contents:", ", ".join(sorted(set(table["distortion"]))))
panel = ComparePanel(table, shots=SHOTS, n_splits=N_SPLITS, epochs=EPOCHS, trainable=TRAINABLE, lam=LAM,
                     model_factory=partial(clipiqa.load_model, MODEL, WEIGHTS, DEVICE), model_name=MODEL,
                     n_views=N_VIEWS, lr=LR, **({"momentum": 0.9, "augment": "none"} if SMOKE else {}))
panel

# %%
result = panel.run(block=True)  # or press "Run comparison" above (background, with Stop)
cols = ["split", "split_hash", "arm", "method", "n_train", "n_test", "srcc", "srcc_ci_lo", "srcc_ci_hi",
        "chance_band"]
result.per_split[cols]

# %%
same = result.per_split.groupby("split")[["split_hash", "labelled_hash"]].nunique().eq(1).all().all()
print("every arm saw identical splits and labelled draws:", same)
print(result.paired_text)
for line in result.notes:
    print("-", line)

# %% [markdown]
# **The verdict**, computed: per split, does one arm beat the other? A two-sided sign test over the splits where
# they differ says "beats" or "loses to" only when chance would rarely give such a count; otherwise
# "inconclusive", with the numbers.

# %%
from clipiqa.caveats import caveat_of
from clipiqa.lesson_views import compare_takeaway

complete = result.per_split[result.per_split["complete"]]
off, on = result.methods["QGR off"], result.methods["QGR on"]
print(compare_takeaway(complete, on, off, caveat_of(result)))
print(compare_takeaway(complete, off, "zero-shot", caveat_of(result)))

# %% [markdown]
# **Reading the comparison.** Look at the paired differences (right plot above): one number per split, the
# same test images for both arms. A mean difference smaller than its spread over splits, or SRCCs inside the
# chance band, means "no evidence either way". The gradient-cosine traces show how often the two gradients
# agree (cosine > 0), which is when QGR acts; the share of projected tensors shows how much it acted. For the
# full protocol with every baseline (ridge probe, a CLIP-free classical-statistics check, CoOp, meta init) run
# `clipiqa bench` or `clipiqa.protocol.run_protocol`.

# %% [markdown]
# **The paper's 2x2 ablation on the lesson toy** (with and without meta init, with and without QGR, over many
# splits, several seeds and two groups of held-out types, with scene retention beside SRCC) is in the README,
# section [The lesson model: a toy that learns](../README.md#the-lesson-model-a-toy-that-learns), measured with
# `benchmarks/ablation_lesson.py`. A toy with a 2-layer text tower says nothing about real CLIP: run the same
# comparison with `SMOKE = False` for that.
