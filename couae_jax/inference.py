"""A trained model: `restore(workdir)` and what it gives, a `TrainedModel`.

`restore` reads the newest good checkpoint of a training run (verified by
`checkpointing`), validates its config, rebuilds the networks and returns the
parameters with the inference functions: `encode`, `decode`, `reconstruct`,
and `sample` from the objective's prior.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp

from couae_jax import _checks, checkpointing, models
from couae_jax import config as config_lib
from couae_jax import objective as objective_lib
from couae_jax import scaling as scaling_lib
from couae_jax import train as train_lib


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A trained model: its parameters, configuration and inference functions.

  Attributes:
    model: the `Autoencoder` module.
    params: the parameter pytree.
    batch_stats: BatchNorm running statistics (empty for MLPs).
    config: the `TrainConfig` it was trained with.
    step: the step of the checkpoint.
    data_shape: the shape of one example, a tuple.
    scaling: the `scaling.DataScaling` of the training data
      (`config.standardize`), or None. The methods take and give data in their
      own units either way.

  Made by `restore` and `loop.fit`; the methods run the jitted halves in
  inference mode (BatchNorm on its running averages), and raise TypeError for
  a non-floating `x` or `z` or a bad key, ValueError for a wrong shape.

  Example:
    >>> import jax, numpy as np
    >>> from couae_jax import config as config_lib, inference, train
    >>> config = config_lib.TrainConfig(hidden=(8,))
    >>> model = train.build_model(config, (2,))
    >>> state = train.init_state(model, train.make_optimizer(config),
    ...                          np.zeros((1, 2), np.float32), seed=0)
    >>> trained = inference.TrainedModel(
    ...     model=model, params=state.params, batch_stats=state.batch_stats,
    ...     config=config, step=0, data_shape=(2,))
    >>> x = np.zeros((5, 2), np.float32)
    >>> trained.encode(x).shape, trained.reconstruct(x).shape
    ((5, 3), (5, 2))
    >>> trained.sample(jax.random.key(0), 4).shape
    (4, 2)
    >>> trained.decode(np.zeros((5, 2), np.float32))
    Traceback (most recent call last):
      ...
    ValueError: z must have shape [B, 3] (codes of latent_dim 3); got shape (5, 2).
  """
  model: models.Autoencoder
  params: Any
  batch_stats: Any
  config: config_lib.TrainConfig
  step: int
  data_shape: tuple[int, ...]
  scaling: Optional[scaling_lib.DataScaling] = None

  @property
  def variables(self) -> dict[str, Any]:
    """`{'params': ..., 'batch_stats': ...}`, as `models.encode` takes."""
    return {"params": self.params, "batch_stats": self.batch_stats}

  @property
  def objective(self) -> objective_lib.Objective:
    """The objective it was trained with (`objective.make_objective`)."""
    return objective_lib.make_objective(self.config)

  def encode(self, x: jax.Array, key: Optional[jax.Array] = None
             ) -> jax.Array:
    """Codes `[B, h]` of `x: [B, *data_shape]`.

    A Gaussian encoder gives its mean, or with `key` a sample of q(z|x),
    what its regulariser saw in training; a deterministic one ignores `key`.
    """
    x = _checks.floating_array("x", x, min_rank=0)
    if tuple(x.shape[1:]) != self.data_shape or x.ndim < 1:
      dims = ", ".join(str(d) for d in self.data_shape)
      raise ValueError(
          f"x must have shape [B, {dims}] (a batch of the model's examples); "
          f"got shape {tuple(x.shape)}.")
    if key is not None:
      _checks.prng_key("key", key)
    if self.scaling is not None:
      x = self.scaling.apply(x)
    encoding = models.encode(self.model, self.variables, x)
    if not isinstance(encoding, tuple):
      return encoding
    return encoding[0] if key is None else models.reparameterize(key,
                                                                 *encoding)

  def decode(self, z: jax.Array) -> jax.Array:
    """Decodes codes `z: [B, h]` to `[B, *data_shape]`."""
    z = _checks.floating_array("z", z, min_rank=0)
    h = self.config.latent_dim
    if z.ndim != 2 or z.shape[1] != h:
      raise ValueError(
          f"z must have shape [B, {h}] (codes of latent_dim {h}); got shape "
          f"{tuple(z.shape)}.")
    x = models.decode(self.model, self.variables, z)
    return x if self.scaling is None else self.scaling.invert(x)

  def reconstruct(self, x: jax.Array) -> jax.Array:
    """`decode(encode(x))`: `[B, *data_shape]` to `[B, *data_shape]`."""
    return self.decode(self.encode(x))

  def sample_prior(self, key: jax.Array, n: int) -> jax.Array:
    """`[n, h]` samples of the objective's prior.

    `key` is one PRNG key, `n` an int >= 1.
    """
    _checks.prng_key("key", key)
    _checks.positive_int("n", n)
    return self.objective.prior(key, (n, self.config.latent_dim))

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    """`[n, *data_shape]` generated examples: `decode(sample_prior(key, n))`."""
    return self.decode(self.sample_prior(key, n))


