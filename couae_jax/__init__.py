"""couae-jax: Coulomb autoencoders in JAX.

The kernel, MMD, prior, loss and bound modules need only JAX and load eagerly;
the modules that need Flax, Optax or Orbax (models, data, training, FID) load
on first use, so `import couae_jax.losses` costs nothing beyond JAX.
"""

import importlib

__version__ = "0.1.0"

from couae_jax import bounds, kernels, losses, mmd, priors

_LAZY_MODULES = ("checkpointing", "config", "data", "ensemble", "evaluation",
                 "fid", "inference", "loop", "models", "objective",
                 "plotting", "scaling", "testing", "train", "workdir")


def __getattr__(name):
  if name == "restore":
    from couae_jax.inference import restore
    return restore
  if name in _LAZY_MODULES:
    return importlib.import_module(f"couae_jax.{name}")
  raise AttributeError(f"module 'couae_jax' has no attribute {name!r}")


__all__ = ["__version__", "bounds", "kernels", "losses", "mmd", "priors",
           "restore", *_LAZY_MODULES]
