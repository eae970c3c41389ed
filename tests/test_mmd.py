"""Tests for couae_jax.mmd: estimators, dense vs blocked, transforms, errors."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import KernelCase, mmd2_reference, mmd2_reference_grad, sq_dists
from jax import test_util as jtu

from couae_jax import kernels, mmd, testing

N, M = 37, 53  # n != m, and n + m = 90 is not a multiple of any block size.
BLOCK_SIZES = (1, 7, 16, 200)
# Every block size for these; block_size=7 only for the other kernels.
FULL_GRID = (("coulomb", 3), ("coulomb", 64), ("gaussian", 8), ("imq", 8),
             ("laplace_l1", 5))


def laplace_l1(a, b):
  """A kernel without a radial form: the generic path."""
  return jnp.exp(-jnp.sum(jnp.abs(a - b), axis=-1))


class GenericCase:
  name, h = "laplace_l1", 5
  kernel = staticmethod(laplace_l1)

  @staticmethod
  def gram(a, b):
    a, b = np.float64(a), np.float64(b)
    return np.exp(-np.abs(a[:, None, :] - b[None, :, :]).sum(-1))


def _case(name, h):
  return GenericCase() if name == "laplace_l1" else KernelCase(name, h)


def _reference(case, x, y, *, biased=False):
  if isinstance(case, GenericCase):
    x64, y64 = np.float64(x), np.float64(y)
    kxx, kyy, kxy = case.gram(x64, x64), case.gram(y64, y64), case.gram(x64, y64)
    n, m = len(x64), len(y64)
    if biased:
      return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) +
            (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
  return mmd2_reference(x, y, case.profile, biased=biased)


def _term_scale(case, x, y) -> float:
  """The size of the terms the estimate is a difference of."""
  z = np.concatenate([np.float64(x), np.float64(y)])
  if isinstance(case, GenericCase):
    return float(np.abs(case.gram(z, z)).mean())
  return float(np.abs(case.profile(sq_dists(z, z))).mean())


def _samples(np_rng, h, n=N, m=M, shift=0.3, dtype=jnp.float32):
  """Codes x ~ N(0, I) and prior samples y ~ N(shift, I), built in NumPy."""
  x = np_rng.standard_normal((n, h))
  y = np_rng.standard_normal((m, h)) + shift
  return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


@functools.lru_cache(maxsize=None)
def _value_and_grad(estimator, case_key, block_size):
  """Jitted value and gradient of `estimator`, cached so that tests with the
  same shapes share one compilation."""
  kernel = _case(*case_key).kernel
  return jax.jit(jax.value_and_grad(
      lambda x, y: estimator(x, y, kernel, block_size=block_size), (0, 1)))


def _assert_grads_close(got, want, rtol=1e-4):
  for g, w in zip(got, want):
    chex.assert_equal_shape([g, w])
    np.testing.assert_allclose(g, w, rtol=rtol,
                               atol=rtol * float(np.abs(np.asarray(w)).max()))


RADIAL_CASES = [("coulomb", 3), ("coulomb", 8), ("coulomb", 64),
                ("coulomb_eps", 16), ("coulomb_log", 2), ("gaussian", 8),
                ("imq", 8), ("multiscale_coulomb", 8)]
ALL_CASES = RADIAL_CASES + [("laplace_l1", 5)]
BIASED_CASES = [("coulomb", 3), ("coulomb_log", 2), ("gaussian", 8),
                ("laplace_l1", 5)]
_ids = lambda c: f"{c[0]}-{c[1]}"


# ----------------------------------------------------------------------------
# Values and gradients against float64 NumPy.


@pytest.mark.parametrize("block_size", [None, 7])
@pytest.mark.parametrize("case_key", ALL_CASES, ids=_ids)
def test_value_matches_float64_reference(np_rng, case_key, block_size):
  case = _case(*case_key)
  x, y = _samples(np_rng, case.h)
  got, _ = _value_and_grad(mmd.mmd2, case_key, block_size)(x, y)
  chex.assert_shape(got, ())
  chex.assert_type(got, jnp.float32)
  p = case.h if "coulomb" in case.name else 2
  np.testing.assert_allclose(
      got, _reference(case, x, y), rtol=1e-5,
      atol=1e-6 * (p + 4) * _term_scale(case, x, y))


@pytest.mark.parametrize("block_size", [None, 7])
@pytest.mark.parametrize("case_key", BIASED_CASES, ids=_ids)
def test_biased_value_matches_float64_reference(np_rng, case_key, block_size):
  case = _case(*case_key)
  x, y = _samples(np_rng, case.h)
  got, _ = _value_and_grad(mmd.mmd2_biased, case_key, block_size)(x, y)
  chex.assert_type(got, jnp.float32)
  p = case.h if "coulomb" in case.name else 2
  np.testing.assert_allclose(
      got, _reference(case, x, y, biased=True), rtol=1e-5,
      atol=1e-6 * (p + 4) * _term_scale(case, x, y))


def test_reference_is_not_trivially_matched(np_rng):
  """The estimators differ by more than the tolerances used above."""
  case = KernelCase("gaussian", 8)
  x, y = _samples(np_rng, 8)
  unbiased = float(_value_and_grad(mmd.mmd2, ("gaussian", 8), None)(x, y)[0])
  biased = float(
      _value_and_grad(mmd.mmd2_biased, ("gaussian", 8), None)(x, y)[0])
  assert abs(unbiased - biased) > 1e-3
  assert abs(unbiased - mmd2_reference(x, y, case.profile, biased=True)) > 1e-3
  assert abs(unbiased - mmd2_reference(y, x[:-1], case.profile)) > 1e-3


def test_docstring_example_biased_value():
  # k(0, 1-vector in R^2) = exp(-1): (1 + 1 - 2 exp(-1)) = 1.26424.
  x, y = jnp.zeros((3, 2)), jnp.ones((3, 2))
  kernel = functools.partial(kernels.gaussian, scale=1.0)
  np.testing.assert_allclose(mmd.mmd2_biased(x, y, kernel),
                             2 - 2 * np.exp(-1.0), rtol=1e-6)
  # Unbiased: the diagonal is dropped, the off-diagonal Gram is all ones.
  np.testing.assert_allclose(mmd.mmd2(x, y, kernel), 2 - 2 * np.exp(-1.0),
                             rtol=1e-6)


@pytest.mark.parametrize("block_size", [None, 2])
def test_biased_estimator_accepts_single_points(np_rng, block_size):
  case = KernelCase("imq", 4)
  x, y = _samples(np_rng, 4, n=1, m=3)
  got = jax.jit(functools.partial(mmd.mmd2_biased, kernel=case.kernel,
                                  block_size=block_size))(x, y)
  np.testing.assert_allclose(got,
                             mmd2_reference(x, y, case.profile, biased=True),
                             rtol=1e-5)


@pytest.mark.parametrize("block_size", [None, 7])
@pytest.mark.parametrize("case_key", RADIAL_CASES, ids=_ids)
def test_gradient_matches_float64_formula(np_rng, case_key, block_size):
  case = KernelCase(*case_key)
  x, y = _samples(np_rng, case.h)
  _, grads = _value_and_grad(mmd.mmd2, case_key, block_size)(x, y)
  want = mmd2_reference_grad(x, y, case.slope)
  p = case.h if "coulomb" in case.name else 2
  _assert_grads_close(grads, want, rtol=5e-6 * (p + 8))


def test_reference_gradient_matches_numpy_finite_differences():
  """Self-check of the float64 reference gradient used above."""
  rs = np.random.default_rng(0)
  x, y = rs.normal(size=(6, 4)), rs.normal(size=(5, 4)) + 0.5
  for name in ("coulomb", "gaussian", "multiscale_coulomb"):
    case = KernelCase(name, 4)
    gx, gy = mmd2_reference_grad(x, y, case.slope)
    for arr, grad, which in ((x, gx, 0), (y, gy, 1)):
      fd = np.zeros_like(arr)
      for idx in np.ndindex(arr.shape):
        step = np.zeros_like(arr)
        step[idx] = 1e-6
        args = [x, y]
        args[which] = arr + step
        up = mmd2_reference(*args, case.profile)
        args[which] = arr - step
        down = mmd2_reference(*args, case.profile)
        fd[idx] = (up - down) / 2e-6
      np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("block_size", [None, 7])
def test_generic_gradient_matches_float64_formula(np_rng, block_size):
  x, y = _samples(np_rng, 5)
  _, (gx, gy) = _value_and_grad(mmd.mmd2, ("laplace_l1", 5), block_size)(x, y)
  # d/dz_a sum_ab c_ab exp(-|z_a - z_b|_1) = -2 sum_b c_ab k_ab sign(z_a - z_b).
  z = np.concatenate([np.float64(x), np.float64(y)])
  n, m = N, M
  c = np.empty((n + m, n + m))
  c[:n, :n], c[n:, n:] = 1 / (n * (n - 1)), 1 / (m * (m - 1))
  c[:n, n:] = c[n:, :n] = -1 / (n * m)
  np.fill_diagonal(c, 0)
  k = GenericCase.gram(z, z)
  grad = -2 * np.einsum("ab,abh->ah", c * k, np.sign(z[:, None] - z[None]))
  _assert_grads_close((gx, gy), (grad[:n], grad[n:]), rtol=1e-5)


@pytest.mark.parametrize("case,block_size", [
    (("coulomb", 3), None), (("coulomb", 3), 4), (("laplace_l1", 5), 4)],
    ids=lambda v: str(v))
def test_gradient_matches_finite_differences_x64(enable_x64, np_rng, case,
                                                 block_size):
  del enable_x64
  case = _case(*case)
  x, y = _samples(np_rng, case.h, n=6, m=7, dtype=jnp.float64)
  f = jax.jit(lambda a, b: mmd.mmd2(a, b, case.kernel, block_size=block_size))
  modes = ("fwd", "rev") if block_size is None else ("rev",)
  jtu.check_grads(f, (x, y), order=1, modes=modes, atol=1e-6, rtol=1e-6)
  got = f(x, y)
  chex.assert_type(got, jnp.float64)
  np.testing.assert_allclose(got, _reference(case, x, y), rtol=1e-10)


def test_float32_inputs_under_x64(enable_x64, np_rng):
  del enable_x64
  case = KernelCase("coulomb", 8)
  x, y = _samples(np_rng, 8)
  got = jax.jit(functools.partial(mmd.mmd2, kernel=case.kernel,
                                  block_size=7))(x, y)
  chex.assert_type(got, jnp.float32)
  np.testing.assert_allclose(got, mmd2_reference(x, y, case.profile),
                             rtol=1e-4)


def _hyperparameter_kernel(param):
  if param == "scale":
    return lambda s: functools.partial(kernels.gaussian, scale=s), 2.0
  return lambda e: functools.partial(kernels.coulomb, eps=e), 0.1


@pytest.mark.parametrize("param", ["scale", "eps"])
def test_gradient_wrt_kernel_hyperparameters_dense(enable_x64, np_rng, param):
  del enable_x64
  x, y = _samples(np_rng, 4, n=9, m=11, dtype=jnp.float64)
  make, value = _hyperparameter_kernel(param)
  f = jax.jit(lambda p: mmd.mmd2(x, y, make(p)))
  step = 1e-5 * value
  fd = (f(value + step) - f(value - step)) / (2 * step)
  np.testing.assert_allclose(jax.grad(f)(value), fd, rtol=1e-6)


@pytest.mark.parametrize("param", ["scale", "eps"])
def test_gradient_wrt_kernel_hyperparameters_blocked(np_rng, param):
  x, y = _samples(np_rng, 4, n=9, m=11)
  make, value = _hyperparameter_kernel(param)
  blocked = jax.grad(lambda p: mmd.mmd2(x, y, make(p), block_size=4))(value)
  dense = jax.grad(lambda p: mmd.mmd2(x, y, make(p)))(value)
  # The gradient (~1e-2) is a difference of O(1) kernel terms: float32
  # summation order alone moves it by ~1e-7.
  np.testing.assert_allclose(blocked, dense, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# Dense vs blocked.


@pytest.mark.parametrize("case_key,block_size", [
    pytest.param(c, b, id=f"{_ids(c)}-{b}")
    for c in ALL_CASES for b in (BLOCK_SIZES if c in FULL_GRID else (7,))])
def test_dense_equals_blocked(np_rng, case_key, block_size):
  case = _case(*case_key)
  x, y = _samples(np_rng, case.h)
  dense, dense_grads = _value_and_grad(mmd.mmd2, case_key, None)(x, y)
  blocked, blocked_grads = _value_and_grad(mmd.mmd2, case_key,
                                           block_size)(x, y)
  np.testing.assert_allclose(blocked, dense, rtol=1e-5,
                             atol=1e-6 * _term_scale(case, x, y))
  _assert_grads_close(blocked_grads, dense_grads)


@pytest.mark.parametrize("case_key", BIASED_CASES, ids=_ids)
def test_biased_dense_equals_blocked(np_rng, case_key):
  case = _case(*case_key)
  x, y = _samples(np_rng, case.h)
  dense, dense_grads = _value_and_grad(mmd.mmd2_biased, case_key, None)(x, y)
  blocked, blocked_grads = _value_and_grad(mmd.mmd2_biased, case_key, 7)(x, y)
  np.testing.assert_allclose(blocked, dense, rtol=1e-5,
                             atol=1e-6 * _term_scale(case, x, y))
  _assert_grads_close(blocked_grads, dense_grads)


# ----------------------------------------------------------------------------
# Transformations.


@pytest.mark.parametrize("case,block_size", [
    (("coulomb", 8), None), (("laplace_l1", 5), 16)], ids=lambda v: str(v))
def test_jit_matches_eager(np_rng, case, block_size):
  case = _case(*case)
  x, y = _samples(np_rng, case.h)
  f = lambda a, b: mmd.mmd2(a, b, case.kernel, block_size=block_size)
  # Equal up to XLA's reassociation of the sums.
  np.testing.assert_allclose(jax.jit(f)(x, y), f(x, y), rtol=1e-6,
                             atol=1e-6 * _term_scale(case, x, y))


@pytest.mark.parametrize("case_key,block_size", [
    (("coulomb", 8), None), (("coulomb", 8), 16), (("laplace_l1", 5), 16)],
    ids=lambda v: str(v))
def test_vmap_matches_loop(np_rng, case_key, block_size):
  case = _case(*case_key)
  batch = 3
  xs, ys = _samples(np_rng, case.h, n=batch * 20, m=batch * 24)
  xs, ys = xs.reshape(batch, 20, case.h), ys.reshape(batch, 24, case.h)
  chex.assert_shape([xs, ys], [(batch, 20, case.h), (batch, 24, case.h)])
  f = lambda a, b: mmd.mmd2(a, b, case.kernel, block_size=block_size)
  batched = jax.jit(jax.vmap(f))(xs, ys)
  single = _value_and_grad(mmd.mmd2, case_key, block_size)
  looped = jnp.stack([single(xs[i], ys[i])[0] for i in range(batch)])
  chex.assert_shape(batched, (batch,))
  np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-7)
  assert len(set(np.asarray(looped).tolist())) == batch  # distinct problems
  batched_grads = jax.jit(jax.vmap(jax.grad(f, (0, 1))))(xs, ys)
  for i in range(batch):
    _assert_grads_close([g[i] for g in batched_grads],
                        single(xs[i], ys[i])[1], rtol=1e-5)


@pytest.mark.parametrize("block_size", [None, 16])
def test_one_trace_per_shape(np_rng, block_size):
  chex.clear_trace_counter()
  kernel = functools.partial(kernels.coulomb, eps=0.05)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def loss(x, y):
    return mmd.mmd2(x, y, kernel, block_size=block_size)

  x, y = _samples(np_rng, 8)
  x2, y2 = _samples(np_rng, 8)
  first, second = loss(x, y), loss(x2, y2)
  assert float(first) != float(second)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def grad(x, y):
    return jax.grad(lambda a, b: mmd.mmd2(a, b, kernel, block_size=block_size),
                    (0, 1))(x, y)

  grad(x, y)
  grad(x2, y2)
  # The counter does count: a new shape retraces and trips it.
  with pytest.raises(AssertionError):
    loss(x[:-1], y)


@pytest.mark.parametrize("block_size", [None, 7])
@pytest.mark.parametrize("case_key", [("coulomb", 8), ("imq", 8),
                                      ("laplace_l1", 5)], ids=_ids)
def test_permutation_invariant(np_rng, case_key, block_size):
  case = _case(*case_key)
  x, y = _samples(np_rng, case.h)
  px = np_rng.permutation(N)
  py = np_rng.permutation(M)
  f = _value_and_grad(mmd.mmd2, case_key, block_size)
  base, (gx, gy) = f(x, y)
  tol = dict(rtol=1e-5, atol=1e-6 * _term_scale(case, x, y))
  for perm_x, perm_y in ((px, None), (None, py), (px, py)):
    xp = x if perm_x is None else x[perm_x]
    yp = y if perm_y is None else y[perm_y]
    value, (gxp, gyp) = f(xp, yp)
    np.testing.assert_allclose(value, base, **tol)
    # The gradient permutes with its points.
    _assert_grads_close((gxp, gyp), (gx if perm_x is None else gx[perm_x],
                                     gy if perm_y is None else gy[perm_y]))


@pytest.mark.parametrize("block_size", [None, 7])
@pytest.mark.parametrize("case_key", [("coulomb", 3), ("coulomb", 8),
                                      ("gaussian", 8)], ids=_ids)
def test_translation_and_rotation_invariant(np_rng, case_key, block_size):
  """Large offsets: the Gram blocks' ‖a‖² + ‖b‖² - 2a·b must not cancel."""
  case = _case(*case_key)
  f = _value_and_grad(mmd.mmd2, case_key, block_size)
  x, y = _samples(np_rng, case.h)
  tol = dict(rtol=1e-4, atol=1e-5 * _term_scale(case, x, y))
  base, (gx, gy) = f(x, y)
  # Translation by 1000: compare with the float64 estimate on the translated
  # (float32-rounded) points themselves, so only the estimator's error counts.
  offset = np.float32(1000.0)
  xt, yt = x + offset, y + offset
  value, (gxt, gyt) = f(xt, yt)
  np.testing.assert_allclose(value, _reference(case, xt, yt), **tol)
  _assert_grads_close((gxt, gyt), mmd2_reference_grad(xt, yt, case.slope),
                      rtol=1e-3)
  # A random rotation.
  rot = jnp.asarray(np.linalg.qr(np_rng.normal(size=(case.h, case.h)))[0],
                    jnp.float32)
  value, grads = f(x @ rot.T, y @ rot.T)
  np.testing.assert_allclose(value, base, **tol)
  _assert_grads_close(grads, (gx @ rot.T, gy @ rot.T), rtol=1e-3)


