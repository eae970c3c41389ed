"""Property-testing kit for kernels and MMD estimators: checks and strategies.

For anyone who writes a kernel with the contract of `couae_jax.kernels`
(`kernel(x: [..., h], y: [..., h]) -> [...]`) or an MMD estimator
(`estimator(x: [n, h], y: [m, h]) -> []`) and wants to test it as the project
tests its own:

* `assert_kernel_properties(kernel, h=...)` checks, on a deterministic batch of
  point pairs (ordinary, near-coincident, coincident and far apart), every
  property listed in `KERNEL_PROPERTIES`, and raises `AssertionError` whose
  message starts with the name of the first violated property.
* `assert_mmd_properties(estimator, h=...)` does the same for estimators
  (`MMD_PROPERTIES`).
* `sample_sets`, `point_pairs` and `float_dtypes` are Hypothesis strategies
  for sets of points and pairs of points, including near-coincident and
  far-apart ones. Hypothesis is optional: it is imported when a strategy is
  built, so `import couae_jax.testing` needs only JAX, NumPy and chex.

Tolerances. Every comparison is `|a - b| <= rtol * |b| + atol`. `rtol`
defaults by dtype (1e-4 for float32: the Coulomb kernel's power amplifies the
rounding of its inputs by up to h/2); `atol` defaults to `rtol / 1000` times
the largest kernel value seen, or for estimators to `rtol` times the estimate
on two well-separated samples, so the checks are scale-free.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Collection, Optional, Sequence

import chex
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
    "traces",                  # one trace per input shape
    "positive_definite",       # PSD Gram matrix where claimed
)

#: The properties `assert_mmd_properties` checks, in order.
MMD_PROPERTIES = (
    "shape",                   # a floating scalar
    "finite",                  # finite value and gradients
    "permutation_invariance",  # reordering either sample changes nothing
    "symmetry",                # f(x, y) == f(y, x)
    "blocked_agreement",       # dense and blocked estimators agree (+ grads)
    "null_mean",               # mean ~ 0 over samples of one distribution
)

_DEFAULT_RTOL = {
    np.dtype(np.float64): 1e-9,
    np.dtype(np.float32): 1e-4,
    np.dtype(np.float16): 5e-2,
    np.dtype(jnp.bfloat16): 2e-1,
}

_GRAM_POINTS = 32  # points of the Gram matrix (PSD and broadcasting checks)
_NULL_Z = 4.0      # standard errors the null mean may sit from 0


# ----------------------------------------------------------------------------
# Shared helpers.


def _fail(prop: str, message: str) -> AssertionError:
  return AssertionError(f"{prop}: {message}")


def _np_dtype(dtype) -> np.dtype:
  dtype = np.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"dtype must be a floating dtype; got {dtype}.")
  if dtype == np.float64 and not jax.config.jax_enable_x64:
    raise ValueError(
        "dtype=float64 needs 64-bit JAX: set jax.config.update("
        "'jax_enable_x64', True) or use the jax.enable_x64 context manager.")
  return dtype


def _rng(key) -> np.random.Generator:
  """A NumPy generator seeded from a JAX key (typed or raw uint32)."""
  if key is None:
    key = jax.random.key(0)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  words = np.asarray(key, np.uint32).ravel()
  return np.random.default_rng([int(w) for w in words])


def _default_rtol(dtype: np.dtype, rtol: Optional[float]) -> float:
  return _DEFAULT_RTOL.get(dtype, 1e-4) if rtol is None else float(rtol)


def _f64(a) -> np.ndarray:
  return np.asarray(a).astype(np.float64)


def _unit(rng: np.random.Generator, shape) -> np.ndarray:
  u = rng.standard_normal(shape)
  return u / np.linalg.norm(u, axis=-1, keepdims=True)


def _rotation(rng: np.random.Generator, h: int) -> np.ndarray:
  """A Haar-random orthogonal `[h, h]` matrix (QR of a Gaussian), float64."""
  q, r = np.linalg.qr(rng.standard_normal((h, h)))
  return q * np.sign(np.diag(r))[None, :]


def _assert_close(prop: str, what: str, got, want, rtol: float, atol: float):
  """`|got - want| <= rtol |want| + atol` elementwise, else AssertionError."""
  got, want = _f64(got), _f64(want)
  if got.shape != want.shape:
    raise _fail(prop, f"{what}: shapes {got.shape} and {want.shape} differ.")
  bad = ~(np.abs(got - want) <= rtol * np.abs(want) + atol)
  both_inf = np.isinf(got) & (got == want)
  bad &= ~both_inf
  if np.any(bad):
    i = np.unravel_index(np.argmax(bad), bad.shape)
    raise _fail(
        prop,
        f"{what}: {int(bad.sum())} of {bad.size} values differ beyond rtol="
        f"{rtol:g}, atol={atol:g}; first at index {tuple(int(j) for j in i)}: "
        f"{float(got[i]):.8g} vs {float(want[i]):.8g}.")


def _assert_finite(prop: str, what: str, value):
  value = _f64(value)
  if not np.all(np.isfinite(value)):
    bad = ~np.isfinite(value)
    i = np.unravel_index(np.argmax(bad), bad.shape)
    raise _fail(prop, f"{what} is not finite at {int(bad.sum())} of "
                f"{bad.size} entries, e.g. index "
                f"{tuple(int(j) for j in i)}: {float(value[i])}.")


def _run_checks(names: Sequence[str], checks: dict, skip: Collection[str],
                context) -> None:
  unknown = set(skip) - set(names)
  if unknown:
    raise ValueError(f"skip names unknown properties {sorted(unknown)}; "
                     f"known: {list(names)}.")
  for name in names:
    if name in skip:
      continue
    try:
      checks[name](context)
    except AssertionError as error:
      if str(error).startswith(f"{name}:"):
        raise
      raise _fail(name, str(error)) from error
    except Exception as error:  # pylint: disable=broad-except
      raise _fail(name, f"raised {type(error).__name__}: {error}") from error


@functools.lru_cache(maxsize=1)
def _chex_trace_counter():
  """chex's global trace counter, to forget our own entry; None if moved."""
  try:
    # pylint: disable-next=g-import-not-at-top
    from chex._src import asserts_internal
    counter = asserts_internal.TRACE_COUNTER
  except (ImportError, AttributeError):  # pragma: no cover - chex internals
    return None
  return counter if hasattr(counter, "keys") else None


