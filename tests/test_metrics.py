import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from clipiqa.metrics import (
    LogisticFitWarning,
    bootstrap_ci,
    chance_band,
    correlations,
    fit_logistic4,
    krcc,
    logistic4,
    plcc,
    rmse,
    srcc,
    summarize,
)


@pytest.fixture
def tied():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = 0.6 * x + rng.normal(size=60)
    return np.round(x, 1), np.round(y, 0)  # many ties, especially in y


def test_rank_and_linear_correlations_match_scipy(tied):
    x, y = tied
    assert len(np.unique(y)) < len(y) / 3  # ties really present
    assert srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert srcc(-x, y) == pytest.approx(-srcc(x, y))


def test_accepts_lists_tensors_and_2d():
    x, y = [1, 2, 3, 4, 5], [2.0, 1.0, 4.0, 3.0, 5.0]
    ref = srcc(x, y)
    assert srcc(torch.tensor(x, dtype=torch.bfloat16), torch.tensor(y)) == pytest.approx(ref)
    assert srcc(np.array(x)[:, None], np.array(y)) == pytest.approx(ref)
    assert srcc(torch.tensor(x, dtype=torch.float32, requires_grad=True), y) == pytest.approx(ref)


def test_nan_and_length_errors():
    with pytest.raises(ValueError, match=r"pred contains 1 NaN/infinite value\(s\) \(at index 2\)"):
        srcc([1, 2, float("nan"), 4], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="target contains"):
        correlations([1, 2, 3, 4], [1, 2, 3, float("inf")])
    with pytest.raises(ValueError, match="same number"):
        plcc([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="fit="):
        plcc([1, 2, 3], [1, 2, 3], fit="cubic")


def test_small_and_constant_inputs_give_nan():
    for f in (srcc, krcc, plcc):
        assert math.isnan(f([1, 2], [2, 1]))
        assert math.isnan(f([1, 1, 1, 1], [1, 2, 3, 4]))
        assert math.isnan(f([1, 2, 3, 4], [5, 5, 5, 5]))
    assert math.isnan(plcc([1, 1, 1, 1, 1], [1, 2, 3, 4, 5], fit="logistic4"))
    assert rmse([1, 2], [1, 4]) == pytest.approx(math.sqrt(2.0))
    assert rmse([0.5] * 4, [0, 1, 0, 1]) == pytest.approx(0.5)
    assert math.isnan(rmse([0.5] * 4, [0, 1, 0, 1], fit="logistic4"))
    c = correlations([1, 1, 1], [1, 2, 3])
    assert c["n"] == 3 and math.isnan(c["srcc"]) and math.isnan(c["plcc_logistic"])


def test_logistic_fit_raises_plcc_on_monotone_nonlinear():
    rng = np.random.default_rng(1)
    x = np.linspace(-2, 2, 80)
    y = 1 / (1 + np.exp(-3 * x)) + rng.normal(scale=0.02, size=x.size)
    raw = plcc(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LogisticFitWarning)
        fitted = plcc(x, y, fit="logistic4")
        params, mapped = fit_logistic4(x, y)
    assert fitted > raw + 0.03 and fitted > 0.99
    assert params is not None and params[2] == pytest.approx(0.0, abs=0.1)
    assert abs(params[3]) == pytest.approx(1 / 3, rel=0.2)
    assert np.allclose(mapped, logistic4(x, *params))
    assert rmse(x, y, fit="logistic4") < 0.03 < rmse(x, y)
    # a monotone transform of pred does not change the rank metrics
    assert srcc(np.exp(x), y) == pytest.approx(srcc(x, y))


def test_logistic_fit_fallback_warns():
    with pytest.warns(LogisticFitWarning, match="at least 5"):
        v = plcc([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], fit="logistic4")
    assert v == pytest.approx(plcc([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]))


def test_logistic4_is_overflow_free():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = logistic4(np.array([-1e6, 0.0, 1e6]), 1.0, 0.0, 0.0, 1e-30)
    assert np.allclose(y, [0.0, 0.5, 1.0])


def test_correlations_keys_and_values(tied):
    x, y = tied
    c = correlations(x, y)
    assert list(c) == ["srcc", "krcc", "plcc", "plcc_logistic", "rmse", "rmse_logistic", "n"]
    assert c["n"] == 60
    assert c["srcc"] == pytest.approx(srcc(x, y)) and c["plcc"] == pytest.approx(plcc(x, y))
    assert c["plcc_logistic"] == pytest.approx(plcc(x, y, fit="logistic4"))
    assert c["rmse"] == pytest.approx(rmse(x, y))
    assert c["rmse_logistic"] == pytest.approx(rmse(x, y, fit="logistic4"))
    assert c["plcc_logistic"] >= c["plcc"] - 1e-9
    assert c["rmse_logistic"] <= c["rmse"]


def test_chance_band_numbers():
    assert chance_band(90) == pytest.approx(0.208, abs=5e-4)
    assert chance_band(90) == pytest.approx(1.959964 / math.sqrt(89), rel=1e-6)
    assert chance_band(101, alpha=0.01) == pytest.approx(2.575829 / 10.0, rel=1e-6)
    assert chance_band(2) == pytest.approx(1.959964, rel=1e-6)
    with pytest.raises(ValueError):
        chance_band(1)
    with pytest.raises(ValueError):
        chance_band(10, alpha=1.5)


def test_chance_band_covers_random_predictors():
    rng = np.random.default_rng(0)
    n = 90
    y = rng.normal(size=n)
    rs = np.array([srcc(rng.normal(size=n), y) for _ in range(400)])
    inside = np.mean(np.abs(rs) <= chance_band(n))
    assert 0.91 < inside < 0.985


def test_bootstrap_deterministic_and_contains_estimate():
    rng = np.random.default_rng(2)
    x = rng.normal(size=80)
    y = 0.7 * x + 0.5 * rng.normal(size=80)
    for metric, point in (("srcc", srcc(x, y)), ("plcc", plcc(x, y)), ("krcc", krcc(x, y)),
                          ("rmse", rmse(x, y))):
        n_boot = 1000 if metric in ("srcc", "plcc", "rmse") else 200
        lo, hi = bootstrap_ci(x, y, metric=metric, n_boot=n_boot, seed=7)
        assert (lo, hi) == bootstrap_ci(x, y, metric=metric, n_boot=n_boot, seed=7)
        assert lo < point < hi
    lo, hi = bootstrap_ci(x, y, n_boot=1000, seed=7)
    assert 0.0 < hi - lo < 0.4
    assert bootstrap_ci(x, y, n_boot=1000, seed=8) != (lo, hi)
    # the wider the confidence level, the wider the interval
    lo90, hi90 = bootstrap_ci(x, y, n_boot=1000, alpha=0.1, seed=7)
    assert lo <= lo90 and hi90 <= hi


def test_bootstrap_vectorised_matches_loop():
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=30), 1)
    y = np.round(x + rng.normal(size=30), 0)
    vec = bootstrap_ci(x, y, metric="srcc", n_boot=300, seed=1)
    loop = bootstrap_ci(x, y, metric=lambda p, t: srcc(p, t), n_boot=300, seed=1)
    assert vec == pytest.approx(loop, abs=1e-12)