# ----------------------------------------------------------------------------
# Coincident points.

COINCIDENT_CASES = [("coulomb", 3), ("coulomb", 8), ("coulomb", 64),
                    ("gaussian", 8), ("multiscale_coulomb", 3),
                    ("coulomb_log", 2), ("laplace_l1", 5)]


def _coincident_inputs(np_rng, h, which):
  """`[12, h]` codes and prior samples with the coincidences `which` names."""
  x = np_rng.standard_normal((12, h)).astype(np.float32)
  y = np_rng.standard_normal((12, h)).astype(np.float32) + np.float32(0.3)
  if which == "duplicates":
    x[1], x[5], x[6] = x[0], x[3], x[3]
    y[4], y[3] = y[2], x[7]
  elif which == "x_equals_y":
    y = x.copy()
  elif which == "all_codes_identical":
    x[:] = x[0]
  elif which == "everything_identical":
    x[:] = x[0]
    y = x.copy()
  else:
    assert which == "none", which
  return jnp.asarray(x), jnp.asarray(y)


@pytest.mark.parametrize("block_size", [None, 5])
@pytest.mark.parametrize("case_key", COINCIDENT_CASES, ids=_ids)
def test_coincident_points_are_finite(np_rng, case_key, block_size):
  case = _case(*case_key)
  f = _value_and_grad(mmd.mmd2, case_key, block_size)
  for which in ("duplicates", "x_equals_y", "all_codes_identical",
                "everything_identical"):
    x, y = _coincident_inputs(np_rng, case.h, which)
    value, (gx, gy) = f(x, y)
    assert jnp.isfinite(value), which
    assert jnp.all(jnp.isfinite(gx)) and jnp.all(jnp.isfinite(gy)), which
    scale = _term_scale(case, x, y)
    if which == "everything_identical":
      # Every kernel value is k(0): the estimate and its gradient are 0.
      np.testing.assert_allclose(value, 0.0, atol=1e-6 * scale)
      np.testing.assert_allclose(gx, 0.0, atol=1e-6 * scale)
      np.testing.assert_allclose(gy, 0.0, atol=1e-6 * scale)
    elif which != "x_equals_y":  # accuracy there: the test below
      np.testing.assert_allclose(value, _reference(case, x, y), rtol=1e-4,
                                 atol=1e-5 * scale, err_msg=which)