def _jit_with_trace_count(fn: Callable, n: int):
  """`jax.jit(chex.assert_max_traces(fn, n))` and a function forgetting it.

  chex keys its counter by the call stack's function names and the source,
  which repeat across calls of `assert_kernel_properties`; the returned
  `forget` removes this check's entry (or, should chex's internals move, clears
  the counter) so that repeated checks do not count each other's traces.
  """
  counter = _chex_trace_counter()
  before = set(counter.keys()) if counter is not None else set()

  def forget():
    if counter is None:  # pragma: no cover - chex internals
      chex.clear_trace_counter()
      return
    for k in set(counter.keys()) - before:
      del counter[k]

  def kernel_under_jit(x, y):
    return fn(x, y)

  return jax.jit(chex.assert_max_traces(kernel_under_jit, n=n)), forget


# ----------------------------------------------------------------------------
# Kernels.


class _KernelCase:
  """The kernel, its claims, and a deterministic batch of point pairs.

  All pairs are rows of two `[N, h]` arrays evaluated with one call, so each
  check costs slicing; named slices select the pairs of each check.
  """

  def __init__(self, kernel, h, rng, dtype, spread, bounds, radial,
               positive_definite, rtol, atol):
    self.kernel, self.h, self.dtype = kernel, h, dtype
    self.bounds, self.radial = bounds, radial
    self.positive_definite = positive_definite
    self.rtol = rtol
    self._atol = atol
    s = spread
    unit = s * math.sqrt(2.0 * h)  # rms distance of two N(0, s^2 I) points
    parts = {}

    def add(name, x, y):
      parts[name] = (np.asarray(x, np.float64).astype(dtype),
                     np.asarray(y, np.float64).astype(dtype))

    n = 16
    x = rng.standard_normal((n, h)) * s
    add("random", x, rng.standard_normal((n, h)) * s)
    # Near-coincident: offsets from 1e-6 to 1e-2 spreads, and one ulp.
    x = rng.standard_normal((n, h)) * s
    offsets = s * np.geomspace(1e-6, 1e-2, n - 4)[:, None] * _unit(
        rng, (n - 4, h))
    last = _f64(x[n - 4:].astype(dtype))
    near = np.concatenate([x[:n - 4] + offsets, last + _ulp(last, dtype)])
    add("near", x, near)
    x = rng.standard_normal((8, h)) * s
    x[0] = 0.0
    x[1] *= 1e3
    add("coincident", x, x)
    x = rng.standard_normal((8, h)) * s
    add("far", x, x + 100.0 * unit * _unit(rng, (8, h)))
    # Invariance: distances between unit/2 and 2 unit, where rounding the
    # moved points perturbs the kernel by a few ulps times its log-slope.
    x = rng.standard_normal((n, h)) * s
    y = x + (unit * rng.uniform(0.5, 2.0, (n, 1))) * _unit(rng, (n, h))
    add("invariance", x, y)
    x, y = (_f64(a) for a in parts["invariance"])
    shift = 3.0 * s * rng.standard_normal((1, h))
    add("translated", x + shift, y + shift)
    rot = _rotation(rng, h)
    add("rotated", x @ rot.T, y @ rot.T)
    # Rays from x0 along u: rounding is monotone, so the rounded distances
    # never decrease along a ray.
    rays, radii = 4, np.concatenate([[0.0], np.geomspace(1e-3, 4.0, 40)])
    x0 = _f64((rng.standard_normal((rays, h)) * s).astype(dtype))
    u = _unit(rng, (rays, h))
    ray_y = x0[:, None, :] + unit * radii[None, :, None] * u[:, None, :]
    add("ray", np.repeat(x0, len(radii), 0), ray_y.reshape(-1, h))
    self.ray_shape = (rays, len(radii))
    # Gram points: a cloud with a few near-duplicates, all pairs as rows.
    g = rng.standard_normal((_GRAM_POINTS, h)) * s
    g *= rng.uniform(0.25, 1.5, (_GRAM_POINTS, 1))
    g[-4:] = g[:4] + 1e-2 * s * _unit(rng, (4, h))
    self.gram_points = g.astype(dtype)
    gp = _f64(self.gram_points)
    add("gram", np.repeat(gp, _GRAM_POINTS, 0), np.tile(gp, (_GRAM_POINTS, 1)))

    self.slices, start = {}, 0
    for name, (a, _) in parts.items():
      self.slices[name] = slice(start, start + a.shape[0])
      start += a.shape[0]
    self.x = np.concatenate([a for a, _ in parts.values()])
    self.y = np.concatenate([b for _, b in parts.values()])
    self._cache = {}

  # Lazily evaluated outputs (each check raises under its own name).

  def cached(self, name, compute):
    if name not in self._cache:
      self._cache[name] = compute()
    return self._cache[name]

  @property
  def values(self) -> np.ndarray:
    return self.cached("values", lambda: np.asarray(
        self.kernel(jnp.asarray(self.x), jnp.asarray(self.y))))

  @property
  def swapped(self) -> np.ndarray:
    return self.cached("swapped", lambda: np.asarray(
        self.kernel(jnp.asarray(self.y), jnp.asarray(self.x))))

  @property
  def grads(self):
    def compute():
      f = lambda a, b: jnp.sum(self.kernel(a, b))
      gx, gy = jax.grad(f, argnums=(0, 1))(jnp.asarray(self.x),
                                          jnp.asarray(self.y))
      return np.asarray(gx), np.asarray(gy)
    return self.cached("grads", compute)

  @property
  def atol(self) -> float:
    if self._atol is not None:
      return float(self._atol)
    finite = np.abs(_f64(self.values))
    finite = finite[np.isfinite(finite)]
    top = float(finite.max()) if finite.size else 1.0
    return self.rtol * 1e-3 * top

  def part(self, name):
    return self.values[self.slices[name]]


