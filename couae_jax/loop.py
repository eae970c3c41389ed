"""The training loop: data, SPMD steps, logging, figures and checkpoints.

`fit(config, workdir)` trains any of the three models on any supported data
set, on one device, every device of a host, or several hosts
(`jax.distributed`), and resumes from the workdir's latest checkpoint when
there is one. `fit_seeds(config, seeds, workdir)` trains several seeds of one
configuration together, vmapped in one step; `fit` is its one-seed case. Work
lost to a crash is at most `checkpoint_every` steps; a non-finite loss stops
the run before anything is saved, naming the step and the term.
"""

from __future__ import annotations

import json
import numbers
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax import _checks
from couae_jax import checkpointing
from couae_jax import config as config_lib
from couae_jax import data as data_lib
from couae_jax import train as train_lib

METRICS_FILE = "metrics.jsonl"
#: Training examples drawn beside the samples in the figures.
_FIGURE_EXAMPLES = 2000


class TrainingDiverged(FloatingPointError):
  """A loss term or the parameters became NaN or infinite.

  Raised by `fit` and `fit_seeds` as soon as a step's metrics are not finite,
  before anything of that step is saved; the message names the step, the
  metric, the seed and the last good checkpoint. A `FloatingPointError`.

  Example:
    >>> import tempfile
    >>> from couae_jax import config as config_lib, loop
    >>> config = config_lib.TrainConfig(steps=3, hidden=(8,), batch_size=50,
    ...                                 grid_train_size=50,
    ...                                 learning_rate=1e30)
    >>> with tempfile.TemporaryDirectory() as workdir:
    ...   try:
    ...     loop.fit(config, workdir, progress=False)
    ...   except loop.TrainingDiverged as e:
    ...     print(str(e).split(" (")[0])
    step 1: param_norm = inf
  """


