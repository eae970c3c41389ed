"""The training loop: data, SPMD steps, logging, figures and checkpoints.

`fit(config, workdir)` trains any of the three models on any supported data
set, on one device, every device of a host, or several hosts
(`jax.distributed`), and resumes from the workdir's latest checkpoint when
there is one. `fit_seeds(config, seeds, workdir)` trains several seeds of one
configuration together, vmapped in one step; `fit` is its one-seed case.

What a run guarantees:

* Work lost to a crash (`kill -9`, a power cut) is at most `checkpoint_every`
  steps: each save is waited for before the next step is computed, so the
  steps at risk are those since the last save, plus the save's own time. A
  resumed run ends bitwise equal to an uninterrupted one.
* SIGINT (Ctrl-C) and SIGTERM stop the run at the end of the current call
  (`steps_per_call` steps), after the save being written, with
  `TrainingInterrupted`: every complete checkpoint is kept. A second signal
  ends the process at once.
* Checkpoints are verified on resume (checksums of every array and of the
  metadata): a corrupt or unreadable one is reported with a
  `checkpointing.CheckpointWarning`, moved to `workdir/corrupt_checkpoints/`,
  and the run resumes from the newest good one. A run refuses to resume
  under another config (`checkpointing.ConfigMismatchError`) or on other data
  (`checkpointing.DataMismatchError`, from a digest of the loaded data).
* One run per workdir: an advisory lock (`workdir/.lock`, released when the
  run ends, also by a crash) makes a second run fail with
  `WorkdirLockedError`.
* A non-finite loss stops the run before anything is saved, naming the step
  and the term (`TrainingDiverged`); a full disk with `DiskFull`.
"""

from __future__ import annotations

