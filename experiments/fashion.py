"""Fashion-MNIST 28×28: FD of CouAE, WAE and VAE in a classifier's features.

Command:
  python -m experiments.fashion --workdir runs/fashion
      [--data-dir /usr/share/datasets/fashion-mnist] [--full] [--seeds 0,1,2]
      [--steps N] [--models couae,wae,vae] [--dims 8,64]
      [--widths 0.25,0.5,1 | --widths none] [--classifier FILE]
      [--config.FIELD=VALUE]

The data are the four standard IDX files (`train-images-idx3-ubyte`, ...,
plain or .gz) in `--data-dir`: `apt-get install dataset-fashion-mnist` puts
them in /usr/share/datasets/fashion-mnist/, or point it at your own copy.
The digits experiment's pipeline (`experiments.digits`) at 28×28:

* a classifier, a small CNN trained here on the 60,000 training images,
  reports its test accuracy; its 128-d penultimate ReLU features define the
  Fréchet distance (FD) between as many generated images as test images
  (10,000, quantised to 8 bits) and the test split, and KID, the unbiased
  MMD² of the same features under the polynomial kernel (x·y/d + 1)³
  (Bińkowski et al. 2018), averaged over disjoint subsets of 1,000. The
  floor row scores as many training images the same way: what a perfect
  model gets at this sample size. Class coverage and balance as in
  `digits.class_coverage`. The classifier is saved (`--classifier`, default
  DIR/classifier.msgpack) and reused, so a resumed or repeated run, or
  several workdirs given the same file, score with the same features;
* CouAE, WAE and VAE, the seeds of each trained together by the trainer
  (`loop.fit_seeds`, data="mnist" on the training split) with the WAE
  paper's MNIST-style convolutional networks (`architecture="conv"`, 4×4
  kernels; at 28×28 the encoder has two stride-2 stages, 128 and 256
  channels × width, and the decoder goes 7×7×1024 → 14×14×512 → 28×28×256
  → 28×28×1, × width), at each latent size of `--dims`, in
  DIR/h<h>/<model>/seed<k> (restorable with `couae_jax.restore`);
* convergence: each model is trained in segments ending at 1/4, 1/2 and all
  of the steps, resuming from its checkpoints, and scored at each;
  DIR/fd_vs_steps.png plots FD against steps. Scores are kept per segment in
  DIR/h<h>/<model>/fd_vs_steps.json, so a rerun (and `--full` over several
  sessions) skips finished segments and resumes an interrupted one;
* the test reconstruction error (‖x − x̂‖² per image, mean over the test
  split), DIR/h<h>/<model>/seed<k>/samples.png (64 generated images) and
  reconstructions.png (rows of 8 test images over their reconstructions);
* the width ablation (`--widths`, factors of the run's width; "none" skips
  it): CouAE at h = 8 at each factor, in DIR/width_<f>/... (×1 is the main
  CouAE h = 8 run), with FD and ξ, the largest per-image reconstruction
  error over the training and test splits (`bounds.estimate_xi`).

Writes DIR/results.json: per row `<model>_h<h>`: `fd_mean`, `fd_std`,
`fd_per_seed`, `kid_mean`, `classes` (per seed), `rec_test_mean`, `steps`,
`fd_vs_steps`, the config and per-seed runs; the `floor` row, the
`classifier`'s accuracy and the `width_ablation`; and prints the tables.

Defaults (quick, about an hour on the shared 2-core CPU): 3 seeds, 300 steps
(half an epoch), width 1/32, h = 8 and 64, batch 100, Adam (b1 0.5, b2
0.999), N(0, I). On CPU the trainer's step costs about five times the plain
jitted step (BUILD_NOTES), so the default is a short run: the FD-vs-steps
figure says how far from converged it is. `--full`: 5 seeds, 3000 steps
(5 epochs), the same width, each row at its tuned λ and learning rate
(`FULL_TUNED`); resumable, and on an accelerator worth `--config.width=1`.
Its cost scales with the machine: 2 seeds of all six rows at 3000 steps took
70 min on a 2-core CPU whose matmul ceiling is 111-144 GFLOP/s (BUILD_NOTES
section 7), so `--full` needs about three hours there and, by the 2000-step
run's rate, about 1.5 on one three times as fast (estimates, not run).

Hyperparameters (λ and learning rate per model; `--config.lam` etc. override
them). Starting points, from the digits experiment: λ = 200 for CouAE and WAE
(WAE's MNIST λ = 10 against 0.05·‖x − x̂‖² on [0, 1] pixels, already the
784-pixel value) and λ = 0.05 for the VAE (REC + λ·KL is the ELBO of a
Gaussian decoder of variance λ/2: σ ≈ 0.16; λ = 0.2 gives σ ≈ 0.32),
learning rate 1e-3. Sweep, the same effort for each model: three λ at
learning rate 1e-3, 1 seed, h = 8, the quick width and steps, FD at 300
steps (dev-cpu, shared):
  CouAE  λ = 50: 217.3, 200: 216.4, 800: 224.8  → 200;
  WAE    λ = 50: 216.6, 200: 215.3, 800: 225.5  → 200;
  VAE    λ = 0.0125: 262.5, 0.05: 236.7, 0.2: 218.3  → 0.2 (the grid's edge:
         a larger λ may do better still).
The quick run keeps learning rate 1e-3 for all. `--full` takes each row's
learning rate and then its λ from sweeps at its own length (3000 steps, 2
seeds, the same grids for every model; BUILD_NOTES section 7), in
`FULL_TUNED`.

Expected result of the defaults (dev-cpu, 55 min wall under a load of 4-9):
FD at h = 8 CouAE 213.6 ± 4.5, WAE 215.6 ± 3.0, VAE 208.6 ± 7.0; at h = 64
268.0 ± 3.9, 267.1 ± 4.4, 288.6 ± 0.5; floor 0.17; classifier test accuracy
0.908; width ×0.25/×0.5/×1 FD 303.6/251.7/213.6 (BUILD_NOTES section 7).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Optional

import flax.linen as nn
import flax.serialization
import jax
import numpy as np
import optax

import couae_jax
from couae_jax import bounds, checkpointing, fid, losses
from couae_jax import config as config_lib
from couae_jax import data as data_lib
from experiments import _results, celeba, digits

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"

MODELS = {
    "couae": dict(model="couae", lam=200.0, learning_rate=1e-3),
    "wae": dict(model="wae", lam=200.0, learning_rate=1e-3),
    "vae": dict(model="vae", lam=0.2, learning_rate=1e-3),
}
SHARED = dict(data="mnist", architecture="conv", batch_size=100, b1=0.5,
              b2=0.999, prior="normal", log_every=100, checkpoint_every=1000,
              steps_per_call=50)
#: `--full`'s λ and learning rate per row `<model>_h<h>`: each row's lowest
#: mean FD at 3000 steps, 2 seeds, in the sweeps of BUILD_NOTES section 7, on
#: the same grids for every model: learning rates 1e-2 and 3e-2 (1e-2 won
#: every row), then λ at ×1/4, ×1 and ×4 of MODELS'. The quick run keeps
#: MODELS' values.
FULL_TUNED = {
    "couae_h8": dict(lam=50.0, learning_rate=1e-2),
    "wae_h8": dict(lam=50.0, learning_rate=1e-2),
    "vae_h8": dict(lam=0.2, learning_rate=1e-2),
    "couae_h64": dict(lam=800.0, learning_rate=1e-2),
    "wae_h64": dict(lam=800.0, learning_rate=1e-2),
    "vae_h64": dict(lam=0.05, learning_rate=1e-2),
}
QUICK = dict(seeds=(0, 1, 2), steps=300, width=1 / 32, tuned={})
FULL = dict(seeds=(0, 1, 2, 3, 4), steps=3000, width=1 / 32,
            tuned=FULL_TUNED)
#: Fractions of the steps at which each model is scored (the last is the end).
EVAL_FRACTIONS = (0.25, 0.5, 1.0)
DIMS = (8, 64)
WIDTH_FACTORS = (0.25, 0.5, 1.0)
#: The width ablation's latent size (WAE's MNIST h).
ABLATION_DIM = 8
#: Fields the command line sets through its own flags (or per row).
OWN_FLAGS = {"steps": "--steps", "seed": "--seeds", "latent_dim": "--dims",
             "model": "--models", "data": "--data-dir",
             "data_path": "--data-dir"}

FEATURE_DIM = 128
CLASSIFIER_EPOCHS = 4
CLASSIFIER_BATCH = 128
CLASSIFIER_LEARNING_RATE = 2e-3
#: Images per classifier or autoencoder call (one compilation per shape).
EVAL_BATCH = 1000
KID_SUBSET = 1000
GRID_SCALE = 2  # 28×28 images, drawn 2× larger


# ---------------------------------------------------------------------------
# The classifier and the metric.


class Classifier(nn.Module):
  """Two 3×3 conv + 2×2 max-pool stages (16, 32 channels), a ReLU layer
  whose activations are the features, and the logits."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(logits [B, 10], features [B, FEATURE_DIM])` of `x: [B, 28, 28, 1]`."""
    for channels in (16, 32):
      x = nn.relu(nn.Conv(channels, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    features = nn.relu(nn.Dense(FEATURE_DIM)(x.reshape(x.shape[0], -1)))
    return nn.Dense(digits.NUM_CLASSES)(features), features


def train_classifier(images: np.ndarray, labels: np.ndarray, *,
                     seed: int = 0):
  """Adam on minibatch cross-entropy for `CLASSIFIER_EPOCHS`, the rate
  decayed to 0 by a cosine; the params."""
  model = Classifier()
  params = model.init(jax.random.key(seed), images[:1])
  batch = min(CLASSIFIER_BATCH, len(images))
  steps_per_epoch = len(images) // batch
  optimizer = optax.adam(optax.cosine_decay_schedule(
      CLASSIFIER_LEARNING_RATE, CLASSIFIER_EPOCHS * steps_per_epoch))
  state = optimizer.init(params)

  @jax.jit
  def step(params, state, x, y):
    def loss_fn(params):
      logits, _ = model.apply(params, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    updates, state = optimizer.update(jax.grad(loss_fn)(params), state)
    return optax.apply_updates(params, updates), state

  # A Python loop over one jitted step: XLA:CPU ran the autoencoders'
  # convolutional step 3-4× slower inside a lax.scan (BUILD_NOTES).
  rng = np.random.default_rng(seed)
  for _ in range(CLASSIFIER_EPOCHS):
    order = rng.permutation(len(images))
    for index in range(steps_per_epoch):
      chosen = order[index * batch:(index + 1) * batch]
      params, state = step(params, state, images[chosen], labels[chosen])
  return params


def load_or_train_classifier(path: str, images: np.ndarray,
                             labels: np.ndarray):
  """The classifier saved at `path`, or one trained now and saved there."""
  if os.path.exists(path):
    template = Classifier().init(jax.random.key(0), images[:1])
    with open(path, "rb") as f:
      return flax.serialization.from_bytes(template, f.read())
  params = train_classifier(images, labels)
  with open(path, "wb") as f:
    f.write(flax.serialization.to_bytes(params))
  return params


@jax.jit
def _classify(params, images):
  logits, features = Classifier().apply(params, images)
  return jax.nn.softmax(logits), features


def in_batches(fn, images: np.ndarray, batch_size: int = EVAL_BATCH):
  """`fn` applied to `images` in batches of one shape (a short last batch is
  padded with copies of its last image), the outputs concatenated as NumPy
  arrays."""
  outputs = []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    if len(images) > batch_size and len(batch) < batch_size:
      batch = np.concatenate(
          [batch, np.repeat(batch[-1:], batch_size - len(batch), axis=0)])
    outputs.append(fn(batch))
  return jax.tree.map(lambda *parts: np.concatenate(parts)[:len(images)],
                      *outputs)


def classify(params, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`(class probabilities [n, 10], features [n, FEATURE_DIM])` of images
  (uint8 or float in [0, 1])."""
  return in_batches(lambda x: _classify(params, data_lib.as_float(x)),
                    images)


def kernel_distance(x: np.ndarray, y: np.ndarray) -> float:
  """KID: the unbiased MMD² of features under the cubic polynomial kernel
  `(a·b/d + 1)³`, in float64, averaged over disjoint blocks of at most
  `KID_SUBSET` consecutive rows of `x` and of `y`."""
  d = x.shape[1]
  subsets = max(1, min(len(x), len(y)) // KID_SUBSET)
  size = min(len(x), len(y)) // subsets
  estimates = []
  for index in range(subsets):
    a = np.asarray(x[index * size:(index + 1) * size], np.float64)
    b = np.asarray(y[index * size:(index + 1) * size], np.float64)
    kaa, kbb, kab = ((p @ q.T / d + 1.0) ** 3
                     for p, q in ((a, a), (b, b), (a, b)))
    off_diagonal = size * (size - 1)
    estimates.append((kaa.sum() - np.trace(kaa)) / off_diagonal
                     + (kbb.sum() - np.trace(kbb)) / off_diagonal
                     - 2.0 * kab.mean())
  return float(np.mean(estimates))


def make_scorer(params, test_images: np.ndarray):
  """`score(images) -> {'fd', 'kid', coverage...}` against the test split."""
  test_features = classify(params, test_images)[1]
  test_statistics = fid.feature_statistics(test_features)

  def score(images: np.ndarray) -> dict:
    probabilities, features = classify(params, images)
    return {"fd": fid.frechet_distance(*fid.feature_statistics(features),
                                       *test_statistics),
            "kid": kernel_distance(features, test_features),
            } | digits.class_coverage(probabilities)

  return score


# ---------------------------------------------------------------------------
# Training in segments, and the reconstructions.


def segment_steps(steps: int) -> list[int]:
  """The steps at which a run of `steps` is scored (`EVAL_FRACTIONS`)."""
  return sorted({max(1, round(f * steps)) for f in EVAL_FRACTIONS})


def _comparable(config: dict) -> str:
  """The config as JSON without the fields a run may change on resuming."""
  return json.dumps(config | dict.fromkeys(checkpointing.RESUMABLE_CHANGES),
                    sort_keys=True)


def train_in_segments(name: str, make_config, seeds, steps: int,
                      workdir: str, score, num_samples: int) -> dict:
  """Trains model `name` in `workdir/<name>/seed<k>` up to each of
  `segment_steps(steps)` with `celeba.run_models` (the trainer resumes from
  its checkpoints) and scores every segment.

  Segments already scored, recorded in `workdir/<name>/fd_vs_steps.json`,
  are skipped, so an interrupted run resumes where it stopped and a larger
  `steps` extends a finished one.

  Returns:
    The last segment's `run_models` result with `history`: each segment's
    steps and its result.
  """
  history_path = os.path.join(workdir, name, "fd_vs_steps.json")
  history = {}
  if os.path.exists(history_path):
    with open(history_path) as f:
      history = json.load(f)
  current = json.loads(json.dumps(make_config(name, seeds[0], steps)
                                  .to_dict()))
  for recorded in history.values():
    if (_comparable(recorded["config"]) != _comparable(current)
        or recorded["seeds"] != list(seeds)):
      raise ValueError(
          f"{history_path} holds scores of another config or seeds; use a "
          "new --workdir.")
  for segment in segment_steps(steps):
    if str(segment) in history:
      continue
    # The trainer cannot go back: a model trained past `segment` would be
    # scored as if it were at `segment`.
    if any(int(done) > segment for done in history):
      raise ValueError(
          f"{history_path}: the run is past step {segment}, which was not "
          f"scored; use steps the run has not passed, or a new --workdir.")
    history[str(segment)] = celeba.run_models(
        [name], seeds, lambda model, seed: make_config(model, seed, segment),
        workdir, score, num_samples, grid_scale=GRID_SCALE)[name]
    os.makedirs(os.path.dirname(history_path), exist_ok=True)
    with open(history_path, "w") as f:
      json.dump(history, f, indent=1)
  segments = [history[str(s)] for s in segment_steps(steps)]
  return segments[-1] | {"history": segments,
                         "train_seconds": sum(s["train_seconds"]
                                              for s in segments)}


def reconstruction_errors(trained, images: np.ndarray) -> np.ndarray:
  """`‖x − x̂‖²` per image `[n]` of a trained model."""
  return in_batches(
      lambda x: np.asarray(losses.squared_error(trained.reconstruct(x), x)),
      images)


def save_reconstructions(trained, images: np.ndarray, path: str,
                         rows: int = 4, columns: int = 8) -> None:
  """Rows of `columns` images over their reconstructions, as one PNG (fewer
  rows when there are fewer images)."""
  rows = max(1, min(rows, len(images) // columns))
  originals = images[:rows * columns]
  pairs = np.stack([originals, np.asarray(trained.reconstruct(originals))])
  pairs = pairs.reshape(2, rows, columns, *images.shape[1:]).swapaxes(0, 1)
  celeba.save_image_grid(fid.to_uint8(pairs.reshape(-1, *images.shape[1:])),
                         path, columns=columns, scale=GRID_SCALE)


def summarize(result: dict, workdir: str, test_images: np.ndarray,
              train_images: Optional[np.ndarray] = None) -> dict:
  """A results row from `train_in_segments`'s result: the metrics, FD per
  segment, the test reconstruction error, reconstructions.png per seed and,
  given the training images, ξ."""
  runs = result["runs"]
  for run in runs:
    run_dir = os.path.join(workdir, run["workdir"])
    trained = couae_jax.restore(run_dir)
    run["rec_test"] = float(reconstruction_errors(trained,
                                                  test_images).mean())
    save_reconstructions(trained, test_images,
                         os.path.join(run_dir, "reconstructions.png"))
    if train_images is not None:
      run["xi"] = bounds.estimate_xi(trained.reconstruct, train_images,
                                     test_images, batch_size=EVAL_BATCH)
  metrics = ["fd", "kid", "kl_uniform", "tv_uniform", "confidence",
             "rec_test"] + (["xi"] if train_images is not None else [])
  row = {}
  for metric in metrics:
    values = [run[metric] for run in runs]
    row |= {f"{metric}_mean": float(np.mean(values)),
            f"{metric}_std": float(np.std(values)),
            f"{metric}_per_seed": values}
  return row | {
      "classes": [run["classes"] for run in runs],
      "seeds": result["seeds"], "steps": result["steps"],
      "fd_vs_steps": {
          "steps": [s["steps"] for s in result["history"]],
          "fd_mean": [s["fd"]["mean"] for s in result["history"]],
          "fd_std": [s["fd"]["std"] for s in result["history"]],
          "fd_per_seed": [[run["fd"] for run in s["runs"]]
                          for s in result["history"]]},
      "train_seconds": result["train_seconds"], "config": result["config"],
      "runs": runs}


# ---------------------------------------------------------------------------
# Reporting.


def row_key(name: str, dim: int) -> str:
  return f"{name}_h{dim}"


def width_key(factor: float) -> str:
  return f"{factor:g}"


def save_convergence_plot(results: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  dims = results["dims"]
  fig, axes = plt.subplots(1, len(dims), figsize=(4.5 * len(dims), 3.5),
                           squeeze=False)
  for ax, dim in zip(axes[0], dims):
    for name in results["models"]:
      curve = results[row_key(name, dim)]["fd_vs_steps"]
      ax.errorbar(curve["steps"], curve["fd_mean"], yerr=curve["fd_std"],
                  marker="o", capsize=3, label=name)
    # The floor is orders of magnitude below short runs: named, not drawn.
    ax.set_xscale("log")
    ax.set_xlabel("training steps")
    ax.set_ylabel("FD (classifier features)")
    ax.set_title(f"Fashion-MNIST, h = {dim} (floor "
                 f"{results['floor']['fd']:.2f})")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def print_table(results: dict) -> None:
  classifier = results["classifier"]
  print(f"\nclassifier test accuracy {classifier['test_accuracy']:.4f} "
        f"(train {classifier['train_accuracy']:.4f})")
  print(f"\n{'row':<26}{'FD':>18}{'KID':>18}{'classes':>10}"
        f"{'KL to uniform':>15}{'rec (test)':>16}")
  floor = results["floor"]
  print(f"{'floor (train vs test)':<26}{floor['fd']:>18.3f}"
        f"{floor['kid']:>18.4f}{floor['classes']:>10}"
        f"{floor['kl_uniform']:>15.4f}")
  for key in results["rows"]:
    r = results[key]
    classes = "/".join(str(c) for c in r["classes"])
    print(f"{key:<26}{r['fd_mean']:>10.3f} ± {r['fd_std']:<5.3f}"
          f"{r['kid_mean']:>10.4f} ± {r['kid_std']:<5.4f}{classes:>10}"
          f"{r['kl_uniform_mean']:>15.4f}"
          f"{r['rec_test_mean']:>9.2f} ± {r['rec_test_std']:<5.2f}")
    print(f"{'':<26}FD per seed: "
          + ", ".join(f"{v:.3f}" for v in r["fd_per_seed"])
          + "; FD by steps: "
          + ", ".join(f"{s}: {m:.2f}" for s, m in
                      zip(r["fd_vs_steps"]["steps"],
                          r["fd_vs_steps"]["fd_mean"])))
  ablation = results.get("width_ablation")
  if ablation:
    print(f"\nwidth ablation (couae, h = {ABLATION_DIM}, × width "
          f"{results['width']:g})")
    print(f"{'width':<10}{'FD':>18}{'ξ':>20}  FD per seed")
    for key in ablation["widths"]:
      r = ablation[key]
      print(f"×{key:<9}{r['fd_mean']:>10.3f} ± {r['fd_std']:<5.3f}"
            f"{r['xi_mean']:>12.2f} ± {r['xi_std']:<5.2f}  "
            + ", ".join(f"{v:.3f}" for v in r["fd_per_seed"]))


# ---------------------------------------------------------------------------
# The command line.


def _int_list(text: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected comma-separated integers; got {text!r}") from None
  if len(set(values)) != len(values) or min(values) < 0:
    raise argparse.ArgumentTypeError(
        f"expected distinct integers >= 0; got {text!r}")
  return values


def _widths(text: str) -> list[float]:
  if text == "none":
    return []
  try:
    values = [float(v) for v in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected comma-separated width factors or 'none'; got {text!r}"
    ) from None
  if any(not math.isfinite(v) or v <= 0 for v in values):
    raise argparse.ArgumentTypeError(
        f"width factors must be finite and > 0; got {text!r}")
  return values


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}")
  return value


def parse_args(argv: Optional[list[str]]):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                      help="holds the 4 Fashion-MNIST IDX files (plain or "
                           f".gz; default {DEFAULT_DATA_DIR})")
  parser.add_argument("--full", action="store_true",
                      help="5 seeds, 3000 steps")
  parser.add_argument("--seeds", type=_int_list, default=None,
                      help="comma-separated (default 0,1,2; --full 0..4)")
  parser.add_argument("--steps", type=_positive_int, default=None,
                      help="training steps (default 300; --full 3000)")
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--dims", type=_int_list, default=list(DIMS),
                      help="latent sizes h (default 8,64)")
  parser.add_argument("--widths", type=_widths, default=list(WIDTH_FACTORS),
                      help="CouAE width ablation at h = 8: factors of the "
                           "run's width (default 0.25,0.5,1), or 'none'")
  parser.add_argument("--classifier", default=None,
                      help="the classifier's parameters: loaded if the file "
                           "exists, else trained and saved there (default "
                           "DIR/classifier.msgpack)")
  args, overrides = parser.parse_known_args(argv)
  args.models = args.models.split(",")
  unknown = set(args.models) - set(MODELS)
  if unknown or len(set(args.models)) != len(args.models):
    parser.error(f"--models must be distinct names from {sorted(MODELS)}; "
                 f"got {','.join(args.models)}")
  for arg in overrides:
    if not arg.startswith("--config.") or "=" not in arg:
      parser.error(f"unrecognized argument {arg!r}")
    field = arg[len("--config."):].split("=", 1)[0]
    if field in OWN_FLAGS:
      parser.error(f"set {field} with {OWN_FLAGS[field]}, not {arg}")
  preset = FULL if args.full else QUICK
  args.seeds = args.seeds or list(preset["seeds"])
  args.steps = args.steps or preset["steps"]

  def make_config(name: str, dim: int, seed: int, steps: int,
                  width_factor: float = 1.0) -> config_lib.TrainConfig:
    config = config_lib.TrainConfig(
        **SHARED | MODELS[name] | preset["tuned"].get(row_key(name, dim), {})
        | dict(data_path=os.path.abspath(args.data_dir), latent_dim=dim,
               seed=seed, steps=steps, width=preset["width"]))
    config = config_lib.without_unread_fields(  # e.g. eps: CouAE's only
        config_lib.parse_overrides(config, overrides))
    return config.replace(width=config.width * width_factor)

  try:  # reject bad overrides before any training
    for name in args.models:
      for dim in args.dims:
        config_lib.validate(make_config(name, dim, args.seeds[0],
                                        args.steps))
    for factor in args.widths:
      config_lib.validate(make_config("couae", ABLATION_DIM, args.seeds[0],
                                      args.steps, factor))
  except ValueError as e:
    parser.error(str(e))
  return args, make_config


def main(argv: Optional[list[str]] = None) -> None:
  args, make_config = parse_args(argv)
  os.makedirs(args.workdir, exist_ok=True)
  start = time.perf_counter()
  train_x, train_y = data_lib.load_mnist(args.data_dir, split="train")
  test_x, test_y = data_lib.load_mnist(args.data_dir, split="test")
  classifier_path = args.classifier or os.path.join(args.workdir,
                                                    "classifier.msgpack")
  params = load_or_train_classifier(classifier_path, train_x, train_y)
  accuracy = {f"{split}_accuracy":
              float((classify(params, x)[0].argmax(1) == y).mean())
              for split, x, y in (("train", train_x, train_y),
                                  ("test", test_x, test_y))}
  score = make_scorer(params, test_x)
  samples = len(test_x)
  # Training images go through the generated images' path (8-bit pixels).
  floor = score(fid.to_uint8(train_x[:samples]))
  results = {"models": args.models, "dims": args.dims, "seeds": args.seeds,
             "steps": args.steps,
             "width": make_config(args.models[0], args.dims[0], 0,
                                  args.steps).width,
             "data_dir": os.path.abspath(args.data_dir),
             "train_images": len(train_x), "test_images": len(test_x),
             "samples": samples,
             # FDs are comparable only under the same classifier: one
             # retrained on another machine differs in its last bits.
             "classifier": accuracy | {"feature_dim": FEATURE_DIM,
                                       "path": classifier_path,
                                       "sha256": fid.sha256_of(classifier_path)},
             "floor": floor, "rows": []}
  print(f"classifier: test accuracy {accuracy['test_accuracy']:.4f}; floor "
        f"FD {floor['fd']:.3f}; {len(args.seeds)} seeds × "
        f"{len(args.models)} models × h {args.dims}, {args.steps} steps",
        flush=True)

  def run(name, dim, workdir, width_factor=1.0, with_xi=False):
    result = train_in_segments(
        name, lambda model, seed, steps: make_config(model, dim, seed, steps,
                                                     width_factor),
        args.seeds, args.steps, workdir, score, samples)
    return summarize(result, workdir, test_x,
                     train_x if with_xi else None)

  for dim in args.dims:
    for name in args.models:
      key = row_key(name, dim)
      print(f"training {key}", flush=True)
      results[key] = run(
          name, dim, os.path.join(args.workdir, f"h{dim}"),
          with_xi=(name == "couae" and dim == ABLATION_DIM
                   and 1.0 in args.widths))
      results["rows"].append(key)
  if args.widths:
    ablation = {"widths": [width_key(f) for f in args.widths]}
    main_row = row_key("couae", ABLATION_DIM)
    for factor in args.widths:
      if factor == 1.0 and main_row in results:
        ablation[width_key(factor)] = results[main_row]
      else:
        print(f"training couae at width ×{factor:g}", flush=True)
        ablation[width_key(factor)] = run(
            "couae", ABLATION_DIM,
            os.path.join(args.workdir, f"width_{width_key(factor)}"),
            width_factor=factor, with_xi=True)
    results["width_ablation"] = ablation
  if results["rows"]:
    save_convergence_plot(results, os.path.join(args.workdir,
                                                "fd_vs_steps.png"))
  _results.finish(args.workdir, results, start, print_table,
                  note=", plot fd_vs_steps.png")


if __name__ == "__main__":
  main()
