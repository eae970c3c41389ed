"""What a model is: the objective `REC + λ D(q_Z, p_Z)` as one value.

The three models differ only in their `Objective`, made from a validated
config by `make_objective` and read by everything that needs to know the
model: the trainer (`train.train_step`), the network's encoder head
(`train.build_model`), the config's memory check, a restored model's
sampling (`inference.TrainedModel`) and the experiments (the kernel of the
generalisation bound):

* CouAE: D is `mmd2` under the sliced Coulomb kernel (`losses.coulomb_kernel`);
* WAE: likewise under the multi-scale IMQ kernel (`losses.wae_kernel`);
* VAE: D is the mean KL of the Gaussian encoder to N(0, I), its prior.

The MMD models' codes are the encoder's output, or with
`config.stochastic_encoder` reparameterised samples of its Gaussian; the VAE's
always are. Prior samples and encoder noise are drawn for the global batch
and sliced (`priors.sample_shard`), so a step is the same on any number of
devices.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional, cast

import jax
import jax.numpy as jnp

from couae_jax import kernels, losses, models
from couae_jax import priors as priors_lib

if TYPE_CHECKING:  # config imports this module
  from couae_jax.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Objective:
  """A model's objective `REC + lam * D`: everything but the networks' sizes.

  Attributes:
    name: `couae`, `wae` or `vae`.
    lam: the weight λ of the regulariser D.
    prior: p_Z, `prior(key, shape, dtype)`: what D pulls the codes toward and
      what a trained model generates from (N(0, I) for the VAE).
    kernel: the MMD's kernel `k(x, y)`, or None (the VAE: D is its KL).
    stochastic_encoder: whether the encoder is Gaussian, `(mean, log_var)`.
    num_prior_samples: prior samples per step, over the global batch.
    block_size: rows per block of the streamed MMD, or None (dense).

  Example:
    >>> import jax
    >>> from couae_jax import config as config_lib, objective
    >>> wae = objective.make_objective(config_lib.TrainConfig(
    ...     model="wae", batch_size=16))
    >>> wae.kernel is not None, wae.stochastic_encoder
    (True, False)
    >>> codes = jax.random.normal(jax.random.key(1), (16, 3))
    >>> out, penalty = wae.regularize(codes, jax.random.key(2), None)
    >>> out.shape, penalty.shape
    ((16, 3), ())
  """
  name: str
  lam: float
  prior: priors_lib.Prior
  kernel: Optional[kernels.Kernel]
  stochastic_encoder: bool
  num_prior_samples: int
  block_size: Optional[int]

  def regularize(self, encoding: models.Encoding, key: jax.Array,
                 axis_name: Optional[str]) -> tuple[jax.Array, jax.Array]:
    """`(codes, D)`: the codes and the penalty of this device's encoding.

    `key` is the step's key (the same on every device), `axis_name` the data
    axis or None.
    """
    if self.kernel is None:
      codes = _sample_codes(encoding, key, axis_name)
      return codes, global_mean(losses.gaussian_kl(*encoding), axis_name)
    codes = cast(jax.Array, encoding)
    if self.stochastic_encoder:
      noise_key, key = jax.random.split(key)
      codes = _sample_codes(encoding, noise_key, axis_name)
    devices = 1 if axis_name is None else jax.lax.psum(1, axis_name)
    return codes, losses.mmd_to_prior(
        codes, self.kernel, key=key, prior=self.prior,
        num_prior_samples=self.num_prior_samples // devices,
        block_size=self.block_size, axis_name=axis_name)


def make_objective(config: TrainConfig) -> Objective:
  """The objective of a config that passed `config.validate`.

  The prior is `config.prior` scaled by `config.prior_scale` (N(0, I) for the
  VAE, which `validate` requires it to name); the kernels' default scales
  follow it (`priors.coordinate_std`): the Coulomb kernel's length
  `sigma * sqrt(2 h)` unless `config.kernel_scale` is set, the IMQ kernel's
  `C = 2 h sigma²`.

  Example:
    >>> from couae_jax import config as config_lib, objective, priors
    >>> couae = objective.make_objective(config_lib.TrainConfig(prior_scale=2.0))
    >>> couae.kernel.func.__name__, priors.coordinate_std(couae.prior)
    ('sliced_coulomb', 2.0)
    >>> objective.make_objective(config_lib.TrainConfig(model="vae")).kernel
  """
  h = config.latent_dim
  prior = priors_lib.scaled(priors_lib.PRIORS[config.prior],
                            config.prior_scale)
  kernel: Optional[kernels.Kernel] = None
  if config.model == "couae":
    kernel = losses.coulomb_kernel(
        h, eps=config.eps, scale=config.kernel_scale or None, prior=prior,
        kernel=config.coulomb_kernel)
  elif config.model == "wae":
    kernel = losses.wae_kernel(h, sigma=priors_lib.coordinate_std(prior))
  return Objective(
      name=config.model, lam=config.lam, prior=prior, kernel=kernel,
      stochastic_encoder=config.model == "vae" or config.stochastic_encoder,
      num_prior_samples=config.num_prior_samples or config.batch_size,
      block_size=config.block_size or None)


def global_mean(per_example: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """The mean over the global batch of a per-example `[b]` array: inside
  `shard_map` over `axis_name`, of every device's shard (unequal shards too).

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import objective
    >>> objective.global_mean(jnp.array([1.0, 2.0, 6.0]), None)
    Array(3., dtype=float32)
  """
  if axis_name is None:
    return jnp.mean(per_example)
  total = jax.lax.psum(jnp.sum(per_example), axis_name)
  return total / jax.lax.psum(per_example.shape[0], axis_name)


def _sample_codes(encoding, key, axis_name):
  """Reparameterised codes of a Gaussian encoding `(mean, log_var)`, the
  noise drawn for the global batch and sliced."""
  mean, log_var = encoding
  noise = priors_lib.sample_shard(priors_lib.standard_normal, key, mean.shape,
                                  mean.dtype, axis_name)
  return mean + jnp.exp(0.5 * log_var) * noise


__all__ = ["Objective", "global_mean", "make_objective"]
