"""Objective terms of generative autoencoders, as plain functions of arrays.

Conventions follow `optax.losses`: keyword-only hyperparameters, shapes in the
docstrings, and no reduction hidden from the caller. Per-example terms return
`[B]`; the distribution-matching regularisers are estimates over the whole
batch of codes and return a scalar. The trainer of `couae_jax.train` is built
from exactly these functions.

This module imports only JAX: a user who wants the losses pays for nothing
else.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from couae_jax import _checks, kernels, mmd
from couae_jax import priors as priors_lib

#: The bandwidth multipliers of the WAE paper's multi-scale IMQ kernel.
WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example squared L2 reconstruction error, summed over features.

  Args:
    predictions: `[B, ...]` reconstructions.
    targets: `[B, ...]` inputs, the same shape.

  Returns:
    `[B]`, `‖predictions_b - targets_b‖²`.

  Raises:
    TypeError: either not a floating array.
    ValueError: shapes that differ, a scalar, or no examples (`B = 0`).

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import losses
    >>> losses.squared_error(jnp.ones((2, 3)), jnp.zeros((2, 3)))
    Array([3., 3.], dtype=float32)
  """
  predictions = _checks.floating_array("predictions", predictions, min_rank=1)
  targets = _checks.floating_array("targets", targets, min_rank=1)
  if predictions.shape != targets.shape:
    raise ValueError(
        f"predictions and targets must have the same shape; got "
        f"{tuple(predictions.shape)} and {tuple(targets.shape)}.")
  if predictions.shape[0] == 0:
    raise ValueError(
        f"predictions must hold at least one example; got shape "
        f"{tuple(predictions.shape)}.")
  diff = (predictions - targets).reshape(predictions.shape[0], -1)
  return jnp.sum(diff * diff, axis=-1)


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(mean, diag(exp(log_var))) || N(0, I)) of each example, in nats.

  Args:
    mean: `[B, h]` encoder means.
    log_var: `[B, h]` encoder log-variances.

  Returns:
    `[B]`, `0.5 * sum_h (exp(log_var) + mean² - 1 - log_var)`.

  Raises:
    ValueError: `mean` and `log_var` of rank < 2 or of different shapes.
    TypeError: non-floating inputs, or `mean` and `log_var` of different
      dtypes.

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import losses
    >>> losses.gaussian_kl(jnp.zeros((2, 4)), jnp.zeros((2, 4)))
    Array([0., 0.], dtype=float32)
  """
  mean, log_var = _checks.gaussian_parameters(mean, log_var, min_rank=2)
  return 0.5 * jnp.sum(jnp.exp(log_var) + mean * mean - 1.0 - log_var,
                       axis=-1)


def _codes(codes, prior_samples, axis_name):
  """`codes` checked and converted once to the working dtype (NumPy float64
  becomes float32 unless x64 is enabled, without a warning), and the given
  `prior_samples` likewise; errors name these arguments."""
  codes = _checks.floating_array("codes", codes)
  if not isinstance(codes, jax.Array):
    codes = jnp.asarray(codes)
  codes = _checks.sample_set("codes", codes,
                             min_points=1 if axis_name else 2)
  if prior_samples is not None:
    dtype = getattr(prior_samples, "dtype", None)
    if dtype is not None and (
        jnp.issubdtype(dtype, jax.dtypes.prng_key)
        or (dtype == jnp.uint32 and getattr(prior_samples, "shape", None)
            in ((2,), (4,)))):
      raise TypeError(
          "prior_samples (the second positional argument) got a PRNG key; "
          "pass the key by keyword: key=key.")
    prior_samples = _checks.floating_array("prior_samples", prior_samples)
    if not isinstance(prior_samples, jax.Array):
      prior_samples = jnp.asarray(prior_samples)
    prior_samples = _checks.sample_set("prior_samples", prior_samples,
                                       min_points=1 if axis_name else 2)
    _checks.same_dimension("codes", codes, "prior_samples", prior_samples)
  return codes, prior_samples


def _prior_samples(codes, prior_samples, key, prior, num_prior_samples,
                   axis_name):
  """The given prior samples, or this device's share of a global draw.

  With `axis_name`, the samples of the whole global batch are drawn from `key`
  and each device keeps its slice, so that the estimate (and training) does
  not depend on how many devices share the batch.
  """
  if prior_samples is not None:
    return prior_samples
  if key is None:
    raise ValueError(
        "key is required when prior_samples is not given (the prior samples "
        "are drawn from it).")
  count = codes.shape[0] if num_prior_samples is None else num_prior_samples
  _checks.positive_int("num_prior_samples", count)
  return priors_lib.sample_shard(prior, key, (count, codes.shape[-1]),
                                 codes.dtype, axis_name)


def mmd_to_prior(
    codes: jax.Array,
    kernel: kernels.Kernel,
    prior_samples: Optional[jax.Array] = None,
    *,
    key: Optional[jax.Array] = None,
    prior: priors_lib.Prior = priors_lib.standard_normal,
    num_prior_samples: Optional[int] = None,
    block_size: mmd.BlockSize = mmd.AUTO,
    axis_name: Optional[str] = None,
) -> jax.Array:
  """MMD² between codes and a prior under any kernel: the term of every MMD
  model (`coulomb_regularizer` and `wae_regularizer` are it with their
  kernels), an unbiased estimate; arguments and errors as in
  `coulomb_regularizer`, `kernel` any `k(x, y)`.

  Example:
    >>> import functools, jax
    >>> from couae_jax import kernels, losses
    >>> codes, samples = jax.random.normal(jax.random.key(0), (2, 128, 8))
    >>> imq = functools.partial(kernels.imq, scale=4.0)
    >>> bool(losses.mmd_to_prior(codes, imq, samples) < 0.05)
    True
  """
  codes, prior_samples = _codes(codes, prior_samples, axis_name)
  samples = _prior_samples(codes, prior_samples, key, prior, num_prior_samples,
                           axis_name)
  return mmd._named_mmd2(codes, samples, kernel,
                         names=("codes", "prior_samples"),
                         block_size=block_size, axis_name=axis_name)


def coulomb_regularizer(
    codes: jax.Array,
    prior_samples: Optional[jax.Array] = None,
    *,
    key: Optional[jax.Array] = None,
    prior: priors_lib.Prior = priors_lib.standard_normal,
    num_prior_samples: Optional[int] = None,
    eps: float = kernels.DEFAULT_EPS,
    scale: Optional[float] = None,
    kernel: str = "sliced_coulomb",
    block_size: mmd.BlockSize = mmd.AUTO,
    axis_name: Optional[str] = None,
) -> jax.Array:
  """MMD² between codes and a prior under the Coulomb kernel (CouAE's term).

  For h >= 3 the kernel is `kernels.sliced_coulomb` by default: the 3-D
  Coulomb kernel averaged over every 3-D slice of R^h, positive definite and
  characteristic at every h, and at h = 3 the paper's kernel itself. For
  h = 2 it is the logarithmic `kernels.coulomb_log`.

  Args:
    codes: `[n, h]` deterministic encoder outputs, h >= 2.
    prior_samples: `[m, h]` samples of p_Z; if None they are drawn as
      `prior(key, (num_prior_samples or n, h))`.
    key: PRNG key for the prior samples. With `axis_name` it must be the same
      on every device: the global sample is drawn and each device takes its
      slice, so the result does not depend on the number of devices.
    prior: a function `prior(key, shape, dtype)`, see `couae_jax.priors`.
    num_prior_samples: prior samples per call (per device with `axis_name`).
    eps: the kernel's regulariser, see `couae_jax.kernels.sliced_coulomb`.
    scale: the kernel's unit length. None takes `sigma * sqrt(2 h)` with sigma
      the prior's coordinate standard deviation (`priors.coordinate_std`:
      `priors.PRIOR_STD` times the factor of a `priors.scaled` prior, 1 for
      an unknown prior).
    kernel: `"sliced_coulomb"` (the default) or `"coulomb"`, the paper's
      `1/(u^(h-2) + eps)`, which is not positive definite for h > 4 and warns
      there (`kernels.NotPositiveDefiniteWarning`). Ignored at h = 2.
    block_size: `"auto"` (the default) takes `mmd.mmd2`'s fastest path, the
      Gram matrix streamed in blocks of rows (reverse mode; forward mode,
      `jax.jvp`/`jax.jacfwd`, needs None); an int sets the rows per block;
      None evaluates it densely (every JAX transformation). See `mmd.mmd2`.
    axis_name: inside `shard_map`, the data axis: the estimate is over the
      global batch.

  Returns:
    A scalar, the unbiased MMD² estimate; NaN (with NaN gradients) if a code
    is NaN or infinite.

  Raises:
    ValueError: codes or prior_samples not `[n, h]` with n >= 2 (over the
      global batch with `axis_name`), mismatched h, no key without
      prior_samples, bad hyperparameters or block_size.
    TypeError: non-floating codes or prior_samples, or a PRNG key passed
      positionally as prior_samples.

  Example:
    >>> import jax
    >>> from couae_jax import losses
    >>> codes = jax.random.normal(jax.random.key(0), (128, 8))
    >>> penalty = losses.coulomb_regularizer(codes, key=jax.random.key(1))
    >>> penalty.shape
    ()
  """
  codes, prior_samples = _codes(codes, prior_samples, axis_name)
  return mmd_to_prior(
      codes, coulomb_kernel(codes.shape[-1], eps=eps, scale=scale,
                            prior=prior, kernel=kernel),
      prior_samples, key=key, prior=prior,
      num_prior_samples=num_prior_samples, block_size=block_size,
      axis_name=axis_name)


#: The Coulomb kernels `coulomb_regularizer` takes by name (h >= 3).
COULOMB_KERNELS = {"sliced_coulomb": kernels.sliced_coulomb,
                   "coulomb": kernels.coulomb}


def coulomb_kernel(h: int, *, eps: float = kernels.DEFAULT_EPS,
                   scale: Optional[float] = None,
                   prior: priors_lib.Prior = priors_lib.standard_normal,
                   kernel: str = "sliced_coulomb") -> kernels.Kernel:
  """The kernel `coulomb_regularizer` uses for codes of size h.

  Args:
    h: the latent size, >= 2.
    eps, scale, prior, kernel: as in `coulomb_regularizer`.

  Returns:
    `kernels.sliced_coulomb` or `kernels.coulomb` (h >= 3, by `kernel`), or
    `kernels.coulomb_log` (h = 2), with its hyperparameters bound, for
    `mmd.mmd2` or `bounds.kernel_bound`.

  Raises:
    ValueError: h < 2, or a `kernel` name other than those of
      `COULOMB_KERNELS`.

  Example:
    >>> from couae_jax import losses, priors
    >>> kernel = losses.coulomb_kernel(64, eps=1e-2)
    >>> kernel.func.__name__, round(kernel.keywords["scale"], 3)
    ('sliced_coulomb', 11.314)
    >>> wide = priors.scaled(priors.standard_normal, 2.0)  # N(0, 4 I)
    >>> round(losses.coulomb_kernel(3, prior=wide).keywords["scale"], 3)
    4.899
  """
  _checks.positive_int("h", h)
  if h < 2:
    raise ValueError(f"h must be >= 2 for the Coulomb kernel; got {h}.")
  if kernel not in COULOMB_KERNELS:
    raise ValueError(
        f"kernel must be one of {sorted(COULOMB_KERNELS)}; got {kernel!r}.")
  if scale is None:
    scale = priors_lib.coordinate_std(prior) * math.sqrt(2.0 * h)
  chosen = COULOMB_KERNELS[kernel] if h >= 3 else kernels.coulomb_log
  return functools.partial(chosen, eps=eps, scale=scale)


def wae_regularizer(
    codes: jax.Array,
    prior_samples: Optional[jax.Array] = None,
    *,
    key: Optional[jax.Array] = None,
    prior: priors_lib.Prior = priors_lib.standard_normal,
    num_prior_samples: Optional[int] = None,
    sigma: Optional[float] = None,
    scales: Sequence[float] = WAE_SCALES,
    block_size: mmd.BlockSize = mmd.AUTO,
    axis_name: Optional[str] = None,
) -> jax.Array:
  """WAE-MMD's term: MMD² under the multi-scale IMQ kernel.

  The kernel is `sum_s C_s / (C_s + ‖z - z'‖²)` with `C_s = 2 h sigma² s`
  for each s in `scales`, as in Tolstikhin et al.'s code.

  Args:
    codes: `[n, h]` encoder outputs.
    prior_samples, key, prior, num_prior_samples, block_size, axis_name: as in
      `coulomb_regularizer`.
    sigma: the prior's coordinate standard deviation; None reads it with
      `priors.coordinate_std` (so a `priors.scaled` prior's factor counts; 1
      for an unknown prior).
    scales: the multipliers s of the base constant `2 h sigma²`.

  Returns:
    A scalar, the unbiased MMD² estimate; NaN (with NaN gradients) if a code
    is NaN or infinite.

  Raises:
    As `coulomb_regularizer`.

  Example:
    >>> import jax
    >>> from couae_jax import losses
    >>> codes = jax.random.normal(jax.random.key(0), (128, 8))
    >>> bool(losses.wae_regularizer(codes, key=jax.random.key(1)) < 0.05)
    True
  """
  codes, prior_samples = _codes(codes, prior_samples, axis_name)
  if sigma is None:
    sigma = priors_lib.coordinate_std(prior)
  return mmd_to_prior(
      codes, wae_kernel(codes.shape[-1], sigma=sigma, scales=scales),
      prior_samples, key=key, prior=prior,
      num_prior_samples=num_prior_samples, block_size=block_size,
      axis_name=axis_name)


def wae_kernel(h: int, *, sigma: float = 1.0,
               scales: Sequence[float] = WAE_SCALES) -> kernels.Kernel:
  """The multi-scale IMQ kernel `wae_regularizer` uses for codes of size h.

  Args:
    h: the latent size, >= 1.
    sigma, scales: as in `wae_regularizer`.

  Returns:
    `sum_s C_s / (C_s + ‖z - z'‖²)` with `C_s = 2 h sigma² s`, a
    `kernels.multiscale` kernel.

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import losses
    >>> kernel = losses.wae_kernel(2, scales=(1.0, 2.0))
    >>> kernel(jnp.zeros(2), jnp.zeros(2))  # 1 per scale at distance 0
    Array(2., dtype=float32)
  """
  _checks.positive_int("h", h)
  _checks.positive("sigma", sigma)
  base = 2.0 * h * sigma**2
  return kernels.multiscale(
      kernels.imq, scales=[math.sqrt(base * s) for s in scales])


__all__ = [
    "COULOMB_KERNELS", "WAE_SCALES", "coulomb_kernel", "coulomb_regularizer",
    "gaussian_kl", "mmd_to_prior", "squared_error", "wae_kernel",
    "wae_regularizer",
]