def test_bootstrap_logistic_and_errors():
    x = np.linspace(-2, 2, 40)
    y = 1 / (1 + np.exp(-3 * x)) + np.random.default_rng(0).normal(scale=0.05, size=40)
    lo, hi = bootstrap_ci(x, y, metric="plcc_logistic", n_boot=50)
    assert 0.9 < lo <= hi <= 1.0
    assert all(math.isnan(v) for v in bootstrap_ci([1, 2], [2, 1]))
    with pytest.raises(ValueError, match="metric="):
        bootstrap_ci(x, y, metric="mae")
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(x, y, n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(x, y, alpha=0.0)


def test_summarize():
    s = summarize([0.5, 0.7, 0.9, 0.6])
    assert s["mean"] == pytest.approx(0.675)
    assert s["median"] == pytest.approx(0.65)
    assert s["std"] == pytest.approx(np.std([0.5, 0.7, 0.9, 0.6], ddof=1))
    assert s["n"] == 4
    assert summarize([0.3]) == {"mean": 0.3, "median": 0.3, "std": 0.0, "n": 1}
    assert summarize([0.3, float("nan"), 0.5])["n"] == 2
    assert math.isnan(summarize([0.3, float("nan")], skipna=False)["mean"])
    empty = summarize([])
    assert empty["n"] == 0 and math.isnan(empty["mean"])
    assert summarize(torch.tensor([1.0, 3.0]))["mean"] == pytest.approx(2.0)
