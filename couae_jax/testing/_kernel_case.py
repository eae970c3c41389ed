"""The kernel under test: its claims, its point sets and its evaluations.

`KernelCase` builds each point set, and evaluates the kernel on it, on first
use, so that each check of `_kernel_checks` raises under its own name.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax.testing import _shared

GRAM_POINTS = 32          # points of the broadcasting cloud (also a PSD set)
_PD_POINTS = 144          # points of each further positive-definiteness set
_RAYS = 4                 # random rays of the length-scale probe
_AXIS_RAYS = 2            # probe rays along the first coordinate axes
# Probe radii in units of spread * sqrt(2 h): six decades around the typical
# distance of two test points, ten per decade.
PROBE_RADII = np.geomspace(1e-4, 1e2, 61)
_INVARIANCE_PAIRS = 32
# Invariance distances in units of the kernel's length scale: from where it
# has barely moved to where it has mostly decayed.
_INVARIANCE_DISTANCES = np.geomspace(1.0 / 16.0, 4.0, _INVARIANCE_PAIRS)
_MIN_INFORMATIVE = 8      # pairs a comparison must be able to see move


def _generators(words: list[int], count: int) -> list[np.random.Generator]:
  """Independent NumPy generators, one per point set, so that each set is the
  same whichever checks run (and in whatever order the sets are built)."""
  children = np.random.SeedSequence(words).spawn(count)
  return [np.random.default_rng(c) for c in children]


def _unit(rng: np.random.Generator, shape) -> np.ndarray:
  u = rng.standard_normal(shape)
  return u / np.linalg.norm(u, axis=-1, keepdims=True)


def _frame(rng: np.random.Generator, h: int, d: int) -> np.ndarray:
  """`[h, d]` orthonormal columns spanning a random (Haar) subspace."""
  q, r = np.linalg.qr(rng.standard_normal((h, d)))
  return q * np.sign(np.diag(r))[None, :]


def _round(a, dtype) -> np.ndarray:
  """`a` rounded to `dtype`, back in float64: the points as the kernel sees
  them, so that float64 arithmetic on them (rays) stays exact in order."""
  return _shared.f64(np.asarray(a, np.float64).astype(dtype))


def _counted(compute: Callable):
  """`compute()`, and the names of the programs JAX traced, lowered or
  compiled in this thread meanwhile (its monitoring events)."""
  thread, events = threading.get_ident(), []

  def listener(event: str, duration_secs: float, **kwargs: str | int) -> None:
    del duration_secs, kwargs
    if event.startswith("/jax/core/compile/") and (
        threading.get_ident() == thread):
      events.append(event.rsplit("/", 1)[-1].removesuffix("_duration"))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    return compute(), events
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


class _Batch:
  """Named groups of point pairs stacked into two `[N, h]` arrays.

  One call evaluates every group (each new shape compiles); `part(name, a)`
  slices a group's rows out of any per-pair array `a`.
  """

  def __init__(self, jitted: _shared.Jitted, dtype: np.dtype, parts: dict):
    self.jitted, self.dtype = jitted, dtype
    self.slices, start = {}, 0
    for name, (a, _) in parts.items():
      self.slices[name] = slice(start, start + len(a))
      start += len(a)
    # Rounded to dtype once: every evaluation refers to exactly these points.
    self.x = np.concatenate([a for a, _ in parts.values()]).astype(dtype)
    self.y = np.concatenate([b for _, b in parts.values()]).astype(dtype)
    self.swap_events: list[str] = []

  def part(self, name: str, array):
    return array[self.slices[name]]

  @functools.cached_property
  def _evaluated(self) -> tuple:
    return self.jitted.with_grads(jnp.asarray(self.x), jnp.asarray(self.y))

  @property
  def values(self) -> np.ndarray:
    return self._evaluated[0]

  @property
  def grads(self) -> tuple[np.ndarray, np.ndarray]:
    _, gx, gy = self._evaluated
    if isinstance(gx, Exception):  # then gy is the same exception
      raise gx
    return _shared.f64(gx), _shared.f64(gy)

  @functools.cached_property
  def swapped(self) -> np.ndarray:
    """k(y, x): the second call of the same program on these shapes, whose
    traces and compilations `swap_events` counts (the `traces` check)."""
    _ = self._evaluated
    out, self.swap_events = _counted(lambda: self.jitted.with_grads(
        jnp.asarray(self.y), jnp.asarray(self.x)))
    return out[0]

  @functools.cached_property
  def rounding(self) -> np.ndarray:
    """Per pair, `e`: the first-order change of k when every input coordinate
    moves by one epsilon of the input dtype, relative (0 where the gradient is
    not finite: no allowance is better than an infinite one)."""
    gx, gy = self.grads
    x, y = _shared.f64(self.x), _shared.f64(self.y)
    e = np.sum(np.abs(x * gx) + np.abs(y * gy), -1)
    e *= float(jnp.finfo(self.dtype).eps)
    return np.where(np.isfinite(e), e, 0.0)


class KernelCase:
  """The kernel, its claims, and its point sets:

  * `probe`: rays from a few points, out to six decades of distance; gives
    the kernel's length scale and the monotone check.
  * `main`: ordinary, near-coincident, coincident and far pairs, invariance
    pairs at the kernel's length scale with their translated and rotated
    copies, and the pairs of a 32-point cloud.
  * `pd_grams`: Gram matrices of the positive-definiteness point sets.
  * `eager`: the eager kernel on the main pairs (jit agreement, traces).
  """

  def __init__(self, kernel, options: _shared.Options, bounds, radial: bool,
               positive_definite: bool):
    self.kernel, self.h, self.dtype = kernel, options.h, options.dtype
    self.spread, self.rtol, self._atol = (options.spread, options.rtol,
                                          options.atol)
    self.bounds, self.radial = bounds, radial
    self.positive_definite = positive_definite
    self.compiled = _shared.Jitted(kernel)
    self._rng_probe, self._rng_main, self._rng_pd = _generators(
        options.words, 3)
    # The rms distance of two N(0, spread^2 I_h) points.
    self.unit = self.spread * math.sqrt(2.0 * self.h)
    # The probe: rays, and the distance from its start of each point of one.
    self.rays = _RAYS + min(_AXIS_RAYS, self.h)
    self.radii = self.unit * np.concatenate([[0.0], PROBE_RADII])

  # Point sets.

  @functools.cached_property
  def probe(self) -> _Batch:
    rng, h = self._rng_probe, self.h
    # Start points rounded first: then every coordinate of x0 + r u, rounded,
    # is monotone in r, so the rounded distances never decrease along a ray.
    x0 = _round(rng.standard_normal((self.rays, h)) * self.spread,
                self.dtype)
    # Random directions, then coordinate axes: a kernel of the L1 distance,
    # or a product over coordinates, has another length scale along them.
    u = np.concatenate([_unit(rng, (_RAYS, h)),
                        np.eye(h)[:self.rays - _RAYS]])
    y = x0[:, None, :] + self.radii[None, :, None] * u[:, None, :]
    return _Batch(self.compiled, self.dtype, {"ray": (
        np.repeat(x0, len(self.radii), 0), y.reshape(-1, h))})

  def _first_moves(self, rays: slice) -> float:
    """The median over `rays` of the first probe distance at which k has
    moved by half of k(x0, x0); spread sqrt(2 h) where it never does (a flat
    kernel: any distance shows the same)."""
    k = _shared.f64(self.probe.values).reshape(self.rays, -1)[rays]
    k0 = k[:, :1]
    with np.errstate(invalid="ignore"):
      moved = np.abs(k[:, 1:] - k0) >= 0.5 * np.abs(k0)
    firsts = [PROBE_RADII[np.argmax(m)]
              for m, c in zip(moved, k0[:, 0], strict=True)
              if np.isfinite(c) and c != 0 and m.any()]
    return self.unit * (float(np.median(firsts)) if firsts else 1.0)

  @functools.cached_property
  def length(self) -> float:
    """The kernel's length scale ℓ, along random directions."""
    return self._first_moves(slice(0, _RAYS))

  @functools.cached_property
  def axis_length(self) -> float:
    """The kernel's length scale along the first coordinate axes."""
    return self._first_moves(slice(_RAYS, None))

  @functools.cached_property
  def main(self) -> _Batch:
    rng, h, s, dtype = self._rng_main, self.h, self.spread, self.dtype
    parts = {}
    n = 16
    parts["random"] = (rng.standard_normal((n, h)) * s,
                       rng.standard_normal((n, h)) * s)
    # Near-coincident: offsets from 1e-6 to 1e-2 spreads, and one ulp.
    x = rng.standard_normal((n, h)) * s
    offsets = s * np.geomspace(1e-6, 1e-2, n - 4)[:, None] * _unit(
        rng, (n - 4, h))
    last = _round(x[n - 4:], dtype)
    parts["near"] = (x, np.concatenate([x[:n - 4] + offsets,
                                        last + _shared.ulp(last, dtype)]))
    x = rng.standard_normal((8, h)) * s
    x[0] = 0.0
    x[1] *= 1e3
    parts["coincident"] = (x, x)
    x = rng.standard_normal((8, h)) * s
    parts["far"] = (x, x + 100.0 * self.unit * _unit(rng, (8, h)))
    # Invariance pairs at the kernel's own length scale (not the points'),
    # where it is neither flat nor negligible; they are rounded before being
    # moved, so that each moved pair is the same pair in exact arithmetic.
    m = _INVARIANCE_PAIRS
    x = _round(rng.standard_normal((m, h)) * s, dtype)
    y = _round(x + (self.length * _INVARIANCE_DISTANCES)[:, None]
               * _unit(rng, (m, h)), dtype)
    parts["invariance"] = (x, y)
    shift = 3.0 * s * rng.standard_normal((1, h))
    parts["translated"] = (x + shift, y + shift)
    rot = _frame(rng, h, h)  # a Haar-random rotation
    parts["rotated"] = (x @ rot.T, y @ rot.T)
    # A cloud of points at several radii with a few near-duplicates; all its
    # pairs as rows (the broadcasting check and a positive-definiteness set).
    g = rng.standard_normal((GRAM_POINTS, h)) * s
    g *= rng.uniform(0.25, 1.5, (GRAM_POINTS, 1))
    g[-4:] = g[:4] + 1e-2 * s * _unit(rng, (4, h))
    self.gram_points = g.astype(dtype)
    g = _shared.f64(self.gram_points)
    parts["gram"] = (np.repeat(g, GRAM_POINTS, 0),
                     np.tile(g, (GRAM_POINTS, 1)))
    return _Batch(self.compiled, dtype, parts)

  def cloud(self, array) -> np.ndarray:
    """A per-pair array of `main` on the cloud's pairs, as a matrix."""
    return self.main.part("gram", array).reshape(GRAM_POINTS, GRAM_POINTS)

  @functools.cached_property
  def pd_sets(self) -> dict[str, np.ndarray]:
    """`_PD_POINTS`-point sets whose Gram matrices must be PSD, by name.

    Lattices in random 2- and 3-dimensional subspaces at the kernel's length
    scale: a radial kernel restricted to a subspace is the same function of
    distance there, and regular lattices show the negative Fourier lobes of
    kernels that are positive definite only in lower dimension (the triangle
    max(0, 1 - r) is so only in R^1). A lattice in the plane of the first
    two coordinates, at the length along them (where a kernel of the L1
    distance is that of R^2). A radial spread of points around one point at
    1/8 to 4 lengths; and codes collapsed onto the mean beside a sample of
    N(0, spread^2 I), where the paper's Coulomb kernel fails above h = 4.
    """
    rng, h, s, ell = self._rng_pd, self.h, self.spread, self.length
    sets = {}

    def lattice(shape, spacing, axes=False):
      if h < len(shape):  # h = 1: a line of as many points
        shape = (_PD_POINTS,)
      d = len(shape)
      ticks = [spacing * (np.arange(k) - 0.5 * (k - 1)) for k in shape]
      grid = np.stack(np.meshgrid(*ticks, indexing="ij"), -1).reshape(-1, d)
      frame = np.eye(h)[:, :d] if axes else _frame(rng, h, d)
      where = "in the first coordinates" if axes else "in a random subspace"
      sets[f"{d}-D lattice {where}, spacing {spacing:.3g}"] = (
          rng.standard_normal(h) * s + grid @ frame.T)

    lattice((12, 12), 0.5 * ell)
    lattice((12, 12), ell)
    if h >= 3:
      lattice((6, 6, 4), ell)
    else:
      lattice((12, 12), 0.75 * ell)
    # Along the coordinate axes a kernel of the L1 distance is that of R^2,
    # which a random plane of R^h (where |.|_1 is nearly radial) hides.
    lattice((12, 12), 0.5 * self.axis_length, axes=True)
    radii = ell * np.exp(rng.uniform(np.log(1 / 8), np.log(4), _PD_POINTS))
    sets["radial spread around one point"] = rng.standard_normal(h) * s + (
        radii[:, None] * _unit(rng, (_PD_POINTS, h)))
    collapsed = _shared.COLLAPSE * s * rng.standard_normal((_PD_POINTS // 3, h))
    cloud = s * rng.standard_normal((_PD_POINTS - len(collapsed), h))
    sets[f"{len(collapsed)} codes collapsed onto 0 beside {len(cloud)} of "
         f"N(0, spread^2 I)"] = np.concatenate([collapsed, cloud])
    return sets

  def pd_grams(self):
    """(description, points, Gram matrix) of every positive-definiteness set,
    the 32-point cloud first; the rest by one broadcast call."""
    yield (f"{GRAM_POINTS}-point cloud", GRAM_POINTS,
           self.cloud(self.main.values))
    grams = self.compiled.gram(jnp.asarray(np.stack(list(
        self.pd_sets.values())).astype(self.dtype)))
    for name, gram in zip(self.pd_sets, grams, strict=True):
      yield name, _PD_POINTS, gram

  @functools.cached_property
  def eager(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The eager kernel on the main pairs, (x, y) then (y, x), counting what
    the second call traces or compiles (nothing, for a kernel whose Python
    code does not depend on the values)."""
    x, y = jnp.asarray(self.main.x), jnp.asarray(self.main.y)
    first = np.asarray(self.kernel(x, y))
    second, events = _counted(lambda: np.asarray(self.kernel(y, x)))
    return first, second, events

  @functools.cached_property
  def atol(self) -> float:
    if self._atol is not None:
      return self._atol
    # The kernel's scale: its largest |value| over the pairs at the scale of
    # the points. Not the coincident pairs (one point sits 1e3 spreads out,
    # where a polynomial kernel is 1e12 times larger) nor the far ones.
    v = np.abs(_shared.f64(self.main.values))
    ordinary = np.concatenate([self.main.part(p, v) for p in (
        "random", "near", "invariance", "gram")])
    ordinary = ordinary[np.isfinite(ordinary)]
    return self.rtol * 1e-3 * (float(ordinary.max()) if ordinary.size else 0.)

  def close(self, what, got, want, e_got, e_want) -> np.ndarray:
    """`assert_close` with this case's tolerances and rounding allowance."""
    return _shared.assert_close(
        what, got, want, rtol=self.rtol, atol=self.atol,
        rounding=_shared.allowance(e_got, e_want), dtype=self.dtype)

  def require_informative(self, prop: str, allowed, want) -> None:
    """Raises `_shared.Inconclusive` unless at least `_MIN_INFORMATIVE` compared
    values could be seen to halve or double: a check that compared values
    within their tolerance of 0 compared nothing."""
    informative = allowed < 0.5 * np.abs(_shared.f64(want))
    if int(informative.sum()) >= _MIN_INFORMATIVE:
      return
    d = self.length * _INVARIANCE_DISTANCES
    raise _shared.Inconclusive(
        f"{prop}: cannot be checked with spread={self.spread:g}: the "
        f"kernel's values at {int((~informative).sum())} of "
        f"{informative.size} test pairs (distances {d[0]:.3g} to "
        f"{d[-1]:.3g}, from its length scale {self.length:.3g} measured "
        f"along rays) are within their tolerance of 0 (atol={self.atol:g}), "
        f"so the check would compare nothing. Pass the spread (a length) at "
        f"which the kernel is not negligible, a smaller atol, or "
        f"skip=('{prop}',).")
