"""Orbax checkpoints of a training run, verified on restore; restoring a model.

A checkpoint holds two items:

* `state`: the `TrainState` (parameters, BatchNorm statistics, optimizer
  state, step, base key) and the data iterator's position, restored against
  an abstract target so shapes, dtypes and shardings are checked;
* `meta`: JSON with the `TrainConfig`, the data shape, a digest of the
  training data (`data_digest`), the SHA-256 of every array of `state` and
  the SHA-256 of `meta` itself, so that a restored model can be rebuilt
  without the data, a workdir refuses to resume under a different
  configuration or on other data, and a corrupt checkpoint is detected.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a save killed midway leaves nothing that `latest_step` or
`restore` would take for a checkpoint. The manager keeps the latest
`keep_checkpoints` checkpoints plus the best by `best_metric`.

Restoring verifies: metadata that cannot be read or do not match their
checksum, arrays that cannot be read (truncated or garbled files, an empty
step directory) or that differ from their checksums raise
`CheckpointCorruptError` naming the step and why. `restore(workdir)` and a
resumed `loop.fit` then fall back to the newest good checkpoint with a
`CheckpointWarning` naming the bad step (`fit` moves it aside, to
`workdir/corrupt_checkpoints/`, so that it is never resumed from nor saved
over). A checkpoint written before checksums were saved restores with a
`CheckpointWarning` that its integrity cannot be verified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from couae_jax import _checks, models
from couae_jax import config as config_lib
from couae_jax import data as data_lib
from couae_jax import train as train_lib

CHECKPOINT_DIR = "checkpoints"
#: Where `Checkpointer.quarantine` moves corrupt checkpoints, in the workdir.
CORRUPT_DIR = "corrupt_checkpoints"
#: The version of the integrity record saved in `meta` (absent: written
#: before checkpoints were verified).
INTEGRITY_FORMAT = 1
#: Examples per chunk when `DataScaling.of` reads a data set.
_STATS_CHUNK = 4096

#: Fields a resumed run may change: they do not alter what is computed.
RESUMABLE_CHANGES = frozenset({
    "steps", "log_every", "eval_every", "checkpoint_every",
    "keep_checkpoints", "distributed", "steps_per_call", "ensemble",
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


class CheckpointCorruptError(ValueError):
  """A checkpoint cannot be read, or what it holds is not what was saved.

  Raised by `Checkpointer.restore`, `Checkpointer.read_meta` and `restore`
  (with an explicit `step`; without one, `restore` falls back to the newest
  good checkpoint) when a checkpoint's metadata cannot be read or do not
  match their checksum, its arrays cannot be read (a truncated or garbled
  file, an empty step directory), or a restored array differs from the
  SHA-256 saved with it. A `ValueError`.

  Attributes:
    step: the checkpoint's step (None when the error is about several).
    reason: what is wrong, in words.
  """

  def __init__(self, step: Optional[int], reason: str, message: str = ""):
    self.step, self.reason = step, reason
    super().__init__(message or f"the checkpoint of step {step} is corrupt: "
                     f"{reason}")


class DataMismatchError(ValueError):
  """A resumed run would train on other data than its checkpoints were.

  Raised by `Checkpointer.check_data` (and so by `loop.fit` before anything
  is compiled) when the digest of the loaded training data differs from the
  one saved with the checkpoint, e.g. when the file at `config.data_path` was
  replaced. A `ValueError`.
  """


class CheckpointWarning(UserWarning):
  """A checkpoint was skipped as corrupt, or cannot be verified (written
  before checksums were saved)."""


def data_digest(data: np.ndarray) -> dict[str, Any]:
  """The digest of a training set, as saved with checkpoints.

  Args:
    data: the examples `[N, *data_shape]` as loaded (`loop.load_dataset`).

  Returns:
    `{'sha256': hex str, 'shape': list of ints, 'dtype': str}`: the SHA-256
    of the array's dtype, shape and bytes (about 1 s per GB).

  Example:
    >>> import numpy as np
    >>> from couae_jax import checkpointing
    >>> a = checkpointing.data_digest(np.zeros((3, 2), np.float32))
    >>> b = checkpointing.data_digest(np.ones((3, 2), np.float32))
    >>> a["shape"], a["dtype"], a["sha256"] == b["sha256"]
    ([3, 2], 'float32', False)
  """
  data = np.asarray(data)
  return {"sha256": _sha256(data), "shape": [int(d) for d in data.shape],
          "dtype": str(data.dtype)}


def _sha256(array: np.ndarray) -> str:
  """SHA-256 of an array's dtype, shape and bytes, without a full copy."""
  digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
  if array.ndim == 0 or array.size == 0:
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
  # Row blocks of about 64 MB: a C-contiguous copy of each at most.
  rows = max(1, (64 << 20) // max(1, array[0].nbytes))
  for start in range(0, len(array), rows):
    block = np.ascontiguousarray(array[start:start + rows])
    digest.update(block.reshape(-1).view(np.uint8).data)
  return digest.hexdigest()


def _host_array(leaf) -> Optional[np.ndarray]:
  """The full value of a leaf on this host; None for an array sharded over
  several processes (whose whole value no one process holds)."""
  if isinstance(leaf, jax.Array):
    if leaf.is_fully_addressable:
      return np.asarray(jax.device_get(leaf))
    if leaf.is_fully_replicated:
      return np.asarray(leaf.addressable_data(0))
    return None
  return np.asarray(leaf)


def _array_records(tree) -> dict[str, dict[str, Any]]:
  """`{path: {'shape', 'dtype', 'sha256'}}` of every leaf of `tree`."""
  records = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    value = _host_array(leaf)
    records[jax.tree_util.keystr(path)] = {
        "shape": [int(d) for d in np.shape(leaf)],
        "dtype": str(np.dtype(leaf.dtype)),
        "sha256": None if value is None else _sha256(value)}
  return records


def _meta_sha256(meta: Mapping[str, Any]) -> str:
  """SHA-256 of the canonical JSON of `meta` without its own checksum."""
  body = {name: value for name, value in meta.items() if name != "meta_sha256"}
  return hashlib.sha256(json.dumps(body, sort_keys=True,
                                   separators=(",", ":")).encode()).hexdigest()


def _short(error: BaseException) -> str:
  """`Type: first line of the message`, at most 300 characters."""
  lines = str(error).strip().splitlines()
  text = lines[0] if lines else ""
  if len(text) > 300:
    text = text[:297] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _unverified_warning(step: int, directory: str) -> None:
  warnings.warn(
      f"the checkpoint of step {step} in {directory} has no checksums (it was "
      "written by a couae-jax that did not save them): its integrity cannot "
      "be verified. Checkpoints saved from now on are verified.",
      CheckpointWarning, stacklevel=3)


def _read_verified_meta(manager: ocp.CheckpointManager, step: int
                        ) -> dict[str, Any]:
  """The `meta` of `step`, checked against its checksum when it has one.

  Raises CheckpointCorruptError when it cannot be read, is not a mapping
  with a config, or does not match its checksum.
  """
  step_dir = os.path.join(str(manager.directory), str(step))
  if os.path.isdir(step_dir) and not os.listdir(step_dir):
    raise CheckpointCorruptError(step, f"its directory {step_dir} is empty")
  try:
    meta = read_meta(manager, step)
  except Exception as error:  # orbax, JSON, TensorStore, OS errors alike.
    raise CheckpointCorruptError(
        step, f"its metadata (meta/) cannot be read ({_short(error)})"
    ) from error
  if not isinstance(meta, Mapping) or not isinstance(meta.get("config"),
                                                     Mapping):
    raise CheckpointCorruptError(
        step, f"its metadata (meta/) hold no config ({meta!r:.80})")
  if "meta_sha256" in meta and meta["meta_sha256"] != _meta_sha256(meta):
    raise CheckpointCorruptError(
        step, "its metadata (meta/) do not match their SHA-256 (changed after "
        "they were written)")
  return dict(meta)


def _check_structure(step: int, target, arrays: Mapping[str, Any]) -> None:
  """Raises ValueError when the state this code builds (`target`) is not the
  one the checkpoint's (verified) metadata record: another model, or a
  version of couae-jax that builds it differently. Not corruption."""
  wanted = {jax.tree_util.keystr(path): (
      [int(d) for d in leaf.shape], str(np.dtype(leaf.dtype)))
            for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]}
  saved = {path: (list(record["shape"]), record["dtype"])
           for path, record in arrays.items()}
  problems = [f"{path}: saved {'absent' if path not in saved else saved[path]}"
              f", now {'absent' if path not in wanted else wanted[path]}"
              for path in sorted(set(wanted) | set(saved))
              if saved.get(path) != wanted.get(path)]
  if problems:
    raise ValueError(
        f"the checkpoint of step {step} holds another state than this "
        f"config and version of couae-jax build ({len(problems)} arrays "
        f"differ, [shape, dtype]: {'; '.join(problems[:3])}"
        f"{'; ...' if len(problems) > 3 else ''}): it was written by another "
        "model or version; restore it with that version, or start a new "
        "--workdir.")


