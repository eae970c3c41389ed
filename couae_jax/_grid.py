"""The Grid mixture (the paper's synthetic benchmark), re-exported by `data`."""

from __future__ import annotations

import dataclasses
import math
from typing import Union

import jax
import numpy as np

SeedLike = Union[int, tuple[int, ...], np.random.Generator, jax.Array]

#: Mode coordinates along each axis of the Grid data set.
GRID_COORDINATES = np.linspace(-21.0, 21.0, 5)
#: Variance of each Grid mode (covariance 0.1·I).
GRID_VARIANCE = 0.1


def _rng(key_or_seed: SeedLike) -> np.random.Generator:
  """A NumPy generator from an int seed, a tuple of ints, a Generator (used
  as is) or a JAX PRNG key (typed or raw uint32)."""
  if isinstance(key_or_seed, np.random.Generator):
    return key_or_seed
  if isinstance(key_or_seed, jax.Array):
    if jax.dtypes.issubdtype(key_or_seed.dtype, jax.dtypes.prng_key):
      key_or_seed = jax.random.key_data(key_or_seed)
    return np.random.default_rng(np.asarray(key_or_seed).ravel())
  return np.random.default_rng(key_or_seed)


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
  """Equal-weight mixture of isotropic Gaussians `N(means[k], variance · I)`.

  Attributes:
    means: `[K, d]` float64, the component means.
    variance: the variance of every coordinate of every component.
  """
  means: np.ndarray
  variance: float

  def sample(self, key_or_seed: SeedLike, n: int, *,
             dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Draws `n` i.i.d. points.

    Args:
      key_or_seed: an int seed, a tuple of ints, a `np.random.Generator` or a
        JAX PRNG key; equal seeds give equal samples.
      n: number of points.
      dtype: dtype of the returned points.

    Returns:
      `(points [n, d] dtype, modes [n] int64)`, each point's component index.
    """
    rng = _rng(key_or_seed)
    modes = rng.integers(len(self.means), size=n)
    return self._around(modes, rng, dtype), modes

  def _around(self, modes: np.ndarray, rng: np.random.Generator,
              dtype) -> np.ndarray:
    noise = rng.standard_normal((len(modes), self.means.shape[1]))
    return (self.means[modes] + math.sqrt(self.variance) * noise).astype(dtype)

  def log_density(self, points: np.ndarray) -> np.ndarray:
    """Exact log-density of `points: [..., d]`, float64 `[...]`."""
    points = np.asarray(points, np.float64)
    d = self.means.shape[1]
    if points.ndim < 1 or points.shape[-1] != d:
      raise ValueError(
          f"points must have shape [..., {d}]; got {points.shape}.")
    sq_dist = np.sum((points[..., None, :] - self.means) ** 2, axis=-1)
    logits = -sq_dist / (2.0 * self.variance)
    peak = logits.max(axis=-1, keepdims=True)
    log_sum = np.log(np.sum(np.exp(logits - peak), axis=-1)) + peak[..., 0]
    return (log_sum - math.log(len(self.means))
            - 0.5 * d * math.log(2.0 * math.pi * self.variance))


def grid_mixture(coordinates: np.ndarray = GRID_COORDINATES,
                 variance: float = GRID_VARIANCE) -> GaussianMixture:
  """The Grid mixture: one mode at every point of `coordinates × coordinates`.

  Mode `k = 5 i + j` has mean `(coordinates[i], coordinates[j])`; with the
  defaults, 25 modes spaced 10.5 apart on [-21, 21]² with covariance 0.1·I.
  """
  coordinates = np.asarray(coordinates, np.float64)
  rows, cols = np.meshgrid(coordinates, coordinates, indexing="ij")
  return GaussianMixture(np.stack([rows.ravel(), cols.ravel()], axis=-1),
                         float(variance))


def sample_grid(key_or_seed: SeedLike, n: int, *,
                dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
  """`n` points of the Grid mixture and their mode indices; see `sample`."""
  return grid_mixture().sample(key_or_seed, n, dtype=dtype)


def grid_log_density(points: np.ndarray) -> np.ndarray:
  """Exact log-density of the Grid mixture at `points: [..., 2]`, float64."""
  return grid_mixture().log_density(points)


def grid_training_set(seed: SeedLike = 0, per_mode: int = 20, *,
                      dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
  """The Grid training set: exactly `per_mode` points from each of the 25 modes.

  The authors' protocol draws 500 points, 20 per mode, once. Points are in
  mode order (mode `k` fills rows `k·per_mode ... (k+1)·per_mode - 1`); the
  input pipeline shuffles.

  Returns:
    `(points [25·per_mode, 2] dtype, modes [25·per_mode] int64)`.
  """
  mixture = grid_mixture()
  modes = np.repeat(np.arange(len(mixture.means)), per_mode)
  return mixture._around(modes, _rng(seed), dtype), modes
