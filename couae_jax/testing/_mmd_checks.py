"""`assert_mmd_properties`: the estimator's samples, and a check per entry
of `MMD_PROPERTIES` (laid out as `_kernel_checks`)."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Collection, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax import kernels as kernels_lib
from couae_jax.testing import _shared

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

_NULL_Z = 4.0             # standard errors a mean may sit from its target

_CHECKS = _shared.Checks(MMD_PROPERTIES)


def _with_grad(estimator):
  return jax.jit(jax.value_and_grad(estimator, argnums=(0, 1)))


class _MmdCase:
  """The estimator, its claims and its samples; each evaluation is done on
  first use. Every call has the same shapes, so each estimator compiles once
  (with its gradient; eager evaluation would compile every op)."""

  def __init__(self, estimator, blocked, kernel, positive_definite: bool,
               n: int, draws: int, options: _shared.Options):
    self.raw_estimator, self.kernel = estimator, kernel
    self.positive_definite = positive_definite
    self.with_grad = _with_grad(estimator)
    self.vmapped = jax.jit(jax.vmap(estimator))
    # Set or None; its check runs only when set.
    self.blocked: Any = None if blocked is None else _with_grad(blocked)
    self.n, self.rtol, self._atol = n, options.rtol, options.atol
    h, rng = options.h, np.random.default_rng(options.words)

    def cast(a):
      return jnp.asarray((a * options.spread).astype(options.dtype))

    self.x = cast(rng.standard_normal((n, h)))
    self.y = cast(rng.standard_normal((n, h)))
    shifted = rng.standard_normal((n, h))
    shifted[:, 0] += 10.0
    self.y_far = cast(shifted)
    self.perm_x, self.perm_y = rng.permutation(n), rng.permutation(n)
    self.null_x = cast(rng.standard_normal((draws, n, h)))
    self.null_y = cast(rng.standard_normal((draws, n, h)))
    # Codes collapsed onto the prior's mean (distinct, not coincident).
    self.collapsed = cast(_shared.COLLAPSE * rng.standard_normal((draws, n, h)))

  def estimator(self, x, y) -> np.ndarray:
    return _shared.f64(self.with_grad(x, y)[0])

  def over_draws(self, xs, ys) -> np.ndarray:
    """The estimator on each draw: vmapped, or one at a time if it is not
    vmappable."""
    try:
      values = self.vmapped(xs, ys)
    except Exception:  # pylint: disable=broad-except
      values = [self.estimator(a, b) for a, b in zip(xs, ys, strict=True)]
    return _shared.f64(np.stack([np.asarray(v) for v in values]))

  @functools.cached_property
  def value(self) -> np.ndarray:
    return self.estimator(self.x, self.y)

  @functools.cached_property
  def grad(self):
    return self.with_grad(self.x, self.y)[1]

  @functools.cached_property
  def null_values(self) -> np.ndarray:
    return self.over_draws(self.null_x, self.null_y)

  @functools.cached_property
  def collapsed_values(self) -> np.ndarray:
    return self.over_draws(self.collapsed, self.null_y)

  @functools.cached_property
  def atol(self) -> float:
    """`rtol` times the estimate's scale: its value on far samples."""
    if self._atol is not None:
      return float(self._atol)
    far = _shared.f64(self.estimator(self.x, self.y_far))
    scale = max(abs(float(far)), abs(float(self.value)))
    if not math.isfinite(scale) or scale == 0:
      scale = 1.0
    return self.rtol * scale

  def close(self, what, got, want) -> None:
    _shared.assert_close(what, got, want, rtol=self.rtol, atol=self.atol)


@_CHECKS.register("shape")
def _check_shape(case: _MmdCase) -> None:
  out = jax.eval_shape(case.raw_estimator, case.x, case.y)
  if getattr(out, "shape", None) != () or not jnp.issubdtype(
      out.dtype, jnp.floating):
    raise AssertionError(f"estimator(x, y) for x, y of shape "
                         f"{tuple(case.x.shape)} must be a floating scalar; "
                         f"got {out!r}.")


@_CHECKS.register("finite")
def _check_finite(case: _MmdCase) -> None:
  _shared.assert_finite("estimator(x, y)", case.value)
  for axis, g in zip("xy", case.grad, strict=True):
    _shared.assert_finite(f"d estimator / d{axis}", g)


@_CHECKS.register("permutation_invariance")
def _check_permutation(case: _MmdCase) -> None:
  px = case.estimator(case.x[case.perm_x], case.y)
  py = case.estimator(case.x, case.y[case.perm_y])
  case.close("estimator(x[perm], y) vs estimator(x, y)", px, case.value)
  case.close("estimator(x, y[perm]) vs estimator(x, y)", py, case.value)


@_CHECKS.register("symmetry")
def _check_symmetry(case: _MmdCase) -> None:
  case.close("estimator(y, x) vs estimator(x, y)",
             case.estimator(case.y, case.x), case.value)


@_CHECKS.register("blocked_agreement", when="blocked")
def _check_blocked(case: _MmdCase) -> None:
  value, blocked = case.blocked(case.x, case.y)
  case.close("blocked(x, y) vs estimator(x, y)", value, case.value)
  for axis, d, b in zip("xy", case.grad, blocked, strict=True):
    top = float(np.max(np.abs(_shared.f64(d)))) if d.size else 0.0
    _shared.assert_close(f"d blocked / d{axis} vs d estimator / d{axis}", b,
                         d, rtol=case.rtol, atol=case.rtol * top + 1e-30)