import errno
import os
import signal
import warnings
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax import _checks, checkpointing, ensemble, inference
from couae_jax import config as config_lib
from couae_jax import data as data_lib
from couae_jax import objective as objective_lib
from couae_jax import scaling as scaling_lib
from couae_jax import train as train_lib
from couae_jax.workdir import (
  LOCK_FILE,
  DiskFull,
  MetricsLog,
  StepRate,
  StopOnSignal,
  TrainingInterrupted,
  WorkdirLockedError,
  WorkdirLocks,
  is_disk_full,
)

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

  Example:
    >>> from couae_jax import config as config_lib, loop
    >>> loop.maybe_initialize_distributed(config_lib.TrainConfig())  # no-op
  """
  if not (config.distributed or os.environ.get("COUAE_DISTRIBUTED") == "1"):
    return
  if jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs: dict[str, Any] = {}
  if "COUAE_COORDINATOR_ADDRESS" in os.environ:
    kwargs = dict(
        coordinator_address=os.environ["COUAE_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["COUAE_NUM_PROCESSES"]),
        process_id=int(os.environ["COUAE_PROCESS_ID"]))
  jax.distributed.initialize(**kwargs)


def load_dataset(config: config_lib.TrainConfig) -> np.ndarray:
  """The training examples `[N, *data_shape]` the config names, checked.

  `grid`: `config.grid_train_size` points `[N, 2]` of the Grid mixture, drawn
  from `config.seed`; `digits`: scikit-learn's 8×8 digits `[1797, 8, 8, 1]`;
  `npz` (array `x`), `mnist`, `celeba`: read from `config.data_path`. The
  examples are checked (`data.check_examples`: numbers, at least two, finite,
  not all alike), and so is `config.batch_size` against their number and
  every device of every process, the trainer's mesh
  (`config.validate_data_size`).

  Returns float32, or uint8 pixels for `mnist` and `celeba` (a quarter of
  the memory; `data.as_float` converts a batch at a time, bitwise to the
  float32 images). Raises TypeError (not real numbers) or ValueError (no
  training set: one example, NaN rows, all alike; `batch_size` too large),
  naming the file, and FileNotFoundError.

  Example:
    >>> from couae_jax import config as config_lib, loop
    >>> data = loop.load_dataset(config_lib.TrainConfig(grid_train_size=50,
    ...                                                 batch_size=50))
    >>> data.shape, data.dtype
    ((50, 2), dtype('float32'))
  """
  source, checked = f"{config.data_path} (data={config.data!r})", None
  if config.data == "grid":
    examples, _ = data_lib.grid_training_set(
        config.seed, per_mode=config.grid_train_size // 25)
    source = f"data='grid' (grid_train_size={config.grid_train_size})"
  elif config.data == "digits":
    examples, source = data_lib.load_digits()[0], "data='digits'"
  elif config.data == "npz":
    source = f"{config.data_path} (array 'x')"
    # Checked before the cast too: NumPy casts complex numbers to their real
    # part and strings to numbers. float64 beyond float32's range becomes
    # inf, which the check of the cast reports.
    checked = data_lib.check_examples(data_lib.load_npz(config.data_path),
                                      source)
    with np.errstate(over="ignore"):
      examples = np.asarray(checked, np.float32)
    source = f"{source} as float32"
  elif config.data == "mnist":
    examples = data_lib.load_mnist(config.data_path, dtype=np.uint8)[0]
  elif config.data == "celeba":
    examples = data_lib.load_celeba(config.data_path, dtype=np.uint8)
  else:  # not validated: name the boundary rather than guess a loader
    raise ValueError(f"config.data={config.data!r} is not a data set; run "
                     "config.validate(config) first.")
  if examples is not checked:
    data_lib.check_examples(examples, source)
  config_lib.validate_data_size(config, len(examples),
                                devices=jax.device_count(),
                                processes=jax.process_count())
  return examples


def _progress(total: int, initial: int, enabled: bool):
  if not enabled:
    return None
  try:
    from tqdm import tqdm
  except ImportError:
    return None
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def fit(config: config_lib.TrainConfig, workdir: str, *,
        progress: bool = True) -> inference.TrainedModel:
  """Trains (or resumes) the run `config` in `workdir`.

  `workdir` gets `checkpoints/`, `metrics.jsonl` and `figures/`; one with
  checkpoints resumes from the newest good one. Returns the trained model
  (on process 0's devices).

  Raises:
    ValueError: a bad config, or a workdir holding another config's run
      (`checkpointing.ConfigMismatchError`) or a run on other data
      (`checkpointing.DataMismatchError`), before anything is compiled; a
      workdir whose checkpoints are all corrupt
      (`checkpointing.CheckpointCorruptError`).
    WorkdirLockedError, TrainingDiverged, TrainingInterrupted, DiskFull: see
      the module's docstring; every complete checkpoint is kept.

  Example:
    >>> import tempfile
    >>> config = config_lib.TrainConfig(steps=4, hidden=(8,), log_every=2)
    >>> with tempfile.TemporaryDirectory() as workdir:
    ...   trained = fit(config, workdir, progress=False)
    ...   print(trained.step, sorted(os.listdir(workdir)))
    4 ['.lock', 'checkpoints', 'figures', 'metrics.jsonl']
  """
  config_lib.check_type(config)
  workdir = _checks.path("workdir", workdir)
  _checks.python_bool("progress", progress)
  return _fit([config], [workdir], progress)[0]


def fit_seeds(config: config_lib.TrainConfig, seeds: Sequence[int],
              workdir: str, *, progress: bool = True
              ) -> list[inference.TrainedModel]:
  """Trains `config` once per seed, all seeds at once as one ensemble.

  Seed `s` is run `config.replace(seed=s)` in `seed_workdir(workdir, s)`, a
  workdir like any other: it resumes, and `couae_jax.restore` reads it. The
  seeds share one jitted step, vmapped over them
  (`train.make_parallel_step(..., ensemble=True)`), so a few seeds of a small
  model cost little more than one. Each seed computes what
  `fit(config.replace(seed=s), seed_workdir(workdir, s))` computes, up to
  float rounding (batching can change the order of operations).

  Returns the trained models in the order of `seeds` (distinct ints >= 0;
  `config.seed` is ignored); raises as `fit`, and ValueError for bad seeds.

  Example:
    >>> import tempfile
    >>> config = config_lib.TrainConfig(steps=4, hidden=(8,), log_every=2,
    ...                                 steps_per_call=2)
    >>> with tempfile.TemporaryDirectory() as workdir:
    ...   models = fit_seeds(config, [3, 7], workdir, progress=False)
    ...   print([m.config.seed for m in models], sorted(os.listdir(workdir)))
    [3, 7] ['seed3', 'seed7']
  """
  config_lib.check_type(config)
  workdir = _checks.path("workdir", workdir)
  _checks.python_bool("progress", progress)
  listed: Optional[list[int]]
  try:
    listed = list(seeds) if not isinstance(seeds, (str, bytes)) else None
  except TypeError:
    listed = None
  if not listed or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                       for s in listed) or len(set(listed)) != len(listed):
    raise ValueError(
        f"seeds must be a non-empty sequence of distinct non-negative ints; "
        f"got {listed!r}.")
  return _fit([config.replace(seed=seed) for seed in listed],
              [seed_workdir(workdir, seed) for seed in listed], progress)


def seed_workdir(workdir: str, seed: int) -> str:
  """`workdir/seed<seed>`, the workdir `fit_seeds` gives seed `seed`.

  Example:
    >>> import os
    >>> from couae_jax import loop
    >>> loop.seed_workdir("runs/grid", 3).split(os.sep)
    ['runs', 'grid', 'seed3']
  """
  workdir = _checks.path("workdir", workdir)
  _checks.non_negative_int("seed", seed)
  return os.path.join(workdir, f"seed{seed}")


class _Member:
  """One run of an ensemble: its data, data order, checkpoints and log.

  `dataset` is the data as stored (float32, or uint8 images); the networks see
  `network_input(batch)`: floats, standardised when the config asks for it.
  """

  def __init__(self, config: config_lib.TrainConfig, workdir: str,
               dataset: np.ndarray, digest: dict):
    os.makedirs(workdir, exist_ok=True)
    self.config, self.workdir, self.dataset = config, workdir, dataset
    self.digest = digest
    self.scaling = (scaling_lib.DataScaling.of(dataset)
                    if config.standardize else None)
    self.iterator = data_lib.BatchIterator(
        dataset, config.batch_size, config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count())
    self.checkpointer = checkpointing.Checkpointer(
        workdir, config, dataset.shape[1:], self.scaling, data=digest)
    # The newest checkpoint whose config and data were checked.
    self.checked_step = self.checkpointer.newest_readable_meta()[0]

  def check(self, step: Optional[int] = None) -> None:
    """Refuses another config or other data than the checkpoint's (the
    newest readable one, or `step`)."""
    self.checkpointer.check_config(self.config, step)
    self.checkpointer.check_data(self.digest, step)

  def network_input(self, batch: np.ndarray) -> np.ndarray:
    batch = data_lib.as_float(batch)
    return batch if self.scaling is None else self.scaling.apply(batch)

  def trained_model(self, model, state) -> inference.TrainedModel:
    return inference.TrainedModel(
        model=model, params=state.params, batch_stats=state.batch_stats,
        config=self.config, step=int(state.step),
        data_shape=tuple(self.dataset.shape[1:]), scaling=self.scaling)

  def close(self) -> None:
    self.checkpointer.wait_until_finished()
    self.checkpointer.close()


def _resume(members: Sequence[_Member], abstract
            ) -> tuple[int, Optional[list]]:
  """The step every member resumes from, with their restored states (0 and
  None: start afresh), each checkpoint verified.

  Newest first, a step that every member holds is restored; a member's
  corrupt checkpoint (`checkpointing.CheckpointCorruptError`) is moved aside
  (`Checkpointer.quarantine`) with a `CheckpointWarning` naming it and why,
  and the next older one is tried. With no good checkpoint left, the run
  stops with CheckpointCorruptError rather than start afresh. A crash
  between the members' saves can leave some of them a checkpoint ahead; a
  resumed ensemble recomputes those steps identically, so the checkpoints
  past the common step are dropped.
  """
  saved = [set(member.checkpointer.steps()) for member in members]
  if not all(saved):  # a member never saved: every member starts afresh.
    for member, steps in zip(members, saved, strict=True):
      for step in steps:
        member.checkpointer.delete(step)
    return 0, None
  bad: list[dict[int, str]] = [{} for _ in members]
  while True:
    good = [steps - set(corrupt)
            for steps, corrupt in zip(saved, bad, strict=True)]
    shared = set.intersection(*good)
    if not shared:
      _raise_no_common_checkpoint(members, saved, bad)
    common = max(shared)
    restored = []
    for index, member in enumerate(members):
      try:
        if member.checked_step != common:
          member.check(common)
        restored.append(member.checkpointer.restore(common, abstract))
      except checkpointing.CheckpointCorruptError as error:
        bad[index][common] = error.reason
        break
    if len(restored) == len(members):
      break
  for member, steps, corrupt in zip(members, saved, bad, strict=True):
    for step, reason in sorted(corrupt.items()):
      moved = member.checkpointer.quarantine(step, reason)
      warnings.warn(
          f"{member.workdir}: the checkpoint of step {step} is corrupt "
          f"({reason}); moved it to {moved}. Resuming from step {common}, "
          f"the newest good checkpoint"
          f"{' every seed holds' if len(members) > 1 else ''}.",
          checkpointing.CheckpointWarning, stacklevel=4)
    for step in sorted(steps - set(corrupt)):
      if step > common:
        member.checkpointer.delete(step)
  return common, restored


def _raise_no_common_checkpoint(members, saved, bad) -> None:
  for member, steps, corrupt in zip(members, saved, bad, strict=True):
    if steps and set(corrupt) == steps:
      raise checkpointing.CheckpointCorruptError(
          None, "every checkpoint is corrupt",
          f"no checkpoint in {member.workdir} can be resumed from, every one "
          "is corrupt: " + "; ".join(
              f"step {step}: {reason}" for step, reason in
              sorted(corrupt.items(), reverse=True))
          + f". Move {checkpointing.checkpoint_dir(member.workdir)} aside to "
          "train afresh, or use a new --workdir.")
  held = ", ".join(f"{member.workdir}: {sorted(steps - set(corrupt))}"
                   for member, steps, corrupt in zip(members, saved, bad,
                                                     strict=True))
  raise RuntimeError(
      f"the seeds of the ensemble hold no checkpoint at a common step (good "
      f"checkpoints: {held}); resume the seeds apart with fit(), or start in "
      "a new workdir.")


def _chunk_end(step: int, config: config_lib.TrainConfig) -> int:
  """Where the call that starts after `step` ends: at the next log,
  checkpoint or evaluation step, after `steps_per_call` steps, or at the
  end."""
  periods = [config.log_every, config.checkpoint_every]
  periods += [config.eval_every] if config.eval_every else []
  next_event = min((step // period + 1) * period for period in periods)
  return min(next_event, step + config.steps_per_call, config.steps)


def _fit(configs: Sequence[config_lib.TrainConfig], workdirs: Sequence[str],
         progress: bool) -> list[inference.TrainedModel]:
  """Trains the members `configs[i]` (differing only in their seed) in
  `workdirs[i]`, together."""
  config = configs[0]
  maybe_initialize_distributed(config)
  mesh = train_lib.make_mesh()
  for member_config in configs:  # they differ in the seed, which is checked
    config_lib.validate(member_config, devices=mesh.size,
                        processes=jax.process_count())
  try:
    with WorkdirLocks(workdirs), StopOnSignal() as stop:
      # Only the Grid is drawn from the seed; a data set read from files is
      # read once and shared by every seed.
      if config.data == "grid":
        datasets = [load_dataset(member_config) for member_config in configs]
        digests = [checkpointing.data_digest(data) for data in datasets]
      else:
        datasets = [load_dataset(config)] * len(configs)
        digests = [checkpointing.data_digest(datasets[0])] * len(configs)
      data_shape = datasets[0].shape[1:]
      members: list[_Member] = []
      try:
        for member_config, workdir, dataset, digest in zip(
            configs, workdirs, datasets, digests, strict=True):
          members.append(_Member(member_config, workdir, dataset, digest))
          members[-1].check()
        return _train(members, mesh, data_shape, progress, stop)
      finally:
        for member in members:
          member.close()
  except Exception as error:
    if not is_disk_full(error):
      raise
    # `from None`: the hundreds of lines of orbax and TensorStore frames
    # would bury the one line that says what to do.
    raise DiskFull(
        errno.ENOSPC,
        f"No space left on device while training in {workdirs[0]}"
        f"{' and the other seed workdirs' if len(workdirs) > 1 else ''} "
        f"({type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]})."
        " Every "
        "complete checkpoint is kept: free space and run the same command "
        "again to resume.") from None


def _train(members: Sequence[_Member], mesh, data_shape, progress: bool,
           stop_signal: StopOnSignal) -> list[inference.TrainedModel]:
  config = members[0].config
  runs, start = _start(members, mesh, data_shape)
  inference_model = train_lib.build_model(config, data_shape)
  lead = jax.process_index() == 0
  logs = [MetricsLog(os.path.join(member.workdir, METRICS_FILE), start, lead)
          for member in members]
  bar = _progress(config.steps, start, progress and lead)
  rate = StepRate(start)
  step = start
  stop_signal.defer()
  try:
    while step < config.steps:
      _stop_if_signalled(stop_signal, members, step)
      stop = _chunk_end(step, config)
      metrics = runs.run(_next_batches(members, stop - step))
      _raise_if_diverged(metrics, step, members)
      if bar is not None:
        bar.update(stop - step)
      step = stop
      last = [{name: float(value[-1, index])
               for name, value in metrics.items()}
              for index in range(len(members))]
      if step % config.log_every == 0 or step == config.steps:
        _log(logs, bar, step, last, rate(step))
      _save_and_plot(members, runs, step, last, inference_model, lead)
  finally:
    if bar is not None:
      bar.close()
  return [member.trained_model(inference_model,
                               jax.device_get(runs.member(index)))
          for index, member in enumerate(members)]


def _start(members: Sequence[_Member], mesh, data_shape):
  """The members' runner, at the step they resume from (0: afresh)."""
  config = members[0].config
  model = train_lib.build_model(config, data_shape,
                                axis_name=train_lib.DATA_AXIS)
  optimizer = train_lib.make_optimizer(config)
  example = jnp.asarray(members[0].network_input(members[0].dataset[:1]))

  def init_member(seed):
    return train_lib.init_state(model, optimizer, example, seed)

  abstract = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(
          leaf.shape, leaf.dtype, sharding=train_lib.replicated(mesh)),
      jax.eval_shape(init_member, 0))
  start, restored = _resume(members, abstract)
  states = None
  if restored is not None:  # `start` > 0: resumed
    states = []
    for member, (member_state, position) in zip(members, restored,
                                                strict=True):
      member.iterator.restore(position)
      states.append(member_state)
  runs = ensemble.runner(config, model)(
      mesh, init_member, states, [member.config.seed for member in members],
      dict(model=model, objective=objective_lib.make_objective(config),
           optimizer=optimizer))
  return runs, start


