"""The limits `config.validate` holds a config to beyond its fields' ranges.

What float32 can evaluate (the range of CouAE's kernel scales, measured) and
what this machine can hold (the networks' training state); the checks need
the priors', models' and objectives' knowledge, which the config does not.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Callable, Optional

from couae_jax import models
from couae_jax import objective as objective_lib
from couae_jax import priors as priors_lib

if TYPE_CHECKING:  # config imports this module
  from couae_jax.config import TrainConfig

Require = Callable[[bool, str], None]

#: `kernel_scale / (sigma sqrt(2 h))` between these, float32 evaluates the
#: sliced Coulomb kernel's MMD and its gradient to within 1e-3 of float64
#: (measured at h = 3, 8 and 64: BUILD_NOTES section 2); beyond them it
#: underflows to 0 (1e-30 gives exactly 0) or is a constant.
_SLICED_SCALE_RANGE = (1e-4, 1e4)
#: The same for the logarithmic kernel of h = 2 (2 % error at 100).
_LOG_SCALE_RANGE = (1e-4, 1e1)
#: The paper's kernel `1/((u/s)^(h-2) + eps)` holds `(u/s)^(h-2)`: a scale
#: off the default by a factor f moves it by f^(h-2), so float32 keeps it
#: within f^(h-2) <= 10^this (measured: 1e-6 error at h = 16 and 64).
_PAPER_KERNEL_DECADES = 4.0

#: Bytes per parameter in training: float32 parameters, their gradients and
#: Adam's two moments.
_TRAINING_BYTES_PER_PARAMETER = 4 * 4


def _default_kernel_scale(config: TrainConfig) -> float:
  """`sigma * sqrt(2 h)`, `losses.coulomb_kernel`'s default for the prior."""
  sigma = priors_lib.coordinate_std(priors_lib.scaled(
      priors_lib.PRIORS[config.prior], config.prior_scale))
  return sigma * math.sqrt(2.0 * config.latent_dim)


def _kernel_name(config: TrainConfig) -> str:
  if config.latent_dim == 2:
    return "logarithmic kernel"
  if config.coulomb_kernel == "coulomb" and config.latent_dim > 3:
    return "paper's Coulomb kernel"
  return "sliced Coulomb kernel"


def kernel_scale_range(config: TrainConfig) -> tuple[float, float]:
  """The `kernel_scale` values float32 evaluates CouAE's kernel at:
  relative to the default `s0 = sigma * sqrt(2 h)`, `[1e-4 s0, 1e4 s0]` for
  the sliced Coulomb kernel, `[1e-4 s0, 10 s0]` for the logarithmic kernel of
  h = 2, `s0 * 10^(±4/(h-2))` for the paper's kernel at h > 3 (h = 64: about
  `[0.86 s0, 1.16 s0]`).

  Example:
    >>> from couae_jax import config as config_lib
    >>> low, high = config_lib.kernel_scale_range(config_lib.TrainConfig())
    >>> f"{low:.3g} {high:.3g}"
    '0.000245 2.45e+04'
  """
  default = _default_kernel_scale(config)
  if config.latent_dim == 2:
    low, high = _LOG_SCALE_RANGE
  elif config.coulomb_kernel == "coulomb" and config.latent_dim > 3:
    high = 10.0 ** (_PAPER_KERNEL_DECADES / (config.latent_dim - 2))
    low = 1.0 / high
  else:
    low, high = _SLICED_SCALE_RANGE
  return low * default, high * default


def check_kernel_scale(config: TrainConfig, require: Require) -> None:
  """A set `kernel_scale` of CouAE lies in `kernel_scale_range`."""
  if config.model == "couae" and config.kernel_scale:
    low, high = kernel_scale_range(config)
    default = _default_kernel_scale(config)
    require(low <= config.kernel_scale <= high,
            f"kernel_scale={config.kernel_scale:g} is outside [{low:.3g}, "
            f"{high:.3g}], where float32 evaluates the "
            f"{_kernel_name(config)} at h={config.latent_dim} "
            f"({low / default:.3g} to {high / default:.3g} times the default "
            f"{default:.4g} = "
            "sigma*sqrt(2h)); outside it the regulariser underflows to 0 or is "
            "a constant. Set it within the range, or 0 for the default.")


def check_model_memory(config: TrainConfig, require: Require) -> None:
  """The networks' training state fits in this machine's memory.

  Counts only the layers whose size does not depend on the data's shape
  (hidden-to-hidden layers, the code layers, the conv kernels of one stage),
  so it is a lower bound: it rejects the absurd (a width of 1000 is hundreds
  of GB), not every model too big for an accelerator.
  """
  def min_parameters(kind: str) -> int:
    return models.min_parameter_count(
        kind, config.latent_dim, width=config.width,
        hidden=tuple(config.hidden),
        stochastic=objective_lib.make_objective(config).stochastic_encoder,
        kernel_size=config.conv_kernel_size)

  conv = min_parameters("conv")
  mlp = min_parameters("mlp")
  if config.architecture != "auto":
    count = conv if config.architecture == "conv" else mlp
  else:
    count = {"grid": mlp, "npz": min(conv, mlp)}.get(config.data, conv)
  needed = count * _TRAINING_BYTES_PER_PARAMETER
  available = _physical_memory()
  if available is None or needed <= available:
    return
  conv_fields = (config.architecture == "conv" or (
      config.architecture == "auto" and config.data not in ("grid", "npz")))
  fields = (f"width={config.width:g}, conv_kernel_size="
            f"{config.conv_kernel_size}" if conv_fields else
            f"width={config.width:g}, hidden={tuple(config.hidden)}")
  require(False,
          f"{fields}, latent_dim={config.latent_dim} give networks of at "
          f"least {count:.2g} parameters: {needed / 1e9:.3g} GB for the "
          "parameters, their gradients and Adam's moments, more than this "
          f"machine's {available / 1e9:.3g} GB of memory; lower width or "
          f"{'conv_kernel_size' if conv_fields else 'hidden'}.")


def _physical_memory() -> Optional[int]:
  """This machine's memory in bytes, or None where the OS does not say."""
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (AttributeError, ValueError, OSError):
    return None
