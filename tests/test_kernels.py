"""Tests for couae_jax.kernels: values, broadcasting, dtypes, properties, errors."""

from __future__ import annotations

import functools
import math

import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
  RADIAL_NAMES,
  KernelCase,
  coulomb_log_profile,
  coulomb_profile,
  default_scale,
  gaussian_profile,
  imq_profile,
  random_rotation,
  sq_dists,
)
from hypothesis import strategies as st
from jax import test_util as jtu

from couae_jax import kernels, testing

HS = (3, 8, 16, 64, 128, 256)
SETTINGS = dict(max_examples=20, deadline=None, derandomize=True,
                suppress_health_check=[hypothesis.HealthCheck.too_slow])
F32_ULP = 2.0**-24


def _normal(np_rng, shape, dtype=jnp.float32):
  return jnp.asarray(np_rng.standard_normal(shape), dtype)


def _pairs(np_rng, h, n=12):
  """`[n, h]` pairs of standard-normal points, with one coincident pair and
  one pair 1e-3 apart."""
  x = np_rng.standard_normal((n, h)).astype(np.float32)
  y = np_rng.standard_normal((n, h)).astype(np.float32)
  y[0] = x[0]
  y[1] = x[1] + np.float32(1e-3)
  return jnp.asarray(x), jnp.asarray(y)


def _p_eff(case) -> int:
  """Number of multiplications in the power, which amplifies rounding."""
  return case.h if "coulomb" in case.name else 2


# ----------------------------------------------------------------------------
# Values against float64 NumPy.


@functools.lru_cache(maxsize=None)
def _all_outputs(name, h):
  """Jitted Gram matrix, paired values and paired gradients of a kernel,
  cached so that the tests below share one compilation per (kernel, h)."""
  kernel = KernelCase(name, h).kernel

  def outputs(x, y):
    gram = kernel(x[:, None, :], y[None, :, :])  # the broadcasting contract
    paired = kernel(x, y)
    grads = jax.grad(lambda a, b: jnp.sum(kernel(a, b)), (0, 1))(x, y)
    return gram, paired, grads

  return jax.jit(outputs)


@pytest.mark.parametrize("h", HS)
@pytest.mark.parametrize("name", RADIAL_NAMES)
def test_values_match_float64_reference(np_rng, name, h):
  case = KernelCase(name, h)
  x, y = _pairs(np_rng, h)
  gram, paired, _ = _all_outputs(name, h)(x, y)
  chex.assert_shape([gram, paired], [(12, 12), (12,)])
  chex.assert_type([gram, paired], jnp.float32)
  assert np.all(np.isfinite(np.asarray(gram)))
  want = case.profile(sq_dists(x, y))
  tol = dict(rtol=2e-6 * (_p_eff(case) + 4), atol=1e-30)
  np.testing.assert_allclose(gram, want, **tol)
  np.testing.assert_allclose(paired, np.diagonal(want), **tol)
  # Eager evaluation agrees with the jitted one.
  np.testing.assert_allclose(case.kernel(x, y), paired, rtol=1e-6)


def test_coulomb_default_scale_is_sqrt_2h(np_rng):
  for h in (3, 8, 64):
    x, y = _pairs(np_rng, h)
    chex.assert_trees_all_equal(
        kernels.coulomb(x, y), kernels.coulomb(x, y, scale=math.sqrt(2 * h)))
    with pytest.raises(AssertionError):
      chex.assert_trees_all_close(
          kernels.coulomb(x, y), kernels.coulomb(x, y, scale=math.sqrt(h)))


