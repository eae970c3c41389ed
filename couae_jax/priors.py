"""Priors p_Z: functions `prior(key, shape, dtype) -> samples`.

A prior is any function with this signature; the trainer and the losses take
one as an argument, so a new prior is a new function, not a new code path.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

Prior = Callable[..., jax.Array]


def standard_normal(key: jax.Array, shape: Sequence[int],
                    dtype=jnp.float32) -> jax.Array:
  """N(0, I) samples of `shape` (`[m, h]` for m prior samples in h dims).

  Example:
    >>> import jax
    >>> from couae_jax import priors
    >>> priors.standard_normal(jax.random.key(0), (5, 3)).shape
    (5, 3)
  """
  return jax.random.normal(key, tuple(shape), dtype)


def uniform(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """Uniform samples on the cube [-1, 1]^h (the prior of the authors' 2018 code).

  Example:
    >>> import jax
    >>> from couae_jax import priors
    >>> z = priors.uniform(jax.random.key(0), (1000, 3))
    >>> bool((abs(z) <= 1).all())
    True
  """
  return jax.random.uniform(key, tuple(shape), dtype, minval=-1.0, maxval=1.0)


def sample_shard(prior: Prior, key: jax.Array, local_shape: Sequence[int],
                 dtype=jnp.float32, axis_name: Optional[str] = None
                 ) -> jax.Array:
  """This device's rows of a draw for the whole global batch.

  Inside `shard_map` over `axis_name`, draws `prior` for all devices' rows
  together from `key` (the same key on every device) and returns this
  device's slice, so that the samples of a global batch do not depend on how
  many devices share it. Without `axis_name`, a plain draw of `local_shape`.

  Args:
    prior: the sampler, `prior(key, shape, dtype)`.
    key: PRNG key, identical on every device.
    local_shape: `[b, ...]`, this device's share.
    dtype: the samples' dtype.
    axis_name: the mesh axis the global batch is split over.

  Returns:
    `[b, ...]` samples.
  """
  local_shape = tuple(local_shape)
  if axis_name is None:
    return prior(key, local_shape, dtype)
  devices = jax.lax.psum(1, axis_name)
  rows = local_shape[0]
  samples = prior(key, (rows * devices,) + local_shape[1:], dtype)
  return jax.lax.dynamic_slice_in_dim(
      samples, jax.lax.axis_index(axis_name) * rows, rows)


#: Root-mean-square coordinate of each prior, the sigma in the WAE kernel scale
#: C = 2 h sigma² and in the Coulomb kernel's default length sigma * sqrt(2 h).
PRIOR_STD = {standard_normal: 1.0, uniform: 3.0 ** -0.5}

PRIORS = {"normal": standard_normal, "uniform": uniform}

__all__ = ["PRIORS", "PRIOR_STD", "Prior", "sample_shard", "standard_normal",
           "uniform"]
