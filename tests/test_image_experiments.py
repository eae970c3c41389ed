"""Smoke runs of the image experiments (CelebA with FID, digits) on tiny
settings. The CelebA run goes end to end on random JPEGs in the CelebA layout
with random Inception weights saved in the weights format: the real weights
and data cannot be downloaded here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from couae_jax import config as config_lib
from couae_jax import fid, inference, priors
from couae_jax import objective as objective_lib
from couae_jax import train as train_lib
from experiments import celeba, digits

pytestmark = pytest.mark.standard_promotion  # optax/flax promote


@pytest.fixture
def celeba_dir(tmp_path):
  """12 random 178×218 JPEGs in `tmp_path/img_align_celeba/`."""
  image = pytest.importorskip("PIL.Image")
  folder = tmp_path / "img_align_celeba"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(12):
    pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
    image.fromarray(pixels).save(folder / f"{i + 1:06d}.jpg")
  return tmp_path


# 8 FID samples of 12 images: too few for the data-vs-data reference (2 × 8),
# which would cost a second 2048-d eigen-decomposition.
TINY_CELEBA = ["--steps", "2", "--fid-samples", "8", "--fid-batch", "8",
               "--fid-image-size", "75", "--config.width=0.0625",
               "--config.batch_size=4", "--config.latent_dim=4"]


def test_celeba_end_to_end_with_random_weights(celeba_dir, tmp_path, capsys):
  weights = tmp_path / "random_fid.npz"
  fid.save_inception_weights(fid.random_inception_weights(0), weights)
  workdir = tmp_path / "run"
  celeba.main(["--data-dir", str(celeba_dir), "--fid-weights", str(weights),
               "--workdir", str(workdir), "--models", "couae", *TINY_CELEBA])
  results = json.loads((workdir / "results.json").read_text())
  assert results["images"] == 12 and results["steps"] == 2
  assert results["fid_samples"] == 8 and not results["fid_weights_verified"]
  assert results["reference_fid"] is None
  r = results["couae"]
  assert r["seeds"] == [0] and r["steps"] == 2
  assert r["fid"]["mean"] > 0 and r["fid"]["std"] == 0.0
  assert r["config"]["data"] == "celeba" and r["config"]["latent_dim"] == 4
  # WAE's CelebA settings, with no departures.
  assert r["config"]["schedule"] == "piecewise"
  assert r["config"]["lr_boundaries"] == [30 / 55, 50 / 55]
  assert r["config"]["lr_factors"] == [0.5, 0.2]
  assert r["config"]["prior_scale"] == 2.0 ** 0.5
  assert r["config"]["conv_kernel_size"] == 5
  run = r["runs"][0]
  assert run["workdir"] == "couae/seed0" and run["fid"] == r["fid"]["mean"]
  assert (workdir / run["workdir"] / "checkpoints").is_dir()
  assert (workdir / run["workdir"] / "samples.png").is_file()
  restored = inference.restore(str(workdir / run["workdir"]))
  assert restored.params["encoder"]["Conv_0"]["kernel"].shape == (5, 5, 3, 8)
  assert restored.config.prior_scale == 2.0 ** 0.5
  out = capsys.readouterr().out
  assert "couae" in out and "not pytorch-fid's verified" in out


@pytest.mark.parametrize("steps, drops", [
    (111429, {60779: 0.5, 101299: 0.2}),  # 55 epochs of 202,599 images
    (1100, {600: 0.5, 1000: 0.2}),        # a short run keeps the shape
])
def test_celeba_configs_are_wae_settings(steps, drops):
  for name in celeba.MODELS:
    config = celeba.model_config(name, "/data", 0, steps, [])
    config_lib.validate(config)
    assert (config.latent_dim, config.batch_size, config.learning_rate,
            config.b1, config.b2) == (64, 100, 1e-3, 0.5, 0.999)
    assert config.conv_kernel_size == 5
    assert config_lib.boundary_steps(config) == drops
    schedule = train_lib.learning_rate_schedule(config)
    first, second = drops
    assert [float(schedule(s)) for s in (first - 1, first, second - 1,
                                         second)] == pytest.approx(
        [1e-3, 5e-4, 5e-4, 1e-4])
    # The VAE's KL is to N(0, I); the MMD models match N(0, 2 I).
    variance = priors.coordinate_std(objective_lib.make_objective(config).prior) ** 2
    assert variance == pytest.approx(1.0 if name == "vae" else 2.0)


def test_celeba_missing_weights_fails_before_training(celeba_dir, tmp_path):
  workdir = tmp_path / "run"
  missing = tmp_path / fid.WEIGHTS_NAME
  with pytest.raises(fid.FIDWeightsNotFoundError,
                     match=f"{fid.WEIGHTS_NAME}.*{missing}") as info:
    celeba.main(["--data-dir", str(celeba_dir), "--fid-weights",
                 str(missing), "--workdir", str(workdir), *TINY_CELEBA])
  assert fid.FID_WEIGHTS_URL in str(info.value)
  assert not workdir.exists()


def test_celeba_rejects_bad_overrides_before_training(celeba_dir, tmp_path,
                                                      monkeypatch):
  monkeypatch.setattr(fid, "load_inception_weights", lambda path: {})
  with pytest.raises(ValueError, match="lam=-1.0"):
    celeba.main(["--data-dir", str(celeba_dir), "--workdir",
                 str(tmp_path / "run"), "--config.lam=-1"])
  assert not (tmp_path / "run").exists()


def test_digits_writes_the_results_contract(tmp_path, capsys):
  digits.main(["--workdir", str(tmp_path), "--seeds", "0,1", "--steps", "3",
               "--models", "wae"])
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["classifier"]["held_out_accuracy"] > 0.9
  assert results["train_digits"] + results["held_out_digits"] == 1797
  reference = results["reference"]
  assert reference["classes"] == 10 and reference["fd"] >= 0
  r = results["wae"]
  assert r["seeds"] == [0, 1] and r["steps"] == 3
  assert {"fd", "classes", "kl_uniform", "tv_uniform", "confidence"} <= set(r)
  assert len(r["runs"]) == 2 and r["fd"]["std"] >= 0
  assert sum(r["runs"][0]["class_counts"]) == results["samples"]
  assert r["config"]["data"] == "npz"
  assert (tmp_path / "wae" / "seed1" / "samples.png").is_file()
  assert "training vs held-out" in capsys.readouterr().out


def test_class_coverage():
  probabilities = np.zeros((200, 10))
  probabilities[:100, 3] = 1.0
  probabilities[100:, 7] = 0.6
  probabilities[100:, 1] = 0.4
  coverage = digits.class_coverage(probabilities)
  assert coverage["classes"] == 2
  assert coverage["kl_uniform"] == pytest.approx(np.log(5))
  assert coverage["tv_uniform"] == pytest.approx(0.8)
  assert coverage["confidence"] == pytest.approx(0.8)
  assert coverage["class_counts"][3] == coverage["class_counts"][7] == 100
