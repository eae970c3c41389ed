"""Orbax checkpoints of a training run, verified on restore.

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
complete, so a save killed midway leaves no checkpoint. Restoring verifies:
unreadable metadata or arrays, or ones that differ from their checksums,
raise `CheckpointCorruptError` naming the step and why; `inference.restore`
and a resumed `loop.fit` fall back to the newest good checkpoint with a
`CheckpointWarning` (`fit` moves the bad one to `workdir/corrupt_checkpoints/`,
`Checkpointer.quarantine`). A checkpoint written before checksums were saved
restores with a `CheckpointWarning` that it cannot be verified.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from couae_jax import _checks, _digests
from couae_jax import config as config_lib
from couae_jax._digests import data_digest

if TYPE_CHECKING:
  from couae_jax.scaling import DataScaling
  from couae_jax.train import TrainState

#: The two items of every checkpoint.
ITEMS = ("state", "meta")

CHECKPOINT_DIR = "checkpoints"
#: Where `Checkpointer.quarantine` moves corrupt checkpoints, in the workdir.
CORRUPT_DIR = "corrupt_checkpoints"
#: The version of the integrity record saved in `meta` (absent: written
#: before checkpoints were verified).
INTEGRITY_FORMAT = 1

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
  """


class CheckpointCorruptError(ValueError):
  """A checkpoint cannot be read, or what it holds is not what was saved.

  Raised when a checkpoint's metadata cannot be read or do not match their
  checksum, its arrays cannot be read (a truncated or garbled file, an empty
  step directory), or a restored array differs from its saved SHA-256.

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


def short_error(error: BaseException) -> str:
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
        step, f"its metadata (meta/) cannot be read ({short_error(error)})"
    ) from error
  if not isinstance(meta, Mapping) or not isinstance(meta.get("config"),
                                                     Mapping):
    raise CheckpointCorruptError(
        step, f"its metadata (meta/) hold no config ({meta!r:.80})")
  if ("meta_sha256" in meta
      and meta["meta_sha256"] != _digests.meta_sha256(meta)):
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
      found = (integrity.get("format") if isinstance(integrity, Mapping)
               else integrity)
      raise CheckpointCorruptError(
          step, f"its integrity record is not one this version reads "
          f"(format {found!r:.40})")
    _check_structure(step, target, integrity["arrays"])
  try:
    tree = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))["state"]
  except Exception as error:  # TensorStore, orbax, JSON, OS errors alike.
    raise CheckpointCorruptError(
        step, f"its arrays (state/) cannot be read ({short_error(error)})"
    ) from error
  if integrity is None:
    _unverified_warning(step, str(manager.directory))
    return tree
  read = _digests.array_records(tree)
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


class CheckpointReader:
  """Reads and verifies the checkpoints of a workdir; never writes.

  Also a context manager (`close` on exit). `inference.restore` reads
  through it; `Checkpointer` adds saving.

  Raises:
    TypeError: `workdir` not a str or path.
    FileNotFoundError: no `workdir/checkpoints` directory.
  """

  def __init__(self, workdir: str):
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"no checkpoints under {directory!r}.")
    self.workdir = os.path.dirname(directory)
    self.manager = ocp.CheckpointManager(directory, item_names=ITEMS)

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def latest_step(self) -> Optional[int]:
    """The latest saved step, or None when there is none (not verified:
    `restore` verifies)."""
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    """Every saved step, in increasing order."""
    return sorted(self.manager.all_steps())

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

  def newest_readable_meta(self) -> tuple[Optional[int], Optional[dict]]:
    """The newest step whose metadata read and verify, with them; corrupt
    ones are skipped (`restore` reports them)."""
    for step in reversed(self.steps()):
      try:
        return step, _read_verified_meta(self.manager, step)
      except CheckpointCorruptError:
        continue
    return None, None

  def restore(self, step: int, abstract_state: TrainState
              ) -> tuple[TrainState, dict[str, int]]:
    """`(state, {'epoch', 'position'})` saved at `step`, verified.

    Checked against their checksums, shaped like `abstract_state` (a
    `TrainState` of arrays or `jax.ShapeDtypeStruct`s: shapes, dtypes,
    shardings).

    Raises FileNotFoundError (no such step), CheckpointCorruptError
    (unreadable, or differing from the checksums), ValueError (another state
    structure: another model or version). A checkpoint saved without
    checksums restores with a `CheckpointWarning`.
    """
    _checks.non_negative_int("step", step)
    meta = self.read_meta(step)
    target = {"train": abstract_state,
              "data": _data_tree({"epoch": 0, "position": 0})}
    tree = _restore_verified(self.manager, step, target, meta)
    try:
      position = {name: int(value) for name, value in tree["data"].items()}
      _check_position(position)
    except (TypeError, ValueError, KeyError) as error:
      raise CheckpointCorruptError(
          step, f"its data position is not one ({short_error(error)})"
      ) from error
    return tree["train"], position

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self.manager.close()


class Checkpointer(CheckpointReader):
  """A `CheckpointManager` for one run's workdir, with verified checkpoints.

  Saves are asynchronous: call `wait_until_finished` before reading them and
  `close` at the end (`loop.fit` waits after every save, so that a crash
  never loses more than one checkpoint interval). Steps are ints >= 0. Each
  save records the SHA-256 of every array and of its metadata; `restore`
  checks them and raises `CheckpointCorruptError` on any difference.

  Args:
    workdir: the run's directory; checkpoints go to `workdir/checkpoints`.
    config: the run's `TrainConfig` (retention: the latest `keep_checkpoints`
      plus the best by `best_metric`).
    data_shape: the shape of one example, saved with every checkpoint, as
      are `scaling` (the `scaling.DataScaling` of the training data, or
      None) and `data` (its `data_digest`, or None: `check_data`).

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
    ...   print(saver.steps(), saver.latest_step(), int(restored.step),
    ...         position)
    ...   saver.check_config(config.replace(steps=10))  # resumable: passes
    ...   try:
    ...     saver.check_config(config.replace(lam=1.0))
    ...   except checkpointing.ConfigMismatchError as e:
    ...     print(e)
    ...   saver.close()
    [2, 3] 3 2 {'epoch': 0, 'position': 2}
    the workdir holds checkpoints of another config (lam: saved 10.0, now 1.0); ...
  """

  def __init__(self, workdir: str, config: config_lib.TrainConfig,
               data_shape: Sequence[int],
               scaling: Optional[DataScaling] = None,
               data: Optional[Mapping[str, Any]] = None):
    data_shape = _checks.shape_tuple("data_shape", data_shape)
    directory = checkpoint_dir(workdir)
    self.workdir = os.path.dirname(directory)
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
        item_names=ITEMS)

  def delete(self, step: int) -> None:
    """Deletes the checkpoint of `step`."""
    self.manager.delete(step)

  def check_config(self, config: config_lib.TrainConfig,
                   step: Optional[int] = None) -> None:
    """Raises ConfigMismatchError if a checkpoint's config differs.

    Fields in `RESUMABLE_CHANGES` may differ; the saved config is read as
    `saved_config` reads it (what it was trained with). `step`: the
    checkpoint to compare with; None, the newest whose metadata can be read.
    Nothing to compare with passes.
    """
    compared = self._meta_to_compare(step)
    if compared is None:
      return
    step, meta = compared
    saved = saved_config(meta["config"], step).to_dict()
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
    newest, meta = self.newest_readable_meta()
    if newest is None or meta is None:  # both None, or neither
      return None
    return newest, meta

  def check_data(self, digest: Mapping[str, Any],
                 step: Optional[int] = None) -> None:
    """Raises DataMismatchError if the run's data are not the checkpoint's.

    `digest` is the `data_digest` of the data loaded now, `step` as in
    `check_config`. A checkpoint saved without a digest (by an older
    couae-jax) passes with a `CheckpointWarning`.
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
    source = (f"the file {config.get('data_path')!r}" if config.get("data_path")
              else f"the {config.get('data')!r} data")
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

  def save(self, step: int, state: TrainState,
           data_position: dict[str, int], metrics: dict[str, float]) -> None:
    """Saves the state, data position and metrics of `step`, asynchronously.

    `state` is a `TrainState`, `data_position` the iterator's `{'epoch',
    'position'}`, `metrics` `{name: number}` with the config's `best_metric`;
    `step` is not saved yet (a checkpoint is never written over). The SHA-256
    of every array and of the metadata are saved with them. Returns once the
    arrays are copied to the host.
    """
    tree = {"train": state, "data": _data_tree(data_position)}
    meta = dict(self._meta, integrity={
        "format": INTEGRITY_FORMAT, "algorithm": "sha256",
        "arrays": _digests.array_records(tree)})
    meta["meta_sha256"] = _digests.meta_sha256(meta)
    self.manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                meta=ocp.args.JsonSave(meta)),
        metrics={name: float(value) for name, value in metrics.items()},
        force=True)

  def quarantine(self, step: int, reason: str) -> str:
    """Moves the checkpoint of `step` out of the way, to
    `workdir/corrupt_checkpoints/<step>` (`.1`, `.2`, ... when taken), with
    `reason` in a `REASON.txt` beside it; returns where it went.

    A resumed run that falls back past a corrupt checkpoint calls this, so
    that the bad checkpoint is neither resumed from nor in the way of the
    new save of its step, and is kept for inspection. Process 0 moves it;
    every process waits for it and rereads the steps.
    """
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


def saved_config(values: dict[str, Any],
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
  # Fields its model does not read (`config.unread_fields`), refused since,
  # were ignored: it was trained with their defaults.
  return config_lib.without_unread_fields(config)


def _normalise(value: Any) -> Any:
  """JSON turns tuples into lists; compare them alike."""
  return list(value) if isinstance(value, tuple) else value


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  restored = manager.restore(
      step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  return restored["meta"]


__all__ = ["CheckpointCorruptError", "CheckpointReader", "CheckpointWarning",
           "Checkpointer", "ConfigMismatchError", "DataMismatchError",
           "data_digest", "saved_config"]
