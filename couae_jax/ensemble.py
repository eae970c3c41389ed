"""How the seeds of one configuration advance together: `Vmapped` (one call
of K steps of every seed) or `Looped` (one call per seed and step), picked
by `runner(config, model)`. `loop.fit_seeds` trains through them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax import config as config_lib
from couae_jax import data as data_lib
from couae_jax import models as models_lib
from couae_jax import train as train_lib


class Vmapped:
  """Every member in one call per chunk: `lax.scan` over the steps of the
  step vmapped over the members, the state's leaves stacked `[S, ...]`.
  Small models spend their time in per-step dispatch and tiny products; this
  turns `K·S` of them into one call of batched products."""

  def __init__(self, mesh, init_member, restored, seeds, step_kwargs):
    replicated = train_lib.replicated(mesh)
    self._mesh = mesh
    if restored is None:
      self._state = jax.jit(jax.vmap(init_member), out_shardings=replicated)(
          np.asarray(seeds, np.int32))
    else:
      self._state = jax.jit(lambda states: jax.tree.map(
          lambda *leaves: jnp.stack(leaves), *states),
                            out_shardings=replicated)(restored)
    self._step = train_lib.make_parallel_step(mesh, ensemble=True,
                                              **step_kwargs)
    self._member_of = jax.jit(
        lambda state, index: jax.tree.map(
            lambda leaf: jax.lax.dynamic_index_in_dim(leaf, index,
                                                      keepdims=False), state),
        out_shardings=replicated)

  def run(self, local: np.ndarray) -> dict[str, np.ndarray]:
    """`local: [K, S, b, ...]` -> metrics `{name: [K, S]}`."""
    batches = data_lib.shard_batch(local, self._mesh,
                                   axis=train_lib.DATA_AXIS, batch_dim=2)
    self._state, metrics = self._step(self._state, batches)
    return {name: np.asarray(value)
            for name, value in jax.device_get(metrics).items()}

  def member(self, index: int) -> train_lib.TrainState:
    return self._member_of(self._state, index)


class Looped:
  """One call per member and step. XLA:CPU runs the conv networks' step
  3-8x slower inside a `lax.scan` or vmapped over members (BUILD_NOTES
  section 2d) than as a plain call, and a conv step is long enough that the
  per-call dispatch costs nothing."""

  def __init__(self, mesh, init_member, restored, seeds, step_kwargs):
    self._mesh = mesh
    if restored is None:
      init = jax.jit(init_member, out_shardings=train_lib.replicated(mesh))
      restored = [init(np.int32(seed)) for seed in seeds]
    self._states = list(restored)
    self._step = train_lib.make_parallel_step(mesh, **step_kwargs)

  def run(self, local: np.ndarray) -> dict[str, np.ndarray]:
    """`local: [K, S, b, ...]` -> metrics `{name: [K, S]}`."""
    metrics = []
    for step_batches in local:
      row = []
      for index, batch in enumerate(step_batches):
        batch = data_lib.shard_batch(batch, self._mesh,
                                     axis=train_lib.DATA_AXIS)
        self._states[index], member_metrics = self._step(
            self._states[index], batch)
        row.append(member_metrics)
      metrics.append(row)
    metrics = jax.device_get(metrics)
    return {name: np.array([[m[name] for m in row] for row in metrics])
            for name in metrics[0][0]}

  def member(self, index: int) -> train_lib.TrainState:
    return self._states[index]


def runner(config: config_lib.TrainConfig, model):
  """The runner `config.ensemble` names ("auto": loop for conv networks)."""
  mode = config.ensemble
  if mode == "auto":
    conv = isinstance(model.encoder, models_lib.ConvEncoder)
    mode = "loop" if conv else "vmap"
  return Looped if mode == "loop" else Vmapped


__all__ = ["Looped", "Vmapped", "runner"]
