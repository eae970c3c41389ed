"""couae_jax's FID Inception against pytorch-fid's, with random weights.

The real weights cannot be downloaded here, so this builds pytorch-fid's own
FID network (`pytorch_fid.inception.InceptionV3`, through its
`fid_inception_v3`) with its weight download replaced by a random state dict,
writes that state dict as a `.pth`, converts it with
`experiments.convert_fid_weights`, and compares the pool-3 features of the
same images, in float64 (to rounding: any layout, padding or BatchNorm slip
shows far above it) and in float32, and the FID of two sets of images.

Measured (2 cores shared at load 12–16): float64 features agree to 6.4e-16
and float32 ones to 7.3e-7 of the largest feature, the FID to 6.3e-8. Slow
(76 s of CPU time, 3.5 minutes of wall time there, 2 GB of memory) and
skipped unless torch and pytorch-fid import (pytorch-fid needs torchvision).
Run it with `python -m pytest -m slow tests/test_fid_pytorch.py` after, e.g.,
`pip install torch torchvision pytorch-fid` (on the project's dev machines:
`pip install torch==2.14.1 torchvision==0.29.1 pytorch-fid`; the CPU-only
torch 2.13.0 there has no torchvision that imports beside it).
"""

from __future__ import annotations

import copy
import time
from unittest import mock

import numpy as np
import pytest

from couae_jax import fid
from experiments import convert_fid_weights as convert

pytestmark = [pytest.mark.slow, pytest.mark.standard_promotion]


@pytest.fixture(scope="module")
def pytorch_fid():
  """`(torch, pytorch_fid.inception, pytorch_fid.fid_score)`, or a skip.

  Imported here, not at the top, so that the default suite (which deselects
  `slow`) never imports torch.
  """
  try:
    # pylint: disable=g-import-not-at-top
    import torch
    from pytorch_fid import fid_score, inception
  # A torchvision built for another torch raises RuntimeError at import.
  except (ImportError, RuntimeError, OSError) as e:
    pytest.skip(f"needs torch and pytorch-fid (with torchvision): {e!r}")
  return torch, inception, fid_score


def _random_state_dict(torch, pytorch_inception, seed: int) -> dict:
  """A state dict for pytorch-fid's FID Inception, with random values.

  Its names come from the network `fid_inception_v3` builds (torchvision's
  Inception-v3 with 1008 logits and no auxiliary head; the FID blocks keep
  torchvision's submodules). Kernels are He-normal, so that activations
  neither vanish nor blow up over 94 layers; the BatchNorm statistics and
  affine terms are far from the identity, so that a BatchNorm mapped wrongly
  (swapped mean and variance, a wrong epsilon) changes the features.
  """
  shapes = pytorch_inception._inception_v3(  # pylint: disable=protected-access
      num_classes=1008, aux_logits=False, weights=None).state_dict()
  generator = torch.Generator().manual_seed(seed)

  def draw(*shape):
    return torch.randn(*shape, generator=generator, dtype=torch.float32)

  state = {}
  for name, value in shapes.items():
    if name.endswith("num_batches_tracked"):
      state[name] = value.clone()
    elif name.endswith(".conv.weight"):
      fan_in = value[0].numel()
      state[name] = draw(*value.shape) * (2.0 / fan_in) ** 0.5
    elif name.endswith(".bn.weight"):
      state[name] = 1.0 + 0.2 * draw(*value.shape)
    elif name.endswith(".bn.running_var"):
      state[name] = torch.exp(0.5 * draw(*value.shape))
    else:  # bn.bias, bn.running_mean, fc.*
      state[name] = 0.2 * draw(*value.shape)
  return state