def _assert_mean_not_below(values: np.ndarray, atol: float, *,
                           two_sided: bool, message: Callable) -> None:
  """The statistical verdict: the mean of `values` may lie below 0 (or, if
  `two_sided`, from 0) by at most 4 standard errors + atol, else an
  AssertionError with `message(mean, stderr, distance in stderrs)`."""
  mean = float(values.mean())
  stderr = float(values.std(ddof=1)) / math.sqrt(len(values))
  bound = _NULL_Z * stderr + atol
  if (abs(mean) > bound) if two_sided else (mean < -bound):
    z = (abs(mean) if two_sided else -mean) / max(stderr, 1e-300)
    raise AssertionError(message(mean, stderr, z))


@_CHECKS.register("null_mean")
def _check_null(case: _MmdCase) -> None:
  values = case.null_values
  _shared.assert_finite("estimates on samples of one distribution", values)
  _assert_mean_not_below(
      values, case.atol, two_sided=True, message=lambda mean, stderr, z: (
          f"for x and y drawn from one distribution the mean estimate over "
          f"{len(values)} draws is {mean:g}, {z:.1f} standard errors "
          f"({stderr:g}) from 0: the estimator is biased."))


@_CHECKS.register("v_statistic_nonnegative", when="positive_definite")
def _check_v_statistic(case: _MmdCase) -> None:
  # Pooled samples [x; y] of every draw, matched and collapsed, in one
  # broadcast call: V = w' K w with w = (1/n, ..., -1/n, ...), the biased
  # MMD², a quadratic form that a positive definite kernel keeps >= 0.
  matched = np.concatenate([case.null_x, case.null_y], axis=1)
  collapsed = np.concatenate([case.collapsed, case.null_y], axis=1)
  pooled = jnp.asarray(np.concatenate([matched, collapsed]))
  gram = _shared.f64(_shared.Jitted(case.kernel).gram(pooled))
  _shared.assert_finite("the kernel's Gram matrices", gram)
  n, draws = case.n, len(case.null_x)
  w = np.concatenate([np.full(n, 1.0 / n), np.full(n, -1.0 / n)])
  v = np.einsum("i,dij,j->d", w, gram, w)
  # |w|_1^2 = 4: rounding every entry by rtol |k| moves V by <= 4 rtol max|k|.
  tol = 4.0 * case.rtol * np.max(np.abs(gram), axis=(1, 2))
  worst = int(np.argmin(v + tol))
  if v[worst] < -tol[worst]:
    which = (f"x drawn from N(0, spread² I) like y (draw {worst})"
             if worst < draws else
             f"x collapsed within {_shared.COLLAPSE:g} spreads of y's mean "
             f"(draw {worst - draws})")
    raise AssertionError(
        f"the biased MMD² (V-statistic) of the estimator's kernel is "
        f"{v[worst]:.6g} < 0 (tolerance 4 rtol max|k| = {tol[worst]:.3g}) "
        f"for {which}, n = {n}: impossible for a positive definite kernel, "
        f"so the kernel is not one at this h, and its MMD is no divergence.")


@_CHECKS.register("collapse_not_preferred", when="positive_definite")
def _check_collapse(case: _MmdCase) -> None:
  matched, collapsed = case.null_values, case.collapsed_values
  _shared.assert_finite("estimates on collapsed codes", collapsed)
  # Paired by the prior sample y: E[f(collapsed, y)] = MMD²(collapsed, prior)
  # >= 0 = E[f(matched, y)] for a positive definite kernel and an unbiased f.
  _assert_mean_not_below(
      collapsed - matched, case.atol, two_sided=False,
      message=lambda mean, stderr, z: (
          f"codes collapsed within {_shared.COLLAPSE:g} spreads of the "
          f"prior's mean score {collapsed.mean():.6g} on average over "
          f"{len(collapsed)} draws, below a sample of the prior itself "
          f"({matched.mean():.6g}), by {z:.1f} standard errors: minimising "
          f"this estimator collapses the codes, impossible with a positive "
          f"definite kernel."))


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
  _shared.require_callable("estimator", estimator)
  options = _shared.Options(MMD_PROPERTIES, h=h, key=key, dtype=dtype,
                            rtol=rtol, atol=atol, spread=spread, skip=skip)
  n, draws = _shared.integer("n", n, 2), _shared.integer("draws", draws, 2)
  if kernel is None and isinstance(estimator, functools.partial):
    kernel = estimator.keywords.get("kernel")
  if kernel is not None:
    _shared.require_callable("kernel", kernel)
  if positive_definite is None:
    form = None if kernel is None else kernels_lib.radial_form(kernel,
                                                               options.h)
    positive_definite = form is not None and form.positive_definite()
  positive_definite = bool(positive_definite)
  if (positive_definite and kernel is None
      and "v_statistic_nonnegative" not in options.skip):
    raise ValueError(
        "positive_definite=True needs the estimator's kernel for the "
        "V-statistic: pass kernel=..., or skip='v_statistic_nonnegative'.")
  case = _MmdCase(estimator, blocked, kernel, positive_definite, n, draws,
                  options)
  _CHECKS.run(case, options.skip)
