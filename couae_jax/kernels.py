"""Kernels between points in R^h: the Coulomb kernels and the WAE baselines.

`sliced_coulomb` is the Coulomb kernel for every latent size (positive
definite and characteristic at every h); `coulomb` is the paper's
`1/(‖x - y‖^(h-2) + eps)`, positive definite only for h <= 4, and warns above.

Every kernel here is a plain function `kernel(x, y, *, hyperparameters)` of two
arrays `x: [..., h]` and `y: [..., h]` that broadcast against each other over
their leading dimensions; it returns `[...]`, the kernel of each pair. Bind the
hyperparameters with `functools.partial` to pass a kernel to `couae_jax.mmd`.

All the kernels are *radial*: `k(x, y) = profile(‖x - y‖²)`. Each registers its
profile, so the MMD estimators evaluate whole Gram matrices with one matrix
multiply (`‖x‖² + ‖y‖² - 2 x·y`) instead of broadcasting `[n, m, h]`
differences. Any other callable with the same contract works with the MMD
estimators too, through the slower generic path.

The Coulomb kernels. In h >= 3 dimensions `1/‖x - y‖^(h-2)` is the Green's
function of the Laplacian; with it every local extremum of the MMD in the codes
is global (Sansone et al., Coulomb Autoencoders). Their `eps > 0` bounds the
kernel, `0 < k <= 1/eps`, which the generalisation bound needs (K = 1/eps).
Smaller values follow the pure kernel more closely but raise the MMD estimate's
variance: against 1e-3, the default 1e-2 cuts the null spread of `mmd2` at
n = 256 by 3x (h = 8) to 8x (h = 64) and separates shifted samples better
(BUILD_NOTES.md, `python -m experiments.kernel_variance`). Their `scale` is the
unit of distance, where the kernel is `1/(1 + eps)`. It defaults to
`sqrt(2 h)`, the root-mean-square distance between two independent N(0, I_h)
points, which keeps the power `(‖x - y‖ / scale)^(h-2)` finite in float32 for
standard normal codes up to h in the hundreds; for a prior of coordinate
standard deviation sigma, pass `sigma * sqrt(2 h)`. Rescaling the kernel only
rescales the MMD and `eps`, so the theorem holds at any scale. Distant pairs
give `k = 0` (the correct limit) and coincident ones `1/eps`, with finite
derivatives in both limits.

Kernels always evaluate in float32 or wider (half-precision inputs are
promoted), since 1/eps and the Coulomb powers leave float16's range.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from couae_jax import _checks, _coulomb_power

Kernel = Callable[..., jax.Array]

#: Default regulariser of the Coulomb kernels; the module docstring says why.
DEFAULT_EPS = 1e-2


class NotPositiveDefiniteWarning(UserWarning):
  """A kernel is used where it is not positive definite.

  Its MMD is then not a divergence: the estimate can be negative, and a
  configuration far from the prior can score below a sample of it.
  """


@dataclasses.dataclass(frozen=True)
class RadialForm:
  """A kernel written as a function of the squared distance.

  Attributes:
    profile: `profile(sq_dist, *, h, **params) -> k`, elementwise on the
      squared Euclidean distances `sq_dist` (any shape).
    resolve: `resolve(h, **params) -> params`; validates the hyperparameters for
      latent size `h` and fills in their defaults.
    bounds: `bounds(h, **params) -> (lower, upper)`, the closed range the kernel
      values lie in (the lower end may be approached only at infinite distance).
    positive_definite: `positive_definite(h, **params) -> bool`, True where the
      kernel is proven positive definite on R^h.

  Each kernel of this module carries its form as its `radial_form`
  attribute; `radial_form(kernel, h)` binds it to a latent size.

  Raises:
    TypeError: a field that is not callable.

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import kernels
    >>> form = kernels.gaussian.radial_form
    >>> isinstance(form, kernels.RadialForm), form.resolve(3, scale=2.0)
    (True, {'scale': 2.0})
    >>> form.bounds(3, scale=2.0), form.positive_definite(3, scale=2.0)
    ((0.0, 1.0), True)
    >>> k = form.profile(jnp.array([0.0, 8.0]), h=3, scale=2.0)  # exp(-t / 8)
    >>> [round(v, 4) for v in k.tolist()]
    [1.0, 0.3679]
  """
  profile: Callable[..., jax.Array]
  resolve: Callable[..., dict]
  bounds: Callable[..., tuple[float, float]]
  positive_definite: Callable[..., bool]

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if not callable(getattr(self, field.name)):
        raise TypeError(
            f"{field.name} must be callable; got "
            f"{getattr(self, field.name)!r:.80}.")


@dataclasses.dataclass(frozen=True)
class BoundRadialKernel:
  """A radial kernel with its hyperparameters resolved for one latent size.

  What `radial_form(kernel, h)` returns; the MMD estimators evaluate Gram
  matrices through its `profile`.

  Attributes:
    form: the kernel's `RadialForm`.
    h: the latent size, an int >= 1.
    params: the resolved hyperparameters (defaults filled in), a dict.

  Raises:
    TypeError: `form` not a `RadialForm`, `params` not a dict; in `profile`,
      a non-floating `sq_dist`.
    ValueError: `h` not a positive int.

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import kernels
    >>> bound = kernels.radial_form(kernels.coulomb, 3)
    >>> bound.h, bound.params["eps"], round(bound.params["scale"], 4)
    (3, 0.01, 2.4495)
    >>> bound.bounds(), bound.positive_definite()
    ((0.0, 100.0), True)
    >>> k = bound.profile(jnp.array([0.0, 6.0]))  # 1/((r/scale)^(h-2) + eps)
    >>> k.dtype, [round(v, 4) for v in k.tolist()]
    (dtype('float32'), [100.0, 0.9901])
  """
  form: RadialForm
  h: int
  params: dict

  def __post_init__(self):
    if not isinstance(self.form, RadialForm):
      raise TypeError(f"form must be a RadialForm; got {self.form!r:.80}.")
    _checks.positive_int("h", self.h)
    if not isinstance(self.params, dict):
      raise TypeError(f"params must be a dict of hyperparameters; got "
                      f"{self.params!r:.80}.")

  def profile(self, sq_dist: jax.Array) -> jax.Array:
    """The kernel at squared distances `sq_dist` (any shape, floating)."""
    sq_dist = _checks.floating_array("sq_dist", sq_dist, min_rank=0)
    return self.form.profile(sq_dist, h=self.h, **self.params)

  def bounds(self) -> tuple[float, float]:
    """`(lower, upper)`, the closed range of the kernel's values."""
    return self.form.bounds(self.h, **self.params)

  def positive_definite(self) -> bool:
    """True where the kernel is proven positive definite on R^h."""
    return self.form.positive_definite(self.h, **self.params)


