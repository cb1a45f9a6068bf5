# %% [markdown]
# # 08 A pilot on the line: threshold, monitor, dashboard
#
# After the feasibility check (07), a pilot runs the model on a line for real. Four pieces, each also a command:
#
# 1. **A site threshold** (`clipiqa gate fit`): from your labels (ACR 1-5, "acceptable" = 3 or better) and the
#    model's scores, the margin threshold with the least expected cost of false accepts and false rejects, with
#    its error rates and their confidence intervals. It holds for one model version only.
# 2. **A line monitor** (`clipiqa watch FOLDER --session S --gate gate.json`): scores each new image once, logs
#    the decision and the model version in the session's database, and tests **drift** of the recent images
#    against the first ones, on the margins (KS test) and on the image embeddings (MMD).
# 3. **The dashboard** (this notebook, or `clipiqa dashboard S --folder FOLDER --gate gate.json`, a Voila web app
#    that shows only the line's scores): trend, reject rate, drift alarm, latest rejects, the label queue.
# 4. **Versions** (`clipiqa cycle S`, `clipiqa versions S`, `clipiqa rollback S`) and a **report** for a meeting
#    (`clipiqa report S --out report.html`).
#
# *Smoke mode* simulates a line with the embedded demo photos and the lesson toy: first a clean stretch, then the
# line drifts (the camera goes out of focus). The labels are the photos' **synthetic severity**, not opinions.

# %% tags=["parameters"]
import os

from clipiqa.notebook import settings, short_errors, stand_in

short_errors()  # clipiqa's user errors (no weights, a mistyped name, ...) as one short message

SMOKE = True  # True: the lesson toy model + embedded demo photos at 64 px (any CPU, seconds; a toy)
              # False: real weights (MODEL), on a GPU when there is one
SMOKE = SMOKE or os.environ.get("CLIPIQA_SMOKE") == "1"  # CI forces smoke mode without editing this cell
REHEARSAL, MODEL, WEIGHTS, DEVICE, DEMO_LIMIT, WORK, DEMO_TYPES, SIZE = settings(SMOKE)

SESSION = f"{WORK}/line-session"  # the labelling session whose database keeps the line log
LINE = f"{WORK}/line-images"      # the folder the line writes images into (simulated below)
PASS_AT = 3                       # ACR level from which an image is acceptable
COST_FALSE_ACCEPT = 5.0           # a bad part shipped costs 5x ...
COST_FALSE_REJECT = 1.0           # ... a good part stopped
N_PER_BATCH = 8 if REHEARSAL else 22  # images per simulated stretch of the line
IMAGES_RATED_BY_HAND = False      # the labels below come from a stand-in rater (synthetic severity)

# %%
import shutil
from pathlib import Path

import pandas as pd
from PIL import Image

from clipiqa import score_files
from clipiqa.data import apply_distortion, build_demo_set, demo_references
from clipiqa.notebook import caveat
from clipiqa.pilot import describe_gate, fit_gate, model_identity
from clipiqa.session import Session
from clipiqa.weights import weights_line
from clipiqa.widgets import LineDashboard

# labels for the threshold: demo photos at known blur levels, rated from their severity (a stand-in rater)
demo = build_demo_set(types=["gaussian_blur"], size=SIZE)
demo = demo.head(DEMO_LIMIT) if DEMO_LIMIT else demo
session = Session(SESSION, images=demo, model_name=MODEL, weights=WEIGHTS, device=DEVICE)
with stand_in(session):  # rater "stand-in": synthetic severity, not an opinion
    for row in demo.itertuples(index=False):
        if row.path not in session.labels:
            session.label(row.path, 1 + round(4 * row.q))  # clean = 5 ... worst blur = 1
print(weights_line(session.model))
labels = session.labelled_table()
scores = score_files(session.model, list(labels["path"]))
gate = fit_gate(labels, scores, pass_at=PASS_AT, cost_false_accept=COST_FALSE_ACCEPT,
                cost_false_reject=COST_FALSE_REJECT, model=model_identity(session.model))
print(describe_gate(gate))

# %% [markdown]
# The expected cost weighs the two mistakes by what they cost **you**: with a false accept 5x as costly as a
# false reject, the threshold moves up (more good images stopped, fewer bad ones shipped). The intervals come
# from a bootstrap that refits the threshold each time; with fewer than 10 images on either side the rates are
# flagged as too uncertain to plan with.
#
# ## The line, simulated
#
# A clean stretch first (the demo photos with slight sensor noise), scored by the monitor inside the dashboard.

# %%
line = Path(LINE)
shutil.rmtree(line, ignore_errors=True)  # a fresh simulated line each run
line.mkdir(parents=True)
photos = list(demo_references(size=SIZE).items())


def write_stretch(name, distortion=None, level=0):
    """Write N_PER_BATCH images of the simulated line into LINE/name/."""
    folder = line / name
    folder.mkdir()
    for k in range(N_PER_BATCH):
        photo, image = photos[k % len(photos)]
        image = apply_distortion(image, "white_noise", 1, rng=k)  # every frame differs a little
        if distortion:
            image = apply_distortion(image, distortion, level, rng=k)
        Image.fromarray(image).save(folder / f"{name}_{k:03d}_{photo}.png")


write_stretch("clean")
board = LineDashboard(SESSION, folder=LINE, gate=gate, model=session.model, reference=N_PER_BATCH)
board

# %% [markdown]
# Now the line drifts: the camera goes out of focus. Refreshing scores the new images; the drift test compares
# them with the clean stretch. (In a Voila app the dashboard refreshes by itself every few seconds.)

# %%
write_stretch("drifted", "gaussian_blur", 4)
board.refresh()
board

# %% [markdown]
# ## What the monitor measured
#
# Computed from the line log, never typed: the reject rate of each stretch and the drift test's p-values.

# %%
rows = pd.DataFrame(board.line_log.rows())
rows["stretch"] = rows["path"].map(lambda p: Path(p).parent.name)
rates = rows.groupby("stretch")["decision"].apply(lambda d: (d == "reject").mean())
drift = board.line_log.con.execute("SELECT ks_pvalue, mmd_pvalue, drifted, reason FROM drift_log "
                                   "ORDER BY id DESC LIMIT 1").fetchone()
toy = f" [{caveat(session)}]" if caveat(session) else ""
print(f"reject rate: clean stretch {rates.get('clean', float('nan')):.0%}, drifted stretch "
      f"{rates.get('drifted', float('nan')):.0%}; drift test: {drift[3]} (KS p = {drift[0]:.2g}, "
      f"MMD p = {drift[1]:.2g}); {len(board.line_log.label_requests())} images queued for labels{toy}")

# %% [markdown]
# ## What it costs
#
# Labelling time comes from the label store's own timestamps (per rater, pauses over 5 minutes left out); the
# gate's expected cost of mistakes per 1,000 images from its error rates and your two costs. The stand-in rater
# of smoke mode rates in milliseconds, so its labelling time means nothing; a person's does.

# %%
from clipiqa.pilot.cost import pilot_cost

cost = pilot_cost(session.ratings(), labels_now=len(session.labels), gate=gate)
print("\n".join(cost.lines()) + (" [stand-in ratings: not a person's pace]" if not IMAGES_RATED_BY_HAND else ""))