@pytest.mark.parametrize("eps,scale", [(1e-3, 1.0), (0.3, 2.5), (1e-5, None)])
def test_coulomb_explicit_hyperparameters(np_rng, eps, scale):
  h = 5
  x, y = _pairs(np_rng, h)
  got = kernels.coulomb(x, y, eps=eps, scale=scale)
  want = coulomb_profile(np.sum((np.float64(x) - np.float64(y))**2, -1), h=h,
                         eps=eps, scale=scale)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_coulomb_docstring_example_value():
  # 1 / (sqrt(3)^1 + 1e-3) for unit scale in h = 3.
  got = kernels.coulomb(jnp.zeros((4, 3)), jnp.ones((4, 3)), scale=1.0,
                        eps=1e-3)
  np.testing.assert_allclose(got, np.full(4, 1 / (math.sqrt(3) + 1e-3)),
                             rtol=1e-6)


def test_coulomb_log_matches_reference(np_rng):
  x, y = _pairs(np_rng, 2, n=16)
  for eps, scale in [(None, None), (0.1, 0.5), (1e-3, 3.0)]:
    params = {} if eps is None else {"eps": eps, "scale": scale}
    eps = kernels.DEFAULT_EPS if eps is None else eps
    got = kernels.coulomb_log(x[:, None], y[None], **params)
    want = coulomb_log_profile(sq_dists(x, y), eps=eps,
                               scale=2.0 if scale is None else scale)
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gaussian_and_imq_reference_values():
  x = jnp.zeros(2)
  y = jnp.array([3.0, 4.0])
  np.testing.assert_allclose(kernels.gaussian(x, y, scale=5.0),
                             math.exp(-0.5), rtol=1e-6)
  np.testing.assert_allclose(kernels.imq(x, y, scale=5.0), 0.5, rtol=1e-6)
  np.testing.assert_allclose(kernels.gaussian(x, y, scale=2.0),
                             gaussian_profile(25.0, scale=2.0), rtol=1e-6)
  np.testing.assert_allclose(kernels.imq(x, y, scale=0.5),
                             imq_profile(25.0, scale=0.5), rtol=1e-6)


def test_multiscale_is_sum_over_scales(np_rng):
  h = 8
  x, y = _pairs(np_rng, h)
  scales = (1.0, 2.5, 7.0)
  for base, params in [(kernels.imq, {}), (kernels.gaussian, {}),
                       (kernels.coulomb, {"eps": 0.01})]:
    summed = kernels.multiscale(base, scales=scales, **params)
    want = sum(base(x, y, scale=s, **params) for s in scales)
    np.testing.assert_allclose(summed(x, y), want, rtol=1e-6)


# ----------------------------------------------------------------------------
# Broadcasting contract and dtypes.


@pytest.mark.parametrize("name", ["coulomb", "gaussian", "multiscale_coulomb"])
@pytest.mark.parametrize(
    "x_shape,y_shape,out_shape",
    [((5, 1), (1, 7), (5, 7)), ((), (), ()), ((3,), (), (3,)),
     ((), (4,), (4,)), ((2, 3, 4), (4,), (2, 3, 4)), ((2, 1, 4), (3, 1), (2, 3, 4))])
def test_broadcasting(np_rng, name, x_shape, y_shape, out_shape):
  h = 6
  case = KernelCase(name, h)
  x = _normal(np_rng, x_shape + (h,))
  y = _normal(np_rng, y_shape + (h,))
  got = case.kernel(x, y)
  chex.assert_shape(got, out_shape)
  xb, yb = np.broadcast_arrays(np.float64(x), np.float64(y))
  want = case.profile(np.sum((xb - yb)**2, axis=-1))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_coulomb_log_broadcasting(np_rng):
  x = _normal(np_rng, (5, 1, 2))
  y = _normal(np_rng, (1, 7, 2))
  chex.assert_shape(kernels.coulomb_log(x, y), (5, 7))
  chex.assert_shape(kernels.coulomb_log(x[0, 0], y[0, 0]), ())


@pytest.mark.parametrize("name", RADIAL_NAMES)
def test_float32_output_dtype(np_rng, name):
  case = KernelCase(name, 8)
  x, y = _pairs(np_rng, 8)
  chex.assert_type(case.kernel(x, y), jnp.float32)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", RADIAL_NAMES)
