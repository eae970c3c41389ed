"""The global-batch Coulomb MMD inside your own `jax.shard_map` step.

Run: python examples/shard_map_global_mmd.py [--devices 4] [--steps 200]
(on CPU the devices are simulated). Each device encodes its shard of the
batch and draws its shard of the prior sample from the step's key;
`mmd2(..., axis_name="data")` returns the estimate over the global batch,
each device computing only its own rows of pairs.
"""

import argparse
import os


def main(devices: int, steps: int) -> float:
  # Appended, so flags already in the environment keep their effect.
  flags = os.environ.get("XLA_FLAGS", "")
  if "--xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_force_host_platform_device_count={devices}".strip())
  import functools
  import jax
  import jax.numpy as jnp
  import optax
  from jax.sharding import NamedSharding, PartitionSpec as P
  from couae_jax import kernels, mmd

  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  kernel = functools.partial(kernels.sliced_coulomb, eps=1e-2)
  optimizer = optax.adam(1e-2)
  # A linear "encoder" mapping 4-D data to 3-D codes that should look N(0, I).
  data = jax.random.normal(jax.random.key(0), (512, 4)) * 3.0 + 1.0
  params = {"w": jnp.eye(4, 3), "b": jnp.zeros(3)}
  opt_state = optimizer.init(params)

  def local_step(params, opt_state, x, key):
    # Each device draws its own prior shard on the device, so no host-to-device
    # transfer runs between steps (on simulated CPU devices a fresh device_put
    # between asynchronously dispatched collective steps can deadlock XLA).
    key = jax.random.fold_in(key, jax.lax.axis_index("data"))
    prior = jax.random.normal(key, (x.shape[0], 3))

    def loss(params):  # x, prior: this device's shards
      codes = x @ params["w"] + params["b"]
      return mmd.mmd2(codes, prior, kernel, block_size=64, axis_name="data")
    value, grads = jax.value_and_grad(loss)(params)  # grads: summed over devices
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, value

  step = jax.jit(jax.shard_map(
      local_step, mesh=mesh, in_specs=(P(), P(), P("data"), P()),
      out_specs=(P(), P(), P())))
  x = jax.device_put(data, NamedSharding(mesh, P("data")))
  for i in range(steps):
    params, opt_state, value = step(params, opt_state, x,
                                    jax.random.fold_in(jax.random.key(1), i))
  print(f"{jax.device_count()} devices, MMD after {steps} steps: "
        f"{float(value):+.4f}")
  return float(value)


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--devices", type=int, default=4)
  parser.add_argument("--steps", type=int, default=200)
  args = parser.parse_args()
  main(args.devices, args.steps)
