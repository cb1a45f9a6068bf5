"""A random-init or toy model says the same caveat wherever its numbers are shown: notebook printouts and
figures, explain tables and verdict lines, widget banners, CLI lines, result rows and checkpoint cards."""
from __future__ import annotations

import dataclasses

import pytest

from clipiqa.caveats import NO_CAVEAT, RANDOM_INIT, TOY, caveat_for, caveat_of
from clipiqa.factory import load_model


@pytest.fixture(scope="module")
def random_model():
    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def toy_model():
    model = load_model("tiny", device="cpu")
    model.source = dataclasses.replace(model.source, random_init=False, toy=True)
    return model


def shown_by_every_output(model, capsys, tmp_path) -> dict[str, str]:
    """What each place shows for ``model`` (the caveat's part of it)."""
    from clipiqa.checkpoint import read_checkpoint, save_checkpoint
    from clipiqa.commands.common import random_init_warning
    from clipiqa.explain.files import model_label
    from clipiqa.explain.notes import note_for
    from clipiqa.explain.reading import short_caveat
    from clipiqa.notebook import caveat, say_if_random_init
    from clipiqa.weights import weights_line
    from widgets._common import banner, model_caveat

    say_if_random_init(model)
    printed = capsys.readouterr().out
    random_init_warning(model)
    cli = capsys.readouterr().err
    save_checkpoint(model, tmp_path / "ckpt")
    card = read_checkpoint(tmp_path / "ckpt").card
    return {"notebook": caveat(model), "notebook printout": printed, "explain note": note_for(model.random_init, model),
            "explain verdict": short_caveat(note_for(model.random_init, model)), "widget": model_caveat(model),
            "banner": banner(model.random_init, toy=model.source.toy).value, "cli": cli,
            "weights line": weights_line(model), "explain model column": model_label(model, zero_shot=False),
            "card": card.get("warning", "")}


@pytest.mark.parametrize("kind", ["random", "toy"])
def test_every_place_shows_the_same_caveat(kind, random_model, toy_model, capsys, tmp_path):
    model, expected = (random_model, RANDOM_INIT) if kind == "random" else (toy_model, TOY)
    shown = shown_by_every_output(model, capsys, tmp_path)
    text_places = ("notebook", "notebook printout", "explain note", "widget", "banner", "cli", "card")
    label_places = ("explain verdict", "weights line", "explain model column")
    for place in text_places:
        assert expected.text in shown[place], (place, shown[place])
    for place in label_places:
        assert f"{expected.label}" in shown[place], (place, shown[place])
    other = TOY if expected is RANDOM_INIT else RANDOM_INIT
    assert not any(other.label in text or other.text in text for text in shown.values())


def test_caveat_of_reads_models_sessions_and_sources():
    from types import SimpleNamespace as NS
    assert caveat_of(NS(random_init=True, source=NS(toy=False))) is RANDOM_INIT
    assert caveat_of(NS(random_init=False, toy=True)) is TOY  # a Session
    assert caveat_of(NS(random_init=False, source=NS(toy=True))) is TOY  # an IQAModel
    assert caveat_of(NS(random_init=False, source=NS(toy=False))) is NO_CAVEAT and not NO_CAVEAT
    assert caveat_for(True, toy=True) is RANDOM_INIT  # random init comes first
    assert RANDOM_INIT.then("x") == f"{RANDOM_INIT.text}; x" and NO_CAVEAT.then("x") == ""
    assert "random-init" in RANDOM_INIT.text and "toy model" in TOY.text