def _stop_if_signalled(stop_signal: StopOnSignal,
                       members: Sequence[_Member], step: int) -> None:
  signum = stop_signal.requested()
  if signum is None:
    return
  latest = [member.checkpointer.latest_step() for member in members]
  raise TrainingInterrupted(
      f"stopped by {signal.Signals(signum).name} after step {step}; "
      f"the latest checkpoint is step {min(s or 0 for s in latest)}"
      f"{' of every seed' if len(members) > 1 else ''}, every complete "
      "checkpoint is kept. Run the same command again to resume.",
      signum, step)


def _next_batches(members: Sequence[_Member], steps: int) -> np.ndarray:
  """The next `steps` batches of every member, `[steps, S, b, ...]`."""
  return np.stack([np.stack([member.network_input(next(member.iterator))
                             for _ in range(steps)])
                   for member in members], axis=1)


def _log(logs, bar, step: int, last: list[dict[str, float]],
         rate: float) -> None:
  for log, member_metrics in zip(logs, last, strict=True):
    log.write(step, member_metrics | {"steps_per_s": rate})
  if bar is not None:
    bar.set_postfix(loss=f"{last[0]['loss']:.4g}", rec=f"{last[0]['rec']:.4g}",
                    reg=f"{last[0]['reg']:.4g}", refresh=False)