def radial_form(kernel: Kernel, h: int) -> Optional[BoundRadialKernel]:
  """The radial form of `kernel` for latent size `h`, or None if it has none.

  Recognises the kernels of this module and `functools.partial` objects that
  bind their keyword hyperparameters (partials of partials flatten).
  Hyperparameters are validated here, so bad ones raise at trace time. Any
  other callable (a lambda, a partial binding positional arguments) has no
  radial form.

  Args:
    kernel: a callable kernel `k(x, y, **params)`.
    h: the latent size, an int >= 1 (`x.shape[-1]`).

  Returns:
    A `BoundRadialKernel`, or None.

  Raises:
    TypeError: `kernel` not callable.
    ValueError: `h` not a positive int, or hyperparameters the kernel rejects
      for this `h` (e.g. `coulomb` with h < 3, eps <= 0).

  Example:
    >>> import functools
    >>> from couae_jax import kernels
    >>> kernels.radial_form(functools.partial(kernels.imq, scale=2.0), 5).params
    {'scale': 2.0}
    >>> kernels.radial_form(lambda x, y: x @ y, 5) is None
    True
    >>> kernels.radial_form(kernels.coulomb, 2)
    Traceback (most recent call last):
      ...
    ValueError: coulomb needs latent size h = x.shape[-1] >= 3 (it is 1/r^(h-2)); got h=2. For h = 2 use couae_jax.kernels.coulomb_log.
  """
  if not callable(kernel):
    raise TypeError(f"kernel must be callable; got {kernel!r:.80}.")
  if isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1:
    raise ValueError(
        f"h must be a positive integer (the latent size); got {h!r}.")
  params: dict[str, Any] = {}
  if isinstance(kernel, functools.partial):
    if kernel.args:
      return None
    params = dict(kernel.keywords)
    kernel = kernel.func
  form = getattr(kernel, "radial_form", None)
  if not isinstance(form, RadialForm):
    return None
  return BoundRadialKernel(form, h, form.resolve(h, **params))