@pytest.mark.parametrize("h", [3, 64])
def test_half_precision_inputs_compute_in_float32(np_rng, name, h, dtype):
  case = KernelCase(name, h)
  x, y = _pairs(np_rng, h)
  xh, yh = x.astype(dtype), y.astype(dtype)
  got = case.kernel(xh, yh)
  chex.assert_type(got, jnp.float32)
  # Exactly the float32 computation on the same (rounded) values: 1/eps and
  # (‖x - y‖/scale)^(h - 2) leave half precision's range.
  want = case.kernel(xh.astype(jnp.float32), yh.astype(jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert np.all(np.isfinite(np.asarray(got)))


def test_mixed_float32_and_bfloat16_inputs(np_rng):
  x, y = _pairs(np_rng, 8)
  got = kernels.coulomb(x, y.astype(jnp.bfloat16))
  chex.assert_type(got, jnp.float32)
  np.testing.assert_allclose(
      got, kernels.coulomb(x, y.astype(jnp.bfloat16).astype(jnp.float32)),
      rtol=1e-6)


@pytest.mark.parametrize("name", RADIAL_NAMES)
def test_float64_output_under_x64(enable_x64, np_rng, name):
  del enable_x64
  h = 8
  case = KernelCase(name, h)
  x = _normal(np_rng, (10, h), jnp.float64)
  y = _normal(np_rng, (10, h), jnp.float64)
  got = case.kernel(x, y)
  chex.assert_type(got, jnp.float64)
  np.testing.assert_allclose(got, case.profile(np.sum((x - y)**2, -1)),
                             rtol=1e-12)


def test_float32_inputs_stay_float32_under_x64(enable_x64, np_rng):
  del enable_x64
  x, y = _pairs(np_rng, 8)
  for name in RADIAL_NAMES:
    chex.assert_type(KernelCase(name, 8).kernel(x, y), jnp.float32)


# ----------------------------------------------------------------------------
# Properties (hypothesis).


def _points(draw, h, n, lo=-4.0, hi=4.0):
  elements = st.floats(lo, hi, width=32, allow_nan=False, allow_infinity=False)
  return np.asarray(draw(st.lists(st.lists(elements, min_size=h, max_size=h),
                                  min_size=n, max_size=n)), np.float32)


@hypothesis.settings(**SETTINGS)
@hypothesis.given(data=st.data(), h=st.sampled_from([3, 4, 8, 16]),
                  eps=st.floats(1e-4, 1.0), scale=st.floats(0.05, 20.0))
def test_coulomb_range(data, h, eps, scale):
  x = _points(data.draw, h, 4, -8, 8)
  y = _points(data.draw, h, 4, -8, 8)
  k = np.asarray(kernels.coulomb(x, y, eps=eps, scale=scale))
  assert np.all(np.isfinite(k))
  assert np.all(k <= (1.0 / eps) * (1 + 4 * F32_ULP))
  assert np.all(k >= 0)
  # Exact zeros only where (‖x - y‖/scale)^(h-2) overflows float32.
  q = (sq_dists(x, y).diagonal() / scale**2) ** ((h - 2) / 2)
  assert np.all((k > 0) | (q > 1e37))


@hypothesis.settings(**SETTINGS)
@hypothesis.given(data=st.data(), h=st.sampled_from([3, 4, 8, 16]),
                  scale=st.floats(0.05, 20.0),
                  which=st.sampled_from(["gaussian", "imq"]))
def test_gaussian_imq_range(data, h, scale, which):
  kernel = getattr(kernels, which)
  x = _points(data.draw, h, 4)
  y = _points(data.draw, h, 4)
  k = np.asarray(kernel(x, y, scale=scale))
  assert np.all(np.isfinite(k))
  assert np.all(k <= 1.0)
  assert np.all(k >= 0)
  profile = gaussian_profile if which == "gaussian" else imq_profile
  want = profile(sq_dists(x, y).diagonal(), scale=scale)
  # Exact zeros only from float32 underflow.
  assert np.all((k > 0) | (want < 1e-37))


@hypothesis.settings(**SETTINGS)
@hypothesis.given(data=st.data(), h=st.sampled_from([3, 4, 8, 16]),
                  name=st.sampled_from(RADIAL_NAMES))
def test_symmetric(data, h, name):
  kernel = KernelCase(name, h).kernel
  x = _points(data.draw, h, 4)
  y = _points(data.draw, h, 4)
  chex.assert_trees_all_equal(kernel(x, y), kernel(y, x))


def _invariance_rtol(case, x, y, x2, y2):
  """Float32 tolerance for k(x2, y2) = k(x, y) where (x2, y2) is an isometric
  image of (x, y) rounded to float32: the inputs' rounding, propagated by the
  kernel's log-slope, plus the kernel's own float32 evaluation error."""
  t = sq_dists(x, y).diagonal()
  t2 = sq_dists(x2, y2).diagonal()
  k = case.profile(t)
  log_slope = np.abs(case.slope(t) * t / k)
  rho = np.abs(t2 - t) / t + 4 * case.h * F32_ULP
  return 4 * log_slope * rho + 16 * (_p_eff(case) + 4) * F32_ULP


@hypothesis.settings(**SETTINGS)
@hypothesis.given(data=st.data(), h=st.sampled_from([3, 4, 8, 16]),
                  name=st.sampled_from(RADIAL_NAMES))
def test_translation_invariant(data, h, name):
  case = KernelCase(name, h)
  x = _points(data.draw, h, 4)
  y = _points(data.draw, h, 4)
  hypothesis.assume(np.all(sq_dists(x, y).diagonal() > 0.25))
  c = _points(data.draw, h, 1, -20, 20)
  x2, y2 = x + c, y + c
  rtol = _invariance_rtol(case, np.float64(x), np.float64(y), x2, y2)
  k, k2 = np.asarray(case.kernel(x, y)), np.asarray(case.kernel(x2, y2))
  np.testing.assert_array_less(np.abs(k2 - k), rtol * np.abs(k) + 1e-35)


@hypothesis.settings(**SETTINGS)
@hypothesis.given(data=st.data(), h=st.sampled_from([3, 4, 8, 16]),
                  name=st.sampled_from(RADIAL_NAMES),
                  seed=st.integers(0, 2**16))
def test_rotation_invariant(data, h, name, seed):
  case = KernelCase(name, h)
  x = _points(data.draw, h, 4)
  y = _points(data.draw, h, 4)
  hypothesis.assume(np.all(sq_dists(x, y).diagonal() > 0.25))
  rot = random_rotation(h, seed)
  # Rotate exactly in float64, then round to float32.
  x2 = np.float32(np.float64(x) @ rot.T)
  y2 = np.float32(np.float64(y) @ rot.T)
  rtol = _invariance_rtol(case, np.float64(x), np.float64(y), x2, y2)
  k, k2 = np.asarray(case.kernel(x, y)), np.asarray(case.kernel(x2, y2))
  np.testing.assert_array_less(np.abs(k2 - k), rtol * np.abs(k) + 1e-35)


@hypothesis.settings(**SETTINGS)
@hypothesis.given(data=st.data(), h=st.sampled_from([3, 4, 8, 16]),
                  name=st.sampled_from(RADIAL_NAMES + ("coulomb_log",)),
                  a=st.floats(0.0, 10.0), b=st.floats(0.0, 10.0))
def test_decreasing_along_a_ray(data, h, name, a, b):
  if name == "coulomb_log":
    h = 2
  case = KernelCase(name, h)
  x = _points(data.draw, h, 1)[0]
  u = _points(data.draw, h, 1)[0]
  hypothesis.assume(np.linalg.norm(u) > 0.1)
  near, far = np.float32(x + min(a, b) * u), np.float32(x + max(a, b) * u)
  t_near = np.sum((np.float64(near) - x)**2)
  t_far = np.sum((np.float64(far) - x)**2)
  hypothesis.assume(t_far > t_near * (1 + 1e-4) + 1e-6)
  k_near, k_far = case.kernel(x, near), case.kernel(x, far)
  assert k_near >= k_far
  # Strictly decreasing wherever float64 resolves the difference.
  ref_near, ref_far = case.profile(t_near), case.profile(t_far)
  if ref_near - ref_far > 1e-4 * abs(ref_near) and abs(ref_near) > 1e-30:
    assert k_near > k_far


def test_decreasing_along_a_ray_fixed_points():
  u = jnp.ones(8) / math.sqrt(8)
  radii = jnp.linspace(0.0, 12.0, 49)
  for name in RADIAL_NAMES:
    k = KernelCase(name, 8).kernel(jnp.zeros(8), radii[:, None] * u)
    assert np.all(np.diff(np.asarray(k)) < 0), name


# ----------------------------------------------------------------------------
# Coincident points.


@pytest.mark.parametrize("h", HS)
@pytest.mark.parametrize("name", RADIAL_NAMES)
def test_coincident_points(np_rng, name, h):
  case = KernelCase(name, h)
  x = _normal(np_rng, (12, h))
  _, paired, (gx, gy) = _all_outputs(name, h)(x, x)
  np.testing.assert_allclose(paired, np.full(12, case.at_zero), rtol=1e-6)
  assert np.all(np.isfinite(np.asarray(gx)))
  assert np.all(np.isfinite(np.asarray(gy)))
  # By symmetry the gradient of k at coincident points is 0.
  chex.assert_trees_all_equal(gx, jnp.zeros_like(x))
  chex.assert_trees_all_equal(gy, jnp.zeros_like(x))


@pytest.mark.parametrize("h", [3, 4, 8])
@pytest.mark.parametrize("offset", [1e-30, 1e-12, 1e-6])
def test_nearly_coincident_points_have_finite_bounded_gradient(h, offset):
  x = jnp.zeros(h)
  y = jnp.full(h, offset, jnp.float32)
  eps = 1e-3
  k = kernels.coulomb(x, y, eps=eps)
  np.testing.assert_allclose(k, 1 / eps, rtol=1e-3)
  g = jax.grad(functools.partial(kernels.coulomb, eps=eps))(x, y)
  assert np.all(np.isfinite(np.asarray(g)))
  # |grad| = (h - 2) q k^2 / ‖x - y‖ with q = (r/scale)^(h-2) <= r/scale
  # (r < scale); for h = 3 that is k^2 / scale, bounded although the slope in
  # t diverges.
  assert np.linalg.norm(np.asarray(g)) <= (1 / eps**2) / default_scale(h) * 1.01


def test_coulomb_log_coincident_points():
  x = jnp.array([[0.5, -1.0], [2.0, 3.0]])
  np.testing.assert_allclose(
      kernels.coulomb_log(x, x),
      np.full(2, -0.5 * math.log(kernels.DEFAULT_EPS)), rtol=1e-6)
  g = jax.grad(lambda a: jnp.sum(kernels.coulomb_log(a, x)))(x)
  chex.assert_trees_all_equal(g, jnp.zeros_like(x))


# ----------------------------------------------------------------------------
# Gradients.


@pytest.mark.parametrize("h", HS)
@pytest.mark.parametrize("name", RADIAL_NAMES)
def test_gradient_matches_float64_formula(np_rng, name, h):
  case = KernelCase(name, h)
  x, y = _pairs(np_rng, h)
  _, _, (gx, gy) = _all_outputs(name, h)(x, y)
  x64, y64 = np.float64(x), np.float64(y)
  t = np.sum((x64 - y64)**2, -1)
  want = 2.0 * case.slope(t)[:, None] * (x64 - y64)
  tol = dict(rtol=2e-6 * (_p_eff(case) + 8),
             atol=1e-5 * np.abs(want).max())
  np.testing.assert_allclose(gx, want, **tol)
  np.testing.assert_allclose(gy, -want, **tol)


def test_coulomb_log_gradient_matches_formula(np_rng):
  case = KernelCase("coulomb_log", 2)
  x, y = _pairs(np_rng, 2)
  gx = jax.grad(lambda a: jnp.sum(case.kernel(a, y)))(x)
  d = np.float64(x) - np.float64(y)
  want = 2.0 * case.slope(np.sum(d * d, -1))[:, None] * d
  np.testing.assert_allclose(gx, want, rtol=1e-4, atol=1e-4)


def test_coulomb_gradient_wrt_hyperparameters():
  """The custom JVP's eps and scale tangents, against the float64 formula."""
  h, t = 6, 3.7
  x, y = jnp.zeros(h), jnp.full(h, math.sqrt(t / h), jnp.float32)
  f = lambda eps, scale: kernels.coulomb(x, y, eps=eps, scale=scale)
  d_eps, d_scale = jax.grad(f, (0, 1))(0.2, 1.3)
  # k = 1/(q + eps), q = (t / s^2)^((h-2)/2): dk/deps = -k^2,
  # dk/ds = (h - 2) q k^2 / s.
  q = (t / 1.3**2) ** ((h - 2) / 2)
  k = 1 / (q + 0.2)
  np.testing.assert_allclose(d_eps, -k * k, rtol=1e-4)
  np.testing.assert_allclose(d_scale, (h - 2) * q * k * k / 1.3, rtol=1e-4)


@pytest.mark.parametrize("name,h", [("coulomb", 3), ("coulomb", 64),
                                    ("coulomb_eps", 8), ("gaussian", 3),
                                    ("multiscale_coulomb", 3)])
def test_gradient_matches_finite_differences_x64(enable_x64, np_rng, name, h):
  del enable_x64
  case = KernelCase(name, h)
  x = _normal(np_rng, (5, h), jnp.float64)
  y = _normal(np_rng, (5, h), jnp.float64)
  f = jax.jit(lambda a, b: jnp.sum(case.kernel(a, b)))
  jtu.check_grads(f, (x, y), order=1, modes=("fwd", "rev"), atol=1e-6,
                  rtol=1e-6)


# ----------------------------------------------------------------------------
# radial_form.


def test_radial_form_of_library_kernels():
  bound = kernels.radial_form(kernels.coulomb, 8)
  assert isinstance(bound, kernels.BoundRadialKernel)
  assert bound.h == 8
  assert bound.params == {"eps": kernels.DEFAULT_EPS, "scale": 4.0}
  assert bound.bounds() == (0.0, 1.0 / kernels.DEFAULT_EPS)
  assert not bound.positive_definite()
  assert kernels.radial_form(kernels.coulomb, 3).positive_definite()
  assert kernels.radial_form(kernels.coulomb, 4).positive_definite()
  assert not kernels.radial_form(kernels.coulomb, 5).positive_definite()

  bound = kernels.radial_form(functools.partial(kernels.gaussian, scale=2.0), 5)
  assert bound.bounds() == (0.0, 1.0) and bound.positive_definite()
  bound = kernels.radial_form(functools.partial(kernels.imq, scale=2.0), 5)
  assert bound.bounds() == (0.0, 1.0) and bound.positive_definite()

  bound = kernels.radial_form(
      functools.partial(kernels.coulomb_log, eps=0.01), 2)
  lo, hi = bound.bounds()
  assert lo == -math.inf
  np.testing.assert_allclose(hi, -0.5 * math.log(0.01))
  assert not bound.positive_definite()

  bound = kernels.radial_form(
      kernels.multiscale(kernels.coulomb, scales=[1.0, 2.0], eps=0.1), 8)
  assert bound.bounds() == (0.0, 20.0)
  assert not bound.positive_definite()
  bound = kernels.radial_form(kernels.multiscale(kernels.imq, scales=[1, 2]), 8)
  assert bound.bounds() == (0.0, 2.0) and bound.positive_definite()


@pytest.mark.parametrize("name", RADIAL_NAMES)
def test_radial_form_profile_matches_kernel(np_rng, name):
  h = 8
  case = KernelCase(name, h)
  x, y = _pairs(np_rng, h)
  bound = kernels.radial_form(case.kernel, h)
  t = jnp.sum((x - y)**2, -1)
  np.testing.assert_allclose(bound.profile(t), case.kernel(x, y), rtol=1e-6)
  lo, hi = bound.bounds()
  k = np.asarray(case.kernel(x, y))
  assert np.all((k >= lo) & (k <= hi * (1 + 4 * F32_ULP)))


def test_radial_form_partials():
  nested = functools.partial(functools.partial(kernels.coulomb, eps=0.1),
                             scale=2.0)
  assert kernels.radial_form(nested, 5).params == {"eps": 0.1, "scale": 2.0}
  assert kernels.radial_form(lambda a, b: a @ b, 5) is None
  assert kernels.radial_form(functools.partial(kernels.gaussian, 1.0), 5) is None
  with pytest.raises(ValueError, match="eps"):
    kernels.radial_form(functools.partial(kernels.coulomb, eps=0.0), 5)
  with pytest.raises(ValueError, match="h=2"):
    kernels.radial_form(kernels.coulomb, 2)


# ----------------------------------------------------------------------------
# Bad input.


def _all_kernels(h):
  if h == 2:
    return [kernels.coulomb_log]
  return [kernels.coulomb, functools.partial(kernels.gaussian, scale=1.0),
          functools.partial(kernels.imq, scale=1.0),
          kernels.multiscale(kernels.imq, scales=[1.0, 2.0])]


def _maybe_jit(fn, use_jit):
  return jax.jit(fn) if use_jit else fn


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("h", [2, 5])
def test_rank_zero_inputs_raise(h, use_jit):
  for kernel in _all_kernels(h):
    f = _maybe_jit(lambda a, b: kernel(a, b), use_jit)  # pylint: disable=cell-var-from-loop
    with pytest.raises(ValueError, match="x must have rank"):
      f(jnp.float32(1.0), jnp.ones(h))
    with pytest.raises(ValueError, match="y must have rank"):
      f(jnp.ones(h), jnp.float32(1.0))


@pytest.mark.parametrize("use_jit", [False, True])
def test_mismatched_h_raises(use_jit):
  for kernel in _all_kernels(5) + [kernels.coulomb_log]:
    f = _maybe_jit(lambda a, b: kernel(a, b), use_jit)  # pylint: disable=cell-var-from-loop
    with pytest.raises(ValueError, match="same last dimension"):
      f(jnp.ones((3, 5)), jnp.ones((3, 4)))


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_])
def test_integer_inputs_raise_type_error(use_jit, dtype):
  for kernel in _all_kernels(5):
    f = _maybe_jit(lambda a, b: kernel(a, b), use_jit)  # pylint: disable=cell-var-from-loop
    with pytest.raises(TypeError, match="x must have a floating dtype"):
      f(jnp.ones((3, 5), dtype), jnp.ones((3, 5)))
    with pytest.raises(TypeError, match="y must have a floating dtype"):
      f(jnp.ones((3, 5)), jnp.ones((3, 5), dtype))


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("eps", [0.0, -1e-3, math.nan, math.inf])
def test_bad_eps_raises(use_jit, eps):
  for kernel, h in [(kernels.coulomb, 5), (kernels.coulomb_log, 2)]:
    f = _maybe_jit(lambda a, b: kernel(a, b, eps=eps), use_jit)  # pylint: disable=cell-var-from-loop
    with pytest.raises(ValueError, match="eps"):
      f(jnp.ones((3, h)), jnp.zeros((3, h)))
  with pytest.raises(ValueError, match="eps"):
    kernels.multiscale(kernels.coulomb, scales=[1.0], eps=eps)(
        jnp.ones((3, 5)), jnp.zeros((3, 5)))


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf])
def test_bad_scale_raises(use_jit, scale):
  for kernel, h in [(kernels.coulomb, 5), (kernels.coulomb_log, 2),
                    (kernels.gaussian, 5), (kernels.imq, 5)]:
    f = _maybe_jit(lambda a, b: kernel(a, b, scale=scale), use_jit)  # pylint: disable=cell-var-from-loop
    with pytest.raises(ValueError, match="scale"):
      f(jnp.ones((3, h)), jnp.zeros((3, h)))
  with pytest.raises(ValueError, match="scales"):
    kernels.multiscale(kernels.imq, scales=[1.0, scale])


