"""`assert_kernel_properties`: the kernel properties and their checks.

Each check takes the `KernelCase` and raises `AssertionError` on a violation;
`_CHECKS.run` runs them in the order of `KERNEL_PROPERTIES` and names the
property in the message.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Callable, Collection, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax import kernels as kernels_lib
from couae_jax.testing import _kernel_case, _shared

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

_CHECKS = _shared.Checks(KERNEL_PROPERTIES)


def _output(case: _kernel_case.KernelCase, x_shape, y_shape):
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


@_CHECKS.register("shape")
def _check_shape(case: _kernel_case.KernelCase) -> None:
  h = case.h
  cases = [((h,), (h,), ()), ((5, h), (5, h), (5,)), ((5, h), (h,), (5,)),
           ((h,), (3, h), (3,)), ((5, 1, h), (1, 3, h), (5, 3)),
           ((2, 1, 1, h), (4, 3, h), (2, 4, 3))]
  for x_shape, y_shape, want in cases:
    try:
      out = _output(case, x_shape, y_shape)
    except Exception as error:  # pylint: disable=broad-except
      raise AssertionError(
          f"kernel(x, y) raised {type(error).__name__} for x.shape={x_shape}"
          f", y.shape={y_shape} (expected output shape {want}): {error}"
      ) from error
    got = tuple(getattr(out, "shape", ()))
    if got != want or not hasattr(out, "shape"):
      raise AssertionError(
          f"kernel(x, y) for x.shape={x_shape}, y.shape={y_shape} returned "
          f"shape {got} ({out!r}); the broadcasting contract [..., h], "
          f"[..., h] -> [...] needs {want}.")


@_CHECKS.register("dtype")
def _check_dtype(case: _kernel_case.KernelCase) -> None:
  got = np.dtype(_output(case, (5, case.h), (5, case.h)).dtype)
  allowed = {case.dtype}
  if case.dtype.itemsize < 4:
    allowed.add(np.dtype(np.float32))
  if got not in allowed:
    raise AssertionError(
        f"kernel(x, y) on {case.dtype} inputs returned {got}; expected one "
        f"of {sorted(str(d) for d in allowed)}.")


@_CHECKS.register("coincident_points")
def _check_coincident(case: _kernel_case.KernelCase) -> None:
  main = case.main
  _shared.assert_finite("k(x, x)", main.part("coincident", main.values))
  for axis, g in zip("xy", main.grads, strict=True):
    _shared.assert_finite(f"d k(x, y) / d{axis} at x == y",
                          main.part("coincident", g))


@_CHECKS.register("finite")
def _check_finite(case: _kernel_case.KernelCase) -> None:
  main = case.main
  gx, gy = main.grads
  for name in (name for name in main.slices if name != "coincident"):
    for what, a in (("k(x, y)", main.values), ("d k / dx", gx),
                    ("d k / dy", gy)):
      _shared.assert_finite(f"{what} on the {name} pairs", main.part(name, a))
  _shared.assert_finite(
      f"k(x, y) along the probe rays (to {_kernel_case.PROBE_RADII[-1]:g} "
      f"spread sqrt(2 h))", case.probe.values)


@_CHECKS.register("broadcasting")
def _check_broadcasting(case: _kernel_case.KernelCase) -> None:
  _ = case.main  # builds the cloud
  gram = case.compiled.gram(jnp.asarray(case.gram_points))
  paired, e = case.cloud(case.main.values), case.cloud(case.main.rounding)
  case.close("kernel(p[:, None], p[None]) vs kernel on the paired rows",
             gram, paired, e, e)


@_CHECKS.register("symmetry")
def _check_symmetry(case: _kernel_case.KernelCase) -> None:
  e = case.main.rounding
  case.close("k(y, x) vs k(x, y)", case.main.swapped, case.main.values, e, e)


@_CHECKS.register("bounds")
def _check_bounds(case: _kernel_case.KernelCase) -> None:
  main, probe = case.main, case.probe
  values = np.concatenate([_shared.f64(main.values), _shared.f64(probe.values)])
  if case.bounds is None:
    _shared.assert_finite("k(x, y)", values)
    return
  lo, hi = case.bounds
  ends = [abs(b) for b in (lo, hi) if math.isfinite(b)]
  e = np.concatenate([main.rounding, probe.rounding])
  slack = case.rtol * max(ends, default=0.0) + case.atol + (
      _shared.allowance(e))
  bad = (values < lo - slack) | (values > hi + slack) | np.isnan(values)
  if np.any(bad):
    i = int(np.argmax(bad))
    x = np.concatenate([main.x, probe.x])[i]
    y = np.concatenate([main.y, probe.y])[i]
    raise AssertionError(
        f"{int(bad.sum())} values lie outside the claimed [{lo:g}, {hi:g}] "
        f"(slack rtol max(|lo|, |hi|) + atol + "
        f"{_shared.ROUNDING_FACTOR:g} e); e.g. k = {values[i]:.8g} at "
        f"|x - y| = {np.linalg.norm(_shared.f64(x) - _shared.f64(y)):g}.")


def _check_moved(moved: str, what: str, prop: str):
  """The check that k on the `moved` copies of the invariance pairs equals k
  on the pairs themselves."""
  @_CHECKS.register(prop)
  def check(case: _kernel_case.KernelCase) -> None:
    main = case.main
    want = main.part("invariance", main.values)
    allowed = case.close(what, main.part(moved, main.values), want,
                         main.part(moved, main.rounding),
                         main.part("invariance", main.rounding))
    case.require_informative(prop, allowed, want)
  return check


_check_moved("translated", "k(x + c, y + c) vs k(x, y)",
             "translation_invariance")
_check_moved("rotated", "k(R x, R y) vs k(x, y)", "rotation_invariance")


@_CHECKS.register("monotone_decrease", when="radial")
def _check_monotone(case: _kernel_case.KernelCase) -> None:
  shape = (case.rays, len(case.radii))
  k = _shared.f64(case.probe.values).reshape(shape)
  e = case.probe.rounding.reshape(shape)
  rise = k[:, 1:] - k[:, :-1]
  bad = rise > case.rtol * np.abs(k[:, :-1]) + case.atol + (
      _shared.allowance(e[:, 1:])) + _shared.allowance(e[:, :-1])
  if np.any(bad):
    ray, step = np.unravel_index(np.argmax(bad), bad.shape)
    raise AssertionError(
        f"a radial kernel must not increase with distance; along ray {ray} "
        f"it rises from {k[ray, step]:.8g} at distance "
        f"{case.radii[step]:.4g} to {k[ray, step + 1]:.8g} at "
        f"{case.radii[step + 1]:.4g}.")


@_CHECKS.register("jit_agreement")
def _check_jit(case: _kernel_case.KernelCase) -> None:
  jitted, swapped = case.main.values, case.main.swapped
  error = case.compiled.error
  if error is not None:
    raise AssertionError(f"jax.jit(kernel) raised {type(error).__name__}: "
                         f"{error}") from error
  eager, eager_swapped, _ = case.eager
  e = case.main.rounding
  case.close("jax.jit(kernel)(x, y) vs kernel(x, y)", jitted, eager, e, e)
  case.close("jax.jit(kernel)(y, x) vs kernel(y, x)", swapped, eager_swapped,
             e, e)


def _summary(events) -> str:
  return ", ".join(f"{n} x {e}" for e, n in collections.Counter(
      events).items())


@_CHECKS.register("traces")
def _check_traces(case: _kernel_case.KernelCase) -> None:
  _, _, events = case.eager
  if events:
    raise AssertionError(
        f"kernel(x, y), called eagerly a second time with new values of the "
        f"same shapes and dtypes, traced or compiled again ({_summary(events)}"
        f"): its Python code depends on the values, or it builds a new "
        f"jitted function per call (jax.jit inside the kernel, a static "
        f"argument that changes), so every call compiles.")
  _ = case.main.swapped
  if case.main.swap_events:
    raise AssertionError(
        f"jax.jit(kernel) was traced again for inputs of the same shapes and "
        f"dtypes ({_summary(case.main.swap_events)}): the kernel changes "
        f"global JAX state that keys jit's cache (a config option), so every "
        f"jitted call retraces.")


@_CHECKS.register("positive_definite", when="positive_definite")
def _check_psd(case: _kernel_case.KernelCase) -> None:
  for name, n, gram in case.pd_grams():
    _shared.assert_finite(f"the Gram matrix of the {name}", gram)
    eps = float(jnp.finfo(gram.dtype).eps)
    gram = _shared.f64(gram)
    eig = np.linalg.eigvalsh(0.5 * (gram + gram.T))
    top = float(np.max(np.abs(eig)))
    # Rounding each entry by eps |k| moves an eigenvalue by at most about
    # n eps max|k| <= n eps top; 10 of those, or rtol of the top.
    tol = max(case.rtol, 10 * n * eps) * top
    if eig[0] < -tol:
      raise AssertionError(
          f"the kernel claims to be positive definite, but the Gram matrix "
          f"of the {name} ({n} points) has eigenvalue {eig[0]:.4g} (largest "
          f"{eig[-1]:.4g}, tolerance max(rtol, 10 n eps) x largest = "
          f"{tol:.3g}).")


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
  _shared.require_callable("kernel", kernel)
  options = _shared.Options(KERNEL_PROPERTIES, h=h, key=key, dtype=dtype,
                            rtol=rtol, atol=atol, spread=spread, skip=skip)
  if bounds is not None:
    try:
      lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as error:
      raise TypeError(f"bounds must be a pair (lo, hi) of numbers; got "
                      f"{bounds!r}.") from error
    if not lo <= hi:
      raise ValueError(f"bounds must have lo <= hi; got {bounds!r}.")
    bounds = (lo, hi)
  form = kernels_lib.radial_form(kernel, options.h)
  if bounds is None and form is not None:
    bounds = form.bounds()
  if positive_definite is None:
    positive_definite = form is not None and form.positive_definite()
  case = _kernel_case.KernelCase(
      kernel, options, bounds,
      form is not None if radial is None else bool(radial),
      bool(positive_definite))
  _CHECKS.run(case, options.skip)