def _check_shape(case: _KernelCase) -> None:
  h, dtype = case.h, case.dtype
  cases = [((h,), (h,), ()), ((5, h), (5, h), (5,)), ((5, h), (h,), (5,)),
           ((h,), (3, h), (3,)), ((5, 1, h), (1, 3, h), (5, 3)),
           ((2, 1, 1, h), (4, 3, h), (2, 4, 3))]
  for x_shape, y_shape, want in cases:
    try:
      out = jax.eval_shape(case.kernel, jax.ShapeDtypeStruct(x_shape, dtype),
                           jax.ShapeDtypeStruct(y_shape, dtype))
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
  out = jax.eval_shape(case.kernel,
                       jax.ShapeDtypeStruct((5, case.h), case.dtype),
                       jax.ShapeDtypeStruct((5, case.h), case.dtype))
  got = np.dtype(out.dtype)
  allowed = {case.dtype}
  if case.dtype.itemsize < 4:
    allowed.add(np.dtype(np.float32))
  if got not in allowed:
    raise _fail("dtype", f"kernel(x, y) on {case.dtype} inputs returned "
                f"{got}; expected one of {sorted(str(d) for d in allowed)}.")


def _check_coincident(case: _KernelCase) -> None:
  sl = case.slices["coincident"]
  _assert_finite("coincident_points", "k(x, x)", case.values[sl])
  gx, gy = case.grads
  _assert_finite("coincident_points", "d k(x, y) / dx at x == y", gx[sl])
  _assert_finite("coincident_points", "d k(x, y) / dy at x == y", gy[sl])


