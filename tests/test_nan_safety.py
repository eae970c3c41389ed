"""Nothing silently wrong: NaN/inf codes give NaN, far-apart or offset samples
give the float64 answer (issue #15, item 1).

References are float64 NumPy (conftest), evaluated on the very float32 inputs
the library sees, so only the library's own rounding is measured.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import KernelCase, mmd2_reference, mmd2_reference_grad, sq_dists

from couae_jax import losses, mmd


def laplace_l1(a, b):
  """A kernel without a radial form: the generic path."""
  return jnp.exp(-jnp.sum(jnp.abs(a - b), axis=-1))


# Every kernel family, on both distance paths (h <= 4 exact differences,
# h > 4 the matrix multiply), and the generic path.
NAN_CASES = [("sliced_coulomb", 3), ("sliced_coulomb", 8),
             ("sliced_coulomb", 64), ("coulomb", 3), ("coulomb_eps", 16),
             ("coulomb_log", 2), ("gaussian", 8), ("imq", 2),
             ("multiscale_imq", 8), ("laplace_l1", 5)]
_ids = lambda c: f"{c[0]}-{c[1]}"


def _kernel(name, h):
  return laplace_l1 if name == "laplace_l1" else KernelCase(name, h).kernel


def _estimator(name, block_size):
  if name == "linear":
    return mmd.mmd2_linear
  estimator = {"unbiased": mmd.mmd2, "biased": mmd.mmd2_biased}[name]
  return functools.partial(estimator, block_size=block_size)


@functools.lru_cache(maxsize=None)
def _value_and_grad(estimator_name, case_key, block_size):
  estimate = _estimator(estimator_name, block_size)
  kernel = _kernel(*case_key)
  return jax.jit(jax.value_and_grad(lambda x, y: estimate(x, y, kernel),
                                    (0, 1)))


def _samples(np_rng, h, n=24, m=24, shift=0.3):
  x = np_rng.standard_normal((n, h)).astype(np.float32)
  y = (np_rng.standard_normal((m, h)) + shift).astype(np.float32)
  return x, y


# ----------------------------------------------------------------------------
# NaN in, NaN out.


@pytest.mark.parametrize("bad", ["nan_in_x", "inf_in_y", "minus_inf_in_x"])
@pytest.mark.parametrize("estimator,block_size", [
    ("unbiased", None), ("unbiased", 5), ("unbiased", "auto"),
    ("biased", None), ("biased", 5), ("linear", None)],
    ids=lambda v: str(v))
@pytest.mark.parametrize("case_key", NAN_CASES, ids=_ids)
def test_a_non_finite_point_makes_value_and_gradient_nan(
    np_rng, case_key, estimator, block_size, bad):
  x, y = _samples(np_rng, case_key[1])
  value = {"nan_in_x": np.nan, "inf_in_y": np.inf,
           "minus_inf_in_x": -np.inf}[bad]
  target = y if bad.endswith("_y") else x
  target[5, 0] = value
  f = _value_and_grad(estimator, case_key, block_size)
  got, (gx, gy) = f(x, y)
  assert np.isnan(float(got)), (bad, float(got))
  # One bad row poisons every gradient row: nothing finite to step along.
  assert np.isnan(np.asarray(gx)).all() and np.isnan(np.asarray(gy)).all()
  # The same samples without the bad point are finite (the test can fail).
  target[5, 0] = 0.0
  got, (gx, gy) = f(x, y)
  assert np.isfinite(float(got))
  assert np.isfinite(np.asarray(gx)).all()


@pytest.mark.parametrize("regularizer", ["coulomb", "wae"])
@pytest.mark.parametrize("h", [3, 8, 64])
@pytest.mark.parametrize("block_size", [None, 5, "auto"])
def test_regularizers_return_nan_for_nan_codes(np_rng, regularizer, h,
                                               block_size):
  fn = {"coulomb": losses.coulomb_regularizer,
        "wae": losses.wae_regularizer}[regularizer]
  codes, _ = _samples(np_rng, h)
  codes[3, 1] = np.nan
  value, grad = jax.jit(jax.value_and_grad(
      lambda c: fn(c, key=jax.random.key(0), block_size=block_size)))(codes)
  assert np.isnan(float(value))
  assert np.isnan(np.asarray(grad)).all()


def test_nan_under_shard_map_reaches_every_device(np_rng):
  """One device's NaN makes the global estimate NaN on all of them."""
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ("data",))
  per = 4
  x = np_rng.standard_normal((per * len(devices), 8)).astype(np.float32)
  y = np_rng.standard_normal((per * len(devices), 8)).astype(np.float32)
  x[-1, 0] = np.nan  # on the last device only
  kernel = KernelCase("sliced_coulomb", 8).kernel
  spec = jax.sharding.PartitionSpec("data")
  f = jax.jit(jax.shard_map(
      lambda a, b: mmd.mmd2(a, b, kernel, block_size=3, axis_name="data")[None],
      mesh=mesh, in_specs=(spec, spec), out_specs=spec))
  sharded = jax.sharding.NamedSharding(mesh, spec)
  out = f(jax.device_put(x, sharded), jax.device_put(y, sharded))
  assert np.isnan(np.asarray(out)).all()