def maybe_initialize_distributed(config: config_lib.TrainConfig) -> None:
  """Starts `jax.distributed` when the config or the environment asks for it.

  `COUAE_DISTRIBUTED=1` asks for it too. The coordinator, process count and
  process id come from `COUAE_COORDINATOR_ADDRESS`, `COUAE_NUM_PROCESSES` and
  `COUAE_PROCESS_ID` when set, else from JAX's cluster auto-detection (SLURM,
  Cloud TPU, ...). On CPU the collectives run over gloo. Does nothing when
  not asked for, or when `jax.distributed` is already initialised; call it
  before anything else touches the devices.

  Args:
    config: the run's `TrainConfig` (its `distributed` field).

  Raises:
    TypeError: `config` not a `TrainConfig`.

  Example:
    >>> from couae_jax import config as config_lib, loop
    >>> loop.maybe_initialize_distributed(config_lib.TrainConfig())  # no-op
  """
  config_lib._check_config(config)
  if not (config.distributed or os.environ.get("COUAE_DISTRIBUTED") == "1"):
    return
  if jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if "COUAE_COORDINATOR_ADDRESS" in os.environ:
    kwargs = dict(
        coordinator_address=os.environ["COUAE_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["COUAE_NUM_PROCESSES"]),
        process_id=int(os.environ["COUAE_PROCESS_ID"]))
  jax.distributed.initialize(**kwargs)


def load_dataset(config: config_lib.TrainConfig) -> np.ndarray:
  """The training examples `[N, *data_shape]` (float32) the config names.

  `grid`: `config.grid_train_size` points `[N, 2]` of the Grid mixture, drawn
  from `config.seed`; `digits`: scikit-learn's 8×8 digits `[1797, 64]`;
  `npz`, `mnist`, `celeba`: read from `config.data_path`.

  Args:
    config: the run's `TrainConfig` (`data`, `data_path`, `seed`,
      `grid_train_size`).

  Returns:
    A NumPy array `[N, *data_shape]`: float32, or uint8 pixels for `celeba`
    (a quarter of the memory; `data.as_float` converts a batch at a time).

  Raises:
    TypeError: `config` not a `TrainConfig`.
    ValueError: an unknown `config.data`, no `data_path` for a data set read
      from files, or `grid_train_size` not a positive multiple of 25.
    FileNotFoundError: `data_path` missing (from `couae_jax.data`).

  Example:
    >>> from couae_jax import config as config_lib, loop
    >>> data = loop.load_dataset(config_lib.TrainConfig(grid_train_size=50))
    >>> data.shape, data.dtype
    ((50, 2), dtype('float32'))
  """
  config_lib._check_config(config)
  if config.data not in config_lib.DATASETS:
    raise ValueError(f"config.data must be one of {config_lib.DATASETS}; got "
                     f"{config.data!r}.")
  if config.data in ("npz", "mnist", "celeba") and not config.data_path:
    raise ValueError(
        f"config.data={config.data!r} reads files: set config.data_path.")
  if config.data == "grid":
    size = config.grid_train_size
    if (isinstance(size, bool) or not isinstance(size, numbers.Integral)
        or size < 25 or size % 25):
      raise ValueError(
          f"config.grid_train_size must be a positive multiple of 25 (equal "
          f"points per mode); got {size!r}.")
    points, _ = data_lib.grid_training_set(
        config.seed, per_mode=config.grid_train_size // 25)
    return points
  if config.data == "digits":
    return data_lib.load_digits()[0]
  if config.data == "npz":
    return np.asarray(data_lib.load_npz(config.data_path), np.float32)
  if config.data == "mnist":
    return data_lib.load_mnist(config.data_path)[0]
  return data_lib.load_celeba(config.data_path, dtype=np.uint8)


class MetricsLog:
  """Appends metrics as JSON lines (process 0 only), keeping resumes clean.

  On resume, lines logged after the restored step (work redone after a
  crash) are dropped, so every step appears once.
  """

  def __init__(self, path: str, resume_step: int, enabled: bool):
    self._path = path
    self._enabled = enabled
    if enabled and os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f
                if line.strip() and json.loads(line)["step"] <= resume_step]
      with open(path, "w") as f:
        f.writelines(kept)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if self._enabled:
      with open(self._path, "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")


def _progress(total: int, initial: int, enabled: bool):
  if not enabled:
    return None
  try:
    from tqdm import tqdm
  except ImportError:
    return None
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def fit(config: config_lib.TrainConfig, workdir: str, *,
        progress: bool = True) -> checkpointing.TrainedModel:
  """Trains (or resumes) the run `config` in `workdir`.

  Args:
    config: the run's configuration.
    workdir: where checkpoints (`checkpoints/`), `metrics.jsonl` and figures
      go. A workdir with checkpoints resumes from the latest one.
    progress: show a progress bar on process 0.

  Returns:
    The trained model (on process 0's devices).

  Raises:
    TypeError: `config` not a `TrainConfig`, `workdir` not a path, `progress`
      not a bool.
    ValueError: a bad config, or a workdir holding another config's run
      (`checkpointing.ConfigMismatchError`), before anything is compiled.
    TrainingDiverged: a non-finite loss term or parameters; the last good
      checkpoint is kept.

  Example:
    >>> import tempfile
    >>> config = config_lib.TrainConfig(steps=4, hidden=(8,), log_every=2)
    >>> with tempfile.TemporaryDirectory() as workdir:
    ...   trained = fit(config, workdir, progress=False)
    ...   print(trained.step, sorted(os.listdir(workdir)))
    4 ['checkpoints', 'figures', 'metrics.jsonl']
  """
  config_lib._check_config(config)
  workdir = _checks.path("workdir", workdir)
  _check_progress(progress)
  return _fit([config], [workdir], progress)[0]


def fit_seeds(config: config_lib.TrainConfig, seeds: Sequence[int],
              workdir: str, *, progress: bool = True
              ) -> list[checkpointing.TrainedModel]:
  """Trains `config` once per seed, all seeds at once as one ensemble.

  Seed `s` is run `config.replace(seed=s)` in `seed_workdir(workdir, s)`, a
  workdir like any other: it resumes, and `couae_jax.restore` reads it. The
  seeds share one jitted step, vmapped over them
  (`train.make_parallel_step(..., ensemble=True)`), so a few seeds of a small
  model cost little more than one. Each seed computes what
  `fit(config.replace(seed=s), seed_workdir(workdir, s))` computes, up to
  float rounding (batching can change the order of operations).

  Args:
    config: the configuration shared by every seed (its `seed` is ignored).
    seeds: distinct non-negative seeds.
    workdir: the parent of the seeds' workdirs.
    progress: show a progress bar on process 0.

  Returns:
    The trained models, in the order of `seeds`.

  Raises:
    TypeError: as `fit`.
    ValueError: `seeds` empty, repeated or not ints >= 0; otherwise as `fit`.
    TrainingDiverged: as `fit` (the message names the seed).

  Example:
    >>> import tempfile
    >>> config = config_lib.TrainConfig(steps=4, hidden=(8,), log_every=2,
    ...                                 steps_per_call=2)
    >>> with tempfile.TemporaryDirectory() as workdir:
    ...   models = fit_seeds(config, [3, 7], workdir, progress=False)
    ...   print([m.config.seed for m in models], sorted(os.listdir(workdir)))
    [3, 7] ['seed3', 'seed7']
  """
  config_lib._check_config(config)
  workdir = _checks.path("workdir", workdir)
  _check_progress(progress)
  try:
    seeds = list(seeds) if not isinstance(seeds, (str, bytes)) else None
  except TypeError:
    seeds = None
  if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                      for s in seeds) or len(set(seeds)) != len(seeds):
    raise ValueError(
        f"seeds must be a non-empty sequence of distinct non-negative ints; "
        f"got {seeds!r}.")
  return _fit([config.replace(seed=seed) for seed in seeds],
              [seed_workdir(workdir, seed) for seed in seeds], progress)


