"""Tests of couae_jax.fid: the Fréchet distance against scipy, statistics,
the FID Inception's shapes and its weights file (random weights: the real
ones cannot be downloaded here)."""

from __future__ import annotations

import importlib.util

import jax
import numpy as np
import pytest
from scipy import linalg

from couae_jax import fid
from experiments import convert_fid_weights as convert


pytestmark = pytest.mark.standard_promotion  # optax/flax promote


def scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
  """The textbook formula with scipy's general matrix square root."""
  covmean = linalg.sqrtm(sigma1 @ sigma2)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * np.trace(covmean.real))


def random_statistics(rng, n, d, shift=0.0, scale=1.0):
  mixing = rng.normal(size=(d, d)) / np.sqrt(d)
  features = scale * rng.normal(size=(n, d)) @ mixing + shift
  return fid.feature_statistics(features)


@pytest.mark.parametrize("n,d", [(500, 8), (200, 64), (40, 64)])
def test_frechet_distance_matches_scipy(np_rng, n, d):
  # n = 40 < d = 64: both covariances singular (rank 39), the FID regime of
  # few samples, where only the eigen-decomposition path applies.
  mu1, sigma1 = random_statistics(np_rng, n, d)
  mu2, sigma2 = random_statistics(np_rng, n, d, shift=0.3, scale=1.5)
  expected = scipy_frechet(mu1, sigma1, mu2, sigma2)
  actual = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
  np.testing.assert_allclose(actual, expected, rtol=1e-6)
  np.testing.assert_allclose(fid.frechet_distance(mu2, sigma2, mu1, sigma1),
                             expected, rtol=1e-6)


def test_frechet_distance_closed_forms(np_rng):
  d = 5
  # Commuting covariances: Tr(s1 + s2 - 2 (s1 s2)^½) = Σ (√a − √b)².
  a, b = np_rng.uniform(0.5, 2.0, d), np_rng.uniform(0.0, 2.0, d)
  b[0] = 0.0  # singular sigma2
  mu1, mu2 = np_rng.normal(size=d), np_rng.normal(size=d)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(
      fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected,
      rtol=1e-12)
  mu, sigma = random_statistics(np_rng, 30, 64)  # singular
  assert fid.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(
      0.0, abs=1e-6)
  assert fid.frechet_distance(mu, np.zeros((64, 64)), mu, sigma) == \
      pytest.approx(np.trace(sigma), rel=1e-12)


def test_frechet_distance_accepts_float32_and_ints():
  value = fid.frechet_distance(np.zeros(2, np.float32),
                               np.eye(2, dtype=np.float32),
                               np.array([3, 4]), np.eye(2, dtype=int))
  assert value == pytest.approx(25.0) and isinstance(value, float)


@pytest.mark.parametrize("args,error,match", [
    ((np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), ValueError, "sigma1"),
    ((np.zeros(2), np.eye(2), np.zeros(3), np.eye(2)), ValueError, "mu2"),
    ((np.zeros(2), np.eye(2), np.zeros(2), np.ones(2)), ValueError,
     "sigma2 must have rank 2"),
    ((np.zeros((2, 1)), np.eye(2), np.zeros(2), np.eye(2)), ValueError,
     "mu1 must have rank 1"),
    ((np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, np.nan])),
     ValueError, "sigma2 holds NaN"),
    ((np.zeros(2), -np.eye(2), np.zeros(2), np.diag([1.0, 0.0])),
     ValueError, "sigma1 is not positive semi-definite"),
    ((np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2)), ValueError,
     "sigma1 or sigma2 is not positive semi-definite"),
    ((np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0])), ValueError,
     "sigma1 or sigma2 is not positive semi-definite"),
    ((np.zeros(2), np.diag([1.0, 0.0]), np.zeros(2), -np.eye(2)), ValueError,
     "sigma1 or sigma2 is not positive semi-definite"),
    ((np.zeros(2), np.eye(2), np.array(["a", "b"]), np.eye(2)), TypeError,
     "mu2"),
    ((np.zeros(2), np.eye(2) * 1j, np.zeros(2), np.eye(2)), TypeError,
     "sigma1"),
])
def test_frechet_distance_errors(args, error, match):
  with pytest.raises(error, match=match):
    fid.frechet_distance(*args)


def test_feature_statistics(np_rng):
  features = np_rng.normal(size=(50, 3)).astype(np.float32)
  mu, sigma = fid.feature_statistics(features)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, features.mean(0), rtol=1e-6)
  np.testing.assert_allclose(sigma, np.cov(features.T), rtol=1e-6)
  assert fid.feature_statistics(features[:, :1])[1].shape == (1, 1)
  with pytest.raises(ValueError, match="at least 2"):
    fid.feature_statistics(features[:1])
  with pytest.raises(ValueError, match="features must have rank 2"):
    fid.feature_statistics(features[0])


def test_activation_statistics_pads_to_one_batch_size(np_rng):
  images = np_rng.normal(size=(7, 2, 3))
  sizes = []

  def feature_fn(batch):
    sizes.append(len(batch))
    return batch.reshape(len(batch), -1) * 2.0

  mu, sigma = fid.activation_statistics(feature_fn, images, batch_size=3)
  assert sizes == [3, 3, 3]
  expected = fid.feature_statistics(images.reshape(7, -1) * 2.0)
  np.testing.assert_allclose(mu, expected[0])
  np.testing.assert_allclose(sigma, expected[1])
  for bad in (0, 2.5, True):
    with pytest.raises(ValueError, match="batch_size"):
      fid.activation_statistics(feature_fn, images, batch_size=bad)
  with pytest.raises(ValueError, match="images"):
    fid.activation_statistics(feature_fn, [1, 2, 3])


