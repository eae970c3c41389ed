"""CelebA 64×64: FID of CouAE, WAE and VAE (the paper's second table).

Command:
  python -m experiments.celeba --data-dir DIR --fid-weights FILE
      [--workdir runs/celeba] [--models couae,wae,vae] [--seeds 0]
      [--epochs 55 | --steps N] [--fid-samples 10000] [--config.FIELD=VALUE]

DIR holds the standard `img_align_celeba/` folder (202,599 JPEGs, 178×218).
FILE is the FID Inception's weights as an npz: pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth` converted by
`python -m experiments.convert_fid_weights` (the error without it says where
to get it). The weights are checked before any training.

The seeds of each model are trained together by the generic trainer
(`couae_jax.loop.fit_seeds`) on the WAE paper's preprocessing (centre crop 140, resize 64; see
`couae_jax.data.load_celeba`) with its 64×64 convolutional networks, in
DIR_WORK/<model>/seed<k> (restorable with `couae_jax.restore`). Then
`--fid-samples` generated images, quantised to 8 bits, are scored by FID
against as many data images (the first in file order), with pool-3 features
of the FID Inception at 299×299. A reference row scores the next
`--fid-samples` data images against the same statistics: the FID a perfect
model would get at this sample size. Writes DIR_WORK/results.json and
DIR_WORK/<model>/seed<k>/samples.png (8×8 generated images).

Settings (the WAE paper's CelebA run, Tolstikhin et al. 2018, appendix):
latent 64, batch 100, 55 epochs, Adam(1e-3, b1 0.5, b2 0.999) with WAE's
schedule: the rate is halved after epoch 30 and multiplied by 0.2 after epoch
50 (`schedule='piecewise'`, boundaries at 30/55 and 50/55 of the steps run, so
a shorter `--epochs` or `--steps` keeps the same shape); the prior N(0, 2 I)
(`prior_scale` = √2) for CouAE and WAE, whose kernels' scales follow it
(IMQ base C = 2·h·σ² = 4h; the sliced Coulomb kernel's length σ·√(2h) =
2√h: at h = 64 the paper's kernel is not positive definite, BUILD_NOTES
section 1b); 5×5 kernels in
every convolution of the encoder and decoder (`conv_kernel_size=5`).
WAE's λ = 100 multiplies the MMD against 0.05·‖x − x̂‖² on pixels in
[-1, 1], which is 0.2·‖x − x̂‖² on our [0, 1] pixels: λ = 500 here, for WAE
and CouAE alike.
VAE: REC + KL (a Gaussian decoder of variance 1/2, the authors' 2018
objective), with its KL to N(0, I) (`prior_scale=1`; the VAE rejects
others): with linear code layers at both ends of the networks, N(0, 2 I)
would be the same model family with the codes rescaled, so only the
optimisation could differ.

Paper (ECAI 2020, Table 2): FID VAE 63, WAE 55, CouAE 47.
Expected result: not run yet (no CelebA and no weights on the development
machine); see BUILD_NOTES.md, section 7.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Callable, Optional

import jax
import numpy as np

from couae_jax import config as config_lib
from couae_jax import data as data_lib
from couae_jax import fid, loop
from experiments import _results

PAPER = {"vae": 63.0, "wae": 55.0, "couae": 47.0}

EPOCHS = 55
#: WAE's learning-rate drops: ×0.5 after epoch 30, ×0.2 after epoch 50.
LR_DROPS = {30: 0.5, 50: 0.2}

MODELS = {
    "couae": dict(model="couae", lam=500.0),
    "wae": dict(model="wae", lam=500.0),
    "vae": dict(model="vae", lam=1.0, prior_scale=1.0),  # KL to N(0, I)
}
SHARED = dict(data="celeba", architecture="conv", latent_dim=64,
              conv_kernel_size=5, batch_size=100, learning_rate=1e-3, b1=0.5,
              b2=0.999, schedule="piecewise",
              lr_boundaries=tuple(epoch / EPOCHS for epoch in LR_DROPS),
              lr_factors=tuple(LR_DROPS.values()), prior="normal",
              prior_scale=2.0 ** 0.5, log_every=500, checkpoint_every=5000)
SAMPLE_BATCH = 500  # images per decoder call (one compilation)


def model_config(name: str, data_dir: str, seed: int, steps: int,
                 overrides) -> config_lib.TrainConfig:
  config = config_lib.TrainConfig(
      **SHARED | MODELS[name] | dict(data_path=data_dir, seed=seed,
                                     steps=steps))
  return config_lib.without_unread_fields(  # e.g. eps: CouAE's only
      config_lib.parse_overrides(config, overrides))


def generate_images(trained, n: int, seed: int) -> np.ndarray:
  """`n` generated images of a `TrainedModel`, quantised to uint8."""
  key = jax.random.key(seed)
  size = min(n, SAMPLE_BATCH)
  batches = []
  for index in range(math.ceil(n / size)):
    samples = trained.sample(jax.random.fold_in(key, index), size)
    batches.append(fid.to_uint8(np.asarray(samples)))
  return np.concatenate(batches)[:n]


def save_image_grid(images: np.ndarray, path: str, columns: int = 8,
                    scale: int = 1) -> None:
  """Tiles uint8 images `[n, H, W, C]` (C = 1 or 3) into one PNG."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  n, height, width, channels = images.shape
  rows = math.ceil(n / columns)
  canvas = np.zeros((rows * height, columns * width, channels), np.uint8)
  for i, image in enumerate(images):
    row, col = divmod(i, columns)
    canvas[row * height:(row + 1) * height,
           col * width:(col + 1) * width] = image
  picture = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
  if scale > 1:
    picture = picture.resize((picture.width * scale, picture.height * scale),
                             Image.Resampling.NEAREST)
  picture.save(path)