def restore(workdir: str, step: Optional[int] = None) -> TrainedModel:
  """The model trained in `workdir`, at `step` (an int >= 0) or, by default,
  its newest good checkpoint, on the default device.

  Every checkpoint is verified against the checksums saved with it. Without
  `step`, a corrupt checkpoint is skipped with a `CheckpointWarning` naming it
  and why, and the newest good one restored (nothing is moved: restoring only
  reads).

  Raises:
    TypeError: `workdir` not a str or path.
    ValueError: `step` neither None nor an int >= 0; a saved config
      `config.validate` refuses.
    FileNotFoundError: no checkpoint in the workdir, or not at `step`.
    CheckpointCorruptError: the checkpoint of `step` is corrupt, or (without
      `step`) every checkpoint is.
    ConfigMismatchError: the checkpoint's config has fields this version
      does not know (written by another version).

  Example:
    >>> import tempfile, jax, numpy as np
    >>> from couae_jax import checkpointing, config as config_lib, inference
    >>> from couae_jax import train
    >>> config = config_lib.TrainConfig(hidden=(8,))
    >>> state = train.init_state(train.build_model(config, (2,)),
    ...                          train.make_optimizer(config),
    ...                          np.zeros((1, 2), np.float32), seed=0)
    >>> with tempfile.TemporaryDirectory() as workdir:  # as loop.fit saves
    ...   saver = checkpointing.Checkpointer(workdir, config, (2,))
    ...   for step in (1, 2):
    ...     saver.save(step, state.replace(step=np.int32(step)),
    ...                {"epoch": 0, "position": step}, {"loss": 1.0})
    ...   saver.close()
    ...   latest = inference.restore(workdir)
    ...   first = inference.restore(workdir, step=1)
    >>> latest.step, first.step, latest.config == config
    (2, 1, True)
    >>> inference.restore("/nonexistent", step=-1)
    Traceback (most recent call last):
      ...
    ValueError: step must be None or an integer >= 0; got -1.
  """
  if step is not None and (isinstance(step, bool) or not isinstance(
      step, numbers.Integral) or step < 0):
    raise ValueError(f"step must be None or an integer >= 0; got {step!r}.")
  with checkpointing.CheckpointReader(workdir) as reader:
    steps = reader.steps()
    directory = str(reader.manager.directory)
    if step is not None and step not in steps:
      raise FileNotFoundError(
          f"no checkpoint of step {step} under {directory!r}; steps: "
          f"{steps}.")
    if not steps:
      raise FileNotFoundError(f"no checkpoints under {directory!r}.")
    bad = []
    for candidate in ([int(step)] if step is not None else reversed(steps)):
      try:
        trained = _restore_model(reader, candidate)
      except checkpointing.CheckpointCorruptError as error:
        if step is not None:
          raise
        bad.append(error)
        continue
      for skipped in bad:
        warnings.warn(
            f"skipped the checkpoint of step {skipped.step} in {directory}: "
            f"it is corrupt ({skipped.reason}); restored step {candidate}, the "
            "newest good one.", checkpointing.CheckpointWarning, stacklevel=2)
      return trained
    raise checkpointing.CheckpointCorruptError(
        None, "every checkpoint is corrupt",
        f"no checkpoint under {directory!r} can be restored: "
        + "; ".join(f"step {e.step}: {e.reason}" for e in bad)
        + ". Retrain in a new --workdir.")


def _restore_model(reader: checkpointing.CheckpointReader,
                   step: int) -> TrainedModel:
  """The verified `TrainedModel` of `step` (CheckpointCorruptError)."""
  meta = reader.read_meta(step)
  config = checkpointing.saved_config(meta["config"], step)
  config_lib.validate(config)
  try:
    scaling = (scaling_lib.DataScaling.from_dict(meta["data_scaling"])
               if "data_scaling" in meta else None)
    data_shape = _checks.shape_tuple("data_shape", meta["data_shape"])
  except (KeyError, TypeError, ValueError) as error:
    raise checkpointing.CheckpointCorruptError(
        step, "its metadata (meta/) are garbled "
        f"({checkpointing.short_error(error)})") from error
  model = train_lib.build_model(config, data_shape)
  optimizer = train_lib.make_optimizer(config)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                        sharding=sharding),
      jax.eval_shape(lambda: train_lib.init_state(
          model, optimizer, jnp.zeros((1,) + data_shape), config.seed)))
  state, _ = reader.restore(step, abstract)
  return TrainedModel(model=model, params=state.params,
                      batch_stats=state.batch_stats, config=config, step=step,
                      data_shape=tuple(data_shape), scaling=scaling)


__all__ = ["TrainedModel", "restore"]
