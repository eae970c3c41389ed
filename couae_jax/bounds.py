"""The generalisation bound of Coulomb Autoencoders, as numbers.

Sansone et al. bound the deviation of the empirical objective
`L̂ = REC^ + lam * MMD^`, estimated on N samples, from its population value L.
With a kernel bounded as `0 <= k <= K` and a per-example reconstruction error
bounded as `0 <= REC <= xi`, for any t, s > 0:

    Pr{ |L̂ - L| > t + lam s } <= 2 exp(-2 N t² / xi²)
                                  + 6 exp(-2 floor(N / 2) s² / (9 K²)).

The first term is Hoeffding's inequality for the mean reconstruction error, the
second McDiarmid's inequality for the MMD U-statistic. This module evaluates
the right-hand side (`generalization_bound`, and its logarithm, since both
exponentials underflow float64 for moderate N), inverts it (the smallest
deviation `t + lam s` guaranteed at confidence 1 - delta,
`deviation_at_confidence`), and estimates its two constants: K from a kernel of
`couae_jax.kernels` (`kernel_bound`) and xi from a trained model's
reconstructions (`estimate_xi`).

Everything but `estimate_xi` is plain float64 NumPy on Python numbers; this
module imports only JAX, NumPy and the light modules of `couae_jax`.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax import _checks, losses
from couae_jax import kernels as kernels_lib

#: Bisection steps of `deviation_at_confidence` on the logit of the split;
#: each halves an interval that starts 2 * _LOGIT_RANGE wide.
_BISECTION_STEPS = 200
#: The logit of the split is searched in [-_LOGIT_RANGE, _LOGIT_RANGE]; at 800
#: the smaller share of delta is below float64's smallest subnormal.
_LOGIT_RANGE = 800.0


class Deviation(NamedTuple):
  """A deviation guaranteed by the bound, split into its two terms.

  Attributes:
    t: the reconstruction term's deviation.
    s: the MMD term's deviation (inf when lam = 0: the MMD is not in L).
    total: `t + lam * s`, the deviation of L̂.
    delta_rec: the share of delta given to the reconstruction term,
      `2 exp(-2 N t² / xi²)`.
    delta_mmd: the share given to the MMD term; `delta_rec + delta_mmd` is
      delta.
  """
  t: float
  s: float
  total: float
  delta_rec: float
  delta_mmd: float


def _sample_count(n) -> int:
  if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
    raise ValueError(
        f"n must be an integer >= 2 (the number of samples; the MMD "
        f"U-statistic needs pairs); got {n!r}.")
  return int(n)


def _deviation_arg(name: str, value) -> np.ndarray:
  """A deviation: >= 0, +inf allowed (that term of the bound vanishes)."""
  array = np.asarray(value, np.float64)
  if np.any(np.isnan(array)) or np.any(array < 0):
    raise ValueError(f"{name} must be >= 0 (inf allowed); got {value!r}.")
  return array


def _constants(xi, K, lam) -> None:
  _checks.positive("xi", xi)
  _checks.positive("K", K)
  _checks.non_negative("lam", lam)


def log_generalization_bound(n: int, t, s, xi: float, K: float,
                             lam: float):
  """The natural logarithm of `generalization_bound`, exact where it underflows.

  Args and Raises: as in `generalization_bound`.

  Returns:
    `log(2 exp(-2 N t² / xi²) + 6 exp(-2 floor(N/2) s² / (9 K²)))`, a float64
    (an array if t or s is), -inf where both t and s are inf.

  Example:
    >>> from couae_jax import bounds
    >>> round(float(bounds.log_generalization_bound(
    ...     10**6, t=1.0, s=1.0, xi=1.0, K=1.0, lam=1.0)), 2)
    -111109.32
  """
  n = _sample_count(n)
  t = _deviation_arg("t", t)
  s = _deviation_arg("s", s)
  _constants(xi, K, lam)
  pairs = n // 2
  with np.errstate(invalid="ignore"):  # inf * 0 cannot occur: xi, K > 0
    log_rec = math.log(2.0) - 2.0 * n * t**2 / xi**2
    log_mmd = math.log(6.0) - 2.0 * pairs * s**2 / (9.0 * K**2)
  return np.logaddexp(log_rec, log_mmd)


def generalization_bound(n: int, t, s, xi: float, K: float, lam: float):
  """The paper's bound on `Pr{|L̂ - L| > t + lam s}`, its right-hand side.

  `2 exp(-2 N t² / xi²) + 6 exp(-2 floor(N/2) s² / (9 K²))` for the objective
  `L̂ = REC^ + lam * MMD^` estimated on N samples, with `0 <= REC <= xi` per
  example and `0 <= k <= K`. `lam` does not enter the right-hand side: it
  scales the MMD's share of the event, whose deviation is `t + lam * s`
  (see `deviation_at_confidence` for the smallest such deviation at a given
  confidence). It is taken, and validated, so that a call names the event it
  bounds. A value >= 1 says nothing (the bound is vacuous); values below
  float64's range underflow to 0, use `log_generalization_bound` there.

  Args:
    n: the number of samples N (codes and prior samples each), >= 2.
    t: the reconstruction term's deviation, >= 0; an array broadcasts.
    s: the MMD term's deviation, >= 0; an array broadcasts. inf is allowed
      for either and removes that term.
    xi: the bound on the per-example reconstruction error (> 0), e.g. from
      `estimate_xi`.
    K: the bound on the kernel (> 0), e.g. from `kernel_bound`.
    lam: the MMD's weight in the objective (>= 0).

  Returns:
    The right-hand side, a float64 (an array if t or s is).

  Raises:
    ValueError: n not an integer >= 2, t or s negative or NaN, xi or K not
      finite and > 0, lam negative.

  Example:
    >>> from couae_jax import bounds
    >>> bound = bounds.generalization_bound(500, t=0.1, s=0.01, xi=1.0, K=1.0,
    ...                                     lam=10.0)
    >>> f"{bound:.4f}"  # 2 exp(-10) + 6 exp(-0.05 / 9): the MMD term is vacuous
    '5.9668'
  """
  return np.exp(log_generalization_bound(n, t, s, xi, K, lam))


def deviation_at_confidence(n: int, delta: float, xi: float, K: float,
                            lam: float) -> Deviation:
  """The smallest deviation `t + lam s` the bound guarantees at 1 - delta.

  With probability at least 1 - delta, `|L̂ - L| <= total`. Splitting
  delta into `delta_rec + delta_mmd` and setting each term of
  `generalization_bound` to its share gives, in closed form,

      t = xi sqrt(log(2 / delta_rec) / (2 N)),
      s = 3 K sqrt(log(6 / delta_mmd) / (2 floor(N / 2))).

  The split is then optimised: with `delta_rec = alpha * delta`, each of
  `sqrt(c - log alpha)` and `sqrt(c' - log(1 - alpha))` is strictly convex in
  alpha on (0, 1) because its constants exceed 1/2 (`c = log(2 / delta)` >
  log 2, `c' = log(6 / delta)` > log 6; the second derivative of
  `sqrt(c - log alpha)` is `(2 (c - log alpha) - 1) / (4 alpha² (c -
  log alpha)^(3/2))`). So `t + lam s` has exactly one minimiser, where its
  derivative changes sign; it is found by bisection on the logit of alpha
  (200 halvings of [-800, 800], i.e. to float64 resolution), with the logs of
  alpha and 1 - alpha computed without forming either, so a share far below
  float64's range is still resolved. With lam = 0 the MMD is not part of L:
  all of delta goes to the reconstruction and s is inf.

  Args:
    n: the number of samples N, >= 2.
    delta: the allowed failure probability, in (0, 1).
    xi: the bound on the per-example reconstruction error (> 0).
    K: the bound on the kernel (> 0).
    lam: the MMD's weight in the objective (>= 0).

  Returns:
    A `Deviation` (t, s, total, delta_rec, delta_mmd) with
    `generalization_bound(n, t, s, xi, K, lam) == delta` up to rounding.

  Raises:
    ValueError: n not an integer >= 2, delta outside (0, 1), xi or K not
      finite and > 0, lam negative.

  Example:
    >>> from couae_jax import bounds
    >>> d = bounds.deviation_at_confidence(500, delta=0.05, xi=1.0, K=100.0,
    ...                                    lam=10.0)
    >>> print(f"t={d.t:.3f} s={d.s:.2f} total={d.total:.1f}")
    t=0.112 s=29.36 total=293.7
    >>> bound = bounds.generalization_bound(500, d.t, d.s, 1.0, 100.0, 10.0)
    >>> print(f"{bound:.3f}")
    0.050
  """
  n = _sample_count(n)
  if isinstance(delta, bool) or not 0.0 < float(delta) < 1.0:
    raise ValueError(
        f"delta must be a probability in (0, 1) (the confidence is "
        f"1 - delta); got {delta!r}.")
  _constants(xi, K, lam)
  delta = float(delta)
  log_delta = math.log(delta)
  rec_unit = float(xi) / math.sqrt(2.0 * n)
  mmd_unit = 3.0 * float(K) / math.sqrt(2.0 * (n // 2))
  c_rec = math.log(2.0) - log_delta
  c_mmd = math.log(6.0) - log_delta

  if lam == 0:
    t = rec_unit * math.sqrt(c_rec)
    return Deviation(t=t, s=math.inf, total=t, delta_rec=delta, delta_mmd=0.0)

  def log_shares(logit: float) -> tuple[float, float]:
    # log(alpha), log(1 - alpha) for alpha = sigmoid(logit), without rounding
    # alpha or 1 - alpha to 0 or 1.
    return -np.logaddexp(0.0, -logit), -np.logaddexp(0.0, logit)

  def slope_sign(logit: float) -> float:
    # d(t + lam s)/d logit, up to the positive factor 1/2: the logit's
    # d alpha = alpha (1 - alpha) d logit cancels the 1/alpha and 1/(1 - alpha)
    # of the two derivatives.
    log_alpha, log_rest = log_shares(logit)
    return (-rec_unit * math.exp(log_rest) / math.sqrt(c_rec - log_alpha)
            + lam * mmd_unit * math.exp(log_alpha)
            / math.sqrt(c_mmd - log_rest))

  low, high = -_LOGIT_RANGE, _LOGIT_RANGE
  for _ in range(_BISECTION_STEPS):
    middle = 0.5 * (low + high)
    if slope_sign(middle) < 0:
      low = middle
    else:
      high = middle
  log_alpha, log_rest = log_shares(0.5 * (low + high))
  t = rec_unit * math.sqrt(c_rec - log_alpha)
  s = mmd_unit * math.sqrt(c_mmd - log_rest)
  return Deviation(t=t, s=s, total=t + lam * s,
                   delta_rec=delta * math.exp(log_alpha),
                   delta_mmd=delta * math.exp(log_rest))


def kernel_bound(kernel: kernels_lib.Kernel, *, h: int,
                 diameter: Optional[float] = None) -> float:
  """The constant K of the bound for a kernel of `couae_jax.kernels`.

  The bound needs `0 <= k <= K`. Adding a constant to the kernel changes
  neither the unbiased MMD estimate nor the population MMD (the three sums'
  weights add up to 0), so K is the width of the kernel's range,
  `sup k - inf k`. For the Coulomb kernels, `1 / ((d / scale)^(h-2) + eps)`
  and the sliced `1 / (d / scale + eps)`, that is `1 / eps` (the infimum 0 is
  approached at infinite distance; scale does not enter); for the Gaussian and IMQ kernels it is 1; a `multiscale` sum
  adds its summands'. The 2-D `coulomb_log` kernel, `-log(d / scale)`
  regularised, is unbounded below, so no K exists for codes anywhere in R²:
  pass the `diameter` of the region the codes and prior samples lie in, and
  the infimum becomes the kernel at that distance (every kernel here
  decreases with distance), a valid K for data confined there.

  Args:
    kernel: a kernel of `couae_jax.kernels`, or a `functools.partial` binding
      its hyperparameters (as passed to `couae_jax.mmd`).
    h: the latent size (the Coulomb kernel needs h >= 3, coulomb_log h = 2).
    diameter: optional bound on the distance between any two points (> 0);
      it tightens K for every kernel and is required for `coulomb_log`.

  Returns:
    K, a float.

  Raises:
    TypeError: a kernel outside `couae_jax.kernels` (its range is unknown).
    ValueError: bad hyperparameters for this h, a non-positive diameter, or
      `coulomb_log` without a diameter.

  Example:
    >>> import functools
    >>> from couae_jax import bounds, kernels
    >>> bounds.kernel_bound(functools.partial(kernels.coulomb, eps=1e-2), h=3)
    100.0
    >>> bounds.kernel_bound(kernels.sliced_coulomb, h=64)  # default eps 1e-2
    100.0
    >>> bounds.kernel_bound(functools.partial(kernels.imq, scale=2.0), h=8)
    1.0
    >>> k_log = functools.partial(kernels.coulomb_log, eps=1e-2, scale=1.0)
    >>> round(bounds.kernel_bound(k_log, h=2, diameter=10.0), 3)  # log(1e4)/2
    4.605
  """
  _checks.positive_int("h", h)
  if not callable(kernel):
    raise TypeError(f"kernel must be callable; got {kernel!r}.")
  radial = kernels_lib.radial_form(kernel, h)
  if radial is None:
    raise TypeError(
        f"kernel_bound knows the range of couae_jax.kernels' kernels "
        f"(sliced_coulomb, coulomb, coulomb_log, gaussian, imq, multiscale) "
        f"and partials of them; got {kernel!r}.")
  lower, upper = radial.bounds()
  if diameter is not None:
    _checks.positive("diameter", diameter)
    at_diameter = radial.profile(jnp.asarray(float(diameter)**2, jnp.float32))
    lower = max(lower, float(at_diameter))
  if not math.isfinite(lower) or not math.isfinite(upper):
    raise ValueError(
        f"kernel {kernel!r} is unbounded (its range is [{lower}, {upper}]), "
        f"so the bound has no K; pass diameter=, the largest distance between "
        f"codes and prior samples, to bound it on that region.")
  return float(upper - lower)


def estimate_xi(reconstruct: Callable[[jax.Array], jax.Array], *datasets,
                batch_size: int = 1024) -> float:
  """xi, the largest per-example reconstruction error over the data sets.

  The error is the trainer's, `losses.squared_error` (the squared L2 norm
  summed over features). The paper estimates xi this way, over the training
  and validation data. The data are fed in batches of `batch_size`; the last
  batch of a data set larger than that is padded with copies of its last
  example, so a jitted `reconstruct` compiles at most one shape per data set
  smaller than `batch_size` and one for all larger ones.

  Args:
    reconstruct: maps a batch `[b, ...]` to its reconstructions `[b, ...]`,
      e.g. `couae_jax.restore(workdir).reconstruct`.
    *datasets: one or more arrays `[n, ...]` (NumPy or JAX, floating), n >= 1.
    batch_size: examples per call of `reconstruct`.

  Returns:
    The maximum error, a float.

  Raises:
    ValueError: no data set, an empty one, a non-positive batch_size, or
      reconstructions of the wrong shape.
    TypeError: non-floating data.

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import bounds
    >>> train = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    >>> valid = jnp.array([[0.0, 10.0]])
    >>> bounds.estimate_xi(lambda x: 0.5 * x, train, valid, batch_size=1)
    25.0
  """
  if not datasets:
    raise ValueError("datasets must hold at least one data set; got none.")
  _checks.positive_int("batch_size", batch_size)
  worst = -math.inf
  for index, data in enumerate(datasets):
    name = f"datasets[{index}]"
    data = _checks.floating_array(name, data)
    count = data.shape[0]
    if count == 0:
      raise ValueError(f"{name} must hold at least one example; got shape "
                       f"{tuple(data.shape)}.")
    for start in range(0, count, batch_size):
      batch = jnp.asarray(data[start:start + batch_size])
      real = batch.shape[0]
      if count > batch_size and real < batch_size:
        padding = [(0, batch_size - real)] + [(0, 0)] * (batch.ndim - 1)
        batch = jnp.pad(batch, padding, mode="edge")
      reconstructions = _checks.floating_array(
          "reconstruct(batch)", jnp.asarray(reconstruct(batch)))
      dtype = _checks.compute_dtype(reconstructions, batch)
      errors = losses.squared_error(reconstructions.astype(dtype),
                                    batch.astype(dtype))[:real]
      worst = max(worst, float(jnp.max(errors)))
  return worst


__all__ = ["Deviation", "deviation_at_confidence", "estimate_xi",
           "generalization_bound", "kernel_bound", "log_generalization_bound"]
