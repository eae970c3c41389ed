"""Argument validation shared by the public functions.

Every check runs at trace time on static information (shapes, dtypes, Python
numbers), so bad input fails with a message naming the argument instead of a
NaN or an error from inside XLA.
"""

from __future__ import annotations

import math
import numbers
import os

import jax
import jax.numpy as jnp
import numpy as np


def floating_array(name: str, value, *, min_rank: int = 1) -> jax.Array:
  """Returns `value` as an array after checking it is floating with enough rank."""
  if not hasattr(value, "dtype") or not hasattr(value, "shape"):
    value = jnp.asarray(value)
  if not jnp.issubdtype(value.dtype, jnp.floating):
    raise TypeError(
        f"{name} must have a floating dtype (float16, bfloat16, float32, "
        f"float64); got {value.dtype}.")
  if value.ndim < min_rank:
    raise ValueError(
        f"{name} must have rank >= {min_rank}; got shape {tuple(value.shape)}.")
  return value


def sample_set(name: str, value, *, min_points: int = 1) -> jax.Array:
  """Checks a set of points `[n, h]` with at least `min_points` rows."""
  value = floating_array(name, value)
  if value.ndim != 2:
    raise ValueError(
        f"{name} must be a set of points of shape [n, h]; got shape "
        f"{tuple(value.shape)}.")
  if value.shape[0] < min_points:
    raise ValueError(
        f"{name} must hold at least {min_points} points; got "
        f"{value.shape[0]} (shape {tuple(value.shape)}).")
  return value


def same_dimension(x_name: str, x, y_name: str, y) -> int:
  """Checks that the last (feature) dimensions agree and returns it."""
  if x.shape[-1] != y.shape[-1]:
    raise ValueError(
        f"{x_name} and {y_name} must have the same last dimension h; got "
        f"{x_name}.shape={tuple(x.shape)} and {y_name}.shape={tuple(y.shape)}.")
  return int(x.shape[-1])


def positive(name: str, value) -> None:
  """Checks `value > 0` where it is known at trace time (traced values pass)."""
  concrete = _concrete(value)
  if concrete is None:
    return
  if not np.all(np.isfinite(concrete)) or not np.all(concrete > 0):
    raise ValueError(f"{name} must be finite and > 0; got {value!r}.")


def non_negative(name: str, value) -> None:
  """Checks `value >= 0` where it is known at trace time."""
  concrete = _concrete(value)
  if concrete is None:
    return
  if not np.all(np.isfinite(concrete)) or not np.all(concrete >= 0):
    raise ValueError(f"{name} must be finite and >= 0; got {value!r}.")


def positive_number(name: str, value) -> None:
  """Checks `value` is a real Python or NumPy number, finite and > 0 (a
  bool, a string or an array is not a number here)."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not math.isfinite(value) or value <= 0):
    raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")


def python_bool(name: str, value) -> None:
  """Checks `value` is a Python bool: flags that choose the program cannot
  be arrays or traced values (those fail later, inside Flax, with a
  concretization error)."""
  if not isinstance(value, bool):
    raise TypeError(f"{name} must be a Python bool; got {value!r}.")


def positive_int(name: str, value, *, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f"{name} must be a positive integer; got {value!r}.")


def prng_key(name: str, key) -> None:
  """Checks `key` is one PRNG key: typed (`jax.random.key`) or raw uint32
  key data (`jax.random.PRNGKey`)."""
  dtype = getattr(key, "dtype", None)
  shape = getattr(key, "shape", None)
  if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
    if shape == ():
      return
  elif dtype == jnp.uint32 and shape is not None and len(shape) == 1:
    return
  raise TypeError(
      f"{name} must be a single PRNG key (jax.random.key(seed)); got "
      f"{type(key).__name__} with dtype {dtype} and shape {shape}.")


def _concrete(value):
  """`value` as a numpy array, or None for a traced (abstract) value."""
  try:
    return np.asarray(value)
  except (jax.errors.TracerArrayConversionError,
          jax.errors.ConcretizationTypeError):
    return None


def compute_dtype(*arrays) -> jnp.dtype:
  """The dtype kernels compute in: float64 if any input is, else float32.

  Half-precision codes are common in mixed-precision training, but
  `1 / ‖x - y‖^(h-2)` leaves float16's and bfloat16's range for ordinary
  latent sizes, so kernels always evaluate in float32 or wider. (Chosen
  explicitly rather than by promotion, which strict promotion mode forbids
  between float widths.)
  """
  wide = any(jnp.dtype(array.dtype) == jnp.float64 for array in arrays)
  return jnp.dtype(jnp.float64 if wide else jnp.float32)


def non_negative_int(name: str, value) -> None:
  """Checks `value` is a Python (or NumPy) integer >= 0, not a bool."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value < 0):
    raise ValueError(f"{name} must be an integer >= 0; got {value!r}.")