def _register(form: RadialForm):
  """Attaches `form` to a kernel function as its `radial_form` attribute."""
  def decorate(kernel):
    kernel.radial_form = form
    return kernel
  return decorate


def _evaluate(form: RadialForm, x, y, params: dict) -> jax.Array:
  """Validates a pair of point arrays and applies the radial profile `form`
  (a kernel's `radial_form`)."""
  x = _checks.floating_array("x", x)
  y = _checks.floating_array("y", y)
  h = _checks.same_dimension("x", x, "y", y)
  bound = BoundRadialKernel(form, h, form.resolve(h, **params))
  dtype = _checks.compute_dtype(x, y)
  diff = x.astype(dtype) - y.astype(dtype)
  return bound.profile(jnp.sum(diff * diff, axis=-1))


# ----------------------------------------------------------------------------
# Coulomb kernels, h >= 3: the paper's and the sliced one.


#: The largest h at which the paper's regularised kernel is positive definite.
_COULOMB_PD_MAX_DIM = 4


def _length_resolve(h: int, *, eps: float,
                    scale: Optional[float]) -> dict:
  """Checks a Coulomb kernel's `eps` and `scale`; `scale` defaults to
  sqrt(2 h), the root-mean-square distance of two N(0, I_h) points."""
  _checks.positive("eps", eps)
  if scale is None:
    scale = math.sqrt(2.0 * h)
  _checks.positive("scale", scale)
  return {"eps": eps, "scale": scale}


def _coulomb_resolve(h: int, *, eps: float = DEFAULT_EPS,
                     scale: Optional[float] = None) -> dict:
  if h < 3:
    raise ValueError(
        f"coulomb needs latent size h = x.shape[-1] >= 3 (it is 1/r^(h-2)); "
        f"got h={h}. For h = 2 use couae_jax.kernels.coulomb_log.")
  if h > _COULOMB_PD_MAX_DIM:
    warnings.warn(
        f"coulomb at h={h}: 1/(u^(h-2) + eps) is positive definite only for "
        f"h <= {_COULOMB_PD_MAX_DIM}. Above, its MMD is no divergence: for "
        f"h >= 16 codes collapsed onto the prior's mean score below a sample "
        f"of the prior (the cap 1/eps is reached by the mean and by a code "
        f"alike). Use couae_jax.kernels.sliced_coulomb, positive definite "
        f"and characteristic at every h.", NotPositiveDefiniteWarning,
        stacklevel=2)
  return _length_resolve(h, eps=eps, scale=scale)


def _sliced_coulomb_resolve(h: int, *, eps: float = DEFAULT_EPS,
                            scale: Optional[float] = None) -> dict:
  if h < 3:
    raise ValueError(
        f"sliced_coulomb averages the Coulomb kernel over 3-D slices and needs "
        f"latent size h = x.shape[-1] >= 3; got h={h}. For h = 2 use "
        f"couae_jax.kernels.coulomb_log.")
  return _length_resolve(h, eps=eps, scale=scale)


def _coulomb_profile(sq_dist, *, h: int, eps, scale) -> jax.Array:
  return _coulomb_power.profile(h - 2, sq_dist, eps, scale)


def _sliced_coulomb_profile(sq_dist, *, h: int, eps, scale) -> jax.Array:
  del h
  return _coulomb_power.profile(1, sq_dist, eps, scale)


