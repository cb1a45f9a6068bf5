"""Which checkpoint a session scores with after an adaptation: a finished run's checkpoint
becomes the session's model; a stopped, under-trained one is kept on disk but not activated unless asked."""
from __future__ import annotations

import pytest

from clipiqa.finetune import AdaptConfig
from clipiqa.notebook import short_errors
from clipiqa.session import NotEnoughLabelsError, Session

CONFIG = AdaptConfig(trainable="prompts", epochs=50, n_views=1, batch_size=2)


@pytest.fixture
def session(tmp_path, photo_dir):
    s = Session(tmp_path / "sess", images=photo_dir, model_name="tiny", device="cpu")
    for i, p in enumerate(s.images):
        s.label(p, 1 + i)
    return s


def test_a_stopped_run_is_kept_but_not_activated(session):
    finished = session.adapt(AdaptConfig(trainable="prompts", epochs=1, n_views=1))
    assert not finished.stopped
    first = session.active_checkpoint
    assert first is not None and session.last_checkpoint == first
    model_before = session.model
    stopped = session.adapt(CONFIG, stop=lambda: True)
    assert stopped.stopped
    table = session.checkpoints()
    assert table["stopped"].tolist() == [False, True]  # kept on disk, marked stopped
    assert session.active_checkpoint == first and session.last_checkpoint == table["name"][1]
    assert table["active"].tolist() == [True, False]
    assert session.model is model_before  # still scores with the finished checkpoint
    session.use_checkpoint(session.last_checkpoint)  # ... until the user asks
    assert session.active_checkpoint == table["name"][1]


def test_a_stopped_run_on_a_fresh_session_leaves_it_zero_shot(session):
    session.adapt(CONFIG, stop=lambda: True)
    assert not session.adapted and session.active_checkpoint is None
    assert len(session.checkpoints()) == 1


def test_activate_true_uses_even_a_stopped_run(session):
    session.adapt(CONFIG, stop=lambda: True, activate=True)
    assert session.adapted and session.active_checkpoint == session.last_checkpoint


def test_activate_false_keeps_even_a_finished_run_inactive(session):
    session.adapt(AdaptConfig(trainable="prompts", epochs=1, n_views=1), activate=False)
    assert not session.adapted and len(session.checkpoints()) == 1


def test_activate_is_checked(session):
    with pytest.raises(ValueError, match="activate"):
        session.adapt(CONFIG, activate="yes")


def test_too_few_labels_is_a_user_error(tmp_path, photo_dir):
    s = Session(tmp_path / "empty", images=photo_dir, model_name="tiny", device="cpu")
    with pytest.raises(NotEnoughLabelsError, match="label at least 2") as info:
        s.adapt(CONFIG)
    assert isinstance(info.value, ValueError)
    short_errors()  # what a notebook's parameters cell turns on
    lines = info.value._render_traceback_()  # what IPython then shows: the message, no stack
    assert len(lines) == 2 and "label at least 2" in lines[0]
