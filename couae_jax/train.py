"""Training: a pure step of `REC + λ D` for any `Objective`, run SPMD.

`train_step(state, batch, key, *, model, objective, optimizer)` is written
for one device's shard of the batch: with `axis_name` set it runs under
`jax.shard_map` over a `data` mesh axis spanning every device of every
process. The objective draws prior samples and encoder noise for the global
batch and slices them, BatchNorm averages its statistics over the axis, the
MMD is the estimator on the global batch, and the gradient of the
(device-invariant) loss w.r.t. the replicated parameters is summed over
devices by shard_map's autodiff: the same step, to float32 rounding, on any
number of devices. What distinguishes the models is all in the
`objective.Objective` (`objective.make_objective(config)`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from couae_jax import _checks, losses, models
from couae_jax import config as config_lib
from couae_jax import objective as objective_lib

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; saved whole in checkpoints.

  A pytree (`state.replace(...)` returns a changed copy); `init_state` makes
  one. `rng` is the raw data of the run's base key: step s draws from
  `fold_in(base_key, s)` (`step_key`), so a resumed run draws exactly what
  an uninterrupted one would.

  Example:
    >>> import numpy as np
    >>> from couae_jax import config as config_lib, train
    >>> config = config_lib.TrainConfig(hidden=(8,))
    >>> model = train.build_model(config, (2,))
    >>> state = train.init_state(model, train.make_optimizer(config),
    ...                          np.zeros((1, 2), np.float32), seed=0)
    >>> int(state.step), state.rng.shape, sorted(state.params)
    (0, (2,), ['decoder', 'encoder'])
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


def make_optimizer(config: config_lib.TrainConfig
                   ) -> optax.GradientTransformation:
  """Adam (`config.b1`, `config.b2`) at `learning_rate_schedule(config)`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import config as config_lib, train
    >>> optimizer = train.make_optimizer(config_lib.TrainConfig(
    ...     schedule="cosine", warmup_steps=10, steps=100))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, _ = jax.jit(optimizer.update)(params, optimizer.init(params))
    >>> float(jnp.abs(updates["w"]).max())  # the first step's rate is 0
    0.0
  """
  return optax.adam(learning_rate_schedule(config), b1=config.b1,
                    b2=config.b2)


def learning_rate_schedule(config: config_lib.TrainConfig
                           ) -> optax.ScalarOrSchedule:
  """The learning rate of a validated config: a float or a schedule.

  `config.learning_rate` (`schedule='constant'`, after a linear warm-up of
  `config.warmup_steps` steps if any); a warm-up then cosine decay to 0 at
  `config.steps` (`'cosine'`); or piecewise constant (`'piecewise'`), the
  rate multiplied by `lr_factors[i]` from boundary step i on
  (`config.boundary_steps`, counted as `optax.piecewise_constant_schedule`
  does), times `min(1, s / warmup_steps)` with a warm-up.

  Example:
    >>> from couae_jax import config as config_lib, train
    >>> train.learning_rate_schedule(config_lib.TrainConfig())
    0.001
    >>> wae = config_lib.TrainConfig(   # WAE's CelebA: x0.5, then x0.2
    ...     schedule="piecewise", steps=55, lr_boundaries=(30 / 55, 50 / 55),
    ...     lr_factors=(0.5, 0.2))
    >>> schedule = train.learning_rate_schedule(wae)
    >>> [round(float(schedule(s)), 6) for s in (29, 30, 49, 50)]
    [0.001, 0.0005, 0.0005, 0.0001]
  """
  if config.schedule == "piecewise":
    piecewise = optax.piecewise_constant_schedule(
        config.learning_rate, config_lib.boundary_steps(config))
    if not config.warmup_steps:
      return piecewise
    warmup = optax.linear_schedule(0.0, 1.0, config.warmup_steps)
    return lambda count: piecewise(count) * warmup(count)
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup_steps, config.steps)
  if config.warmup_steps:
    return optax.linear_schedule(0.0, config.learning_rate,
                                 config.warmup_steps)
  return config.learning_rate


def build_model(config: config_lib.TrainConfig, data_shape,
                *, axis_name: Optional[str] = None) -> models.Autoencoder:
  """The autoencoder of a validated config for examples of `data_shape`.

  `config.architecture='auto'` takes `conv` for images (`data_shape` of rank
  3) and `mlp` otherwise; the encoder is Gaussian when the objective's is
  (`Objective.stochastic_encoder`). `axis_name`: the mesh axis BatchNorm
  averages over (conv models), or None on one device.

  Raises:
    ValueError: a bad `data_shape`, or one `models.make_autoencoder` rejects
      (a conv net for data that are not images of an even size).

  Example:
    >>> from couae_jax import config as config_lib, train
    >>> model = train.build_model(config_lib.TrainConfig(hidden=(8,)), (2,))
    >>> type(model).__name__, model.encoder.latent_dim, model.encoder.hidden
    ('Autoencoder', 3, (8,))
  """
  data_shape = _checks.shape_tuple("data_shape", data_shape)
  architecture = config.architecture
  if architecture == "auto":
    architecture = "conv" if len(data_shape) == 3 else "mlp"
  return models.make_autoencoder(
      architecture, data_shape, config.latent_dim, width=config.width,
      hidden=config.hidden,
      stochastic=objective_lib.make_objective(config).stochastic_encoder,
      axis_name=axis_name, kernel_size=int(config.conv_kernel_size))


def init_state(model: models.Autoencoder,
               optimizer: optax.GradientTransformation,
               example_batch: jax.Array, seed) -> TrainState:
  """Initial parameters, statistics and optimizer state from `seed` (an int
  or an integer scalar, traced under `jax.vmap` over seeds too), split into
  the initialisation key and the run's base key. Only the shape and dtype of
  `example_batch: [B, *data_shape]` matter.

  Example:
    >>> import numpy as np
    >>> from couae_jax import config as config_lib, train
    >>> config = config_lib.TrainConfig(hidden=(8,))
    >>> state = train.init_state(train.build_model(config, (2,)),
    ...                          train.make_optimizer(config),
    ...                          np.zeros((1, 2), np.float32), seed=3)
    >>> state.params["encoder"]["Dense_0"]["kernel"].shape
    (2, 8)
  """
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
               model: models.Autoencoder,
               objective: objective_lib.Objective,
               optimizer: optax.GradientTransformation,
               axis_name: Optional[str] = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step of `REC + objective.lam * D` on this device's
  shard `batch: [b, *data_shape]`; `key` is the step's key, the same on every
  device (`step_key(state)`).

  Returns:
    The new state and the step's metrics (identical on every device), each a
    scalar: `loss`, `rec` (mean squared error per example), `reg` (D),
    `grad_norm`, `param_norm` (of the updated parameters), and `xi` (the
    largest per-example reconstruction error, the paper's ξ estimate).

  Example:
    >>> import functools, jax, numpy as np
    >>> from couae_jax import config as config_lib, objective, train
    >>> config = config_lib.TrainConfig(hidden=(8,), batch_size=16)
    >>> model = train.build_model(config, (2,))
    >>> optimizer = train.make_optimizer(config)
    >>> state = train.init_state(model, optimizer, np.zeros((1, 2), np.float32),
    ...                          seed=0)
    >>> step = jax.jit(functools.partial(
    ...     train.train_step, model=model, optimizer=optimizer,
    ...     objective=objective.make_objective(config)))
    >>> batch = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    >>> state, metrics = step(state, batch, train.step_key(state))
    >>> int(state.step), sorted(metrics)
    (1, ['grad_norm', 'loss', 'param_norm', 'rec', 'reg', 'xi'])
  """
  def forward(module, x):
    encoding = module.encode(x, train=True)
    codes, penalty = objective.regularize(encoding, key, axis_name)
    return module.decode(codes, train=True), penalty

  def loss_fn(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    (reconstruction, penalty), updates = model.apply(
        variables, batch, method=forward, mutable=["batch_stats"])
    errors = losses.squared_error(reconstruction, batch)
    rec = objective_lib.global_mean(errors, axis_name)
    loss = rec + objective.lam * penalty
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
  # What `state.replace` does; mypy does not see the method flax adds.
  new_state = dataclasses.replace(
      state, step=state.step + 1, params=params, batch_stats=batch_stats,
      opt_state=opt_state)
  return new_state, metrics


def step_key(state: TrainState) -> jax.Array:
  """The key of the state's current step: `fold_in(base_key, step)`."""
  return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def make_parallel_step(mesh: jax.sharding.Mesh, *, model: models.Autoencoder,
                       objective: objective_lib.Objective,
                       optimizer: optax.GradientTransformation,
                       ensemble: bool = False):
  """`step(state, batch) -> (state, metrics)`, jitted once, SPMD over `mesh`
  (a mesh with a `DATA_AXIS` axis, `make_mesh()`), the state donated.

  Without `ensemble`, one step: the state is replicated (`replicated(mesh)`),
  `batch: [B, *data_shape]` sharded along `DATA_AXIS` (`data.shard_batch`),
  the metrics scalars. With `ensemble=True`, one call advances S stacked runs
  (the seeds of one configuration) by K steps: the state's leaves are
  `[S, ...]`, `batch` is `[K, S, B, *data_shape]` (sharded along B), and the
  call is a `lax.scan` over the steps of the step vmapped over the runs,
  returning metrics `[K, S]`: K·S dispatches of tiny products become one call
  of batched ones. Conv models are built with `axis_name=DATA_AXIS`.

  Example:
    >>> import jax, numpy as np
    >>> from couae_jax import config as config_lib, objective, train
    >>> config = config_lib.TrainConfig(hidden=(8,), batch_size=16)
    >>> model = train.build_model(config, (2,), axis_name=train.DATA_AXIS)
    >>> optimizer = train.make_optimizer(config)
    >>> mesh = train.make_mesh()
    >>> state = jax.device_put(
    ...     train.init_state(model, optimizer, np.zeros((1, 2), np.float32),
    ...                      seed=0), train.replicated(mesh))
    >>> step = train.make_parallel_step(
    ...     mesh, model=model, objective=objective.make_objective(config),
    ...     optimizer=optimizer)
    >>> batch = jax.device_put(np.ones((16, 2), np.float32),  # data.shard_batch
    ...     jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    >>> state, metrics = step(state, batch)
    >>> int(state.step), metrics["loss"].shape
    (1, ())
  """
  def one_step(state, batch):
    return train_step(state, batch, step_key(state), model=model,
                      objective=objective, optimizer=optimizer,
                      axis_name=DATA_AXIS)

  if ensemble:
    def body(state, batches):
      return jax.lax.scan(jax.vmap(one_step), state, batches)
    batch_spec = P(None, None, DATA_AXIS)
  else:
    body, batch_spec = one_step, P(DATA_AXIS)
  sharded = jax.shard_map(body, mesh=mesh, in_specs=(P(), batch_spec),
                          out_specs=(P(), P()))
  return jax.jit(sharded, donate_argnums=0)


def make_mesh() -> jax.sharding.Mesh:
  """A one-axis `DATA_AXIS` mesh over every device of every process."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The sharding of the training state: a full copy on every device."""
  return NamedSharding(mesh, P())


#: The order in which non-finite metrics are reported: the loss terms first,
#: since they are where a divergence shows.
_DIVERGENCE_ORDER = ("rec", "reg", "loss", "xi", "grad_norm", "param_norm")


def first_non_finite(metrics: dict[str, Any]) -> Optional[str]:
  """The name of the first metric (rec, reg, loss, xi, grad_norm,
  param_norm, then the others by name) with a NaN or infinite entry, or None.

  Example:
    >>> import numpy as np
    >>> from couae_jax import train
    >>> train.first_non_finite({"loss": np.inf, "rec": np.array([1.0, np.nan])})
    'rec'
  """
  names = sorted(metrics, key=lambda name: (
      _DIVERGENCE_ORDER.index(name) if name in _DIVERGENCE_ORDER
      else len(_DIVERGENCE_ORDER), name))
  for name in names:
    if not np.all(np.isfinite(metrics[name])):
      return name
  return None


__all__ = [
    "DATA_AXIS", "TrainState", "build_model", "first_non_finite",
    "init_state", "learning_rate_schedule", "make_mesh", "make_optimizer",
    "make_parallel_step", "replicated", "step_key", "train_step",
]
