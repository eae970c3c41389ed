"""A prior's scale (`priors.scaled`, `TrainConfig.prior_scale`): its samples,
the kernel scales that follow it, the regulariser that draws from it, and the
trained model that generates from it after `restore`."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from couae_jax import config as config_lib
from couae_jax import inference, loop, losses, mmd, priors
from couae_jax import objective as objective_lib

KEY = jax.random.key(0)


# ---------------------------------------------------------------------------
# The samplers.


@pytest.mark.parametrize("base, base_std", [(priors.standard_normal, 1.0),
                                            (priors.uniform, 3.0 ** -0.5)])
@pytest.mark.parametrize("scale", [2.0 ** 0.5, 2.0, 0.5])
def test_scaled_prior_multiplies_the_samples(base, base_std, scale):
  prior = priors.scaled(base, scale)
  z = prior(KEY, (20000, 4))
  assert z.shape == (20000, 4) and z.dtype == jnp.float32
  np.testing.assert_array_equal(
      np.asarray(z), np.asarray(base(KEY, (20000, 4))) * np.float32(scale))
  assert float(jnp.std(z)) == pytest.approx(scale * base_std, rel=0.02)
  assert priors.coordinate_std(prior) == pytest.approx(scale * base_std)
  if base is priors.uniform:
    assert float(jnp.abs(z).max()) <= scale


def test_scaled_keeps_dtype_and_composes():
  prior = priors.scaled(priors.standard_normal, 2.0)
  assert prior(KEY, (3, 2), jnp.bfloat16).dtype == jnp.bfloat16
  assert priors.scaled(prior, 1.5) == priors.ScaledPrior(
      priors.standard_normal, 3.0)
  assert priors.scaled(priors.uniform, 1) is priors.uniform
  assert hash(prior) == hash(priors.scaled(priors.standard_normal, 2.0))
  # Inside shard_map, the scaled draw is sliced like any prior's.
  np.testing.assert_array_equal(
      np.asarray(priors.sample_shard(prior, KEY, (4, 3))),
      2.0 * np.asarray(priors.standard_normal(KEY, (4, 3))))


def test_coordinate_std_of_known_and_unknown_priors():
  assert priors.coordinate_std(priors.standard_normal) == 1.0
  assert priors.coordinate_std(priors.uniform) == 3.0 ** -0.5
  unknown = lambda key, shape, dtype=jnp.float32: jnp.zeros(shape, dtype)
  assert priors.coordinate_std(unknown) == 1.0
  assert priors.coordinate_std(unknown, default=0.5) == 0.5
  assert priors.coordinate_std(priors.scaled(unknown, 3.0)) == 3.0


@pytest.mark.parametrize("call, error, match", [
    (lambda: priors.scaled(None, 2.0), TypeError, "prior"),
    (lambda: priors.scaled(priors.uniform, 0.0), ValueError, "scale"),
    (lambda: priors.scaled(priors.uniform, -1.0), ValueError, "scale"),
    (lambda: priors.scaled(priors.uniform, float("inf")), ValueError,
     "scale"),
    (lambda: priors.scaled(priors.uniform, True), ValueError, "scale"),
    (lambda: priors.scaled(priors.uniform, "2"), ValueError, "scale"),
    (lambda: priors.ScaledPrior(priors.uniform, float("nan")), ValueError,
     "scale"),
    (lambda: priors.ScaledPrior("normal", 2.0), TypeError, "prior"),
])
def test_scaled_rejects_bad_arguments(call, error, match):
  with pytest.raises(error, match=match):
    call()


# ---------------------------------------------------------------------------
# The kernels' scales follow the prior's.


@pytest.mark.parametrize("scale", [1.0, 2.0 ** 0.5, 2.0])
@pytest.mark.parametrize("h", [2, 8])
def test_coulomb_default_length_follows_the_prior(scale, h):
  kernel = losses.coulomb_kernel(
      h, prior=priors.scaled(priors.standard_normal, scale))
  assert kernel.keywords["scale"] == pytest.approx(scale * math.sqrt(2 * h))
  uniform = losses.coulomb_kernel(h, prior=priors.scaled(priors.uniform,
                                                         scale))
  assert uniform.keywords["scale"] == pytest.approx(
      scale * 3.0 ** -0.5 * math.sqrt(2 * h))


def _codes(h=8, n=64, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(n, h)),
                     jnp.float32)


@pytest.mark.parametrize("scale", [2.0 ** 0.5, 2.0])
def test_wae_bandwidth_follows_the_prior(scale):
  """C = 2 h sigma² with sigma the scaled prior's: the regulariser with the
  scaled prior is the IMQ MMD at sigma = scale against scaled samples."""
  codes, h = _codes(), 8
  prior = priors.scaled(priors.standard_normal, scale)
  value = losses.wae_regularizer(codes, key=KEY, prior=prior)
  samples = scale * priors.standard_normal(KEY, codes.shape)
  expected = mmd.mmd2(codes, samples, losses.wae_kernel(h, sigma=scale))
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  # Not the unit bandwidth.
  unit = mmd.mmd2(codes, samples, losses.wae_kernel(h, sigma=1.0))
  assert abs(float(value) - float(unit)) > 1e-4
  # The bandwidths themselves: sqrt(2 h sigma² s) for each WAE scale s.
  kernel = losses.wae_kernel(h, sigma=scale)
  at = jnp.zeros(h), jnp.ones(h) * 0.3
  expected_k = sum(c / (c + h * 0.09) for c in (
      2 * h * scale**2 * s for s in losses.WAE_SCALES))
  np.testing.assert_allclose(kernel(*at), expected_k, rtol=1e-5)


def test_unit_prior_gives_the_values_of_before():
  """prior_scale 1: the same function, so bitwise the same penalties."""
  codes = _codes()
  for regularizer, kernel in [
      (losses.coulomb_regularizer, losses.coulomb_kernel(8, scale=4.0)),
      (losses.wae_regularizer, losses.wae_kernel(8, sigma=1.0))]:
    default = regularizer(codes, key=KEY)
    scaled = regularizer(codes, key=KEY,
                         prior=priors.scaled(priors.standard_normal, 1.0))
    assert float(default) == float(scaled)
    # The regularisers' default path is mmd2's (block_size="auto").
    explicit = mmd.mmd2(codes, priors.standard_normal(KEY, codes.shape),
                        kernel)
    np.testing.assert_allclose(default, explicit, rtol=1e-6)


# ---------------------------------------------------------------------------
# The trainer draws from the scaled prior and generates from it.

# optax/flax promote: these tests run with JAX's default dtype promotion.

@pytest.mark.standard_promotion
@pytest.mark.parametrize("model", ["couae", "wae"])
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_regularizer_draws_from_the_scaled_prior(model, scale):
  config = config_lib.TrainConfig(model=model, latent_dim=8, batch_size=64,
                                  prior_scale=scale)
  codes = _codes()
  out, penalty = objective_lib.make_objective(config).regularize(codes, KEY, None)
  assert out is codes
  samples = scale * priors.standard_normal(KEY, codes.shape)
  kernel = (losses.coulomb_kernel(8, scale=scale * math.sqrt(16))
            if model == "couae" else losses.wae_kernel(8, sigma=scale))
  expected = mmd.mmd2(codes, samples, kernel, block_size=config.block_size)
  np.testing.assert_allclose(penalty, expected, rtol=1e-5)


@pytest.mark.standard_promotion
def test_kernel_scale_overrides_the_prior_default():
  config = config_lib.TrainConfig(latent_dim=8, batch_size=64,
                                  prior_scale=2.0, kernel_scale=1.5)
  codes = _codes()
  _, penalty = objective_lib.make_objective(config).regularize(codes, KEY, None)
  expected = mmd.mmd2(codes, 2.0 * priors.standard_normal(KEY, codes.shape),
                      losses.coulomb_kernel(8, scale=1.5),
                      block_size=config.block_size)
  np.testing.assert_allclose(penalty, expected, rtol=1e-5)


@pytest.mark.standard_promotion
def test_model_trained_with_a_scaled_prior_generates_from_it(tmp_path):
  config = config_lib.TrainConfig(
      data="grid", latent_dim=3, hidden=(16,), batch_size=100, steps=3,
      log_every=3, checkpoint_every=3, prior_scale=2.0)
  loop.fit(config, str(tmp_path), progress=False)
  restored = inference.restore(str(tmp_path))
  assert restored.config.prior_scale == 2.0
  key = jax.random.key(7)
  codes = np.asarray(restored.sample_prior(key, 4000))
  # What generation draws is the sampler's N(0, 4 I) draw, element for element.
  reference = np.asarray(
      priors.scaled(priors.standard_normal, 2.0)(key, (4000, 3)))
  np.testing.assert_array_equal(codes, reference)
  np.testing.assert_array_equal(
      codes, 2.0 * np.asarray(priors.standard_normal(key, (4000, 3))))
  assert np.std(codes) == pytest.approx(2.0, rel=0.03)
  np.testing.assert_array_equal(
      np.asarray(restored.sample(key, 16)),
      np.asarray(restored.decode(reference[:16])))
  # A unit-prior model's codes are half as spread.
  unit = dataclasses.replace(restored,
                             config=config.replace(prior_scale=1.0))
  assert np.std(np.asarray(unit.sample_prior(key, 4000))) == pytest.approx(
      1.0, rel=0.03)