# ----------------------------------------------------------------------------
# Offsets: samples far from the origin and far from each other.


ACCURACY_CASES = [("sliced_coulomb", 8), ("sliced_coulomb", 64),
                  ("coulomb_eps", 16), ("gaussian", 8), ("imq", 64),
                  ("multiscale_imq", 8)]


def _term_scale(case, x, y):
  z = np.concatenate([np.float64(x), np.float64(y)])
  return float(np.abs(case.profile(sq_dists(z, z))).mean())


@pytest.mark.parametrize("layout", ["apart_1e2", "apart_1e4", "apart_1e6",
                                    "both_at_1e6", "outlier_1e5"])
@pytest.mark.parametrize("block_size", [None, 5])
@pytest.mark.parametrize("case_key", ACCURACY_CASES, ids=_ids)
def test_offset_samples_match_float64(np_rng, case_key, block_size, layout):
  """`‖a‖² + ‖b‖² - 2 a·b` must not cancel: x 1e6 away from y once gave
  2/eps (every within-sample distance rounded to 0) instead of about 2."""
  case = KernelCase(*case_key)
  x, y = _samples(np_rng, case.h)
  if layout.startswith("apart"):
    x = x + np.float32(float(layout.split("_")[1]))
  elif layout == "both_at_1e6":
    x, y = x + np.float32(1e6), y + np.float32(1e6)
  else:  # one code far out: it must not drag the frame of the others
    x[0] = x[0] + np.float32(1e5)
  f = _value_and_grad("unbiased", case_key, block_size)
  got, (gx, gy) = f(x, y)
  want = mmd2_reference(x, y, case.profile)
  scale = _term_scale(case, x, y)
  np.testing.assert_allclose(float(got), want, rtol=1e-4, atol=1e-5 * scale)
  want_gx, want_gy = mmd2_reference_grad(x, y, case.slope)
  for g, w in ((gx, want_gx), (gy, want_gy)):
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-3,
                               atol=1e-3 * np.abs(w).max() + 1e-12)


def test_far_apart_samples_score_near_the_float64_value(np_rng):
  """The issue's case: h = 64, sliced Coulomb, codes 1e6 from the prior."""
  case = KernelCase("sliced_coulomb", 64)
  x, y = _samples(np_rng, 64, n=64, m=64, shift=0.0)
  x = x + np.float32(1e6)
  got = float(mmd.mmd2(x, y, case.kernel))
  want = mmd2_reference(x, y, case.profile)
  assert 1.5 < want < 3.0, want  # about 2: the within-sample terms
  np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize("case_key", [("sliced_coulomb", 8), ("gaussian", 8),
                                      ("imq", 64), ("coulomb", 3)], ids=_ids)
@pytest.mark.parametrize("block_size", [None, 5])
def test_one_overflowing_code_gives_the_float64_value_or_nan(
    np_rng, case_key, block_size):
  """A code whose squared norm overflows float32 is infinitely far from
  everything: its kernel values are 0, which is the float64 answer too."""
  case = KernelCase(*case_key)
  x, y = _samples(np_rng, case.h)
  x[2, 1] = np.float32(1e30)
  got, _ = _value_and_grad("unbiased", case_key, block_size)(x, y)
  want = mmd2_reference(x, y, case.profile)
  if not np.isnan(float(got)):
    np.testing.assert_allclose(float(got), want, rtol=1e-4,
                               atol=1e-5 * _term_scale(case, x[3:], y))
