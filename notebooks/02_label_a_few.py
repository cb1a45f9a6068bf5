# %% [markdown]
# # 02 Label a few images
#
# Adaptation needs labels: your rating of a few dozen images. The labelling panel shows one image at a time
# with a **rating slider on the ACR scale** (1 bad, 2 poor, 3 fair, 4 good, 5 excellent).
#
# * **A deliberate choice**: on an image you have not rated the slider sits at *not rated*, and *Save + next*
#   refuses until you pick a level, so no image is ever saved with the previous image's value.
# * **Autosave**: every rating is committed at once to the session's database (`labels.sqlite`, one
#   transaction per rating; `labels.csv` is its export, rewritten after each rating). Close the notebook any
#   time; `Session.open(folder)` resumes. Several people (tabs, kernels) can rate one session: each types a
#   name in the *Rater* box once, and their agreement becomes the human ceiling that notebook 07 reports.
# * **Skip** an image you cannot judge, **Undo** the last rating or skip, **Previous/Next** to browse.
# * **Suggest next**: first the most *different* images (farthest-point sampling on CLIP embeddings, so the
#   first labels cover the variety of your set), then the ones the model is least sure about.
# * **Keyboard**: click the *Keys* box once, then type `1`-`5` + Enter to rate, `s` skip, `u` undo,
#   `p` previous, `n` next. The focus stays in the box, so you can rate a series without the mouse. (Stock
#   ipywidgets buttons have no access keys; Tab + Space also work.)
# * **Reading aids**: the scale's words stand under the slider's stops; *Zoom* shows the image at *100 %* (its
#   own pixels, scrollable: fine noise or slight blur is hard to see in a scaled-down view) or *200 %*; the bar at
#   the bottom counts the images you have rated out of all. The file name stays hidden while you rate (it can give
#   the answer away: *show file name* on request); the review grid at the end shows it.

# %% tags=["parameters"]
import os

from clipiqa.notebook import image_folder, settings, short_errors, STAND_IN, stand_in

short_errors()  # clipiqa's user errors (no weights, a mistyped name, ...) as one short message

SMOKE = True  # True: the lesson toy model (trained here on synthetic blur and noise) + embedded demo photos
              #   at its 64 px (any CPU, seconds; a toy: the machinery learns, it says nothing of real CLIP)
              # False: real weights (MODEL), on a GPU when there is one (the sizes below are a GPU's)
SMOKE = SMOKE or os.environ.get("CLIPIQA_SMOKE") == "1"  # CI forces smoke mode without editing this cell
# what follows from SMOKE, computed by clipiqa.notebook.settings (which also reads CLIPIQA_MODEL, CLIPIQA_DEVICE
# and CLIPIQA_REHEARSAL); to change one, set it on a line below, e.g. MODEL = "vitl14-openai" (any model:
# `clipiqa models`) or WEIGHTS = "path/to/weights" (real runs without model-hub access)
REHEARSAL, MODEL, WEIGHTS, DEVICE, DEMO_LIMIT, WORK, DEMO_TYPES, SIZE = settings(SMOKE)

IMAGES = None  # a folder of your own photos; None = the embedded demo photos
IMAGES = image_folder(IMAGES)  # a typo or an empty folder stops here, naming the folder
SESSION = f"{WORK}/label-session"  # where labels.csv, settings and checkpoints are saved
N_IMAGES = 12 if REHEARSAL else 40  # demo photos to put in the session
STAND_IN_RATER = IMAGES is None  # demo photos: fill labels from their synthetic severity (not human opinion)
N_LABELS = 40 if SMOKE else 10 if REHEARSAL else 30

# %%
import os

from clipiqa.data import build_demo_set
from clipiqa.session import Session
from clipiqa.weights import weights_line
from clipiqa.widgets import LabelPanel

if IMAGES is None:
    demo = build_demo_set(types=DEMO_TYPES, size=SIZE)
    images = demo.sample(n=N_IMAGES, random_state=0)  # a shuffled mix of photos and distortions
else:
    images = IMAGES
session = Session(SESSION, images=images, model_name=MODEL, weights=WEIGHTS, device=DEVICE)
print(weights_line(session.model))  # which model, weights, device and precision the suggestions use
session

# %%
panel = LabelPanel(session)
panel

# %% [markdown]
# Rate a few images in the panel above. To run this notebook top to bottom without clicking, the next cell
# plays a **stand-in rater** for the demo photos: it rates each image from its synthetic severity (clean = 5,
# level 5 = 1) through `panel.rate`, the same call the *Save + next* button makes, and leaves the last few
# images for you. Your own photos are never rated automatically: with `STAND_IN_RATER = False` (or `IMAGES`
# set) the session starts with no labels, which is a normal state; rate in the panel, then run on.

# %%
LEAVE_FOR_YOU = 5  # images the stand-in rater leaves unrated (for your clicks and the skip/undo cell)
if STAND_IN_RATER and IMAGES is None:
    severity = demo.set_index("path")["q"]  # synthetic: 1 = clean ... 0 = most distorted
    with stand_in(session):  # under the rater name "stand-in", never a person's
        while len(session.labels) < N_LABELS and session.counts()["to_go"] > LEAVE_FOR_YOU:
            panel.rate(1 + round(4 * severity[panel.current_path]))
        print(f"{len(session.my_labels)} stand-in ratings under the rater {STAND_IN!r} (synthetic severity, not "
              "an opinion); yours go under the name you type in the Rater box")
print(session.progress_text())

# %% [markdown]
# Skip, undo and suggestions from code (the buttons call the same methods):

# %%
suggested = session.suggest_next(3)
print("label these next:", [os.path.basename(p) for p in suggested] or "nothing left")
if STAND_IN_RATER and session.counts()["to_go"]:  # only on the demo session, as the stand-in: never on yours
    with stand_in(session):
        panel.skip()   # the Skip button
        panel.undo()   # the Undo button: the skip is gone again
print(session.progress_text())

# %% [markdown]
# ## Review your labels
#
# Your labels side by side: thumbnails grouped by rating, best level first, each with its file name (now that
# rating is done). A slip stands out, e.g. a blurred image among the "5 excellent": `panel.goto("file name")` shows
# it in the panel again, and your new rating replaces the old one. Until you have rated, the demo session shows the
# stand-in's labels here (synthetic severities, not opinions).

# %%
from clipiqa.widgets import review_grid

whose = STAND_IN if STAND_IN_RATER and not session.my_labels else None  # None: yours (the Rater box's name)
review_grid(session, rater=whose)

# %% [markdown]
# ## What is on disk
#
# `labels.sqlite` holds every rating (image, rater, score, scale, time, blind repeat or not). `labels.csv` is
# its export, one row per image: `path, mos, mos_std, n_ratings, content_id` (the mean opinion score over
# raters, their spread and number), the file `clipiqa.data.read_labels` and `clipiqa adapt --labels` read;
# `content_id` groups images of the same scene so that evaluation never tests on a scene it trained on. A
# session with no labels yet has an export with the header only.

# %%
print(open(session.labels_path).read()[:400])
labelled = session.labelled_table()
if labelled.empty:
    print("no labels yet: rate a few images in the panel above, then run this cell again")
labelled[["path", "mos", "q", "content_id"]].head()

# %%
again = Session.open(SESSION)  # a new kernel tomorrow: labels, position and settings come back
print(again.progress_text(), "| same current image:", again.current == session.current)