@_register(RadialForm(
    profile=_coulomb_profile,
    resolve=_coulomb_resolve,
    bounds=lambda h, *, eps, scale: (0.0, 1.0 / eps),
    # 1/(r^p + eps) is a completely monotone function of r^2 for p <= 2
    # (Schoenberg), so positive definite for h <= 4; above, it is not (its
    # MMD goes negative, BUILD_NOTES section 1b).
    positive_definite=lambda h, **_: h <= _COULOMB_PD_MAX_DIM,
))
def coulomb(x: jax.Array, y: jax.Array, *, eps: float = DEFAULT_EPS,
            scale: Optional[float] = None) -> jax.Array:
  """The regularised Coulomb kernel `1 / ((‖x - y‖ / scale)^(h-2) + eps)`.

  The paper's kernel; positive definite only for h <= 4, and it warns
  (`NotPositiveDefiniteWarning`) above, where `sliced_coulomb` is the Coulomb
  kernel to use. The module docstring explains `eps` and `scale`.

  Arguments, return value and errors as in `sliced_coulomb`, except that
  pairs closer than `scale * eps^(1/(h-2))`, not `eps * scale`, saturate at
  `1/eps`.

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import kernels
    >>> x = jnp.zeros((4, 3)); y = jnp.ones((4, 3))
    >>> k = kernels.coulomb(x, y, scale=1.0, eps=1e-3)  # 1 / (sqrt(3) + 1e-3)
    >>> k.shape, f"{float(k[0]):.4f}"
    ((4,), '0.5770')
    >>> float(kernels.coulomb(x[0], x[0]))  # coincident points: 1/eps
    100.0
  """
  return _evaluate(coulomb.radial_form, x, y, {"eps": eps, "scale": scale})


@_register(RadialForm(
    profile=_sliced_coulomb_profile,
    resolve=_sliced_coulomb_resolve,
    bounds=lambda h, *, eps, scale: (0.0, 1.0 / eps),
    positive_definite=lambda h, **_: True,
))
def sliced_coulomb(x: jax.Array, y: jax.Array, *, eps: float = DEFAULT_EPS,
                   scale: Optional[float] = None) -> jax.Array:
  """The Coulomb kernel averaged over 3-D slices: `1 / (‖x - y‖ / scale + eps)`.

  In h dimensions the paper's kernel `1/‖x - y‖^(h-2)` is harmonic, but once
  regularised it is not positive definite for h > 4 (codes collapsed onto the
  prior's mean then beat a prior sample), and its far field `r^(2-h)` is too
  weak to hold codes near the prior. This kernel keeps the Coulomb potential
  where the theorem is proved, in 3-D, and averages it over slices: for a
  uniformly random 3 x h projection P with orthonormal rows,
  `E_P 1/‖P w‖ = c_h / ‖w‖` with `c_h = Γ(h/2) / (Γ((h-1)/2) Γ(3/2))`, so the
  MMD under `1/‖x - y‖` is the mean, over random 3-D slices of the codes and
  the prior, of the 3-D Coulomb MMD; no slices are drawn, the average is
  exact. Regularised as here it is a completely monotone function of
  ‖x - y‖², hence positive definite on every R^h (Schoenberg), with a Fourier
  transform positive everywhere, hence characteristic: its MMD is a divergence
  at every h. At h = 3 it is the paper's kernel, `coulomb`, exactly, and it
  costs what `coulomb` costs. The proofs and the measurements are in
  BUILD_NOTES.md, section 1b; the module docstring explains `eps` and `scale`.

  Args:
    x: `[..., h]` points, h >= 3.
    y: `[..., h]` points, broadcastable against `x` over the leading axes.
    eps: regulariser (> 0), relative to the unit distance `scale`; pairs
      closer than `eps * scale` are in the regularised core.
    scale: the unit length (> 0); defaults to `sqrt(2 h)`, the root-mean-square
      distance between two independent N(0, I_h) points.

  Returns:
    `[...]`, the kernel of each pair, in float32 or wider.

  Raises:
    ValueError: h < 3, eps <= 0 or scale <= 0, or mismatched last dimensions.
    TypeError: non-floating inputs.

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import kernels
    >>> x = jnp.zeros((2, 64)); y = jnp.ones((2, 64))
    >>> k = kernels.sliced_coulomb(x, y, scale=8.0)  # 1 / (8 / 8 + 0.01)
    >>> k.shape, f"{float(k[0]):.4f}"
    ((2,), '0.9901')
    >>> float(kernels.sliced_coulomb(x[0], x[0]))  # coincident points: 1/eps
    100.0
  """
  return _evaluate(sliced_coulomb.radial_form, x, y,
                   {"eps": eps, "scale": scale})


