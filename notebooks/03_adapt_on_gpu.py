# %% [markdown]
# # 03 Adapt on a GPU
#
# Few-shot adaptation fine-tunes a small part of CLIP on your labels:
#
# * **last-blocks** trainable set (GPU; the paper's): the learnable text context plus copies of the last 4
#   blocks of both encoders (~41 M parameters for ViT-B/16); **prompts only** (CPU-friendly): text context +
#   visual prompts.
# * Two losses: the **quality loss** (your labels) and a **semantic loss** that keeps the scene predictions
#   close to frozen CLIP's. **QGR** (quality-aware gradient regularization) combines their gradients
#   (notebook 04 compares with and without it).
# * A fixed training budget by default (no peeking at test data).
#
# The panel trains in a **background thread**: the notebook stays usable and *Stop* works at any time. A
# stopped run's checkpoint is saved and its card says it was stopped, but it is under-trained, so the session
# keeps scoring with what it had until you ask for it (the panel's *Use this stopped checkpoint* button, or
# `session.use_checkpoint(name)`). Curves update live: training losses and,
# when `shots` is below the number of labels (or a `test` set is given), the SRCC on the held-out images after
# each epoch with the chance band for their number and, when known, zero-shot's SRCC on them as a dashed line.
#
# In smoke mode the lesson is a distortion type the toy model was **not** trained on and where its zero-shot
# score is weak (`clipiqa.lesson.WEAK_HELD_OUT_TYPES`): stand-in labels of that type on the toy's training
# photos, measured on held-out images of photos and patterns it never saw. Does adaptation beat zero-shot there?

# %% tags=["parameters"]
import os

from clipiqa.notebook import say_model, settings, short_errors, stand_in

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
SESSION = f"{WORK}/lesson-{ADAPT_TYPE}" if SMOKE else f"{WORK}/label-session"  # else: the session of notebook 02
N_LABELS = 40  # smoke: stand-in labels of ADAPT_TYPE on the toy's training contents
EPOCHS = 100 if SMOKE else 1 if REHEARSAL else 50
SHOTS = 0  # train on this many labels, test on the rest (0 = train on all labels; smoke tests on other contents)
TRAINABLE = "last-blocks"  # text context + last blocks of both towers (the paper's set); "prompts" is lighter
LR = 3e-2 if SMOKE else 1e-3  # the lesson model at 64 px learns in seconds with SGD + momentum
OPTIONS = {"momentum": 0.9} if SMOKE else {}  # more AdaptConfig settings
N_VIEWS = 1 if SMOKE or REHEARSAL else 4  # random crops cached per training image

# %%
import os

import clipiqa
from clipiqa.data import build_demo_set
from clipiqa.metrics import chance_band, srcc
from clipiqa.session import Session
from clipiqa.widgets import AdaptPanel

heldout = None  # real mode: the labels SHOTS leaves over are the test set
if SMOKE:  # ADAPT_TYPE at levels 0-5: training photos/patterns to label, held-out ones to test on
    from clipiqa.lesson_views import lesson_adapt_sets
    pool, heldout = lesson_adapt_sets(f"{WORK}/lesson-images", ADAPT_TYPE)
    pool = pool.sample(n=N_LABELS, random_state=0)
if os.path.exists(os.path.join(SESSION, "settings.json")):
    session = Session.open(SESSION, model_name=MODEL, weights=WEIGHTS, device=DEVICE)
else:  # notebook 02 not run yet (or smoke mode): stand-in ratings from synthetic severity
    demo = pool if SMOKE else build_demo_set(types=DEMO_TYPES, size=SIZE)
    session = Session(SESSION, images=demo if SMOKE else demo.sample(n=DEMO_LIMIT or 40, random_state=0),
                      model_name=MODEL, weights=WEIGHTS, device=DEVICE)
    severity = demo.set_index("path")["q"]
    with stand_in(session):  # rater "stand-in": synthetic severity, not an opinion
        for path in session.images:
            session.label(path, 1 + round(4 * severity[path]))
print(session)
say_model(session.model)

# %% [markdown]
# The reference: zero-shot's SRCC on the test images (the frozen model, no labels). Adaptation has to beat this
# line, by more than the chance band says noise can.

# %%
from clipiqa.caveats import caveat_of

