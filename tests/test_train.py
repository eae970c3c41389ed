"""The trainer: configs, SPMD equivalence, checkpoints, resume, divergence."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import TINY_TRAIN as TINY

from couae_jax import checkpointing, inference, loop
from couae_jax import config as config_lib
from couae_jax import objective as objective_lib
from couae_jax import scaling as scaling_lib
from couae_jax import train as train_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
SPMD_PROGRAMS = REPO / "tests" / "spmd_programs.py"


pytestmark = pytest.mark.standard_promotion  # optax/flax promote


def _env(**extra) -> dict:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **extra)
  env.pop("XLA_FLAGS", None)
  env.update(extra)
  return env


#: Four CPU devices on two shared cores: a collective may wait minutes for a
#: descheduled device thread, which XLA's default limit would call a hang.
FOUR_DEVICES = " ".join([
    "--xla_force_host_platform_device_count=4",
    "--xla_cpu_collective_call_terminate_timeout_seconds=1200",
    "--xla_cpu_multi_thread_eigen=false",
])


def _run_program(name: str, tmp_path, **env) -> dict:
  out = tmp_path / f"{name}.json"
  # 163 s alone at load 7; the limit is for a hang, not for a loaded machine.
  subprocess.run([sys.executable, str(SPMD_PROGRAMS), name, str(out)],
                 env=_env(**env), check=True, timeout=1800)
  return json.loads(out.read_text())


def _train_cli(workdir, *overrides, **popen):
  args = [sys.executable, "-m", "experiments.train", "--workdir",
          str(workdir), "--no-progress"]
  args += [f"--config.{k}={v}" for k, v in overrides]
  return subprocess.Popen(args, cwd=REPO, env=_env(), **popen)


def _params(workdir, step=None):
  return jax.device_get(inference.restore(str(workdir), step).params)


# ---------------------------------------------------------------------------
# Configs.


@pytest.mark.parametrize("field, value, message", [
    ("model", "gan", "model='gan'"),
    ("data", "imagenet", "data='imagenet'"),
    ("lam", -1.0, "lam=-1.0"),
    ("latent_dim", 1, "latent_dim=1"),
    ("batch_size", 10, "not divisible by the 4 devices"),
    ("eps", 0.0, "eps=0.0"),
    ("warmup_steps", 5000, "warmup_steps=5000"),
    ("data", "npz", "set --config.data_path"),
])
def test_validate_rejects_bad_configs(field, value, message):
  config = config_lib.TrainConfig().replace(**{field: value})
  with pytest.raises(ValueError, match=message.replace("(", r"\(")
                     .replace(")", r"\)").replace("[", r"\[")):
    config_lib.validate(config, devices=4)


def test_overrides_parse_types_and_reject_unknown_fields():
  config = config_lib.parse_overrides(config_lib.TrainConfig(), [
      "--config.lam=2.5", "--config.model=wae", "--config.hidden=64,32",
      "--config.distributed=true", "--config.steps=7"])
  assert (config.lam, config.model, config.hidden, config.distributed,
          config.steps) == (2.5, "wae", (64, 32), True, 7)
  with pytest.raises(ValueError, match="unknown config field 'lamda'"):
    config_lib.parse_overrides(config_lib.TrainConfig(), ["--config.lamda=1"])
  with pytest.raises(ValueError, match="config.steps must be of type int"):
    config_lib.parse_overrides(config_lib.TrainConfig(), ["--config.steps=1.5"])


# ---------------------------------------------------------------------------
# SPMD: the same step on 1 and 4 devices.


@pytest.fixture(scope="module", autouse=True)
def _four_device_process(request, tmp_path_factory):
  """Both SPMD programs in one 4-device process (a JAX start-up and its
  compiles are most of either program's time), started as the module starts
  so that it runs beside the tests before the two that read it (at the end
  of the module); not started when neither of them was selected."""
  if not any("four_device_results" in item.fixturenames
             and item.module is request.module
             for item in request.session.items):
    yield None
    return
  out = tmp_path_factory.mktemp("spmd") / "all.json"
  process = subprocess.Popen(
      [sys.executable, str(SPMD_PROGRAMS), "all", str(out)],
      env=_env(XLA_FLAGS=FOUR_DEVICES))
  yield process, out
  if process.poll() is None:  # a test of the module failed before waiting
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def four_device_results(_four_device_process) -> dict:
  process, out = _four_device_process
  # 163 s alone at load 7; the limit is for a hang, not for a loaded machine.
  assert process.wait(timeout=1800) == 0, "the SPMD programs failed"
  return json.loads(out.read_text())


# The tests that read it: at the end of the module.


# ---------------------------------------------------------------------------
# The loop end to end, in process.


def _copy_of(run, tmp_path) -> pathlib.Path:
  """A copy of a finished run's workdir, for a test to change."""
  workdir = tmp_path / "run"
  shutil.copytree(run[0], workdir)
  return workdir


def test_fit_restores_and_draws(tiny_grid_run):
  # The session's 20-step run (conftest): `loop.fit` of this config.
  tmp_path, trained = tiny_grid_run
  config = config_lib.TrainConfig(steps=20, **TINY)
  assert trained.config == config
  restored = inference.restore(str(tmp_path))
  assert restored.step == trained.step == 20
  assert restored.config == config
  chex_equal = jax.tree.map(np.array_equal, trained.params, restored.params)
  assert all(jax.tree.leaves(chex_equal))
  x = np.zeros((7, 2), np.float32)
  assert restored.encode(x).shape == (7, 3)
  assert restored.decode(np.zeros((7, 3), np.float32)).shape == (7, 2)
  assert restored.sample(jax.random.key(0), 5).shape == (5, 2)
  lines = [json.loads(l) for l in
           (tmp_path / loop.METRICS_FILE).read_text().splitlines()]
  assert [l["step"] for l in lines] == [10, 20]
  assert {"loss", "rec", "reg", "grad_norm", "xi", "steps_per_s"} <= set(
      lines[0])
  figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
  assert figures == ["codes_20.png", "samples_20.png"]


def test_resume_refuses_another_config(tiny_grid_run, tmp_path):
  config = config_lib.TrainConfig(steps=20, **TINY)
  workdir = str(_copy_of(tiny_grid_run, tmp_path))  # finished at step 20
  with pytest.raises(checkpointing.ConfigMismatchError,
                     match=r"lam: saved 10.0, now 3.0"):
    loop.fit(config.replace(lam=3.0), workdir, progress=False)
  # Extending the run is allowed.
  assert loop.fit(config.replace(steps=30), workdir,
                  progress=False).step == 30


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  # Adam at this rate survives one step, then the reconstruction overflows.
  config = config_lib.TrainConfig(steps=200, learning_rate=1e4,
                                  **TINY | dict(checkpoint_every=1))
  with pytest.raises(loop.TrainingDiverged,
                     match=r"step (\d+): rec = (nan|inf).*last good checkpoint "
                     r"is step (\d+)") as error:
    loop.fit(config, str(tmp_path), progress=False)
  restored = inference.restore(str(tmp_path))
  assert 1 <= restored.step < int(error.value.args[0].split()[1].rstrip(":"))
  assert all(np.all(np.isfinite(leaf))
             for leaf in jax.tree.leaves(restored.params))


def _allclose(a, b, tolerance):
  return all(jax.tree.leaves(jax.tree.map(
      lambda u, v: np.allclose(u, v, rtol=tolerance, atol=tolerance), a, b)))


def test_fit_seeds_trains_each_seed_like_fit(tmp_path):
  config = config_lib.TrainConfig(steps=10, **TINY)
  ensemble = loop.fit_seeds(config, [0, 1], str(tmp_path / "ensemble"),
                            progress=False)
  alone = loop.fit(config.replace(seed=1), str(tmp_path / "alone"),
                   progress=False)
  assert [m.config.seed for m in ensemble] == [0, 1]
  restored = inference.restore(loop.seed_workdir(
      str(tmp_path / "ensemble"), 1))
  assert restored.config == alone.config and restored.step == 10
  # Batching the seeds reorders float operations; Adam keeps it tiny.
  assert _allclose(restored.params, alone.params, 1e-5)
  assert not _allclose(ensemble[0].params, ensemble[1].params, 1e-2)
  log = (tmp_path / "ensemble" / "seed0" / loop.METRICS_FILE).read_text()
  assert [json.loads(line)["step"] for line in log.splitlines()] == [10]


def test_steps_per_call_does_not_change_the_run(tmp_path):
  config = config_lib.TrainConfig(steps=12, **TINY | dict(checkpoint_every=6,
                                                          log_every=3))
  one = loop.fit(config, str(tmp_path / "one"), progress=False)
  scanned = loop.fit(config.replace(steps_per_call=5),
                     str(tmp_path / "scanned"), progress=False)
  assert _allclose(one.params, scanned.params, 1e-6)
  log = (tmp_path / "scanned" / loop.METRICS_FILE).read_text()
  assert [json.loads(line)["step"] for line in log.splitlines()] == [
      3, 6, 9, 12]
  assert _steps(tmp_path / "scanned") == [6, 12]


def _steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in (pathlib.Path(workdir) / "checkpoints")
                .iterdir() if p.name.isdigit())


