"""Digits 8×8: sample quality of CouAE, WAE and VAE with no download.

Command:
  python -m experiments.digits --workdir runs/digits [--seeds 0,1,2]
      [--steps N] [--models couae,wae,vae] [--full] [--config.FIELD=VALUE]

The CelebA pipeline (convolutional autoencoders, the seeds of a model trained
together by `loop.fit_seeds`,
generated images quantised to 8 bits, a Fréchet distance of features) on
scikit-learn's 1,797 8×8 digits, with the FID Inception replaced by a small
classifier trained here on the digits' labels:

* a fixed split (seed 0): 70 % training digits (autoencoders and classifier
  train on them, written to DIR/digits_train.npz and read with data="npz"),
  30 % held out;
* the classifier, an MLP 64 → 128 → 64 → 10, reports its held-out accuracy;
  its 64-d penultimate ReLU features define the Fréchet distance (FD,
  `couae_jax.fid.frechet_distance`) between as many generated digits as there
  are training digits and the held-out digits. The reference row scores the
  training digits the same way: the FD of a perfect model at these sizes;
* mode coverage: the classes the classifier assigns to generated digits,
  `classes` (those with at least 1 % of the samples), the histogram's KL
  divergence and total variation from uniform, and the mean top-class
  probability (`confidence`, higher for recognisable digits).

Writes DIR/results.json (per model: mean ± std over seeds and per-seed values)
and DIR/<model>/seed<k>/samples.png.

Defaults (quick): 3 seeds, 500 steps (40 epochs) of width-1/16 networks
(the WAE CelebA architecture is far too wide for 8×8 images); a few minutes
on a free 2-core CPU. `--full`: 5 seeds, 5000 steps, width 0.25.

Expected result: see BUILD_NOTES.md, section 7 (what these defaults gave).
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Optional

import flax.linen as nn
import jax
import numpy as np
import optax

from couae_jax import config as config_lib
from couae_jax import data as data_lib
from couae_jax import fid
from experiments import _results, celeba

#: WAE's MNIST λ = 10 multiplies the MMD against 0.05·‖x − x̂‖² on [0, 1]
#: pixels: λ = 200 against our ‖x − x̂‖². VAE: REC + 0.05·KL, the ELBO of a
#: Gaussian decoder with variance λ/2 = 0.025 (σ ≈ 0.16 on [0, 1] pixels);
#: grid.py's REC + KL (σ² = 1/2) blurs digits into a few classes.
MODELS = {
    "couae": dict(model="couae", lam=200.0),
    "wae": dict(model="wae", lam=200.0),
    "vae": dict(model="vae", lam=0.05),
}
SHARED = dict(data="npz", architecture="conv", latent_dim=8, batch_size=100,
              learning_rate=1e-3, b1=0.5, b2=0.999, prior="normal",
              log_every=500, checkpoint_every=5000, steps_per_call=50)
QUICK = dict(seeds=(0, 1, 2), steps=500, width=0.0625)
FULL = dict(seeds=(0, 1, 2, 3, 4), steps=5000, width=0.25)

SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.3
NUM_CLASSES = 10
#: A class is covered when it receives at least this share of the samples
#: (a tenth of its share under a uniform class distribution).
COVERAGE_SHARE = 0.01


def split_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """`(train_x, train_y, held_x, held_y)`: the fixed 70/30 split."""
  images, labels = data_lib.load_digits()
  order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
  held = order[:round(HELD_OUT_FRACTION * len(images))]
  train = order[len(held):]
  return images[train], labels[train], images[held], labels[held]


class Classifier(nn.Module):
  """An MLP on flattened digits; `features` is the penultimate layer."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(logits [B, 10], features [B, 64])` of digits `x: [B, 8, 8, 1]`."""
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(128)(x))
    features = nn.relu(nn.Dense(64)(x))
    return nn.Dense(NUM_CLASSES)(features), features


def train_classifier(images: np.ndarray, labels: np.ndarray, *,
                     steps: int = 800, seed: int = 0):
  """Full-batch AdamW on cross-entropy; returns the parameters."""
  model = Classifier()
  params = model.init(jax.random.key(seed), images[:1])
  optimizer = optax.adamw(3e-3, weight_decay=1e-4)

  def loss_fn(params):
    logits, _ = model.apply(params, images)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()

  def step(carry, _):
    params, state = carry
    grads = jax.grad(loss_fn)(params)
    updates, state = optimizer.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.jit(lambda p: jax.lax.scan(
      step, (p, optimizer.init(p)), length=steps))(params)
  return params


@functools.partial(jax.jit, static_argnums=0)
def _classify(model, params, images):
  logits, features = model.apply(params, images)
  return jax.nn.softmax(logits), features