def seed_workdir(workdir: str, seed: int) -> str:
  """The workdir `fit_seeds` gives seed `seed` under `workdir`.

  Args:
    workdir: the ensemble's parent directory (str or path).
    seed: the seed, an int >= 0.

  Returns:
    `workdir/seed<seed>`, a str.

  Raises:
    TypeError: `workdir` not a str or path.
    ValueError: `seed` not an int >= 0.

  Example:
    >>> import os
    >>> from couae_jax import loop
    >>> loop.seed_workdir("runs/grid", 3).split(os.sep)
    ['runs', 'grid', 'seed3']
    >>> loop.seed_workdir("runs/grid", -1)
    Traceback (most recent call last):
      ...
    ValueError: seed must be an integer >= 0; got -1.
  """
  workdir = _checks.path("workdir", workdir)
  _checks.non_negative_int("seed", seed)
  return os.path.join(workdir, f"seed{seed}")


def _check_progress(progress) -> None:
  if not isinstance(progress, bool):
    raise TypeError(f"progress must be a Python bool; got {progress!r}.")


class _Member:
  """One run of an ensemble: its data, data order, checkpoints and log.

  `dataset` is the data as stored (float32, or uint8 images); the networks see
  `network_input(batch)`: floats, standardised when the config asks for it.
  """

  def __init__(self, config: config_lib.TrainConfig, workdir: str,
               dataset: np.ndarray):
    os.makedirs(workdir, exist_ok=True)
    self.config, self.workdir, self.dataset = config, workdir, dataset
    self.scaling = (checkpointing.DataScaling.of(dataset)
                    if config.standardize else None)
    self.iterator = data_lib.BatchIterator(
        dataset, min(config.batch_size, len(dataset)), config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count())
    self.checkpointer = checkpointing.Checkpointer(
        workdir, config, dataset.shape[1:], self.scaling)

  def network_input(self, batch: np.ndarray) -> np.ndarray:
    batch = data_lib.as_float(batch)
    return batch if self.scaling is None else self.scaling.apply(batch)

  def trained_model(self, model, state) -> checkpointing.TrainedModel:
    return checkpointing.TrainedModel(
        model=model, params=state.params, batch_stats=state.batch_stats,
        config=self.config, step=int(state.step),
        data_shape=tuple(self.dataset.shape[1:]), scaling=self.scaling)

  def close(self) -> None:
    self.checkpointer.wait_until_finished()
    self.checkpointer.close()