def _restore_verified(manager: ocp.CheckpointManager, step: int, target,
                      meta: Mapping[str, Any]):
  """Restores `state` of `step` against `target` and verifies its arrays
  against the checksums in `meta` (warning when it has none)."""
  integrity = meta.get("integrity")
  if integrity is not None:
    if (not isinstance(integrity, Mapping) or integrity.get("format")
        != INTEGRITY_FORMAT or not isinstance(integrity.get("arrays"),
                                              Mapping)):
      raise CheckpointCorruptError(
          step, f"its integrity record is not one this version reads "
          f"(format {integrity.get('format') if isinstance(integrity, Mapping) else integrity!r:.40})")
    _check_structure(step, target, integrity["arrays"])
  try:
    tree = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))["state"]
  except Exception as error:  # TensorStore, orbax, JSON, OS errors alike.
    raise CheckpointCorruptError(
        step, f"its arrays (state/) cannot be read ({_short(error)})"
    ) from error
  if integrity is None:
    _unverified_warning(step, str(manager.directory))
    return tree
  read = _array_records(tree)
  differing = [path for path, record in integrity["arrays"].items()
               if record["sha256"] is not None
               and read[path]["sha256"] is not None
               and read[path]["sha256"] != record["sha256"]]
  if differing:
    raise CheckpointCorruptError(
        step, f"{len(differing)} of its {len(read)} arrays differ from their "
        f"saved SHA-256 ({', '.join(differing[:3])}"
        f"{', ...' if len(differing) > 3 else ''})")
  return tree


