"""Training: one objective for every model, a pure step, the SPMD loop.

The objective is `REC + λ D(q_Z, p_Z)` for all three models; they differ only
in their *regulariser*, a function `(encoding, key, axis_name) -> (codes,
penalty)`:

* CouAE: the codes are the encoder's output, D is `mmd2` under the sliced
  Coulomb kernel (`losses.coulomb_regularizer`);
* WAE: likewise with the multi-scale IMQ kernel (`losses.wae_regularizer`);
* VAE: the codes are reparameterised samples of the encoder's Gaussian, D is
  its mean KL to N(0, I) (`losses.gaussian_kl`).

The MMD models' prior p_Z is `make_prior(config)`: `config.prior` scaled by
`config.prior_scale`; a trained model generates from the same prior.

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

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from couae_jax import _checks, losses, models
from couae_jax import config as config_lib
from couae_jax import priors as priors_lib

DATA_AXIS = "data"

Regularizer = Callable[[models.Encoding, jax.Array, Optional[str]],
                       tuple[jax.Array, jax.Array]]


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; saved whole in checkpoints.

  A `flax.struct.dataclass`, so a pytree: it passes through `jax.jit`, and
  `state.replace(...)` returns a changed copy. `init_state` makes one.

  Attributes:
    step: int32 scalar `[]`, the number of steps taken.
    params: the model's parameter pytree.
    batch_stats: BatchNorm running statistics (`{}` for MLPs).
    opt_state: the optimizer's state for `params`.
    rng: uint32 `[2]` (for the default PRNG implementation), the raw data of
      the run's base key: step s draws from `fold_in(base_key, s)`
      (`step_key`), so the stream is a function of the step alone and a
      resumed run draws exactly what an uninterrupted one would.

  Example:
    >>> import numpy as np
    >>> from couae_jax import config as config_lib, train
    >>> config = config_lib.TrainConfig(hidden=(8,))
    >>> model = train.build_model(config, (2,))
    >>> state = train.init_state(model, train.make_optimizer(config),
    ...                          np.zeros((1, 2), np.float32), seed=0)
    >>> int(state.step), state.rng.shape, sorted(state.params)
    (0, (2,), ['decoder', 'encoder'])
    >>> int(state.replace(step=state.step + 1).step)
    1
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


def make_optimizer(config: config_lib.TrainConfig
                   ) -> optax.GradientTransformation:
  """Adam with the configured schedule.

  `optax.adam(lr, b1=config.b1, b2=config.b2)`, where lr is
  `config.learning_rate` (`schedule='constant'`, after a linear warm-up of
  `config.warmup_steps` steps if any), a warm-up then cosine decay to 0 at
  `config.steps` (`schedule='cosine'`), or piecewise constant
  (`schedule='piecewise'`): `config.learning_rate` multiplied by
  `config.lr_factors[i]` for every boundary i already reached, boundary i
  being step `floor(config.lr_boundaries[i] * config.steps + 0.5)`
  (`config.boundary_steps`). The update of step s (0-based: s updates done
  before it) uses the factors of the boundaries <= s, as
  `optax.piecewise_constant_schedule` counts. With a warm-up, the piecewise
  rate is also multiplied by `min(1, s / config.warmup_steps)`.

  Args:
    config: the run's `TrainConfig`, through `config.validate` (its values
      are not checked again here).

  Returns:
    An `optax.GradientTransformation`.

  Raises:
    TypeError: `config` not a `TrainConfig`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import config as config_lib, train
    >>> optimizer = train.make_optimizer(config_lib.TrainConfig(
    ...     schedule="cosine", warmup_steps=10, steps=100))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, _ = jax.jit(optimizer.update)(params, optimizer.init(params))
    >>> float(jnp.abs(updates["w"]).max())  # the first step's rate is 0
    0.0
    >>> wae = config_lib.TrainConfig(   # WAE's CelebA: x0.5, then x0.2
    ...     schedule="piecewise", steps=55, lr_boundaries=(30 / 55, 50 / 55),
    ...     lr_factors=(0.5, 0.2))
    >>> schedule = train.learning_rate_schedule(wae)
    >>> [round(float(schedule(s)), 6) for s in (29, 30, 49, 50)]
    [0.001, 0.0005, 0.0005, 0.0001]
  """
  return optax.adam(learning_rate_schedule(config), b1=config.b1,
                    b2=config.b2)


def learning_rate_schedule(config: config_lib.TrainConfig
                           ) -> optax.ScalarOrSchedule:
  """The learning rate `make_optimizer` gives Adam: a float or a schedule.

  Args:
    config: the run's `TrainConfig` (`schedule`, `learning_rate`,
      `warmup_steps`, `steps`, `lr_boundaries`, `lr_factors`).

  Returns:
    `config.learning_rate` itself for a constant rate without warm-up, else an
    `optax.Schedule`, `schedule(step) -> rate` (see `make_optimizer`).

  Raises:
    TypeError: `config` not a `TrainConfig`.

  Example:
    >>> from couae_jax import config as config_lib, train
    >>> train.learning_rate_schedule(config_lib.TrainConfig())
    0.001
    >>> schedule = train.learning_rate_schedule(config_lib.TrainConfig(
    ...     schedule="piecewise", steps=10, lr_boundaries=(0.5,),
    ...     lr_factors=(0.1,)))
    >>> [round(float(schedule(s)), 6) for s in (4, 5)]
    [0.001, 0.0001]
  """
  config_lib.check_type(config)
  if config.schedule == "piecewise":
    piecewise = optax.piecewise_constant_schedule(
        config.learning_rate, config_lib.boundary_steps(config))
    if not config.warmup_steps:
      return piecewise
    warmup = optax.linear_schedule(0.0, 1.0, config.warmup_steps)
    return lambda count: piecewise(count) * warmup(count)
  if config.schedule == "cosine":
    learning_rate = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup_steps, config.steps)
  elif config.warmup_steps:
    learning_rate = optax.linear_schedule(0.0, config.learning_rate,
                                          config.warmup_steps)
  else:
    learning_rate = config.learning_rate
  return learning_rate


def global_mean(per_example: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """The mean over the global batch of a per-example `[b]` array.

  Inside `shard_map` over `axis_name`, sums and counts over every device's
  shard, so that unequal shards still give the mean of all examples.

  Args:
    per_example: `[b]`, a floating per-example value on this device.
    axis_name: the data-parallel mesh axis, or None (default: no mesh) for a
      plain mean.

  Returns:
    A scalar `[]` of `per_example`'s dtype (float32 or wider).

  Raises:
    TypeError: `per_example` not floating, `axis_name` not None or a str.
    ValueError: `per_example` not 1-D.

  Example:
    >>> import jax.numpy as jnp
    >>> from couae_jax import train
    >>> train.global_mean(jnp.array([1.0, 2.0, 6.0]), None)
    Array(3., dtype=float32)
  """
  per_example = _checks.floating_array("per_example", per_example)
  if per_example.ndim != 1:
    raise ValueError(
        f"per_example must be a 1-D per-example array [b]; got shape "
        f"{tuple(per_example.shape)}.")
  _checks.axis_name("axis_name", axis_name)
  if axis_name is None:
    return jnp.mean(per_example)
  total = jax.lax.psum(jnp.sum(per_example), axis_name)
  count = jax.lax.psum(per_example.shape[0], axis_name)
  return total / count


def make_regularizer(config: config_lib.TrainConfig) -> Regularizer:
  """The model's regulariser: the only thing that differs between models.

  `regularize(encoding, key, axis_name) -> (codes, penalty)`: for `couae` and
  `wae` the codes are the encoding `[b, h]` itself (or, with
  `config.stochastic_encoder`, reparameterised samples of the encoding
  `(mean, log_var)`) and the penalty the MMD to
  `config.num_prior_samples` (0: `batch_size`) prior samples of the global
  batch, under the Coulomb or the multi-scale IMQ kernel; for `vae` the
  encoding is `(mean, log_var)`, each `[b, h]`, the codes reparameterised
  samples and the penalty the mean KL to N(0, I). `key` is the step's key, the
  same on every device; `axis_name` the data axis or None.

  The prior is `make_prior(config)`, and the kernels' default scales follow
  its `config.prior_scale` (`priors.coordinate_std`): the Coulomb kernel's
  length `sigma * sqrt(2 h)` (unless `config.kernel_scale` is set) and the
  IMQ kernel's `C = 2 h sigma²`.

  Args:
    config: the run's `TrainConfig` (`model`, `prior`, `prior_scale`, `eps`,
      `coulomb_kernel`, `kernel_scale`, `block_size`, `num_prior_samples`,
      `batch_size`), through `config.validate`.

  Returns:
    The regulariser, a pure function to call inside a step.

  Raises:
    TypeError: `config` not a `TrainConfig`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import config as config_lib, train
    >>> regularize = train.make_regularizer(config_lib.TrainConfig(
    ...     batch_size=16))
    >>> codes = jax.random.normal(jax.random.key(1), (16, 3))
    >>> out, penalty = regularize(codes, jax.random.key(2), None)
    >>> out.shape, penalty.shape, bool(jnp.isfinite(penalty))
    ((16, 3), (), True)
  """
  prior = make_prior(config)
  block_size = config.block_size or None
  global_prior_samples = config.num_prior_samples or config.batch_size

  def local_prior_samples(axis_name):
    devices = 1 if axis_name is None else jax.lax.psum(1, axis_name)
    return global_prior_samples // devices

  def sample_codes(encoding, key, axis_name):
    """Reparameterised codes of a Gaussian encoder `(mean, log_var)`."""
    mean, log_var = encoding
    noise = priors_lib.sample_shard(priors_lib.standard_normal, key,
                                    mean.shape, mean.dtype, axis_name)
    return mean + jnp.exp(0.5 * log_var) * noise

  if config.model == "vae":
    def regularize_vae(encoding, key, axis_name):
      codes = sample_codes(encoding, key, axis_name)
      return codes, global_mean(losses.gaussian_kl(*encoding), axis_name)
    return regularize_vae

  def mmd_to_prior(codes, key, axis_name):
    if config.model == "couae":
      return losses.coulomb_regularizer(
          codes, key=key, prior=prior,
          num_prior_samples=local_prior_samples(axis_name), eps=config.eps,
          scale=config_lib.optional(config.kernel_scale),
          kernel=config.coulomb_kernel,
          block_size=block_size, axis_name=axis_name)
    return losses.wae_regularizer(
        codes, key=key, prior=prior,
        num_prior_samples=local_prior_samples(axis_name),
        block_size=block_size, axis_name=axis_name)

  def regularize(encoding, key, axis_name):
    if config.stochastic_encoder:
      noise_key, key = jax.random.split(key)
      encoding = sample_codes(encoding, noise_key, axis_name)
    return encoding, mmd_to_prior(encoding, key, axis_name)
  return regularize


def make_prior(config: config_lib.TrainConfig) -> priors_lib.Prior:
  """The prior p_Z of the config: `config.prior` scaled by `config.prior_scale`.

  `priors.PRIORS[config.prior]` itself when `config.prior_scale` is 1 (the
  default), else `priors.scaled(...)`: the normal prior becomes
  N(0, prior_scale² I), the uniform one the cube [-prior_scale,
  prior_scale]^h. The regulariser draws from it in training and
  `TrainedModel.sample` in generation.

  Args:
    config: a `TrainConfig` (`prior`, `prior_scale`), through
      `config.validate`.

  Returns:
    A sampler `prior(key, shape, dtype)`.

  Raises:
    TypeError: `config` not a `TrainConfig`.

  Example:
    >>> import jax
    >>> from couae_jax import config as config_lib, priors, train
    >>> train.make_prior(config_lib.TrainConfig()) is priors.standard_normal
    True
    >>> wide = train.make_prior(config_lib.TrainConfig(prior_scale=2.0))
    >>> z = wide(jax.random.key(0), (10000, 3))
    >>> round(float(z.std()), 1), priors.coordinate_std(wide)
    (2.0, 2.0)
  """
  config_lib.check_type(config)
  return priors_lib.scaled(priors_lib.PRIORS[config.prior],
                           config.prior_scale)


def build_model(config: config_lib.TrainConfig, data_shape,
                *, axis_name: Optional[str] = None) -> models.Autoencoder:
  """The autoencoder the config asks for, for examples of `data_shape`.

  `config.architecture='auto'` takes `conv` for images (`data_shape` of rank
  3) and `mlp` otherwise; `latent_dim`, `width` and `hidden` size it,
  `conv_kernel_size` sets the conv nets' k×k kernels, and a `vae` (or any
  model with `config.stochastic_encoder`) gets a Gaussian encoder.

  Args:
    config: the run's `TrainConfig`, through `config.validate`.
    data_shape: the shape of one example, a tuple (or list) of positive ints,
      e.g. `(2,)` or `(28, 28, 1)`.
    axis_name: the data-parallel mesh axis BatchNorm averages over (conv
      models), or None (default) on one device.

  Returns:
    An unbound `models.Autoencoder` mapping `[B, *data_shape]` to codes
    `[B, latent_dim]` and back.

  Raises:
    TypeError: `config` not a `TrainConfig`, `axis_name` not None or a str.
    ValueError: a bad `data_shape`, or one `models.make_autoencoder`
      rejects (a conv net for data that are not images of an even size).

  Example:
    >>> from couae_jax import config as config_lib, train
    >>> model = train.build_model(config_lib.TrainConfig(hidden=(8,)), (2,))
    >>> type(model).__name__, model.encoder.latent_dim, model.encoder.hidden
    ('Autoencoder', 3, (8,))
    >>> conv = train.build_model(config_lib.TrainConfig(conv_kernel_size=5),
    ...                          (64, 64, 3))
    >>> conv.encoder.kernel_size, conv.decoder.kernel_size
    (5, 5)
  """
  config_lib.check_type(config)
  data_shape = _checks.shape_tuple("data_shape", data_shape)
  _checks.axis_name("axis_name", axis_name)
  architecture = config.architecture
  if architecture == "auto":
    architecture = "conv" if len(data_shape) == 3 else "mlp"
  return models.make_autoencoder(
      architecture, data_shape, config.latent_dim, width=config.width,
      hidden=config.hidden,
      stochastic=config.model == "vae" or config.stochastic_encoder,
      axis_name=axis_name, kernel_size=int(config.conv_kernel_size))


def init_state(model: nn.Module, optimizer: optax.GradientTransformation,
               example_batch: jax.Array, seed: int) -> TrainState:
  """Initial parameters, statistics and optimizer state from `seed`.

  `seed` is split into the initialisation key and the run's base key (kept in
  `state.rng`). Works under `jax.vmap` over seeds (the trainer initialises an
  ensemble of seeds that way) and `jax.eval_shape`.

  Args:
    model: the `flax.linen` module, e.g. from `build_model`.
    optimizer: the `optax.GradientTransformation`, e.g. from
      `make_optimizer`.
    example_batch: a floating batch `[B, *data_shape]` (B >= 1; only its
      shape and dtype matter) to initialise with.
    seed: an int, or an integer scalar array (e.g. traced under `vmap`).

  Returns:
    A `TrainState` at step 0.

  Raises:
    TypeError: `model` not a flax module, `optimizer` not a gradient
      transformation, `example_batch` not floating, `seed` not an integer.
    ValueError: `example_batch` of rank < 2 or an empty batch.

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
  _checks.instance("model", model, nn.Module,
                   "a flax.linen Module (e.g. from build_model)")
  _check_optimizer(optimizer)
  example_batch = _checks.floating_array("example_batch", example_batch,
                                         min_rank=2)
  if example_batch.shape[0] < 1:
    raise ValueError(
        f"example_batch must hold at least one example; got shape "
        f"{tuple(example_batch.shape)}.")
  _check_seed(seed)
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
    state: the replicated training state, a `TrainState`.
    batch: `[b, *data_shape]`, this device's shard of the global batch, a
      floating array.
    key: the step's key, the same on every device (usually `step_key(state)`).
    model: the `models.Autoencoder` (static).
    regularizer: from `make_regularizer` (static).
    optimizer: the `optax.GradientTransformation` (static).
    lam: the regulariser's weight, >= 0 (static).
    axis_name: the data-parallel mesh axis, or None (default) on one device.

  Returns:
    The new state and the step's metrics (identical on every device), each a
    scalar `[]`: `loss`, `rec` (mean squared error per example), `reg` (D),
    `grad_norm`, `param_norm` (of the updated parameters), and `xi` (the
    largest per-example reconstruction error of the batch, the paper's ξ
    estimate).

  Raises:
    TypeError: a piece of the wrong kind (`state` not a `TrainState`, `key`
      not one PRNG key, `batch` not floating, `model` not an `Autoencoder`,
      `regularizer` not callable, `optimizer` not a gradient transformation,
      `axis_name` not None or a str).
    ValueError: `lam` negative or not finite, `batch` not `[b, *data_shape]`
      of the model's data shape.

  Example:
    >>> import functools, jax, numpy as np
    >>> from couae_jax import config as config_lib, train
    >>> config = config_lib.TrainConfig(hidden=(8,), batch_size=16)
    >>> model = train.build_model(config, (2,))
    >>> optimizer = train.make_optimizer(config)
    >>> state = train.init_state(model, optimizer, np.zeros((1, 2), np.float32),
    ...                          seed=0)
    >>> step = jax.jit(functools.partial(
    ...     train.train_step, model=model, optimizer=optimizer, lam=config.lam,
    ...     regularizer=train.make_regularizer(config)))
    >>> batch = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    >>> state, metrics = step(state, batch, train.step_key(state))
    >>> int(state.step), sorted(metrics)
    (1, ['grad_norm', 'loss', 'param_norm', 'rec', 'reg', 'xi'])
  """
  _checks.instance("state", state, TrainState, "a TrainState (init_state)")
  batch = _checks.floating_array("batch", batch, min_rank=1)
  _checks.prng_key("key", key)
  _check_step_pieces(model, regularizer, optimizer, lam)
  _checks.axis_name("axis_name", axis_name)
  data_shape = model.data_shape
  if data_shape is not None and tuple(batch.shape[1:]) != data_shape:
    dims = ", ".join(str(d) for d in data_shape)
    raise ValueError(
        f"batch must have shape [b, {dims}] (this device's shard of the "
        f"model's examples); got shape {tuple(batch.shape)}.")

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
  # What `state.replace` does; mypy does not see the method flax adds.
  new_state = dataclasses.replace(
      state, step=state.step + 1, params=params, batch_stats=batch_stats,
      opt_state=opt_state)
  return new_state, metrics


def step_key(state: TrainState) -> jax.Array:
  """The key of the state's current step: `fold_in(base_key, step)`.

  Args:
    state: a `TrainState` (its `rng` and `step`).

  Returns:
    A typed PRNG key (shape `[]`), the same for every state at this step of
    this run.

  Raises:
    TypeError: `state` not a `TrainState`.

  Example:
    >>> import jax, numpy as np
    >>> from couae_jax import config as config_lib, train
    >>> config = config_lib.TrainConfig(hidden=(8,))
    >>> state = train.init_state(train.build_model(config, (2,)),
    ...                          train.make_optimizer(config),
    ...                          np.zeros((1, 2), np.float32), seed=0)
    >>> key = train.step_key(state)
    >>> key.shape, bool((jax.random.key_data(key)
    ...                  == jax.random.key_data(train.step_key(state))).all())
    ((), True)
  """
  _checks.instance("state", state, TrainState, "a TrainState (init_state)")
  return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def make_parallel_step(mesh: jax.sharding.Mesh, *, model, regularizer,
                       optimizer, lam: float, ensemble: bool = False):
  """`step(state, batch) -> (state, metrics)`, jitted once, SPMD over `mesh`.

  Without `ensemble`, one step: the state is replicated as `init_state` makes
  it (placed with `replicated(mesh)`), `batch: [B, *data_shape]` is sharded
  along `DATA_AXIS` (`data.shard_batch` assembles it), and the metrics are
  scalars.

  With `ensemble=True`, one call advances several independent runs (the
  *members*, e.g. the seeds of one configuration) by several steps: the
  state's leaves are stacked `[S, ...]` (replicated), `batch` is
  `[K, S, B, *data_shape]` (sharded along its `B` axis), and the call runs K
  steps of every member, a `lax.scan` over the steps of the step vmapped over
  the members, returning metrics `[K, S]`. Small models spend most of their
  time in per-step dispatch and tiny matrix products; this turns K·S of them
  into one call of batched products.

  The state's buffers are donated.

  Args:
    mesh: a `jax.sharding.Mesh` with a `DATA_AXIS` ('data') axis, e.g.
      `make_mesh()`.
    model: the `models.Autoencoder`, built with `axis_name=DATA_AXIS` for
      conv models (BatchNorm then averages over the global batch).
    regularizer: from `make_regularizer`.
    optimizer: the `optax.GradientTransformation`.
    lam: the regulariser's weight, >= 0.
    ensemble: a bool (default False): one step, or K steps of S stacked runs.

  Returns:
    The jitted step function.

  Raises:
    TypeError: `mesh` not a `Mesh`, `ensemble` not a bool, or a piece of the
      wrong kind (as `train_step`).
    ValueError: `mesh` without a 'data' axis, `lam` negative or not finite.

  Example:
    >>> import jax, numpy as np
    >>> from couae_jax import config as config_lib, train
    >>> config = config_lib.TrainConfig(hidden=(8,), batch_size=16)
    >>> model = train.build_model(config, (2,), axis_name=train.DATA_AXIS)
    >>> optimizer = train.make_optimizer(config)
    >>> mesh = train.make_mesh()
    >>> state = jax.device_put(
    ...     train.init_state(model, optimizer, np.zeros((1, 2), np.float32),
    ...                      seed=0), train.replicated(mesh))
    >>> step = train.make_parallel_step(
    ...     mesh, model=model, regularizer=train.make_regularizer(config),
    ...     optimizer=optimizer, lam=config.lam)
    >>> batch = jax.device_put(np.ones((16, 2), np.float32),  # data.shard_batch
    ...     jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    >>> state, metrics = step(state, batch)
    >>> int(state.step), metrics["loss"].shape
    (1, ())
  """
  _checks.instance("mesh", mesh, jax.sharding.Mesh,
                   "a jax.sharding.Mesh (make_mesh)")
  if DATA_AXIS not in mesh.axis_names:
    raise ValueError(
        f"mesh must have a {DATA_AXIS!r} axis (make_mesh); got axes "
        f"{tuple(mesh.axis_names)}.")
  _check_step_pieces(model, regularizer, optimizer, lam)
  _checks.python_bool("ensemble", ensemble)

  def one_step(state, batch):
    return train_step(state, batch, step_key(state), model=model,
                      regularizer=regularizer, optimizer=optimizer, lam=lam,
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
  """A one-axis `data` mesh over every device of every process.

  Returns:
    A `jax.sharding.Mesh` of shape `[jax.device_count()]` with axis
    `DATA_AXIS`.

  Example:
    >>> import jax
    >>> from couae_jax import train
    >>> mesh = train.make_mesh()
    >>> mesh.axis_names, mesh.size == jax.device_count()
    (('data',), True)
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The sharding of the training state: a full copy on every device.

  Args:
    mesh: the training mesh, a `jax.sharding.Mesh`.

  Returns:
    `NamedSharding(mesh, PartitionSpec())`.

  Raises:
    TypeError: `mesh` not a `Mesh`.

  Example:
    >>> import jax
    >>> from couae_jax import train
    >>> train.replicated(train.make_mesh()).spec == jax.sharding.PartitionSpec()
    True
  """
  _checks.instance("mesh", mesh, jax.sharding.Mesh,
                   "a jax.sharding.Mesh (make_mesh)")
  return NamedSharding(mesh, P())


#: The order in which non-finite metrics are reported: the loss terms first,
#: since they are where a divergence shows.
_DIVERGENCE_ORDER = ("rec", "reg", "loss", "xi", "grad_norm", "param_norm")


def first_non_finite(metrics: dict[str, Any]) -> Optional[str]:
  """The name of the first metric that is NaN or infinite, or None.

  Metrics are checked in the order rec, reg, loss, xi, grad_norm,
  param_norm, then any others by name, so a divergence is reported where it
  shows first.

  Args:
    metrics: a mapping `{name: value}`; values are numbers or numeric arrays
      of any shape (e.g. `[K, S]` from an ensemble step).

  Returns:
    The name of the first metric with a non-finite entry, or None.

  Raises:
    TypeError: `metrics` not a mapping, or a value not numeric.

  Example:
    >>> import numpy as np
    >>> from couae_jax import train
    >>> train.first_non_finite({"loss": np.inf, "rec": np.array([1.0, np.nan])})
    'rec'
    >>> train.first_non_finite({"loss": 1.0}) is None
    True
  """
  if not isinstance(metrics, Mapping):
    raise TypeError(
        f"metrics must be a mapping {{name: value}}; got "
        f"{type(metrics).__name__}.")
  for name, value in metrics.items():
    dtype = np.asarray(value).dtype
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
      raise TypeError(
          f"metrics[{name!r}] must be a number or numeric array; got "
          f"{type(value).__name__} of dtype {dtype}.")
  names = sorted(metrics, key=lambda name: (
      _DIVERGENCE_ORDER.index(name) if name in _DIVERGENCE_ORDER
      else len(_DIVERGENCE_ORDER), name))
  for name in names:
    if not np.all(np.isfinite(metrics[name])):
      return name
  return None


def _check_step_pieces(model, regularizer, optimizer, lam) -> None:
  """The static pieces `train_step` and `make_parallel_step` take."""
  _checks.instance("model", model, models.Autoencoder,
                   "a models.Autoencoder (build_model)")
  if not callable(regularizer):
    raise TypeError(
        f"regularizer must be callable (make_regularizer); got "
        f"{regularizer!r:.80}.")
  _check_optimizer(optimizer)
  _check_lam(lam)


def _check_optimizer(optimizer) -> None:
  if not (callable(getattr(optimizer, "init", None))
          and callable(getattr(optimizer, "update", None))):
    raise TypeError(
        f"optimizer must be an optax.GradientTransformation (make_optimizer); "
        f"got {type(optimizer).__name__}.")


def _check_lam(lam) -> None:
  """A real number >= 0, or a real scalar array (may be traced)."""
  dtype = getattr(lam, "dtype", None)
  if isinstance(lam, bool) or not (
      isinstance(lam, numbers.Real)
      or (dtype is not None and getattr(lam, "shape", None) == ()
          and (jnp.issubdtype(dtype, jnp.floating)
               or jnp.issubdtype(dtype, jnp.integer)))):
    raise TypeError(f"lam must be a real number >= 0; got {lam!r:.80}.")
  _checks.non_negative("lam", lam)


def _check_seed(seed) -> None:
  """An int, or an integer scalar array (concrete or traced)."""
  dtype = getattr(seed, "dtype", None)
  if isinstance(seed, bool) or not (
      isinstance(seed, numbers.Integral)
      or (dtype is not None and jnp.issubdtype(dtype, jnp.integer)
          and getattr(seed, "shape", None) == ())):
    raise TypeError(
        f"seed must be an int or an integer scalar array; got "
        f"{type(seed).__name__} {seed!r:.80}.")


__all__ = [
    "DATA_AXIS", "TrainState", "build_model", "first_non_finite",
    "global_mean", "init_state", "learning_rate_schedule", "make_mesh",
    "make_optimizer", "make_parallel_step", "make_prior", "make_regularizer",
    "replicated", "step_key", "train_step",
]