# ----------------------------------------------------------------------------
# Logarithmic Coulomb kernel, h = 2.


def _coulomb_log_resolve(h: int, *, eps: float = DEFAULT_EPS,
                         scale: Optional[float] = None) -> dict:
  if h != 2:
    raise ValueError(
        f"coulomb_log is the 2-D Coulomb kernel and needs h = x.shape[-1] = 2; "
        f"got h={h}. For h >= 3 use couae_jax.kernels.sliced_coulomb.")
  return _length_resolve(h, eps=eps, scale=scale)


def _coulomb_log_profile(sq_dist, *, h: int, eps, scale) -> jax.Array:
  del h
  return -0.5 * jnp.log(sq_dist / jnp.asarray(scale, sq_dist.dtype) ** 2 + eps)


@_register(RadialForm(
    profile=_coulomb_log_profile,
    resolve=_coulomb_log_resolve,
    bounds=lambda h, *, eps, scale: (-math.inf, -0.5 * math.log(eps)),
    positive_definite=lambda h, **_: False,
))
def coulomb_log(x: jax.Array, y: jax.Array, *, eps: float = DEFAULT_EPS,
                scale: Optional[float] = None) -> jax.Array:
  """The 2-D Coulomb kernel `-log(‖x - y‖ / scale)`, regularised.

  Evaluates `-0.5 * log((‖x - y‖ / scale)^2 + eps)`. In two dimensions the
  Green's function of the Laplacian is logarithmic. The kernel is bounded above
  by `-0.5 log(eps)` but not below, and it is only conditionally positive
  definite; constants cancel in the MMD estimators, so `scale` changes nothing
  but the kernel's offset there.

  Args:
    x: `[..., 2]` points.
    y: `[..., 2]` points, broadcastable against `x`.
    eps: regulariser (> 0), in units of `scale` squared.
    scale: unit length; defaults to `sqrt(2 h) = 2`.

  Returns:
    `[...]`, the kernel of each pair.

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import kernels
    >>> kernels.coulomb_log(jnp.zeros(2), jnp.array([3.0, 4.0]), scale=1.0)
    Array(-1.6096379, dtype=float32)
  """
  return _evaluate(coulomb_log.radial_form, x, y, {"eps": eps, "scale": scale})


# ----------------------------------------------------------------------------
# Baselines: Gaussian and inverse multiquadratic.


def _scale_resolve(h: int, *, scale: float) -> dict:
  del h
  _checks.positive("scale", scale)
  return {"scale": scale}


def _gaussian_profile(sq_dist, *, h: int, scale) -> jax.Array:
  del h
  return jnp.exp(-0.5 * sq_dist / jnp.asarray(scale, sq_dist.dtype) ** 2)


def _bandwidth_form(profile) -> RadialForm:
  """The Gaussian and IMQ kernels' form: one bandwidth `scale`, values in
  (0, 1], positive definite at every h; they differ only in `profile`."""
  return RadialForm(profile=profile, resolve=_scale_resolve,
                    bounds=lambda h, *, scale: (0.0, 1.0),
                    positive_definite=lambda h, **_: True)


@_register(_bandwidth_form(_gaussian_profile))
def gaussian(x: jax.Array, y: jax.Array, *, scale: float) -> jax.Array:
  """The Gaussian kernel `exp(-‖x - y‖² / (2 scale²))`.

  Args:
    x: `[..., h]` points.
    y: `[..., h]` points, broadcastable against `x`.
    scale: the bandwidth, a length (> 0).

  Returns:
    `[...]`, values in (0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import kernels
    >>> kernels.gaussian(jnp.zeros(2), jnp.array([3.0, 4.0]), scale=5.0)
    Array(0.60653067, dtype=float32)
  """
  return _evaluate(gaussian.radial_form, x, y, {"scale": scale})