@pytest.mark.parametrize("block_size", [None, 5])
@pytest.mark.parametrize("case_key", COINCIDENT_CASES, ids=_ids)
def test_identical_samples_are_accurate(np_rng, case_key, block_size):
  """x == y exactly: every cross pair (x_i, y_i) is a coincident pair."""
  case = _case(*case_key)
  x, y = _coincident_inputs(np_rng, case.h, "x_equals_y")
  value, _ = _value_and_grad(mmd.mmd2, case_key, block_size)(x, y)
  np.testing.assert_allclose(value, _reference(case, x, y), rtol=1e-4,
                             atol=1e-5 * _term_scale(case, x, y))


@pytest.mark.parametrize("offset", [1e-3, 1e-4])
@pytest.mark.parametrize("block_size", [None, 5])
@pytest.mark.parametrize("case_key", COINCIDENT_CASES, ids=_ids)
def test_nearly_coincident_pairs_are_accurate(np_rng, case_key, block_size,
                                              offset):
  """Half of the prior samples sit `offset` (per coordinate) from a code."""
  case = _case(*case_key)
  x, y = _coincident_inputs(np_rng, case.h, "none")
  x, y = np.asarray(x), np.array(y)
  y[:6] = x[:6] + np.float32(offset)
  value, _ = _value_and_grad(mmd.mmd2, case_key, block_size)(x, y)
  np.testing.assert_allclose(value, _reference(case, x, y), rtol=1e-4,
                             atol=1e-5 * _term_scale(case, x, y))


