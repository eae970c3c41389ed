"""How closely each regulariser matches the codes to the prior, at image sizes.

Command:
  python -m experiments.latent_match --workdir runs/latent_match
      [--dims 8,20,64] [--seeds 0,1,2] [--steps 2000] [--lam 10]
      [--regularizers sliced_coulomb,coulomb,mc_slices,wae]
      [--settings flax_example,trainer_mlp]

Two autoencoders on scikit-learn's 1,797 8×8 digits, each with every
regulariser, at h = 8 (WAE's MNIST size), 20 and 64 (CelebA's):

* `flax_example`: the plain Flax MLP of `examples/flax_autoencoder_coulomb.py`
  (its own `train`: Adam 1e-3, batch 256, λ = `--lam`), which is how a user brings
  our losses into their own code;
* `trainer_mlp`: the trainer's MLP (`couae_jax.loop.fit_seeds`, hidden 128,
  batch 256, λ = `--lam`, the trainer's Adam betas 0.5/0.9), seeds trained
  together.

The regularisers: `sliced_coulomb` (the default of `losses.coulomb_regularizer`),
`coulomb` (the paper's `1/(u^(h-2) + eps)`), `mc_slices` (the Monte-Carlo
construction the default's kernel is the exact average of: the 3-D Coulomb
MMD on 16 random orthonormal 3-D projections redrawn each step; Flax example
only) and `wae` (multi-scale IMQ).

Per run, on the codes of all 1,797 digits against as many N(0, I) samples:
the per-dimension standard deviation's range (the prior's is 1), the mean
code norm (the prior's is about sqrt(h)), the energy distance
`2 E‖z - z'‖ - E‖z - z̃‖ - E‖z' - z̃'‖` (float64, 0 for identical
distributions; the null value at this size is about 0.01 at h = 8) and its
ratio to WAE's in the same setting, and the reconstruction error. Writes
DIR/results.json; prints one table.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import pathlib
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax import config as config_lib
from couae_jax import data as data_lib
from couae_jax import kernels, loop, losses, mmd
from experiments import _results

REGULARIZERS = ("sliced_coulomb", "coulomb", "mc_slices", "wae")
#: The Monte-Carlo construction's slices per step, as in issue #10's lead.
MC_SLICES = 16
EXAMPLE = (pathlib.Path(__file__).resolve().parent.parent / "examples"
           / "flax_autoencoder_coulomb.py")
SHARED = dict(batch_size=256, learning_rate=1e-3)
#: A run has collapsed when its mean code std falls below this, escaped when
#: its mean code norm exceeds the prior's by this factor.
COLLAPSE_STD, ESCAPE_FACTOR = 0.5, 1.5


def _flax_example():
  spec = importlib.util.spec_from_file_location("flax_example", EXAMPLE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def mc_slices_regularizer(codes: jax.Array, *, key: jax.Array) -> jax.Array:
  """Mean 3-D Coulomb MMD² over `MC_SLICES` random orthonormal 3-D slices."""
  slice_key, prior_key = jax.random.split(key)
  prior = jax.random.normal(prior_key, codes.shape, codes.dtype)
  frames, _ = jnp.linalg.qr(jax.random.normal(
      slice_key, (MC_SLICES, codes.shape[-1], 3), codes.dtype))
  coulomb_3d = functools.partial(kernels.coulomb, scale=6.0**0.5)
  return jnp.mean(jax.vmap(
      lambda frame: mmd.mmd2(codes @ frame, prior @ frame, coulomb_3d))(frames))


def example_regularizer(name: str) -> Callable[..., jax.Array]:
  if name == "mc_slices":
    return mc_slices_regularizer
  if name == "wae":
    return losses.wae_regularizer
  return functools.partial(losses.coulomb_regularizer, kernel=name)


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
  """`2 E‖x - y‖ - E‖x - x'‖ - E‖y - y'‖` over all pairs, float64."""
  def mean_distance(a, b):
    sq = (np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :]
          - 2.0 * a @ b.T)
    return float(np.mean(np.sqrt(np.maximum(sq, 0.0))))
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return 2.0 * mean_distance(x, y) - mean_distance(x, x) - mean_distance(y, y)


def code_statistics(codes: np.ndarray, rec: float, seed: int) -> dict:
  codes = np.asarray(codes, np.float64)
  prior = np.random.default_rng(10_000 + seed).normal(size=codes.shape)
  std = codes.std(axis=0)
  norm = float(np.linalg.norm(codes, axis=1).mean())
  prior_norm = float(np.linalg.norm(prior, axis=1).mean())
  return {"std_min": float(std.min()), "std_max": float(std.max()),
          "std_mean": float(std.mean()), "norm": norm,
          "prior_norm": prior_norm, "energy": energy_distance(codes, prior),
          "rec": rec, "collapsed": bool(std.mean() < COLLAPSE_STD),
          "escaped": bool(norm > ESCAPE_FACTOR * prior_norm)}


def run_flax_example(name: str, h: int, seeds, steps: int, lam: float,
                     images: np.ndarray) -> list[dict]:
  example = _flax_example()
  images = jnp.asarray(images.reshape(len(images), -1), jnp.float32)
  runs = []
  for seed in seeds:
    codes, reconstruction = example.train(
        images, example_regularizer(name), latent_dim=h, steps=steps,
        batch_size=SHARED["batch_size"], lam=lam, seed=seed,
        log=lambda _: None)
    rec = float(jnp.mean(losses.squared_error(reconstruction, images)))
    runs.append(code_statistics(codes, rec, seed))
  return runs


def run_trainer(name: str, h: int, seeds, steps: int, lam: float,
                images: np.ndarray, workdir: str) -> list[dict]:
  model = "wae" if name == "wae" else "couae"
  extra = {} if model == "wae" else {"coulomb_kernel": name}
  config = config_lib.TrainConfig(
      data="digits", model=model, architecture="mlp", hidden=(128,),
      latent_dim=h, steps=steps, lam=lam, log_every=steps,
      checkpoint_every=steps, steps_per_call=100, **SHARED, **extra)
  trained = loop.fit_seeds(config, list(seeds),
                           os.path.join(workdir, f"trainer_{name}_h{h}"),
                           progress=False)
  runs = []
  for seed, member in zip(seeds, trained):
    codes = np.asarray(member.encode(images))
    rec = float(np.mean(losses.squared_error(member.reconstruct(images),
                                             jnp.asarray(images))))
    runs.append(code_statistics(codes, rec, seed))
  return runs


def summarise(runs: list[dict]) -> dict:
  keys = ("std_min", "std_max", "std_mean", "norm", "prior_norm", "energy",
          "rec")
  return ({k: float(np.mean([r[k] for r in runs])) for k in keys}
          | {"energy_std": float(np.std([r["energy"] for r in runs])),
             "collapsed": sum(r["collapsed"] for r in runs),
             "escaped": sum(r["escaped"] for r in runs), "seeds": runs})


def print_table(results: dict) -> None:
  print("setting       h  regulariser      std range     norm (prior)  "
        "energy (x WAE)      rec  collapsed/escaped")
  for setting, by_h in results["settings"].items():
    for h, rows in by_h.items():
      wae = rows.get("wae", {}).get("energy")
      for name, row in rows.items():
        ratio = f"{row['energy'] / wae:5.2f}" if wae else "  -  "
        print(f"{setting:12s} {h:>3s}  {name:15s} [{row['std_min']:.2f}, "
              f"{row['std_max']:.2f}]  {row['norm']:5.2f} ({row['prior_norm']:5.2f})"
              f"  {row['energy']:.4f} ({ratio})  {row['rec']:7.3f}  "
              f"{row['collapsed']}/{row['escaped']}")


def main(argv: Optional[list[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--dims", default="8,20,64")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--lam", type=float, default=10.0)
  parser.add_argument("--regularizers", default=",".join(REGULARIZERS))
  parser.add_argument("--settings", default="flax_example,trainer_mlp")
  args = parser.parse_args(argv)
  dims = [int(v) for v in args.dims.split(",")]
  seeds = [int(v) for v in args.seeds.split(",")]
  names = args.regularizers.split(",")
  settings = args.settings.split(",")
  for label, chosen, allowed in (
      ("regularizers", names, REGULARIZERS),
      ("settings", settings, ("flax_example", "trainer_mlp"))):
    if set(chosen) - set(allowed):
      parser.error(f"unknown {label} {sorted(set(chosen) - set(allowed))}; "
                   f"choose from {allowed}")
  os.makedirs(args.workdir, exist_ok=True)
  images = data_lib.load_digits()[0]
  start = time.perf_counter()
  results = {"steps": args.steps, "lam": args.lam, "seeds": seeds,
             "settings": {}}
  for setting in settings:
    by_h = results["settings"].setdefault(setting, {})
    for h in dims:
      for name in names:
        if setting == "trainer_mlp" and name == "mc_slices":
          continue
        began = time.perf_counter()
        runs = (run_flax_example(name, h, seeds, args.steps, args.lam, images)
                if setting == "flax_example" else
                run_trainer(name, h, seeds, args.steps, args.lam, images,
                            args.workdir))
        row = summarise(runs) | {"seconds": time.perf_counter() - began}
        by_h.setdefault(str(h), {})[name] = row
        print(f"{setting} h={h} {name}: energy {row['energy']:.4f}, std "
              f"[{row['std_min']:.2f}, {row['std_max']:.2f}] "
              f"({row['seconds']:.0f} s)", flush=True)
  _results.finish(args.workdir, results, start, print_table)


if __name__ == "__main__":
  main()