def _check_finite(case: _KernelCase) -> None:
  gx, gy = case.grads
  for name, sl in case.slices.items():
    if name == "coincident":
      continue
    _assert_finite("finite", f"k(x, y) on the {name} pairs", case.values[sl])
    _assert_finite("finite", f"d k / dx on the {name} pairs", gx[sl])
    _assert_finite("finite", f"d k / dy on the {name} pairs", gy[sl])


def _check_broadcasting(case: _KernelCase) -> None:
  p = jnp.asarray(case.gram_points)
  gram = np.asarray(case.kernel(p[:, None, :], p[None, :, :]))
  paired = case.part("gram").reshape(_GRAM_POINTS, _GRAM_POINTS)
  _assert_close("broadcasting",
                "kernel(p[:, None], p[None]) vs kernel on the paired rows",
                gram, paired, case.rtol, case.atol)


def _check_symmetry(case: _KernelCase) -> None:
  _assert_close("symmetry", "k(x, y) != k(y, x)", case.values, case.swapped,
                case.rtol, case.atol)


def _check_bounds(case: _KernelCase) -> None:
  values = _f64(case.values)
  if case.bounds is None:
    _assert_finite("bounds", "k(x, y)", values)
    return
  lo, hi = (float(b) for b in case.bounds)
  ends = [abs(b) for b in (lo, hi) if math.isfinite(b)]
  slack = case.rtol * max(ends, default=0.0) + case.atol
  below, above = values < lo - slack, values > hi + slack
  if np.any(below | above | np.isnan(values)):
    i = int(np.argmax(below | above | np.isnan(values)))
    raise _fail("bounds", f"{int(np.sum(below | above))} values lie outside "
                f"the claimed [{lo:g}, {hi:g}] (slack {slack:g}); e.g. "
                f"k = {values[i]:.8g} at |x - y| = "
                f"{np.linalg.norm(_f64(case.x[i]) - _f64(case.y[i])):g}.")


def _check_translation(case: _KernelCase) -> None:
  _assert_close("translation_invariance", "k(x + c, y + c) != k(x, y)",
                case.part("translated"), case.part("invariance"), case.rtol,
                case.atol)


def _check_rotation(case: _KernelCase) -> None:
  _assert_close("rotation_invariance", "k(R x, R y) != k(x, y)",
                case.part("rotated"), case.part("invariance"), case.rtol,
                case.atol)


def _check_monotone(case: _KernelCase) -> None:
  if not case.radial:
    return
  k = _f64(case.part("ray")).reshape(case.ray_shape)
  rise = k[:, 1:] - k[:, :-1]
  bad = rise > case.rtol * np.abs(k[:, :-1]) + case.atol
  if np.any(bad):
    ray, step = np.unravel_index(np.argmax(bad), bad.shape)
    raise _fail("monotone_decrease",
                f"a radial kernel must not increase with distance; along ray "
                f"{ray} it rises from {k[ray, step]:.8g} to "
                f"{k[ray, step + 1]:.8g} "
                f"(step {step} -> {step + 1} of {k.shape[1]}).")


