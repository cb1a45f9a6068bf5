"""The pilot's HTML report: one self-contained file with every section, toy/random labels on top."""
from __future__ import annotations

import re

import pandas as pd

from clipiqa.cli import main
from clipiqa.metrics import chance_band
from clipiqa.pilot import fit_gate
from clipiqa.session import Session


def test_report_is_self_contained_and_has_every_section(tmp_path, demo_table, capsys):
    session = Session(tmp_path / "s", images=demo_table, model_name="tiny", device="cpu")
    for rater in ("ann", "bob"):
        session.rater = rater
        for row in demo_table.head(12).itertuples(index=False):
            session.label(row.path, 5 - min(int(row.level), 4))
    labels = session.labelled_table()
    scores = pd.DataFrame({"path": labels["path"], "logit_margin": labels["mos"] + 0.1 * pd.Series(range(12)),
                           "status": "ok"})
    gate = fit_gate(labels, scores, model={"model": "tiny"}, n_boot=20)
    gate.save(tmp_path / "gate.json")
    per_split = pd.DataFrame([{"method": "ft", "status": "ok", "split": s, "n_train": n, "n_test": 30,
                               "n_pool": 120, "srcc": 0.3 + n / 400, "srcc_ci_lo": 0.1, "srcc_ci_hi": 0.7,
                               "chance_band": chance_band(30)} for n in (20, 60) for s in range(3)])
    per_split.to_csv(tmp_path / "per_split.csv", index=False)
    out = tmp_path / "report.html"
    assert main(["report", str(session.folder), "--out", str(out), "--gate", str(tmp_path / "gate.json"),
                 "--feasibility", str(tmp_path / "per_split.csv")]) == 0, capsys.readouterr().err
    text = out.read_text()
    for heading in ("Labels", "Feasibility", "Site threshold", "Costs", "Model versions", "Line drift"):
        assert f"<h2>{heading}" in text
    assert "random-init weights: scores are meaningless" in text.split("<h2>")[0]  # the caveat comes first
    assert "raters agree at SRCC" in text and "With 60 labels, ft reaches SRCC" in text
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 2  # curve and ROC, embedded
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing to fetch: opens anywhere
