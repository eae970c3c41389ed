"""Training: one objective for every model, a pure step, the SPMD loop.

The objective is `REC + λ D(q_Z, p_Z)` for all three models; they differ only
in their *regulariser*, a function `(encoding, key, axis_name) -> (codes,
penalty)`:

* CouAE: the codes are the encoder's output, D is `mmd2` under the Coulomb
  kernel (`losses.coulomb_regularizer`);
* WAE: likewise with the multi-scale IMQ kernel (`losses.wae_regularizer`);
* VAE: the codes are reparameterised samples of the encoder's Gaussian, D is
  its mean KL to N(0, I) (`losses.gaussian_kl`).

`train_step(state, batch, key, ...) -> (state, metrics)` is pure and written
for one device's shard of the batch: with `axis_name` set it is run under
`jax.shard_map` over a `data` mesh axis spanning every device of every
process. Prior samples and VAE noise are drawn for the global batch and
sliced, BatchNorm averages its statistics over the axis, the MMD is the
estimator on the global batch (`mmd2(..., axis_name=)`), and the gradient of
the (device-invariant) loss w.r.t. the replicated parameters is summed over
devices by JAX's shard_map autodiff. The result is the same step, to float32
rounding, on any number of devices.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from couae_jax import config as config_lib
from couae_jax import losses
from couae_jax import models
from couae_jax import priors as priors_lib

DATA_AXIS = "data"

Regularizer = Callable[[models.Encoding, jax.Array, Optional[str]],
                       tuple[jax.Array, jax.Array]]


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; saved whole in checkpoints.

  `rng` holds the raw data of the run's base key: step s draws from
  `fold_in(base_key, s)`, so the stream is a function of the step alone and a
  resumed run draws exactly what an uninterrupted one would.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


def make_optimizer(config: config_lib.TrainConfig
                   ) -> optax.GradientTransformation:
  """Adam with the configured schedule."""
  if config.schedule == "cosine":
    learning_rate = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup_steps, config.steps)
  elif config.warmup_steps:
    learning_rate = optax.linear_schedule(0.0, config.learning_rate,
                                          config.warmup_steps)
  else:
    learning_rate = config.learning_rate
  return optax.adam(learning_rate, b1=config.b1, b2=config.b2)


def global_mean(per_example: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """The mean over the global batch of a per-example `[b]` array."""
  if axis_name is None:
    return jnp.mean(per_example)
  total = jax.lax.psum(jnp.sum(per_example), axis_name)
  count = jax.lax.psum(per_example.shape[0], axis_name)
  return total / count


def make_regularizer(config: config_lib.TrainConfig) -> Regularizer:
  """The model's regulariser: the only thing that differs between models."""
  prior = priors_lib.PRIORS[config.prior]
  block_size = config.block_size or None
  global_prior_samples = config.num_prior_samples or config.batch_size

  def local_prior_samples(axis_name):
    devices = 1 if axis_name is None else jax.lax.psum(1, axis_name)
    return global_prior_samples // devices

  if config.model == "couae":
    def regularize(codes, key, axis_name):
      return codes, losses.coulomb_regularizer(
          codes, key=key, prior=prior,
          num_prior_samples=local_prior_samples(axis_name), eps=config.eps,
          scale=config_lib.optional(config.kernel_scale),
          block_size=block_size, axis_name=axis_name)
  elif config.model == "wae":
    def regularize(codes, key, axis_name):
      return codes, losses.wae_regularizer(
          codes, key=key, prior=prior,
          num_prior_samples=local_prior_samples(axis_name),
          block_size=block_size, axis_name=axis_name)
  else:
    def regularize(encoding, key, axis_name):
      mean, log_var = encoding
      noise = priors_lib.sample_shard(priors_lib.standard_normal, key,
                                      mean.shape, mean.dtype, axis_name)
      codes = mean + jnp.exp(0.5 * log_var) * noise
      return codes, global_mean(losses.gaussian_kl(mean, log_var), axis_name)
  return regularize


def build_model(config: config_lib.TrainConfig, data_shape,
                *, axis_name: Optional[str] = None) -> models.Autoencoder:
  """The autoencoder the config asks for, for examples of `data_shape`."""
  architecture = config.architecture
  if architecture == "auto":
    architecture = "conv" if len(data_shape) == 3 else "mlp"
  return models.make_autoencoder(
      architecture, data_shape, config.latent_dim, width=config.width,
      hidden=config.hidden, stochastic=config.model == "vae",
      axis_name=axis_name)


