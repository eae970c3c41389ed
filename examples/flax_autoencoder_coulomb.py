"""Add the Coulomb MMD to your own Flax + optax autoencoder (8x8 digits).

Run: python examples/flax_autoencoder_coulomb.py [--steps 2000]
         [--latent-dim 8] [--regularizer coulomb|wae]
Uses only couae_jax's public losses; the model and loop are plain Flax/optax.
`experiments/latent_match.py` runs this script's `train` against WAE's
regulariser at h = 8, 20 and 64.
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits

from couae_jax import losses

REGULARIZERS = {"coulomb": losses.coulomb_regularizer,  # sliced Coulomb
                "wae": losses.wae_regularizer}


class AutoEncoder(nn.Module):
  latent_dim: int = 8

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(128)(x))
    codes = nn.Dense(self.latent_dim, name="codes")(h)
    h = nn.relu(nn.Dense(128)(codes))
    return codes, nn.Dense(x.shape[-1])(h)


def train(images, regularizer, *, latent_dim=8, steps=2000, batch_size=256,
          lam=10.0, seed=0, log=print):
  """Trains on `images: [N, 64]`; `regularizer(codes, key=...)` is the MMD
  to N(0, I). Returns the codes and reconstructions of all images,
  `([N, latent_dim], [N, 64])`."""
  model, optimizer = AutoEncoder(latent_dim), optax.adam(1e-3)
  params = model.init(jax.random.key(seed), images[:1])
  opt_state = optimizer.init(params)

  def loss_fn(params, batch, key):
    codes, reconstruction = model.apply(params, batch)
    rec = jnp.mean(losses.squared_error(reconstruction, batch))
    mmd = regularizer(codes, key=key)  # prior: N(0, I)
    return rec + lam * mmd, (rec, mmd)

  @jax.jit
  def step(params, opt_state, key):
    batch_key, prior_key = jax.random.split(key)
    batch = jax.random.choice(batch_key, images, (batch_size,), replace=False)
    grads, aux = jax.grad(loss_fn, has_aux=True)(params, batch, prior_key)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, aux

  for i in range(steps):
    params, opt_state, (rec, mmd) = step(
        params, opt_state, jax.random.fold_in(jax.random.key(seed + 1), i))
    if i % max(1, steps // 5) == 0 or i == steps - 1:
      log(f"step {i:5d}  rec {float(rec):.3f}  mmd {float(mmd):+.4f}")
  return model.apply(params, images)


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--latent-dim", type=int, default=8)
  parser.add_argument("--regularizer", choices=REGULARIZERS, default="coulomb")
  args = parser.parse_args()
  digits = jnp.asarray(load_digits().data / 16.0, jnp.float32)  # [1797, 64]
  codes, _ = train(digits, REGULARIZERS[args.regularizer],
                latent_dim=args.latent_dim, steps=args.steps)
  std = jnp.std(codes, axis=0)
  print(f"code std per dimension in [{float(std.min()):.2f}, "
        f"{float(std.max()):.2f}] (prior: 1)")
