"""The compare panel and `clipiqa bench` run the same protocol, so identical arguments give identical
numbers: the same splits and few-shot draws, and per split and arm the same SRCC, PLCC (raw and logistic), KRCC,
RMSE and bootstrap CI, after bench's CSV round trip."""
from __future__ import annotations

import pandas as pd
import pytest

from clipiqa.cli import main
from clipiqa.commands.bench import load_bench_dataset
from clipiqa.widgets import ComparePanel

SHOTS, SPLITS, EPOCHS = 8, 2, 1
COMPARED = ("split_hash", "labelled_hash", "n_train", "n_test", "srcc", "krcc", "plcc", "plcc_logistic", "rmse",
            "rmse_logistic", "srcc_ci_lo", "srcc_ci_hi")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """One bench run (through the CLI, results read back from --out) and one panel run, same arguments."""
    tmp = tmp_path_factory.mktemp("parity")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPIQA_CACHE", str(tmp / "cache"))
        code = main(["bench", "--dataset", "demo", "--demo-types", "gaussian_blur", "--model", "tiny",
                     "--device", "cpu", "--shots", str(SHOTS), "--splits", str(SPLITS), "--epochs", str(EPOCHS),
                     "--augment", "none", "--methods", "zero-shot,ft,ft+qgr", "--out", str(tmp / "bench")])
        assert code == 0
        table = load_bench_dataset("demo", "gaussian_blur")  # the table bench read
    bench = pd.read_csv(tmp / "bench" / "per_split.csv")
    bench_summary = pd.read_csv(tmp / "bench" / "summary.csv")
    panel = ComparePanel(table, shots=SHOTS, n_splits=SPLITS, epochs=EPOCHS, trainable="last-blocks", model_name="tiny",
                         device="cpu", n_boot=1000, augment="none")  # n_boot: bench's (only the CI depends on it)
    return bench, bench_summary, panel.compare()


def test_compare_panel_and_bench_give_identical_numbers_per_split(both):
    bench, _, result = both
    assert result.methods == {"zero-shot": "zero-shot", "QGR off": "ft", "QGR on": "ft+qgr"}
    assert (bench["status"] == "ok").all() and (result.per_split["status"] == "ok").all()
    panel = result.per_split.set_index(["split", "method"]).sort_index()
    bench = bench.set_index(["split", "method"]).sort_index()
    assert list(panel.index) == list(bench.index) and len(panel) == SPLITS * 3
    for column in COMPARED:
        assert panel[column].tolist() == bench[column].tolist(), column  # exact, not approximate


def test_compare_panel_summary_is_the_bench_summary(both):
    _, bench_summary, result = both
    bench_summary = bench_summary.set_index("method")
    for row in result.summary.to_dict("records"):
        expected = bench_summary.loc[row["method"]]
        for column in ("srcc_mean", "srcc_median", "srcc_std", "plcc_mean", "chance_band"):
            assert row[column] == expected[column], (row["arm"], column)
        assert row["splits"] == expected["n_ok"] == SPLITS