@pytest.mark.parametrize("use_jit", [False, True])
def test_wrong_latent_size_for_coulomb_kernels(use_jit):
  for h in (1, 2):
    f = _maybe_jit(kernels.coulomb, use_jit)
    with pytest.raises(ValueError, match=f"h={h}"):
      f(jnp.ones((3, h)), jnp.zeros((3, h)))
  for h in (1, 3, 8):
    f = _maybe_jit(kernels.coulomb_log, use_jit)
    with pytest.raises(ValueError, match=f"h={h}"):
      f(jnp.ones((3, h)), jnp.zeros((3, h)))
  with pytest.raises(ValueError, match="h=2"):
    kernels.multiscale(kernels.coulomb, scales=[1.0])(jnp.ones(2), jnp.ones(2))


def test_multiscale_bad_arguments():
  with pytest.raises(ValueError, match="scales"):
    kernels.multiscale(kernels.imq, scales=[])
  with pytest.raises(TypeError, match="kernel"):
    kernels.multiscale(lambda a, b, scale: a, scales=[1.0])
  with pytest.raises(TypeError, match="kernel"):
    kernels.multiscale(functools.partial(kernels.imq, scale=1.0), scales=[1.0])


# ----------------------------------------------------------------------------
# The property-testing kit (couae_jax.testing) on the library's own kernels.