def instance(name: str, value, types, what: str) -> None:
  """Checks `isinstance(value, types)`; the TypeError says `what` is wanted."""
  if not isinstance(value, types):
    raise TypeError(f"{name} must be {what}; got {type(value).__name__} "
                    f"{value!r:.80}.")


def path(name: str, value) -> str:
  """Checks `value` is a path (str or os.PathLike) and returns it as a str."""
  if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
    raise TypeError(
        f"{name} must be a path (str or os.PathLike); got "
        f"{type(value).__name__} {value!r:.80}.")
  value = os.fspath(value)
  if not isinstance(value, str) or not value:
    raise ValueError(f"{name} must be a non-empty path; got {value!r}.")
  return value


def shape_tuple(name: str, shape, *, min_rank: int = 1,
                allow_list: bool = True) -> tuple[int, ...]:
  """Checks `shape` is a tuple (or, with `allow_list`, a list) of ints >= 1
  of length >= `min_rank` and returns it as a tuple. Module attributes take
  no lists: they must stay hashable to be static arguments of `jax.jit`."""
  types = (tuple, list) if allow_list else tuple
  if (not isinstance(shape, types) or len(shape) < min_rank
      or any(isinstance(d, bool) or not isinstance(d, numbers.Integral)
             or d < 1 for d in shape)):
    length = {0: "", 1: "non-empty "}.get(min_rank, f"{min_rank}+ long ")
    raise ValueError(
        f"{name} must be a {length}tuple of positive ints; got {shape!r}.")
  return tuple(int(d) for d in shape)


def axis_name(name: str, value) -> None:
  """Checks `value` is None or a mesh axis name (str)."""
  if value is not None and not isinstance(value, str):
    raise TypeError(
        f"{name} must be None or a mesh axis name (str); got {value!r}.")


def floating_dtype(name: str, dtype) -> jnp.dtype:
  """Checks `dtype` names a floating dtype and returns it."""
  try:
    dtype = jnp.dtype(dtype)
    floating = jnp.issubdtype(dtype, jnp.floating)
  except TypeError:
    floating = False
  if not floating:
    raise TypeError(
        f"{name} must be a floating dtype (e.g. jnp.float32); got {dtype!r}.")
  return dtype


def gaussian_parameters(mean, log_var, *, min_rank: int
                        ) -> tuple[jax.Array, jax.Array]:
  """Checks a diagonal Gaussian's `mean` and `log_var`: floating arrays of
  one shape and dtype, of rank >= `min_rank`; returns them as arrays."""
  mean = floating_array("mean", mean, min_rank=min_rank)
  log_var = floating_array("log_var", log_var, min_rank=min_rank)
  if mean.shape != log_var.shape:
    raise ValueError(
        f"mean and log_var must have the same shape; got mean.shape="
        f"{tuple(mean.shape)} and log_var.shape={tuple(log_var.shape)}.")
  if mean.dtype != log_var.dtype:
    raise TypeError(
        f"mean and log_var must have the same dtype; got {mean.dtype} and "
        f"{log_var.dtype}.")
  return mean, log_var
