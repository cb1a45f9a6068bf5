"""The site threshold on the margin: hand-made cases whose right answer is known."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from clipiqa.pilot import Gate, GateMismatchError, describe_gate, fit_gate
from clipiqa.pilot.gate import best_threshold, roc_curve

MODEL = {"model": "lesson", "fingerprint": "abc", "checkpoint_sha256": "f00d"}


def tables(mos, margins, status=None):
    paths = [f"img{i}.png" for i in range(len(mos))]
    scores = pd.DataFrame({"path": paths, "logit_margin": margins, "status": status or ["ok"] * len(mos)})
    return pd.DataFrame({"path": paths, "mos": mos}), scores


def test_separable_labels_give_a_threshold_between_the_classes_and_no_errors():
    labels, scores = tables([1, 2, 4, 5], [-2.0, -1.0, 1.0, 2.0])
    gate = fit_gate(labels, scores, pass_at=3, model=MODEL, n_boot=50)
    assert gate.threshold == pytest.approx(0.0)
    assert gate.auc == 1.0 and gate.false_accept_rate == 0 and gate.false_reject_rate == 0
    assert gate.confusion == {"true_accept": 2, "false_accept": 0, "true_reject": 2, "false_reject": 0}
    assert gate.expected_cost_per_1000 == 0
    assert "only 2 acceptable and 2 unacceptable" in gate.warning  # too few to plan with, and said


def test_costs_move_the_threshold_the_right_way():
    margins, acceptable = np.array([0.0, 1.0, 2.0, 3.0]), np.array([False, True, False, True])
    # a false accept costing 10: reject the bad image at 2 and lose the good one at 1
    assert best_threshold(margins, acceptable, cost_fa=10, cost_fr=1) == pytest.approx(2.5)
    # a false reject costing 10: keep the good image at 1 and let the bad one at 2 pass
    assert best_threshold(margins, acceptable, cost_fa=1, cost_fr=10) == pytest.approx(0.5)


def test_auc_counts_ordered_pairs_and_ties_half():
    _, auc = roc_curve(np.array([1.0, 3.0, 0.0, 2.0]), np.array([True, True, False, False]))
    assert auc == pytest.approx(0.75)  # (1>0) (3>0) (3>2) of 4 pairs
    _, tied = roc_curve(np.array([1.0, 1.0]), np.array([True, False]))
    assert tied == pytest.approx(0.5)
    points, _ = roc_curve(np.array([1.0, 3.0, 0.0, 2.0]), np.array([True, True, False, False]))
    assert points[0][1:] == (0.0, 0.0) and points[-1][1:] == (1.0, 1.0)  # reject all ... pass all


def test_rows_that_failed_to_score_never_count_and_never_get_a_decision():
    labels, scores = tables([1, 2, 4, 5, 5], [-2.0, -1.0, 1.0, 2.0, float("nan")],
                            status=["ok", "ok", "ok", "error", "error"])
    gate = fit_gate(labels, scores, model=MODEL, n_boot=20)
    assert gate.n_labelled == 3
    assert gate.decide([5.0, -5.0, float("nan"), None, "x"]) == ["pass", "reject", None, None, None]


def test_bootstrap_intervals_bracket_the_rates():
    rng = np.random.default_rng(0)
    mos = rng.integers(1, 6, 200)
    margins = mos + rng.normal(0, 1.2, 200)  # noisy but informative
    gate = fit_gate(*tables(mos.tolist(), margins.tolist()), model=MODEL, n_boot=200)
    assert 0.8 < gate.auc < 1.0 and gate.warning == ""
    for rate, (lo, hi) in ((gate.false_accept_rate, gate.false_accept_ci),
                           (gate.false_reject_rate, gate.false_reject_ci)):
        assert 0 <= lo <= hi <= 1 and hi - lo > 0.01 and lo - 0.05 <= rate <= hi + 0.05


def test_a_gate_refuses_another_model_and_round_trips(tmp_path):
    gate = fit_gate(*tables([1, 2, 4, 5], [-2.0, -1.0, 1.0, 2.0]), model=MODEL, n_boot=20)
    gate.save(tmp_path / "gate.json")
    again = Gate.load(tmp_path / "gate.json")
    assert again == gate
    again.check_model(dict(MODEL))
    with pytest.raises(GateMismatchError, match="checkpoint_sha256"):
        again.check_model({**MODEL, "checkpoint_sha256": "beef"}, tmp_path / "gate.json")
    assert "threshold" in describe_gate(gate) and "WARNING" in describe_gate(gate)


@pytest.mark.parametrize("kw, message", [
    (dict(cost_false_accept=-1), "cost_false_accept"),
    (dict(cost_false_accept=0, cost_false_reject=0), "positive"),
    (dict(pass_at=6), "acceptable"),
])
def test_fit_errors_name_what_to_change(kw, message):
    with pytest.raises(ValueError, match=message):
        fit_gate(*tables([1, 2, 4, 5], [-2.0, -1.0, 1.0, 2.0]), n_boot=5, **kw)
    assert math.isnan(roc_curve(np.array([1.0]), np.array([True]))[1])


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_fits_shows_and_refuses(tmp_path, capsys):
    import json

    import clipiqa
    from clipiqa.cli import main
    from clipiqa.pilot import model_identity
    folder = tmp_path / "imgs"
    folder.mkdir()
    mos = [1, 2, 2, 3, 4, 5, 5, 1]
    margins = [-2.0, -1.5, -0.5, 0.2, 1.0, 2.0, 2.5, 0.1]
    pd.DataFrame({"path": [f"i{k}.png" for k in range(8)], "mos": mos}).to_csv(folder / "labels.csv", index=False)
    scores = tmp_path / "scores.csv"  # absolute paths, as clipiqa score writes for an absolute folder
    pd.DataFrame({"path": [str(folder / f"i{k}.png") for k in range(8)], "logit_margin": margins,
                  "score": 0.5, "status": "ok", "error": ""}).to_csv(scores, index=False)
    out = tmp_path / "gate.json"
    rc = main(["gate", "fit", "--labels", str(folder / "labels.csv"), "--scores", str(scores), "--model", "tiny",
               "--device", "cpu", "--pass-at", "3", "--cost-false-accept", "5", "--bootstrap", "50",
               "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "threshold" in captured.out and "WARNING" in captured.out  # 4 + 4 labels: too few, and said
    assert "random init" in captured.err
    saved = json.loads(out.read_text())
    assert saved["n_labelled"] == 8 and saved["cost_false_accept"] == 5
    assert saved["model"] == model_identity(clipiqa.load_model("tiny", device="cpu"))
    assert main(["gate", "show", str(out)]) == 0 and "false accepts" in capsys.readouterr().out
    assert main(["gate", "fit", "--labels", str(folder / "labels.csv"), "--scores", str(scores),
                 "--out", str(out)]) == 1
    assert "--prompts" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    pd.DataFrame({"path": ["elsewhere.png"], "logit_margin": [0.0], "status": ["ok"]}).to_csv(other, index=False)
    assert main(["gate", "fit", "--labels", str(folder / "labels.csv"), "--scores", str(other), "--model", "tiny",
                 "--out", str(tmp_path / "g2.json")]) == 1
    assert "no image of" in capsys.readouterr().err and not (tmp_path / "g2.json").exists()


def test_score_with_a_gate_decides_ok_rows_only_and_refuses_another_model(tmp_path, capsys):
    import clipiqa
    from PIL import Image
    from clipiqa.cli import main
    from clipiqa.pilot import model_identity
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"i{k}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    labels, scores = tables([1, 2, 4, 5], [-2.0, -1.0, 1.0, 2.0])
    gate = fit_gate(labels, scores, model=model_identity(clipiqa.load_model("tiny", device="cpu")), n_boot=10)
    gate.save(tmp_path / "gate.json")
    out = tmp_path / "scores.csv"
    rc = main(["score", str(folder), "--model", "tiny", "--device", "cpu", "--gate", str(tmp_path / "gate.json"),
               "--out", str(out)])
    assert rc == 2, capsys.readouterr().err  # the broken file
    table = pd.read_csv(out, keep_default_na=False)
    ok = table["status"] == "ok"
    assert set(table.loc[ok, "decision"]) <= {"pass", "reject"} and ok.sum() == 4
    assert list(table.loc[~ok, "decision"]) == [""]  # never a decision for a row that failed
    expected = ["pass" if float(m) >= gate.threshold else "reject" for m in table.loc[ok, "logit_margin"]]
    assert list(table.loc[ok, "decision"]) == expected
    other = Gate.from_dict({**gate.to_dict(), "model": {**gate.model, "checkpoint_sha256": "beef"}})
    other.save(tmp_path / "other.json")
    out2 = tmp_path / "scores2.csv"
    assert main(["score", str(folder), "--model", "tiny", "--device", "cpu", "--gate", str(tmp_path / "other.json"),
                 "--out", str(out2)]) == 1
    assert "another model version" in capsys.readouterr().err and not out2.exists()
