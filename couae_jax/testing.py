"""Property-testing kit for kernels and MMD estimators: checks and strategies.

For anyone who writes a kernel with the contract of `couae_jax.kernels`
(`kernel(x: [..., h], y: [..., h]) -> [...]`) or an MMD estimator
(`estimator(x: [n, h], y: [m, h]) -> []`) and wants to test it as the project
tests its own:

* `assert_kernel_properties(kernel, h=...)` checks every property listed in
  `KERNEL_PROPERTIES` on deterministic point sets and raises `AssertionError`
  whose message starts with the name of the first violated property.
* `assert_mmd_properties(estimator, h=...)` does the same for estimators
  (`MMD_PROPERTIES`).
* `sample_sets`, `point_pairs` and `float_dtypes` are Hypothesis strategies
  for sets of points and pairs of points, including near-coincident and
  far-apart ones. Hypothesis is optional: it is imported when a strategy is
  built, so `import couae_jax.testing` needs only JAX and NumPy.

Tolerances. Two evaluations `a` and `b` that are equal in exact arithmetic
agree when `|a - b| <= rtol |b| + atol + r`. `rtol` defaults by dtype (1e-4
for float32, 1e-9 for float64). `atol` defaults to `rtol / 1000` times the
kernel's scale, the largest |k| over the test pairs at the scale of the points
(not the far-apart or far-out ones). `r` is the kernel's own rounding error,
estimated from its gradient: `r = 4 (e_a + e_b)` where, for each
evaluation, `e = eps * sum_j (|x_j| |dk/dx_j| + |y_j| |dk/dy_j|)` is the
first-order change of `k` when every input coordinate moves by one machine
epsilon of the input dtype, relative. A kernel that evaluates a large argument
(`cos(2 pi r / p)` at r >> p, a high power) has a large `e` there, so float32
rounding is not reported as a broken property, and a failure message saying
how much of the allowance was rounding means the difference is not.

The kernel is evaluated under `jax.jit`, as models use it: a few
compilations per run, one per point set, where eager evaluation compiles
every operation for every new shape (about 0.5 s of CPU per run on a CPU
host, 1 to 3 s for the first run at a new h and dtype); only `jit_agreement`
and `traces` call it eagerly too.

A pass is evidence, not proof: each property is checked on finitely many
points (each function's docstring says which), and `positive_definite` in
particular can only be refuted by a Gram matrix, never proven by one.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import numbers
import threading
from typing import Any, Callable, Collection, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax import kernels as kernels_lib

#: The properties `assert_kernel_properties` checks, in the order it checks
#: them; each is also the prefix of the message of the AssertionError it raises
#: and a valid entry of its `skip` argument.
KERNEL_PROPERTIES = (
    "shape",                   # output shape follows the broadcasting contract
    "dtype",                   # floating output, float32 or wider
    "coincident_points",       # k(x, x) and its gradients are finite
    "finite",                  # values and gradients finite at all test pairs
    "broadcasting",            # a broadcast Gram equals the paired values
    "symmetry",                # k(x, y) == k(y, x)
    "bounds",                  # lo <= k <= hi (only finite when unknown)
    "translation_invariance",  # k(x + c, y + c) == k(x, y)
    "rotation_invariance",     # k(R x, R y) == k(x, y), R orthogonal
    "monotone_decrease",       # radial kernels: non-increasing along rays
    "jit_agreement",           # jax.jit(kernel) agrees with eager kernel
    "traces",                  # no new trace or compile for new values
    "positive_definite",       # PSD Gram matrices where claimed
)

#: The properties `assert_mmd_properties` checks, in order.
MMD_PROPERTIES = (
    "shape",                    # a floating scalar
    "finite",                   # finite value and gradients
    "permutation_invariance",   # reordering either sample changes nothing
    "symmetry",                 # f(x, y) == f(y, x)
    "blocked_agreement",        # dense and blocked estimators agree (+ grads)
    "null_mean",                # mean ~ 0 over samples of one distribution
    "v_statistic_nonnegative",  # p.d. kernels: biased MMD² >= 0
    "collapse_not_preferred",   # p.d. kernels: collapsed codes score >= matched
)

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
# exceed it 10 to 1e6 times.
_ROUNDING_FACTOR = 4.0

_GRAM_POINTS = 32         # points of the broadcasting cloud (also a PSD set)
_PD_POINTS = 144          # points of each further positive-definiteness set
_RAYS = 4                 # random rays of the length-scale probe
_AXIS_RAYS = 2            # probe rays along the first coordinate axes
# Probe radii in units of spread * sqrt(2 h): six decades around the typical
# distance of two test points, ten per decade.
_PROBE_RADII = np.geomspace(1e-4, 1e2, 61)
_INVARIANCE_PAIRS = 32
# Invariance distances in units of the kernel's length scale: from where it
# has barely moved to where it has mostly decayed.
_INVARIANCE_DISTANCES = np.geomspace(1.0 / 16.0, 4.0, _INVARIANCE_PAIRS)
_MIN_INFORMATIVE = 8      # pairs a comparison must be able to see move
_NULL_Z = 4.0             # standard errors a mean may sit from its target
_COLLAPSE = 1e-3          # collapsed codes lie within this many spreads of 0


# ----------------------------------------------------------------------------
# Shared helpers.


class _Inconclusive(ValueError):
  """A check that would compare nothing; a ValueError naming the argument to
  change, raised past `_run_checks` (it is no verdict on the kernel)."""


def _fail(prop: str, message: str) -> AssertionError:
  return AssertionError(f"{prop}: {message}")


def _x64_enabled() -> bool:
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
  if dtype == np.float64 and not _x64_enabled():
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


def _generators(words: list[int], count: int) -> list[np.random.Generator]:
  """Independent NumPy generators, one per point set, so that each set is the
  same whichever checks run (and in whatever order the sets are built)."""
  children = np.random.SeedSequence(words).spawn(count)
  return [np.random.default_rng(c) for c in children]


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


def _check_h(h) -> int:
  if isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1:
    raise ValueError(f"h must be a positive integer; got {h!r}.")
  return int(h)


def _positive_float(name: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
      math.isfinite(value) and float(value) > 0):
    raise ValueError(f"{name} must be a positive finite number; got "
                     f"{value!r}.")
  return float(value)


def _tolerance(name: str, value) -> Optional[float]:
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
      math.isfinite(value) and float(value) >= 0):
    raise ValueError(f"{name} must be None or a finite number >= 0; got "
                     f"{value!r}.")
  return float(value)


def _default_rtol(dtype: np.dtype, rtol: Optional[float]) -> float:
  return _DEFAULT_RTOL.get(dtype, 1e-4) if rtol is None else float(rtol)


def _f64(a) -> np.ndarray:
  return np.asarray(a).astype(np.float64)


def _unit(rng: np.random.Generator, shape) -> np.ndarray:
  u = rng.standard_normal(shape)
  return u / np.linalg.norm(u, axis=-1, keepdims=True)


def _frame(rng: np.random.Generator, h: int, d: int) -> np.ndarray:
  """`[h, d]` orthonormal columns spanning a random (Haar) subspace."""
  q, r = np.linalg.qr(rng.standard_normal((h, d)))
  return q * np.sign(np.diag(r))[None, :]


def _rotation(rng: np.random.Generator, h: int) -> np.ndarray:
  """A Haar-random orthogonal `[h, h]` matrix, float64."""
  return _frame(rng, h, h)


def _round(a, dtype) -> np.ndarray:
  """`a` rounded to `dtype`, back in float64: the points as the kernel sees
  them, so that float64 arithmetic on them (rays) stays exact in order."""
  return _f64(np.asarray(a, np.float64).astype(dtype))


def _rounding_note(dtype: np.dtype) -> str:
  return (f"r = {_ROUNDING_FACTOR:g} (e_a + e_b) allows the kernel's own "
          f"rounding, e = eps({dtype}) * sum_j |x_j dk/dx_j| + |y_j dk/dy_j| "
          f"(from its gradient), so the difference is not rounding; if the "
          f"kernel's gradient is wrong or non-finite, r is too")


def _assert_close(prop: str, what: str, got, want, *, rtol: float,
                  atol: float, rounding=0.0,
                  dtype: Optional[np.dtype] = None) -> np.ndarray:
  """`|got - want| <= rtol |want| + atol + rounding` elementwise, else an
  AssertionError; returns the allowed differences."""
  got, want = _f64(got), _f64(want)
  if got.shape != want.shape:
    raise _fail(prop, f"{what}: shapes {got.shape} and {want.shape} differ.")
  rounding = np.broadcast_to(np.asarray(rounding, np.float64), want.shape)
  allowed = rtol * np.abs(want) + atol + rounding
  diff = np.abs(got - want)
  bad = ~(diff <= allowed) & ~(np.isinf(got) & (got == want))
  if np.any(bad):
    i = np.unravel_index(np.argmax(bad), bad.shape)
    note = f" ({_rounding_note(dtype)})" if dtype is not None else ""
    raise _fail(
        prop,
        f"{what}: {int(bad.sum())} of {bad.size} values differ beyond "
        f"rtol |b| + atol + r (rtol={rtol:g}, atol={atol:g}); first at index "
        f"{tuple(int(j) for j in i)}: {got[i]:.8g} vs {want[i]:.8g}, "
        f"difference {diff[i]:.3g}, allowed {allowed[i]:.3g} of which "
        f"r = {rounding[i]:.3g}{note}.")
  return allowed


def _assert_finite(prop: str, what: str, value):
  value = _f64(value)
  if not np.all(np.isfinite(value)):
    bad = ~np.isfinite(value)
    i = np.unravel_index(np.argmax(bad), bad.shape)
    raise _fail(prop, f"{what} is not finite at {int(bad.sum())} of "
                f"{bad.size} entries, e.g. index "
                f"{tuple(int(j) for j in i)}: {float(value[i])}.")


def _run_checks(names: Sequence[str], checks: dict, skip: frozenset,
                context) -> None:
  for name in names:
    if name in skip:
      continue
    try:
      checks[name](context)
    except _Inconclusive:
      raise
    except AssertionError as error:
      if str(error).startswith(f"{name}:"):
        raise
      raise _fail(name, str(error)) from error
    except Exception as error:  # pylint: disable=broad-except
      raise _fail(name, f"raised {type(error).__name__}: {error}") from error


@contextlib.contextmanager
def _compilations():
  """Collects the names of the programs JAX traces, lowers or compiles in
  this thread while active (JAX's monitoring events; other threads' work is
  not counted)."""
  thread, events = threading.get_ident(), []

  def listener(event: str, duration_secs: float, **kwargs: str | int) -> None:
    del duration_secs, kwargs
    if event.startswith("/jax/core/compile/") and (
        threading.get_ident() == thread):
      events.append(event.rsplit("/", 1)[-1].removesuffix("_duration"))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield events
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _summary(events: Sequence[str]) -> str:
  return ", ".join(f"{n} x {e}" for e, n in collections.Counter(
      events).items())


# ----------------------------------------------------------------------------
# Kernels.


class _Jitted:
  """The kernel, with its per-pair gradients, under `jax.jit`, with an eager
  fallback.

  Every property but `jit_agreement` and `traces` is checked on the jitted
  kernel, the way models use it, with its values and gradients from one
  program: a compilation per shape instead of one per operation and shape
  (eager), which makes the kit several times faster on new shapes. A kernel
  that cannot be jitted is evaluated eagerly instead, and `jit_agreement`
  reports why.
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

  def with_grads(self, x, y) -> tuple[np.ndarray, ...]:
    if self.error is None:
      try:
        return tuple(np.asarray(a) for a in self._with_grads(x, y))
      except Exception:  # pylint: disable=broad-except
        pass  # the kernel, or only its gradient, cannot be jitted
    values = self.values(x, y)
    try:
      _, gx, gy = self._eager_with_grads(x, y)
    except Exception as error:  # pylint: disable=broad-except
      # No gradient: the values stand; a gradient check raises this.
      gx = gy = error
    return values, gx, gy