def mean_std(values) -> dict:
  return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def run_models(models, seeds, make_config: Callable[[str, int],
                                                    config_lib.TrainConfig],
               workdir: str, score: Callable[[np.ndarray], dict],
               num_samples: int, *, grid_scale: int = 1) -> dict:
  """Trains the seeds of every model together with `loop.fit_seeds`,
  generates `num_samples` images per seed and scores them with
  `score(uint8 images) -> {metric: value}`.

  Returns:
    `{model: {'<metric>': {'mean', 'std'}, 'seeds', 'steps', 'config',
    'train_seconds', 'runs': [{'seed', '<metric>', 'workdir'}]}}`.
  """
  results = {}
  for name in models:
    config = make_config(name, seeds[0])
    start = time.perf_counter()
    trained_models = loop.fit_seeds(config, seeds,
                                    os.path.join(workdir, name),
                                    progress=False)
    train_s = time.perf_counter() - start
    runs = []
    for seed, trained in zip(seeds, trained_models):
      run_dir = os.path.relpath(
          loop.seed_workdir(os.path.join(workdir, name), seed), workdir)
      images = generate_images(trained, num_samples, seed)
      save_image_grid(images[:64], os.path.join(workdir, run_dir,
                                                "samples.png"),
                      scale=grid_scale)
      metrics = score(images)
      scalars = [k for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
      runs.append({"seed": seed, **metrics, "workdir": run_dir})
      print(f"  {name} seed {seed}: "
            + ", ".join(f"{k} {metrics[k]:.4g}" for k in scalars), flush=True)
    print(f"  {name}: {len(seeds)} seeds trained together in {train_s:.0f} s",
          flush=True)
    results[name] = {k: mean_std([run[k] for run in runs])
                     for k in scalars} | {
        "seeds": list(seeds), "steps": config.steps,
        "config": config.to_dict(), "train_seconds": train_s, "runs": runs}
  return results


def print_table(results: dict) -> None:
  print(f"\n{'row':<36}{'FID':>18}{'paper':>8}")
  reference = results["reference_fid"]
  if reference is not None:
    print(f"{'data vs data (metric floor)':<36}{reference:>18.2f}")
  for name in results["models"]:
    r = results[name]
    print(f"{name:<36}{r['fid']['mean']:>10.2f} ± {r['fid']['std']:<5.2f}"
          f"{PAPER[name]:>8.0f}")
    print(f"{'':<36}per seed: "
          + ", ".join(f"{run['fid']:.2f}" for run in r["runs"]))


def main(argv: Optional[list[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", required=True,
                      help="holds img_align_celeba/ (or is that folder)")
  parser.add_argument("--fid-weights", default=None,
                      help=f"the converted {fid.WEIGHTS_NAME} (default "
                           f"$COUAE_FID_WEIGHTS or "
                           f"~/.cache/couae_jax/{fid.WEIGHTS_NAME})")
  parser.add_argument("--workdir", default="runs/celeba")
  parser.add_argument("--models", default="couae,wae,vae")
  parser.add_argument("--seeds", default="0", help="comma-separated")
  parser.add_argument("--epochs", type=float, default=EPOCHS)
  parser.add_argument("--steps", type=int, default=None,
                      help="training steps (default: --epochs over the data)")
  parser.add_argument("--fid-samples", type=int, default=10_000,
                      help="generated and data images per FID")
  parser.add_argument("--fid-batch", type=int, default=100)
  parser.add_argument("--fid-image-size", type=int,
                      default=fid.INCEPTION_SIZE,
                      help="Inception input side; FID is defined at 299 "
                           "(smaller only for tests)")
  args, overrides = parser.parse_known_args(argv)
  models = args.models.split(",")
  unknown = set(models) - set(MODELS)
  if unknown:
    parser.error(f"unknown models {sorted(unknown)}; choose from "
                 f"{sorted(MODELS)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  if args.fid_samples < 2:
    parser.error("--fid-samples must be >= 2")

  # Everything that can fail fails before hours of training.
  weights_path = args.fid_weights or fid.default_weights_path()
  feature_fn = fid.inception_feature_fn(
      fid.load_inception_weights(weights_path),
      image_size=args.fid_image_size)
  count = len(data_lib.celeba_files(args.data_dir))
  batch = model_config(models[0], args.data_dir, 0, 1, overrides).batch_size
  steps = args.steps or max(1, round(args.epochs * count / batch))

  def make_config(name, seed):
    return model_config(name, args.data_dir, seed, steps, overrides)

  for name in models:
    config_lib.validate(make_config(name, seeds[0]))

  os.makedirs(args.workdir, exist_ok=True)
  start = time.perf_counter()
  n = min(args.fid_samples, count)
  data = data_lib.load_celeba(args.data_dir, limit=min(2 * n, count),
                              dtype=np.uint8)

  def score(images):
    return {"fid": fid.frechet_distance(
        *fid.activation_statistics(feature_fn, images,
                                   batch_size=args.fid_batch), *statistics)}

  statistics = fid.activation_statistics(feature_fn, data[:n],
                                         batch_size=args.fid_batch)
  reference = score(data[n:2 * n])["fid"] if len(data) >= 2 * n else None
  del data

  results = {"models": models, "images": count, "steps": steps,
             "fid_samples": n, "fid_image_size": args.fid_image_size,
             "fid_weights": str(weights_path),
             "fid_weights_verified": fid.weights_source_verified(weights_path),
             "reference_fid": reference, "paper_fid": PAPER}
  print(f"{count} images, {steps} steps per model, FID on {n} samples",
        flush=True)
  results |= run_models(models, seeds, make_config, args.workdir, score, n)
  _results.finish(args.workdir, results, start, print_table)
  if not results["fid_weights_verified"]:
    print("\nWARNING: the FID weights are not pytorch-fid's verified file; "
          "these numbers are not comparable with published FIDs.")


if __name__ == "__main__":
  try:
    main()
  except fid.FIDWeightsNotFoundError as e:
    sys.exit(f"error: {e}")
