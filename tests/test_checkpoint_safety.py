"""Run safety: verified checkpoints, fallback past corrupt ones, the data
digest, waited saves, SIGINT/SIGTERM, the workdir lock, torn metrics (issue
#15, items 2, 3, 4, 5, 7, 8).

The default tests use the tiny Grid run of `tests/test_train.py`; the
`slow` ones start training processes and kill or signal them, or run the
bit-flip trial (`pytest -m slow tests/test_checkpoint_safety.py -s` prints
the trial tables).
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import TINY_TRAIN as TINY

from couae_jax import checkpointing, inference, loop
from couae_jax import config as config_lib
from couae_jax import train as train_lib

REPO = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.standard_promotion  # optax/flax promote

CONFIG = config_lib.TrainConfig(steps=20, **TINY)


def _same(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


def _steps(workdir) -> list[int]:
  directory = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _logged_steps(workdir) -> list[int]:
  text = (pathlib.Path(workdir) / loop.METRICS_FILE).read_text()
  return [json.loads(line)["step"] for line in text.splitlines()]


@pytest.fixture(scope="module")
def finished(tiny_grid_run):
  """A finished 20-step run (checkpoints 10 and 20) and its parameters: the
  session's `tiny_grid_run` (conftest), which is this CONFIG's run. Read
  only; `run_copy` is the copy a test may change."""
  workdir, trained = tiny_grid_run
  assert trained.config == CONFIG
  return workdir, jax.device_get(trained.params)


@pytest.fixture
def run_copy(finished, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished[0], workdir)
  return workdir


def _abstract(config=CONFIG):
  model = train_lib.build_model(config, (2,))
  return jax.eval_shape(lambda: train_lib.init_state(
      model, train_lib.make_optimizer(config), np.zeros((1, 2), np.float32),
      config.seed))


def _restore(workdir, step, config=CONFIG):
  checkpointer = checkpointing.Checkpointer(str(workdir), config, (2,))
  try:
    return checkpointer.restore(step, _abstract(config))
  finally:
    checkpointer.close()


def _data_files(step_dir) -> list[pathlib.Path]:
  """The files that hold a checkpoint's array data (OCDBT data files)."""
  return sorted(p for p in (pathlib.Path(step_dir) / "state").rglob("*")
                if p.is_file() and p.parent.name == "d")