def _save_and_plot(members: Sequence[_Member], runs, step: int,
                   last: list[dict[str, float]], inference_model,
                   lead: bool) -> None:
  """Saves at checkpoint steps, draws the figures at evaluation steps."""
  config = members[0].config
  save = step % config.checkpoint_every == 0 or step == config.steps
  figures = lead and (step == config.steps or bool(
      config.eval_every and step % config.eval_every == 0))
  if not (save or figures):
    return
  for index, member in enumerate(members):
    member_state = runs.member(index)
    if save:
      member.checkpointer.save(step, member_state, member.iterator.state(),
                               last[index])
    if figures:
      _save_figures(member, member.trained_model(inference_model,
                                                 member_state))
  if save:
    # The next steps are at risk only once this save is complete: a crash
    # then loses at most one checkpoint interval.
    for member in members:
      member.checkpointer.wait_until_finished()


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
                  trained: inference.TrainedModel) -> None:
  from couae_jax import plotting  # matplotlib is needed only here.
  plotting.save_figures(os.path.join(member.workdir, "figures"), trained,
                        data_lib.as_float(member.dataset[:_FIGURE_EXAMPLES]),
                        key=jax.random.key(member.config.seed))


__all__ = ["LOCK_FILE", "METRICS_FILE", "DiskFull", "MetricsLog",
           "TrainingDiverged", "TrainingInterrupted", "WorkdirLockedError",
           "fit", "fit_seeds", "load_dataset", "maybe_initialize_distributed",
           "seed_workdir"]