def checkpoint_dir(workdir: str) -> str:
  """`workdir/checkpoints`, absolute."""
  workdir = _checks.path("workdir", workdir)
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


class Checkpointer:
  """A `CheckpointManager` for one run's workdir, with verified checkpoints.

  Saves are asynchronous: call `wait_until_finished` before reading them and
  `close` at the end (`loop.fit` waits after every save, so that a crash
  never loses more than one checkpoint interval). Steps are ints >= 0. Each
  save records the SHA-256 of every array and of its metadata; `restore`
  checks them and raises `CheckpointCorruptError` on any difference.

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
    data: the `data_digest` of the training data, or None (default), saved
      with every checkpoint so that `check_data` can refuse other data.

  Raises:
    TypeError: `workdir` not a path, `config` not a `TrainConfig`, `scaling`
      not a `DataScaling`, `data` not a `data_digest`; in the methods,
      arguments of the wrong type.
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
               scaling: Optional[DataScaling] = None,
               data: Optional[Mapping[str, Any]] = None):
    config_lib.check_type(config)
    data_shape = _checks.shape_tuple("data_shape", data_shape)
    if scaling is not None:
      _checks.instance("scaling", scaling, DataScaling,
                       "None or a DataScaling")
    if data is not None and (not isinstance(data, Mapping)
                             or set(data) != {"sha256", "shape", "dtype"}):
      raise TypeError(f"data must be None or a data_digest(...) "
                      f"{{'sha256', 'shape', 'dtype'}}; got {data!r:.80}.")
    directory = checkpoint_dir(workdir)
    self.workdir = os.path.dirname(directory)
    self._best_metric = config.best_metric
    self._meta = {"config": config.to_dict(),
                  "data_shape": [int(d) for d in data_shape]}
    if scaling is not None:
      self._meta["data_scaling"] = scaling.to_dict()
    if data is not None:
      self._meta["data_digest"] = dict(data)
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
    """The latest saved step, or None when there is none (not verified:
    `restore` verifies)."""
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    """Every saved step, in increasing order."""
    return sorted(self.manager.all_steps())

  def delete(self, step: int) -> None:
    """Deletes the checkpoint of `step` (an int >= 0)."""
    _checks.non_negative_int("step", step)
    self.manager.delete(step)

  def read_meta(self, step: int) -> dict[str, Any]:
    """The metadata saved at `step`: `{'config', 'data_shape', ...}`.

    Raises:
      FileNotFoundError: no checkpoint of `step`.
      CheckpointCorruptError: they cannot be read, or do not match their
        checksum.
    """
    _checks.non_negative_int("step", step)
    if step not in self.manager.all_steps():
      raise FileNotFoundError(
          f"no checkpoint of step {step}; steps: {self.steps()}.")
    return _read_verified_meta(self.manager, step)

  def _newest_readable_meta(self) -> tuple[Optional[int], Optional[dict]]:
    """The newest step whose metadata read and verify, with them; corrupt
    ones are skipped (`restore` reports them)."""
    for step in reversed(self.steps()):
      try:
        return step, _read_verified_meta(self.manager, step)
      except CheckpointCorruptError:
        continue
    return None, None

  def check_config(self, config: config_lib.TrainConfig,
                   step: Optional[int] = None) -> None:
    """Raises ConfigMismatchError if a checkpoint's config differs.

    Fields in `RESUMABLE_CHANGES` may differ. A field the checkpoint does
    not hold (one added to `TrainConfig` after it was written) counts as
    saved with the value it was trained with (`_saved_config`), the value
    `restore` gives it; a field this version does not know (a checkpoint of
    another version) is a mismatch. `config` must be a `TrainConfig`
    (TypeError). `step`: the checkpoint to compare with, an int >= 0; None
    (default) takes the newest whose metadata can be read (corrupt ones are
    skipped, and reported by `restore`). Nothing to compare with passes.
    """
    config_lib.check_type(config)
    compared = self._meta_to_compare(step)
    if compared is None:
      return
    step, meta = compared
    saved = _saved_config(meta["config"], step).to_dict()
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

  def _meta_to_compare(self, step: Optional[int]
                       ) -> Optional[tuple[int, dict[str, Any]]]:
    """`(step, meta)` of `step`, or of the newest checkpoint whose metadata
    can be read when `step` is None; None when there is none."""
    if step is not None:
      return step, self.read_meta(step)
    newest, meta = self._newest_readable_meta()
    if newest is None or meta is None:  # both None, or neither
      return None
    return newest, meta

  def check_data(self, digest: Mapping[str, Any],
                 step: Optional[int] = None) -> None:
    """Raises DataMismatchError if the run's data are not the checkpoint's.

    Args:
      digest: `data_digest` of the data the run loaded now.
      step: the checkpoint to compare with (an int >= 0), or None (default):
        the newest whose metadata can be read. Nothing to compare with
        passes; a checkpoint saved without a digest (by an older couae-jax)
        passes with a `CheckpointWarning`.
    """
    compared = self._meta_to_compare(step)
    if compared is None:
      return
    step, meta = compared
    saved = meta.get("data_digest")
    if saved is None:
      warnings.warn(
          f"the checkpoint of step {step} in {self.manager.directory} holds "
          "no digest of its training data (written by an older couae-jax): "
          "cannot check that the run resumes on the same data.",
          CheckpointWarning, stacklevel=2)
      return
    if dict(saved) == dict(digest):
      return
    config = meta["config"]
    source = (f"the file {config.get('data_path')!r}"
              if config.get("data_path") else f"the {config.get('data')!r} data")
    differs = [f"{name}: saved {saved.get(name)!r}, now {digest.get(name)!r}"
               for name in ("shape", "dtype") if saved.get(name)
               != digest.get(name)]
    differs += [f"sha256: saved {str(saved.get('sha256'))[:12]}..., now "
                f"{str(digest.get('sha256'))[:12]}..."]
    raise DataMismatchError(
        f"the workdir's checkpoints (step {step}) were trained on other data "
        f"than {source} holds now ({', '.join(differs)}): the data changed "
        "since. Put the original data back to resume, or train in a new "
        "--workdir.")

  def save(self, step: int, state: train_lib.TrainState,
           data_position: dict[str, int], metrics: dict[str, float]) -> None:
    """Saves asynchronously; returns once the arrays are copied to the host.

    The SHA-256 of every array (and of the metadata) is saved with them.

    Args:
      step: the step, an int >= 0, not saved yet (orbax's
        `StepAlreadyExistsError` otherwise: a checkpoint is never written
        over).
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
    meta = dict(self._meta, integrity={
        "format": INTEGRITY_FORMAT, "algorithm": "sha256",
        "arrays": _array_records(tree)})
    meta["meta_sha256"] = _meta_sha256(meta)
    self.manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                meta=ocp.args.JsonSave(meta)),
        metrics={name: float(value) for name, value in metrics.items()},
        force=True)

  def restore(self, step: int, abstract_state: train_lib.TrainState
              ) -> tuple[train_lib.TrainState, dict[str, int]]:
    """The state and data position saved at `step`, shaped like the target,
    verified against the checksums saved with them.

    Args:
      step: a saved step, an int >= 0.
      abstract_state: a `TrainState` of arrays or `jax.ShapeDtypeStruct`s
        (e.g. `jax.eval_shape` of `init_state`), whose shapes, dtypes and
        shardings the restored state takes.

    Returns:
      `(state, {'epoch': int, 'position': int})`.

    Raises:
      FileNotFoundError: no checkpoint of `step`.
      CheckpointCorruptError: its metadata or arrays cannot be read, or
        differ from their checksums.
      ValueError: the checkpoint holds another state structure than
        `abstract_state` (another model or version).

    A checkpoint saved without checksums (by an older couae-jax) restores
    with a `CheckpointWarning`.
    """
    _checks.non_negative_int("step", step)
    _checks.instance("abstract_state", abstract_state, train_lib.TrainState,
                     "a TrainState (e.g. jax.eval_shape of init_state)")
    meta = self.read_meta(step)
    target = {"train": abstract_state,
              "data": _data_tree({"epoch": 0, "position": 0})}
    tree = _restore_verified(self.manager, step, target, meta)
    try:
      position = {name: int(value) for name, value in tree["data"].items()}
      _check_position(position)
    except (TypeError, ValueError, KeyError) as error:
      raise CheckpointCorruptError(
          step, f"its data position is not one ({_short(error)})") from error
    return tree["train"], position

  def quarantine(self, step: int, reason: str) -> str:
    """Moves the checkpoint of `step` out of the way, to
    `workdir/corrupt_checkpoints/<step>` (`.1`, `.2`, ... when taken), with
    `reason` in a `REASON.txt` beside it; returns where it went.

    A resumed run that falls back past a corrupt checkpoint calls this, so
    that the bad checkpoint is neither resumed from nor in the way of the
    new save of its step, and is kept for inspection. Process 0 moves it;
    every process waits for it and rereads the steps.
    """
    _checks.non_negative_int("step", step)
    source = os.path.join(str(self.manager.directory), str(step))
    root = os.path.join(self.workdir, CORRUPT_DIR)
    target = os.path.join(root, str(step))
    suffix = 0
    while os.path.exists(target):
      suffix += 1
      target = os.path.join(root, f"{step}.{suffix}")
    if jax.process_index() == 0:
      os.makedirs(root, exist_ok=True)
      os.rename(source, target)
      with open(os.path.join(target, "REASON.txt"), "w") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}: {reason}\n")
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"couae_quarantine_{step}")
    self.manager.reload()
    return target

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