def _flip(path, bit: int) -> None:
  data = bytearray(path.read_bytes())
  data[bit // 8] ^= 1 << (bit % 8)
  path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------
# Corruption of every kind; the fallback.


def _swap_arrays(step_dir):
  """Step 20's arrays replaced by step 10's: valid files, other values."""
  other = step_dir.parent / "10" / "state"
  shutil.rmtree(step_dir / "state")
  shutil.copytree(other, step_dir / "state")


def _truncate_largest(step_dir):
  largest = max(_data_files(step_dir), key=lambda p: p.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)


def _garble(relative):
  def corrupt(step_dir):
    (step_dir / relative).write_text('{"garbage')
  return corrupt


def _empty(step_dir):
  shutil.rmtree(step_dir)
  step_dir.mkdir()


def _edit_meta(step_dir):
  """A changed number in the metadata (still valid JSON)."""
  path = step_dir / "meta" / "metadata"
  meta = json.loads(path.read_text())
  meta["config"]["lam"] = 14.0
  path.write_text(json.dumps(meta))


CORRUPTIONS = {
    "arrays replaced": (_swap_arrays, "arrays differ from their saved SHA-256"),
    "data file truncated": (_truncate_largest, "arrays (state/) cannot be read"),
    "metadata garbage": (_garble("meta/metadata"),
                         "metadata (meta/) cannot be read"),
    "metadata edited": (_edit_meta, "do not match their SHA-256"),
    "array metadata garbage": (_garble("state/_METADATA"),
                               "arrays (state/) cannot be read"),
    "empty step directory": (_empty, "is empty"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_restore_detects_a_corrupt_checkpoint_and_falls_back(run_copy, kind):
  corrupt, reason = CORRUPTIONS[kind]
  corrupt(run_copy / "checkpoints" / "20")
  with pytest.raises(checkpointing.CheckpointCorruptError,
                     match=f"step 20 is corrupt: .*{re.escape(reason)}") as error:
    inference.restore(str(run_copy), step=20)
  assert error.value.step == 20
  with pytest.warns(checkpointing.CheckpointWarning,
                    match=f"skipped the checkpoint of step 20 .*{re.escape(reason)}.*"
                          "restored step 10, the newest good one"):
    assert inference.restore(str(run_copy)).step == 10
  assert _steps(run_copy) == [10, 20]  # restoring only reads


@pytest.mark.parametrize("kind", ["arrays replaced", "data file truncated",
                                  "empty step directory"])
def test_resume_falls_back_to_the_newest_good_checkpoint(run_copy, finished,
                                                         kind):
  corrupt, reason = CORRUPTIONS[kind]
  corrupt(run_copy / "checkpoints" / "20")
  with pytest.warns(checkpointing.CheckpointWarning,
                    match=f"the checkpoint of step 20 is corrupt .*{re.escape(reason)}.*"
                          "Resuming from step 10"):
    resumed = loop.fit(CONFIG, str(run_copy), progress=False)
  # The corrupt checkpoint is kept aside, never resumed from or saved over;
  # the recomputed steps are the uninterrupted run's, bitwise.
  moved = run_copy / checkpointing.CORRUPT_DIR / "20"
  assert moved.is_dir() and reason.split()[0] in (moved / "REASON.txt"
                                                  ).read_text()
  assert _steps(run_copy) == [10, 20]
  assert _same(resumed.params, finished[1])
  assert _same(inference.restore(str(run_copy)).params, finished[1])
  assert _logged_steps(run_copy) == [10, 20]


def test_every_checkpoint_corrupt_stops_instead_of_starting_afresh(run_copy):
  _truncate_largest(run_copy / "checkpoints" / "20")
  _empty(run_copy / "checkpoints" / "10")
  with pytest.raises(checkpointing.CheckpointCorruptError,
                     match="no checkpoint in .* can be resumed from.*step 20: "
                           ".*step 10: .*is empty.*Move .* aside"):
    loop.fit(CONFIG, str(run_copy), progress=False)
  assert _steps(run_copy) == [10, 20]  # nothing moved or deleted
  with pytest.raises(checkpointing.CheckpointCorruptError,
                     match="no checkpoint under .* can be restored"):
    inference.restore(str(run_copy))


def test_an_ensemble_falls_back_to_a_step_every_seed_holds(tmp_path):
  config = CONFIG.replace(steps=20)
  finished = loop.fit_seeds(config, [0, 1], str(tmp_path), progress=False)
  seed1 = pathlib.Path(loop.seed_workdir(str(tmp_path), 1))
  _truncate_largest(seed1 / "checkpoints" / "20")
  with pytest.warns(checkpointing.CheckpointWarning,
                    match="seed1: the checkpoint of step 20 is corrupt.*"
                          "Resuming from step 10.* every seed holds"):
    resumed = loop.fit_seeds(config, [0, 1], str(tmp_path), progress=False)
  for before, after in zip(finished, resumed):
    assert _same(before.params, after.params)
  assert _steps(loop.seed_workdir(str(tmp_path), 0)) == [10, 20]
  assert _steps(seed1) == [10, 20]


@pytest.mark.parametrize("seed", range(3))
def test_bit_flips_in_data_files_never_restore_other_arrays(finished,
                                                            tmp_path, seed):
  """Random single-bit flips in the array data files: each is detected
  (CheckpointCorruptError) or restores exactly what was saved."""
  rng = np.random.default_rng(seed)
  expected, _ = _restore(finished[0], 20)
  for trial in range(3):
    workdir = tmp_path / f"flip{trial}"
    shutil.copytree(finished[0], workdir)
    files = _data_files(workdir / "checkpoints" / "20")
    path = files[rng.integers(len(files))]
    _flip(path, int(rng.integers(path.stat().st_size * 8)))
    try:
      restored, _ = _restore(workdir, 20)
    except checkpointing.CheckpointCorruptError:
      continue
    assert _same(jax.device_get(restored), jax.device_get(expected)), path


# ---------------------------------------------------------------------------
# Checkpoints of older versions; config and data checks.


def _write_old_format(workdir, step, state, position, config=CONFIG):
  """A checkpoint as couae-jax wrote them before checksums (the old
  `Checkpointer.save`): no integrity record, no data digest."""
  manager = ocp.CheckpointManager(
      checkpointing.checkpoint_dir(str(workdir)),
      options=ocp.CheckpointManagerOptions(create=True),
      item_names=("state", "meta"))
  tree = {"train": state, "data": {k: np.asarray(v, np.int64)
                                   for k, v in position.items()}}
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(tree),
      meta=ocp.args.JsonSave({"config": config.to_dict(),
                              "data_shape": [2]})),
      metrics={"loss": 1.0}, force=True)
  manager.wait_until_finished()
  manager.close()


def test_an_old_checkpoint_without_checksums_restores_and_resumes(finished,
                                                                  tmp_path):
  state, position = _restore(finished[0], 10)
  _write_old_format(tmp_path, 10, jax.device_get(state), position)
  with pytest.warns(checkpointing.CheckpointWarning,
                    match="step 10 .* has no checksums.*integrity cannot be "
                          "verified"):
    restored = inference.restore(str(tmp_path))
  assert restored.step == 10 and _same(restored.params, state.params)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    resumed = loop.fit(CONFIG, str(tmp_path), progress=False)
  messages = " ".join(str(w.message) for w in caught)
  assert "integrity cannot be verified" in messages
  assert "no digest of its training data" in messages
  assert _same(resumed.params, finished[1])  # resumed bitwise
  # What it saved since is verified, with no warning.
  with warnings.catch_warnings():
    warnings.simplefilter("error", checkpointing.CheckpointWarning)
    assert inference.restore(str(tmp_path)).step == 20


def test_resume_refuses_other_data_at_the_same_path(tmp_path):
  path = tmp_path / "data.npz"
  rng = np.random.default_rng(0)
  original = rng.normal(size=(500, 2)).astype(np.float32)
  np.savez(path, x=original)
  config = config_lib.TrainConfig(
      steps=10, **TINY | dict(data="npz", data_path=str(path)))
  workdir = tmp_path / "run"
  loop.fit(config, str(workdir), progress=False)
  np.savez(path, x=original + np.float32(1.0))  # same shape, other values
  with pytest.raises(checkpointing.DataMismatchError,
                     match=r"trained on other data than the file .*data.npz.* "
                           r"\(sha256: saved [0-9a-f]{12}\.\.\., now "
                           r"[0-9a-f]{12}\.\.\.\).*Put the original data "
                           "back"):
    loop.fit(config.replace(steps=20), str(workdir), progress=False)
  np.savez(path, x=np.concatenate([original, original[:100]]))
  with pytest.raises(checkpointing.DataMismatchError,
                     match=r"shape: saved \[500, 2\], now \[600, 2\]"):
    loop.fit(config.replace(steps=20), str(workdir), progress=False)
  np.savez(path, x=original)
  assert loop.fit(config.replace(steps=20), str(workdir),
                  progress=False).step == 20


def _state(config=CONFIG):
  return train_lib.init_state(train_lib.build_model(config, (2,)),
                              train_lib.make_optimizer(config),
                              np.zeros((1, 2), np.float32), seed=0)


def test_config_mismatches_name_every_field(tmp_path):
  saver = checkpointing.Checkpointer(str(tmp_path), CONFIG, (2,))
  saver.save(1, _state(), {"epoch": 0, "position": 1}, {"loss": 1.0})
  saver.wait_until_finished()
  with pytest.raises(checkpointing.ConfigMismatchError,
                     match=r"another config \(lam: saved 10.0, now 3.0, "
                           r"latent_dim: saved 3, now 4\)"):
    saver.check_config(CONFIG.replace(lam=3.0, latent_dim=4))
  saver.close()


def test_a_checkpoint_of_another_version_names_the_fields(tmp_path):
  """A field this version lacks, or a value it cannot take."""
  for values, message in [
      ({"new_field": 7}, r"config fields this version of couae-jax does not "
                         r"have \(new_field=7\): it was written by another "
                         r"version"),
      ({"lam": "ten"}, r"cannot take \(config.lam must be of type float")]:
    workdir = tmp_path / str(len(message))
    saver = checkpointing.Checkpointer(str(workdir), CONFIG, (2,))
    saver._meta["config"].update(values)
    saver.save(1, _state(), {"epoch": 0, "position": 1}, {"loss": 1.0})
    saver.wait_until_finished()
    with pytest.raises(checkpointing.ConfigMismatchError, match=message):
      saver.check_config(CONFIG)
    saver.close()
    with pytest.raises(checkpointing.ConfigMismatchError, match=message):
      inference.restore(str(workdir))


def test_another_state_structure_is_not_taken_for_corruption(tmp_path):
  saver = checkpointing.Checkpointer(str(tmp_path), CONFIG, (2,))
  saver.save(1, _state(), {"epoch": 0, "position": 1}, {"loss": 1.0})
  saver.wait_until_finished()
  other = CONFIG.replace(hidden=(16,))
  with pytest.raises(ValueError, match="holds another state than this config "
                     "and version of couae-jax build") as error:
    saver.restore(1, _abstract(other))
  assert not isinstance(error.value, checkpointing.CheckpointCorruptError)
  saver.close()


# ---------------------------------------------------------------------------
# Saves are complete before the next steps run (item 4).


def test_no_step_runs_while_a_save_is_in_flight(tmp_path, monkeypatch):
  """The steps after a save are at risk only once it is on disk: a crash
  loses at most one checkpoint interval."""
  checkpointers = []
  real_init = checkpointing.Checkpointer.__init__

  def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    checkpointers.append(self)

  real_step = train_lib.make_parallel_step
  in_flight = []

  def make_step(*args, **kwargs):
    step = real_step(*args, **kwargs)

    def checked(state, batches):
      in_flight.append(any(c.manager.is_saving_in_progress()
                           for c in checkpointers))
      return step(state, batches)
    return checked

  monkeypatch.setattr(checkpointing.Checkpointer, "__init__", init)
  monkeypatch.setattr(train_lib, "make_parallel_step", make_step)
  loop.fit(CONFIG.replace(steps=30, checkpoint_every=5, log_every=5),
           str(tmp_path), progress=False)
  assert len(in_flight) == 30 and not any(in_flight)


# ---------------------------------------------------------------------------
# SIGINT and SIGTERM (item 5).


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_save_stops_after_it_keeping_the_checkpoint(
    tmp_path, monkeypatch, finished, signum):
  real_save = checkpointing.Checkpointer.save

  def save(self, step, *args, **kwargs):
    if step == 10:  # the signal arrives as the save starts
      os.kill(os.getpid(), signum)
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpointing.Checkpointer, "save", save)
  before = signal.getsignal(signum)
  start = time.monotonic()
  with pytest.raises(loop.TrainingInterrupted,
                     match=f"stopped by {signal.Signals(signum).name} after "
                           "step 10; the latest checkpoint is step 10") as e:
    loop.fit(CONFIG, str(tmp_path), progress=False)
  assert time.monotonic() - start < 60  # a compile and 10 steps
  assert isinstance(e.value, KeyboardInterrupt)
  assert e.value.signum == signum and e.value.step == 10
  assert signal.getsignal(signum) is before
  assert _steps(tmp_path) == [10]
  assert not [p for p in (tmp_path / "checkpoints").iterdir()
              if "tmp" in p.name]
  monkeypatch.setattr(checkpointing.Checkpointer, "save", real_save)
  assert _same(loop.fit(CONFIG, str(tmp_path), progress=False).params,
               finished[1])


