"""Standardised training data: `DataScaling`, `(x - mean) / scale`.

With `config.standardize` the networks see `DataScaling.of(data).apply(x)`;
the scaling is saved with every checkpoint, so that a restored model
(`inference.TrainedModel`) takes and gives data in their own units.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from couae_jax import _checks
from couae_jax import data as data_lib

#: Examples per chunk when `DataScaling.of` reads a data set.
_STATS_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class DataScaling:
  """The standardisation `(x - mean) / scale` of training data, taken as the
  networks see them (`data.as_float`: uint8 pixels in [0, 1]).

  Attributes:
    mean: `[*data_shape]`, the per-feature mean of the training data.
    scale: the standard deviation of all its features together (one number,
      so distances shrink uniformly), finite and > 0.

  Raises:
    TypeError: `mean` not numeric.
    ValueError: `scale` not finite and > 0; in `apply` and `invert`, an `x`
      not of shape `[B, *mean.shape]`.

  Example:
    >>> import numpy as np
    >>> from couae_jax import scaling
    >>> data = np.array([[0.0, 2.0], [2.0, 6.0], [4.0, 4.0]], np.float32)
    >>> standard = scaling.DataScaling.of(data)
    >>> z = standard.apply(data)
    >>> np.allclose(z.mean(0), 0), np.allclose(standard.invert(z), data)
    (True, True)
  """
  mean: np.ndarray
  scale: float

  def __post_init__(self):
    dtype = getattr(self.mean, "dtype", None)
    if dtype is None or not np.issubdtype(dtype, np.number):
      raise TypeError(f"mean must be a numeric array [*data_shape]; got "
                      f"{self.mean!r:.80}.")
    _checks.positive_number("scale", self.scale)

  def _check_x(self, x):
    shape = getattr(x, "shape", None)
    if shape is None:
      x = np.asarray(x)
      shape = x.shape
    if tuple(shape[1:]) != tuple(self.mean.shape):
      dims = ", ".join(str(d) for d in self.mean.shape)
      raise ValueError(
          f"x must have shape [B, {dims}] (a batch of examples); got shape "
          f"{tuple(shape)}.")
    return x

  @classmethod
  def of(cls, data: np.ndarray) -> "DataScaling":
    """The standardisation of `data: [N, *data_shape]`, N >= 2, not
    constant; read in chunks, in float64 (no full-size float copy)."""
    data = np.asarray(data)
    if data.ndim < 2 or len(data) < 2:
      raise ValueError(
          f"data must be [N, *data_shape] with N >= 2; got shape "
          f"{data.shape}.")
    chunks = range(0, len(data), _STATS_CHUNK)
    mean = sum(data_lib.as_float(data[i:i + _STATS_CHUNK]).sum(
        axis=0, dtype=np.float64) for i in chunks) / len(data)
    square = sum(np.sum((data_lib.as_float(data[i:i + _STATS_CHUNK]) - mean)
                        ** 2) for i in chunks)
    scale = float(np.sqrt(square / data.size))
    if not scale > 0:
      raise ValueError("data are constant: there is no scale to divide by.")
    return cls(mean=mean.astype(np.float32), scale=scale)

  def apply(self, x):
    """Data units to standardised units: `[B, *data_shape]` to the same."""
    x = self._check_x(x)
    return (x - self.mean) / np.float32(self.scale)

  def invert(self, x):
    """Standardised units back to data units."""
    x = self._check_x(x)
    return x * np.float32(self.scale) + self.mean

  def to_dict(self) -> dict[str, Any]:
    """`{'mean': nested list, 'scale': float}`, for JSON."""
    return {"mean": self.mean.tolist(), "scale": self.scale}

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "DataScaling":
    """The inverse of `to_dict`."""
    if not isinstance(values, Mapping) or set(values) != {"mean", "scale"}:
      raise ValueError(
          f"values must be a mapping with keys 'mean' and 'scale' "
          f"(DataScaling.to_dict); got {values!r:.80}.")
    return cls(mean=np.asarray(values["mean"], np.float32),
               scale=float(values["scale"]))


__all__ = ["DataScaling"]
