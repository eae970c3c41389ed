"""Figures of a trained model: samples, reconstructions, codes against the prior.

Needs matplotlib (the `experiments` extra); the training loop imports this
module only when it draws.
"""

from __future__ import annotations

import os

import jax
import numpy as np


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figures(directory: str, trained, data: np.ndarray, *,
                 key: jax.Array, count: int = 1000) -> list[str]:
  """Writes PNGs of `trained` (a `TrainedModel`) next to `data`; returns paths.

  * vector data: a scatter of data and generated samples (first two
    coordinates), `samples_<step>.png`;
  * images: a grid of data over their reconstructions,
    `reconstructions_<step>.png`, and a grid of samples, `samples_<step>.png`;
  * h >= 2: a scatter of codes and prior samples (first two latent
    coordinates), `codes_<step>.png`.
  """
  plt = _pyplot()
  os.makedirs(directory, exist_ok=True)
  step = trained.step
  data = np.asarray(data[:count])
  sample_key, prior_key = jax.random.split(key)
  samples = np.asarray(trained.sample(sample_key, len(data)))
  codes = np.asarray(trained.encode(data))
  paths = []

  def save(fig, name):
    path = os.path.join(directory, f"{name}_{step}.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    paths.append(path)

  if data.ndim == 2:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(data[:, 0], data[:, 1], s=3, alpha=0.5, label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.5, label="samples")
    ax.set_title(f"{trained.config.model}, step {step}")
    ax.legend(markerscale=4)
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
  for row_axes, images in zip(axes, rows):
    for ax, image in zip(row_axes, images):
      image = np.clip(image, 0.0, 1.0)
      ax.imshow(image[..., 0] if image.shape[-1] == 1 else image,
                cmap="gray", vmin=0.0, vmax=1.0)
    for ax in row_axes:
      ax.axis("off")
  fig.suptitle(title, fontsize=8)
  return fig


__all__ = ["save_figures"]