def test_a_signal_before_training_stops_at_once(tmp_path, monkeypatch):
  real_load = loop.load_dataset

  def load(config):
    os.kill(os.getpid(), signal.SIGTERM)
    return real_load(config)

  monkeypatch.setattr(loop, "load_dataset", load)
  with pytest.raises(loop.TrainingInterrupted,
                     match="stopped by SIGTERM before training started"):
    loop.fit(CONFIG, str(tmp_path), progress=False)
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
  _hold_lock(tmp_path).close()  # released


# ---------------------------------------------------------------------------
# The workdir lock (item 7).


def _hold_lock(workdir):
  """Takes the workdir's lock as another run would; close() releases it."""
  os.makedirs(workdir, exist_ok=True)
  f = open(os.path.join(workdir, loop.LOCK_FILE), "a+")
  fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  return f


def test_a_second_run_on_a_workdir_is_refused(tmp_path):
  held = _hold_lock(tmp_path)
  try:
    with pytest.raises(loop.WorkdirLockedError,
                       match=f"the workdir {tmp_path} is in use by another "
                             "run .*use another --workdir"):
      loop.fit(CONFIG, str(tmp_path), progress=False)
  finally:
    held.close()
  assert not (tmp_path / "checkpoints").exists()  # refused before anything


def test_the_lock_names_its_holder_and_goes_with_its_process(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import fcntl, os, sys, time\n"
       f"f = open({str(tmp_path / loop.LOCK_FILE)!r}, 'a+')\n"
       "fcntl.flock(f, fcntl.LOCK_EX)\n"
       "f.write(f'pid {os.getpid()} on test'); f.flush()\n"
       "print('locked', flush=True); time.sleep(600)\n"],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline() == "locked\n"
    with pytest.raises(loop.WorkdirLockedError,
                       match=f"in use by another run \\(pid {holder.pid} on "
                             "test"):
      loop.fit(CONFIG, str(tmp_path), progress=False)
  finally:
    holder.kill()  # SIGKILL: a crash, with no clean-up
    holder.wait()
  _hold_lock(tmp_path).close()  # the crash released it