@pytest.mark.parametrize("kernel,h", [
    (kernels.coulomb, 3), (kernels.coulomb, 8), (kernels.coulomb, 64),
    (kernels.coulomb_log, 2),
    (functools.partial(kernels.coulomb, eps=0.05, scale=2.0), 5),
    (functools.partial(kernels.gaussian, scale=3.0), 8),
    (functools.partial(kernels.imq, scale=4.0), 8),
    (kernels.multiscale(kernels.imq, scales=[0.5, 1.0, 2.0]), 8),
    (kernels.multiscale(kernels.coulomb, scales=[3.0, 4.0], eps=0.1), 8),
], ids=["coulomb-3", "coulomb-8", "coulomb-64", "coulomb_log-2",
        "coulomb_eps-5", "gaussian-8", "imq-8", "multiscale_imq-8",
        "multiscale_coulomb-8"])
def test_library_kernels_pass(kernel, h):
  assert testing.assert_kernel_properties(kernel, h=h) is None


def test_library_kernels_pass_in_other_dtypes(enable_x64):
  del enable_x64
  testing.assert_kernel_properties(kernels.coulomb, h=8, dtype=jnp.float64)
  testing.assert_kernel_properties(functools.partial(kernels.gaussian, scale=1.0), h=4, dtype=jnp.bfloat16)


@pytest.mark.parametrize("name", ["coulomb", "sliced_coulomb", "gaussian",
                                  "imq", "coulomb_log"])
def test_a_nan_point_gives_nan_value_and_gradient(name):
  """The Coulomb slope is set to 0 at coincident points only: a NaN distance
  must not take that branch."""
  h = 2 if name == "coulomb_log" else 5
  kernel = KernelCase(name, h).kernel
  x = jnp.zeros(h).at[1].set(jnp.nan)
  y = jnp.ones(h)
  value, grad = jax.value_and_grad(lambda a: kernel(a, y))(x)
  assert jnp.isnan(value)
  assert jnp.isnan(grad).all()
  value, grad = jax.value_and_grad(lambda a: kernel(a, y))(jnp.zeros(h))
  assert jnp.isfinite(value) and jnp.isfinite(grad).all()