def _check_jit_and_traces(case: _KernelCase, *, traces: bool) -> None:
  def compute():
    f, forget = _jit_with_trace_count(case.kernel, n=1)
    try:
      x, y = jnp.asarray(case.x), jnp.asarray(case.y)
      first = np.asarray(f(x, y))
      try:
        second = np.asarray(f(y, x))
        error = None
      except AssertionError as e:  # chex: traced twice for one shape
        second, error = None, e
    finally:
      forget()
    return first, second, error
  first, second, error = case.cached("jit", compute)
  if traces:
    if error is not None:
      raise _fail("traces", f"jax.jit(kernel) was traced again for inputs of "
                  f"the same shape and dtype: {error}") from error
    return
  _assert_close("jit_agreement", "jax.jit(kernel)(x, y) vs kernel(x, y)",
                first, case.values, case.rtol, case.atol)
  if second is not None:
    _assert_close("jit_agreement", "jax.jit(kernel)(y, x) vs kernel(y, x)",
                  second, case.swapped, case.rtol, case.atol)


def _check_psd(case: _KernelCase) -> None:
  if not case.positive_definite:
    return
  gram = _f64(case.part("gram")).reshape(_GRAM_POINTS, _GRAM_POINTS)
  eig = np.linalg.eigvalsh(0.5 * (gram + gram.T))
  top = max(abs(eig[-1]), abs(eig[0]))
  tol = max(case.rtol, 10 * _GRAM_POINTS * np.finfo(np.float32).eps) * top
  if eig[0] < -tol:
    raise _fail("positive_definite",
                f"the kernel claims to be positive definite, but the Gram "
                f"matrix of {_GRAM_POINTS} points has eigenvalue {eig[0]:g} "
                f"(largest {eig[-1]:g}, tolerance {tol:g}).")


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
    "jit_agreement": functools.partial(_check_jit_and_traces, traces=False),
    "traces": functools.partial(_check_jit_and_traces, traces=True),
    "positive_definite": _check_psd,
}


def assert_kernel_properties(
    kernel: Callable[..., jax.Array], *, h: int,
    key: Optional[jax.Array] = None, dtype: Any = jnp.float32,
    bounds: Optional[tuple[float, float]] = None,
    radial: Optional[bool] = None, positive_definite: Optional[bool] = None,
    rtol: Optional[float] = None, atol: Optional[float] = None,
    spread: float = 1.0, skip: Collection[str] = ()) -> None:
  """Checks that `kernel` has the properties of a well-behaved kernel.

  `kernel(x, y)` must follow the broadcasting contract of
  `couae_jax.kernels`: `x: [..., h]` and `y: [..., h]` broadcast over their
  leading axes, and the result is `[...]`. The properties in
  `KERNEL_PROPERTIES` are checked in order on a deterministic batch of point
  pairs, drawn from N(0, spread² I_h): ordinary pairs, near-coincident pairs
  (1e-6 to 1e-2 spreads apart, and one ulp apart), coincident pairs (the
  origin included), far-apart pairs (100 rms distances), rays of increasing
  distance, and the pairs of a 32-point Gram matrix.

  The claims default to what `kernels.radial_form(kernel, h)` records for the
  library's kernels (and `functools.partial` of them). For any other callable
  `bounds` defaults to "finite", and the radial (monotone decrease) and
  positive-definiteness checks run only when the caller asserts them.

  Args:
    kernel: the kernel, `[..., h], [..., h] -> [...]`.
    h: the latent size.
    key: a JAX PRNG key seeding the test points; `jax.random.key(0)` if None.
    dtype: dtype of the test points.
    bounds: `(lo, hi)` the values must lie in (ends may be infinite).
    radial: whether `k(x, y)` is a non-increasing function of `‖x - y‖`.
    positive_definite: whether Gram matrices must be positive semi-definite.
    rtol: relative tolerance; 1e-4 for float32, 1e-9 for float64, loose for
      half precision.
    atol: absolute tolerance; defaults to `rtol / 1000` times the largest
      kernel value seen.
    spread: standard deviation of the test points (a length).
    skip: names from `KERNEL_PROPERTIES` not to check (e.g.
      `("translation_invariance", "rotation_invariance")` for a linear
      kernel).

  Returns:
    None, if the kernel has every property.

  Raises:
    AssertionError: the message starts with the violated property's name,
      e.g. `"symmetry: k(x, y) != k(y, x): ..."`.
    ValueError: a bad argument (unknown `skip` names, float64 without x64,
      hyperparameters the kernel's `radial_form` rejects for this `h`).

  Example:
    >>> import functools
    >>> from couae_jax import kernels, testing
    >>> testing.assert_kernel_properties(
    ...     functools.partial(kernels.gaussian, scale=2.0), h=3)
    >>> asymmetric = lambda x, y: kernels.imq(x + 0.1, y, scale=1.0)
    >>> testing.assert_kernel_properties(asymmetric, h=3)
    Traceback (most recent call last):
      ...
    AssertionError: symmetry: k(x, y) != k(y, x): ...
  """
  dtype = _np_dtype(dtype)
  if not isinstance(h, int) or isinstance(h, bool) or h < 1:
    raise ValueError(f"h must be a positive integer; got {h!r}.")
  if not callable(kernel):
    raise TypeError(f"kernel must be callable; got {kernel!r}.")
  form = kernels_lib.radial_form(kernel, h)
  if bounds is None and form is not None:
    bounds = form.bounds()
  if radial is None:
    radial = form is not None
  if positive_definite is None:
    positive_definite = form is not None and form.positive_definite()
  case = _KernelCase(kernel, h, _rng(key), dtype, float(spread), bounds,
                     bool(radial), bool(positive_definite),
                     _default_rtol(dtype, rtol), atol)
  _run_checks(KERNEL_PROPERTIES, _KERNEL_CHECKS, skip, case)