@pytest.mark.parametrize("block_size", [None, 5])
def test_coincident_points_biased_estimator(np_rng, block_size):
  case = KernelCase("coulomb", 3)
  x, y = _coincident_inputs(np_rng, 3, "duplicates")
  value, (gx, gy) = _value_and_grad(mmd.mmd2_biased, ("coulomb", 3),
                                    block_size)(x, y)
  assert jnp.isfinite(value)
  assert jnp.all(jnp.isfinite(gx)) and jnp.all(jnp.isfinite(gy))
  np.testing.assert_allclose(
      value, mmd2_reference(x, y, case.profile, biased=True), rtol=1e-4)


# ----------------------------------------------------------------------------
# Default scale across latent sizes.


@pytest.mark.parametrize("h", [3, 8, 16, 64, 128, 256])
def test_default_coulomb_is_informative_in_float32(np_rng, h):
  kernel = KernelCase("coulomb", h).kernel  # all defaults
  x, y = _samples(np_rng, h, n=32, m=32, shift=0.0)
  k = np.asarray(kernel(x[:, None], y[None]))
  assert np.all(np.isfinite(k))
  assert np.all(k > 0)  # no pair underflows at the default scale
  # Informative: values vary, and few pairs saturate at 1/eps.
  assert np.mean(k >= (1 - 1e-6) / kernels.DEFAULT_EPS) < 0.1
  assert np.std(k) > 1e-2 * np.mean(k)
  for block_size in (None, 16) if h in (3, 256) else (None,):
    f = _value_and_grad(mmd.mmd2, ("coulomb", h), block_size)
    value, (gx, gy) = f(x, y)
    assert np.isfinite(value) and value != 0
    for g in (gx, gy):
      assert np.all(np.isfinite(np.asarray(g)))
      assert np.linalg.norm(np.asarray(g)) > 0
  # A mean shift of 0.5 per dimension is detected.
  assert f(*_samples(np_rng, h, n=32, m=32, shift=0.5))[0] > 0


