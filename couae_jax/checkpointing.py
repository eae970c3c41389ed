"""Orbax checkpoints of a training run, and restoring a trained model.

A checkpoint holds two items:

* `state`: the `TrainState` (parameters, BatchNorm statistics, optimizer
  state, step, base key) and the data iterator's position, restored against
  an abstract target so shapes, dtypes and shardings are checked;
* `meta`: JSON with the `TrainConfig` and the data shape, so that a restored
  model can be rebuilt without the data and a workdir refuses to resume under
  a different configuration.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a save killed midway leaves nothing that `latest_step` or
`restore` would take for a checkpoint. The manager keeps the latest
`keep_checkpoints` checkpoints plus the best by `best_metric`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from couae_jax import config as config_lib
from couae_jax import models
from couae_jax import priors as priors_lib
from couae_jax import train as train_lib

CHECKPOINT_DIR = "checkpoints"

#: Fields a resumed run may change: they do not alter what is computed.
RESUMABLE_CHANGES = frozenset({
    "steps", "log_every", "eval_every", "checkpoint_every",
    "keep_checkpoints", "distributed",
})


class ConfigMismatchError(ValueError):
  """The workdir holds checkpoints of another configuration."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


class Checkpointer:
  """A `CheckpointManager` for one run's workdir.

  Args:
    workdir: the run's directory; checkpoints go to `workdir/checkpoints`.
    config: the run's configuration (decides retention).
    data_shape: the shape of one example, saved with every checkpoint.
  """

  def __init__(self, workdir: str, config: config_lib.TrainConfig,
               data_shape: Sequence[int]):
    self._meta = {"config": config.to_dict(),
                  "data_shape": [int(d) for d in data_shape]}
    best = config.best_metric
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=config.keep_checkpoints),
        # Sorted from worst to best (lower is better): keep the last one.
        checkpoint_managers.BestN(get_metric_fn=lambda m: m[best],
                                  reverse=True, n=1),
    ])
    self.manager = ocp.CheckpointManager(
        checkpoint_dir(workdir),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=True,
            create=True),
        item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def check_config(self, config: config_lib.TrainConfig) -> None:
    """Raises ConfigMismatchError if the latest checkpoint's config differs."""
    step = self.latest_step()
    if step is None:
      return
    saved = read_meta(self.manager, step)["config"]
    current = config.to_dict()
    differing = sorted(
        name for name in set(saved) | set(current)
        if name not in RESUMABLE_CHANGES
        and _normalise(saved.get(name)) != _normalise(current.get(name)))
    if differing:
      details = ", ".join(f"{name}: saved {saved.get(name)!r}, now "
                          f"{current.get(name)!r}" for name in differing)
      raise ConfigMismatchError(
          f"the workdir holds checkpoints of another config ({details}); use "
          f"a new --workdir, or the saved values to resume.")

  def save(self, step: int, state: train_lib.TrainState,
           data_position: dict[str, int], metrics: dict[str, float]) -> None:
    """Saves asynchronously; returns once the arrays are copied to the host."""
    tree = {"train": state, "data": _data_tree(data_position)}
    self.manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                meta=ocp.args.JsonSave(self._meta)),
        metrics={name: float(value) for name, value in metrics.items()},
        force=True)

  def restore(self, step: int, abstract_state: train_lib.TrainState
              ) -> tuple[train_lib.TrainState, dict[str, int]]:
    """The state and data position saved at `step`, shaped like the target."""
    target = {"train": abstract_state,
              "data": _data_tree({"epoch": 0, "position": 0})}
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    tree = restored["state"]
    return tree["train"], {name: int(value)
                           for name, value in tree["data"].items()}

  def wait_until_finished(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _data_tree(position: dict[str, int]) -> dict[str, np.ndarray]:
  return {name: np.asarray(value, np.int64) for name, value in position.items()}


def _normalise(value: Any) -> Any:
  """JSON turns tuples into lists; compare them alike."""
  return list(value) if isinstance(value, tuple) else value


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  restored = manager.restore(
      step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  return restored["meta"]


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A restored model: its parameters, configuration and inference functions.

  Attributes:
    model: the `Autoencoder` module.
    params: the parameter pytree.
    batch_stats: BatchNorm running statistics (empty for MLPs).
    config: the `TrainConfig` it was trained with.
    step: the step of the checkpoint.
    data_shape: the shape of one example.
  """
  model: models.Autoencoder
  params: Any
  batch_stats: Any
  config: config_lib.TrainConfig
  step: int
  data_shape: tuple[int, ...]

  @property
  def variables(self) -> dict[str, Any]:
    return {"params": self.params, "batch_stats": self.batch_stats}

  def encode(self, x: jax.Array) -> jax.Array:
    """Codes `[B, h]` of `x: [B, *data_shape]` (the posterior mean for a VAE)."""
    encoding = models.encode(self.model, self.variables, x)
    return encoding[0] if isinstance(encoding, tuple) else encoding

  def decode(self, z: jax.Array) -> jax.Array:
    """Decodes codes `z: [B, h]` to `[B, *data_shape]`."""
    return models.decode(self.model, self.variables, z)

  def reconstruct(self, x: jax.Array) -> jax.Array:
    return self.decode(self.encode(x))

  def sample_prior(self, key: jax.Array, n: int) -> jax.Array:
    """`[n, h]` samples of the prior the model was trained with."""
    prior = priors_lib.PRIORS[self.config.prior]
    return prior(key, (n, self.config.latent_dim))

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    """`n` generated examples: the decoder applied to prior samples."""
    return self.decode(self.sample_prior(key, n))


def restore(workdir: str, step: Optional[int] = None) -> TrainedModel:
  """Restores the model trained in `workdir` (its latest checkpoint by default).

  Args:
    workdir: the `--workdir` of a training run.
    step: a checkpointed step; None takes the latest.

  Returns:
    A `TrainedModel` on the default device.

  Raises:
    FileNotFoundError: no checkpoint in the workdir, or not at `step`.
  """
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints under {directory!r}.")
  manager = ocp.CheckpointManager(directory, item_names=("state", "meta"))
  try:
    steps = manager.all_steps()
    if step is None:
      if not steps:
        raise FileNotFoundError(f"no checkpoints under {directory!r}.")
      step = max(steps)
    elif step not in steps:
      raise FileNotFoundError(
          f"no checkpoint of step {step} under {directory!r}; steps: "
          f"{sorted(steps)}.")
    meta = read_meta(manager, step)
    config = config_lib.TrainConfig.from_dict(meta["config"])
    data_shape = tuple(meta["data_shape"])
    model = train_lib.build_model(config, data_shape)
    optimizer = train_lib.make_optimizer(config)
    abstract = jax.eval_shape(
        lambda: train_lib.init_state(model, optimizer,
                                     jnp.zeros((1,) + data_shape), config.seed))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                          sharding=sharding), abstract)
    target = {"train": abstract,
              "data": _data_tree({"epoch": 0, "position": 0})}
    tree = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))["state"]
  finally:
    manager.close()
  state = tree["train"]
  return TrainedModel(model=model, params=state.params,
                      batch_stats=state.batch_stats, config=config, step=step,
                      data_shape=data_shape)


__all__ = ["Checkpointer", "ConfigMismatchError", "TrainedModel", "restore"]
