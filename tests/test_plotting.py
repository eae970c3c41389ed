"""Tests of couae_jax.plotting: the figures are written, bad input is named."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from couae_jax import config as config_lib
from couae_jax import inference, models, plotting

KEY = jax.random.key(0)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def trained_model(kind, data_shape, latent_dim, **kwargs):
  """A `TrainedModel` with small random parameters of the right shapes.

  `eval_shape` gives the shapes without running `init`, whose truncated-normal
  initialisers take seconds to compile on CPU.
  """
  model = models.make_autoencoder(kind, data_shape, latent_dim, **kwargs)
  abstract = jax.eval_shape(model.init, KEY, jnp.zeros((1, *data_shape)))
  rng = np.random.default_rng(0)
  # Uniform in [0, 0.1): positive, so BatchNorm's variances are valid too.
  variables = jax.tree.map(
      lambda leaf: jnp.asarray(rng.uniform(0.0, 0.1, leaf.shape), leaf.dtype),
      abstract)
  return inference.TrainedModel(
      model=model, params=variables["params"],
      batch_stats=variables.get("batch_stats", {}),
      # WAE: a valid config at h = 1 too (the Coulomb kernel needs h >= 2).
      config=config_lib.TrainConfig(model="wae", latent_dim=latent_dim),
      step=3,
      data_shape=tuple(data_shape))


@pytest.fixture(scope="module")
def vector_model():
  return trained_model("mlp", (2,), 2, hidden=(8,))


def assert_pngs(paths, directory, names):
  assert [os.path.basename(p) for p in paths] == [f"{n}_3.png" for n in names]
  for path in paths:
    assert os.path.dirname(path) == str(directory)
    with open(path, "rb") as f:
      assert f.read(8) == PNG_MAGIC, path


def test_save_figures_vector_data(tmp_path, vector_model):
  data = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32)
  directory = tmp_path / "figures" / "nested"
  paths = plotting.save_figures(directory, vector_model, data, key=KEY,
                                count=40)
  assert_pngs(paths, directory, ["samples", "codes"])


def test_save_figures_one_dimensional_data(tmp_path):
  trained = trained_model("mlp", (1,), 1, hidden=(4,))
  data = np.linspace(-1.0, 1.0, 20, dtype=np.float32)[:, None]
  paths = plotting.save_figures(str(tmp_path), trained, data, key=KEY)
  # h = 1: no codes scatter.
  assert_pngs(paths, tmp_path, ["samples"])


def test_save_figures_images(tmp_path):
  trained = trained_model("conv", (8, 8, 1), 2, width=1 / 16)
  data = np.random.default_rng(2).uniform(size=(20, 8, 8, 1))
  paths = plotting.save_figures(str(tmp_path), trained,
                                data.astype(np.float32), key=KEY)
  assert_pngs(paths, tmp_path, ["reconstructions", "samples", "codes"])


def _file(tmp_path):
  path = tmp_path / "taken"
  path.write_text("")
  return path


def _replace_shape(trained, data_shape):
  return inference.TrainedModel(
      model=trained.model, params=trained.params,
      batch_stats=trained.batch_stats, config=trained.config,
      step=trained.step, data_shape=data_shape)


GOOD_DATA = np.zeros((10, 2), np.float32)


# (arguments as a function of (tmp_path, trained), error, pattern).
@pytest.mark.parametrize("arguments,error,match", [
    (lambda p, t: (3, t, GOOD_DATA), TypeError, "directory"),
    (lambda p, t: ("", t, GOOD_DATA), ValueError, "directory"),
    (lambda p, t: (_file(p), t, GOOD_DATA), ValueError,
     "directory.*not a directory"),
    (lambda p, t: (p / "out", object(), GOOD_DATA), TypeError,
     "trained.*lacks step"),
    (lambda p, t: (p / "out", t, np.zeros((10, 2), np.int32)), TypeError,
     "data.*floating"),
    (lambda p, t: (p / "out", t, np.zeros((10, 3), np.float32)), ValueError,
     r"data must have shape \[n, 2\]"),
    (lambda p, t: (p / "out", t, np.zeros((0, 2), np.float32)), ValueError,
     "data.*n >= 1"),
    (lambda p, t: (p / "out", t, np.zeros(2, np.float32)), ValueError, "data"),
    (lambda p, t: (p / "out", _replace_shape(t, (4, 4, 2)),
                   np.zeros((5, 4, 4, 2), np.float32)), ValueError,
     "data.*C in"),
], ids=["directory-type", "directory-empty", "directory-file", "trained",
        "data-dtype", "data-shape", "data-empty", "data-rank", "data-channels"])
def test_save_figures_rejects_bad_arguments(tmp_path, vector_model, arguments,
                                            error, match):
  directory, trained, data = arguments(tmp_path, vector_model)
  with pytest.raises(error, match=match):
    plotting.save_figures(directory, trained, data, key=KEY)
  # Bad input fails before anything is written.
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keywords,error,match", [
    (dict(key=0), TypeError, "key"),
    (dict(key=jax.random.split(KEY)), TypeError, "key"),
    (dict(key=KEY, count=0), ValueError, "count"),
    (dict(key=KEY, count=2.5), ValueError, "count"),
], ids=["key-int", "key-batch", "count-zero", "count-float"])
def test_save_figures_rejects_bad_keywords(tmp_path, vector_model, keywords,
                                           error, match):
  with pytest.raises(error, match=match):
    plotting.save_figures(tmp_path / "out", vector_model, GOOD_DATA,
                          **keywords)
  assert not (tmp_path / "out").exists()