def test_ensemble_resumes_when_a_seed_saved_ahead(tmp_path):
  """A crash between the seeds' saves leaves one a checkpoint ahead: the
  ensemble resumes from the step both saved and recomputes the rest."""
  config = config_lib.TrainConfig(steps=10, **TINY | dict(checkpoint_every=5))
  workdir = str(tmp_path)
  finished = loop.fit_seeds(config, [0, 1], workdir, progress=False)
  seed1 = checkpointing.Checkpointer(loop.seed_workdir(workdir, 1), config,
                                     (2,))
  seed1.delete(10)
  seed1.close()
  resumed = loop.fit_seeds(config, [0, 1], workdir, progress=False)
  for before, after in zip(finished, resumed):
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, before.params,
                                            after.params)))
  assert _steps(loop.seed_workdir(workdir, 0)) == [5, 10]


def test_standardized_run_works_in_data_units(tmp_path):
  config = config_lib.TrainConfig(steps=10, standardize=True, **TINY)
  trained = loop.fit(config, str(tmp_path), progress=False)
  restored = inference.restore(str(tmp_path))
  data = loop.load_dataset(config)
  assert restored.scaling.scale == pytest.approx(float(np.std(data)), 1e-4)
  np.testing.assert_allclose(restored.scaling.mean, data.mean(0), atol=1e-5)
  # The networks see standardised data; the model's methods use data units.
  scaled = restored.scaling.apply(data)
  np.testing.assert_allclose(
      restored.encode(data),
      restored.model.apply(restored.variables, scaled,
                           method="encode"), rtol=1e-5, atol=1e-5)
  codes = restored.encode(data[:5])
  # A deterministic encoder ignores the key.
  np.testing.assert_array_equal(
      restored.encode(data[:5], key=jax.random.key(0)), codes)
  np.testing.assert_allclose(
      restored.decode(codes),
      restored.scaling.invert(restored.model.apply(
          restored.variables, codes, method="decode")), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(trained.reconstruct(data[:5]),
                             restored.reconstruct(data[:5]), atol=1e-4)


@pytest.mark.parametrize("model", ["couae", "wae"])
def test_stochastic_encoder_penalises_sampled_codes(tmp_path, model):
  config = config_lib.TrainConfig(model=model, stochastic_encoder=True,
                                  steps=4, **TINY)
  network = train_lib.build_model(config, (2,))
  assert network.encoder.stochastic
  mean = np.zeros((500, 3), np.float32)
  log_var = np.zeros((500, 3), np.float32)
  codes, penalty = objective_lib.make_objective(config).regularize(
      (mean, log_var), jax.random.key(0), None)
  # Unit-variance noise around 0: the codes are a N(0, I) sample.
  assert codes.shape == (500, 3) and 0.8 < float(np.std(codes)) < 1.2
  assert abs(float(penalty)) < 0.05
  trained = loop.fit(config, str(tmp_path), progress=False)
  x = np.zeros((5, 2), np.float32)
  mean = trained.encode(x)
  assert mean.shape == (5, 3)
  # With a key, a sample of q(z|x): what the regulariser saw.
  sampled = trained.encode(x, key=jax.random.key(1))
  assert sampled.shape == (5, 3) and not np.allclose(sampled, mean)


def test_data_scaling_reads_uint8_images_as_floats_in_chunks(monkeypatch):
  monkeypatch.setattr(scaling_lib, "_STATS_CHUNK", 7)  # several chunks
  pixels = np.random.default_rng(0).integers(0, 256, (30, 4, 4, 3), np.uint8)
  scaling = scaling_lib.DataScaling.of(pixels)
  floats = pixels.astype(np.float64) / 255
  np.testing.assert_allclose(scaling.mean, floats.mean(0), rtol=1e-6)
  assert scaling.scale == pytest.approx(float(np.std(floats - floats.mean(0))),
                                        rel=1e-6)  # float32 pixels


@pytest.mark.parametrize("data", [np.zeros((4, 2)), np.ones(3),
                                  np.ones((1, 2))])
def test_data_scaling_rejects_data_it_cannot_scale(data):
  with pytest.raises(ValueError, match="data"):
    scaling_lib.DataScaling.of(data)


@pytest.mark.parametrize("seeds", [[], [0, 0], [-1], [1.5], "01"])
def test_fit_seeds_rejects_bad_seeds(tmp_path, seeds):
  with pytest.raises(ValueError, match="seeds must be"):
    loop.fit_seeds(config_lib.TrainConfig(**TINY), seeds, str(tmp_path))


def test_unfinished_save_is_not_a_checkpoint(tiny_grid_run, tmp_path):
  workdir = _copy_of(tiny_grid_run, tmp_path)  # checkpoints 10 and 20
  # What a save killed midway leaves: orbax's temporary directory.
  partial = workdir / "checkpoints" / "30.orbax-checkpoint-tmp-1234"
  (partial / "state").mkdir(parents=True)
  assert inference.restore(str(workdir)).step == 20


# ---------------------------------------------------------------------------
# Processes: SIGKILL and resume; two processes with jax.distributed.


def test_sigkilled_run_resumes_to_the_same_parameters(tmp_path):
  # The kill comes when the first checkpoint (step 100) appears; the 500
  # steps after it (about 12 s at load 4) keep the run alive until then.
  steps = 600
  overrides = [(k, ",".join(map(str, v)) if isinstance(v, tuple) else v)
               for k, v in TINY.items()]
  overrides += [("steps", steps), ("checkpoint_every", 100)]
  reference = _train_cli(tmp_path / "reference", *overrides)
  killed = _train_cli(tmp_path / "killed", *overrides)
  checkpoints = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 300
  while not (checkpoints.is_dir() and any(
      p.name.isdigit() for p in checkpoints.iterdir())):
    assert killed.poll() is None, "the run ended before its first checkpoint"
    assert time.time() < deadline
    time.sleep(0.02)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  interrupted_at = inference.restore(str(tmp_path / "killed")).step
  assert interrupted_at < steps
  assert _train_cli(tmp_path / "killed", *overrides).wait() == 0
  assert reference.wait() == 0
  resumed, uninterrupted = (_params(tmp_path / "killed"),
                            _params(tmp_path / "reference"))
  same = jax.tree.map(np.array_equal, resumed, uninterrupted)
  assert all(jax.tree.leaves(same)), "resumed run differs bitwise"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
  """Two processes (one CPU device each, gloo collectives) compute bitwise
  what one process computes on two devices, and to float32 rounding what one
  device computes (Adam amplifies reduction-order differences of gradients
  near zero; a few steps keep that below 1e-4)."""
  overrides = [(k, ",".join(map(str, v)) if isinstance(v, tuple) else v)
               for k, v in TINY.items()]
  overrides += [("steps", 4), ("checkpoint_every", 2), ("log_every", 2)]
  one_device = _train_cli(tmp_path / "one_device", *overrides)
  two_devices = subprocess.Popen(
      [sys.executable, "-m", "experiments.train", "--workdir",
       str(tmp_path / "two_devices"), "--no-progress",
       *[f"--config.{k}={v}" for k, v in overrides]],
      cwd=REPO,
      env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
  port = _free_port()
  workers = []
  for process_id in range(2):
    args = [sys.executable, "-m", "experiments.train", "--workdir",
            str(tmp_path / "two_processes"), "--no-progress"]
    args += [f"--config.{k}={v}" for k, v in overrides]
    workers.append(subprocess.Popen(args, cwd=REPO, env=_env(
        COUAE_DISTRIBUTED="1",
        COUAE_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        COUAE_NUM_PROCESSES="2", COUAE_PROCESS_ID=str(process_id))))
  assert [w.wait(timeout=300) for w in workers] == [0, 0]
  assert one_device.wait(timeout=300) == 0
  assert two_devices.wait(timeout=300) == 0
  processes = _params(tmp_path / "two_processes")
  bitwise = jax.tree.map(np.array_equal, processes,
                         _params(tmp_path / "two_devices"))
  assert all(jax.tree.leaves(bitwise))
  close = jax.tree.map(lambda a, b: np.allclose(a, b, rtol=0, atol=1e-4),
                       processes, _params(tmp_path / "one_device"))
  assert all(jax.tree.leaves(close))


def test_checkpointer_keeps_the_latest_and_the_best(tmp_path):
  config = config_lib.TrainConfig(keep_checkpoints=2, best_metric="loss",
                                  **TINY)
  model = train_lib.build_model(config, (2,))
  optimizer = train_lib.make_optimizer(config)
  state = train_lib.init_state(model, optimizer, np.zeros((1, 2), np.float32),
                               config.seed)
  checkpointer = checkpointing.Checkpointer(str(tmp_path), config, (2,))
  losses = {10: 5.0, 20: 1.0, 30: 4.0, 40: 3.0, 50: 2.0}
  for step, loss in losses.items():
    checkpointer.save(step, state.replace(step=np.int32(step)),
                      {"epoch": 0, "position": step}, {"loss": loss})
  checkpointer.wait_until_finished()
  assert sorted(checkpointer.manager.all_steps()) == [20, 40, 50]
  restored, position = checkpointer.restore(
      20, jax.eval_shape(lambda: state))
  checkpointer.close()
  assert int(restored.step) == 20 and position == {"epoch": 0, "position": 20}


# ---------------------------------------------------------------------------
# SPMD (continued): what the 4-device process started with the module found.


def test_step_on_four_devices_equals_one_device(four_device_results):
  results = four_device_results["step-equivalence"]
  assert len(results) == 6
  for case, diff in results.items():
    tolerance = 1e-5 * max(1.0, diff["param_scale"])
    assert diff["params"] < tolerance, (case, diff)
    assert diff["batch_stats"] < 1e-4, (case, diff)
    assert diff["metrics"] < 1e-3, (case, diff)


def test_global_batch_mmd_on_four_devices(four_device_results):
  results = four_device_results["mmd-equivalence"]
  assert sorted(results) == sorted(
      f"{kernel}/block{block}" for kernel in ("coulomb", "sliced_coulomb",
                                              "generic")
      for block in ("None", "5"))
  for case, diff in results.items():
    assert diff["value"] < 1e-5 and diff["grads"] < 1e-5, (case, diff)