def test_to_uint8():
  images = np.array([[-1.0, 0.0, 0.2, 1.0, 7.0]], np.float32)
  np.testing.assert_array_equal(fid.to_uint8(images),
                                [[0, 0, 51, 255, 255]])


# ---------------------------------------------------------------------------
# The Inception network and its weights.


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
  """Random weights saved by our own saver: `(variables, npz path)`."""
  variables = fid.random_inception_weights(0)
  path = tmp_path_factory.mktemp("fid") / fid.WEIGHTS_NAME
  fid.save_inception_weights(variables, path)
  return variables, path


def test_inception_has_pytorch_fid_parameter_count_and_layouts(random_weights):
  variables, path = random_weights
  params = sum(np.size(leaf) for leaf in jax.tree.leaves(variables["params"]))
  # torchvision's inception_v3 has 27,161,264 parameters; less its auxiliary
  # classifier (3,326,696) and 1000-way fc (2,049,000) leaves the FID net's.
  assert params == 21_785_568
  with np.load(path) as archive:
    shapes = {name: archive[name].shape for name in archive.files}
  # PyTorch layouts [out, in, kH, kW]; the factorised 1×7 and 3×1 kernels
  # tell whether rows and columns are swapped.
  assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
  assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
  assert shapes["Mixed_6b.branch7x7_3.conv.weight"] == (192, 128, 7, 1)
  assert shapes["Mixed_7b.branch3x3_2b.conv.weight"] == (384, 384, 3, 1)
  assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
  assert shapes["Mixed_5b.branch_pool.bn.running_var"] == (32,)
  assert shapes["Mixed_7a.branch7x7x3_4.bn.weight"] == (192,)
  assert len(shapes) == 94 * 5 + 1  # 94 conv+BN layers and the source hash


def test_inception_features_and_weights_round_trip(random_weights, np_rng):
  variables, path = random_weights
  images = np_rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  # At 299, the network FID is defined with (slow on CPU: two images).
  features = np.asarray(fid.inception_feature_fn(variables)(images))
  assert features.shape == (2, fid.FEATURE_DIM)
  assert features.dtype == np.float32 and np.all(np.isfinite(features))
  assert np.all(features >= 0) and features.std() > 0  # pooled ReLUs
  loaded = fid.load_inception_weights(path)
  again = np.asarray(fid.inception_feature_fn(loaded)(images))
  np.testing.assert_array_equal(again, features)
  assert not fid.weights_source_verified(path)


def test_inception_input_checks(random_weights):
  variables, _ = random_weights
  features = fid.inception_feature_fn(variables, image_size=75)
  with pytest.raises(ValueError, match=r"RGB \[B, H, W, 3\]"):
    features(np.zeros((1, 64, 64, 1), np.float32))
  with pytest.raises(TypeError, match="uint8 or floating"):
    features(np.zeros((1, 64, 64, 3), np.int32))
  with pytest.raises(ValueError, match="image_size"):
    fid.inception_feature_fn(variables, image_size=32)


def test_missing_weights_error_says_what_to_do(tmp_path):
  path = tmp_path / "nowhere" / fid.WEIGHTS_NAME
  with pytest.raises(fid.FIDWeightsNotFoundError) as info:
    fid.load_inception_weights(path)
  message = str(info.value)
  for needed in (str(path), fid.FID_WEIGHTS_URL, fid.TORCH_WEIGHTS_NAME,
                 "experiments.convert_fid_weights", "--fid-weights"):
    assert needed in message
  assert isinstance(info.value, FileNotFoundError)


def test_bad_weights_files(random_weights, tmp_path):
  variables, good = random_weights
  pth = tmp_path / fid.TORCH_WEIGHTS_NAME
  pth.write_bytes(b"torch pickle")
  with pytest.raises(ValueError, match="convert it first"):
    fid.load_inception_weights(pth)
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="not an npz"):
    fid.load_inception_weights(tmp_path / "junk.npz")
  with np.load(good) as archive:
    arrays = dict(archive)
  arrays["fc.weight"] = np.zeros((1008, 2048), np.float32)  # ignored
  arrays["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.int64(0)
  np.savez(tmp_path / "extra.npz", **arrays)
  fid.load_inception_weights(tmp_path / "extra.npz")
  del arrays["Mixed_6e.branch_pool.conv.weight"]
  arrays["Conv2d_1a_3x3.conv.weight"] = np.zeros((32, 3, 1, 1), np.float32)
  arrays["Mixed_8a.conv.weight"] = np.zeros(1, np.float32)
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(ValueError) as info:
    fid.load_inception_weights(tmp_path / "bad.npz")
  for part in ("missing Mixed_6e.branch_pool.conv.weight",
               "Conv2d_1a_3x3.conv.weight has shape (32, 3, 1, 1), expected "
               "(32, 3, 3, 3)", "unexpected Mixed_8a.conv.weight"):
    assert part in str(info.value)


def test_source_hash_is_recorded(random_weights, tmp_path):
  variables, _ = random_weights
  path = tmp_path / "w.npz"
  fid.save_inception_weights(variables, path,
                             source_sha256=fid.TORCH_WEIGHTS_SHA256_PREFIX + "0")
  assert fid.weights_source_verified(path)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                    reason="torch is installed; the message is moot")
def test_converter_needs_torch_and_says_so(tmp_path):
  source = tmp_path / fid.TORCH_WEIGHTS_NAME
  source.write_bytes(b"x")
  with pytest.raises(ImportError, match="needs PyTorch"):
    convert.main([str(source), str(tmp_path / "out.npz")])
