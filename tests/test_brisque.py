"""BRISQUE features: the GGD/AGGD moment fits recover the parameters of samples drawn from known laws, and the
36 features respond to blur and noise the way the paper describes."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats
from scipy.special import gamma

from clipiqa.brisque import BRISQUE_FEATURES, brisque_features, fit_aggd, fit_ggd, ggd_ratio, mscn


def _aggd_sample(shape: float, left_scale: float, right_scale: float, n: int, rng) -> np.ndarray:
    """Draw from the AGGD: the left side with probability bl / (bl + br), each side a half generalized Gaussian."""
    left = rng.random(n) < left_scale / (left_scale + right_scale)
    magnitude = np.abs(stats.gennorm.rvs(shape, size=n, random_state=rng))
    return np.where(left, -left_scale * magnitude, right_scale * magnitude)


def test_ggd_ratio_known_values():
    assert ggd_ratio(2.0) == pytest.approx(2 / np.pi)  # the Gaussian: E|x|^2 / E x^2 = 2 / pi
    assert ggd_ratio(1.0) == pytest.approx(0.5)  # Laplace
    assert np.all(np.diff(ggd_ratio(np.linspace(0.1, 10, 50))) > 0)


@pytest.mark.parametrize("shape", [0.6, 1.0, 2.0, 3.5])
def test_fit_ggd_recovers_shape_and_variance(shape):
    rng = np.random.default_rng(1)
    scale = 0.7
    x = stats.gennorm.rvs(shape, scale=scale, size=200_000, random_state=rng)
    a, var = fit_ggd(x)
    expected_var = scale ** 2 * gamma(3 / shape) / gamma(1 / shape)
    assert a == pytest.approx(shape, rel=0.05)
    assert var == pytest.approx(expected_var, rel=0.03)


@pytest.mark.parametrize("shape,bl,br", [(0.8, 0.5, 1.0), (1.5, 1.0, 1.0), (2.5, 1.2, 0.6)])
def test_fit_aggd_recovers_shape_mean_and_side_variances(shape, bl, br):
    rng = np.random.default_rng(2)
    x = _aggd_sample(shape, bl, br, 200_000, rng)
    a, mean, lvar, rvar = fit_aggd(x)
    side_var = gamma(3 / shape) / gamma(1 / shape)  # E m^2 of a unit-scale half GGD
    assert a == pytest.approx(shape, rel=0.06)
    assert lvar == pytest.approx(bl ** 2 * side_var, rel=0.04)
    assert rvar == pytest.approx(br ** 2 * side_var, rel=0.04)
    expected_mean = (br - bl) * gamma(2 / shape) / gamma(1 / shape)
    assert mean == pytest.approx(expected_mean, abs=0.02)


def test_degenerate_samples_are_nan_not_errors():
    assert np.isnan(fit_ggd(np.zeros(10))[0])
    a, mean, lvar, rvar = fit_aggd(np.array([1.0, 2.0, 3.0]))  # no negative side
    assert np.isnan(a) and np.isnan(mean) and lvar == 0.0 and rvar > 0


def _texture(rng, size=96) -> np.ndarray:
    """A photograph-like texture: smoothed noise with a 1/f-ish spectrum, on 0-255."""
    x = sum(ndimage.gaussian_filter(rng.normal(size=(size, size)), s) * s for s in (1, 2, 4, 8))
    return np.clip(128 + 40 * x / x.std(), 0, 255)


def test_mscn_of_a_natural_like_texture_is_near_unit_gaussian_scale():
    m = mscn(_texture(np.random.default_rng(3)))
    assert abs(m.mean()) < 0.1 and 0.2 < m.std() < 1.5


def test_36_features_and_their_response_to_blur_and_noise():
    rng = np.random.default_rng(4)
    image = _texture(rng)
    f = brisque_features(image.astype(np.uint8))
    assert f.shape == (36,) == (len(BRISQUE_FEATURES),) and np.all(np.isfinite(f))
    shape = BRISQUE_FEATURES.index("s1_mscn_shape")
    blurred = brisque_features(ndimage.gaussian_filter(image, 2.0))
    noisy = brisque_features(np.clip(image + rng.normal(0, 30, image.shape), 0, 255))
    assert blurred[shape] < f[shape] < noisy[shape]  # blur: peakier MSCN histogram; noise: flatter (more Gaussian)
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.uint8)
    np.testing.assert_allclose(brisque_features(rgb), brisque_features(image.astype(np.uint8)), rtol=1e-6)
    with pytest.raises(ValueError, match="at least 8x8"):
        brisque_features(np.zeros((4, 20)))