# ----------------------------------------------------------------------------
# Two-sample behaviour.

TWO_SAMPLE_KERNELS = {
    "coulomb": functools.partial(kernels.coulomb),
    "gaussian": functools.partial(kernels.gaussian, scale=4.0),
    "imq": functools.partial(kernels.imq, scale=4.0),
}


def _draws(key, estimators, shifts, *, draws=50, n=64, h=8):
  """Each estimator over `draws` independent sample pairs, for each mean shift
  of y, from one compiled program."""

  @jax.jit
  def run(key, shift):
    def one(k):
      kx, ky = jax.random.split(k)
      x = jax.random.normal(kx, (n, h))
      y = jax.random.normal(ky, (n, h)) + shift
      return [estimator(x, y) for estimator in estimators]
    return jax.vmap(one)(jax.random.split(key, draws))

  return [[np.asarray(v, np.float64) for v in
           run(jax.random.fold_in(key, i), jnp.float32(shift))]
          for i, shift in enumerate(shifts)]


def _se(values):
  return values.std(ddof=1) / np.sqrt(len(values))


@pytest.mark.parametrize("name", list(TWO_SAMPLE_KERNELS))
def test_two_sample_behaviour(rng, name):
  kernel = TWO_SAMPLE_KERNELS[name]
  null, shifted = _draws(rng, [
      lambda x, y: mmd.mmd2(x, y, kernel),
      lambda x, y: mmd.mmd2(x, y, kernel, block_size=32),
      lambda x, y: mmd.mmd2_biased(x, y, kernel)], shifts=(0.0, 0.5))
  for values in null[:2] + shifted[:2]:
    assert _se(values) > 0
  # Same distribution: the unbiased estimate averages to 0 ...
  for values in null[:2]:
    assert abs(values.mean()) < 4 * _se(values), (values.mean(), _se(values))
  # ... a test with power: the biased V-statistic fails it.
  assert null[2].mean() > 4 * _se(null[2])
  # Mean shift of 0.5 in every dimension: clearly positive.
  for values in shifted[:2]:
    assert values.mean() > 5 * _se(values), (values.mean(), _se(values))
  # Dense and blocked agree draw by draw.
  np.testing.assert_allclose(null[1], null[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(shifted[1], shifted[0], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------
# Linear-time estimator.


@pytest.mark.parametrize("n", [2, 36, 37])
def test_linear_matches_reference(np_rng, n):
  case = KernelCase("coulomb", 6)
  x, y = _samples(np_rng, 6, n=n, m=n)
  pairs = n // 2
  x64, y64 = np.float64(x)[:2 * pairs], np.float64(y)[:2 * pairs]
  xa, xb, ya, yb = x64[0::2], x64[1::2], y64[0::2], y64[1::2]
  t = lambda a, b: np.sum((a - b)**2, -1)
  terms = (case.profile(t(xa, xb)) + case.profile(t(ya, yb)) -
           case.profile(t(xa, yb)) - case.profile(t(xb, ya)))
  got = mmd.mmd2_linear(x, y, case.kernel)
  chex.assert_shape(got, ())
  np.testing.assert_allclose(got, terms.mean(), rtol=1e-4,
                             atol=1e-5 * np.abs(terms).max())


@pytest.mark.parametrize("name", ["coulomb", "gaussian"])
def test_linear_is_unbiased(rng, name):
  """Averaged over draws, the linear estimator agrees with the quadratic one."""
  kernel = TWO_SAMPLE_KERNELS[name]
  (lin, quad), = _draws(rng, [lambda x, y: mmd.mmd2_linear(x, y, kernel),
                              lambda x, y: mmd.mmd2(x, y, kernel)],
                        shifts=(0.5,), draws=200, n=64, h=4)
  assert lin.mean() > 5 * _se(lin)  # clearly positive, like the quadratic one
  assert abs(lin.mean() - quad.mean()) < 4 * np.hypot(_se(lin), _se(quad))
  assert lin.std() > quad.std()  # the price of linear time


def test_linear_raises_on_unequal_sizes():
  with pytest.raises(ValueError, match="as many codes as prior samples"):
    mmd.mmd2_linear(jnp.ones((4, 3)), jnp.ones((6, 3)), kernels.coulomb)
  with pytest.raises(ValueError, match="as many codes as prior samples"):
    jax.jit(lambda a, b: mmd.mmd2_linear(a, b, kernels.coulomb))(
        jnp.ones((4, 3)), jnp.ones((5, 3)))


# ----------------------------------------------------------------------------
# Half precision.


@pytest.mark.parametrize("case_key,block_size,dtype", [
    (("coulomb", 64), None, jnp.bfloat16), (("coulomb", 64), 16, jnp.float16),
    (("imq", 8), None, jnp.float16), (("laplace_l1", 5), 16, jnp.bfloat16)],
    ids=lambda v: getattr(v, "__name__", str(v)))
def test_half_precision_inputs(np_rng, case_key, block_size, dtype):
  case = _case(*case_key)
  x, y = _samples(np_rng, case.h)
  xh, yh = x.astype(dtype), y.astype(dtype)
  got, (gx, gy) = _value_and_grad(mmd.mmd2, case_key, block_size)(xh, yh)
  chex.assert_type(got, jnp.float32)
  assert jnp.isfinite(got)
  chex.assert_type([gx, gy], dtype)
  assert jnp.all(jnp.isfinite(gx)) and jnp.all(jnp.isfinite(gy))
  # The same float32 computation on the rounded values...
  f32 = _value_and_grad(mmd.mmd2, case_key, block_size)
  want, _ = f32(xh.astype(jnp.float32), yh.astype(jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # ... which is close to the float32 inputs' estimate.
  np.testing.assert_allclose(got, f32(x, y)[0], rtol=0.05,
                             atol=0.02 * _term_scale(case, x, y))


# ----------------------------------------------------------------------------
# Bad input.

ESTIMATORS = [mmd.mmd2, mmd.mmd2_biased,
              functools.partial(mmd.mmd2, block_size=4),
              functools.partial(mmd.mmd2_biased, block_size=4)]
ALL_ESTIMATORS = ESTIMATORS + [mmd.mmd2_linear]
_est_ids = ["mmd2", "biased", "mmd2_blocked", "biased_blocked", "linear"]


def _call(estimator, x, y, kernel, use_jit):
  f = lambda a, b: estimator(a, b, kernel)
  return jax.jit(f)(x, y) if use_jit else f(x, y)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=_est_ids)
def test_wrong_rank_raises(estimator, use_jit):
  ok = jnp.ones((4, 3))
  for bad in (jnp.ones(4), jnp.ones((2, 4, 3)), jnp.float32(1.0)):
    with pytest.raises(ValueError, match=r"x must (be a set of points|have)"):
      _call(estimator, bad, ok, kernels.coulomb, use_jit)
    with pytest.raises(ValueError, match=r"y must (be a set of points|have)"):
      _call(estimator, ok, bad, kernels.coulomb, use_jit)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=_est_ids)
def test_mismatched_h_raises(estimator, use_jit):
  with pytest.raises(ValueError, match="same last dimension"):
    _call(estimator, jnp.ones((4, 3)), jnp.ones((4, 5)), kernels.coulomb,
          use_jit)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("estimator", [mmd.mmd2, ESTIMATORS[2], mmd.mmd2_linear],
                         ids=["mmd2", "mmd2_blocked", "linear"])
def test_too_few_points_raise(estimator, use_jit):
  for n in (0, 1):
    with pytest.raises(ValueError, match="x must hold at least 2 points"):
      _call(estimator, jnp.ones((n, 3)), jnp.ones((n, 3)), kernels.coulomb,
            use_jit)
    with pytest.raises(ValueError, match="y must hold at least 2 points"):
      _call(estimator, jnp.ones((4, 3)), jnp.ones((n, 3)), kernels.coulomb,
            use_jit)


def test_biased_needs_one_point():
  with pytest.raises(ValueError, match="x must hold at least 1 point"):
    mmd.mmd2_biased(jnp.ones((0, 3)), jnp.ones((4, 3)), kernels.coulomb)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=_est_ids)
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_inputs_raise_type_error(estimator, use_jit, dtype):
  ok = jnp.ones((4, 3))
  with pytest.raises(TypeError, match="x must have a floating dtype"):
    _call(estimator, jnp.ones((4, 3), dtype), ok, kernels.coulomb, use_jit)
  with pytest.raises(TypeError, match="y must have a floating dtype"):
    _call(estimator, ok, jnp.ones((4, 3), dtype), kernels.coulomb, use_jit)


BAD_HYPERPARAMETERS = [
    (functools.partial(kernels.coulomb, eps=0.0), 3, "eps"),
    (functools.partial(kernels.coulomb, eps=-1.0), 3, "eps"),
    (functools.partial(kernels.coulomb, scale=0.0), 3, "scale"),
    (functools.partial(kernels.coulomb_log, eps=0.0), 2, "eps"),
    (functools.partial(kernels.gaussian, scale=0.0), 3, "scale"),
    (functools.partial(kernels.gaussian, scale=-2.0), 3, "scale"),
    (functools.partial(kernels.imq, scale=0.0), 3, "scale"),
    (kernels.coulomb, 2, "h=2"),
    (kernels.coulomb_log, 3, "h=3"),
    (kernels.multiscale(kernels.coulomb, scales=[1.0], eps=0.0), 3, "eps"),
]
_hp_ids = ["coulomb_eps0", "coulomb_eps-1", "coulomb_scale0", "log_eps0",
           "gaussian_scale0", "gaussian_scale-2", "imq_scale0", "coulomb_h2",
           "log_h3", "multiscale_eps0"]


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=_est_ids)
@pytest.mark.parametrize("kernel,h,match", BAD_HYPERPARAMETERS, ids=_hp_ids)
def test_bad_kernel_hyperparameters_raise(estimator, use_jit, kernel, h, match):
  with pytest.raises(ValueError, match=match):
    _call(estimator, jnp.ones((4, h)), jnp.zeros((4, h)), kernel, use_jit)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("estimator", [mmd.mmd2, mmd.mmd2_biased])
@pytest.mark.parametrize("block_size", [0, -1, 1.5, True, "8"])
def test_bad_block_size_raises(estimator, use_jit, block_size):
  f = lambda a, b: estimator(a, b, kernels.coulomb, block_size=block_size)
  if use_jit:
    f = jax.jit(f)
  with pytest.raises(ValueError, match="block_size"):
    f(jnp.ones((4, 3)), jnp.zeros((4, 3)))


WRONG_SHAPE_KERNELS = [
    lambda a, b: jnp.sum(a * b),           # a scalar
    lambda a, b: a - b,                    # keeps the feature axis
    lambda a, b: jnp.sum(a * b, axis=0),   # reduces the wrong axis
]


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=_est_ids)
@pytest.mark.parametrize("kernel", WRONG_SHAPE_KERNELS,
                         ids=["scalar", "vector", "wrong_axis"])
