"""Figures of a trained model: samples, reconstructions, codes against the prior.

Needs matplotlib (the `experiments` extra); the training loop imports this
module only when it draws.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax import _checks

#: What `save_figures` uses of a `TrainedModel`; any object with these works.
_TRAINED_ATTRIBUTES = ("step", "config", "data_shape", "encode",
                       "reconstruct", "sample", "sample_prior")


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _check_directory(directory) -> str:
  if not isinstance(directory, (str, os.PathLike)):
    raise TypeError(
        f"directory must be a path (str or os.PathLike); got "
        f"{type(directory).__name__}.")
  directory = os.fspath(directory)
  if not isinstance(directory, str) or not directory:
    raise ValueError(f"directory must be a non-empty str path; got "
                     f"{directory!r}.")
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise ValueError(f"directory {directory!r} exists and is not a directory.")
  return directory


def _check_data(data, data_shape: tuple[int, ...]) -> np.ndarray:
  """`data` as a float32 NumPy array `[n, *data_shape]` that can be drawn."""
  data = np.asarray(data)
  if not jnp.issubdtype(data.dtype, jnp.floating):
    raise TypeError(
        f"data must have a floating dtype, like the model's inputs; got "
        f"{data.dtype}.")
  if data.ndim < 1 or data.shape[1:] != data_shape or len(data) == 0:
    dims = ", ".join(str(d) for d in data_shape)
    raise ValueError(
        f"data must have shape [n, {dims}] with n >= 1 (trained.data_shape = "
        f"{data_shape}); got shape {data.shape}.")
  if data.ndim > 4 or (data.ndim == 4 and data.shape[-1] not in (1, 3, 4)):
    raise ValueError(
        f"data must be vectors [n, d], grey images [n, H, W] or images "
        f"[n, H, W, C] with C in (1, 3, 4) to be drawn; got shape "
        f"{data.shape}.")
  # Drawn in float32: matplotlib handles no half-precision dtypes.
  return data.astype(np.float32)


def save_figures(directory: str, trained, data: np.ndarray, *,
                 key: jax.Array, count: int = 1000) -> list[str]:
  """Writes PNGs of `trained` (a `TrainedModel`) next to `data`; returns paths.

  * vector data `[n, d]`: a scatter of data and generated samples (first two
    coordinates; a histogram when d = 1), `samples_<step>.png`;
  * images `[n, H, W]` or `[n, H, W, C]`: a grid of data over their
    reconstructions, `reconstructions_<step>.png`, and a grid of samples,
    `samples_<step>.png` (pixels clipped to [0, 1]);
  * h >= 2: a scatter of codes and prior samples (first two latent
    coordinates), `codes_<step>.png`.

  Args:
    directory: the folder to write into (str or `os.PathLike`), created with
      its parents if missing; files of the same step are overwritten.
    trained: a `couae_jax.inference.TrainedModel`, or any object with its
      `step`, `config` (`config.model` titles the figures), `data_shape`,
      `encode`, `reconstruct`, `sample` and `sample_prior`.
    data: `[n, *trained.data_shape]` floating examples, n >= 1; C in
      (1, 3, 4) for images.
    key: one PRNG key, for the generated and the prior samples.
    count: the most examples (and as many samples) drawn (default 1000).

  Returns:
    The paths of the PNGs written, in the order listed above.

  Raises:
    TypeError: directory not a path, trained lacking an attribute above,
      data not floating, key not a single PRNG key.
    ValueError: directory an existing file, data not `[n, *data_shape]` or
      of a shape that cannot be drawn, count not a positive int.

  Example:
    >>> import os, tempfile
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import config, inference, models, plotting
    >>> model = models.make_autoencoder("mlp", (2,), 2, hidden=(8,))
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 2)))
    >>> trained = inference.TrainedModel(
    ...     model=model, params=variables["params"], batch_stats={},
    ...     config=config.TrainConfig(latent_dim=2), step=7, data_shape=(2,))
    >>> data = jax.random.normal(jax.random.key(1), (64, 2))
    >>> with tempfile.TemporaryDirectory() as directory:
    ...   paths = plotting.save_figures(directory, trained, data,
    ...                                 key=jax.random.key(2))
    ...   [os.path.basename(p) for p in paths if os.path.isfile(p)]
    ['samples_7.png', 'codes_7.png']
  """
  directory = _check_directory(directory)
  missing = [a for a in _TRAINED_ATTRIBUTES if not hasattr(trained, a)]
  if missing:
    raise TypeError(
        f"trained must be a TrainedModel (couae_jax.inference); got "
        f"{type(trained).__name__}, which lacks {', '.join(missing)}.")
  data = _check_data(data, tuple(trained.data_shape))
  _checks.prng_key("key", key)
  _checks.positive_int("count", count)

  plt = _pyplot()
  os.makedirs(directory, exist_ok=True)
  step = trained.step
  data = data[:count]
  sample_key, prior_key, code_key = jax.random.split(key, 3)
  samples = np.asarray(trained.sample(sample_key, len(data)))
  # Samples of q(z|x) for a Gaussian encoder: the codes the MMD or KL saw.
  codes = np.asarray(trained.encode(data, key=code_key))
  paths = []

  def save(fig, name):
    path = os.path.join(directory, f"{name}_{step}.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    paths.append(path)

  if data.ndim == 2:
    fig, ax = plt.subplots(figsize=(5, 5))
    if data.shape[1] >= 2:
      ax.scatter(data[:, 0], data[:, 1], s=3, alpha=0.5, label="data")
      ax.scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.5,
                 label="samples")
      ax.legend(markerscale=4)
    else:
      ax.hist([data[:, 0], samples[:, 0]], bins=50, label=["data", "samples"])
      ax.legend()
    ax.set_title(f"{trained.config.model}, step {step}")
    save(fig, "samples")
  else:
    shown = min(16, len(data))
    reconstructions = np.asarray(trained.reconstruct(data[:shown]))
    save(_image_grid(plt, [data[:shown], reconstructions],
                     f"data (top) and reconstructions, step {step}"),
         "reconstructions")
    save(_image_grid(plt, [samples[:shown], samples[shown:2 * shown]],
                     f"samples, step {step}"), "samples")

  if codes.shape[1] >= 2:
    prior = np.asarray(trained.sample_prior(prior_key, len(codes)))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(prior[:, 0], prior[:, 1], s=3, alpha=0.5, label="prior")
    ax.scatter(codes[:, 0], codes[:, 1], s=3, alpha=0.5, label="codes")
    ax.set_title(f"codes vs prior (first 2 of h={codes.shape[1]}), step {step}")
    ax.legend(markerscale=4)
    save(fig, "codes")
  return paths


def _image_grid(plt, rows, title):
  columns = max(len(r) for r in rows)
  fig, axes = plt.subplots(len(rows), columns, squeeze=False,
                           figsize=(columns * 0.8, len(rows) * 0.8))
  for row_axes, images in zip(axes, rows, strict=True):
    # A row may hold fewer images than the widest: its last axes stay empty.
    for ax, image in zip(row_axes, images, strict=False):
      image = np.clip(image, 0.0, 1.0)
      if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
      ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
    for ax in row_axes:
      ax.axis("off")
  fig.suptitle(title, fontsize=8)
  return fig


__all__ = ["save_figures"]