# ----------------------------------------------------------------------------
# MMD estimators.


class _MmdCase:

  def __init__(self, estimator, blocked, h, n, rng, dtype, spread, draws,
               rtol, atol):
    # Every call below has the same shapes, so each estimator compiles once
    # (with its gradient; eager evaluation would compile every op).
    self.raw_estimator = estimator
    self.with_grad = jax.jit(jax.value_and_grad(estimator, argnums=(0, 1)))
    self.vmapped = jax.jit(jax.vmap(estimator))
    self.blocked_with_grad = None if blocked is None else jax.jit(
        jax.value_and_grad(blocked, argnums=(0, 1)))
    self.dtype, self.rtol, self._atol = dtype, rtol, atol
    cast = lambda a: jnp.asarray((a * spread).astype(dtype))
    self.x = cast(rng.standard_normal((n, h)))
    self.y = cast(rng.standard_normal((n, h)))
    shifted = rng.standard_normal((n, h))
    shifted[:, 0] += 10.0
    self.y_far = cast(shifted)
    self.perm_x, self.perm_y = rng.permutation(n), rng.permutation(n)
    self.null_x = cast(rng.standard_normal((draws, n, h)))
    self.null_y = cast(rng.standard_normal((draws, n, h)))
    self._cache = {}

  def cached(self, name, compute):
    if name not in self._cache:
      self._cache[name] = compute()
    return self._cache[name]

  def estimator(self, x, y) -> np.ndarray:
    return _f64(self.with_grad(x, y)[0])

  @property
  def value(self) -> np.ndarray:
    return self.cached("value", lambda: self.estimator(self.x, self.y))

  @property
  def grad(self):
    return self.cached("grad", lambda: self.with_grad(self.x, self.y)[1])

  @property
  def atol(self) -> float:
    """`rtol / 1000` of the estimate's scale: its value on far samples."""
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
                "estimator(x, y)", px, case.value, case.rtol, case.atol)
  _assert_close("permutation_invariance", "estimator(x, y[perm]) vs "
                "estimator(x, y)", py, case.value, case.rtol, case.atol)


def _check_mmd_symmetry(case: _MmdCase) -> None:
  _assert_close("symmetry", "estimator(y, x) vs estimator(x, y)",
                case.estimator(case.y, case.x), case.value, case.rtol,
                case.atol)


