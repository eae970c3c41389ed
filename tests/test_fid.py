"""Tests of couae_jax.fid: the Fréchet distance against scipy, statistics,
the FID Inception's shapes, its float32 under x64 and its weights file
(random weights: the real ones cannot be downloaded here), and of
experiments/convert_fid_weights.py, run as a lone file with JAX, Flax and
couae_jax blocked. tests/test_fid_pytorch.py (slow) compares the network
with pytorch-fid's."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from scipy import linalg

from couae_jax import _inception, fid
from experiments import convert_fid_weights as convert

REPO = pathlib.Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None


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
                 "experiments.convert_fid_weights", "--fid-weights",
                 "PyTorch and NumPy", "pip install torch numpy",
                 "no JAX needed"):
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


def test_avg_pool_ignores_padding(np_rng):
  x = np_rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  inside = np.pad(np.ones(x.shape[1:3]), 1)
  expected = np.empty_like(x)
  for i in range(5):
    for j in range(4):
      window = padded[:, i:i + 3, j:j + 3]
      expected[:, i, j] = window.sum((1, 2)) / inside[i:i + 3, j:j + 3].sum()
  actual = _inception._avg_pool_3x3(jnp.asarray(x))  # pylint: disable=protected-access
  assert actual.dtype == jnp.float32
  np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(
      actual, nn.avg_pool(x, (3, 3), strides=(1, 1),
                          padding=((1, 1), (1, 1)), count_include_pad=False),
      rtol=1e-6)


def _float64_values(jaxpr) -> set[tuple[str, tuple[int, ...]]]:
  """(primitive, shape) of every float64 value computed in `jaxpr`,
  sub-jaxprs (jit, custom_jvp) included."""
  found = set()
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      if getattr(var.aval, "dtype", None) == np.float64:
        found.add((eqn.primitive.name, var.aval.shape))
    for param in eqn.params.values():
      for inner in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(inner, "jaxpr", inner)  # ClosedJaxpr -> Jaxpr
        if hasattr(inner, "eqns"):
          found |= _float64_values(inner)
  return found


def test_inception_stays_float32_under_x64(random_weights, np_rng,
                                           enable_x64):
  variables, _ = random_weights
  images = np_rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  net = fid.InceptionV3(fid.MIN_INCEPTION_SIZE)
  jaxpr = jax.make_jaxpr(net.apply)(variables, images.astype(np.float32))
  # Only the resize's interpolation weights ([64, 75] matrices) may be
  # computed in float64 (then cast); no image-shaped [B, H, W, C] value may.
  image_shaped = {v for v in _float64_values(jaxpr.jaxpr) if len(v[1]) > 2}
  assert not image_shaped, sorted(image_shaped)[:5]
  features = np.asarray(fid.inception_feature_fn(
      variables, image_size=fid.MIN_INCEPTION_SIZE)(images))
  assert features.dtype == np.float32
  with jax.enable_x64(False):
    expected = np.asarray(fid.inception_feature_fn(
        variables, image_size=fid.MIN_INCEPTION_SIZE)(images))
  np.testing.assert_allclose(features, expected, rtol=1e-5,
                             atol=1e-6 * np.abs(expected).max())
  # float64 on request: every layer, not only the input.
  features64 = fid.inception_feature_fn(
      variables, image_size=fid.MIN_INCEPTION_SIZE, dtype=np.float64)(images)
  assert features64.dtype == np.float64
  np.testing.assert_allclose(features64, expected, rtol=1e-3,
                             atol=1e-4 * np.abs(expected).max())


def test_inception_dtype_checks(random_weights):
  variables, _ = random_weights
  with pytest.raises(ValueError, match="dtype float64 needs jax_enable_x64"):
    fid.inception_feature_fn(variables, dtype=np.float64)
  for bad in (np.int32, np.float16, "no such dtype"):
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
      fid.inception_feature_fn(variables, dtype=bad)
  with pytest.raises(ValueError, match="dtype must be float32 or float64"):
    fid.InceptionV3(fid.MIN_INCEPTION_SIZE, dtype=np.int8).init(
        jax.random.key(0), np.zeros((1, 75, 75, 3), np.float32))


# ---------------------------------------------------------------------------
# The converter: PyTorch and NumPy only.


def test_converter_constants_match_fid():
  for name in ("FID_WEIGHTS_URL", "TORCH_WEIGHTS_NAME", "WEIGHTS_NAME",
               "TORCH_WEIGHTS_SHA256_PREFIX", "SOURCE_HASH_KEY"):
    assert getattr(convert, name) == getattr(fid, name), name
  variables = jax.eval_shape(
      fid.InceptionV3(fid.MIN_INCEPTION_SIZE).init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))
  kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(
      variables["params"]) if path[-1].key == "kernel"]
  assert len(kernels) == convert.CONV_LAYERS
  assert sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(
      variables["params"])) == convert.PARAMETERS


def _state_dict(variables) -> dict[str, np.ndarray]:
  """What `torch.load` gives for pytorch-fid's .pth, as NumPy arrays: the
  pool-3 network in PyTorch's names and layouts, the 1008-way logits layer
  and BatchNorm's counters."""
  # pylint: disable=protected-access
  flat = {fid._torch_name(key): fid._to_torch_layout(key[-1], np.asarray(v))
          for key, v in traverse_util.flatten_dict(dict(variables)).items()}
  # pylint: enable=protected-access
  flat["fc.weight"] = np.zeros((1008, 2048), np.float32)
  flat["fc.bias"] = np.zeros(1008, np.float32)
  for name in list(flat):
    if name.endswith(".bn.running_var"):
      flat[name.replace("running_var", "num_batches_tracked")] = np.int64(0)
  return flat