class _Batch:
  """Named groups of point pairs stacked into two `[N, h]` arrays.

  One call evaluates every group (each new shape compiles); `part(name, a)`
  slices a group's rows out of any per-pair array `a`.
  """

  def __init__(self, jitted: _Jitted, dtype: np.dtype, parts: dict):
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
    for g in (gx, gy):
      if isinstance(g, Exception):
        raise g
    return _f64(gx), _f64(gy)

  @functools.cached_property
  def swapped(self) -> np.ndarray:
    # The second call of the same program on these shapes: it must trace
    # nothing (the `traces` check), so it is counted.
    _ = self._evaluated
    with _compilations() as events:
      out = self.jitted.with_grads(jnp.asarray(self.y), jnp.asarray(self.x))
    self.swap_events = events
    return out[0]

  @functools.cached_property
  def rounding(self) -> np.ndarray:
    """Per pair, `e`: the first-order change of k when every input coordinate
    moves by one epsilon of the input dtype, relative (0 where the gradient is
    not finite: no allowance is better than an infinite one)."""
    gx, gy = self.grads
    e = np.sum(np.abs(_f64(self.x) * gx) + np.abs(_f64(self.y) * gy), -1)
    e *= float(jnp.finfo(self.dtype).eps)
    return np.where(np.isfinite(e), e, 0.0)


