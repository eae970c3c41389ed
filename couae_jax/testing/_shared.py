"""What the kernel checks, the MMD checks and the strategies share.

The package's one private helper module (its modules use it as `_shared.X`):
argument checking, the comparisons that give verdicts and their tolerances,
the check runner, and the jitted kernel.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_DEFAULT_RTOL = {
    np.dtype(np.float64): 1e-9,
    np.dtype(np.float32): 1e-4,
    np.dtype(np.float16): 5e-2,
    np.dtype(jnp.bfloat16): 2e-1,
}

# Multiplier of the gradient-based rounding-error estimate `e` of each
# evaluation. `e` moves every input coordinate by one epsilon (twice the unit
# roundoff) in the worst direction; an evaluation's actual error also holds
# the rounding of its own arithmetic (a sum over h coordinates, a product by
# 2 pi), which for a backward-stable evaluation is a few such input moves.
# Measured against float64 on the kit's pairs, a float32 evaluation's error
# beyond the rounding of its output (which rtol covers) is at most 1.54 e
# (cos(2 pi |x - y| / 0.01) at h = 64, the worst of the kernels of
# tests/test_kit_third_party.py), so two evaluations differ by at most
# 1.54 (e_a + e_b); 4 leaves a margin, and the planted violations there
# exceed it 10 to 1e6 times. Read as `_shared.ROUNDING_FACTOR` when used, so
# that a test may set it to 0.
ROUNDING_FACTOR = 4.0

COLLAPSE = 1e-3          # collapsed codes lie within this many spreads of 0


# ----------------------------------------------------------------------------
# Arguments.


class Inconclusive(ValueError):
  """A check that would compare nothing; a ValueError naming the argument to
  change, raised past the runner (it is no verdict on the kernel)."""


def x64_enabled() -> bool:
  """Whether JAX computes in 64 bits (`jax_enable_x64`, also when set by the
  `jax.enable_x64` context manager)."""
  return jax.dtypes.canonicalize_dtype(np.float64) == np.float64


def _np_dtype(dtype) -> np.dtype:
  try:
    dtype = np.dtype(dtype)
  except TypeError as error:
    raise TypeError(f"dtype must be a NumPy or JAX dtype; got {dtype!r}."
                    ) from error
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"dtype must be a floating dtype; got {dtype}.")
  if dtype == np.float64 and not x64_enabled():
    raise ValueError(
        "dtype=float64 needs 64-bit JAX: set jax.config.update("
        "'jax_enable_x64', True) or use the jax.enable_x64 context manager.")
  return dtype


def _seed_words(key) -> list[int]:
  """The 32-bit words seeding the test points: from a JAX key (typed or raw
  uint32) or a non-negative int seed, which means `jax.random.key(seed)`."""
  if key is None:
    key = 0
  if isinstance(key, numbers.Integral) and not isinstance(key, bool):
    if key < 0:
      raise ValueError(f"key must be a JAX PRNG key or a non-negative int "
                       f"seed; got {key}.")
    key = jax.random.key(int(key))
  if not isinstance(key, (jax.Array, np.ndarray)):
    raise TypeError(f"key must be a JAX PRNG key (jax.random.key(seed)), a "
                    f"raw uint32 key or an int seed; got {type(key).__name__} "
                    f"{key!r:.60}.")
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(f"key must be a single PRNG key; got a key array of "
                       f"shape {key.shape}.")
    key = jax.random.key_data(key)
  elif key.dtype != np.uint32 or key.ndim != 1:
    raise TypeError(f"key must be a JAX PRNG key, a raw uint32 key of rank 1 "
                    f"or an int seed; got an array of dtype {key.dtype} and "
                    f"shape {key.shape}.")
  return [int(w) for w in np.asarray(key, np.uint32).ravel()]


def _skip_names(skip, names: Sequence[str]) -> frozenset:
  if isinstance(skip, str):  # one name, not its letters
    skip = (skip,)
  try:
    skip = tuple(skip)
  except TypeError as error:
    raise TypeError(f"skip must be a property name or a collection of them; "
                    f"got {skip!r}.") from error
  if not all(isinstance(s, str) for s in skip):
    raise TypeError(f"skip must hold property names (str); got {skip!r}.")
  unknown = set(skip) - set(names)
  if unknown:
    raise ValueError(f"skip names unknown properties {sorted(unknown)}; "
                     f"known: {list(names)}.")
  return frozenset(skip)


def integer(name: str, value, least: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(
      value, numbers.Integral) or value < least:
    need = "a positive integer" if least == 1 else f"an integer >= {least}"
    raise ValueError(f"{name} must be {need}; got {value!r}.")
  return int(value)


def _real(name: str, value, *, optional: bool = False) -> float:
  """A finite number > 0, or, if `optional` (a tolerance), >= 0."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
      math.isfinite(value) and (float(value) >= 0 if optional else
                                float(value) > 0)):
    need = "None or a finite number >= 0" if optional else (
        "a positive finite number")
    raise ValueError(f"{name} must be {need}; got {value!r}.")
  return float(value)