def _common_start(members: Sequence[_Member]) -> int:
  """The step every member can resume from (0: start afresh).

  A crash between the members' saves can leave some of them a checkpoint
  ahead; a resumed ensemble recomputes those steps identically, so the
  checkpoints past the common step are dropped.
  """
  latest = [member.checkpointer.latest_step() for member in members]
  common = min(step or 0 for step in latest)
  for member in members:
    for step in member.checkpointer.steps():
      if step > common:
        member.checkpointer.delete(step)
    if common and common not in member.checkpointer.steps():
      raise RuntimeError(
          f"{member.workdir} has no checkpoint at step {common}, the last "
          "step every seed of the ensemble saved; resume the seeds apart "
          "with fit(), or start in a new workdir.")
  return common


def _chunk_end(step: int, config: config_lib.TrainConfig) -> int:
  """Where the call that starts after `step` ends: at the next log,
  checkpoint or evaluation step, after `steps_per_call` steps, or at the
  end."""
  periods = [config.log_every, config.checkpoint_every]
  periods += [config.eval_every] if config.eval_every else []
  next_event = min((step // period + 1) * period for period in periods)
  return min(next_event, step + config.steps_per_call, config.steps)


def _fit(configs: Sequence[config_lib.TrainConfig], workdirs: Sequence[str],
         progress: bool) -> list[checkpointing.TrainedModel]:
  """Trains the members `configs[i]` (differing only in their seed) in
  `workdirs[i]`, together."""
  config = configs[0]
  maybe_initialize_distributed(config)
  mesh = train_lib.make_mesh()
  config_lib.validate(config, devices=mesh.size,
                      processes=jax.process_count())
  # Only the Grid is drawn from the seed; a data set read from files is read
  # once and shared by every seed.
  if config.data == "grid":
    datasets = [load_dataset(member_config) for member_config in configs]
  else:
    datasets = [load_dataset(config)] * len(configs)
  data_shape = datasets[0].shape[1:]
  members: list[_Member] = []
  try:
    for member_config, workdir, dataset in zip(configs, workdirs, datasets):
      members.append(_Member(member_config, workdir, dataset))
      members[-1].checkpointer.check_config(member_config)
    return _train(members, mesh, data_shape, progress)
  finally:
    for member in members:
      member.close()


def _train(members: Sequence[_Member], mesh, data_shape,
           progress: bool) -> list[checkpointing.TrainedModel]:
  config = members[0].config
  model = train_lib.build_model(config, data_shape,
                                axis_name=train_lib.DATA_AXIS)
  inference_model = train_lib.build_model(config, data_shape)
  optimizer = train_lib.make_optimizer(config)
  replicated = train_lib.replicated(mesh)
  example = members[0].network_input(members[0].dataset[:1])

  def init_member(seed):
    return train_lib.init_state(model, optimizer, example, seed)

  member_of = jax.jit(
      lambda state, index: jax.tree.map(
          lambda leaf: jax.lax.dynamic_index_in_dim(leaf, index,
                                                    keepdims=False), state),
      out_shardings=replicated)
  start = _common_start(members)
  if start:
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                          sharding=replicated),
        jax.eval_shape(init_member, 0))
    states = []
    for member in members:
      member_state, position = member.checkpointer.restore(start, abstract)
      member.iterator.restore(position)
      states.append(member_state)
    state = jax.jit(lambda states: jax.tree.map(
        lambda *leaves: jnp.stack(leaves), *states),
                    out_shardings=replicated)(states)
  else:
    seeds = np.array([member.config.seed for member in members], np.int32)
    state = jax.jit(jax.vmap(init_member), out_shardings=replicated)(seeds)

  step_fn = train_lib.make_parallel_step(
      mesh, model=model, regularizer=train_lib.make_regularizer(config),
      optimizer=optimizer, lam=config.lam, ensemble=True)
  lead = jax.process_index() == 0
  logs = [MetricsLog(os.path.join(member.workdir, METRICS_FILE), start, lead)
          for member in members]
  bar = _progress(config.steps, start, progress and lead)
  step, last_time, last_step = start, time.perf_counter(), start
  try:
    while step < config.steps:
      stop = _chunk_end(step, config)
      local = np.stack([np.stack([member.network_input(next(member.iterator))
                                  for _ in range(stop - step)])
                        for member in members], axis=1)
      batches = data_lib.shard_batch(local, mesh, axis=train_lib.DATA_AXIS,
                                     batch_dim=2)
      state, metrics = step_fn(state, batches)
      metrics = {name: np.asarray(value)
                 for name, value in jax.device_get(metrics).items()}
      _raise_if_diverged(metrics, step, members)
      if bar is not None:
        bar.update(stop - step)
      step = stop
      last = [{name: float(value[-1, index])
               for name, value in metrics.items()}
              for index in range(len(members))]
      if step % config.log_every == 0 or step == config.steps:
        now = time.perf_counter()
        rate = (step - last_step) / (now - last_time)
        last_time, last_step = now, step
        for log, member_metrics in zip(logs, last):
          log.write(step, member_metrics | {"steps_per_s": rate})
        if bar is not None:
          bar.set_postfix(loss=f"{last[0]['loss']:.4g}",
                          rec=f"{last[0]['rec']:.4g}",
                          reg=f"{last[0]['reg']:.4g}", refresh=False)
      save = step % config.checkpoint_every == 0 or step == config.steps
      figures = lead and (step == config.steps or (
          config.eval_every and step % config.eval_every == 0))
      for index, member in enumerate(members):
        if save or figures:
          member_state = member_of(state, index)
        if save:
          member.checkpointer.save(step, member_state,
                                   member.iterator.state(), last[index])
        if figures:
          _save_figures(member, member.trained_model(inference_model,
                                                     member_state))
  finally:
    if bar is not None:
      bar.close()
  return [member.trained_model(inference_model,
                               jax.device_get(member_of(state, index)))
          for index, member in enumerate(members)]