@pytest.fixture(scope="module")
def networks(pytorch_fid, tmp_path_factory):
  """`(pytorch-fid's network, our variables)`, holding the same random
  weights, ours through a `.pth` and the converter."""
  torch, pytorch_inception, _ = pytorch_fid
  state = _random_state_dict(torch, pytorch_inception, 0)
  # fid_inception_v3 builds the network, then downloads and loads the real
  # weights with a strict load_state_dict: the random ones go in its place.
  with mock.patch.object(pytorch_inception, "load_state_dict_from_url",
                         return_value=state) as download:
    network = pytorch_inception.InceptionV3(
        [pytorch_inception.InceptionV3.BLOCK_INDEX_BY_DIM[fid.FEATURE_DIM]])
  assert download.call_count == 1
  network.eval()
  folder = tmp_path_factory.mktemp("pytorch_fid")
  torch.save(state, folder / "random.pth")
  convert.main([str(folder / "random.pth"), str(folder / "random.npz"),
                "--force"])
  return network, fid.load_inception_weights(folder / "random.npz")


def _torch_features(torch, network, images: np.ndarray, dtype) -> np.ndarray:
  """pytorch-fid's pool-3 features of uint8 images `[B, H, W, 3]`, as its
  fid_score computes them (pixels / 255, NCHW)."""
  batch = torch.from_numpy(images.astype(dtype) / dtype(255.0))
  with torch.no_grad():
    (pooled,) = network(batch.permute(0, 3, 1, 2))
  return pooled[:, :, 0, 0].numpy()


def _report(name, ours, theirs):
  error = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
  print(f"{name}: max |ours - pytorch-fid| / max |pytorch-fid| = "
        f"{error:.2g}")
  return error


def test_features_match_pytorch_fid_in_float64(pytorch_fid, networks,
                                               enable_x64):
  torch, _, _ = pytorch_fid
  network, variables = networks
  images = np.random.default_rng(1).integers(0, 256, (3, 64, 80, 3),
                                             dtype=np.uint8)
  start = time.perf_counter()
  ours = np.asarray(fid.inception_feature_fn(variables, dtype=np.float64)(
      images))
  theirs = _torch_features(torch, copy.deepcopy(network).double(), images,
                           np.float64)
  print(f"float64, 3 images: {time.perf_counter() - start:.1f} s")
  assert ours.dtype == np.float64 and ours.shape == (3, fid.FEATURE_DIM)
  assert theirs.std() > 0.1 * np.abs(theirs).max()  # not a degenerate net
  assert _report("float64 features", ours, theirs) < 1e-10


def test_features_and_fid_match_pytorch_fid_in_float32(pytorch_fid, networks):
  torch, _, pytorch_fid_score = pytorch_fid
  network, variables = networks
  rng = np.random.default_rng(2)
  # Two sets that differ (brighter second set): an FID well above zero.
  first = rng.integers(0, 200, (6, 64, 64, 3), dtype=np.uint8)
  second = rng.integers(56, 256, (6, 64, 64, 3), dtype=np.uint8)
  images = np.concatenate([first, second])
  start = time.perf_counter()
  ours = np.asarray(fid.inception_feature_fn(variables)(images))
  middle = time.perf_counter()
  theirs = _torch_features(torch, network, images, np.float32)
  print(f"float32, 12 images at 299: ours {middle - start:.1f} s (with "
        f"compilation), pytorch-fid {time.perf_counter() - middle:.1f} s")
  assert ours.dtype == np.float32
  assert _report("float32 features", ours, theirs) < 1e-4

  def statistics(features):
    return [fid.feature_statistics(part) for part in (features[:6],
                                                       features[6:])]

  ((mu1, s1), (mu2, s2)) = statistics(theirs.astype(np.float64))
  reference = pytorch_fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
  ((nu1, r1), (nu2, r2)) = statistics(ours.astype(np.float64))
  value = fid.frechet_distance(nu1, r1, nu2, r2)
  same_features = fid.frechet_distance(mu1, s1, mu2, s2)
  print(f"FID: pytorch-fid {reference:.8g}; ours on its features "
        f"{same_features:.8g} (rel. {abs(same_features / reference - 1):.2g});"
        f" ours on our features {value:.8g} "
        f"(rel. {abs(value / reference - 1):.2g})")
  assert reference > 1.0
  # The same statistics: only the matrix square roots differ (scipy's sqrtm
  # against our eigenvalues).
  assert same_features == pytest.approx(reference, rel=1e-6)
  assert value == pytest.approx(reference, rel=1e-5)