def require_callable(name: str, function):
  if not callable(function):
    raise TypeError(f"{name} must be callable; got {function!r}.")
  return function


class Options:
  """The arguments every `assert_*` function takes, checked in this order:
  `dtype`, `h`, `skip` (names from `names`), `spread`, `rtol` (None: the
  dtype's default) and `atol` (None: each check suite's own default), and
  `key`, as `words`, the seed of the test points."""

  def __init__(self, names: Sequence[str], *, h, key, dtype, rtol, atol,
               spread, skip):
    self.dtype = _np_dtype(dtype)
    self.h = integer("h", h)
    self.skip = _skip_names(skip, names)
    self.spread = _real("spread", spread)
    rtol, self.atol = (None if v is None else _real(name, v, optional=True)
                       for name, v in (("rtol", rtol), ("atol", atol)))
    self.words = _seed_words(key)
    self.rtol = _DEFAULT_RTOL.get(self.dtype, 1e-4) if rtol is None else rtol


# ----------------------------------------------------------------------------
# Points.


def f64(a) -> np.ndarray:
  return np.asarray(a).astype(np.float64)


def ulp(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
  """The spacing of `dtype` at |x|, float64 (the subnormal step near 0)."""
  fi = jnp.finfo(dtype)
  eps, tiny = float(fi.eps), float(fi.smallest_normal)
  ax = np.abs(f64(x))
  with np.errstate(divide="ignore"):
    binade = np.exp2(np.floor(np.log2(np.maximum(ax, tiny))))
  return binade * eps


# ----------------------------------------------------------------------------
# Comparisons. They raise AssertionError without the property's name, which
# the runner puts in front.


def allowance(e_a, e_b=0.0):
  """`r`, the allowance for the kernel's own rounding in evaluations whose
  rounding estimates are `e_a` and `e_b`."""
  return ROUNDING_FACTOR * (e_a + e_b)


def _rounding_note(dtype: np.dtype) -> str:
  return (f"r = {ROUNDING_FACTOR:g} (e_a + e_b) allows the kernel's own "
          f"rounding, e = eps({dtype}) * sum_j |x_j dk/dx_j| + |y_j dk/dy_j| "
          f"(from its gradient), so the difference is not rounding; if the "
          f"kernel's gradient is wrong or non-finite, r is too")


def _first(bad: np.ndarray) -> tuple[int, ...]:
  return tuple(int(j) for j in np.unravel_index(np.argmax(bad), bad.shape))


def assert_close(what: str, got, want, *, rtol: float, atol: float,
                 rounding=0.0, dtype: Optional[np.dtype] = None) -> np.ndarray:
  """`|got - want| <= rtol |want| + atol + rounding` elementwise, else an
  AssertionError (noting the rounding allowance if `dtype` is given);
  returns the allowed differences."""
  got, want = f64(got), f64(want)
  if got.shape != want.shape:
    raise AssertionError(f"{what}: shapes {got.shape} and {want.shape} "
                         f"differ.")
  rounding = np.broadcast_to(np.asarray(rounding, np.float64), want.shape)
  allowed = rtol * np.abs(want) + atol + rounding
  diff = np.abs(got - want)
  bad = ~(diff <= allowed) & ~(np.isinf(got) & (got == want))
  if np.any(bad):
    i = _first(bad)
    note = f" ({_rounding_note(dtype)})" if dtype is not None else ""
    raise AssertionError(
        f"{what}: {int(bad.sum())} of {bad.size} values differ beyond "
        f"rtol |b| + atol + r (rtol={rtol:g}, atol={atol:g}); first at index "
        f"{i}: {got[i]:.8g} vs {want[i]:.8g}, difference {diff[i]:.3g}, "
        f"allowed {allowed[i]:.3g} of which r = {rounding[i]:.3g}{note}.")
  return allowed


def assert_finite(what: str, value) -> None:
  value = f64(value)
  bad = ~np.isfinite(value)
  if np.any(bad):
    i = _first(bad)
    raise AssertionError(f"{what} is not finite at {int(bad.sum())} of "
                         f"{bad.size} entries, e.g. index {i}: "
                         f"{float(value[i])}.")


# ----------------------------------------------------------------------------
# The runner.


class Checks:
  """The checks of one `assert_*` function, one per property name, run in
  the order of `names`; each raises `AssertionError` on a violation, whose
  message the runner prefixes with the property's name.
  """

  def __init__(self, names: Sequence[str]):
    self.names = tuple(names)
    self.checks: dict[str, tuple[Callable, Optional[str]]] = {}

  def register(self, name: str, *, when: Optional[str] = None):
    """A decorator: the check of property `name`, run only where the case's
    attribute `when` (a claim) is true."""
    def decorator(check):
      self.checks[name] = (check, when)
      return check
    return decorator

  def run(self, case, skip: frozenset) -> None:
    for name in self.names:
      check, when = self.checks[name]
      if name in skip or (when is not None and not getattr(case, when)):
        continue
      try:
        check(case)
      except Inconclusive:
        raise
      except AssertionError as error:
        if str(error).startswith(f"{name}:"):
          raise
        raise AssertionError(f"{name}: {error}") from error
      except Exception as error:  # pylint: disable=broad-except
        raise AssertionError(
            f"{name}: raised {type(error).__name__}: {error}") from error


class Jitted:
  """The kernel, with its per-pair gradients, under `jax.jit`, with an eager
  fallback.

  Every property but `jit_agreement` and `traces` is checked on the jitted
  kernel, the way models use it, with its values and gradients from one
  program: a compilation per shape instead of one per operation and shape
  (eager). A kernel that cannot be jitted is evaluated eagerly instead, and
  `jit_agreement` reports why (`error`).
  """

  def __init__(self, kernel):
    self.kernel = kernel
    self.error: Optional[Exception] = None

    def kernel_under_jit(x, y):  # any callable, weak-referenceable or not
      return kernel(x, y)

    def with_grads(x, y):
      # The pairs are independent rows, so one vector-Jacobian product with
      # ones gives every pair's own gradient.
      k, vjp = jax.vjp(kernel, x, y)
      return (k, *vjp(jnp.ones_like(k)))

    self._values = jax.jit(kernel_under_jit)
    self._with_grads = jax.jit(with_grads)
    self._eager_with_grads = with_grads

  def values(self, x, y) -> np.ndarray:
    if self.error is None:
      try:
        return np.asarray(self._values(x, y))
      except Exception as error:  # pylint: disable=broad-except
        self.error = error
    return np.asarray(self.kernel(x, y))

  def gram(self, points) -> np.ndarray:
    """The Gram matrices `[..., n, n]` of point sets `[..., n, h]`."""
    return self.values(points[..., :, None, :], points[..., None, :, :])

  def with_grads(self, x, y) -> tuple:
    """Values, and the gradients in x and y (or the exception that computing
    them raised: the values stand, and a gradient check raises it)."""
    if self.error is None:
      try:
        return tuple(np.asarray(a) for a in self._with_grads(x, y))
      except Exception:  # pylint: disable=broad-except
        pass  # the kernel, or only its gradient, cannot be jitted
    values = self.values(x, y)
    try:
      _, gx, gy = self._eager_with_grads(x, y)
    except Exception as error:  # pylint: disable=broad-except
      gx = gy = error
    return values, gx, gy