def test_fit_seeds_locks_every_seed_workdir_and_releases_them(tmp_path):
  held = _hold_lock(loop.seed_workdir(str(tmp_path), 1))
  try:
    with pytest.raises(loop.WorkdirLockedError, match="seed1 is in use"):
      loop.fit_seeds(CONFIG, [0, 1], str(tmp_path), progress=False)
  finally:
    held.close()
  _hold_lock(loop.seed_workdir(str(tmp_path), 0)).close()


def test_the_lock_is_released_when_fit_fails(run_copy):
  with pytest.raises(checkpointing.ConfigMismatchError):
    loop.fit(CONFIG.replace(lam=1.0), str(run_copy), progress=False)
  _hold_lock(run_copy).close()


# ---------------------------------------------------------------------------
# metrics.jsonl (item 8).


def test_a_torn_last_metrics_line_is_dropped_on_resume(run_copy, finished):
  (run_copy / "checkpoints" / "20").rename(run_copy / "20.moved")
  with open(run_copy / loop.METRICS_FILE, "a") as f:
    f.write('{"step": 30, "loss": 0.1')  # a kill mid-write
  with pytest.warns(UserWarning, match="dropped its last line, which is "
                    "torn"):
    resumed = loop.fit(CONFIG, str(run_copy), progress=False)
  # The log ends at the restored step, then goes on: each step once.
  assert _logged_steps(run_copy) == [10, 20]
  assert _same(resumed.params, finished[1])


