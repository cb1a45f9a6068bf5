"""clipiqa.notebook: user errors render in IPython as one short message once ``short_errors()`` is called (through
``_render_traceback_``), and the lesson figures notebooks call instead of carrying plotting code."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

import clipiqa
from clipiqa import notebook
from clipiqa.caveats import RANDOM_INIT, TOY
from clipiqa.weights import WeightsUnavailableError

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _plain(lines):
    return [ANSI.sub("", line) for line in lines]


def test_short_traceback_is_the_message_and_a_hint():
    try:
        raise WeightsUnavailableError("no weights for vitb16-openai\nput them in ~/.cache or pass weights=")
    except WeightsUnavailableError as e:
        lines = _plain(notebook.short_traceback(e))
    assert lines == ["WeightsUnavailableError: no weights for vitb16-openai",
                     "put them in ~/.cache or pass weights=", f"({notebook.HINT})"]


NO_PATCHED_ERRORS = """
import inspect, sys
import clipiqa, clipiqa.session, clipiqa.notebook
patched = sorted(f"{m.__name__}.{name}" for m in list(sys.modules.values()) if m and m.__name__.startswith("clipiqa")
                 for name, cls in vars(m).items()
                 if inspect.isclass(cls) and issubclass(cls, BaseException) and "_render_traceback_" in vars(cls))
print(patched)
clipiqa.notebook.short_errors()
from clipiqa.weights import WeightsUnavailableError
print("_render_traceback_" in vars(WeightsUnavailableError))
"""


def test_importing_clipiqa_changes_no_exception_class():
    """Short notebook errors are an explicit switch: importing clipiqa.session (what every notebook loads) gives
    no exception class a ``_render_traceback_``; ``short_errors()`` does (fresh process: nothing called it)."""
    done = subprocess.run([sys.executable, "-c", NO_PATCHED_ERRORS], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "True"], done.stdout + done.stderr


def test_full_tracebacks_on_request(capsys):
    try:
        raise WeightsUnavailableError("no weights")
    except WeightsUnavailableError as e:
        err = e
    notebook.set_short_errors(False)
    try:
        text = "".join(notebook.short_traceback(err))
    finally:
        notebook.set_short_errors(True)
    assert "Traceback (most recent call last)" in text and "test_full_tracebacks_on_request" in text
    notebook.full_traceback(err)
    assert "Traceback (most recent call last)" in capsys.readouterr().out


def test_ipython_shows_only_the_short_message():
    """The real path: IPython's showtraceback on a user error raised in a cell."""
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell
    notebook.short_errors()  # what every notebook's parameters cell calls
    shell = InteractiveShell.instance()
    captured = {}
    shell._showtraceback = lambda etype, evalue, stb: captured.update(stb=stb)
    shell.run_cell("from clipiqa.weights import WeightsUnavailableError\n"
                   "def load():\n    raise WeightsUnavailableError('no weights: pass weights=')\nload()")
    assert _plain(captured["stb"]) == ["WeightsUnavailableError: no weights: pass weights=", f"({notebook.HINT})"]
    assert clipiqa.__version__
    shell.run_cell("raise ValueError('a bug')")
    assert any("Traceback" in line for line in _plain(captured["stb"]))  # ordinary errors keep their traceback


def _meta_history(best_epoch, rel_move=True):
    from types import SimpleNamespace
    evals = [{"kind": "eval", "epoch": e, "srcc": s, "srcc_adapted": s, "srcc_init": s - 0.1,
              "srcc_adapted:blur": s, "srcc_init:blur": s} for e, s in ((0, 0.3), (1, 0.2), (2, 0.25))]
    steps = [{"kind": "step", "epoch": 1 + k // 2, "meta_step": k + 1, **({"rel_move": 0.01 * (k + 1)}
                                                                          if rel_move else {})} for k in range(4)]
    return SimpleNamespace(evals=evals, steps=steps, best_epoch=best_epoch, best_score=0.3, rel_move=0.04)


def test_meta_selection_text_explains_epoch_zero():
    """A selected epoch 0 is explained (notebook 06 printed a bare "best epoch: 0")."""
    text = notebook.meta_selection_text(_meta_history(0))
    assert "starting parameters" in text and "before any meta step" in text and "4 %" in text
    assert "after epoch 2" in notebook.meta_selection_text(_meta_history(2))


