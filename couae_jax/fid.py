"""Fréchet distances of feature statistics, and the FID Inception network.

The Fréchet distance between two Gaussians `N(mu1, sigma1)` and
`N(mu2, sigma2)` is

    ‖mu1 − mu2‖² + Tr(sigma1) + Tr(sigma2) − 2 Tr((sigma1 sigma2)^½).

Fitted to the features of generated and real images, it is the FID
(Heusel et al. 2017). `frechet_distance` computes it in float64 without a
general matrix square root: `Tr((s1 s2)^½)` is the sum of the square roots of
the eigenvalues of the symmetric positive semi-definite `R s2 Rᵀ`, which has
the eigenvalues of `s1 s2` for any factor `s1 = Rᵀ R` (Cholesky, or `s1^½`
when `s1` is singular). Symmetric eigenvalue problems are stable for singular
covariances (fewer samples than features), which need no offset.

`activation_statistics` streams any feature function over a set of images.
`InceptionV3` is the network FID is defined with: the pool-3 (2048-d)
features of TensorFlow's 2015-12-05 Inception graph, with the FID-specific
blocks that pytorch-fid's `FIDInceptionA`, `FIDInceptionC`, `FIDInceptionE_1`
and `FIDInceptionE_2` reproduce (average pools that ignore padding, a max pool
in the last block). Its weights cannot ship with the package:
`load_inception_weights` reads them from an `.npz` holding pytorch-fid's
state dict as NumPy arrays (same names, PyTorch layouts), which
`python -m experiments.convert_fid_weights` makes from pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth`. The conversion needs only PyTorch and
NumPy (it can run on another machine); reading the npz here needs no PyTorch.
`tests/test_fid_pytorch.py` (`pytest -m slow`, with torch and pytorch-fid
installed) checks this network against pytorch-fid's, feature by feature.

The network computes in float32, also under `jax_enable_x64` (float64 on
request, for such checks). On a CPU it is slow: 0.21 CPU-seconds per image
at 299×299 (pytorch-fid's network: 0.25), 0.6 s of wall time per image on a
shared 2-core machine; an FID of 10,000 generated against 10,000 data images
is over an hour of CPU time (BUILD_NOTES section 7).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import zipfile
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from couae_jax._inception import (
  INCEPTION_SIZE,
  MIN_INCEPTION_SIZE,
  FeatureFn,
  InceptionV3,
  inception_feature_fn,
)

PathLike = Union[str, pathlib.Path]

#: pytorch-fid's port of the TF FID Inception weights.
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/"
                   "fid_weights/pt_inception-2015-12-05-6726825d.pth")
TORCH_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
#: The converted file's conventional name.
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.npz"
#: PyTorch Hub names files by the first digits of their SHA-256.
TORCH_WEIGHTS_SHA256_PREFIX = "6726825d"
#: The npz entry recording the SHA-256 of the `.pth` it was converted from.
SOURCE_HASH_KEY = "couae_fid.source_sha256"
FEATURE_DIM = 2048


# ---------------------------------------------------------------------------
# The Fréchet distance.


def _float64(name: str, value, rank: int) -> np.ndarray:
  array = np.asarray(value)
  if not (np.issubdtype(array.dtype, np.floating)
          or np.issubdtype(array.dtype, np.integer)):
    raise TypeError(f"{name} must be a real array; got dtype {array.dtype}.")
  if array.ndim != rank:
    raise ValueError(f"{name} must have rank {rank}; got shape {array.shape}.")
  array = array.astype(np.float64)
  if not np.all(np.isfinite(array)):
    raise ValueError(f"{name} holds NaN or infinite values.")
  return array


def _check_psd(name: str, values: np.ndarray) -> np.ndarray:
  """`values`, the eigenvalues of a covariance, clipped at 0."""
  # Rounding makes the zero eigenvalues of singular covariances a little
  # negative; anything beyond that is not a covariance.
  tolerance = 1e-8 * max(1.0, float(np.abs(values).max(initial=0.0)))
  if values.min(initial=0.0) < -tolerance:
    raise ValueError(
        f"{name} is not positive semi-definite (smallest eigenvalue "
        f"{values.min():.3g}); pass covariance matrices.")
  return np.clip(values, 0.0, None)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """The Fréchet (2-Wasserstein) distance² between two Gaussians, in float64.

  Args:
    mu1: `[d]` the first mean.
    sigma1: `[d, d]` the first covariance (symmetric positive semi-definite;
      singular is fine).
    mu2: `[d]` the second mean.
    sigma2: `[d, d]` the second covariance.

  Returns:
    `‖mu1 − mu2‖² + Tr(sigma1 + sigma2 − 2 (sigma1 sigma2)^½)`, >= 0 (a
    rounding residue below 0 is returned as 0).

  Raises:
    TypeError: a non-real argument.
    ValueError: wrong ranks or sizes, non-finite values, or a covariance with
      clearly negative eigenvalues; the message names the argument.

  Example:
    >>> import numpy as np
    >>> frechet_distance(np.zeros(1), np.eye(1), np.ones(1), 4 * np.eye(1))
    2.0
  """
  mu1 = _float64("mu1", mu1, 1)
  mu2 = _float64("mu2", mu2, 1)
  sigma1 = _float64("sigma1", sigma1, 2)
  sigma2 = _float64("sigma2", sigma2, 2)
  d = mu1.shape[0]
  for name, value in (("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
    if value.shape != (d,) * value.ndim:
      raise ValueError(
          f"{name} must have shape {(d,) * value.ndim} to match mu1 of shape "
          f"{mu1.shape}; got {value.shape}.")
  sigma1 = 0.5 * (sigma1 + sigma1.T)
  sigma2 = 0.5 * (sigma2 + sigma2.T)
  # Tr((s1 s2)^½) sums the square roots of the eigenvalues of s1 s2, which
  # are those of the symmetric R s2 Rᵀ for any factor s1 = Rᵀ R (and Tr is
  # symmetric in s1, s2): the Cholesky factor of a regular covariance (cheap),
  # else Λ^½ Vᵀ from an eigen-decomposition restricted to the nonzero
  # eigenvalues, which is exact for singular covariances (fewer samples than
  # features) and makes R s2 Rᵀ as small as the rank.
  for first, other in ((sigma1, sigma2), (sigma2, sigma1)):
    try:
      factor = np.linalg.cholesky(first).T
      second = other
      break
    except np.linalg.LinAlgError:
      continue
  else:
    values, vectors = np.linalg.eigh(sigma1)
    values = _check_psd("sigma1", values)
    rank = values > values.max(initial=0.0) * d * np.finfo(np.float64).eps
    factor = np.sqrt(values[rank])[:, None] * vectors[:, rank].T
    second = sigma2
  # A covariance with negative eigenvalues shows here (where the other one
  # is regular).
  product_values = _check_psd(
      "sigma1 or sigma2", np.linalg.eigvalsh(factor @ second @ factor.T))
  diff = mu1 - mu2
  distance = (diff @ diff + np.trace(sigma1) + np.trace(sigma2)
              - 2.0 * np.sqrt(product_values).sum())
  return max(float(distance), 0.0)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The mean and covariance of a set of feature vectors, in float64.

  Args:
    features: `[n, d]`, n >= 2.

  Returns:
    `(mu [d], sigma [d, d])`; sigma is the unbiased (n − 1) covariance, as in
    the reference FID code.

  Example:
    >>> mu, sigma = feature_statistics(np.array([[0.0, 1.0], [2.0, 1.0]]))
    >>> mu.tolist(), sigma.tolist()
    ([1.0, 1.0], [[2.0, 0.0], [0.0, 0.0]])
  """
  features = _float64("features", features, 2)
  if features.shape[0] < 2:
    raise ValueError(
        f"features must hold at least 2 vectors; got shape {features.shape}.")
  return features.mean(axis=0), np.cov(features, rowvar=False).reshape(
      (features.shape[1],) * 2)


