"""The training loop: data, SPMD steps, logging, figures and checkpoints.

`fit(config, workdir)` trains any of the three models on any supported data
set, on one device, every device of a host, or several hosts
(`jax.distributed`), and resumes from the workdir's latest checkpoint when
there is one. Work lost to a crash is at most `checkpoint_every` steps; a
non-finite loss stops the run before anything is saved, naming the step and
the term.
"""

from __future__ import annotations

import json
import os
import time
import jax
import numpy as np

from couae_jax import checkpointing
from couae_jax import config as config_lib
from couae_jax import data as data_lib
from couae_jax import train as train_lib

METRICS_FILE = "metrics.jsonl"


class TrainingDiverged(FloatingPointError):
  """A loss term or the parameters became NaN or infinite."""


def maybe_initialize_distributed(config: config_lib.TrainConfig) -> None:
  """Starts `jax.distributed` when the config or the environment asks for it.

  `COUAE_DISTRIBUTED=1` asks for it too. The coordinator, process count and
  process id come from `COUAE_COORDINATOR_ADDRESS`, `COUAE_NUM_PROCESSES` and
  `COUAE_PROCESS_ID` when set, else from JAX's cluster auto-detection (SLURM,
  Cloud TPU, ...). On CPU the collectives run over gloo.
  """
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
  """The training examples `[N, *data_shape]` (float32) the config names."""
  if config.data == "grid":
    points, _ = data_lib.grid_training_set(
        config.seed, per_mode=config.grid_train_size // 25)
    return points
  if config.data == "digits":
    return data_lib.load_digits()[0]
  if config.data == "npz":
    return np.asarray(data_lib.load_npz(config.data_path), np.float32)
  if config.data == "mnist":
    return data_lib.load_mnist(config.data_path)[0]
  return data_lib.load_celeba(config.data_path)


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
    ValueError: a bad config, or a workdir holding another config's run,
      before anything is compiled.
    TrainingDiverged: a non-finite loss term or parameters; the last good
      checkpoint is kept.
  """
  maybe_initialize_distributed(config)
  mesh = train_lib.make_mesh()
  config_lib.validate(config, devices=mesh.size,
                      processes=jax.process_count())
  os.makedirs(workdir, exist_ok=True)
  dataset = load_dataset(config)
  data_shape = dataset.shape[1:]
  checkpointer = checkpointing.Checkpointer(workdir, config, data_shape)
  checkpointer.check_config(config)

  model = train_lib.build_model(config, data_shape,
                                axis_name=train_lib.DATA_AXIS)
  optimizer = train_lib.make_optimizer(config)
  iterator = data_lib.BatchIterator(
      dataset, min(config.batch_size, len(dataset)), config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  replicated = train_lib.replicated(mesh)
  init = jax.jit(
      lambda: train_lib.init_state(model, optimizer, dataset[:1], config.seed),
      out_shardings=replicated)

  start = checkpointer.latest_step() or 0
  if start:
    abstract = jax.eval_shape(init)
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                          sharding=replicated), abstract)
    state, position = checkpointer.restore(start, abstract)
    iterator.restore(position)
  else:
    state = init()

  step_fn = train_lib.make_parallel_step(
      mesh, model=model, regularizer=train_lib.make_regularizer(config),
      optimizer=optimizer, lam=config.lam)
  lead = jax.process_index() == 0
  log = MetricsLog(os.path.join(workdir, METRICS_FILE), start, lead)
  bar = _progress(config.steps, start, progress and lead)
  last_time, last_step = time.perf_counter(), start
  try:
    for step in range(start + 1, config.steps + 1):
      batch = data_lib.shard_batch(next(iterator), mesh,
                                   axis=train_lib.DATA_AXIS)
      state, metrics = step_fn(state, batch)
      metrics = {name: float(value)
                 for name, value in jax.device_get(metrics).items()}
      bad = train_lib.first_non_finite(metrics)
      if bad is not None:
        raise TrainingDiverged(
            f"step {step}: {bad} = {metrics[bad]} (loss {metrics['loss']}, "
            f"rec {metrics['rec']}, reg {metrics['reg']}); stopped without "
            f"saving, the last good checkpoint is step "
            f"{checkpointer.latest_step()}. Lower learning_rate or lam, or "
            "raise eps.")
      if step % config.log_every == 0 or step == config.steps:
        now = time.perf_counter()
        metrics["steps_per_s"] = (step - last_step) / (now - last_time)
        last_time, last_step = now, step
        log.write(step, metrics)
        if bar is not None:
          bar.set_postfix(loss=f"{metrics['loss']:.4g}",
                          rec=f"{metrics['rec']:.4g}",
                          reg=f"{metrics['reg']:.4g}",
                          refresh=False)
      if bar is not None:
        bar.update(1)
      if step % config.checkpoint_every == 0 or step == config.steps:
        checkpointer.save(step, state, iterator.state(), metrics)
      if lead and (step == config.steps or (
          config.eval_every and step % config.eval_every == 0)):
        _save_figures(workdir, step, config, state, dataset)
  finally:
    if bar is not None:
      bar.close()
    checkpointer.wait_until_finished()
    checkpointer.close()
  return checkpointing.TrainedModel(
      model=train_lib.build_model(config, data_shape),
      params=jax.device_get(state.params),
      batch_stats=jax.device_get(state.batch_stats), config=config,
      step=int(state.step), data_shape=tuple(data_shape))


def _save_figures(workdir: str, step: int, config: config_lib.TrainConfig,
                  state, dataset: np.ndarray) -> None:
  from couae_jax import plotting  # matplotlib is needed only here.
  trained = checkpointing.TrainedModel(
      model=train_lib.build_model(config, dataset.shape[1:]),
      params=state.params, batch_stats=state.batch_stats, config=config,
      step=step, data_shape=tuple(dataset.shape[1:]))
  plotting.save_figures(os.path.join(workdir, "figures"), trained, dataset,
                        key=jax.random.key(config.seed))


__all__ = ["TrainingDiverged", "fit", "load_dataset",
           "maybe_initialize_distributed"]
