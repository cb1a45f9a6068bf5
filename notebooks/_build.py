"""Write the guided notebooks (outputs stripped) from the cell texts below: ``python notebooks/_build.py``.

Each notebook is a short lesson: teaching text, then code that calls the clipiqa API. Exactly one code cell
per notebook is tagged ``parameters``; it holds the ``SMOKE`` switch (the lesson toy model + embedded demo
photos at 64 px, runs on a CPU in seconds, a toy's numbers) and everything else that differs between a smoke run
and a real run (``MODEL``, default ``vitb16-openai`` or ``$CLIPIQA_MODEL``, on ``DEVICE = "auto"``: CUDA when
present). ``CLIPIQA_SMOKE=1`` in the environment forces smoke mode, so CI runs the notebooks unchanged.
``CLIPIQA_REHEARSAL=1`` (CI's dress rehearsal of the real path, ``tests/test_notebooks.py``) shrinks the real
mode's image counts, epochs and splits, never the model, the transforms or the code path.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SMOKE_SWITCH = '''\
import os

SMOKE = True  # True: the lesson toy model (trained here on synthetic blur and noise) + embedded demo photos
              #   at its 64 px (any CPU, seconds; a toy: the machinery learns, it says nothing of real CLIP)
              # False: real weights (MODEL), on a GPU when there is one (the sizes below are a GPU's)
SMOKE = SMOKE or os.environ.get("CLIPIQA_SMOKE") == "1"  # CI forces smoke mode without editing this cell
REHEARSAL = not SMOKE and os.environ.get("CLIPIQA_REHEARSAL") == "1"  # CI: the real path with small sizes
MODEL = "lesson" if SMOKE else os.environ.get("CLIPIQA_MODEL", "vitb16-openai")  # any model: `clipiqa models`
WEIGHTS = None  # real runs without model-hub access: a local weights file/folder (or set CLIPIQA_WEIGHTS)
DEVICE = os.environ.get("CLIPIQA_DEVICE") or ("cpu" if SMOKE else "auto")  # auto: CUDA when present, else CPU
DEMO_LIMIT = 16 if REHEARSAL else None  # CI rehearsal: at most this many demo images per table
WORK = "clipiqa-work/smoke" if SMOKE else "clipiqa-work"  # sessions and results, next to this notebook
DEMO_TYPES = ["gaussian_blur", "white_noise", "jpeg"]  # distortions of the embedded demo set
SIZE = 64 if SMOKE else 224  # side of the demo images in pixels (the lesson model sees 64 px)
'''

RANDOM_INIT_NOTE = '''\
def say_if_random_init(model):
    from clipiqa.notebook import caveat
    if caveat(model):
        print(f"⚠ {caveat(model)}. Set SMOKE = False for real numbers.")
'''


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    """A code cell; a line ``@@RANDOM_INIT@@`` becomes the ``say_if_random_init`` helper."""
    return new_code_cell(textwrap.dedent(text).strip().replace("@@RANDOM_INIT@@", RANDOM_INIT_NOTE.strip()))


def params(extra: str = ""):
    cell = new_code_cell((SMOKE_SWITCH + textwrap.dedent(extra)).strip())
    cell.metadata["tags"] = ["parameters"]
    return cell


# --------------------------------------------------------------------------------------------------------- index
INDEX = [
    md("""
    # clipiqa: few-shot image quality assessment with CLIP

    A quality score for photos that needs **no reference image** (blind IQA), built on CLIP and adapted to your
    own images with **a few dozen labels**. It implements and extends GRMP-IQA (Li et al., *Boosting CLIP
    Adaptation for Image Quality Assessment via Meta-Prompt Learning and Gradient Regularization*, ICCV 2025).

    The loop, one notebook per step:

    | notebook | what it teaches |
    |---|---|
    | [01 Zero-shot scoring](01_zero_shot.ipynb) | how CLIP rates quality with two antonym prompts, and how well that tracks distortions |
    | [02 Label a few images](02_label_a_few.ipynb) | rating images inline on the ACR scale (autosave, skip, undo, resume, suggestions) |
    | [03 Adapt on a GPU](03_adapt_on_gpu.ipynb) | few-shot fine-tuning of prompts and last blocks, live curves, Stop, checkpoints |
    | [04 With vs without QGR](04_qgr_compare.ipynb) | the gradient regularizer, compared fairly on identical splits and seeds |
    | [05 Explain](05_explain.ipynb) | attributions before/after adaptation; does the score look at distortions or at content? |
    | [06 Meta-prompt pre-training](06_meta_prompt_pretraining.ipynb) | learning a good prompt initialisation from synthetic distortion tasks |
    | [07 Plant feasibility check](07_plant_feasibility.ipynb) | your own factory/inspection photos: how well can this work, how many labels do I need? |

    **Smoke mode.** Every notebook has one *parameters* cell with `SMOKE = True`: the `lesson` model, a small
    **toy** CLIP that clipiqa trained itself on synthetic blur and noise (64 px, no download), and the embedded
    demo photos, so that everything runs on any CPU in seconds. Its curves are real behaviour of a toy: they
    show that zero-shot scoring, adaptation and QGR do something, never how real CLIP behaves, and every panel
    and figure says so. Set `SMOKE = False` (a GPU and the ViT-B/16 weights)
    for real numbers; nothing else needs to change.

    Below: the embedded sample photos, clean and distorted, scored zero-shot.
    """),
    params(),
    code("""
    import matplotlib.pyplot as plt

    import clipiqa
    from clipiqa.data import apply_distortion, demo_references
    from clipiqa.weights import weights_line

    @@RANDOM_INIT@@

    model = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE)
    print(weights_line(model))  # which model, weights, device and precision run, in one line
    say_if_random_init(model)
    """),
    md("""
    The demo photos ship inside scikit-image, scikit-learn and matplotlib, so they load offline. We distort
    each one with a known severity (`apply_distortion`, levels 1-5) and score it **zero-shot**: the frozen
    CLIP compares the image with the prompts *"Good photo."* and *"Bad photo."*; the score is the probability
    of "good", in [0, 1], higher = better.
    """),
    code("""
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
        ax.set_title(f"{title}\\nscore {score:.3f}", fontsize=8)
        ax.set_axis_off()
    if caveat(model):
        fig.suptitle(caveat(model), color="red", fontsize=9)
    plt.show()
    """),
    md("""
    With real weights, clean photos usually score higher than their heavily distorted versions, but not
    always: zero-shot CLIP also reacts to *content* (what is in the picture). Notebook 01 measures how well the
    zero-shot score tracks distortion severity; the rest of the loop adapts it to your images.

    Everything here is also available from Python scripts and the command line (`clipiqa score`,
    `clipiqa adapt`, `clipiqa bench`, `clipiqa explain`, `clipiqa pretrain`; `clipiqa --help`).
    """),
]

# --------------------------------------------------------------------------------------------------------- 01
ZERO_SHOT = [
    md("""
    # 01 Zero-shot quality scores

    CLIP was trained to match images with captions. CLIP-IQA turns that into a quality score without any
    training: encode the image, encode two **antonym prompts** ("Good photo." / "Bad photo."), and take the
    softmax of the two cosine similarities. The score is *p(good)*, in [0, 1], higher = better.

    You will: load a model, score the embedded demo set (photos with synthetic distortions of known severity),
    and measure how well the score ranks severity (Spearman correlation, SRCC) with its uncertainty.
    """),
    params("""
    N_IMAGES = 80 if SMOKE else 16 if REHEARSAL else None  # how many demo images to score (None: all)
    """),
    code("""
    import matplotlib.pyplot as plt
    import seaborn as sns

    import clipiqa
    from clipiqa.data import build_demo_set
    from clipiqa.metrics import bootstrap_ci, chance_band, srcc

    @@RANDOM_INIT@@

    model = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE)
    say_if_random_init(model)
    print("antonym prompts:", model.prompt_config.antonyms)
    """),
    md("""
    The demo set: every photo clean plus each distortion type at levels 1 (mild) to 5 (severe). Its labels are
    **synthetic severities** (`q = 1 - level/5`), not human opinion scores: they tell us which image is more
    distorted, not how people would rate it.
    """),
    code("""
    demo = build_demo_set(types=DEMO_TYPES, size=SIZE)
    table = demo if N_IMAGES is None else demo.sample(n=min(N_IMAGES, len(demo)), random_state=0)
    with model.adapters_off():  # zero-shot: the learnable prompts are switched off
        scored = clipiqa.score_files(model, table["path"])
    table = table.assign(score=scored["score"].to_numpy())
    table[["content_id", "distortion", "level", "q", "score"]].head()
    """),
    code("""
    rho = srcc(table["score"], table["q"])
    lo, hi = bootstrap_ci(table["score"], table["q"], "srcc", n_boot=1000)
    band = chance_band(len(table))
    print(f"SRCC(score, severity) = {rho:.3f}, 95% bootstrap CI [{lo:.3f}, {hi:.3f}], n = {len(table)}")
    print(f"a random scorer lands within +-{band:.3f} of 0 (95% chance band)")
    say_if_random_init(model)
    """),
    md("""
    **Reading it.** An SRCC inside the chance band is indistinguishable from guessing. The bootstrap CI says
    how much the number would move with another sample of images of the same kind.

    Per distortion type, the score should fall as the level rises:
    """),
    code("""
    from clipiqa.notebook import caveat
    distorted = table[table["level"] > 0]
    fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    sns.lineplot(data=distorted, x="level", y="score", hue="distortion", marker="o", ax=ax, errorbar=None)
    ax.set_xticks(sorted(distorted["level"].unique()))  # levels are whole numbers
    ax.set_ylim(0, 1)  # the score's whole range: a small difference looks small
    ax.set_ylabel("zero-shot score p(good)")
    ax.legend(title="distortion", loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the lines, not over them
    ax.set_title("zero-shot score vs distortion level" + (f"\\n({caveat(model)})" if caveat(model) else ""),
                 fontsize=9)
    plt.show()
    """),
    md("""
    ## The scene branch

    The same model also has **scene prompts** ("a photo of a landscape", ...). Adaptation uses them to keep
    CLIP's understanding of content while learning quality. Note: the scene *plant* means a plant that grows
    (botanical), never a factory.
    """),
    code("""
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
    """),
]

# --------------------------------------------------------------------------------------------------------- 02
LABEL = [
    md("""
    # 02 Label a few images

    Adaptation needs labels: your rating of a few dozen images. The labelling panel shows one image at a time
    with a **rating slider on the ACR scale** (1 bad, 2 poor, 3 fair, 4 good, 5 excellent).

    * **A deliberate choice**: on an image you have not rated the slider sits at *not rated*, and *Save + next*
      refuses until you pick a level, so no image is ever saved with the previous image's value.
    * **Autosave**: every rating is committed at once to the session's database (`labels.sqlite`, one
      transaction per rating; `labels.csv` is its export, rewritten after each rating). Close the notebook any
      time; `Session.open(folder)` resumes. Several people (tabs, kernels) can rate one session: each types a
      name in the *Rater* box once, and their agreement becomes the human ceiling that notebook 07 reports.
    * **Skip** an image you cannot judge, **Undo** the last rating or skip, **Previous/Next** to browse.
    * **Suggest next**: first the most *different* images (farthest-point sampling on CLIP embeddings, so the
      first labels cover the variety of your set), then the ones the model is least sure about.
    * **Keyboard**: click the *Keys* box once, then type `1`-`5` + Enter to rate, `s` skip, `u` undo,
      `p` previous, `n` next. The focus stays in the box, so you can rate a series without the mouse. (Stock
      ipywidgets buttons have no access keys; Tab + Space also work.)
    """),
    params("""
    IMAGES = None  # a folder of your own photos; None = the embedded demo photos
    SESSION = f"{WORK}/label-session"  # where labels.csv, settings and checkpoints are saved
    N_IMAGES = 12 if REHEARSAL else 40  # demo photos to put in the session
    STAND_IN_RATER = IMAGES is None  # demo photos: fill labels from their synthetic severity (not human opinion)
    N_LABELS = 40 if SMOKE else 10 if REHEARSAL else 30
    """),
    code("""
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
    """),
    code("""
    panel = LabelPanel(session)
    panel
    """),
    md("""
    Rate a few images in the panel above. To run this notebook top to bottom without clicking, the next cell
    plays a **stand-in rater** for the demo photos: it rates each image from its synthetic severity (clean = 5,
    level 5 = 1) through `panel.rate`, the same call the *Save + next* button makes, and leaves the last few
    images for you. Your own photos are never rated automatically: with `STAND_IN_RATER = False` (or `IMAGES`
    set) the session starts with no labels, which is a normal state; rate in the panel, then run on.
    """),
    code("""
    LEAVE_FOR_YOU = 5  # images the stand-in rater leaves unrated (for your clicks and the skip/undo cell)
    if STAND_IN_RATER and IMAGES is None:
        severity = demo.set_index("path")["q"]  # synthetic: 1 = clean ... 0 = most distorted
        while len(session.labels) < N_LABELS and session.counts()["to_go"] > LEAVE_FOR_YOU:
            panel.rate(1 + round(4 * severity[panel.current_path]))
    print(session.progress_text())
    """),
    md("""
    Skip, undo and suggestions from code (the buttons call the same methods):
    """),
    code("""
    suggested = session.suggest_next(3)
    print("label these next:", [os.path.basename(p) for p in suggested] or "nothing left")
    if session.counts()["to_go"]:
        panel.skip()   # the Skip button
        panel.undo()   # the Undo button: the skip is gone again
    print(session.progress_text())
    """),
    md("""
    ## What is on disk

    `labels.sqlite` holds every rating (image, rater, score, scale, time, blind repeat or not). `labels.csv` is
    its export, one row per image: `path, mos, mos_std, n_ratings, content_id` (the mean opinion score over
    raters, their spread and number), the file `clipiqa.data.read_labels` and `clipiqa adapt --labels` read;
    `content_id` groups images of the same scene so that evaluation never tests on a scene it trained on. A
    session with no labels yet has an export with the header only.
    """),
    code("""
    print(open(session.labels_path).read()[:400])
    labelled = session.labelled_table()
    if labelled.empty:
        print("no labels yet: rate a few images in the panel above, then run this cell again")
    labelled[["path", "mos", "q", "content_id"]].head()
    """),
    code("""
    again = Session.open(SESSION)  # a new kernel tomorrow: labels, position and settings come back
    print(again.progress_text(), "| same current image:", again.current == session.current)
    """),
]

# --------------------------------------------------------------------------------------------------------- 03
ADAPT = [
    md("""
    # 03 Adapt on a GPU

    Few-shot adaptation fine-tunes a small part of CLIP on your labels:

    * **paper** trainable set (GPU): the learnable text context plus copies of the last 4 blocks of both
      encoders (~41 M parameters for ViT-B/16); **prompts only** (CPU-friendly): text context + visual prompts.
    * Two losses: the **quality loss** (your labels) and a **semantic loss** that keeps the scene predictions
      close to frozen CLIP's. **QGR** (quality-aware gradient regularization) combines their gradients
      (notebook 04 compares with and without it).
    * A fixed training budget by default (no peeking at test data).

    The panel trains in a **background thread**: the notebook stays usable and *Stop* works at any time. A
    stopped run's checkpoint is saved and its card says it was stopped, but it is under-trained, so the session
    keeps scoring with what it had until you ask for it (the panel's *Use this stopped checkpoint* button, or
    `session.use_checkpoint(name)`). Curves update live: training losses and,
    when `shots` is below the number of labels, the SRCC on the held-out labels after each epoch with the
    chance band for their number.
    """),
    params("""
    SESSION = f"{WORK}/label-session"  # the session of notebook 02
    EPOCHS = 40 if SMOKE else 1 if REHEARSAL else 50
    SHOTS = 30 if SMOKE else 0  # train on this many labels, test on the rest (0 = train on all labels)
    TRAINABLE = "paper"  # text context + last blocks of both towers (the paper's set); "prompts" is lighter
    LR = 3e-2 if SMOKE else 1e-3  # the lesson model at 64 px learns in seconds with SGD + momentum
    OPTIONS = {"momentum": 0.9} if SMOKE else {}  # more AdaptConfig settings
    N_VIEWS = 1 if SMOKE or REHEARSAL else 4  # random crops cached per training image
    """),
    code("""
    import os

    import clipiqa
    from clipiqa.data import build_demo_set
    from clipiqa.metrics import chance_band
    from clipiqa.session import Session
    from clipiqa.widgets import AdaptPanel

    if os.path.exists(os.path.join(SESSION, "settings.json")):
        session = Session.open(SESSION, model_name=MODEL, weights=WEIGHTS, device=DEVICE)
    else:  # notebook 02 not run yet: the same demo photos, with stand-in ratings from synthetic severity
        demo = build_demo_set(types=DEMO_TYPES, size=SIZE)
        session = Session(SESSION, images=demo.sample(n=DEMO_LIMIT or 40, random_state=0), model_name=MODEL,
                          weights=WEIGHTS, device=DEVICE)
        severity = demo.set_index("path")["q"]
        for path in session.images:
            session.label(path, 1 + round(4 * severity[path]))
    print(session)
    """),
    code("""
    panel = AdaptPanel(session, epochs=EPOCHS, shots=SHOTS, trainable=TRAINABLE, device=DEVICE, n_views=N_VIEWS,
                       lr=LR, **OPTIONS)
    panel
    """),
    md("""
    Press **Run** above for a background run you can **Stop**. The next cell does the same from code and waits
    for the end (the panel shows the progress live meanwhile).
    """),
    code("""
    history = panel.run(block=True)
    print(panel.status, f"- {len(history.steps)} steps in {history.seconds:.1f} s")
    history.steps_frame()[["step", "epoch", "loss", "loss_semantic", "cosine", "frac_projected", "drift"]].tail()
    """),
    code("""
    from clipiqa.notebook import caveat
    if history.evals:
        last = history.evals[-1]
        n_test = len(session.labels) - SHOTS
        print(f"held-out SRCC after epoch {last['epoch']}: {last['srcc_test']:.3f} "
              f"(n = {n_test}; chance band +-{chance_band(n_test):.2f})")
    if caveat(session):
        print(f"⚠ {caveat(session)}")
    session.checkpoints()
    """),
    md("""
    ## Using the checkpoint

    The checkpoint (safetensors with only the learned tensors + a JSON card with the backbone, settings, data
    hashes and metrics) became the session's model when the run finished its budget. Anywhere else:

    ```python
    model = clipiqa.load_model(prompts="clipiqa-work/label-session/checkpoints/<name>")  # the card names the model
    ```

    or from a shell: `clipiqa score --prompts <checkpoint> photos/ --out scores.csv`. To see what it looks at,
    give its folder to notebook 05 (`CHECKPOINT = "..."` in 05's parameters cell, printed below) or run
    `clipiqa explain --prompts <checkpoint> --out explained/ photos/`.
    """),
    code("""
    ckpt = session.checkpoints().iloc[-1]["path"]
    print("for notebook 05: CHECKPOINT =", repr(os.path.relpath(ckpt)))
    model = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE, prompts=ckpt)
    clipiqa.score_files(model, session.images[:5])[["path", "score", "status"]]
    """),
]

# --------------------------------------------------------------------------------------------------------- 04
COMPARE = [
    md("""
    # 04 With vs without gradient regularization (QGR)

    Every training step computes two gradients for each trainable tensor: `g_q` from the quality loss and `g_s`
    from the semantic (scene) loss. QGR, as in the released code, changes the quality gradient only where the
    two **agree**:

    $$ g = g_q - \\lambda \\frac{\\langle g_q, g_s \\rangle}{\\lVert g_s \\rVert^2} g_s \\quad \\text{if } \\langle g_q, g_s\\rangle > 0, \\qquad g = g_q \\text{ otherwise} $$

    With the released `lam = 5` the update is pushed *away* from CLIP's scene semantics, so that the quality
    head does not simply learn "what is in the picture". Whether that helps is an empirical question, so we
    compare fairly: **the same splits, the same labelled draws, the same initialisation and the same seeds**;
    the only difference between the arms is the regularizer. Zero-shot CLIP is shown for reference.

    The panel runs the evaluation protocol (`clipiqa.protocol.run_protocol`) with a pair of its arms that differ
    in QGR only: `ft` / `ft+qgr` for the paper's trainable set, `coop+vpt` / `coop+vpt+qgr` for prompts only.
    *Stop* ends the run after the current arm; the summary then uses only the splits that **every** arm
    finished, so both arms are always averaged over the same splits. When the two arms give the same numbers
    on every split, the panel says "identical: QGR never changed a gradient" (or "identical results" when its
    gradient records show that QGR did project gradients without changing any number).
    """),
    params("""
    SHOTS = 16 if SMOKE else 8 if REHEARSAL else 50  # labelled images per split
    N_SPLITS = 2 if SMOKE else 1 if REHEARSAL else 10
    EPOCHS = 40 if SMOKE else 1 if REHEARSAL else 50
    TRAINABLE = "paper"
    LR = 3e-2 if SMOKE else None  # None: the recipe's
    LAM = 5.0
    N_VIEWS = 1 if SMOKE or REHEARSAL else 4  # random crops cached per training image
    """),
    code("""
    from functools import partial

    import clipiqa
    from clipiqa.data import build_demo_set
    from clipiqa.widgets import ComparePanel

    table = build_demo_set(types=DEMO_TYPES, size=SIZE)  # synthetic severities; splits go by photo (content)
    table = table if DEMO_LIMIT is None else table.sample(n=DEMO_LIMIT, random_state=0)
    panel = ComparePanel(table, shots=SHOTS, n_splits=N_SPLITS, epochs=EPOCHS, trainable=TRAINABLE, lam=LAM,
                         model_factory=partial(clipiqa.load_model, MODEL, WEIGHTS, DEVICE), model_name=MODEL,
                         n_views=N_VIEWS, lr=LR, **({"momentum": 0.9} if SMOKE else {}))
    panel
    """),
    code("""
    result = panel.run(block=True)  # or press "Run comparison" above (background, with Stop)
    cols = ["split", "split_hash", "arm", "method", "n_train", "n_test", "srcc", "srcc_ci_lo", "srcc_ci_hi",
            "chance_band"]
    result.per_split[cols]
    """),
    code("""
    same = result.per_split.groupby("split")[["split_hash", "labelled_hash"]].nunique().eq(1).all().all()
    print("every arm saw identical splits and labelled draws:", same)
    print(result.paired_text)
    for line in result.notes:
        print("-", line)
    """),
    md("""
    **Reading the comparison.** Look at the paired differences (right plot above): one number per split, the
    same test images for both arms. A mean difference smaller than its spread over splits, or SRCCs inside the
    chance band, means "no evidence either way". The gradient-cosine traces show how often the two gradients
    agree (cosine > 0), which is when QGR acts; the share of projected tensors shows how much it acted. For the
    full protocol with every baseline (ridge probe, a CLIP-free classical-statistics check, CoOp, meta init) run
    `clipiqa bench` or `clipiqa.protocol.run_protocol`.
    """),
    md("""
    **The paper's 2x2 ablation, measured on the lesson toy** (`benchmarks/ablation_lesson.py --splits 10`;
    held-out types impulse noise, JPEG, motion blur and pixelate, 483 images of 23 contents at 64 px, 50 labels
    per split, paper trainable set, 100 epochs of SGD 3e-2 with momentum 0.9, QGR lam 5; the meta init is one
    Reptile run of the prompts on other synthetic types). Synthetic severity labels, 10 content-disjoint splits:

    | arm | init | QGR | SRCC mean ± std | chance band |
    | --- | --- | --- | --- | --- |
    | zero-shot | frozen | - | 0.361 ± 0.092 | ±0.192 |
    | ft | random | no | 0.494 ± 0.089 | ±0.192 |
    | ft+qgr | random | yes | 0.098 ± 0.450 | ±0.192 |
    | meta+ft | meta | no | 0.507 ± 0.078 | ±0.192 |
    | meta+ft+qgr | meta | yes | 0.419 ± 0.116 | ±0.192 |

    On this toy QGR hurts (unstably from the random init) and the meta init helps a little. A toy with a 2-layer
    text tower says nothing about real CLIP: run the same comparison with `SMOKE = False` for that.
    """),
]

# --------------------------------------------------------------------------------------------------------- 05
EXPLAIN = [
    md("""
    # 05 Explain: does the score look at distortions or at content?

    An **attribution map** says which pixels pushed the score up or down. Methods (all through Captum):
    Integrated Gradients (`ig`), `occlusion`, `smoothgrad`, and Grad-CAM on the patch-token grid (`gradcam`,
    and `gradcam-conv1` on the patch embedding).

    A map alone is easy to over-read, so the diagnostics put numbers on it:

    * **distortion focus**: blur a known rectangle of a clean photo; the share of attribution mass inside the
      rectangle relative to its area (1 = no preference, > 1 = the score looks at the distortion);
    * **content vs distortion**: on a grid photos x distortion types x levels, the share of score variance
      explained by the level versus by the photo (eta squared);
    * **scene drift**: how far the adapted model's scene predictions moved from zero-shot CLIP.
    """),
    params("""
    CHECKPOINT = None  # a checkpoint from notebook 03 to explain; None = adapt one here on demo labels
    EPOCHS = 40 if SMOKE else 1 if REHEARSAL else 50
    TRAINABLE = "paper"
    LR = 3e-2 if SMOKE else 1e-3
    OPTIONS = {"momentum": 0.9} if SMOKE else {}  # more AdaptConfig settings
    METHOD = "ig"
    METHOD_OPTIONS = {"n_steps": 4} if REHEARSAL else {}  # e.g. integration steps for ig (default 32)
    N_REFS = 2 if SMOKE else 1 if REHEARSAL else 6  # photos for the diagnostics
    N_VIEWS = 1 if SMOKE or REHEARSAL else 4  # random crops cached per training image
    """),
    code("""
    import matplotlib.pyplot as plt

    import clipiqa
    from clipiqa.finetune import AdaptConfig
    from clipiqa.data import build_demo_set, demo_references
    from clipiqa.explain import METHODS, zero_shot
    from clipiqa.explain.diagnostics import compare_models
    from clipiqa.explain.plots import plot_content_vs_distortion, plot_focus, plot_scene_drift
    from clipiqa.session import Session
    from clipiqa.widgets import AttributionViewer

    @@RANDOM_INIT@@

    demo = build_demo_set(types=DEMO_TYPES, size=SIZE)
    if CHECKPOINT:
        model = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE, prompts=CHECKPOINT)
    else:  # adapt on synthetic-severity labels of the demo photos (a stand-in for your labels)
        session = Session(f"{WORK}/explain-session", images=demo.sample(n=DEMO_LIMIT or 40, random_state=1),
                          model_name=MODEL, weights=WEIGHTS, device=DEVICE)
        severity = demo.set_index("path")["q"]
        for path in session.images:
            session.label(path, 1 + round(4 * severity[path]))
        if not session.adapted:
            session.adapt(AdaptConfig(trainable=TRAINABLE, epochs=EPOCHS, n_views=N_VIEWS, lr=LR, **OPTIONS))
        model = session.model
    say_if_random_init(model)
    for name, m in METHODS.items():
        print(f"{name:>14}: {m.description}")
    """),
    md("""
    The viewer: pick an image and a method; *before* is zero-shot CLIP (the same weights with the learned parts
    switched off), *after* is the adapted model. The overlay slider redraws without recomputing; the colour
    bar says what the colours mean. *Diagnostics* measures the focus and scene drift for the selected image: the
    focus test distorts a rectangle of the image's clean photo with **the image's own distortion** (noise for a
    noise image, blur for a blurred one), and the table follows the image you pick.
    """),
    code("""
    import pandas as pd

    picks = demo[demo["distortion"] != "reference"].sample(n=6, random_state=0)
    clean = demo[(demo["distortion"] == "reference") & demo["content_id"].isin(picks["content_id"])]
    viewer = AttributionViewer(model, images=pd.concat([picks, clean]), before_model=zero_shot(model),
                               method=METHOD, method_options={METHOD: METHOD_OPTIONS})
    viewer
    """),
    code("""
    viewer.diagnostics()
    """),
    md("""
    ## The diagnostics over several photos

    One table for both models; the figures below show the focus per photo, the score against the distortion
    level per photo with the eta-squared shares, and the scene drift.
    """),
    code("""
    refs = demo_references(SIZE, names=["astronaut", "chelsea", "coffee", "rocket", "china", "flower"][:N_REFS])
    table, tables = compare_models({"zero-shot": zero_shot(model), "adapted": model}, refs, method=METHOD,
                                   types=DEMO_TYPES, levels=(1, 3, 5), return_tables=True, **METHOD_OPTIONS)
    table.pivot_table(index=["diagnostic", "metric"], columns="model", values="value", sort=False)
    """),
    code("""
    plot_focus(tables["focus"])
    plot_content_vs_distortion(tables["content"])
    plot_scene_drift(tables["scene"])
    plt.show()
    """),
    md("""
    **Reading it.** A quality score that tracks distortions has focus above 1, a large eta squared for the
    level and a small one for the content. In smoke mode these are the lesson toy model's numbers: it was
    trained on blur and noise only, so expect focus above 1 for noise and below 1 for blur (its attributions
    sit on the sharp edges that blur leaves elsewhere); they show the machinery, not CLIP.
    """),
]

# --------------------------------------------------------------------------------------------------------- 06
META = [
    md("""
    # 06 Meta-prompt pre-training

    Few-shot adaptation starts from *some* prompt initialisation. Meta-learning searches for an initialisation
    from which **a few gradient steps on a new kind of distortion already work**:

    * a **task** is one distortion type (blur, noise, JPEG, ...), its images split by photo into a support set
      (to adapt on) and a query set;
    * per task, start from the meta parameters θ, take k steps on the support set, giving φ; then
      **Reptile** moves θ toward φ (`θ += β · mean(φ - θ)`), or **first-order MAML** uses the query gradient at φ;
    * the checkpoint is selected on **held-out source tasks only**, never on the data you will evaluate on.

    No dataset is needed: tasks are made from synthetic distortions of reference photos (the bundled ones here,
    or a folder of your own). The released code skipped the inner reset and selected on a target dataset; this
    is the corrected procedure.
    """),
    params("""
    META_PHOTOS = ["astronaut", "coffee", "rocket", "motorcycle", "hubble_deep_field", "immunohistochemistry"][
        :3 if SMOKE else 2 if REHEARSAL else None]
    EVAL_PHOTOS = ["chelsea", "china", "flower", "grace_hopper", "retina"][  # never seen in meta training
        :2 if REHEARSAL else None]
    META_TYPES = (["gaussian_blur", "white_noise", "jpeg"] if SMOKE else ["gaussian_blur", "jpeg"] if REHEARSAL
                  else None)  # None = all types
    META_EPOCHS = 2 if SMOKE else 1 if REHEARSAL else 50
    INNER_STEPS = 2 if SMOKE else 1 if REHEARSAL else 5
    TASK_SIZE = 64 if SMOKE else 256  # reference crop size for the synthetic tasks
    LEVELS = (1, 3, 5) if SMOKE or REHEARSAL else (1, 2, 3, 4, 5)  # distortion levels of the tasks
    SHOTS = 12 if SMOKE else 6 if REHEARSAL else 50
    EPOCHS = 3 if SMOKE else 1 if REHEARSAL else 50
    N_SPLITS = 1 if SMOKE or REHEARSAL else 5
    N_VIEWS = 1 if SMOKE or REHEARSAL else 4  # random crops cached per training image
    """),
    code("""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    import clipiqa
    from clipiqa.data import demo_references
    from clipiqa.meta import MetaConfig, meta_pretrain, synthetic_tasks
    from clipiqa.notebook import meta_selection_text, plot_meta_history

    tasks = synthetic_tasks(demo_references(TASK_SIZE, names=META_PHOTOS), types=META_TYPES,
                            levels=LEVELS, size=TASK_SIZE)
    print(len(tasks), "tasks:", ", ".join(t.name for t in tasks))
    """),
    code("""
    from clipiqa.notebook import caveat
    model = clipiqa.load_model(MODEL, weights=WEIGHTS, device=DEVICE)
    config = MetaConfig(epochs=META_EPOCHS, inner_steps=INNER_STEPS, tasks_per_batch=2, holdout_tasks=0.25,
                        batch_size=16)
    progress = widgets.HTML("starting ...")
    display(progress)

    def on_step(record):  # runs in this cell's thread: setting a widget value is enough to update it
        if record["kind"] == "step":
            progress.value = (f"meta step {record.get('meta_step', '?')} (epoch {record.get('epoch', '?')}): "
                              f"tasks {record['tasks']}, support loss {record['loss_last']:.3f}")
        elif record["kind"] == "eval":
            progress.value = f"epoch {record['epoch']}: held-out SRCC {record['srcc']:.3f}"

    history = meta_pretrain(model, tasks, config, on_step=on_step, out_dir=f"{WORK}/meta")
    print("held out for selection:", ", ".join(history.holdout_tasks))
    print(meta_selection_text(history))  # epoch 0 = the evaluation before any meta step
    if caveat(model):
        print(f"⚠ {caveat(model)}")
    """),
    code("""
    # left: held-out SRCC at the meta init and after the inner steps; right: how far the meta parameters moved
    plot_meta_history(history, random_init=model.random_init, fig=plt.figure(figsize=(10, 3.4), layout="constrained"))
    plt.show()
    """),
    md("""
    ## Does the meta init help few-shot adaptation?

    Same protocol as everywhere: the same splits and labelled draws for both arms, on photos **not** used for
    meta training. `coop+vpt` trains text and visual prompts from their default initialisation; `meta+ft` starts
    from the meta checkpoint (`best/`) and fine-tunes the paper's trainable set. Each arm trains with its own
    recipe; `overrides` shrinks every arm's budget alike for this lesson.
    """),
    code("""
    from functools import partial

    from clipiqa.data import build_demo_set
    from clipiqa.protocol import run_protocol

    demo = build_demo_set(types=["gaussian_blur", "white_noise", "jpeg"], size=SIZE)
    target = demo[demo["content_id"].isin(EVAL_PHOTOS)].reset_index(drop=True)
    target = target if DEMO_LIMIT is None else target.sample(n=DEMO_LIMIT, random_state=0).reset_index(drop=True)
    target.attrs = demo.attrs
    result = run_protocol(target, methods=["zero-shot", "coop+vpt", "meta+ft"], shots=SHOTS,
                          n_splits=N_SPLITS, model_factory=partial(clipiqa.load_model, MODEL, WEIGHTS, DEVICE),
                          overrides={"epochs": EPOCHS, "n_views": N_VIEWS}, meta_init=f"{WORK}/meta/best",
                          n_boot=200)
    print(result.to_text())
    """),
]

# --------------------------------------------------------------------------------------------------------- 07
PLANT = [
    md("""
    # 07 Feasibility check on your plant images

    *Plant* here means a factory or an inspection line. The question: **with my own photos and a few dozen
    labels, how well can a CLIP quality score work, and how many labels do I need?**

    1. Point `IMAGES` at a folder of your photos and label 20-50 of them in the panel (ACR scale).
    2. For 10, 20, 30, ... labels: adapt on that many and measure SRCC on labelled images held out from
       training, with a bootstrap CI and the chance band; repeat on a few seeded splits.
    3. Read the learning curve and the plain-language verdict: how good, and whether more labels would help.

    Two baselines run on the same splits: **zero-shot** CLIP (no labels used) and a **CLIP-free ridge on
    classical image statistics** (sharpness, noise, contrast, exposure...): if that one does as well, your
    quality problem is low-level and simple tools may do.

    *In smoke mode* (and whenever `IMAGES` is None) the images are the embedded demo photos with plant-style
    distortions (conveyor motion blur, defocus, sensor noise, glare, ...) and the labels come from their
    **synthetic severity**, not from a person. Smoke mode also uses the lesson toy model, so its verdict is about
    the procedure only.
    """),
    params("""
    IMAGES = None  # a folder of your plant photos; None = demo photos with plant-style distortions
    SESSION = f"{WORK}/plant-session"
    LABEL_COUNTS = [10, 20, 30, 40] if SMOKE else [10] if REHEARSAL else [10, 20, 30, 40, 50]  # learning curve
    N_SPLITS = 1 if SMOKE or REHEARSAL else 5  # seeded 80/20 splits per point
    EPOCHS = 3 if SMOKE else 1 if REHEARSAL else 30
    METHOD = "coop+vpt" if SMOKE else "ft+qgr"  # prompts only on a CPU; paper trainable set + QGR on a GPU
    N_VIEWS = 1 if SMOKE or REHEARSAL else 4  # random crops cached per training image
    N_IMAGES = 60 if SMOKE else DEMO_LIMIT or 120  # demo photos in the session (IMAGES None)
    """),
    code("""
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
    print(session, "\\nplant-style distortions:", ", ".join(plant_types))
    """),
    md("""
    Label here (autosaved; resume any time). Aim for 20-50 labels spread over the range of quality you see;
    *Suggest next* picks diverse images first. If many photos show the same scene, give them a `content_id`
    (pass a table with `path` and `content_id` as `IMAGES`) so that testing is on unseen scenes.
    """),
    code("""
    panel = LabelPanel(session)
    if IMAGES is None:  # demo photos: stand-in ratings from synthetic severity (NOT human opinion)
        severity = demo.set_index("path")["q"]
        for path in session.images:
            if path not in session.labels:
                session.label(path, 1 + round(4 * severity[path]))
        panel.refresh()
    panel
    """),
    code("""
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
    curve = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame()
    if not counts:
        print(f"only {len(table)} labels: label at least {int(LABEL_COUNTS[0] / 0.8) + 1} images, then rerun")
    else:
        print(f"{len(table)} labels; test sets of about {int(curve['n_test'].mean())} images per split")
    """),
    code("""
    from clipiqa.feasibility import learning_curve
    from clipiqa.notebook import caveat

    ceiling = session.agreement(n_boot=300)  # inter-rater (split-half, Spearman-Brown) and test-retest SRCC
    if len(curve):
        agg = learning_curve(curve)
        fig, ax = plt.subplots(figsize=(7.5, 3.8), layout="constrained")
        band = agg["band"].mean()
        ax.axhspan(-band, band, color="grey", alpha=0.2, label=f"chance band (+-{band:.2f})")
        if ceiling.available:
            ax.axhspan(ceiling.split_half_lo, ceiling.split_half_hi, color="tab:green", alpha=0.15,
                       label=f"human ceiling ({ceiling.split_half:.2f})")
        methods = list(dict.fromkeys(agg["method"]))
        for k, (method, sub) in enumerate(agg.groupby("method", sort=False)):
            dodge = (k - (len(methods) - 1) / 2) * 0.8  # side by side, so the CIs do not hide each other
            ax.errorbar(sub["n_train"] + dodge, sub["srcc"], yerr=[sub["srcc"] - sub["lo"], sub["hi"] - sub["srcc"]],
                        marker="o", capsize=3, label=method)
        ax.set_xlabel("labelled images used for training")
        ax.set_xticks(sorted(agg["n_train"].unique()))  # label counts are whole numbers
        ax.set_ylabel("held-out SRCC (mean over splits, 95% CI)")
        ax.set_ylim(-1, 1)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the data, not over it
        if caveat(session):
            ax.set_title(caveat(session), color="red", fontsize=8)
        plt.show()
        display(agg.round(3))
    """),
    md("""
    ## Verdict

    `clipiqa.feasibility.verdict` writes it, by rules you can read in its docstring: first the size of the
    held-out sets (fewer than 20 images: too few to judge, whatever the numbers say); then the grade of the
    method's SRCC with its confidence interval against the chance band; then the human ceiling (how well your
    raters agree with each other: no model can be expected to agree with them better); and a trend only when the
    confidence intervals support one.
    """),
    code("""
    from clipiqa.feasibility import verdict

    print(ceiling)
    print(verdict(curve, METHOD, ceiling=ceiling, random_init=session.random_init, synthetic=IMAGES is None))
    """),
]

NOTEBOOKS = {
    "index.ipynb": INDEX,
    "01_zero_shot.ipynb": ZERO_SHOT,
    "02_label_a_few.ipynb": LABEL,
    "03_adapt_on_gpu.ipynb": ADAPT,
    "04_qgr_compare.ipynb": COMPARE,
    "05_explain.ipynb": EXPLAIN,
    "06_meta_prompt_pretraining.ipynb": META,
    "07_plant_feasibility.ipynb": PLANT,
}


def build(folder: Path = HERE) -> list[Path]:
    """Write every notebook into ``folder``; returns the paths."""
    written = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
            "language_info": {"name": "python"}})
        for i, cell in enumerate(nb.cells):
            cell.id = f"{Path(name).stem.replace('_', '-')}-{i:02d}"
        nbformat.validate(nb)
        path = folder / name
        nbformat.write(nb, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in build():
        print(p)
