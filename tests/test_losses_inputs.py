"""The regularisers' errors name their own arguments, and NumPy codes are
converted quietly (issue #13, the losses part)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from couae_jax import losses

REGULARIZERS = {"coulomb": losses.coulomb_regularizer,
                "wae": losses.wae_regularizer}


@pytest.fixture(params=sorted(REGULARIZERS))
def regularizer(request):
  return REGULARIZERS[request.param]


@pytest.mark.parametrize("use_jit", [False, True])
def test_too_few_codes_name_codes(regularizer, use_jit):
  f = lambda c: regularizer(c, key=jax.random.key(0))
  f = jax.jit(f) if use_jit else f
  with pytest.raises(ValueError, match="codes must hold at least 2 points"):
    f(jnp.ones((1, 4)))


@pytest.mark.parametrize("count", [0, 1])
def test_too_few_prior_samples_name_prior_samples(regularizer, count):
  with pytest.raises(ValueError,
                     match="prior_samples must hold at least 2 points"):
    regularizer(jnp.ones((8, 4)), jnp.ones((count, 4)))
  with pytest.raises(ValueError,
                     match="prior_samples must hold at least 2 points"):
    regularizer(jnp.ones((8, 4)), key=jax.random.key(0),
                num_prior_samples=1)


def test_mismatched_h_names_both(regularizer):
  with pytest.raises(ValueError,
                     match="codes and prior_samples must have the same"):
    regularizer(jnp.ones((8, 4)), jnp.ones((8, 3)))


@pytest.mark.parametrize("key", [jax.random.key(0), jax.random.PRNGKey(0)],
                         ids=["typed", "raw"])
def test_a_positional_key_is_named(regularizer, key):
  with pytest.raises(TypeError, match="pass the key by keyword: key=key"):
    regularizer(jnp.ones((8, 4)), key)


def test_integer_codes_name_codes(regularizer):
  with pytest.raises(TypeError, match="codes must have a floating dtype"):
    regularizer(np.ones((8, 4), np.int32), key=jax.random.key(0))


def test_numpy_float64_codes_are_converted_without_warnings(regularizer):
  codes = np.random.default_rng(0).standard_normal((16, 8))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    value = regularizer(codes, key=jax.random.key(0))
    given = regularizer(codes, codes[::-1].copy())
  assert value.dtype == jnp.float32 and given.dtype == jnp.float32
  # The same as float32 codes.
  np.testing.assert_allclose(
      value, regularizer(jnp.asarray(codes, jnp.float32),
                         key=jax.random.key(0)), rtol=1e-6)


@pytest.mark.parametrize("shape, message", [
    ((0, 3), "at least one example"), ((), "predictions")])
def test_squared_error_rejects_empty_and_scalar_batches(shape, message):
  batch = np.zeros(shape, np.float32)
  with pytest.raises(ValueError, match=message):
    losses.squared_error(batch, batch)
