"""Hypothesis strategies of point sets and point pairs, and of dtypes.

Hypothesis is imported when a strategy is built, so that the checks work
without it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from couae_jax.testing import _shared

#: The kinds of pair `point_pairs` draws.
PAIR_KINDS = ("independent", "coincident", "near", "far")


def _hypothesis():
  """Hypothesis's `strategies` and `extra.numpy` modules."""
  try:
    # pylint: disable=g-import-not-at-top
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
  except ImportError as error:
    raise ImportError(
        "couae_jax.testing's strategies need Hypothesis: pip install "
        "hypothesis (or couae-jax[test]). The assert_* checks work without "
        "it.") from error
  return st, hnp


def _box(min_value: float, max_value: float):
  """`_hypothesis()`, for points in [min_value, max_value] (checked)."""
  st, hnp = _hypothesis()
  if not min_value < max_value:
    raise ValueError(f"need min_value < max_value; got {min_value}, "
                     f"{max_value}.")
  return st, hnp


def _draw(draw, value, st):
  return draw(value) if isinstance(value, st.SearchStrategy) else value


def _elements(draw, shape, dtype, lo, hi, st, hnp):
  """An array of `shape` with finite elements in [lo, hi], cast to `dtype`."""
  width = {2: 16, 4: 32, 8: 64}[dtype.itemsize]
  base = np.dtype(np.float64 if width == 64 else np.float32)
  if dtype == np.float16:
    base = dtype
  a = draw(hnp.arrays(base, shape, elements=st.floats(
      lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False,
      width=width if dtype != np.dtype(jnp.bfloat16) else 32)))
  return np.clip(_shared.f64(a), lo, hi).astype(dtype)


def _partner(draw, kind: str, x: np.ndarray, lo, hi, dtype, st) -> np.ndarray:
  """A point that is `x` ("coincident"), or `x` moved 1 to 1024 ulps per
  coordinate toward the middle of [lo, hi] ("near")."""
  if kind == "coincident":
    return x.copy()
  x64 = _shared.f64(x)
  steps = draw(st.integers(1, 1024))
  direction = np.where(x64 < 0.5 * (lo + hi), 1.0, -1.0)
  moved = x64 + direction * steps * _shared.ulp(x64, dtype)
  return np.clip(moved, lo, hi).astype(dtype)


def float_dtypes(*, half: bool = True):
  """A strategy of floating NumPy dtypes the kernels accept.

  float32 always; float16 and bfloat16 if `half`; float64 when JAX runs with
  64-bit types enabled.

  Example:
    >>> import hypothesis, numpy as np
    >>> from couae_jax import testing
    >>> @hypothesis.settings(max_examples=3, deadline=None)
    ... @hypothesis.given(testing.float_dtypes(half=False))
    ... def test(dtype):
    ...   assert dtype in (np.float32, np.float64)
    >>> test()
  """
  st, _ = _hypothesis()
  dtypes: list[np.dtype] = [np.dtype(np.float32)]
  if half:
    dtypes += [np.dtype(np.float16), np.dtype(jnp.bfloat16)]
  if _shared.x64_enabled():
    dtypes.append(np.dtype(np.float64))
  return st.sampled_from(dtypes)