def classify(params, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`(class probabilities [n, 10], features [n, 64])`; uint8 images are
  divided by 255."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / np.float32(255.0)
  probabilities, features = _classify(Classifier(), params, images)
  return np.asarray(probabilities), np.asarray(features)


def class_coverage(probabilities: np.ndarray) -> dict:
  """Coverage of the predicted classes of `[n, 10]` probabilities."""
  counts = np.bincount(probabilities.argmax(1), minlength=NUM_CLASSES)
  share = counts / counts.sum()
  nonzero = share > 0
  return {"classes": int((share >= COVERAGE_SHARE).sum()),
          "kl_uniform": float(np.sum(share[nonzero]
                                     * np.log(NUM_CLASSES * share[nonzero]))),
          "tv_uniform": float(0.5 * np.abs(share - 1 / NUM_CLASSES).sum()),
          "confidence": float(probabilities.max(1).mean()),
          "class_counts": counts.tolist()}


def make_scorer(params, held_out: np.ndarray):
  """`score(images) -> {'fd', coverage...}` against the held-out digits."""
  held_statistics = fid.feature_statistics(classify(params, held_out)[1])

  def score(images: np.ndarray) -> dict:
    probabilities, features = classify(params, images)
    distance = fid.frechet_distance(*fid.feature_statistics(features),
                                    *held_statistics)
    return {"fd": distance} | class_coverage(probabilities)

  return score


def print_table(results: dict) -> None:
  print(f"\nclassifier held-out accuracy "
        f"{results['classifier']['held_out_accuracy']:.3f}")
  print(f"\n{'row':<24}{'FD (classifier)':>20}{'classes':>10}"
        f"{'KL to uniform':>16}{'TV':>8}{'confidence':>12}")
  ref = results["reference"]
  print(f"{'training vs held-out':<24}{ref['fd']:>20.3f}{ref['classes']:>10}"
        f"{ref['kl_uniform']:>16.4f}{ref['tv_uniform']:>8.3f}"
        f"{ref['confidence']:>12.3f}")
  for name in results["models"]:
    r = results[name]
    classes = "/".join(str(run["classes"]) for run in r["runs"])
    print(f"{name:<24}{r['fd']['mean']:>12.3f} ± {r['fd']['std']:<5.3f}"
          f"{classes:>10}"
          f"{r['kl_uniform']['mean']:>9.4f} ± {r['kl_uniform']['std']:<5.3f}"
          f"{r['tv_uniform']['mean']:>8.3f}{r['confidence']['mean']:>12.3f}")
    print(f"{'':<24}FD per seed: "
          + ", ".join(f"{run['fd']:.3f}" for run in r["runs"]))


def main(argv: Optional[list[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--seeds", default=None,
                      help="comma-separated (default 0,1,2; --full 0..4)")
  parser.add_argument("--steps", type=int, default=None,
                      help="training steps (default 500; --full 5000)")
  parser.add_argument("--models", default="couae,wae,vae")
  parser.add_argument("--full", action="store_true",
                      help="5 seeds, 5000 steps, width 0.25")
  args, overrides = parser.parse_known_args(argv)
  preset = FULL if args.full else QUICK
  seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds
           else list(preset["seeds"]))
  steps = args.steps or preset["steps"]
  models = args.models.split(",")
  unknown = set(models) - set(MODELS)
  if unknown:
    parser.error(f"unknown models {sorted(unknown)}; choose from "
                 f"{sorted(MODELS)}")
  os.makedirs(args.workdir, exist_ok=True)
  train_path = os.path.abspath(os.path.join(args.workdir, "digits_train.npz"))

  def make_config(name, seed):
    config = config_lib.TrainConfig(
        **SHARED | MODELS[name] | dict(
            data_path=train_path, seed=seed, steps=steps,
            width=preset["width"]))
    return config_lib.without_unread_fields(  # e.g. eps: CouAE's only
        config_lib.parse_overrides(config, overrides))

  for name in models:  # reject bad overrides before any training
    config_lib.validate(make_config(name, seeds[0]))

  start = time.perf_counter()
  train_x, train_y, held_x, held_y = split_digits()
  np.savez(train_path, x=train_x)
  params = train_classifier(train_x, train_y)
  accuracy = {name: float((classify(params, x)[0].argmax(1) == y).mean())
              for name, x, y in (("train_accuracy", train_x, train_y),
                                 ("held_out_accuracy", held_x, held_y))}
  score = make_scorer(params, held_x)
  # Training digits go through the generated digits' path (8-bit pixels).
  reference = score(fid.to_uint8(train_x))
  results = {"models": models, "train_digits": len(train_x),
             "held_out_digits": len(held_x), "samples": len(train_x),
             "classifier": accuracy | {"feature_dim": 64},
             "reference": reference}
  print(f"classifier: held-out accuracy {accuracy['held_out_accuracy']:.3f}; "
        f"{len(seeds)} seeds × {len(models)} models, {steps} steps",
        flush=True)
  results |= celeba.run_models(models, seeds, make_config, args.workdir,
                               score, len(train_x), grid_scale=4)
  _results.finish(args.workdir, results, start, print_table)


if __name__ == "__main__":
  main()
