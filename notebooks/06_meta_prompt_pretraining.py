# %% [markdown]
# # 06 Meta-prompt pre-training
#
# Few-shot adaptation starts from *some* prompt initialisation. Meta-learning searches for an initialisation
# from which **a few gradient steps on a new kind of distortion already work**:
#
# * a **task** is one distortion type (blur, noise, JPEG, ...), its images split by photo into a support set
#   (to adapt on) and a query set;
# * per task, start from the meta parameters θ, take k steps on the support set, giving φ; then
#   **Reptile** moves θ toward φ (`θ += β · mean(φ - θ)`), or **first-order MAML** uses the query gradient at φ;
# * the checkpoint is selected on **held-out source tasks only**, never on the data you will evaluate on.
#
# No dataset is needed: tasks are made from synthetic distortions of reference photos (the bundled ones here,
# or a folder of your own). The released code skipped the inner reset and selected on a target dataset; this
# is the corrected procedure.

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

META_PHOTOS = ["astronaut", "coffee", "rocket", "motorcycle", "hubble_deep_field", "immunohistochemistry"][
    :3 if SMOKE else 2 if REHEARSAL else None]
EVAL_PHOTOS = ["chelsea", "china", "flower", "grace_hopper", "retina"][  # never seen in meta training
    :2 if REHEARSAL else None]
# smoke: the toy's two training types and two similar held-out ones (lens_blur held out for selection); the
# few-shot lesson below is on the types where its zero-shot is weak (clipiqa.lesson.WEAK_HELD_OUT_TYPES)
META_TYPES = (["gaussian_blur", "white_noise", "lens_blur", "colour_noise"] if SMOKE
              else ["gaussian_blur", "jpeg"] if REHEARSAL else None)  # None = all types
HOLDOUT_TASKS = ("lens_blur",) if SMOKE else 0.25  # source tasks kept for selection (names or a share)
META_EPOCHS = 3 if SMOKE else 1 if REHEARSAL else 50
INNER_STEPS = 3 if SMOKE else 1 if REHEARSAL else 5
INNER_LR = 1e-2 if SMOKE else 1e-4  # the toy needs larger inner steps than CLIP's 1e-4 to move its prompts
TRAINABLE = "text" if SMOKE else "prompts"  # what meta pre-training learns (smoke: the text context)
TASK_SIZE = 64 if SMOKE else 256  # reference crop size for the synthetic tasks
LEVELS = (1, 3, 5) if REHEARSAL else (1, 2, 3, 4, 5)  # distortion levels of the tasks
SHOTS = 8 if SMOKE else 6 if REHEARSAL else 50  # few labels per split
EPOCHS = 20 if SMOKE else 1 if REHEARSAL else 50
N_SPLITS = 10 if SMOKE else 1 if REHEARSAL else 5  # a sign test needs >= 6 splits to conclude at p < 0.05
LR = 1e-2 if SMOKE else None  # None: each arm's recipe
N_VIEWS = 1 if SMOKE or REHEARSAL else 4  # random crops cached per training image

# %%
import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

import clipiqa
from clipiqa.data import demo_references
from clipiqa.meta import MetaConfig, meta_pretrain, synthetic_tasks
from clipiqa.notebook import meta_selection_text, plot_meta_history

if SMOKE:  # the toy's training photos and patterns: enough contents for a held-out task's SRCC to mean something
    from clipiqa.lesson_views import lesson_meta_references
    references = lesson_meta_references(TASK_SIZE)
else:
    references = demo_references(TASK_SIZE, names=META_PHOTOS)
tasks = synthetic_tasks(references, types=META_TYPES, levels=LEVELS, size=TASK_SIZE)
print(len(tasks), "tasks:", ", ".join(t.name for t in tasks))

# %%
from clipiqa.explain.prompt_words import format_prompt_words, prompt_words
from clipiqa.notebook import caveat, say_model
model = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE)
say_model(model)
config = MetaConfig(epochs=META_EPOCHS, inner_steps=INNER_STEPS, inner_lr=INNER_LR, trainable=TRAINABLE,
                    tasks_per_batch=1 if SMOKE else 2, holdout_tasks=HOLDOUT_TASKS, batch_size=8 if SMOKE else 16,
                    **({"augment": "none"} if SMOKE else {}))