def activation_statistics(feature_fn: FeatureFn, images: np.ndarray, *,
                          batch_size: int = 100
                          ) -> tuple[np.ndarray, np.ndarray]:
  """Feature statistics of `images`, fed to `feature_fn` a batch at a time.

  Every call gets exactly `batch_size` images (the last batch is padded by
  repeating its last image, and the padding's features dropped), so a jitted
  `feature_fn` compiles once.

  Args:
    feature_fn: maps `[batch_size, ...]` images to `[batch_size, d]` features.
    images: `[n, ...]`, n >= 2.
    batch_size: images per call.

  Returns:
    `feature_statistics` of the `[n, d]` features.

  Example:
    >>> images = np.arange(6.0).reshape(3, 2)
    >>> mu, _ = activation_statistics(lambda x: 2 * x, images, batch_size=2)
    >>> mu.tolist()
    [4.0, 6.0]
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
      or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer; got "
                     f"{batch_size!r}.")
  if not hasattr(images, "shape") or len(images.shape) < 1:
    raise ValueError("images must be an array [n, ...]; got "
                     f"{type(images).__name__}.")
  features = []
  for start in range(0, len(images), batch_size):
    batch = np.asarray(images[start:start + batch_size])
    count = len(batch)
    if count < batch_size:
      batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - count,
                                               axis=0)])
    features.append(np.asarray(feature_fn(batch))[:count])
  return feature_statistics(np.concatenate(features))


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Images in [0, 1] as 8-bit pixels, as saving them to PNG would store them.

  Generated images are scored after this quantisation so that they go through
  the same path as data images decoded from files.

  Example:
    >>> to_uint8(np.array([-0.5, 0.5, 1.2])).tolist()
    [0, 128, 255]
  """
  return np.round(np.clip(np.asarray(images, np.float32), 0.0, 1.0)
                  * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------
# Weights: pytorch-fid's state dict as an npz.


class FIDWeightsNotFoundError(FileNotFoundError):
  """The FID Inception weights are not where they were looked for."""


def missing_weights_message(path: PathLike) -> str:
  """What to do when the FID weights file `path` does not exist."""
  return (
      f"FID needs the Inception weights file {WEIGHTS_NAME} at {path}, which "
      f"does not exist. No weights can be downloaded here: (1) download "
      f"{TORCH_WEIGHTS_NAME} (pytorch-fid's port of the TF 2015-12-05 FID "
      f"Inception) from {FID_WEIGHTS_URL}; (2) convert it on any machine with "
      f"PyTorch and NumPy (pip install torch numpy; no JAX needed there): "
      f"python -m experiments.convert_fid_weights {TORCH_WEIGHTS_NAME} "
      f"{WEIGHTS_NAME} (experiments/convert_fid_weights.py also runs as a "
      f"lone file); (3) copy {WEIGHTS_NAME} here and pass its path with "
      f"--fid-weights (or put it at {path}).")


def _torch_name(path: tuple[str, ...]) -> str:
  """The state-dict name of a flattened variable path."""
  collection, *modules, leaf = path
  torch_leaf = {("params", "kernel"): "weight", ("params", "scale"): "weight",
                ("params", "bias"): "bias",
                ("batch_stats", "mean"): "running_mean",
                ("batch_stats", "var"): "running_var"}[collection, leaf]
  return ".".join([*modules, torch_leaf])


def _to_torch_layout(leaf: str, array: np.ndarray) -> np.ndarray:
  # Flax convolution kernels are [H, W, in, out]; PyTorch's [out, in, H, W].
  return array.transpose(3, 2, 0, 1) if leaf == "kernel" else array


def _from_torch_layout(leaf: str, array: np.ndarray) -> np.ndarray:
  return array.transpose(2, 3, 1, 0) if leaf == "kernel" else array


@functools.lru_cache(maxsize=1)
def _abstract_variables() -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
  """Flattened shapes of the network's variables (traced, never computed)."""
  size = MIN_INCEPTION_SIZE  # Variable shapes do not depend on the input.
  variables = jax.eval_shape(
      InceptionV3(size).init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  return traverse_util.flatten_dict(dict(variables))


def _is_ignored(name: str) -> bool:
  # The logits layer and BatchNorm's counters are not needed for pool-3.
  return (name.startswith("fc.") or name.endswith(".num_batches_tracked")
          or name == SOURCE_HASH_KEY)


def random_inception_weights(seed: int = 0) -> dict[str, Any]:
  """Random variables of the right shapes (He-normal kernels, identity
  BatchNorm). Their features mean nothing: for tests and dry runs only."""
  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in _abstract_variables().items():
    if path[-1] == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)
    elif path[-1] in ("scale", "var"):
      value = np.ones(leaf.shape)
    else:
      value = np.zeros(leaf.shape)
    flat[path] = value.astype(np.float32)
  return traverse_util.unflatten_dict(flat)


def save_inception_weights(variables: Any, path: PathLike, *,
                           source_sha256: str = "") -> None:
  """Writes `variables` in the npz format `load_inception_weights` reads.

  Args:
    variables: `{'params', 'batch_stats'}` of `InceptionV3`.
    path: the `.npz` to write.
    source_sha256: the SHA-256 of the `.pth` the weights came from, recorded
      so that `weights_source_verified` can tell the real weights from
      others.
  """
  # Any: NumPy's stubs type `np.savez`'s keywords as its `allow_pickle` too.
  arrays: dict[str, Any] = {
      _torch_name(key): _to_torch_layout(key[-1], np.asarray(value))
      for key, value in traverse_util.flatten_dict(dict(variables)).items()}
  arrays[SOURCE_HASH_KEY] = np.asarray(source_sha256)
  with open(path, "wb") as f:  # np.savez would append '.npz' to other names.
    np.savez(f, **arrays)


def load_inception_weights(path: PathLike) -> dict[str, Any]:
  """Reads the FID Inception's variables from an npz of pytorch-fid's weights.

  The npz maps each state-dict name of pytorch-fid's `InceptionV3`
  (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_mean`, ...) to
  its array in PyTorch's layout; `fc.*`, `*.num_batches_tracked` and
  `SOURCE_HASH_KEY` may be present and are ignored.

  Args:
    path: the npz (`WEIGHTS_NAME`, made by `experiments.convert_fid_weights`).

  Returns:
    `{'params', 'batch_stats'}` for `InceptionV3` / `inception_feature_fn`.

  Raises:
    FIDWeightsNotFoundError: no file at `path`; the message says where to get
      it, how to convert it and where to put it.
    ValueError: not an npz, a `.pth` given directly, or missing, unexpected
      or misshapen arrays (named).
  """
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise FIDWeightsNotFoundError(missing_weights_message(path))
  if path.suffix == ".pth":
    raise ValueError(
        f"{path} is the PyTorch file; convert it first (needs PyTorch and "
        f"NumPy only): python -m experiments.convert_fid_weights {path} "
        f"{path.with_suffix('.npz')}")
  try:
    archive = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path} is not an npz archive: {e}") from e
  with archive:
    names = set(archive.files)
    flat, problems = {}, []
    for key, leaf in _abstract_variables().items():
      name = _torch_name(key)
      if name not in names:
        problems.append(f"missing {name}")
        continue
      array = _from_torch_layout(key[-1], archive[name])
      if array.shape != leaf.shape:
        problems.append(
            f"{name} has shape {archive[name].shape}, expected "
            f"{_to_torch_layout(key[-1], np.zeros(leaf.shape)).shape}")
      flat[key] = array.astype(np.float32)
    expected = {_torch_name(key) for key in _abstract_variables()}
    problems += [f"unexpected {name}" for name in sorted(names - expected)
                 if not _is_ignored(name)]
  if problems:
    shown = "; ".join(problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    raise ValueError(
        f"{path} does not hold pytorch-fid's Inception weights: {shown}"
        f"{more}. Convert {TORCH_WEIGHTS_NAME} with python -m "
        "experiments.convert_fid_weights.")
  return traverse_util.unflatten_dict(flat)


def weights_source_verified(path: PathLike) -> bool:
  """Whether the npz records a source `.pth` whose SHA-256 starts with
  pytorch-fid's published prefix (`TORCH_WEIGHTS_SHA256_PREFIX`)."""
  with np.load(path, allow_pickle=False) as archive:
    if SOURCE_HASH_KEY not in archive.files:
      return False
    return str(archive[SOURCE_HASH_KEY]).startswith(
        TORCH_WEIGHTS_SHA256_PREFIX)


def sha256_of(path: PathLike) -> str:
  """The hex SHA-256 of a file, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def default_weights_path() -> pathlib.Path:
  """`$COUAE_FID_WEIGHTS`, else `~/.cache/couae_jax/` + `WEIGHTS_NAME`."""
  return pathlib.Path(os.environ.get(
      "COUAE_FID_WEIGHTS",
      pathlib.Path("~/.cache/couae_jax") / WEIGHTS_NAME)).expanduser()


__all__ = [
    "FEATURE_DIM", "FID_WEIGHTS_URL", "INCEPTION_SIZE", "MIN_INCEPTION_SIZE",
    "TORCH_WEIGHTS_NAME", "WEIGHTS_NAME", "FIDWeightsNotFoundError",
    "InceptionV3", "activation_statistics", "default_weights_path",
    "feature_statistics", "frechet_distance", "inception_feature_fn",
    "load_inception_weights", "missing_weights_message",
    "random_inception_weights", "save_inception_weights", "sha256_of",
    "to_uint8", "weights_source_verified",
]