def test_metrics_log_keeps_whole_lines_up_to_the_restored_step(tmp_path):
  path = tmp_path / loop.METRICS_FILE
  path.write_text('{"step": 5}\n{"step": 10}\n\n{"step": 15}')
  loop.MetricsLog(str(path), 10, enabled=True).write(15, {"loss": 1.0})
  assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [
      5, 10, 15]
  path.write_text('{"step": 5}\n{"step": 10}')  # no final newline
  loop.MetricsLog(str(path), 10, enabled=True).write(15, {"loss": 1.0})
  assert path.read_text().splitlines()[1:] == [
      '{"step": 10}', '{"step": 15, "loss": 1.0}']
  path.write_text('{"step": 5}\n{"ste\n{"step": 10}\n')
  with pytest.raises(ValueError, match="metrics.jsonl line 2 is not a "
                     "metrics record"):
    loop.MetricsLog(str(path), 10, enabled=True)


# ---------------------------------------------------------------------------
# Processes: kills, signals, and the bit-flip trial (slow).


def _env() -> dict:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return env


def _cli(workdir, config: dict, **popen) -> subprocess.Popen:
  args = [sys.executable, "-m", "experiments.train", "--workdir",
          str(workdir), "--no-progress"]
  args += [f"--config.{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
           for k, v in config.items()]
  return subprocess.Popen(args, cwd=REPO, env=_env(), **popen)