def test_converter_arrays_load_into_the_network(random_weights, tmp_path):
  variables, _ = random_weights
  arrays = convert.state_dict_arrays(_state_dict(variables))
  path = tmp_path / "converted.npz"
  convert.write_npz(arrays, path, source_sha256="6726825d" + "0" * 56)
  loaded = fid.load_inception_weights(path)
  for (key, want), (key2, got) in zip(
      jax.tree_util.tree_leaves_with_path(variables),
      jax.tree_util.tree_leaves_with_path(loaded)):
    assert key == key2
    np.testing.assert_array_equal(got, want)
  assert fid.weights_source_verified(path)


def test_converter_rejects_what_is_not_the_fid_inception(random_weights):
  variables, _ = random_weights
  good = _state_dict(variables)
  with pytest.raises(TypeError, match="state must be a mapping"):
    convert.state_dict_arrays(list(good.items()))
  with pytest.raises(TypeError, match="fc.bias is not an array"):
    convert.state_dict_arrays({**good, "fc.bias": object()})
  bad = dict(good)
  del bad["Mixed_6e.branch_pool.bn.running_mean"]
  bad["Mixed_5b.branch1x1.bn.weight"] = np.ones(3, np.float32)
  bad["Conv2d_1a_3x3.conv.weight"] = np.zeros((32, 27), np.float32)
  with pytest.raises(ValueError) as info:
    convert.state_dict_arrays(bad)
  for part in ("missing Mixed_6e.branch_pool.bn.running_mean",
               "Mixed_5b.branch1x1.bn.weight has shape (3,), expected (64,)",
               "Conv2d_1a_3x3.conv.weight has shape (32, 27), expected "
               "[out, in, kH, kW]"):
    assert part in str(info.value)
  fewer = {k: v for k, v in good.items() if not k.startswith("Mixed_7c.")}
  with pytest.raises(ValueError, match="85 convolutions, expected 94"):
    convert.state_dict_arrays(fewer)
  wider = dict(good, **{"Conv2d_1a_3x3.conv.weight": np.zeros(
      (32, 4, 3, 3), np.float32)})
  with pytest.raises(ValueError,
                     match="21,785,856 parameters, expected 21,785,568"):
    convert.state_dict_arrays(wider)


_POISON = textwrap.dedent("""\
    import runpy, sys
    # None in sys.modules makes `import NAME` raise ImportError.
    for name in {blocked!r}:
      sys.modules[name] = None
    sys.argv = [{script!r}, *{args!r}]
    runpy.run_path({script!r}, run_name="__main__")
    loaded = sorted(name for name, module in sys.modules.items()
                    if module is not None and name.split(".")[0]
                    in ("jax", "jaxlib", "flax", "couae_jax"))
    assert not loaded, loaded
    """)


def _run_lone_converter(tmp_path, args, blocked):
  """Runs a copy of the converter, outside the repository, in a fresh
  Python where the `blocked` modules cannot be imported."""
  script = tmp_path / "convert_fid_weights.py"
  shutil.copy(REPO / "experiments" / "convert_fid_weights.py", script)
  code = _POISON.format(blocked=blocked, script=str(script), args=args)
  return subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300,
                        check=False)


def test_converter_without_torch_says_what_to_install(tmp_path):
  source = tmp_path / fid.TORCH_WEIGHTS_NAME
  source.write_bytes(b"x")
  result = _run_lone_converter(
      tmp_path, [str(source), str(tmp_path / "out.npz")],
      blocked=("torch", "jax", "jaxlib", "flax", "couae_jax"))
  assert result.returncode != 0
  assert "ImportError: converting the FID weights needs PyTorch" in \
      result.stderr
  assert "pip install torch numpy" in result.stderr


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch to write a .pth")
def test_converter_needs_no_jax(random_weights, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  variables, _ = random_weights
  source = tmp_path / "random.pth"
  torch.save({name: torch.from_numpy(np.asarray(value))
              for name, value in _state_dict(variables).items()}, source)
  target = tmp_path / "random.npz"
  refused = _run_lone_converter(tmp_path, [str(source), str(target)],
                                blocked=("jax", "jaxlib", "flax",
                                         "couae_jax"))
  assert refused.returncode != 0 and "not pytorch-fid's 6726825d" in \
      refused.stderr
  result = _run_lone_converter(
      tmp_path, [str(source), str(target), "--force"],
      blocked=("jax", "jaxlib", "flax", "couae_jax"))
  assert result.returncode == 0, result.stderr
  assert "pytorch-fid's file: False" in result.stdout
  loaded = fid.load_inception_weights(target)
  for want, got in zip(jax.tree.leaves(variables), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(got, want)
  assert not fid.weights_source_verified(target)
  with np.load(target) as archive:
    assert str(archive[fid.SOURCE_HASH_KEY]) == fid.sha256_of(source)