def test_plot_meta_history_names_its_lines_and_axes():
    """Notebook 06's plot: named lines (no raw columns), a y label, whole-epoch ticks."""
    fig = notebook.plot_meta_history(_meta_history(0))
    left, right = fig.axes
    labels = [line.get_label() for line in left.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["at the meta init (no adaptation)", "after the inner steps", "selected (epoch 0)"]
    assert "srcc" not in " ".join(labels)  # no raw column names, no per-task lines
    assert left.get_ylabel() and right.get_ylabel() and "moved" in right.get_title()
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in left.get_xticks())
    assert len(notebook.plot_meta_history(_meta_history(0, rel_move=False)).axes) == 1  # no column, no panel


def test_meta_history_figure_carries_the_toy_caveat_and_a_move_to_scale():
    """06's figures had no toy caveat, and a 0.1 % move of the meta parameters filled the whole
    height of its axis (which started at the smallest value)."""
    from types import SimpleNamespace
    history = _meta_history(0)
    history.steps = [{**row, "rel_move": 0.0009 + 0.0001 * k} for k, row in enumerate(history.steps)]  # 0.09-0.12 %
    toy = SimpleNamespace(random_init=False, source=SimpleNamespace(toy=True))
    fig = notebook.plot_meta_history(history, model=toy)
    assert fig._suptitle is not None and fig._suptitle.get_text() == TOY.text
    right = fig.axes[1]
    lo, hi = right.get_ylim()
    assert lo == 0 and max(right.get_lines()[0].get_ydata()) < 0.15 * hi  # a small move looks small
    assert "0.12 %" in [t.get_text() for t in right.texts]
    random = notebook.plot_meta_history(history, random_init=True)
    assert random._suptitle.get_text() == RANDOM_INIT.text


def test_caveat_names_random_toy_and_real_models():
    from types import SimpleNamespace

    from clipiqa.notebook import caveat
    assert caveat(SimpleNamespace(random_init=True, source=SimpleNamespace(toy=False))) == RANDOM_INIT.text
    assert caveat(SimpleNamespace(random_init=False, source=SimpleNamespace(toy=True))) == TOY.text
    assert caveat(SimpleNamespace(random_init=False, toy=True)) == TOY.text  # a Session
    assert caveat(SimpleNamespace(random_init=False, source=SimpleNamespace(toy=False))) == ""
    assert "toy model trained on synthetic distortions" in TOY.text


def test_panels_on_the_lesson_model_say_it_is_a_toy(tmp_path, demo_table):
    from clipiqa.session import Session
    from clipiqa.widgets import LabelPanel
    session = Session(tmp_path / "s", images=demo_table.head(4), model_name="lesson", device="cpu")
    assert session.toy and not session.random_init
    assert "toy model trained on synthetic distortions" in LabelPanel(session).banner.value
    session.close()
    plain = Session(tmp_path / "t", images=demo_table.head(4), model_name="tiny", device="cpu")
    assert "random-init" in LabelPanel(plain).banner.value and "toy" not in LabelPanel(plain).banner.value
    plain.close()


# The parameters cell every notebook carried before settings() existed (pasted from notebooks/_build.py); settings()
# must compute the same values from the same switch and environment.
OLD_SMOKE_SWITCH = '''\
import os

SMOKE = True
SMOKE = SMOKE or os.environ.get("CLIPIQA_SMOKE") == "1"
REHEARSAL = not SMOKE and os.environ.get("CLIPIQA_REHEARSAL") == "1"
MODEL = "lesson" if SMOKE else os.environ.get("CLIPIQA_MODEL", "vitb16-openai")
WEIGHTS = None
DEVICE = os.environ.get("CLIPIQA_DEVICE") or ("cpu" if SMOKE else "auto")
DEMO_LIMIT = 16 if REHEARSAL else None
WORK = "clipiqa-work/smoke" if SMOKE else "clipiqa-work"
DEMO_TYPES = ["gaussian_blur", "white_noise", "jpeg"]
SIZE = 64 if SMOKE else 224
'''
NAMES = ["REHEARSAL", "MODEL", "WEIGHTS", "DEVICE", "DEMO_LIMIT", "WORK", "DEMO_TYPES", "SIZE"]
ENVIRONMENTS = [{}, {"CLIPIQA_SMOKE": "1"}, {"CLIPIQA_REHEARSAL": "1"}, {"CLIPIQA_REHEARSAL": "1", "CLIPIQA_SMOKE": "1"},
                {"CLIPIQA_MODEL": "vitb32-openai", "CLIPIQA_DEVICE": "cuda"}, {"CLIPIQA_DEVICE": ""},
                {"CLIPIQA_REHEARSAL": "0", "CLIPIQA_MODEL": "tiny"}]


