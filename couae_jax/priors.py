"""Priors p_Z: functions `prior(key, shape, dtype) -> samples`.

A prior is any function with this signature; the trainer and the losses take
one as an argument, so a new prior is a new function, not a new code path.
`scaled(prior, s)` multiplies a prior's samples by s (WAE's CelebA prior
N(0, 2 I) is `scaled(standard_normal, 2 ** 0.5)`), and `coordinate_std` gives
the coordinate standard deviation the MMD kernels' default scales use, for the
built-in priors and scaled ones alike.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from couae_jax import _checks

Prior = Callable[..., jax.Array]


def standard_normal(key: jax.Array, shape: Sequence[int],
                    dtype=jnp.float32) -> jax.Array:
  """N(0, I) samples of `shape` (`[m, h]` for m prior samples in h dims).

  Args:
    key: one PRNG key.
    shape: the samples' shape, a tuple (or list) of positive ints.
    dtype: a floating dtype (default float32).

  Returns:
    `shape` samples of `dtype`.

  Raises:
    TypeError: `key` not one PRNG key, `dtype` not floating.
    ValueError: a bad `shape`.

  Example:
    >>> import jax
    >>> from couae_jax import priors
    >>> priors.standard_normal(jax.random.key(0), (5, 3)).shape
    (5, 3)
  """
  shape, dtype = _check_draw(key, shape, dtype, "shape")
  return jax.random.normal(key, shape, dtype)


def uniform(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """Uniform samples on the cube [-1, 1]^h (the prior of the authors' 2018 code).

  Args and Raises: as `standard_normal`.

  Returns:
    `shape` samples of `dtype` in [-1, 1).

  Example:
    >>> import jax
    >>> from couae_jax import priors
    >>> z = priors.uniform(jax.random.key(0), (1000, 3))
    >>> bool((abs(z) <= 1).all())
    True
  """
  shape, dtype = _check_draw(key, shape, dtype, "shape")
  return jax.random.uniform(key, shape, dtype, minval=-1.0, maxval=1.0)


def sample_shard(prior: Prior, key: jax.Array, local_shape: Sequence[int],
                 dtype=jnp.float32, axis_name: Optional[str] = None
                 ) -> jax.Array:
  """This device's rows of a draw for the whole global batch.

  Inside `shard_map` over `axis_name`, draws `prior` for all devices' rows
  together from `key` (the same key on every device) and returns this
  device's slice, so that the samples of a global batch do not depend on how
  many devices share it. Without `axis_name`, a plain draw of `local_shape`.

  Args:
    prior: the sampler, `prior(key, shape, dtype)`, e.g. `standard_normal`.
    key: one PRNG key, identical on every device.
    local_shape: `(b, ...)`, this device's share, a tuple (or list) of
      positive ints.
    dtype: the samples' floating dtype (default float32).
    axis_name: the mesh axis the global batch is split over, or None
      (default).

  Returns:
    `[b, ...]` samples.

  Raises:
    TypeError: `prior` not callable, `key` not one PRNG key, `dtype` not
      floating, `axis_name` not None or a str.
    ValueError: a bad `local_shape`.

  Example:
    >>> import jax
    >>> from jax.sharding import PartitionSpec as P
    >>> from couae_jax import priors
    >>> key = jax.random.key(0)
    >>> plain = priors.sample_shard(priors.standard_normal, key, (4, 3))
    >>> plain.shape
    (4, 3)
    >>> mesh = jax.make_mesh((1,), ("data",))
    >>> draw = jax.shard_map(
    ...     lambda key: priors.sample_shard(priors.standard_normal, key, (4, 3),
    ...                                     axis_name="data"),
    ...     mesh=mesh, in_specs=P(), out_specs=P("data"))
    >>> bool((draw(key) == plain).all())  # one device: the same draw
    True
  """
  if not callable(prior):
    raise TypeError(f"prior must be callable as prior(key, shape, dtype); "
                    f"got {prior!r:.80}.")
  shape, dtype = _check_draw(key, local_shape, dtype, "local_shape")
  _checks.axis_name("axis_name", axis_name)
  if axis_name is None:
    return prior(key, shape, dtype)
  devices = jax.lax.psum(1, axis_name)
  rows = shape[0]
  samples = prior(key, (rows * devices,) + shape[1:], dtype)
  return jax.lax.dynamic_slice_in_dim(
      samples, jax.lax.axis_index(axis_name) * rows, rows)


def _check_draw(key, shape, dtype, shape_name: str
                ) -> tuple[tuple[int, ...], jnp.dtype]:
  _checks.prng_key("key", key)
  shape = _checks.shape_tuple(shape_name, shape)
  return shape, _checks.floating_dtype("dtype", dtype)


#: Root-mean-square coordinate of each prior, the sigma in the WAE kernel scale
#: C = 2 h sigma² and in the Coulomb kernel's default length sigma * sqrt(2 h).
#: Scaled priors: see `coordinate_std`.
PRIOR_STD = {standard_normal: 1.0, uniform: 3.0 ** -0.5}

PRIORS = {"normal": standard_normal, "uniform": uniform}


@dataclasses.dataclass(frozen=True)
class ScaledPrior:
  """The prior whose samples are `scale` times those of `prior`.

  Made by `scaled`; a frozen dataclass, so hashable and equal to any other
  with the same `prior` and `scale`. Called like any prior,
  `scaled_prior(key, shape, dtype) = scale * prior(key, shape, dtype)`.

  Attributes:
    prior: the unscaled sampler, `prior(key, shape, dtype)`.
    scale: the factor, a finite number > 0 (else errors as `scaled`).

  Example:
    >>> import jax
    >>> from couae_jax import priors
    >>> p = priors.ScaledPrior(priors.uniform, 2.0)
    >>> bool((abs(p(jax.random.key(0), (100, 3))) <= 2).all())
    True
  """
  prior: Prior
  scale: float

  def __post_init__(self):
    _check_scaling(self.prior, self.scale)

  def __call__(self, key: jax.Array, shape: Sequence[int],
               dtype=jnp.float32) -> jax.Array:
    """`shape` samples of `dtype`: `scale * prior(key, shape, dtype)`."""
    samples = self.prior(key, shape, dtype)
    return samples * jnp.asarray(self.scale, samples.dtype)


def scaled(prior: Prior, scale: float) -> Prior:
  """`prior` with its samples multiplied by `scale`.

  The normal prior becomes N(0, scale² I); the uniform prior the cube
  [-scale, scale]^h. `scale == 1` returns `prior` itself (the same function,
  so nothing about an unscaled run changes); a `ScaledPrior` is scaled once,
  by the product of the factors.

  Args:
    prior: a sampler `prior(key, shape, dtype)`, e.g. `standard_normal`.
    scale: the factor, a finite number > 0.

  Returns:
    `prior` when `scale == 1`, else a `ScaledPrior`.

  Raises:
    TypeError: `prior` not callable.
    ValueError: `scale` not a finite number > 0.

  Example:
    >>> import jax
    >>> from couae_jax import priors
    >>> priors.scaled(priors.standard_normal, 1.0) is priors.standard_normal
    True
    >>> wide = priors.scaled(priors.standard_normal, 2 ** 0.5)  # N(0, 2 I)
    >>> z = wide(jax.random.key(0), (20000, 2))
    >>> round(float(z.var()), 1), round(priors.coordinate_std(wide) ** 2, 6)
    (2.0, 2.0)
  """
  _check_scaling(prior, scale)
  if scale == 1:
    return prior
  if isinstance(prior, ScaledPrior):
    return scaled(prior.prior, prior.scale * float(scale))
  return ScaledPrior(prior, float(scale))


def coordinate_std(prior: Prior, default: float = 1.0) -> float:
  """The root-mean-square coordinate sigma of a prior's samples.

  `PRIOR_STD[prior]` for the built-in priors, `scale * coordinate_std(base)`
  for a `ScaledPrior`, and `default` for a prior it does not know. It is the
  sigma of the WAE kernel's bandwidth `C = 2 h sigma²` and of the Coulomb
  kernel's default length `sigma * sqrt(2 h)` (`couae_jax.losses`).

  Args:
    prior: a sampler, e.g. `standard_normal` or `scaled(uniform, 2.0)`.
    default: the sigma of an unknown prior (default 1).

  Returns:
    A float.

  Example:
    >>> from couae_jax import priors
    >>> priors.coordinate_std(priors.standard_normal)
    1.0
    >>> priors.coordinate_std(priors.scaled(priors.uniform, 3.0))
    1.7320508075688772
  """
  if isinstance(prior, ScaledPrior):
    return prior.scale * coordinate_std(prior.prior, default)
  try:
    return PRIOR_STD.get(prior, default)
  except TypeError:  # an unhashable callable
    return default


def _check_scaling(prior, scale) -> None:
  if not callable(prior):
    raise TypeError(f"prior must be callable as prior(key, shape, dtype); "
                    f"got {prior!r:.80}.")
  if (isinstance(scale, bool) or not isinstance(scale, numbers.Real)
      or not math.isfinite(scale) or scale <= 0):
    raise ValueError(f"scale must be a finite number > 0; got {scale!r}.")


__all__ = ["PRIORS", "PRIOR_STD", "Prior", "ScaledPrior", "coordinate_std",
           "sample_shard", "scaled", "standard_normal", "uniform"]
