"""Programs the SPMD tests run in fresh processes (JAX's device count and
distributed runtime are fixed per process).

  python tests/spmd_programs.py step-equivalence OUT.json
      with XLA_FLAGS=--xla_force_host_platform_device_count=4: one train step
      of each model on a 1-device and a 4-device mesh from the same state and
      global batch; writes the largest parameter and metric differences.
  python tests/spmd_programs.py mmd-equivalence OUT.json
      likewise for `mmd2(..., axis_name=)` against `mmd2` on the global batch.
  python tests/spmd_programs.py all OUT.json
      both, in one process: {program name: its result}.
"""

from __future__ import annotations

import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from couae_jax import config as config_lib
from couae_jax import kernels, mmd
from couae_jax import objective as objective_lib
from couae_jax import train as train_lib


def _max_difference(a, b) -> float:
  diffs = jax.tree.map(lambda u, v: float(np.max(np.abs(
      np.asarray(u, np.float64) - np.asarray(v, np.float64)))), a, b)
  return max(jax.tree.leaves(diffs), default=0.0)


def _one_step(config, mesh, data):
  model = train_lib.build_model(config, data.shape[1:],
                                axis_name=train_lib.DATA_AXIS)
  optimizer = train_lib.make_optimizer(config)
  state = jax.jit(
      lambda: train_lib.init_state(model, optimizer, data[:1], config.seed),
      out_shardings=NamedSharding(mesh, P()))()
  step = train_lib.make_parallel_step(
      mesh, model=model, objective=objective_lib.make_objective(config),
      optimizer=optimizer)
  batch = jax.device_put(data, NamedSharding(mesh, P(train_lib.DATA_AXIS)))
  for _ in range(2):
    state, metrics = step(state, batch)
  return jax.device_get((state.params, state.batch_stats, metrics))


def step_equivalence() -> dict:
  devices = jax.devices()
  assert len(devices) == 4, devices
  one = Mesh(np.array(devices[:1]), (train_lib.DATA_AXIS,))
  four = Mesh(np.array(devices), (train_lib.DATA_AXIS,))
  rng = np.random.default_rng(0)
  cases = {
      "mlp": (np.asarray(rng.normal(size=(16, 2)) * 5, np.float32),
              dict(latent_dim=3, hidden=(16, 16))),
      "conv": (np.asarray(rng.uniform(size=(8, 8, 8, 1)), np.float32),
               dict(latent_dim=4, width=1 / 32)),
  }
  # Every model on the MLP, the streamed MMD once, BatchNorm twice.
  runs = [("mlp", model, 0) for model in config_lib.MODELS]
  runs += [("mlp", "couae", 5), ("conv", "couae", 0), ("conv", "vae", 0)]
  results = {}
  for architecture, model, block_size in runs:
    data, fields = cases[architecture]
    config = config_lib.TrainConfig(model=model, batch_size=len(data),
                                    block_size=block_size, **fields)
    a = _one_step(config, one, data)
    b = _one_step(config, four, data)
    results[f"{architecture}/{model}/block{block_size}"] = {
        "params": _max_difference(a[0], b[0]),
        "batch_stats": _max_difference(a[1], b[1]),
        "metrics": _max_difference(a[2], b[2]),
        "param_scale": max(float(np.max(np.abs(leaf)))
                           for leaf in jax.tree.leaves(a[0])),
    }
  return results


def mmd_equivalence() -> dict:
  mesh = Mesh(np.array(jax.devices()), ("data",))
  x = jax.random.normal(jax.random.key(0), (24, 5))
  y = jax.random.normal(jax.random.key(1), (32, 5)) + 0.3
  sharded = NamedSharding(mesh, P("data"))
  generic = lambda a, b: jnp.exp(-jnp.sum(jnp.abs(a - b), -1))
  results = {}
  for name, kernel in (("coulomb", kernels.coulomb),
                       ("sliced_coulomb", kernels.sliced_coulomb),
                       ("generic", generic)):
    for block_size in (None, 5):
      reference = jax.value_and_grad(mmd.mmd2, (0, 1))(x, y, kernel)

      def local(x, y):
        return jax.value_and_grad(functools.partial(
            mmd.mmd2, kernel=kernel, block_size=block_size,
            axis_name="data"), (0, 1))(x, y)

      value, grads = jax.jit(jax.shard_map(
          local, mesh=mesh, in_specs=(P("data"), P("data")),
          out_specs=(P(), (P("data"), P("data")))))(
              jax.device_put(x, sharded), jax.device_put(y, sharded))
      results[f"{name}/block{block_size}"] = {
          "value": abs(float(value) - float(reference[0])),
          "grads": _max_difference(grads, reference[1]),
      }
  return results


PROGRAMS = {"step-equivalence": step_equivalence,
            "mmd-equivalence": mmd_equivalence}


if __name__ == "__main__":
  program, out = sys.argv[1], sys.argv[2]
  if program == "all":  # one process (one JAX start-up) for every program
    result = {name: run() for name, run in PROGRAMS.items()}
  else:
    result = PROGRAMS[program]()
  with open(out, "w") as f:
    json.dump(result, f, indent=1)