class _KernelCase:
  """The kernel, its claims, and its point sets, each built and evaluated on
  first use (so each check raises under its own name).

  * `probe`: rays from a few points, out to six decades of distance; gives
    the kernel's length scale and the monotone check.
  * `main`: ordinary, near-coincident, coincident and far pairs, invariance
    pairs at the kernel's length scale with their translated and rotated
    copies, and the pairs of a 32-point cloud.
  * `pd_grams`: Gram matrices of the positive-definiteness point sets.
  * `eager`: the eager kernel on the main pairs (jit agreement, traces).
  """

  def __init__(self, kernel, h, words, dtype, spread, bounds, radial,
               positive_definite, rtol, atol):
    self.kernel, self.h, self.dtype, self.spread = kernel, h, dtype, spread
    self.bounds, self.radial = bounds, radial
    self.positive_definite = positive_definite
    self.rtol, self._atol = rtol, atol
    self.compiled = _Jitted(kernel)
    # The rms distance of two N(0, spread^2 I_h) points.
    self.unit = spread * math.sqrt(2.0 * h)
    self._rng_probe, self._rng_main, self._rng_pd = _generators(words, 3)

  # Point sets.

  @functools.cached_property
  def rays(self) -> int:
    return _RAYS + min(_AXIS_RAYS, self.h)

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
    radii = self.unit * np.concatenate([[0.0], _PROBE_RADII])
    y = x0[:, None, :] + radii[None, :, None] * u[:, None, :]
    return _Batch(self.compiled, self.dtype,
                  {"ray": (np.repeat(x0, len(radii), 0), y.reshape(-1, h))})

  def _first_moves(self, rays: slice) -> float:
    """The median over `rays` of the first probe distance at which k has
    moved by half of k(x0, x0); spread sqrt(2 h) where it never does (a flat
    kernel: any distance shows the same)."""
    k = _f64(self.probe.values).reshape(self.rays, -1)[rays]
    k0 = k[:, :1]
    with np.errstate(invalid="ignore"):
      moved = np.abs(k[:, 1:] - k0) >= 0.5 * np.abs(k0)
    firsts = [_PROBE_RADII[np.argmax(m)]
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
                                        last + _ulp(last, dtype)]))
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
    rot = _rotation(rng, h)
    parts["rotated"] = (x @ rot.T, y @ rot.T)
    # A cloud of points at several radii with a few near-duplicates; all its
    # pairs as rows (the broadcasting check and a positive-definiteness set).
    g = rng.standard_normal((_GRAM_POINTS, h)) * s
    g *= rng.uniform(0.25, 1.5, (_GRAM_POINTS, 1))
    g[-4:] = g[:4] + 1e-2 * s * _unit(rng, (4, h))
    self.gram_points = g.astype(dtype)
    g = _f64(self.gram_points)
    parts["gram"] = (np.repeat(g, _GRAM_POINTS, 0),
                     np.tile(g, (_GRAM_POINTS, 1)))
    return _Batch(self.compiled, dtype, parts)

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
    collapsed = _COLLAPSE * s * rng.standard_normal((_PD_POINTS // 3, h))
    cloud = s * rng.standard_normal((_PD_POINTS - len(collapsed), h))
    sets[f"{len(collapsed)} codes collapsed onto 0 beside {len(cloud)} of "
         f"N(0, spread^2 I)"] = np.concatenate([collapsed, cloud])
    return sets

  def pd_grams(self):
    """(description, points, Gram matrix) of every positive-definiteness set,
    the 32-point cloud first; the rest by one broadcast call."""
    yield (f"{_GRAM_POINTS}-point cloud", _GRAM_POINTS,
           self.main.part("gram", self.main.values).reshape(
               _GRAM_POINTS, _GRAM_POINTS))
    points = jnp.asarray(np.stack(list(self.pd_sets.values())).astype(
        self.dtype))
    grams = self.compiled.values(points[:, :, None, :], points[:, None, :, :])
    for name, gram in zip(self.pd_sets, grams, strict=True):
      yield name, _PD_POINTS, gram

  @functools.cached_property
  def eager(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The eager kernel on the main pairs, (x, y) then (y, x), counting what
    the second call traces or compiles (nothing, for a kernel whose Python
    code does not depend on the values)."""
    x, y = jnp.asarray(self.main.x), jnp.asarray(self.main.y)
    first = np.asarray(self.kernel(x, y))
    with _compilations() as events:
      second = np.asarray(self.kernel(y, x))
    return first, second, events

  @functools.cached_property
  def atol(self) -> float:
    if self._atol is not None:
      return self._atol
    # The kernel's scale: its largest |value| over the pairs at the scale of
    # the points. Not the coincident pairs (one point sits 1e3 spreads out,
    # where a polynomial kernel is 1e12 times larger) nor the far ones.
    v = np.abs(_f64(self.main.values))
    ordinary = np.concatenate([self.main.part(p, v) for p in (
        "random", "near", "invariance", "gram")])
    ordinary = ordinary[np.isfinite(ordinary)]
    return self.rtol * 1e-3 * (float(ordinary.max()) if ordinary.size else 0.)

  def close(self, prop, what, got, want, e_got, e_want):
    """`_assert_close` with this case's tolerances and rounding allowance."""
    return _assert_close(prop, what, got, want, rtol=self.rtol,
                         atol=self.atol,
                         rounding=_ROUNDING_FACTOR * (e_got + e_want),
                         dtype=self.dtype)

  def require_informative(self, prop: str, allowed, want) -> None:
    """Raises `_Inconclusive` unless at least `_MIN_INFORMATIVE` compared
    values could be seen to halve or double: a check that compared values
    within their tolerance of 0 compared nothing."""
    informative = allowed < 0.5 * np.abs(_f64(want))
    if int(informative.sum()) >= _MIN_INFORMATIVE:
      return
    d = self.length * _INVARIANCE_DISTANCES
    raise _Inconclusive(
        f"{prop}: cannot be checked with spread={self.spread:g}: the "
        f"kernel's values at {int((~informative).sum())} of "
        f"{informative.size} test pairs (distances {d[0]:.3g} to "
        f"{d[-1]:.3g}, from its length scale {self.length:.3g} measured "
        f"along rays) are within their tolerance of 0 (atol={self.atol:g}), "
        f"so the check would compare nothing. Pass the spread (a length) at "
        f"which the kernel is not negligible, a smaller atol, or "
        f"skip=('{prop}',).")


def _output(case: _KernelCase, x_shape, y_shape):
  """The kernel's output (shape and dtype) for inputs of these shapes: traced
  (`jax.eval_shape`), or, for a kernel that cannot be traced, evaluated on
  zeros, so that its shape is judged here and its tracing by
  `jit_agreement`."""
  dtype = case.dtype
  try:
    return jax.eval_shape(case.kernel, jax.ShapeDtypeStruct(x_shape, dtype),
                          jax.ShapeDtypeStruct(y_shape, dtype))
  except Exception:  # pylint: disable=broad-except
    return case.kernel(jnp.zeros(x_shape, dtype), jnp.zeros(y_shape, dtype))


def _check_shape(case: _KernelCase) -> None:
  h = case.h
  cases = [((h,), (h,), ()), ((5, h), (5, h), (5,)), ((5, h), (h,), (5,)),
           ((h,), (3, h), (3,)), ((5, 1, h), (1, 3, h), (5, 3)),
           ((2, 1, 1, h), (4, 3, h), (2, 4, 3))]
  for x_shape, y_shape, want in cases:
    try:
      out = _output(case, x_shape, y_shape)
    except Exception as error:  # pylint: disable=broad-except
      raise _fail("shape", f"kernel(x, y) raised {type(error).__name__} for "
                  f"x.shape={x_shape}, y.shape={y_shape} (expected output "
                  f"shape {want}): {error}") from error
    got = tuple(getattr(out, "shape", ()))
    if got != want or not hasattr(out, "shape"):
      raise _fail("shape", f"kernel(x, y) for x.shape={x_shape}, "
                  f"y.shape={y_shape} returned shape {got} ({out!r}); the "
                  f"broadcasting contract [..., h], [..., h] -> [...] needs "
                  f"{want}.")


def _check_dtype(case: _KernelCase) -> None:
  got = np.dtype(_output(case, (5, case.h), (5, case.h)).dtype)
  allowed = {case.dtype}
  if case.dtype.itemsize < 4:
    allowed.add(np.dtype(np.float32))
  if got not in allowed:
    raise _fail("dtype", f"kernel(x, y) on {case.dtype} inputs returned "
                f"{got}; expected one of {sorted(str(d) for d in allowed)}.")


def _check_coincident(case: _KernelCase) -> None:
  main = case.main
  _assert_finite("coincident_points", "k(x, x)",
                 main.part("coincident", main.values))
  gx, gy = main.grads
  _assert_finite("coincident_points", "d k(x, y) / dx at x == y",
                 main.part("coincident", gx))
  _assert_finite("coincident_points", "d k(x, y) / dy at x == y",
                 main.part("coincident", gy))


def _check_finite(case: _KernelCase) -> None:
  main = case.main
  gx, gy = main.grads
  for name in main.slices:
    if name == "coincident":
      continue
    _assert_finite("finite", f"k(x, y) on the {name} pairs",
                   main.part(name, main.values))
    _assert_finite("finite", f"d k / dx on the {name} pairs",
                   main.part(name, gx))
    _assert_finite("finite", f"d k / dy on the {name} pairs",
                   main.part(name, gy))
  _assert_finite("finite", "k(x, y) along the probe rays (to "
                 f"{_PROBE_RADII[-1]:g} spread sqrt(2 h))", case.probe.values)


def _check_broadcasting(case: _KernelCase) -> None:
  main = case.main  # builds the cloud
  p = jnp.asarray(case.gram_points)
  gram = case.compiled.values(p[:, None, :], p[None, :, :])
  shape = (_GRAM_POINTS, _GRAM_POINTS)
  paired = main.part("gram", main.values).reshape(shape)
  e = main.part("gram", main.rounding).reshape(shape)
  case.close("broadcasting",
             "kernel(p[:, None], p[None]) vs kernel on the paired rows",
             gram, paired, e, e)


def _check_symmetry(case: _KernelCase) -> None:
  e = case.main.rounding
  case.close("symmetry", "k(y, x) vs k(x, y)", case.main.swapped,
             case.main.values, e, e)


def _check_bounds(case: _KernelCase) -> None:
  values = np.concatenate([_f64(case.main.values), _f64(case.probe.values)])
  if case.bounds is None:
    _assert_finite("bounds", "k(x, y)", values)
    return
  lo, hi = case.bounds
  ends = [abs(b) for b in (lo, hi) if math.isfinite(b)]
  e = np.concatenate([case.main.rounding, case.probe.rounding])
  slack = case.rtol * max(ends, default=0.0) + case.atol + (
      _ROUNDING_FACTOR * e)
  below, above = values < lo - slack, values > hi + slack
  bad = below | above | np.isnan(values)
  if np.any(bad):
    i = int(np.argmax(bad))
    x = np.concatenate([case.main.x, case.probe.x])[i]
    y = np.concatenate([case.main.y, case.probe.y])[i]
    raise _fail("bounds", f"{int(bad.sum())} values lie outside the claimed "
                f"[{lo:g}, {hi:g}] (slack rtol max(|lo|, |hi|) + atol + "
                f"{_ROUNDING_FACTOR:g} e); e.g. k = {values[i]:.8g} at "
                f"|x - y| = {np.linalg.norm(_f64(x) - _f64(y)):g}.")


def _check_moved(case: _KernelCase, prop: str, moved: str, what: str) -> None:
  main = case.main
  want = main.part("invariance", main.values)
  allowed = case.close(prop, what, main.part(moved, main.values), want,
                       main.part(moved, main.rounding),
                       main.part("invariance", main.rounding))
  case.require_informative(prop, allowed, want)


def _check_translation(case: _KernelCase) -> None:
  _check_moved(case, "translation_invariance", "translated",
               "k(x + c, y + c) vs k(x, y)")


def _check_rotation(case: _KernelCase) -> None:
  _check_moved(case, "rotation_invariance", "rotated",
               "k(R x, R y) vs k(x, y)")


def _check_monotone(case: _KernelCase) -> None:
  if not case.radial:
    return
  shape = (case.rays, len(_PROBE_RADII) + 1)
  k = _f64(case.probe.values).reshape(shape)
  e = _ROUNDING_FACTOR * case.probe.rounding.reshape(shape)
  rise = k[:, 1:] - k[:, :-1]
  bad = rise > case.rtol * np.abs(k[:, :-1]) + case.atol + e[:, 1:] + e[:, :-1]
  if np.any(bad):
    ray, step = np.unravel_index(np.argmax(bad), bad.shape)
    radii = case.unit * np.concatenate([[0.0], _PROBE_RADII])
    raise _fail("monotone_decrease",
                f"a radial kernel must not increase with distance; along ray "
                f"{ray} it rises from {k[ray, step]:.8g} at distance "
                f"{radii[step]:.4g} to {k[ray, step + 1]:.8g} at "
                f"{radii[step + 1]:.4g}.")


def _check_jit(case: _KernelCase) -> None:
  jitted, swapped = case.main.values, case.main.swapped
  if case.compiled.error is not None:
    error = case.compiled.error
    raise _fail("jit_agreement", f"jax.jit(kernel) raised "
                f"{type(error).__name__}: {error}") from error
  eager, eager_swapped, _ = case.eager
  e = case.main.rounding
  case.close("jit_agreement", "jax.jit(kernel)(x, y) vs kernel(x, y)", jitted,
             eager, e, e)
  case.close("jit_agreement", "jax.jit(kernel)(y, x) vs kernel(y, x)",
             swapped, eager_swapped, e, e)


def _check_traces(case: _KernelCase) -> None:
  _, _, events = case.eager
  if events:
    raise _fail("traces", f"kernel(x, y), called eagerly a second time with "
                f"new values of the same shapes and dtypes, traced or "
                f"compiled again ({_summary(events)}): its Python code "
                f"depends on the values, or it builds a new jitted function "
                f"per call (jax.jit inside the kernel, a static argument "
                f"that changes), so every call compiles.")
  _ = case.main.swapped
  if case.main.swap_events:
    raise _fail("traces", f"jax.jit(kernel) was traced again for inputs of "
                f"the same shapes and dtypes "
                f"({_summary(case.main.swap_events)}): the kernel changes "
                f"global JAX state that keys jit's cache (a config option), "
                f"so every jitted call retraces.")


def _check_psd(case: _KernelCase) -> None:
  if not case.positive_definite:
    return
  for name, n, gram in case.pd_grams():
    _assert_finite("positive_definite", f"the Gram matrix of the {name}",
                   gram)
    eps = float(jnp.finfo(gram.dtype).eps)
    gram = _f64(gram)
    eig = np.linalg.eigvalsh(0.5 * (gram + gram.T))
    top = float(np.max(np.abs(eig)))
    # Rounding each entry by eps |k| moves an eigenvalue by at most about
    # n eps max|k| <= n eps top; 10 of those, or rtol of the top.
    tol = max(case.rtol, 10 * n * eps) * top
    if eig[0] < -tol:
      raise _fail("positive_definite",
                  f"the kernel claims to be positive definite, but the Gram "
                  f"matrix of the {name} ({n} points) has eigenvalue "
                  f"{eig[0]:.4g} (largest {eig[-1]:.4g}, tolerance "
                  f"max(rtol, 10 n eps) x largest = {tol:.3g}).")


_KERNEL_CHECKS = {
    "shape": _check_shape,
    "dtype": _check_dtype,
    "coincident_points": _check_coincident,
    "finite": _check_finite,
    "broadcasting": _check_broadcasting,
    "symmetry": _check_symmetry,
    "bounds": _check_bounds,
    "translation_invariance": _check_translation,
    "rotation_invariance": _check_rotation,
    "monotone_decrease": _check_monotone,
    "jit_agreement": _check_jit,
    "traces": _check_traces,
    "positive_definite": _check_psd,
}


def assert_kernel_properties(
    kernel: Callable[..., jax.Array], *, h: int,
    key: Union[None, int, jax.Array] = None, dtype: Any = jnp.float32,
    bounds: Optional[tuple[float, float]] = None,
    radial: Optional[bool] = None, positive_definite: Optional[bool] = None,
    rtol: Optional[float] = None, atol: Optional[float] = None,
    spread: float = 1.0, skip: Union[str, Collection[str]] = ()) -> None:
  """Checks that `kernel` has the properties of a well-behaved kernel.

  `kernel(x, y)` must follow the broadcasting contract of
  `couae_jax.kernels`: `x: [..., h]` and `y: [..., h]` broadcast over their
  leading axes, and the result is `[...]`. The test points are deterministic
  given `key`, drawn around N(0, spread² I_h). First, rays from 4 points out
  to 1e-4 ... 1e2 times `spread * sqrt(2h)` give the kernel's *length scale*
  ℓ: the median distance at which k first moves by half of k(x, x). The
  invariance pairs and the positive-definiteness sets are placed at ℓ, so
  that they test the kernel where it is neither flat nor negligible,
  whatever its own scale.

  Tolerances. Two evaluations a, b equal in exact arithmetic must satisfy
  `|a - b| <= rtol |b| + atol + r`, with `r = 4 (e_a + e_b)` the kernel's own
  rounding (`e = eps sum_j |x_j dk/dx_j| + |y_j dk/dy_j|`, from its gradient;
  module docstring) and `atol = rtol / 1000` times the largest |k| over the
  pairs at the points' scale unless given.

  The properties (`KERNEL_PROPERTIES`), in the order checked:

  * `shape`: `jax.eval_shape` on six shape pairs (scalars, paired rows, one
    side broadcast, outer products, rank-3 broadcasts) gives the contract's
    output shape.
  * `dtype`: floating output of the input dtype (or float32 for half inputs).
  * `coincident_points`: k(x, x) and both gradients finite at 8 coincident
    pairs, the origin and a point 1e3 spreads out among them.
  * `finite`: values and gradients finite at every other pair: 16 random,
    16 near-coincident (1e-6 to 1e-2 spreads and one ulp apart), 8 far
    (100 sqrt(2h) spreads apart), the invariance pairs and their moved copies,
    the cloud's pairs, and the probe rays (values only).
  * `broadcasting`: `kernel(p[:, None], p[None])` on a 32-point cloud equals
    the kernel on its 1024 pairs as rows (tolerance rule above).
  * `symmetry`: k(y, x) equals k(x, y) on every pair (rule above).
  * `bounds`: every value (probe rays included) lies in `bounds` up to a
    slack `rtol max(|lo|, |hi|) + atol + 4 e`; with no bounds known, values
    must be finite.
  * `translation_invariance`: k(x + c, y + c) equals k(x, y) on 32 pairs at
    distances ℓ/16 ... 4ℓ, c of norm about 3 spread sqrt(h) (rule above).
  * `rotation_invariance`: k(R x, R y) equals k(x, y) on the same pairs, R a
    random orthogonal matrix (rule above). Both invariance checks raise
    `ValueError` (naming `spread`) instead of passing when fewer than 8 of
    the 32 compared values exceed twice their allowed difference: a check
    that compared values within tolerance of 0 compared nothing.
  * `monotone_decrease` (radial kernels): along each ray, a step may rise by
    at most `rtol |k| + atol + 4 (e + e')`.
  * `jit_agreement`: `jax.jit(kernel)` agrees with the eager kernel on every
    pair, both ways round (rule above).
  * `traces`: calling the kernel eagerly again with new values of the same
    shapes and dtypes, and the jitted kernel again, traces and compiles
    nothing (counted with JAX's monitoring events): catches kernels that
    build `jax.jit` per call, pass changing static arguments or change JAX's
    config.
  * `positive_definite` (where claimed): the Gram matrices of seven point
    sets have no eigenvalue below `-max(rtol, 10 n eps) λ_max` (n points, eps
    of the output dtype): the 32-point cloud; 144-point lattices in a random
    plane at spacings ℓ/2 and ℓ, in a random 3-D subspace at ℓ (a plane at
    3ℓ/4 for h < 3), and in the plane of the first two coordinates at half
    the length scale along them; 144 points at ℓ/8 to 4ℓ around one point;
    and 48 codes collapsed within 1e-3 spreads of 0 beside 96 points of
    N(0, spread² I).

  What a pass does not prove. Every check looks at finitely many points, so
  a pass is evidence, not proof: a kernel may be asymmetric, non-invariant,
  non-monotone or out of bounds elsewhere, or differ from its jitted self
  on other shapes. `positive_definite` can only be refuted: a negative
  eigenvalue beyond the tolerance proves the kernel is not positive definite,
  but no finite Gram matrix proves that it is (a kernel whose violation is
  smaller than the tolerance, or appears only for point sets unlike these,
  passes); cite a theorem for the claim (Bochner, Schoenberg). Rounding
  allowances come from the kernel's gradient, so a kernel with a wrong or
  non-finite gradient gets a wrong allowance. Runs in float32 check float32
  behaviour; `dtype=jnp.float64` checks the mathematics more sharply.

  The claims default to what `kernels.radial_form(kernel, h)` records for the
  library's kernels (and `functools.partial` of them). For any other callable
  `bounds` defaults to "finite", and the radial (monotone decrease) and
  positive-definiteness checks run only when the caller asserts them. Every
  kernel is checked for translation and rotation invariance: skip those a
  kernel does not claim (a dot-product kernel is not translation invariant,
  one of the L1 distance is not rotation invariant).

  Args:
    kernel: the kernel, `[..., h], [..., h] -> [...]`.
    h: the latent size.
    key: a JAX PRNG key or an int seed (`jax.random.key(seed)`) for the test
      points; `jax.random.key(0)` if None.
    dtype: dtype of the test points.
    bounds: `(lo, hi)` the values must lie in (ends may be infinite).
    radial: whether `k(x, y)` is a non-increasing function of `‖x - y‖`.
    positive_definite: whether Gram matrices must be positive semi-definite.
    rtol: relative tolerance; 1e-4 for float32, 1e-9 for float64, loose for
      half precision.
    atol: absolute tolerance; defaults to `rtol / 1000` times the kernel's
      scale (above).
    spread: standard deviation of the test points (a length).
    skip: a name, or names, from `KERNEL_PROPERTIES` not to check (e.g.
      `("translation_invariance", "positive_definite")`).

  Returns:
    None, if the kernel has every property checked.

  Raises:
    AssertionError: the message starts with the violated property's name,
      e.g. `"symmetry: k(y, x) vs k(x, y): ..."`.
    ValueError: a bad argument (unknown `skip` names, float64 without x64,
      hyperparameters the kernel's `radial_form` rejects for this `h`), or an
      invariance check that would compare nothing at this `spread`.
    TypeError: a kernel that is not callable, a `key` or `skip` of the wrong
      type.

  Example:
    >>> import functools
    >>> from couae_jax import kernels, testing
    >>> testing.assert_kernel_properties(
    ...     functools.partial(kernels.gaussian, scale=2.0), h=3)
    >>> asymmetric = lambda x, y: kernels.imq(x + 0.1, y, scale=1.0)
    >>> testing.assert_kernel_properties(asymmetric, h=3)
    Traceback (most recent call last):
      ...
    AssertionError: symmetry: k(y, x) vs k(x, y): ...
  """
  dtype = _np_dtype(dtype)
  h = _check_h(h)
  if not callable(kernel):
    raise TypeError(f"kernel must be callable; got {kernel!r}.")
  skip = _skip_names(skip, KERNEL_PROPERTIES)
  spread = _positive_float("spread", spread)
  rtol, atol = _tolerance("rtol", rtol), _tolerance("atol", atol)
  if bounds is not None:
    try:
      lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as error:
      raise TypeError(f"bounds must be a pair (lo, hi) of numbers; got "
                      f"{bounds!r}.") from error
    if not lo <= hi:
      raise ValueError(f"bounds must have lo <= hi; got {bounds!r}.")
    bounds = (lo, hi)
  words = _seed_words(key)
  form = kernels_lib.radial_form(kernel, h)
  if bounds is None and form is not None:
    bounds = form.bounds()
  if radial is None:
    radial = form is not None
  if positive_definite is None:
    positive_definite = form is not None and form.positive_definite()
  case = _KernelCase(kernel, h, words, dtype, spread, bounds, bool(radial),
                     bool(positive_definite), _default_rtol(dtype, rtol),
                     atol)
  _run_checks(KERNEL_PROPERTIES, _KERNEL_CHECKS, skip, case)


# ----------------------------------------------------------------------------
# MMD estimators.


class _MmdCase:

  def __init__(self, estimator, blocked, kernel, positive_definite, h, n,
               words, dtype, spread, draws, rtol, atol):
    # Every call below has the same shapes, so each estimator compiles once
    # (with its gradient; eager evaluation would compile every op).
    self.raw_estimator, self.kernel = estimator, kernel
    self.positive_definite = positive_definite
    self.with_grad = jax.jit(jax.value_and_grad(estimator, argnums=(0, 1)))
    self.vmapped = jax.jit(jax.vmap(estimator))
    self.blocked_with_grad = None if blocked is None else jax.jit(
        jax.value_and_grad(blocked, argnums=(0, 1)))
    self.n, self.dtype, self.rtol, self._atol = n, dtype, rtol, atol
    rng = np.random.default_rng(words)

    def cast(a):
      return jnp.asarray((a * spread).astype(dtype))

    self.x = cast(rng.standard_normal((n, h)))
    self.y = cast(rng.standard_normal((n, h)))
    shifted = rng.standard_normal((n, h))
    shifted[:, 0] += 10.0
    self.y_far = cast(shifted)
    self.perm_x, self.perm_y = rng.permutation(n), rng.permutation(n)
    self.null_x = cast(rng.standard_normal((draws, n, h)))
    self.null_y = cast(rng.standard_normal((draws, n, h)))
    # Codes collapsed onto the prior's mean (distinct, not coincident).
    self.collapsed = cast(_COLLAPSE * rng.standard_normal((draws, n, h)))
    self._cache = {}

  def cached(self, name, compute):
    if name not in self._cache:
      self._cache[name] = compute()
    return self._cache[name]

  def estimator(self, x, y) -> np.ndarray:
    return _f64(self.with_grad(x, y)[0])

  def over_draws(self, xs, ys) -> np.ndarray:
    """The estimator on each draw: vmapped, or one at a time if it is not
    vmappable."""
    try:
      values = self.vmapped(xs, ys)
    except Exception:  # pylint: disable=broad-except
      values = [self.estimator(a, b) for a, b in zip(xs, ys, strict=True)]
    return _f64(np.stack([np.asarray(v) for v in values]))

  @property
  def value(self) -> np.ndarray:
    return self.cached("value", lambda: self.estimator(self.x, self.y))

  @property
  def grad(self):
    return self.cached("grad", lambda: self.with_grad(self.x, self.y)[1])

  @property
  def null_values(self) -> np.ndarray:
    return self.cached("null", lambda: self.over_draws(self.null_x,
                                                       self.null_y))

  @property
  def atol(self) -> float:
    """`rtol` times the estimate's scale: its value on far samples."""
    if self._atol is not None:
      return float(self._atol)
    far = self.cached("far", lambda: _f64(self.estimator(self.x, self.y_far)))
    scale = max(abs(float(far)), abs(float(self.value)))
    if not math.isfinite(scale) or scale == 0:
      scale = 1.0
    return self.rtol * scale


def _check_mmd_shape(case: _MmdCase) -> None:
  out = jax.eval_shape(case.raw_estimator, case.x, case.y)
  if getattr(out, "shape", None) != () or not jnp.issubdtype(
      out.dtype, jnp.floating):
    raise _fail("shape", f"estimator(x, y) for x, y of shape "
                f"{tuple(case.x.shape)} must be a floating scalar; got "
                f"{out!r}.")


def _check_mmd_finite(case: _MmdCase) -> None:
  _assert_finite("finite", "estimator(x, y)", case.value)
  gx, gy = case.grad
  _assert_finite("finite", "d estimator / dx", gx)
  _assert_finite("finite", "d estimator / dy", gy)


def _check_mmd_permutation(case: _MmdCase) -> None:
  px = case.estimator(case.x[case.perm_x], case.y)
  py = case.estimator(case.x, case.y[case.perm_y])
  _assert_close("permutation_invariance", "estimator(x[perm], y) vs "
                "estimator(x, y)", px, case.value, rtol=case.rtol,
                atol=case.atol)
  _assert_close("permutation_invariance", "estimator(x, y[perm]) vs "
                "estimator(x, y)", py, case.value, rtol=case.rtol,
                atol=case.atol)


def _check_mmd_symmetry(case: _MmdCase) -> None:
  _assert_close("symmetry", "estimator(y, x) vs estimator(x, y)",
                case.estimator(case.y, case.x), case.value, rtol=case.rtol,
                atol=case.atol)


def _check_mmd_blocked(case: _MmdCase) -> None:
  if case.blocked_with_grad is None:
    return
  value, blocked = case.blocked_with_grad(case.x, case.y)
  _assert_close("blocked_agreement", "blocked(x, y) vs estimator(x, y)",
                value, case.value, rtol=case.rtol, atol=case.atol)
  dense = case.grad
  for name, d, b in zip("xy", dense, blocked, strict=True):
    top = float(np.max(np.abs(_f64(d)))) if d.size else 0.0
    _assert_close("blocked_agreement", f"d blocked / d{name} vs "
                  f"d estimator / d{name}", b, d, rtol=case.rtol,
                  atol=case.rtol * top + 1e-30)


def _mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
  return float(values.mean()), float(values.std(ddof=1)) / math.sqrt(
      len(values))


def _check_mmd_null(case: _MmdCase) -> None:
  values = case.null_values
  _assert_finite("null_mean", "estimates on samples of one distribution",
                 values)
  mean, stderr = _mean_and_stderr(values)
  if abs(mean) > _NULL_Z * stderr + case.atol:
    raise _fail("null_mean", f"for x and y drawn from one distribution the "
                f"mean estimate over {len(values)} draws is {mean:g}, "
                f"{abs(mean) / max(stderr, 1e-300):.1f} standard errors "
                f"({stderr:g}) from 0: the estimator is biased.")


def _check_mmd_v_statistic(case: _MmdCase) -> None:
  if not case.positive_definite:
    return
  # Pooled samples [x; y] of every draw, matched and collapsed, in one
  # broadcast call: V = w' K w with w = (1/n, ..., -1/n, ...), the biased
  # MMD², a quadratic form that a positive definite kernel keeps >= 0.
  matched = np.concatenate([case.null_x, case.null_y], axis=1)
  collapsed = np.concatenate([case.collapsed, case.null_y], axis=1)
  pooled = jnp.asarray(np.concatenate([matched, collapsed]))
  gram = _f64(_Jitted(case.kernel).values(pooled[:, :, None, :],
                                          pooled[:, None, :, :]))
  _assert_finite("v_statistic_nonnegative", "the kernel's Gram matrices",
                 gram)
  n, draws = case.n, len(case.null_x)
  w = np.concatenate([np.full(n, 1.0 / n), np.full(n, -1.0 / n)])
  v = np.einsum("i,dij,j->d", w, gram, w)
  # |w|_1^2 = 4: rounding every entry by rtol |k| moves V by <= 4 rtol max|k|.
  tol = 4.0 * case.rtol * np.max(np.abs(gram), axis=(1, 2))
  worst = int(np.argmin(v + tol))
  if v[worst] < -tol[worst]:
    which = (f"x drawn from N(0, spread² I) like y (draw {worst})"
             if worst < draws else
             f"x collapsed within {_COLLAPSE:g} spreads of y's mean (draw "
             f"{worst - draws})")
    raise _fail("v_statistic_nonnegative",
                f"the biased MMD² (V-statistic) of the estimator's kernel is "
                f"{v[worst]:.6g} < 0 (tolerance 4 rtol max|k| = "
                f"{tol[worst]:.3g}) for {which}, n = {n}: impossible for a "
                f"positive definite kernel, so the kernel is not one at this "
                f"h, and its MMD is no divergence.")


def _check_mmd_collapse(case: _MmdCase) -> None:
  if not case.positive_definite:
    return
  matched = case.null_values
  collapsed = case.cached("collapsed", lambda: case.over_draws(
      case.collapsed, case.null_y))
  _assert_finite("collapse_not_preferred", "estimates on collapsed codes",
                 collapsed)
  # Paired by the prior sample y: E[f(collapsed, y)] = MMD²(collapsed, prior)
  # >= 0 = E[f(matched, y)] for a positive definite kernel and an unbiased f.
  mean, stderr = _mean_and_stderr(collapsed - matched)
  if mean < -(_NULL_Z * stderr + case.atol):
    raise _fail("collapse_not_preferred",
                f"codes collapsed within {_COLLAPSE:g} spreads of the "
                f"prior's mean score {collapsed.mean():.6g} on average over "
                f"{len(collapsed)} draws, below a sample of the prior itself "
                f"({matched.mean():.6g}), by {-mean / max(stderr, 1e-300):.1f}"
                f" standard errors: minimising this estimator collapses the "
                f"codes, impossible with a positive definite kernel.")


_MMD_CHECKS = {
    "shape": _check_mmd_shape,
    "finite": _check_mmd_finite,
    "permutation_invariance": _check_mmd_permutation,
    "symmetry": _check_mmd_symmetry,
    "blocked_agreement": _check_mmd_blocked,
    "null_mean": _check_mmd_null,
    "v_statistic_nonnegative": _check_mmd_v_statistic,
    "collapse_not_preferred": _check_mmd_collapse,
}


def assert_mmd_properties(
    estimator: Callable[[jax.Array, jax.Array], jax.Array], *, h: int,
    n: int = 16, key: Union[None, int, jax.Array] = None,
    dtype: Any = jnp.float32,
    blocked: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None,
    kernel: Optional[Callable[..., jax.Array]] = None,
    positive_definite: Optional[bool] = None,
    draws: int = 32, rtol: Optional[float] = None,
    atol: Optional[float] = None, spread: float = 1.0,
    skip: Union[str, Collection[str]] = ()) -> None:
  """Checks the properties of an unbiased MMD² estimator `f(x, y) -> []`.

  On samples `x, y: [n, h]` of N(0, spread² I_h) (deterministic given `key`)
  checks, in order (`MMD_PROPERTIES`); every comparison of two values is
  `|a - b| <= rtol |b| + atol`, with `atol` by default `rtol` times the
  larger of `|f(x, y)|` and `|f(x, y_far)|` (y shifted by 10 spreads: the
  scale of the estimator's terms):

  * `shape`: a floating scalar.
  * `finite`: a finite value and finite gradients in x and y.
  * `permutation_invariance`: reordering x, or y, changes nothing. Skip it
    for estimators that pair x_i with y_i in order, such as
    `mmd.mmd2_linear`: those change by design.
  * `symmetry`: `f(y, x) == f(x, y)`.
  * `blocked_agreement` (if `blocked` is given): value and gradients agree
    with `blocked` (gradient tolerance: `rtol` times the largest gradient).
  * `null_mean`: over `draws` independent pairs x, y of one distribution,
    the mean estimate lies within 4 standard errors (+ atol) of 0
    (unbiasedness; skip it for a biased estimator such as
    `mmd.mmd2_biased`).
  * `v_statistic_nonnegative` (positive definite kernels): the biased MMD²
    `w' K w` of the kernel on the pooled samples, for every draw of matched
    samples and of codes collapsed within 1e-3 spreads of 0 against a prior
    sample, is >= `-4 rtol max|k|`.
  * `collapse_not_preferred` (positive definite kernels): on the same draws,
    the estimator's mean on collapsed codes minus its mean on matched ones is
    not below `-(4 standard errors + atol)`; for an unbiased estimator the
    first is MMD²(collapsed, prior) >= 0 in expectation and the second 0.
    Together these catch the paper's Coulomb kernel claimed positive
    definite where collapsed codes score below a sample of the prior: the
    V-statistic from h = 16, the collapse comparison (statistical, 3
    standard errors at h = 16 with n = 16) from h = 32.

  The two positive-definite checks run where the kernel is claimed positive
  definite: `positive_definite`, or by default what
  `kernels.radial_form(kernel, h)` records (`kernels.coulomb` claims it only
  for h <= 4; above, it warns with `kernels.NotPositiveDefiniteWarning` and
  these checks do not run unless asserted). `kernel` defaults to the
  `kernel=` keyword of a `functools.partial` estimator.

  What a pass does not prove: each property is checked on a few samples of
  one size, so an estimator can still be wrong for other shapes, samples or
  distributions; `null_mean` and `collapse_not_preferred` are statistical
  (4 standard errors over `draws` draws), so they miss small biases; and a
  non-negative V-statistic on these samples does not make the kernel
  positive definite (`assert_kernel_properties` looks harder).

  The estimator (and `blocked`) must be differentiable and jittable; both are
  compiled once, with their gradients.

  Args:
    estimator: `f(x: [n, h], y: [n, h]) -> []`, e.g.
      `functools.partial(mmd.mmd2, kernel=kernels.sliced_coulomb)`.
    h: the latent size.
    n: points per sample.
    key: a JAX PRNG key or an int seed; `jax.random.key(0)` if None.
    dtype: dtype of the samples.
    blocked: a second estimator of the same quantity, e.g. the streamed
      `functools.partial(mmd.mmd2, kernel=..., block_size=5)`.
    kernel: the estimator's kernel `[..., h], [..., h] -> [...]`, for the
      positive-definite checks.
    positive_definite: whether the kernel is positive definite (default: its
      `radial_form`'s record; False without one).
    draws: pairs of samples in the statistical checks (vmapped).
    rtol: relative tolerance (1e-4 for float32).
    atol: absolute tolerance; defaults to `rtol` times the estimate for two
      well-separated samples, the scale of the estimator's terms.
    spread: standard deviation of the samples.
    skip: a name, or names, from `MMD_PROPERTIES` not to check.

  Raises:
    AssertionError: the message starts with the violated property's name.
    ValueError: a bad argument, or `positive_definite=True` with no kernel
      to compute the V-statistic with.
    TypeError: an estimator or kernel that is not callable, a `key` or
      `skip` of the wrong type.

  Example:
    >>> import functools
    >>> from couae_jax import kernels, mmd, testing
    >>> kernel = functools.partial(kernels.imq, scale=2.0)
    >>> testing.assert_mmd_properties(
    ...     functools.partial(mmd.mmd2, kernel=kernel), h=2, n=8,
    ...     blocked=functools.partial(mmd.mmd2, kernel=kernel, block_size=3))
  """
  dtype = _np_dtype(dtype)
  if not callable(estimator):
    raise TypeError(f"estimator must be callable; got {estimator!r}.")
  h = _check_h(h)
  for name, value in (("n", n), ("draws", draws)):
    if isinstance(value, bool) or not isinstance(
        value, numbers.Integral) or value < 2:
      raise ValueError(f"{name} must be an integer >= 2; got {value!r}.")
  skip = _skip_names(skip, MMD_PROPERTIES)
  spread = _positive_float("spread", spread)
  rtol, atol = _tolerance("rtol", rtol), _tolerance("atol", atol)
  words = _seed_words(key)
  if kernel is None and isinstance(estimator, functools.partial):
    kernel = estimator.keywords.get("kernel")
  if kernel is not None and not callable(kernel):
    raise TypeError(f"kernel must be callable; got {kernel!r}.")
  if positive_definite is None:
    form = None if kernel is None else kernels_lib.radial_form(kernel, h)
    positive_definite = form is not None and form.positive_definite()
  positive_definite = bool(positive_definite)
  if (positive_definite and kernel is None
      and "v_statistic_nonnegative" not in skip):
    raise ValueError(
        "positive_definite=True needs the estimator's kernel for the "
        "V-statistic: pass kernel=..., or skip='v_statistic_nonnegative'.")
  case = _MmdCase(estimator, blocked, kernel, positive_definite, h, int(n),
                  words, dtype, spread, int(draws),
                  _default_rtol(dtype, rtol), atol)
  _run_checks(MMD_PROPERTIES, _MMD_CHECKS, skip, case)


# ----------------------------------------------------------------------------
# Hypothesis strategies (hypothesis is imported when one is built).

#: The kinds of pair `point_pairs` draws.
PAIR_KINDS = ("independent", "coincident", "near", "far")


def _hypothesis():
  try:
    # pylint: disable=g-import-not-at-top
    import hypothesis
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
  except ImportError as error:
    raise ImportError(
        "couae_jax.testing's strategies need Hypothesis: pip install "
        "hypothesis (or couae-jax[test]). The assert_* checks work without "
        "it.") from error
  return hypothesis, st, hnp


def _draw(draw, value, st):
  return draw(value) if isinstance(value, st.SearchStrategy) else value


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
  _, st, _ = _hypothesis()
  dtypes: list[np.dtype] = [np.dtype(np.float32)]
  if half:
    dtypes += [np.dtype(np.float16), np.dtype(jnp.bfloat16)]
  if _x64_enabled():
    dtypes.append(np.dtype(np.float64))
  return st.sampled_from(dtypes)


def _ulp(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
  """The spacing of `dtype` at |x|, float64 (the subnormal step near 0)."""
  fi = jnp.finfo(dtype)
  eps, tiny = float(fi.eps), float(fi.smallest_normal)
  ax = np.abs(_f64(x))
  with np.errstate(divide="ignore"):
    binade = np.exp2(np.floor(np.log2(np.maximum(ax, tiny))))
  return binade * eps


def _nudge(x: np.ndarray, steps: int, lo: float, hi: float,
           dtype: np.dtype) -> np.ndarray:
  """`x` moved `steps` ulps per coordinate toward the middle of [lo, hi]."""
  x64 = _f64(x)
  direction = np.where(x64 < 0.5 * (lo + hi), 1.0, -1.0)
  return np.clip(x64 + direction * steps * _ulp(x64, dtype), lo, hi).astype(
      dtype)


def _elements(draw, shape, dtype, lo, hi, st, hnp):
  """An array of `shape` with finite elements in [lo, hi], cast to `dtype`."""
  width = {2: 16, 4: 32, 8: 64}[dtype.itemsize]
  base = np.dtype(np.float64 if width == 64 else np.float32)
  if dtype == np.float16:
    base = dtype
  a = draw(hnp.arrays(base, shape, elements=st.floats(
      lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False,
      width=width if dtype != np.dtype(jnp.bfloat16) else 32)))
  return np.clip(_f64(a), lo, hi).astype(dtype)


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
  hypothesis, st, hnp = _hypothesis()
  del hypothesis
  if not min_value < max_value:
    raise ValueError(f"need min_value < max_value; got {min_value}, "
                     f"{max_value}.")
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
      if layout == "coincident":
        x[j] = x[i]
      elif layout == "near":
        x[j] = _nudge(x[i], draw(st.integers(1, 1024)), min_value, max_value,
                      dt)
      else:
        x[i] = np.asarray(min_value, dt)
        x[j] = np.asarray(max_value, dt)
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
  hypothesis, st, hnp = _hypothesis()
  del hypothesis
  if not min_value < max_value:
    raise ValueError(f"need min_value < max_value; got {min_value}, "
                     f"{max_value}.")
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
    elif which == "coincident":
      y = x.copy()
    else:
      y = _nudge(x, draw(st.integers(1, 1024)), min_value, max_value, dt)
    return x, y

  return strategy()


__all__ = [
    "KERNEL_PROPERTIES", "MMD_PROPERTIES", "PAIR_KINDS",
    "assert_kernel_properties", "assert_mmd_properties", "float_dtypes",
    "point_pairs", "sample_sets",
]
