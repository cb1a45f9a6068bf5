"""Reading the learned text context: nearest vocabulary tokens, similarity to quality phrases, the card and CLI.

The tiny model is random-init: these tests check the reading machinery on hand-made contexts, never what a real
CLIP's prompts mean.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from PIL import Image

import clipiqa
from clipiqa.cli import main
from clipiqa.data import apply_distortion, demo_references
from clipiqa.explain.prompt_words import PromptWords, format_prompt_words, nearest_tokens, phrase_similarity, \
    prompt_words


@pytest.fixture()
def model():
    return clipiqa.load_model("tiny", device="cpu")


def _token_id(model, word: str) -> int:
    ids = model.tokenizer([word])[0].tolist()
    return ids[1]  # [SOS] word [EOS] ...


def test_a_context_vector_set_to_a_word_reads_as_that_word(model):
    words = ["sharp", "blurry", "noisy", "bright"]
    with torch.no_grad():
        for i, word in enumerate(words):  # each vector a scaled copy of a word's embedding: cosine is exactly 1
            model.text_prompt.ctx[i] = 3.0 * model.clip.token_embedding.weight[_token_id(model, word)]
    nearest = nearest_tokens(model, k=3)
    assert [row[0][0] for row in nearest] == words
    assert all(row[0][1] == pytest.approx(1.0, abs=1e-5) and len(row) == 3 for row in nearest)
    assert all(row[0][1] >= row[1][1] >= row[2][1] for row in nearest)  # best first


def test_phrase_similarity_compares_the_prompts_in_use(model):
    model.enable_adapters(False)  # the prompts in use are then the hand-written antonyms
    sims = phrase_similarity(model, ["Good photo.", "Bad photo."])
    assert sims["Good photo."][0] == pytest.approx(1.0, abs=1e-5)
    assert sims["Bad photo."][1] == pytest.approx(1.0, abs=1e-5)
    model.enable_adapters(True)  # the learned context: no longer identical to either phrase
    learned = phrase_similarity(model, ["Good photo.", "Bad photo."])
    assert learned["Good photo."][0] < 0.999
    with pytest.raises(ValueError, match="phrase"):
        phrase_similarity(model, [])


def test_prompt_words_round_trip_and_text(model):
    words = prompt_words(model, k=2)
    again = PromptWords.from_dict(json.loads(json.dumps(words.to_dict())))
    assert [[t for t, _ in row] for row in again.nearest] == [[t for t, _ in row] for row in words.nearest]
    assert again.phrases.keys() == words.phrases.keys()
    assert "random init" in words.caveat  # a random-init model says so wherever its words are shown
    text = format_prompt_words(words, again)
    assert text.splitlines()[0].startswith("[random init") and "context vector 4" in text and "->" in text


@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    rows = []
    for name, ref in demo_references(size=64, names=["astronaut", "chelsea", "coffee"]).items():
        for level in (0, 2, 4):
            img = ref if level == 0 else apply_distortion(ref, "gaussian_blur", level, rng=0)
            Image.fromarray(img).save(folder / f"{name}_{level}.png")
            rows.append({"path": f"{name}_{level}.png", "score": 5 - level})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def test_adapted_card_records_before_and_after_and_the_cli_shows_them(labels_csv, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    rc = main(["adapt", "--labels", str(labels_csv), "--out", str(ckpt), "--trainable", "text", "--model", "tiny",
               "--device", "cpu", "--epochs", "3", "--augment", "none", "--batch-size", "9", "--lr", "0.5"])
    assert rc == 0, capsys.readouterr().err
    card = json.loads((ckpt / "card.json").read_text())
    before, after = (PromptWords.from_dict(card["prompt_words"][k]) for k in ("before", "after"))
    assert before.phrases.keys() == after.phrases.keys()
    assert before.phrases != after.phrases  # the context moved, so its reading did too
    capsys.readouterr()
    out = tmp_path / "words"
    assert main(["explain", "--prompts", str(ckpt), "--prompt-words", "--device", "cpu", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "context vector 1" in shown and "before -> after" in shown
    written = json.loads((out / "prompt_words.json").read_text())
    assert written["before"] == card["prompt_words"]["before"]
    # the live reading of the loaded checkpoint equals the one recorded at saving
    assert [[t for t, _ in row] for row in written["after"]["nearest"]] == \
        [[t for t, _ in row] for row in card["prompt_words"]["after"]["nearest"]]


def test_cli_prompt_words_needs_a_checkpoint_and_explain_needs_paths(tmp_path, capsys):
    assert main(["explain", "--prompt-words", "--model", "tiny", "--device", "cpu"]) == 1
    assert "--prompts" in capsys.readouterr().err
    assert main(["explain", "--model", "tiny", "--device", "cpu"]) == 1
    assert "--out" in capsys.readouterr().err
