"""Add the Coulomb MMD to your own Flax + optax autoencoder (8x8 digits).

Run: python examples/flax_autoencoder_coulomb.py [--steps 2000]
Uses only couae_jax's public losses; the model and loop are plain Flax/optax.
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits

from couae_jax import losses


class AutoEncoder(nn.Module):
  latent_dim: int = 8

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(128)(x))
    codes = nn.Dense(self.latent_dim, name="codes")(h)
    h = nn.relu(nn.Dense(128)(codes))
    return codes, nn.Dense(x.shape[-1])(h)


def main(steps: int, batch_size: int = 256, lam: float = 10.0) -> float:
  images = jnp.asarray(load_digits().data / 16.0, jnp.float32)  # [1797, 64]
  model, optimizer = AutoEncoder(), optax.adam(1e-3)
  params = model.init(jax.random.key(0), images[:1])
  opt_state = optimizer.init(params)

  def loss_fn(params, batch, key):
    codes, reconstruction = model.apply(params, batch)
    rec = jnp.mean(losses.squared_error(reconstruction, batch))
    mmd = losses.coulomb_regularizer(codes, key=key)  # prior: N(0, I)
    return rec + lam * mmd, (rec, mmd)

  @jax.jit
  def step(params, opt_state, key):
    batch_key, prior_key = jax.random.split(key)
    batch = jax.random.choice(batch_key, images, (batch_size,), replace=False)
    grads, aux = jax.grad(loss_fn, has_aux=True)(params, batch, prior_key)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, aux

  for i in range(steps):
    params, opt_state, (rec, mmd) = step(params, opt_state,
                                         jax.random.fold_in(jax.random.key(1), i))
    if i % max(1, steps // 5) == 0 or i == steps - 1:
      print(f"step {i:5d}  rec {float(rec):.3f}  mmd {float(mmd):+.4f}")
  return float(rec)


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=2000)
  main(parser.parse_args().steps)