def _imq_profile(sq_dist, *, h: int, scale) -> jax.Array:
  del h
  c = jnp.asarray(scale, sq_dist.dtype) ** 2
  return c / (c + sq_dist)


@_register(_bandwidth_form(_imq_profile))
def imq(x: jax.Array, y: jax.Array, *, scale: float) -> jax.Array:
  """The inverse multiquadratic kernel `scale² / (scale² + ‖x - y‖²)`.

  This is WAE's `C / (C + ‖x - y‖²)` with `C = scale²`; WAE takes
  `C = 2 h sigma²` for a prior of variance sigma², i.e.
  `scale = sigma * sqrt(2 h)`. Arguments and return value as in `gaussian`.

  Example:
    >>> import math, jax.numpy as jnp
    >>> from couae_jax import kernels
    >>> h, sigma = 8, 1.0  # WAE's C = 2 h sigma² = 16
    >>> x, y = jnp.zeros(h), jnp.full(h, 0.5)  # ‖x - y‖² = 2
    >>> round(float(kernels.imq(x, y, scale=sigma * math.sqrt(2 * h))), 4)
    0.8889
  """
  return _evaluate(imq.radial_form, x, y, {"scale": scale})


# ----------------------------------------------------------------------------
# Sums over scales.


def multiscale(kernel: Kernel, *, scales: Sequence[float], **params) -> Kernel:
  """The sum of `kernel` over several length scales, as WAE uses for IMQ.

  Returns `k(x, y) = sum_s kernel(x, y, scale=s, **params)`. A sum of radial
  kernels is radial, so the result keeps the fast MMD path; its bounds are the
  sums of the summands' bounds.

  Args:
    kernel: one of this module's kernels.
    scales: the lengths to sum over (each > 0).
    **params: further hyperparameters of `kernel` (e.g. `eps`).

  Returns:
    A kernel with the broadcasting contract of this module.

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import kernels
    >>> k = kernels.multiscale(kernels.imq, scales=[1.0, 2.0])
    >>> k(jnp.zeros(2), jnp.array([0.0, 1.0]))
    Array(1.3, dtype=float32)
  """
  base = getattr(kernel, "radial_form", None)
  if not isinstance(base, RadialForm):
    raise TypeError(
        f"kernel must be one of couae_jax.kernels' kernels (sliced_coulomb, "
        f"coulomb, coulomb_log, gaussian, imq); got {kernel!r}.")
  try:
    scales = tuple(scales)
  except TypeError:
    raise TypeError(
        f"scales must be a sequence of lengths; got {scales!r:.80}.") from None
  if not scales:
    raise ValueError("scales must hold at least one length; got none.")
  for s in scales:
    _checks.positive("scales", s)

  def resolve(h):
    return {"summands": tuple(base.resolve(h, scale=s, **params)
                              for s in scales)}

  def profile(sq_dist, *, h, summands):
    return sum(base.profile(sq_dist, h=h, **p) for p in summands)

  def bounds(h, *, summands):
    pairs = [base.bounds(h, **p) for p in summands]
    return sum(lo for lo, _ in pairs), sum(hi for _, hi in pairs)

  def positive_definite(h, *, summands):
    return all(base.positive_definite(h, **p) for p in summands)

  name = getattr(kernel, "__name__", "kernel")
  form = RadialForm(profile, resolve, bounds, positive_definite)

  def summed(x: jax.Array, y: jax.Array) -> jax.Array:
    return _evaluate(form, x, y, {})

  summed.__name__ = f"multiscale_{name}"
  summed.__doc__ = (f"Sum of {name} over scales {scales}: "
                    f"`[..., h], [..., h] -> [...]`.")
  return _register(form)(summed)


__all__ = [
    "DEFAULT_EPS", "BoundRadialKernel", "Kernel", "NotPositiveDefiniteWarning",
    "RadialForm", "coulomb", "coulomb_log", "gaussian", "imq", "multiscale",
    "radial_form", "sliced_coulomb",
]