def test_wrong_shape_kernel_raises(estimator, use_jit, kernel):
  with pytest.raises(ValueError, match="kernel must map"):
    _call(estimator, jnp.ones((4, 3)), jnp.zeros((4, 3)), kernel, use_jit)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=_est_ids)
def test_non_broadcasting_kernel_raises(estimator, use_jit):
  kernel = lambda a, b: a[..., :2] + b  # [.., 2] + [.., 3] cannot broadcast
  with pytest.raises(TypeError, match="kernel must map"):
    _call(estimator, jnp.ones((4, 3)), jnp.zeros((4, 3)), kernel, use_jit)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=_est_ids)
@pytest.mark.parametrize("kernel", ["coulomb", 1.0, None])
def test_non_callable_kernel_raises(estimator, use_jit, kernel):
  with pytest.raises(TypeError, match="kernel must be callable"):
    _call(estimator, jnp.ones((4, 3)), jnp.zeros((4, 3)), kernel, use_jit)


# ----------------------------------------------------------------------------
# The property-testing kit (couae_jax.testing) on the library's estimators.


IMQ = functools.partial(kernels.imq, scale=2.0)


def test_library_estimators_pass():
  for kernel, h in [(kernels.coulomb, 8), (IMQ, 4)]:
    testing.assert_mmd_properties(
        functools.partial(mmd.mmd2, kernel=kernel), h=h,
        blocked=functools.partial(mmd.mmd2, kernel=kernel, block_size=5))
  # A non-radial kernel takes the generic (broadcasting) path.
  generic = lambda x, y: jnp.exp(-0.5 * jnp.sum((x - y) ** 2, axis=-1))
  testing.assert_mmd_properties(
      functools.partial(mmd.mmd2, kernel=generic), h=3, n=8,
      blocked=functools.partial(mmd.mmd2, kernel=generic, block_size=3))
  testing.assert_mmd_properties(
      functools.partial(mmd.mmd2_linear, kernel=IMQ), h=4,
      skip=("permutation_invariance",))
  testing.assert_mmd_properties(
      functools.partial(mmd.mmd2_biased, kernel=IMQ), h=4,
      blocked=functools.partial(mmd.mmd2_biased, kernel=IMQ, block_size=5),
      skip=("null_mean",))


