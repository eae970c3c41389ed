"""Documentation and packaging: the API page is current, examples run."""

from __future__ import annotations

import importlib.util
import inspect
import os
import pathlib
import signal
import subprocess
import sys
from typing import Callable, Optional, Union

import jax
import pytest

import couae_jax

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_api_page_is_current():
  generate = _load(REPO / "docs" / "generate_api.py")
  assert generate.API_PATH.read_text() == generate.render(), (
      "docs/API.md is stale: run python docs/generate_api.py")


def test_api_page_is_the_same_on_every_version():
  """No name on the page depends on where a JAX/Flax version keeps a class.

  `repr(Callable[..., jax.Array])` is `typing.Callable[...,
  jax.jaxlib._jax.Array]` with jax 0.10 and names `jax.Array` with 0.12;
  Flax adds its own `parent` field, typed with its private classes.
  """
  generate = _load(REPO / "docs" / "generate_api.py")
  text = generate.API_PATH.read_text()
  signatures = [line for line in text.splitlines()
                if line.startswith(("### ", "*constant*", "- `"))]
  for private in ("jaxlib", "._", "typing.", "ForwardRef", "NoneType",
                  "flax.", " at 0x"):
    assert not [line for line in signatures if private in line], private

  assert generate._type_text(jax.Array) == "jax.Array"
  assert generate._type_text(Callable[..., jax.Array]) == (
      "Callable[..., jax.Array]")
  assert generate._type_text(
      Union[jax.Array, tuple[jax.Array, jax.Array]]) == (
          "Union[jax.Array, tuple[jax.Array, jax.Array]]")
  assert generate._type_text(Optional[int]) == "Optional[int]"
  assert generate._type_text(int | None) == "Optional[int]"
  assert generate._type_text(Callable[[int, str], float]) == (
      "Callable[[int, str], float]")


def test_every_public_name_is_documented():
  for module_name in couae_jax.__all__:
    if module_name in ("__version__", "restore"):
      continue
    module = importlib.import_module(f"couae_jax.{module_name}")
    assert module.__doc__, module_name
    for name in module.__all__:
      obj = getattr(module, name)
      if inspect.isfunction(obj) or inspect.isclass(obj):
        assert obj.__doc__, f"couae_jax.{module_name}.{name} has no docstring"


def test_losses_import_without_flax_or_orbax():
  code = ("import sys, couae_jax.losses, couae_jax.mmd, couae_jax.kernels; "
          "heavy = [m for m in ('flax', 'orbax', 'optax') if m in sys.modules]; "
          "print(couae_jax.__version__); assert not heavy, heavy")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def _tail(text, lines: int = 60) -> str:
  if isinstance(text, bytes):  # TimeoutExpired keeps bytes even with text=True.
    text = text.decode(errors="replace")
  return "\n".join((text or "").splitlines()[-lines:])


def _run_example(name: str, *args: str, xla_flags: str = "",
                 timeout: float = 300) -> str:
  """Runs `examples/<name>` on CPU; fails with its stderr's tail."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  if xla_flags:
    env["XLA_FLAGS"] = xla_flags
  command = " ".join([name, *args])
  try:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args], env=env,
        cwd=REPO, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired as e:
    pytest.fail(f"{command} ran past {timeout} s; stderr tail:\n"
                f"{_tail(e.stderr)}")
  if result.returncode:
    how = (f"was killed by {signal.Signals(-result.returncode).name}"
           if result.returncode < 0 else f"exited with {result.returncode}")
    pytest.fail(f"{command} {how}; stderr tail:\n{_tail(result.stderr)}")
  return result.stdout


def test_example_flax_autoencoder_trains():
  # At h = 20 the paper's kernel collapsed the codes (std 0.04); the default
  # sliced kernel keeps every dimension near the prior's std of 1.
  out = _run_example("flax_autoencoder_coulomb.py", "--steps", "300",
                     "--latent-dim", "20")
  recs = [float(line.split()[3]) for line in out.splitlines()
          if line.startswith("step")]
  assert len(recs) >= 2 and recs[-1] < 0.5 * recs[0], out
  low, high = map(float, out.split("dimension in [")[1].split("]")[0]
                  .split(", "))
  assert 0.5 < low <= high < 1.5, out


# Four simulated devices are four threads that must meet at every collective;
# XLA aborts the process (SIGABRT) when one waits 40 s for the others, which a
# heavily loaded 2-core machine can exceed without any deadlock. Waiting
# longer, and no intra-op thread pool competing with the device threads, keep
# the test about the example (a real hang still fails it, by the timeout).
_LOADED_MACHINE_FLAGS = " ".join([
    "--xla_cpu_collective_call_terminate_timeout_seconds=600",
    "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120",
    "--xla_cpu_multi_thread_eigen=false",
])


def test_example_shard_map_step_runs_on_four_devices():
  out = _run_example("shard_map_global_mmd.py", "--devices", "4",
                     "--steps", "100", xla_flags=_LOADED_MACHINE_FLAGS)
  assert out.startswith("4 devices"), out
  assert abs(float(out.split()[-1])) < 0.05, out


@pytest.mark.slow
def test_wheel_installs_and_imports(tmp_path):
  """`pip wheel .`, installed into a fresh directory, imports from there."""
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                  "-w", str(tmp_path), str(REPO)], check=True)
  wheel = next(tmp_path.glob("couae_jax-*.whl"))
  target = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                  "--target", str(target), str(wheel)], check=True)
  code = ("import couae_jax, importlib.resources as r; "
          "print(couae_jax.__version__, couae_jax.__file__); "
          "assert r.files('couae_jax').joinpath('py.typed').is_file(); "
          "import couae_jax.train, couae_jax.testing")
  env = dict(os.environ, PYTHONPATH=str(target))
  out = subprocess.run([sys.executable, "-c", code], check=True, env=env,
                       capture_output=True, text=True, cwd=tmp_path)
  version, location = out.stdout.split()
  assert version == couae_jax.__version__
  assert location.startswith(str(target)), location