progress = widgets.HTML("starting ...")
display(progress)

def on_step(record):  # runs in this cell's thread: setting a widget value is enough to update it
    if record["kind"] == "step":
        progress.value = (f"meta step {record.get('meta_step', '?')} (epoch {record.get('epoch', '?')}): "
                          f"tasks {record['tasks']}, support loss {record['loss_last']:.3f}")
    elif record["kind"] == "eval":
        progress.value = f"epoch {record['epoch']}: held-out SRCC {record['srcc']:.3f}"

words_before = prompt_words(model)  # what the text context reads like before meta training
history = meta_pretrain(model, tasks, config, on_step=on_step, out_dir=f"{WORK}/meta")
print("held out for selection:", ", ".join(history.holdout_tasks))
print(meta_selection_text(history))  # epoch 0 = the evaluation before any meta step
print("run note:", history.note or "none")  # the loop says here when selection kept the untouched init
if caveat(model):
    print(f"⚠ {caveat(model)}")

# %%
# left: held-out SRCC at the meta init and after the inner steps; right: how far the meta parameters moved
plot_meta_history(history, model=model, fig=plt.figure(figsize=(10, 3.4), layout="constrained"))
plt.show()

# %% [markdown]
# What has the learned text context become? Each context vector's nearest words in CLIP's vocabulary, and how
# the learned "high quality" / "low quality" prompts compare with hand-written phrases, before -> after. A reading
# aid, not the vectors' meaning (learned context often has no clean words); on a toy its vocabulary is tiny.

# %%
print(format_prompt_words(prompt_words(model), words_before))

# %% [markdown]
# ## Does the meta init help few-shot adaptation?
#
# Same protocol as everywhere: the same splits and labelled draws for both arms, with only a few labels per split
# (`SHOTS`), on photos **not** used for meta training. `ft` fine-tunes the paper's trainable set (`last-blocks`)
# from the default prompt initialisation; `meta+ft` does the same from the meta checkpoint (`best/`). In smoke
# mode the target is the toy's held-out types where its zero-shot is weak, on contents it never saw. One split
# decides nothing: the verdict counts the splits each arm wins, with a sign test. `overrides` shrinks every
# arm's budget alike for this lesson.

# %%
from functools import partial

from clipiqa.caveats import caveat_of
from clipiqa.data import build_demo_set
from clipiqa.lesson_views import compare_takeaway
from clipiqa.protocol import run_protocol

if SMOKE:
    from clipiqa.lesson import WEAK_HELD_OUT_TYPES, write_lesson_set
    from clipiqa.lesson_views import lesson_recipe
    recipe = lesson_recipe()
    target = write_lesson_set(f"{WORK}/lesson-images/meta-target", photos=recipe.heldout_photos,
                              kinds=recipe.heldout_kinds, types=list(WEAK_HELD_OUT_TYPES), instances=6)
else:
    demo = build_demo_set(types=["gaussian_blur", "white_noise", "jpeg"], size=SIZE)
    target = demo[demo["content_id"].isin(EVAL_PHOTOS)].reset_index(drop=True)
    target.attrs = demo.attrs
target = target if DEMO_LIMIT is None else target.sample(n=DEMO_LIMIT, random_state=0).reset_index(drop=True)
print(f"target: {len(target)} images of {target['content_id'].nunique()} contents,",
      ", ".join(sorted(set(target["distortion"]))))
overrides = {"epochs": EPOCHS, "n_views": N_VIEWS}
overrides.update({"lr": LR, "momentum": 0.9, "augment": "none"} if SMOKE else {})
result = run_protocol(target, methods=["zero-shot", "ft", "meta+ft"], shots=SHOTS, n_splits=N_SPLITS,
                      model_factory=partial(clipiqa.load_model, MODEL, WEIGHTS, DEVICE), overrides=overrides,
                      meta_init=f"{WORK}/meta/best", n_boot=200)
print(result.to_text())
display(result.plot(caveat=caveat(model)))  # each arm in its colour of every chart (clipiqa.palette)
print(compare_takeaway(result.per_split, "meta+ft", "ft", caveat_of(model)))
print(compare_takeaway(result.per_split, "meta+ft", "zero-shot", caveat_of(model)))