def init_state(model: nn.Module, optimizer: optax.GradientTransformation,
               example_batch: jax.Array, seed: int) -> TrainState:
  """Initial parameters, statistics and optimizer state from `seed`."""
  init_key, base_key = jax.random.split(jax.random.key(seed))
  variables = model.init(init_key, example_batch, train=False)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=optimizer.init(params),
      rng=jax.random.key_data(base_key),
  )


def train_step(state: TrainState, batch: jax.Array, key: jax.Array, *,
               model: models.Autoencoder, regularizer: Regularizer,
               optimizer: optax.GradientTransformation, lam: float,
               axis_name: Optional[str] = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step of `REC + lam * D` on this device's shard.

  Args:
    state: the replicated training state.
    batch: `[b, *data_shape]`, this device's shard of the global batch.
    key: the step's key, the same on every device.
    model, regularizer, optimizer, lam: the run's pieces (static).
    axis_name: the data-parallel mesh axis, or None on one device.

  Returns:
    The new state and the step's metrics (identical on every device): `loss`,
    `rec` (mean squared error per example), `reg` (D), `grad_norm`,
    `param_norm` (of the updated parameters), and `xi` (the largest
    per-example reconstruction error of the batch, the paper's ξ estimate).
  """
  def forward(module, x):
    encoding = module.encode(x, train=True)
    codes, penalty = regularizer(encoding, key, axis_name)
    return module.decode(codes, train=True), penalty

  def loss_fn(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    (reconstruction, penalty), updates = model.apply(
        variables, batch, method=forward, mutable=["batch_stats"])
    errors = losses.squared_error(reconstruction, batch)
    rec = global_mean(errors, axis_name)
    loss = rec + lam * penalty
    return loss, (updates.get("batch_stats", {}), errors,
                  {"loss": loss, "rec": rec, "reg": penalty})

  grads, (batch_stats, errors, metrics) = jax.grad(
      loss_fn, has_aux=True)(state.params)
  xi = jnp.max(errors)
  if axis_name is not None:
    xi = jax.lax.pmax(xi, axis_name)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = metrics | {"xi": xi, "grad_norm": optax.tree.norm(grads),
                       "param_norm": optax.tree.norm(params)}
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  return new_state, metrics


def step_key(state: TrainState) -> jax.Array:
  """The key of the state's current step: `fold_in(base_key, step)`."""
  return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def make_parallel_step(mesh: jax.sharding.Mesh, *, model, regularizer,
                       optimizer, lam: float):
  """`step(state, batch) -> (state, metrics)`, jitted once, SPMD over `mesh`.

  The state is replicated, the batch sharded along `DATA_AXIS`; the state's
  buffers are donated.
  """
  def body(state, batch):
    return train_step(state, batch, step_key(state), model=model,
                      regularizer=regularizer, optimizer=optimizer, lam=lam,
                      axis_name=DATA_AXIS)

  sharded = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                          out_specs=(P(), P()))
  return jax.jit(sharded, donate_argnums=0)


def make_mesh() -> jax.sharding.Mesh:
  """A one-axis `data` mesh over every device of every process."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The sharding of the training state: a full copy on every device."""
  return NamedSharding(mesh, P())


#: The order in which non-finite metrics are reported: the loss terms first,
#: since they are where a divergence shows.
_DIVERGENCE_ORDER = ("rec", "reg", "loss", "xi", "grad_norm", "param_norm")


def first_non_finite(metrics: dict[str, Any]) -> Optional[str]:
  """The name of the first metric that is NaN or infinite, or None."""
  names = sorted(metrics, key=lambda name: (
      _DIVERGENCE_ORDER.index(name) if name in _DIVERGENCE_ORDER
      else len(_DIVERGENCE_ORDER), name))
  for name in names:
    if not np.all(np.isfinite(metrics[name])):
      return name
  return None


__all__ = [
    "DATA_AXIS", "TrainState", "build_model", "first_non_finite",
    "global_mean", "init_state", "make_mesh", "make_optimizer",
    "make_parallel_step", "make_regularizer", "replicated", "step_key",
    "train_step",
]