def _saved_config(values: dict[str, Any],
                  step: Optional[int] = None) -> config_lib.TrainConfig:
  """The config a checkpoint's metadata `values` was trained with.

  A field it lacks (added to `TrainConfig` after it was written) takes its
  default, except where the default would change what was trained: before
  `coulomb_kernel` existed, CouAE used the paper's kernel, which differs from
  today's default only for h > 3. A field this version does not know, or a
  value it cannot take, raises ConfigMismatchError naming the field (the
  checkpoint was written by another version of couae-jax).
  """
  where = "a checkpoint" if step is None else f"the checkpoint of step {step}"
  fields = {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
  unknown = sorted(set(values) - fields)
  if unknown:
    details = ", ".join(f"{name}={values[name]!r}" for name in unknown)
    raise ConfigMismatchError(
        f"{where} was trained with config fields this version of couae-jax "
        f"does not have ({details}): it was written by another version. "
        "Resume or restore it with that version, or use a new --workdir.")
  try:
    config = config_lib.TrainConfig.from_dict(values)
  except (TypeError, ValueError) as error:
    raise ConfigMismatchError(
        f"{where} holds a config this version of couae-jax cannot take "
        f"({error}): it was written by another version. Resume or restore it "
        "with that version, or use a new --workdir.") from error
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
    _checks.positive_number("scale", self.scale)

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
    config_lib.check_type(self.config)
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

  Every checkpoint is verified against the checksums saved with it. Without
  `step`, a corrupt latest checkpoint is skipped with a `CheckpointWarning`
  naming it and why, and the newest good one is restored (nothing is moved:
  restoring only reads).

  Raises:
    TypeError: `workdir` not a str or path.
    ValueError: `step` neither None nor an int >= 0.
    FileNotFoundError: no checkpoint in the workdir, or not at `step`.
    CheckpointCorruptError: the checkpoint of `step` is corrupt, or (without
      `step`) every checkpoint is.
    ConfigMismatchError: the checkpoint's config has fields this version
      does not know (written by another version).

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
    steps = sorted(manager.all_steps())
    if step is not None and step not in steps:
      raise FileNotFoundError(
          f"no checkpoint of step {step} under {directory!r}; steps: "
          f"{steps}.")
    if step is None and not steps:
      raise FileNotFoundError(f"no checkpoints under {directory!r}.")
    bad = []
    for candidate in ([step] if step is not None else reversed(steps)):
      try:
        trained = _restore_model(manager, candidate)
      except CheckpointCorruptError as error:
        if step is not None:
          raise
        bad.append(error)
        continue
      for skipped in bad:
        warnings.warn(
            f"skipped the checkpoint of step {skipped.step} in {directory}: "
            f"it is corrupt ({skipped.reason}); restored step {candidate}, the "
            "newest good one.", CheckpointWarning, stacklevel=2)
      return trained
    raise CheckpointCorruptError(
        None, "every checkpoint is corrupt",
        f"no checkpoint under {directory!r} can be restored: "
        + "; ".join(f"step {e.step}: {e.reason}" for e in bad)
        + ". Retrain in a new --workdir.")
  finally:
    manager.close()


def _restore_model(manager: ocp.CheckpointManager, step: int) -> TrainedModel:
  """The verified `TrainedModel` of `step` (CheckpointCorruptError)."""
  meta = _read_verified_meta(manager, step)
  config = _saved_config(meta["config"], step)
  # The builders below trust a validated config, as they do in `loop.fit`.
  config_lib.validate(config)
  try:
    scaling = (DataScaling.from_dict(meta["data_scaling"])
               if "data_scaling" in meta else None)
    data_shape = _checks.shape_tuple("data_shape", meta["data_shape"])
  except (KeyError, TypeError, ValueError) as error:
    raise CheckpointCorruptError(
        step, f"its metadata (meta/) are garbled ({_short(error)})") from error
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
  state = _restore_verified(manager, step, target, meta)["train"]
  return TrainedModel(model=model, params=state.params,
                      batch_stats=state.batch_stats, config=config, step=step,
                      data_shape=tuple(data_shape), scaling=scaling)


__all__ = ["CheckpointCorruptError", "CheckpointWarning", "Checkpointer",
           "ConfigMismatchError", "DataMismatchError", "DataScaling",
           "TrainedModel", "data_digest", "restore"]