def _wait_for(condition, process, timeout=300):
  deadline = time.time() + timeout
  while not condition():
    assert process.poll() is None, "the run ended early"
    assert time.time() < deadline, "timed out"
    time.sleep(0.005)


@pytest.mark.slow
def test_kill_trials_lose_at_most_one_checkpoint_interval(tmp_path):
  """SIGKILL at random times: the steps computed past the restored
  checkpoint are at most `checkpoint_every` (measured: the last logged step
  minus the restored step), and a resume ends bitwise equal."""
  every, trials = 20, 8
  config = TINY | dict(steps=400, checkpoint_every=every, log_every=1,
                       keep_checkpoints=2)
  reference = _cli(tmp_path / "reference", config)
  rng = np.random.default_rng(0)
  lost = []
  for trial in range(trials):
    workdir = tmp_path / f"killed{trial}"
    target = int(rng.integers(every + 1, 300))
    process = _cli(workdir, config)
    metrics = workdir / loop.METRICS_FILE
    _wait_for(lambda: metrics.exists() and len(
        metrics.read_text().splitlines()) >= target, process)
    time.sleep(float(rng.uniform(0, 0.05)))
    process.send_signal(signal.SIGKILL)
    process.wait()
    lines = metrics.read_text().splitlines()
    last = json.loads(lines[-1])["step"] if lines[-1].endswith("}") else \
        json.loads(lines[-2])["step"]
    with warnings.catch_warnings():
      warnings.simplefilter("error", checkpointing.CheckpointWarning)
      restored = inference.restore(str(workdir)).step
    lost.append(last - restored)
    if trial == 0:
      assert _cli(workdir, config).wait() == 0
      assert reference.wait() == 0
      assert _same(inference.restore(str(workdir)).params,
                   inference.restore(str(tmp_path / "reference")).params)
  print(f"\nkill -9 trials (checkpoint_every={every}): lost steps {lost}, "
        f"worst {max(lost)}")
  assert max(lost) <= every


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_save_ends_within_seconds(tmp_path, signum):
  """The signal is sent while a save is being written (orbax's temporary
  directory exists): the run ends within seconds, every checkpoint left
  verifies, none is half-written, and a resume ends bitwise equal."""
  config = TINY | dict(steps=200, checkpoint_every=1, log_every=1,
                       hidden=(256, 256), keep_checkpoints=3)
  reference = _cli(tmp_path / "reference", config)
  results = []
  for trial in range(3):
    workdir = tmp_path / f"signalled{trial}"
    process = _cli(workdir, config, stderr=subprocess.PIPE, text=True)
    checkpoints = workdir / "checkpoints"
    _wait_for(lambda: checkpoints.is_dir() and max(
        _steps(workdir), default=0) >= 20 + 50 * trial, process)
    _wait_for(lambda: any("tmp" in p.name for p in checkpoints.iterdir()),
              process)
    sent = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    took = time.monotonic() - sent
    assert "TrainingInterrupted" in stderr, stderr[-2000:]
    assert not [p for p in checkpoints.iterdir() if "tmp" in p.name]
    for step in _steps(workdir):
      _restore(workdir, step, config_lib.TrainConfig(**config))
    results.append((round(took, 2), process.returncode, _steps(workdir)))
    assert took < 10, results
  print(f"\n{signal.Signals(signum).name} during a save: (seconds to exit, "
        f"exit status, checkpoints kept) {results}")
  assert _cli(tmp_path / "signalled0", config).wait() == 0
  assert reference.wait() == 0
  assert _same(inference.restore(str(tmp_path / "signalled0")).params,
               inference.restore(str(tmp_path / "reference")).params)


