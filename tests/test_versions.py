"""Versions, audit trail and the re-labelling cycle on a session labelled by a stand-in (tiny random-init model:
the machinery only; which version wins says nothing about quality)."""
from __future__ import annotations

import pytest

from clipiqa.finetune import AdaptConfig
from clipiqa.pilot.versions import VersionLog, label_history, not_worse, promote, relabel_cycle, rollback
from clipiqa.session import Session

FAST = AdaptConfig(trainable="text", epochs=1, augment="none", batch_size=64, lr=0.1)


@pytest.fixture
def labelled(tmp_path, demo_table):
    session = Session(tmp_path / "line", images=demo_table, model_name="tiny", device="cpu")
    for row in demo_table.itertuples(index=False):
        session.label(row.path, 5 - min(int(row.level), 4))  # stand-in: clean = 5 ... level >= 4 = 1
    return session


def test_not_worse_is_the_promotion_rule():
    assert not_worse({"srcc": 0.5}, {"srcc": 0.5})[0]
    verdict, why = not_worse({"srcc": 0.4}, {"srcc": 0.5})
    assert not verdict and "0.400 < active 0.500" in why
    assert not not_worse({"srcc": 0.6, "false_accept_rate": 0.3}, {"srcc": 0.5, "false_accept_rate": 0.1})[0]
    assert not not_worse({"srcc": float("nan")}, {"srcc": 0.5})[0]


def test_cycle_keeps_a_fixed_audit_set_records_lineage_and_rolls_back(labelled):
    first = relabel_cycle(labelled, FAST, override="first version of the pilot")
    assert first["decision"] in ("promoted", "promoted by override")
    assert labelled.active_checkpoint == first["candidate"]
    n = len(labelled.labelled_table())
    assert first["n_train"] + first["n_audit"] == n and first["n_audit"] >= 6
    log = VersionLog(labelled.database_path)
    audit = log.audit_paths()
    second = relabel_cycle(labelled, FAST)
    assert log.audit_paths() == audit  # the audit set never changes between cycles
    versions = log.table().set_index("name")
    assert versions.loc[second["candidate"], "parent"] == first["candidate"]
    assert versions.loc[second["candidate"], "n_labels"] == first["n_train"]
    assert len(versions.loc[second["candidate"], "sha256"]) == 64
    events = log.events()
    assert list(events["action"][:3]) == ["audit-set", "registered", "promoted"]
    if second["decision"] == "kept the active version":
        assert labelled.active_checkpoint == first["candidate"]
        assert versions.loc[second["candidate"], "status"] == "rejected"
        promote(labelled, log, second["candidate"], "manual promotion for the test")
    assert labelled.active_checkpoint == second["candidate"]
    assert rollback(labelled, log) == first["candidate"]
    assert labelled.active_checkpoint == first["candidate"]
    assert Session.open(labelled.folder).active_checkpoint == first["candidate"]  # on disk, not only in memory
    assert log.events()["action"].iloc[-1] == "rolled-back-to"
    with pytest.raises(ValueError, match="no earlier version"):
        fresh = VersionLog(labelled.database_path)
        fresh.con.execute("DELETE FROM version_events")
        rollback(labelled, fresh)


def test_too_few_labels_are_refused_and_history_exports(tmp_path, demo_table):
    session = Session(tmp_path / "few", images=demo_table, model_name="tiny", device="cpu")
    for row in demo_table.head(5).itertuples(index=False):
        session.label(row.path, 3)
    session.undo()
    with pytest.raises(ValueError, match="label more images"):
        relabel_cycle(session, FAST)
    history = label_history(session)
    assert len(history) == 5  # the undone rating is in the audit trail too


def test_cli_versions_promote_rollback(labelled, tmp_path, capsys):
    from clipiqa.cli import main
    folder = str(labelled.folder)
    assert main(["cycle", folder, "--epochs", "1", "--trainable", "text", "--override", "pilot start"]) == 0
    first = labelled.checkpoints()["name"].iloc[-1]
    log = VersionLog(labelled.database_path)
    log.add("made-by-hand", status="rejected")
    (labelled.checkpoints_dir / "made-by-hand").mkdir()
    capsys.readouterr()
    assert main(["promote", folder, "made-by-hand"]) == 1
    assert "--override" in capsys.readouterr().err
    assert main(["promote", folder, "made-by-hand", "--override", "line 2 needs it"]) == 0
    assert main(["rollback", folder]) == 0 and capsys.readouterr().out.strip().endswith(first)
    out = tmp_path / "history.csv"
    assert main(["versions", folder, "--events", "--label-history", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "override: line 2 needs it" in shown and "rolled-back-to" in shown and f"active: {first}" in shown
    assert out.read_text().count("\n") == len(labelled.ratings(include_undone=True)) + 1