def _raise_if_diverged(metrics: dict[str, np.ndarray], start: int,
                       members: Sequence[_Member]) -> None:
  """Raises TrainingDiverged naming the first non-finite step and metric."""
  bad = train_lib.first_non_finite(metrics)
  if bad is None:
    return
  offset, index = np.argwhere(~np.isfinite(metrics[bad]))[0]
  values = {name: float(value[offset, index])
            for name, value in metrics.items()}
  member = members[index]
  raise TrainingDiverged(
      f"step {start + offset + 1}: {bad} = {values[bad]} (seed "
      f"{member.config.seed}; loss {values['loss']}, rec {values['rec']}, "
      f"reg {values['reg']}); stopped without saving, the last good "
      f"checkpoint is step {member.checkpointer.latest_step()}. Lower "
      "learning_rate or lam, or raise eps.")


def _save_figures(member: _Member,
                  trained: checkpointing.TrainedModel) -> None:
  from couae_jax import plotting  # matplotlib is needed only here.
  plotting.save_figures(os.path.join(member.workdir, "figures"), trained,
                        data_lib.as_float(member.dataset[:_FIGURE_EXAMPLES]),
                        key=jax.random.key(member.config.seed))


__all__ = ["TrainingDiverged", "fit", "fit_seeds", "load_dataset",
           "maybe_initialize_distributed", "seed_workdir"]