zero_shot = None
if heldout is not None:
    frozen = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE)
    with frozen.adapters_off():
        heldout = heldout.assign(zero_shot=clipiqa.score_files(frozen, heldout["path"])["score"].to_numpy())
    zero_shot = srcc(heldout["zero_shot"], heldout["q"])
    print(f"zero-shot SRCC on {len(heldout)} held-out images of {ADAPT_TYPE} (other contents): {zero_shot:.3f} "
          f"(chance band +-{chance_band(len(heldout)):.2f}){caveat_of(frozen).bracket()}")

# %%
panel = AdaptPanel(session, epochs=EPOCHS, shots=SHOTS, trainable=TRAINABLE, device=DEVICE, n_views=N_VIEWS,
                   lr=LR, test=None if heldout is None else heldout[["path", "q"]], zero_shot=zero_shot,
                   **OPTIONS)
panel

# %% [markdown]
# Press **Run** above for a background run you can **Stop**. The next cell does the same from code and waits
# for the end (the panel shows the progress live meanwhile). **Stop** works while it waits too, also under
# *Run All*: the waiting cell keeps serving the panel's buttons, so the run ends after the current step, its
# checkpoint is kept as stopped (not made the session's model) and the cells below run after it.

# %%
history = panel.run(block=True)
print(panel.status, f"- {len(history.steps)} steps in {history.seconds:.1f} s")
history.steps_frame()[["step", "epoch", "loss", "loss_semantic", "cosine", "frac_projected", "drift"]].tail()

# %%
from clipiqa.lesson_views import gain_takeaway, paired_gain, semantic_loss_text
from clipiqa.notebook import caveat
if history.evals:  # did training move it? the first and the last epoch on the same held-out images
    first, last = history.evals[0], history.evals[-1]
    n_test = len(heldout) if heldout is not None else len(session.labels) - SHOTS
    print(f"held-out SRCC after epoch {first['epoch']}: {first['srcc_test']:.3f}, after epoch {last['epoch']}: "
          f"{last['srcc_test']:.3f} (n = {n_test}; chance band +-{chance_band(n_test):.2f})")
if heldout is not None:  # the measured gain over zero-shot on the same images, with its paired bootstrap CI
    newest = session.checkpoints().iloc[-1]["path"]  # this run's checkpoint (the session's model unless stopped)
    adapted = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE, prompts=newest)
    scores = clipiqa.score_files(adapted, heldout["path"])["score"].to_numpy()
    gain = paired_gain(heldout["zero_shot"], scores, heldout["q"])
    print(gain_takeaway(gain, f"{len(session.labels)} stand-in labels of {ADAPT_TYPE}", caveat_of(session)))
print(semantic_loss_text(history.steps_frame(), panel.lam.value if panel.qgr.value else None))
if caveat(session):
    print(f"⚠ {caveat(session)}")
session.checkpoints()

# %% [markdown]
# ## Using the checkpoint
#
# The checkpoint (safetensors with only the learned tensors + a JSON card with the backbone, settings, data
# hashes and metrics) became the session's model when the run finished its budget. Anywhere else:
#
# ```python
# model = clipiqa.load_model(prompts="clipiqa-work/label-session/checkpoints/<name>")  # the card names the model
# ```
#
# or from a shell: `clipiqa score --prompts <checkpoint> photos/ --out scores.csv`. To see what it looks at,
# give its folder to notebook 05 (`CHECKPOINT = "..."` in 05's parameters cell, printed below) or run
# `clipiqa explain --prompts <checkpoint> --out explained/ photos/`.

# %%
ckpt = session.checkpoints().iloc[-1]["path"]
print("for notebook 05: CHECKPOINT =", repr(os.path.relpath(ckpt)))
model = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE, prompts=ckpt)
clipiqa.score_files(model, session.images[:5])[["path", "score", "status"]]

# %% [markdown]
# What did the text context learn? The card records, before and after training, each context vector's nearest
# words in CLIP's vocabulary and the learned prompts' similarity to hand-written quality phrases (a reading aid:
# learned context rarely spells clean words). From a shell: `clipiqa explain --prompts <checkpoint> --prompt-words`.

# %%
from clipiqa.explain.prompt_words import PromptWords, format_prompt_words

recorded = clipiqa.read_checkpoint(ckpt).card.get("prompt_words")
if recorded:
    print(format_prompt_words(PromptWords.from_dict(recorded["after"]), PromptWords.from_dict(recorded["before"])))