# ----------------------------------------------------------------------------
# The default path (`block_size="auto"`), column tiles, forward mode, memory.


@pytest.mark.parametrize("estimator", [mmd.mmd2, mmd.mmd2_biased],
                         ids=["mmd2", "biased"])
@pytest.mark.parametrize("case_key", [("coulomb", 3), ("sliced_coulomb", 64),
                                      ("gaussian", 8), ("laplace_l1", 5)],
                         ids=_ids)
def test_default_equals_dense(np_rng, estimator, case_key):
  """`block_size="auto"` (the default) is the same estimate as the dense
  path, value and gradient; calling without the argument is the same call."""
  case = _case(*case_key)
  x, y = _samples(np_rng, case.h)
  dense, dense_grads = _value_and_grad(estimator, case_key, None)(x, y)
  auto, auto_grads = _value_and_grad(estimator, case_key, "auto")(x, y)
  plain, plain_grads = jax.jit(jax.value_and_grad(
      lambda a, b: estimator(a, b, case.kernel), (0, 1)))(x, y)
  np.testing.assert_allclose(auto, dense, rtol=1e-5,
                             atol=1e-6 * _term_scale(case, x, y))
  _assert_grads_close(auto_grads, dense_grads)
  np.testing.assert_array_equal(plain, auto)
  for p, a in zip(plain_grads, auto_grads):
    np.testing.assert_array_equal(p, a)


def test_auto_block_sizes_are_blocked_and_bounded():
  """On CPU the default streams even blocks near 512 rows; generic kernels
  go dense only while their [rows, cols, h] broadcast is small."""
  auto = mmd._auto_block_size
  assert auto(90, 90, 64, 4, True, "cpu") == 90      # one block, no padding
  assert auto(8192, 8192, 64, 4, True, "cpu") == 512
  assert auto(1200, 1200, 64, 4, True, "cpu") == 400  # not 512+512+176
  assert auto(90, 90, 5, 4, False, "cpu") is None
  big = auto(40000, 40000, 64, 4, False, "cpu")
  assert isinstance(big, int) and big * 40000 * 64 * 4 <= mmd._GENERIC_BUDGET


@pytest.mark.parametrize("memory, one_block_rows",
                         [(96 * 2**30, 8192), (16 * 2**30, 4096), (None, 8192)])
def test_auto_block_sizes_on_accelerators_follow_device_memory(
    monkeypatch, memory, one_block_rows):
  """On GPUs and TPUs four block-sized Gram temporaries stay within 1/32 of
  the device's memory (1 GiB where it is unknown), in blocks of 128 to 8192
  rows."""
  monkeypatch.setattr(mmd, "_memory_bytes", lambda backend: memory)
  budget = memory // 32 if memory else 2**30
  for rows, cols in [(8192, 8192), (65536, 65536), (4 * 65536, 4 * 65536),
                     (4096, 65536)]:
    block = mmd._auto_block_size(rows, cols, 64, 4, True, "gpu")
    assert 128 <= block <= min(rows, 8192)
    assert block % 8 == 0 or block == rows
    if block > 128:
      assert 4 * block * cols * 4 <= budget
  # n = m = 4096: one block where four [8192, 8192] temporaries fit.
  assert mmd._auto_block_size(8192, 8192, 64, 4, True, "gpu") == one_block_rows