def _flip_outcome(workdir, expected) -> str:
  try:
    restored, _ = _restore(workdir, 20)
  except checkpointing.CheckpointCorruptError as error:
    if "differ from their saved SHA-256" in error.reason:
      return "detected: arrays differ from checksum"
    if "do not match their SHA-256" in error.reason:
      return "detected: metadata differ from checksum"
    return "detected: unreadable"
  except Exception as error:  # pylint: disable=broad-except
    return f"raw error {type(error).__name__}"
  return ("restored identical" if _same(jax.device_get(restored), expected)
          else "SILENTLY DIFFERENT")


def _unverified_outcome(workdir, expected) -> str:
  """What plain orbax restores, without the checksums (the old code)."""
  manager = ocp.CheckpointManager(
      checkpointing.checkpoint_dir(str(workdir)), item_names=("state", "meta"))
  target = {"train": _abstract(),
            "data": checkpointing._data_tree({"epoch": 0, "position": 0})}
  try:
    checkpointing.read_meta(manager, 20)
    restored = manager.restore(20, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))["state"]["train"]
  except Exception as error:  # pylint: disable=broad-except
    return f"error ({type(error).__name__})"
  finally:
    manager.close()
  return ("identical" if _same(jax.device_get(restored), expected)
          else "silently different")


@pytest.mark.slow
def test_bit_flip_trial(finished, tmp_path):
  """Random single-bit flips, in the array data files and in the metadata
  files of a checkpoint: never a silently different restore, never a raw
  error. Prints the trial table."""
  rng = np.random.default_rng(2026)
  expected = jax.device_get(_restore(finished[0], 20)[0])
  step_dir = finished[0] / "checkpoints" / "20"
  data = [p.relative_to(step_dir) for p in _data_files(step_dir)]
  largest = max(data, key=lambda p: (step_dir / p).stat().st_size)
  other = [p.relative_to(step_dir) for p in step_dir.rglob("*")
           if p.is_file() and p.relative_to(step_dir) not in data]
  table = {}
  for group, files, trials in [
      ("largest data file (the arrays)", [largest], 50),
      ("other data files (B-tree nodes)", [p for p in data if p != largest],
       30), ("metadata files", other, 40)]:
    for trial in range(trials):
      workdir = tmp_path / f"{group[:5]}{trial}"
      shutil.copytree(finished[0], workdir)
      relative = files[rng.integers(len(files))]
      path = workdir / "checkpoints" / "20" / relative
      _flip(path, int(rng.integers(path.stat().st_size * 8)))
      key = (group, _unverified_outcome(workdir, expected),
             _flip_outcome(workdir, expected))
      table[key] = table.get(key, 0) + 1
      shutil.rmtree(workdir)
  print("\nbit-flip trial: files | plain orbax (unverified) | now | count")
  for (group, before, now), count in sorted(table.items()):
    print(f"{group} | {before} | {now} | {count}")
  assert {now for _, _, now in table} <= {
      "detected: arrays differ from checksum",
      "detected: metadata differ from checksum", "detected: unreadable",
      "restored identical"}