@pytest.mark.parametrize("smoke", [True, False])
@pytest.mark.parametrize("environ", ENVIRONMENTS)
def test_settings_compute_what_the_pasted_parameters_cell_did(smoke, environ, monkeypatch):
    """The smoke switch computed by clipiqa.notebook.settings gives what the pasted parameters cell gave."""
    for key in ("CLIPIQA_SMOKE", "CLIPIQA_REHEARSAL", "CLIPIQA_MODEL", "CLIPIQA_DEVICE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    namespace = {}
    exec(OLD_SMOKE_SWITCH.replace("SMOKE = True", f"SMOKE = {smoke}", 1), namespace)
    assert tuple(notebook.settings(namespace["SMOKE"])) == tuple(namespace[n] for n in NAMES)
    assert notebook.settings(namespace["SMOKE"], environ=environ) == notebook.settings(namespace["SMOKE"])


def test_settings_by_hand():
    smoke = notebook.settings(True, environ={"CLIPIQA_REHEARSAL": "1", "CLIPIQA_MODEL": "tiny"})
    assert (smoke.rehearsal, smoke.model, smoke.device, smoke.size, smoke.work, smoke.demo_limit) == \
        (False, "lesson", "cpu", 64, "clipiqa-work/smoke", None)
    real = notebook.settings(False, environ={})
    assert (real.rehearsal, real.model, real.device, real.size, real.work, real.weights) == \
        (False, "vitb16-openai", "auto", 224, "clipiqa-work", None)
    rehearsal = notebook.settings(False, environ={"CLIPIQA_REHEARSAL": "1", "CLIPIQA_DEVICE": "cuda"})
    assert (rehearsal.rehearsal, rehearsal.demo_limit, rehearsal.device) == (True, 16, "cuda")
    rehearsal.demo_types.append("jpeg")  # a notebook editing its list must not change the next notebook's
    assert notebook.settings(False, environ={}).demo_types == ["gaussian_blur", "white_noise", "jpeg"]
    assert list(notebook.Settings._fields) == [n.lower() for n in NAMES]


def test_say_if_random_init_prints_the_caveat_only(capsys):
    from types import SimpleNamespace
    notebook.say_if_random_init(SimpleNamespace(random_init=True, source=SimpleNamespace(toy=False)))
    notebook.say_if_random_init(SimpleNamespace(random_init=False, toy=True))
    notebook.say_if_random_init(SimpleNamespace(random_init=False, source=SimpleNamespace(toy=False)))
    assert capsys.readouterr().out.splitlines() == [
        f"⚠ {RANDOM_INIT.text}. Set SMOKE = False for real numbers.",
        f"⚠ {TOY.text}. Set SMOKE = False for real numbers."]


def test_notebooks_import_the_shared_helpers_instead_of_pasting_them():
    from pathlib import Path

    import nbformat
    folder = Path(__file__).resolve().parents[1] / "notebooks"
    for path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "def say_if_random_init" not in code, path.name
        assert "say_if_random_init(" not in code or "from clipiqa.notebook import say_if_random_init" in code
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert f"{', '.join(NAMES)} = settings(SMOKE)" in params.source, path.name


def test_image_folder_of_a_parameters_cell_fails_where_it_is_typed(tmp_path, photo_dir):
    from clipiqa.notebook import image_folder
    assert image_folder(None) is None
    assert image_folder(photo_dir) == str(photo_dir)
    with pytest.raises(FileNotFoundError, match="plnat"):
        image_folder(tmp_path / "plnat")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images in"):
        image_folder(tmp_path / "empty")


def test_short_errors_from_the_parameters_cell_and_did_you_mean():
    import subprocess
    import sys
    code = ("import sys; import clipiqa.notebook as n; n.short_errors(); "
            "assert 'clipiqa.session' not in sys.modules; "
            "from clipiqa.weights import WeightsUnavailableError as W; from clipiqa.zoo import UnknownModelError as U; "
            "sys.exit(0 if '_render_traceback_' in vars(W) and '_render_traceback_' in vars(U) else 1)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr  # short before any session is loaded (notebook 01's first error)
    import clipiqa
    from clipiqa.zoo import UnknownModelError
    with pytest.raises(UnknownModelError, match="did you mean 'vitb32-openai'") as info:
        clipiqa.load_model("vitb32-opnai", device="cpu")
    assert isinstance(info.value, ValueError)


def test_stand_in_ratings_go_under_their_own_name(tmp_path, photo_dir):
    from clipiqa.notebook import STAND_IN, stand_in
    from clipiqa.session import Session
    session = Session(tmp_path / "s", images=photo_dir, model_name="tiny")
    with stand_in(session):
        for path in session.images[:2]:
            session.label(path, 4)
    assert session.rater == "default" and session.my_labels == {}  # a person without a name has rated nothing
    assert set(session.ratings()["rater"]) == {STAND_IN}