def sample_sets(n=None, h=None, *, dtype=np.float32, min_value: float = -10.0,
                max_value: float = 10.0):
  """A Hypothesis strategy of point sets: NumPy arrays `[n, h]` of `dtype`.

  Elements are finite and lie in `[min_value, max_value]`. Besides
  independent points, a drawn set may hold an exact duplicate (two coincident
  points), a near duplicate (a point moved 1 to 1024 ulps per coordinate, so
  distinct but as close as the dtype allows), or a far pair (two opposite
  corners of the box).

  Args:
    n: points per set: an int or a strategy of ints (default 2 to 16).
    h: dimension: an int or a strategy of ints (default 1 to 8).
    dtype: a floating dtype or a strategy of them (see `float_dtypes`).
    min_value: the smallest coordinate.
    max_value: the largest coordinate.

  Returns:
    A strategy of `np.ndarray` of shape `[n, h]`.

  Example:
    >>> import hypothesis
    >>> from couae_jax import testing
    >>> @hypothesis.settings(max_examples=5, deadline=None)
    ... @hypothesis.given(testing.sample_sets(n=4, h=3))
    ... def test(x):
    ...   assert x.shape == (4, 3) and x.dtype == "float32"
    >>> test()
  """
  st, hnp = _box(min_value, max_value)
  n = st.integers(2, 16) if n is None else n
  h = st.integers(1, 8) if h is None else h

  @st.composite
  def strategy(draw):
    size, dim = _draw(draw, n, st), _draw(draw, h, st)
    dt = np.dtype(_draw(draw, dtype, st))
    x = _elements(draw, (size, dim), dt, min_value, max_value, st, hnp)
    layout = draw(st.sampled_from(PAIR_KINDS)) if size >= 2 else "independent"
    if layout != "independent":
      i = draw(st.integers(0, size - 1))
      j = draw(st.integers(0, size - 2))
      j = j + 1 if j >= i else j
      if layout == "far":
        x[i] = np.asarray(min_value, dt)
        x[j] = np.asarray(max_value, dt)
      else:
        x[j] = _partner(draw, layout, x[i], min_value, max_value, dt, st)
    return x

  return strategy()


def point_pairs(h=None, *, dtype=np.float32, kind=None,
                min_value: float = -10.0, max_value: float = 10.0):
  """A Hypothesis strategy of pairs `(x, y)` of points, each `[h]`.

  `kind` (drawn from `PAIR_KINDS` unless given; a name or a collection of
  names) is one of:

  * "independent": two independent points of the box;
  * "coincident": `y` is `x` exactly;
  * "near": `y` is `x` moved 1 to 1024 ulps per coordinate (distinct);
  * "far": `x` in the lowest and `y` in the highest quarter of the range in
    every coordinate, so `‖x - y‖ >= (max_value - min_value) sqrt(h) / 2`.

  Args:
    h: dimension: an int or a strategy of ints (default 1 to 8).
    dtype: a floating dtype or a strategy of them.
    kind: None, a kind, or a collection of kinds.
    min_value: the smallest coordinate.
    max_value: the largest coordinate.

  Returns:
    A strategy of `(x, y)`, NumPy arrays of shape `[h]` and dtype `dtype`.

  Example:
    >>> import hypothesis, numpy as np
    >>> from couae_jax import testing
    >>> @hypothesis.settings(max_examples=5, deadline=None)
    ... @hypothesis.given(testing.point_pairs(h=3, kind="near"))
    ... def test(pair):
    ...   x, y = pair
    ...   assert x.shape == y.shape == (3,) and not np.array_equal(x, y)
    >>> test()
  """
  st, hnp = _box(min_value, max_value)
  kinds = PAIR_KINDS if kind is None else (
      (kind,) if isinstance(kind, str) else tuple(kind))
  unknown = set(kinds) - set(PAIR_KINDS)
  if unknown or not kinds:
    raise ValueError(f"kind must name some of {PAIR_KINDS}; got {kind!r}.")
  h = st.integers(1, 8) if h is None else h
  quarter = 0.25 * (max_value - min_value)

  @st.composite
  def strategy(draw):
    dim = _draw(draw, h, st)
    dt = np.dtype(_draw(draw, dtype, st))
    which = draw(st.sampled_from(kinds))
    if which == "far":
      x = _elements(draw, (dim,), dt, min_value, min_value + quarter, st, hnp)
      y = _elements(draw, (dim,), dt, max_value - quarter, max_value, st, hnp)
      return x, y
    x = _elements(draw, (dim,), dt, min_value, max_value, st, hnp)
    if which == "independent":
      y = _elements(draw, (dim,), dt, min_value, max_value, st, hnp)
    else:
      y = _partner(draw, which, x, min_value, max_value, dt, st)
    return x, y

  return strategy()
