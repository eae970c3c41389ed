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
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from couae_jax import _checks
from couae_jax import config as config_lib
from couae_jax import data as data_lib
from couae_jax import models
from couae_jax import train as train_lib

CHECKPOINT_DIR = "checkpoints"
#: Examples per chunk when `DataScaling.of` reads a data set.
_STATS_CHUNK = 4096

#: Fields a resumed run may change: they do not alter what is computed.
RESUMABLE_CHANGES = frozenset({
    "steps", "log_every", "eval_every", "checkpoint_every",
    "keep_checkpoints", "distributed", "steps_per_call",
})


class ConfigMismatchError(ValueError):
  """The workdir holds checkpoints of another configuration.

  Raised by `Checkpointer.check_config` (and so by `loop.fit` before anything
  is compiled) when a field outside `RESUMABLE_CHANGES` differs from the
  latest checkpoint's. A `ValueError`, so `except ValueError` catches it.

  Example:
    >>> import tempfile, numpy as np
    >>> from couae_jax import checkpointing, config as config_lib, train
    >>> config = config_lib.TrainConfig(hidden=(8,))
    >>> state = train.init_state(train.build_model(config, (2,)),
    ...                          train.make_optimizer(config),
    ...                          np.zeros((1, 2), np.float32), seed=0)
    >>> with tempfile.TemporaryDirectory() as workdir:
    ...   saver = checkpointing.Checkpointer(workdir, config, (2,))
    ...   saver.save(1, state, {"epoch": 0, "position": 1}, {"loss": 1.0})
    ...   saver.wait_until_finished()
    ...   saver.check_config(config.replace(steps=10))  # resumable: passes
    ...   try:
    ...     saver.check_config(config.replace(lam=1.0))
    ...   except checkpointing.ConfigMismatchError as e:
    ...     print(e)
    ...   finally:
    ...     saver.close()
    the workdir holds checkpoints of another config (lam: saved 10.0, now 1.0); ...
  """


def checkpoint_dir(workdir: str) -> str:
  """`workdir/checkpoints`, absolute."""
  workdir = _checks.path("workdir", workdir)
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