def _check_mmd_blocked(case: _MmdCase) -> None:
  if case.blocked_with_grad is None:
    return
  value, blocked = case.blocked_with_grad(case.x, case.y)
  _assert_close("blocked_agreement", "blocked(x, y) vs estimator(x, y)",
                value, case.value, case.rtol, case.atol)
  dense = case.grad
  for name, d, b in zip("xy", dense, blocked):
    top = float(np.max(np.abs(_f64(d)))) if d.size else 0.0
    _assert_close("blocked_agreement", f"d blocked / d{name} vs "
                  f"d estimator / d{name}", b, d, case.rtol,
                  case.rtol * top + 1e-30)


def _check_mmd_null(case: _MmdCase) -> None:
  try:
    values = case.vmapped(case.null_x, case.null_y)
  except Exception:  # pylint: disable=broad-except
    # Not vmappable: one draw at a time.
    values = [case.estimator(a, b) for a, b in zip(case.null_x, case.null_y)]
  values = _f64(np.stack([np.asarray(v) for v in values]))
  _assert_finite("null_mean", "estimates on samples of one distribution",
                 values)
  mean = float(values.mean())
  stderr = float(values.std(ddof=1)) / math.sqrt(len(values))
  if abs(mean) > _NULL_Z * stderr + case.atol:
    raise _fail("null_mean", f"for x and y drawn from one distribution the "
                f"mean estimate over {len(values)} draws is {mean:g}, "
                f"{abs(mean) / max(stderr, 1e-300):.1f} standard errors "
                f"({stderr:g}) from 0: the estimator is biased.")


_MMD_CHECKS = {
    "shape": _check_mmd_shape,
    "finite": _check_mmd_finite,
    "permutation_invariance": _check_mmd_permutation,
    "symmetry": _check_mmd_symmetry,
    "blocked_agreement": _check_mmd_blocked,
    "null_mean": _check_mmd_null,
}


def assert_mmd_properties(
    estimator: Callable[[jax.Array, jax.Array], jax.Array], *, h: int,
    n: int = 16, key: Optional[jax.Array] = None, dtype: Any = jnp.float32,
    blocked: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None,
    draws: int = 32, rtol: Optional[float] = None,
    atol: Optional[float] = None, spread: float = 1.0,
    skip: Collection[str] = ()) -> None:
  """Checks the properties of an unbiased MMD² estimator `f(x, y) -> []`.

  On samples `x, y: [n, h]` from N(0, spread² I_h) (deterministic given
  `key`), checks in order (`MMD_PROPERTIES`): a floating scalar result; a
  finite value and gradient; invariance under permutations of `x` and of `y`;
  symmetry `f(x, y) == f(y, x)`; agreement of value and gradients with
  `blocked` if given; and a mean within 4 standard errors of 0 over `draws`
  independent pairs of samples of one distribution (unbiasedness; skip
  `"null_mean"` for a biased estimator such as `mmd.mmd2_biased`).

  The estimator (and `blocked`) must be differentiable and jittable; both are
  compiled once, with their gradients.

  Args:
    estimator: `f(x: [n, h], y: [n, h]) -> []`, e.g.
      `functools.partial(mmd.mmd2, kernel=kernels.sliced_coulomb)`.
    h: the latent size.
    n: points per sample.
    key: a JAX PRNG key; `jax.random.key(0)` if None.
    dtype: dtype of the samples.
    blocked: a second estimator of the same quantity, e.g. the streamed
      `functools.partial(mmd.mmd2, kernel=..., block_size=5)`.
    draws: pairs of samples in the null-mean check (vmapped).
    rtol: relative tolerance (1e-4 for float32).
    atol: absolute tolerance; defaults to `rtol` times the estimate for two
      well-separated samples, the scale of the estimator's terms.
    spread: standard deviation of the samples.
    skip: names from `MMD_PROPERTIES` not to check.

  Raises:
    AssertionError: the message starts with the violated property's name.

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
  if not isinstance(h, int) or isinstance(h, bool) or h < 1:
    raise ValueError(f"h must be a positive integer; got {h!r}.")
  if n < 2 or draws < 2:
    raise ValueError(f"n and draws must be >= 2; got n={n}, draws={draws}.")
  case = _MmdCase(estimator, blocked, h, n, _rng(key), dtype, float(spread),
                  draws, _default_rtol(dtype, rtol), atol)
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
  dtypes = [np.dtype(np.float32)]
  if half:
    dtypes += [np.dtype(np.float16), np.dtype(jnp.bfloat16)]
  if jax.config.jax_enable_x64:
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