@pytest.mark.parametrize("case_key", [("coulomb", 3), ("sliced_coulomb", 64),
                                      ("imq", 8)], ids=_ids)
def test_column_tiles_equal_dense(np_rng, monkeypatch, case_key):
  """Rows meet the columns a tile at a time (a `lax.scan` of whole tiles and
  a remainder); tiles of 8 against n = 37, m = 53 cover every case."""
  monkeypatch.setattr(mmd, "_column_tile", lambda block_size, backend: 8)
  case = _case(*case_key)
  x, y = _samples(np_rng, case.h)
  f = lambda bs: jax.jit(jax.value_and_grad(
      lambda a, b: mmd.mmd2(a, b, case.kernel, block_size=bs), (0, 1)))
  dense, dense_grads = f(None)(x, y)
  for block_size in (7, 16):
    tiled, tiled_grads = f(block_size)(x, y)
    np.testing.assert_allclose(tiled, dense, rtol=1e-5,
                               atol=1e-6 * _term_scale(case, x, y))
    _assert_grads_close(tiled_grads, dense_grads)
    biased = mmd.mmd2_biased(x, y, case.kernel, block_size=block_size)
    np.testing.assert_allclose(
        biased, mmd.mmd2_biased(x, y, case.kernel, block_size=None),
        rtol=1e-5, atol=1e-6 * _term_scale(case, x, y))


@pytest.mark.parametrize("block_size", ["auto", 7])
@pytest.mark.parametrize("transform", ["jvp", "jacfwd"])
def test_forward_mode_on_the_blocked_path_names_block_size(np_rng, block_size,
                                                           transform):
  x, y = _samples(np_rng, 8)
  kernel = KernelCase("sliced_coulomb", 8).kernel
  call = {"jvp": lambda g, x: jax.jvp(g, (x,), (jnp.ones_like(x),))[1],
          "jacfwd": lambda g, x: jax.jacfwd(g)(x)}[transform]
  with pytest.raises(ValueError, match="block_size=None"):
    call(lambda a: mmd.mmd2(a, y, kernel, block_size=block_size), x)
  # The dense path takes it, and agrees with reverse mode on the blocked one.
  out = jax.jit(lambda x: call(
      lambda a: mmd.mmd2(a, y, kernel, block_size=None), x))(x)
  grad = jax.jit(jax.grad(
      lambda a: mmd.mmd2(a, y, kernel, block_size=block_size)))(x)
  want = jnp.sum(grad) if transform == "jvp" else grad
  np.testing.assert_allclose(out, want, rtol=1e-4,
                             atol=1e-5 * float(jnp.abs(grad).max()))


@pytest.mark.parametrize("block_size", ["auto", 3])
def test_second_derivatives_on_the_blocked_path_equal_dense(np_rng,
                                                            block_size):
  """Reverse mode first (jax.hessian is jacfwd of jacrev; grad of grad)
  differentiates the fused gradient sweep: the same as dense."""
  x, y = _samples(np_rng, 8, n=4, m=5)
  kernel = KernelCase("sliced_coulomb", 8).kernel
  f = lambda bs: (lambda a: mmd.mmd2(a, y, kernel, block_size=bs))
  # Jitted: eager jacfwd dispatches the sweep's every operation on its own.
  hessian = lambda bs: jax.jit(jax.hessian(f(bs)))(x)
  want = hessian(None)
  np.testing.assert_allclose(hessian(block_size), want, rtol=1e-4,
                             atol=1e-5 * float(jnp.abs(want).max()))
  grad_of_grad = lambda bs: jax.jit(jax.grad(
      lambda a: jnp.sum(jax.grad(f(bs))(a) ** 2)))(x)
  np.testing.assert_allclose(grad_of_grad(block_size), grad_of_grad(None),
                             rtol=1e-4, atol=1e-7)


def test_dense_refuses_what_cannot_fit():
  """n = 40000, h = 64 dense planned 77 GiB on a 23 GiB machine: refused at
  trace time, naming block_size; the default streams it."""
  memory = mmd._memory_bytes(jax.default_backend())
  assert memory and memory > 2**28
  n = int((memory / 32) ** 0.5) + 1   # 2 (2n)^2 4 bytes > memory
  x = jax.ShapeDtypeStruct((n, 64), jnp.float32)
  kernel = kernels.sliced_coulomb
  with pytest.raises(ValueError, match="block_size") as error:
    jax.eval_shape(lambda a, b: mmd.mmd2(a, b, kernel, block_size=None), x, x)
  assert "GiB" in str(error.value)
  jax.eval_shape(lambda a, b: mmd.mmd2(a, b, kernel), x, x)  # fine
  small = jax.ShapeDtypeStruct((4096, 64), jnp.float32)
  jax.eval_shape(lambda a, b: mmd.mmd2(a, b, kernel, block_size=None),
                 small, small)


@pytest.mark.parametrize("block_size", ["Auto", "dense", ""])
def test_bad_block_size_strings_raise(block_size):
  with pytest.raises(ValueError, match="block_size must be 'auto'"):
    mmd.mmd2(jnp.ones((4, 3)), jnp.zeros((4, 3)), kernels.coulomb,
             block_size=block_size)


def test_numpy_float64_inputs_are_converted_quietly(np_rng):
  import warnings
  x = np_rng.standard_normal((8, 5))
  y = np_rng.standard_normal((8, 5))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    for estimator in (mmd.mmd2, mmd.mmd2_biased, mmd.mmd2_linear):
      value = estimator(x, y, kernels.sliced_coulomb)
      assert value.dtype == jnp.float32
