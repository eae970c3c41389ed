"""The Fashion-MNIST experiment end to end on tiny generated IDX files (the
real data are an apt package, not needed here)."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

from couae_jax import config as config_lib
from couae_jax import fid
from experiments import fashion

pytestmark = pytest.mark.standard_promotion  # optax/flax promote

TRAIN_IMAGES, TEST_IMAGES = 40, 20
# One model and the width ablation's ×1 row only: each training call costs
# a compilation of ~10 s, and the other models and widths differ only in
# their configs (test_fashion_configs).
TINY = ["--seeds", "0,1", "--steps", "1", "--models", "couae",
        "--dims", "8,64", "--widths", "1", "--config.width=0.015625",
        "--config.batch_size=8"]


def write_idx(path, array: np.ndarray) -> None:
  """`array` (uint8) as an IDX file, gzipped when `path` ends in .gz."""
  header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
  header += struct.pack(f">{array.ndim}I", *array.shape)
  with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_dir(tmp_path):
  """Random 28×28 images and labels in the 4 standard IDX files: the
  training split gzipped (as the apt package ships it), the test split
  plain."""
  rng = np.random.default_rng(0)
  folder = tmp_path / "fashion"
  folder.mkdir()
  for prefix, count, suffix in (("train", TRAIN_IMAGES, ".gz"),
                                ("t10k", TEST_IMAGES, "")):
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}",
              rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}",
              np.arange(count) % 10)
  return folder


def test_fashion_writes_the_results_contract(fashion_dir, tmp_path, capsys):
  workdir = tmp_path / "run"
  fashion.main(["--workdir", str(workdir), "--data-dir", str(fashion_dir),
                *TINY])
  results = json.loads((workdir / "results.json").read_text())
  assert results["train_images"] == TRAIN_IMAGES
  assert results["test_images"] == results["samples"] == TEST_IMAGES
  assert 0 <= results["classifier"]["test_accuracy"] <= 1
  assert results["classifier"]["sha256"] == fid.sha256_of(
      workdir / "classifier.msgpack")
  assert results["floor"]["fd"] >= 0
  assert results["rows"] == ["couae_h8", "couae_h64"]
  for key in results["rows"]:
    row = results[key]
    assert row["seeds"] == [0, 1] and row["steps"] == 1
    assert len(row["fd_per_seed"]) == len(row["classes"]) == 2
    assert row["fd_mean"] == pytest.approx(np.mean(row["fd_per_seed"]))
    assert row["fd_std"] == pytest.approx(np.std(row["fd_per_seed"]))
    assert row["fd_vs_steps"]["steps"] == [1]
    assert row["fd_vs_steps"]["fd_per_seed"][-1] == row["fd_per_seed"]
    assert row["rec_test_mean"] > 0 and np.isfinite(row["kid_mean"])
    assert row["config"]["data"] == "mnist"
    assert row["config"]["architecture"] == "conv"
    for run in row["runs"]:
      assert sum(run["class_counts"]) == TEST_IMAGES
      for image in ("samples.png", "reconstructions.png"):
        assert (workdir / f"h{row['config']['latent_dim']}" / run["workdir"]
                / image).is_file()
  assert results["couae_h8"]["config"]["coulomb_kernel"] == "sliced_coulomb"
  ablation = results["width_ablation"]
  assert ablation["widths"] == ["1"]
  assert ablation["1"]["fd_mean"] == results["couae_h8"]["fd_mean"]
  for run in ablation["1"]["runs"]:  # the worst image against the mean
    assert run["xi"] >= run["rec_test"] > 0
  assert (workdir / "fd_vs_steps.png").is_file()
  assert (workdir / "classifier.msgpack").is_file()
  out = capsys.readouterr().out
  assert "floor (train vs test)" in out and "width ablation" in out

  # A rerun finds every segment scored: nothing is trained again.
  fashion.main(["--workdir", str(workdir), "--data-dir", str(fashion_dir),
                *TINY])
  again = json.loads((workdir / "results.json").read_text())
  assert again["couae_h64"]["fd_per_seed"] == \
      results["couae_h64"]["fd_per_seed"]


def test_fashion_configs():
  args, make_config = fashion.parse_args(
      ["--workdir", "unused", "--config.eps=0.5"])
  assert args.seeds == [0, 1, 2] and args.steps == 300
  assert args.models == ["couae", "wae", "vae"] and args.dims == [8, 64]
  assert args.widths == [0.25, 0.5, 1.0]
  for name, expected in fashion.MODELS.items():
    config = make_config(name, 64, 3, 75, 0.5)
    assert (config.model, config.lam, config.learning_rate) == (
        expected["model"], expected["lam"], expected["learning_rate"])
    assert (config.latent_dim, config.seed, config.steps) == (64, 3, 75)
    assert config.width == pytest.approx(fashion.QUICK["width"] / 2)
    # An override of the Coulomb kernel's eps reaches the model that reads it.
    assert config.data == "mnist" and config.eps == (
        0.5 if name == "couae" else config_lib.TrainConfig().eps)
    assert config.data_path == fashion.DEFAULT_DATA_DIR
  full, make_full = fashion.parse_args(["--workdir", "unused", "--full"])
  assert full.seeds == [0, 1, 2, 3, 4] and full.steps == 3000
  # --full trains each row at its tuned λ and rate; the width ablation (CouAE
  # at h = 8) at CouAE's h = 8 ones.
  for name in fashion.MODELS:
    for dim in fashion.DIMS:
      tuned = fashion.FULL_TUNED[fashion.row_key(name, dim)]
      assert set(tuned) == {"lam", "learning_rate"}
      config = make_full(name, dim, 0, 3000)
      assert (config.lam, config.learning_rate) == (
          tuned["lam"], tuned["learning_rate"])
  ablation = make_full("couae", fashion.ABLATION_DIM, 0, 3000, 0.5)
  tuned = fashion.FULL_TUNED["couae_h8"]
  assert (ablation.lam, ablation.learning_rate) == (
      tuned["lam"], tuned["learning_rate"])
  # An explicit override still wins.
  _, make_overridden = fashion.parse_args(
      ["--workdir", "unused", "--full", "--config.learning_rate=0.002"])
  assert make_overridden("wae", 64, 0, 3000).learning_rate == 0.002


@pytest.mark.parametrize("arguments, message", [
    (["--models", "couae,gan"], "--models must be distinct"),
    (["--steps", "0"], "expected an integer >= 1"),
    (["--seeds", "0,0"], "distinct integers"),
    (["--widths", "0.5,-1"], "width factors must be finite and > 0"),
    (["--config.steps=5"], "set steps with --steps"),
    (["--config.lamda=5"], "unknown config field 'lamda'"),
    (["--config.lam=-1"], "lam=-1.0 must be >= 0"),
    (["--stepz", "5"], "unrecognized argument '--stepz'"),
])
def test_fashion_rejects_bad_arguments(tmp_path, capsys, arguments, message):
  with pytest.raises(SystemExit):
    fashion.main(["--workdir", str(tmp_path / "run"), *arguments])
  assert message in capsys.readouterr().err
  assert not (tmp_path / "run").exists()


def test_segments_end_at_a_quarter_a_half_and_all_of_the_steps():
  assert fashion.segment_steps(300) == [75, 150, 300]
  assert fashion.segment_steps(2) == [1, 2]


def test_kernel_distance_is_unbiased_and_separates():
  rng = np.random.default_rng(0)
  same = [fashion.kernel_distance(rng.normal(size=(1000, 4)),
                                  rng.normal(size=(1000, 4)))
          for _ in range(20)]
  assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
  shifted = fashion.kernel_distance(rng.normal(size=(1000, 4)),
                                    rng.normal(size=(1000, 4)) + 0.5)
  assert shifted > 10 * np.std(same)