class Checkpointer:
  """A `CheckpointManager` for one run's workdir.

  Saves are asynchronous: call `wait_until_finished` before reading them and
  `close` at the end. Steps are ints >= 0.

  Args:
    workdir: the run's directory (str or path); checkpoints go to
      `workdir/checkpoints`, created if missing.
    config: the run's `TrainConfig` (decides retention: the latest
      `keep_checkpoints` plus the best by `best_metric`).
    data_shape: the shape of one example, a tuple of positive ints, saved
      with every checkpoint.
    scaling: the `DataScaling` the model was trained under, or None
      (default), saved with every checkpoint so the restored model works in
      the data's units.

  Raises:
    TypeError: `workdir` not a path, `config` not a `TrainConfig`, `scaling`
      not a `DataScaling`; in the methods, arguments of the wrong type.
    ValueError: a bad `data_shape`; in the methods, a negative step, or
      metrics without `config.best_metric`.

  Example:
    >>> import tempfile, jax, numpy as np
    >>> from couae_jax import checkpointing, config as config_lib, train
    >>> config = config_lib.TrainConfig(hidden=(8,), keep_checkpoints=1)
    >>> state = train.init_state(train.build_model(config, (2,)),
    ...                          train.make_optimizer(config),
    ...                          np.zeros((1, 2), np.float32), seed=0)
    >>> with tempfile.TemporaryDirectory() as workdir:
    ...   saver = checkpointing.Checkpointer(workdir, config, (2,))
    ...   for step, loss in [(1, 2.0), (2, 1.0), (3, 3.0)]:
    ...     saver.save(step, state.replace(step=np.int32(step)),
    ...                {"epoch": 0, "position": step}, {"loss": loss})
    ...   saver.wait_until_finished()
    ...   restored, position = saver.restore(2, jax.eval_shape(lambda: state))
    ...   print(saver.steps(), saver.latest_step(), int(restored.step), position)
    ...   saver.close()
    [2, 3] 3 2 {'epoch': 0, 'position': 2}
  """

  def __init__(self, workdir: str, config: config_lib.TrainConfig,
               data_shape: Sequence[int],
               scaling: Optional[DataScaling] = None):
    config_lib._check_config(config)
    data_shape = _checks.shape_tuple("data_shape", data_shape)
    if scaling is not None:
      _checks.instance("scaling", scaling, DataScaling,
                       "None or a DataScaling")
    directory = checkpoint_dir(workdir)
    self._best_metric = config.best_metric
    self._meta = {"config": config.to_dict(),
                  "data_shape": [int(d) for d in data_shape]}
    if scaling is not None:
      self._meta["data_scaling"] = scaling.to_dict()
    best = config.best_metric
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=config.keep_checkpoints),
        # Sorted from worst to best (lower is better): keep the last one.
        checkpoint_managers.BestN(get_metric_fn=lambda m: m[best],
                                  reverse=True, n=1),
    ])
    self.manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=True,
            create=True),
        item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    """The latest saved step, or None when there is none."""
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    """Every saved step, in increasing order."""
    return sorted(self.manager.all_steps())

  def delete(self, step: int) -> None:
    """Deletes the checkpoint of `step` (an int >= 0)."""
    _checks.non_negative_int("step", step)
    self.manager.delete(step)

  def check_config(self, config: config_lib.TrainConfig) -> None:
    """Raises ConfigMismatchError if the latest checkpoint's config differs.

    Fields in `RESUMABLE_CHANGES` may differ. A field the checkpoint does
    not hold (one added to `TrainConfig` after it was written) counts as
    saved with the value it was trained with (`_saved_config`), the value
    `restore` gives it. `config` must be a `TrainConfig` (TypeError).
    """
    config_lib._check_config(config)
    step = self.latest_step()
    if step is None:
      return
    saved = _saved_config(read_meta(self.manager, step)["config"]).to_dict()
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
    """Saves asynchronously; returns once the arrays are copied to the host.

    Args:
      step: the step, an int >= 0 (an existing step is overwritten).
      state: the `TrainState`.
      data_position: the data iterator's `{'epoch': int, 'position': int}`.
      metrics: `{name: number}`, holding the config's `best_metric`.
    """
    _checks.non_negative_int("step", step)
    _checks.instance("state", state, train_lib.TrainState, "a TrainState")
    _check_position(data_position)
    if not isinstance(metrics, Mapping):
      raise TypeError(f"metrics must be a mapping {{name: number}}; got "
                      f"{type(metrics).__name__}.")
    if self._best_metric not in metrics:
      raise ValueError(
          f"metrics must hold the config's best_metric "
          f"{self._best_metric!r}; got {sorted(metrics)}.")
    for name, value in metrics.items():
      if isinstance(value, (str, bytes)) or np.size(value) != 1:
        raise TypeError(f"metrics[{name!r}] must be a number; got "
                        f"{value!r:.80}.")
    tree = {"train": state, "data": _data_tree(data_position)}
    self.manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                meta=ocp.args.JsonSave(self._meta)),
        metrics={name: float(value) for name, value in metrics.items()},
        force=True)

  def restore(self, step: int, abstract_state: train_lib.TrainState
              ) -> tuple[train_lib.TrainState, dict[str, int]]:
    """The state and data position saved at `step`, shaped like the target.

    Args:
      step: a saved step, an int >= 0.
      abstract_state: a `TrainState` of arrays or `jax.ShapeDtypeStruct`s
        (e.g. `jax.eval_shape` of `init_state`), whose shapes, dtypes and
        shardings the restored state takes.

    Returns:
      `(state, {'epoch': int, 'position': int})`.

    Raises:
      FileNotFoundError: no checkpoint of `step`.
    """
    _checks.non_negative_int("step", step)
    _checks.instance("abstract_state", abstract_state, train_lib.TrainState,
                     "a TrainState (e.g. jax.eval_shape of init_state)")
    if step not in self.manager.all_steps():
      raise FileNotFoundError(
          f"no checkpoint of step {step}; steps: {self.steps()}.")
    target = {"train": abstract_state,
              "data": _data_tree({"epoch": 0, "position": 0})}
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    tree = restored["state"]
    return tree["train"], {name: int(value)
                           for name, value in tree["data"].items()}

  def wait_until_finished(self) -> None:
    """Blocks until every pending save is written."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self.manager.close()


def _check_position(position) -> None:
  if not isinstance(position, Mapping) or set(position) != {
      "epoch", "position"} or any(
          isinstance(v, bool) or not isinstance(v, numbers.Integral)
          for v in position.values()):
    raise ValueError(
        f"data_position must be {{'epoch': int, 'position': int}} "
        f"(BatchIterator.state()); got {position!r:.80}.")


def _data_tree(position: dict[str, int]) -> dict[str, np.ndarray]:
  return {name: np.asarray(value, np.int64) for name, value in position.items()}


def _saved_config(values: dict[str, Any]) -> config_lib.TrainConfig:
  """The config a checkpoint's metadata `values` was trained with.

  A field it lacks (added to `TrainConfig` after it was written) takes its
  default, except where the default would change what was trained: before
  `coulomb_kernel` existed, CouAE used the paper's kernel, which differs from
  today's default only for h > 3.
  """
  config = config_lib.TrainConfig.from_dict(values)
  if ("coulomb_kernel" not in values and config.model == "couae"
      and config.latent_dim > 3):
    config = config.replace(coulomb_kernel="coulomb")
  return config


def _normalise(value: Any) -> Any:
  """JSON turns tuples into lists; compare them alike."""
  return list(value) if isinstance(value, tuple) else value


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  restored = manager.restore(
      step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  return restored["meta"]


@dataclasses.dataclass(frozen=True)
class DataScaling:
  """The standardisation `(x - mean) / scale` of training data.

  The data are taken as the networks see them (`data.as_float`: uint8 pixels
  in [0, 1]).

  Made by `DataScaling.of(data)`; `apply` maps data units to the standardised
  units the networks work in, `invert` maps back. Saved in checkpoints as
  `to_dict`.

  Attributes:
    mean: `[*data_shape]`, the per-feature mean of the training data.
    scale: the standard deviation of all its features together (one number,
      so the data's geometry is kept: distances shrink uniformly), finite and
      > 0.

  Raises:
    TypeError: `mean` not numeric.
    ValueError: `scale` not finite and > 0; in `apply` and `invert`, an `x`
      not of shape `[B, *mean.shape]`.

  Example:
    >>> import numpy as np
    >>> from couae_jax import checkpointing
    >>> data = np.array([[0.0, 2.0], [2.0, 6.0], [4.0, 4.0]], np.float32)
    >>> scaling = checkpointing.DataScaling.of(data)
    >>> z = scaling.apply(data)
    >>> z.shape, np.allclose(z.mean(0), 0), np.allclose(scaling.invert(z), data)
    ((3, 2), True, True)
  """
  mean: np.ndarray
  scale: float

  def __post_init__(self):
    dtype = getattr(self.mean, "dtype", None)
    if dtype is None or not np.issubdtype(dtype, np.number):
      raise TypeError(f"mean must be a numeric array [*data_shape]; got "
                      f"{self.mean!r:.80}.")
    if (isinstance(self.scale, bool) or not isinstance(self.scale, numbers.Real)
        or not math.isfinite(self.scale) or self.scale <= 0):
      raise ValueError(f"scale must be a finite number > 0; got "
                       f"{self.scale!r}.")

  def _check_x(self, x):
    shape = getattr(x, "shape", None)
    if shape is None:
      x = np.asarray(x)
      shape = x.shape
    if tuple(shape[1:]) != tuple(self.mean.shape):
      dims = ", ".join(str(d) for d in self.mean.shape)
      raise ValueError(
          f"x must have shape [B, {dims}] (a batch of examples); got shape "
          f"{tuple(shape)}.")
    return x

  @classmethod
  def of(cls, data: np.ndarray) -> "DataScaling":
    """The standardisation of `data: [N, *data_shape]`.

    Example:
      >>> s = DataScaling.of(np.array([[0.0, 2.0], [2.0, 6.0]], np.float32))
      >>> s.mean.tolist(), s.scale
      ([1.0, 4.0], 1.5811388300841898)
    """
    data = np.asarray(data)
    if data.ndim < 2 or len(data) < 2:
      raise ValueError(
          f"data must be [N, *data_shape] with N >= 2; got shape "
          f"{data.shape}.")
    # Two passes over chunks, in float64: large image sets (uint8, read
    # through `data.as_float`) never get a full-size float copy.
    chunks = range(0, len(data), _STATS_CHUNK)
    mean = sum(data_lib.as_float(data[i:i + _STATS_CHUNK]).sum(
        axis=0, dtype=np.float64) for i in chunks) / len(data)
    square = sum(np.sum((data_lib.as_float(data[i:i + _STATS_CHUNK]) - mean)
                        ** 2) for i in chunks)
    scale = float(np.sqrt(square / data.size))
    if not scale > 0:
      raise ValueError("data are constant: there is no scale to divide by.")
    return cls(mean=mean.astype(np.float32), scale=scale)

  def apply(self, x):
    """Data units to the standardised units the networks work in.

    `x: [B, *data_shape]` to `[B, *data_shape]`.
    """
    x = self._check_x(x)
    return (x - self.mean) / np.float32(self.scale)

  def invert(self, x):
    """Standardised units back to data units.

    `x: [B, *data_shape]` to `[B, *data_shape]`.
    """
    x = self._check_x(x)
    return x * np.float32(self.scale) + self.mean

  def to_dict(self) -> dict[str, Any]:
    """`{'mean': nested list, 'scale': float}`, for JSON."""
    return {"mean": self.mean.tolist(), "scale": self.scale}

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "DataScaling":
    """The inverse of `to_dict`."""
    if not isinstance(values, Mapping) or set(values) != {"mean", "scale"}:
      raise ValueError(
          f"values must be a mapping with keys 'mean' and 'scale' "
          f"(DataScaling.to_dict); got {values!r:.80}.")
    return cls(mean=np.asarray(values["mean"], np.float32),
               scale=float(values["scale"]))


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
    scaling: the standardisation of the training data (`config.standardize`),
      or None (default). `encode`, `decode`, `reconstruct` and `sample` take
      and give data in its own units either way.

  Made by `restore` and `loop.fit`; the methods run the jitted halves in
  inference mode (BatchNorm on its running averages).

  Raises:
    TypeError: at construction, `model` not an `Autoencoder`, `config` not a
      `TrainConfig` or `scaling` not a `DataScaling`; in the methods, `x` or
      `z` not floating, or `key` not one PRNG key.
    ValueError: at construction, a negative `step` or bad `data_shape`; in the
      methods, `x` not `[B, *data_shape]`, `z` not `[B, latent_dim]`, or
      `n` not a positive int.

  Example:
    >>> import jax, numpy as np
    >>> from couae_jax import checkpointing, config as config_lib, train
    >>> config = config_lib.TrainConfig(hidden=(8,))
    >>> model = train.build_model(config, (2,))
    >>> state = train.init_state(model, train.make_optimizer(config),
    ...                          np.zeros((1, 2), np.float32), seed=0)
    >>> trained = checkpointing.TrainedModel(
    ...     model=model, params=state.params, batch_stats=state.batch_stats,
    ...     config=config, step=0, data_shape=(2,))
    >>> x = np.zeros((5, 2), np.float32)
    >>> trained.encode(x).shape, trained.reconstruct(x).shape
    ((5, 3), (5, 2))
    >>> key = jax.random.key(0)
    >>> trained.sample_prior(key, 4).shape, trained.sample(key, 4).shape
    ((4, 3), (4, 2))
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
  scaling: Optional[DataScaling] = None

  def __post_init__(self):
    _checks.instance("model", self.model, models.Autoencoder,
                     "a models.Autoencoder")
    config_lib._check_config(self.config)
    _checks.non_negative_int("step", self.step)
    _checks.shape_tuple("data_shape", self.data_shape)
    if not isinstance(self.data_shape, tuple):
      raise ValueError(f"data_shape must be a tuple; got {self.data_shape!r}.")
    if self.scaling is not None:
      _checks.instance("scaling", self.scaling, DataScaling,
                       "None or a DataScaling")

  @property
  def variables(self) -> dict[str, Any]:
    """`{'params': ..., 'batch_stats': ...}`, as `models.encode` takes."""
    return {"params": self.params, "batch_stats": self.batch_stats}

  def _check_x(self, x):
    x = _checks.floating_array("x", x, min_rank=0)
    if tuple(x.shape[1:]) != self.data_shape or x.ndim < 1:
      dims = ", ".join(str(d) for d in self.data_shape)
      raise ValueError(
          f"x must have shape [B, {dims}] (a batch of the model's examples); "
          f"got shape {tuple(x.shape)}.")
    return x

  def encode(self, x: jax.Array, key: Optional[jax.Array] = None
             ) -> jax.Array:
    """Codes `[B, h]` of `x: [B, *data_shape]`.

    A Gaussian encoder (VAE, or `config.stochastic_encoder`) gives its mean,
    or with `key` a sample of q(z|x), what its regulariser saw in training;
    a deterministic encoder ignores `key`.

    Raises TypeError for a non-floating `x` or a bad key, ValueError for a
    wrong shape.
    """
    x = self._check_x(x)
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
    """Decodes codes `z: [B, h]` to `[B, *data_shape]`.

    Raises TypeError for a non-floating `z`, ValueError for a wrong shape.
    """
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
    """`[n, h]` samples of the prior the model was trained with:
    `train.make_prior(config)`, `config.prior` scaled by `config.prior_scale`.

    `key` must be one PRNG key (TypeError), `n` an int >= 1 (ValueError).
    """
    _checks.prng_key("key", key)
    _checks.positive_int("n", n)
    prior = train_lib.make_prior(self.config)
    return prior(key, (n, self.config.latent_dim))

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    """`[n, *data_shape]` generated examples: the decoder applied to prior
    samples (`sample_prior(key, n)`).

    `key` must be one PRNG key (TypeError), `n` an int >= 1 (ValueError).
    """
    return self.decode(self.sample_prior(key, n))


def restore(workdir: str, step: Optional[int] = None) -> TrainedModel:
  """Restores the model trained in `workdir` (its latest checkpoint by default).

  Args:
    workdir: the `--workdir` of a training run (str or path).
    step: a checkpointed step, an int >= 0; None (default) takes the latest.

  Returns:
    A `TrainedModel` on the default device.

  Raises:
    TypeError: `workdir` not a str or path.
    ValueError: `step` neither None nor an int >= 0.
    FileNotFoundError: no checkpoint in the workdir, or not at `step`.

  Example:
    >>> import tempfile, jax, numpy as np
    >>> from couae_jax import checkpointing, config as config_lib, train
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
    ...   latest = checkpointing.restore(workdir)
    ...   first = checkpointing.restore(workdir, step=1)
    >>> latest.step, first.step, latest.config == config
    (2, 1, True)
    >>> latest.sample(jax.random.key(0), 3).shape
    (3, 2)
    >>> checkpointing.restore("/nonexistent", step=-1)
    Traceback (most recent call last):
      ...
    ValueError: step must be None or an integer >= 0; got -1.
  """
  if step is not None:
    if (isinstance(step, bool) or not isinstance(step, numbers.Integral)
        or step < 0):
      raise ValueError(
          f"step must be None or an integer >= 0; got {step!r}.")
    step = int(step)
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
    config = _saved_config(meta["config"])
    scaling = (DataScaling.from_dict(meta["data_scaling"])
               if "data_scaling" in meta else None)
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
                      data_shape=data_shape, scaling=scaling)


__all__ = ["Checkpointer", "ConfigMismatchError", "DataScaling",
           "TrainedModel", "restore"]
