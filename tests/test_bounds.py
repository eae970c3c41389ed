"""Tests for couae_jax.bounds: the bound, its inverse, K and xi."""

from __future__ import annotations

import functools
import math

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st
from scipy import optimize

from couae_jax import bounds, kernels, mmd

SETTINGS = dict(max_examples=30, deadline=None, derandomize=True)
# (n, delta, xi, K, lam): the Grid's sizes, extremes of the split both ways,
# and odd N (floor(N/2) enters the MMD term).
CASES = [
    (500, 0.05, 1.0, 100.0, 10.0),
    (500, 0.05, 100.0, 1e4, 10.0),
    (501, 0.01, 3.0, 1.0, 1.0),
    (2, 0.5, 1.0, 1.0, 1.0),
    (10**6, 1e-6, 1e-8, 1e8, 1.0),     # nearly all of delta to the MMD
    (10**6, 1e-6, 1e8, 1e-8, 1.0),     # nearly all of delta to REC
    (64, 0.9, 0.5, 2.0, 1e-3),
]


def _hand_bound(n, t, s, xi, K):
  return (2.0 * math.exp(-2.0 * n * t * t / (xi * xi))
          + 6.0 * math.exp(-2.0 * (n // 2) * s * s / (9.0 * K * K)))


# ----------------------------------------------------------------------------
# The bound.


def test_bound_matches_the_formula_by_hand():
  # 2 exp(-2 * 500 * 0.01) + 6 exp(-2 * 250 * 1e-4 / 9), written out.
  assert bounds.generalization_bound(500, 0.1, 0.01, 1.0, 1.0, 10.0) == \
      pytest.approx(2.0 * math.exp(-10.0) + 6.0 * math.exp(-0.05 / 9.0),
                    rel=1e-14)
  # Odd N: floor(501 / 2) = 250 in the MMD term, 501 in the REC term.
  assert bounds.generalization_bound(501, 0.05, 2.0, 0.5, 3.0, 1.0) == \
      pytest.approx(2.0 * math.exp(-2.0 * 501 * 0.0025 / 0.25)
                    + 6.0 * math.exp(-2.0 * 250 * 4.0 / 81.0), rel=1e-14)


@pytest.mark.parametrize("lam", [0.0, 1.0, 1e3])
def test_lam_is_validated_but_does_not_change_the_right_hand_side(lam):
  assert bounds.generalization_bound(100, 0.1, 0.2, 1.0, 1.0, lam) == \
      bounds.generalization_bound(100, 0.1, 0.2, 1.0, 1.0, 1.0)
  assert bounds.generalization_bound(100, 0.1, 0.2, 1.0, 1.0, lam) == \
      pytest.approx(_hand_bound(100, 0.1, 0.2, 1.0, 1.0), rel=1e-14)


def test_bound_broadcasts_over_deviations():
  t = np.array([0.0, 0.1, 1.0])
  got = bounds.generalization_bound(50, t, 0.5, 1.0, 1.0, 1.0)
  assert got.shape == (3,)
  np.testing.assert_allclose(
      got, [_hand_bound(50, v, 0.5, 1.0, 1.0) for v in t], rtol=1e-14)
  # An infinite deviation removes its term.
  assert bounds.generalization_bound(50, math.inf, 0.5, 1.0, 1.0, 1.0) == \
      pytest.approx(6.0 * math.exp(-2.0 * 25 * 0.25 / 9.0), rel=1e-14)


def test_log_bound_stays_exact_where_the_bound_underflows():
  n, t, s, xi, K = 10**6, 1.0, 1.0, 1.0, 1.0
  assert bounds.generalization_bound(n, t, s, xi, K, 1.0) == 0.0
  # The MMD term dominates by e^-1.9e6; its log is exact.
  assert bounds.log_generalization_bound(n, t, s, xi, K, 1.0) == \
      pytest.approx(math.log(6.0) - 2.0 * (n // 2) / 9.0, rel=1e-15)
  # Where representable, it is the log of the bound.
  assert bounds.log_generalization_bound(300, 0.1, 0.4, 1.0, 1.0, 1.0) == \
      pytest.approx(math.log(_hand_bound(300, 0.1, 0.4, 1.0, 1.0)), rel=1e-13)


# ----------------------------------------------------------------------------
# The inverse.


@pytest.mark.parametrize("n, delta, xi, K, lam", CASES)
def test_deviation_achieves_the_confidence_exactly(n, delta, xi, K, lam):
  d = bounds.deviation_at_confidence(n, delta, xi, K, lam)
  assert d.total == pytest.approx(d.t + lam * d.s, rel=1e-15)
  assert d.delta_rec + d.delta_mmd == pytest.approx(delta, rel=1e-12)
  log_rhs = bounds.log_generalization_bound(n, d.t, d.s, xi, K, lam)
  assert log_rhs == pytest.approx(math.log(delta), abs=1e-10)
  # Each closed-form term meets its own share.
  assert 2.0 * math.exp(-2.0 * n * d.t**2 / xi**2) == pytest.approx(
      d.delta_rec, rel=1e-9)


@pytest.mark.parametrize("n, delta, xi, K, lam", CASES)
def test_no_smaller_total_achieves_the_confidence(n, delta, xi, K, lam):
  d = bounds.deviation_at_confidence(n, delta, xi, K, lam)
  smaller = d.total * (1.0 - 1e-6)

  def log_rhs_at_split(t):
    return bounds.log_generalization_bound(
        n, t, max(smaller - t, 0.0) / lam, xi, K, lam)

  # The best split of the smaller total, found by scipy's bounded Brent, from
  # both ends of the interval: the bound still exceeds delta.
  best = optimize.minimize_scalar(log_rhs_at_split, bounds=(0.0, smaller),
                                  method="bounded",
                                  options={"xatol": 1e-14 * smaller})
  assert best.fun > math.log(delta)
  assert log_rhs_at_split(d.t * (1.0 - 1e-6)) > math.log(delta)


@pytest.mark.parametrize("n, delta, xi, K, lam", CASES)
def test_split_is_optimal_on_a_fine_grid(n, delta, xi, K, lam):
  d = bounds.deviation_at_confidence(n, delta, xi, K, lam)
  log_alpha = -np.logaddexp(0.0, -np.linspace(-60.0, 60.0, 200_001))
  log_rest = np.log(-np.expm1(log_alpha))
  totals = (xi * np.sqrt((math.log(2.0 / delta) - log_alpha) / (2.0 * n))
            + lam * 3.0 * K * np.sqrt((math.log(6.0 / delta) - log_rest)
                                      / (2.0 * (n // 2))))
  assert d.total <= totals.min() * (1.0 + 1e-12)
  assert d.total == pytest.approx(totals.min(), rel=1e-6)


def test_lam_zero_gives_all_of_delta_to_the_reconstruction():
  d = bounds.deviation_at_confidence(500, 0.05, 2.0, 100.0, 0.0)
  assert d.s == math.inf and d.delta_mmd == 0.0 and d.total == d.t
  assert d.t == pytest.approx(2.0 * math.sqrt(math.log(2.0 / 0.05) / 1000.0),
                              rel=1e-14)
  assert bounds.generalization_bound(500, d.t, d.s, 2.0, 100.0, 0.0) == \
      pytest.approx(0.05, rel=1e-12)


@hypothesis.settings(**SETTINGS)
@hypothesis.given(n=st.integers(2, 10**7),
                  t=st.floats(0.0, 10.0), s=st.floats(0.0, 10.0),
                  xi=st.floats(1e-3, 1e3), K=st.floats(1e-3, 1e3),
                  lam=st.floats(0.0, 1e3),
                  delta=st.floats(1e-12, 0.999))
def test_more_samples_never_loosen_the_bound(n, t, s, xi, K, lam, delta):
  assert bounds.log_generalization_bound(n + 1, t, s, xi, K, lam) <= \
      bounds.log_generalization_bound(n, t, s, xi, K, lam)
  assert bounds.deviation_at_confidence(n + 1, delta, xi, K, lam).total <= \
      bounds.deviation_at_confidence(n, delta, xi, K, lam).total * (1 + 1e-14)


# ----------------------------------------------------------------------------
# Errors.


GOOD = dict(n=100, t=0.1, s=0.1, xi=1.0, K=1.0, lam=1.0)


@pytest.mark.parametrize("override, match", [
    (dict(n=1), "n must be an integer >= 2"),
    (dict(n=100.0), "n must be an integer"),
    (dict(n=True), "n must be an integer"),
    (dict(t=-0.1), "t must be >= 0"),
    (dict(s=float("nan")), "s must be >= 0"),
    (dict(s=np.array([0.1, -1.0])), "s must be >= 0"),
    (dict(xi=0.0), "xi must be finite and > 0"),
    (dict(xi=math.inf), "xi must be finite and > 0"),
    (dict(K=-1.0), "K must be finite and > 0"),
    (dict(lam=-1.0), "lam must be finite and >= 0"),
])
def test_bound_rejects_bad_input(override, match):
  for fn in (bounds.generalization_bound, bounds.log_generalization_bound):
    with pytest.raises(ValueError, match=match):
      fn(**GOOD | override)


@pytest.mark.parametrize("override, match", [
    (dict(n=0), "n must be an integer >= 2"),
    (dict(delta=0.0), "delta must be a probability in"),
    (dict(delta=1.0), "delta must be a probability in"),
    (dict(delta=-0.1), "delta must be a probability in"),
    (dict(xi=0.0), "xi must be"),
    (dict(K=math.nan), "K must be"),
    (dict(lam=-2.0), "lam must be"),
])
def test_deviation_rejects_bad_input(override, match):
  good = dict(n=100, delta=0.05, xi=1.0, K=1.0, lam=1.0)
  with pytest.raises(ValueError, match=match):
    bounds.deviation_at_confidence(**good | override)


# ----------------------------------------------------------------------------
# K of a kernel.


@pytest.mark.parametrize("kernel, h, expected", [
    (functools.partial(kernels.coulomb, eps=1e-2), 3, 100.0),
    (functools.partial(kernels.coulomb, eps=1e-4, scale=0.1), 64, 1e4),
    (kernels.coulomb, 5, 1.0 / kernels.DEFAULT_EPS),
    (functools.partial(kernels.gaussian, scale=0.5), 2, 1.0),
    (functools.partial(kernels.imq, scale=3.0), 8, 1.0),
    (kernels.multiscale(kernels.imq, scales=[1.0, 2.0, 4.0]), 8, 3.0),
    (kernels.multiscale(kernels.coulomb, scales=[1.0, 2.0], eps=0.1), 3,
     20.0),
])
def test_kernel_bound_is_the_width_of_the_range(kernel, h, expected):
  assert bounds.kernel_bound(kernel, h=h) == pytest.approx(expected, rel=1e-7)


def test_kernel_bound_on_a_region_of_given_diameter():
  eps, scale, diameter = 1e-2, 1.0, 10.0
  k_log = functools.partial(kernels.coulomb_log, eps=eps, scale=scale)
  expected = 0.5 * math.log((diameter**2 / scale**2 + eps) / eps)
  assert bounds.kernel_bound(k_log, h=2, diameter=diameter) == \
      pytest.approx(expected, rel=1e-6)
  k_coulomb = functools.partial(kernels.coulomb, eps=eps, scale=scale)
  assert bounds.kernel_bound(k_coulomb, h=3, diameter=diameter) == \
      pytest.approx(1.0 / eps - 1.0 / (diameter + eps), rel=1e-6)


def test_a_constant_shift_leaves_the_mmd_estimate_unchanged(np_rng):
  # Why K is the width of the kernel's range, not its supremum.
  x = jnp.asarray(np_rng.standard_normal((20, 2)), jnp.float32)
  y = jnp.asarray(np_rng.standard_normal((30, 2)) + 0.5, jnp.float32)
  gaussian = functools.partial(kernels.gaussian, scale=1.0)
  shifted = lambda a, b: gaussian(a, b) - 3.0  # noqa: E731
  assert float(mmd.mmd2(x, y, shifted)) == pytest.approx(
      float(mmd.mmd2(x, y, gaussian)), abs=1e-5)


def test_kernel_bound_rejects_bad_input():
  with pytest.raises(ValueError, match="unbounded.*diameter="):
    bounds.kernel_bound(kernels.coulomb_log, h=2)
  with pytest.raises(ValueError, match="diameter must be finite and > 0"):
    bounds.kernel_bound(functools.partial(kernels.gaussian, scale=1.0), h=2,
                        diameter=0.0)
  with pytest.raises(ValueError, match=r"h = x.shape\[-1\] >= 3"):
    bounds.kernel_bound(kernels.coulomb, h=2)
  with pytest.raises(ValueError, match="h must be a positive integer"):
    bounds.kernel_bound(kernels.coulomb, h=0)
  with pytest.raises(ValueError, match="eps must be finite and > 0"):
    bounds.kernel_bound(functools.partial(kernels.coulomb, eps=0.0), h=3)
  with pytest.raises(TypeError, match="kernel_bound knows the range"):
    bounds.kernel_bound(lambda a, b: jnp.sum(a * b, -1), h=3)
  with pytest.raises(TypeError, match="kernel must be callable"):
    bounds.kernel_bound("coulomb", h=3)


# ----------------------------------------------------------------------------
# xi.


@pytest.mark.parametrize("batch_size", [1, 3, 7, 16, 1024])
def test_estimate_xi_is_the_largest_squared_error(np_rng, batch_size):
  train = np_rng.standard_normal((16, 2, 3)).astype(np.float32)
  valid = np_rng.standard_normal((5, 2, 3)).astype(np.float32)
  valid[-1] = 10.0  # the worst example, last in the last (padded) batch
  calls = []

  def reconstruct(batch):
    calls.append(batch.shape[0])
    return 0.5 * batch

  expected = max(np.sum((0.5 * d.reshape(len(d), -1)) ** 2, -1).max()
                 for d in (train, valid))
  assert expected == pytest.approx(0.25 * 6 * 100.0)
  xi = bounds.estimate_xi(reconstruct, train, valid, batch_size=batch_size)
  assert xi == pytest.approx(expected, rel=1e-6)
  # Data sets larger than a batch are fed in full batches only.
  shapes_for = {len(d): {min(len(d), batch_size)} for d in (train, valid)}
  assert set(calls) <= shapes_for[16] | shapes_for[5]


def test_estimate_xi_with_a_jitted_reconstruct_and_wider_data(enable_x64):
  data = np.linspace(0.0, 1.0, 12, dtype=np.float64).reshape(6, 2)
  shift = jax.jit(lambda x: x.astype(jnp.float32) + 1.0)  # float32 output
  assert bounds.estimate_xi(shift, data, batch_size=4) == pytest.approx(2.0)


def test_estimate_xi_rejects_bad_input():
  ident = lambda x: x  # noqa: E731
  data = np.zeros((3, 2), np.float32)
  with pytest.raises(ValueError, match="at least one data set"):
    bounds.estimate_xi(ident)
  with pytest.raises(ValueError, match=r"datasets\[1\] must hold at least one"):
    bounds.estimate_xi(ident, data, np.zeros((0, 2), np.float32))
  with pytest.raises(ValueError, match="batch_size must be a positive integer"):
    bounds.estimate_xi(ident, data, batch_size=0)
  with pytest.raises(TypeError, match=r"datasets\[0\] must have a floating"):
    bounds.estimate_xi(ident, np.zeros((3, 2), np.int32))
  with pytest.raises(ValueError, match="same shape"):
    bounds.estimate_xi(lambda x: x[:, :1], data)
