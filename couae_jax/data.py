"""Data sets and the input pipeline.

Loading is pure NumPy (Pillow decodes CelebA's JPEGs, scikit-learn ships the
8×8 digits) and deterministic. Images come back as float32 NHWC arrays with
pixels in [0, 1]. A missing or unreadable file raises FileNotFoundError or
ValueError naming its path.

* Grid: `grid_mixture`, `sample_grid`, `grid_log_density`, `grid_training_set`
  (25 Gaussians in 2-D; the paper's synthetic benchmark).
* Files: `load_npz`, `read_idx`, `load_mnist`, `celeba_files`, `load_celeba`
  (float32, or uint8 pixels: a quarter of the memory, all of CelebA in
  2.5 GB), `load_digits`; `check_examples` rejects what is not a training
  set (NaN rows, one example, strings, complex numbers, blank images).
* Pipeline: `BatchIterator` (deterministic, resumable, per-process slices of
  a global batch) and `shard_batch` (host-local batch → global `jax.Array`).
"""

from __future__ import annotations

import concurrent.futures
import gzip
import math
import numbers
import operator
import os
import pathlib
import struct
import zipfile
import zlib
from typing import Any, Mapping, Optional, Union

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from couae_jax._grid import (
  GRID_COORDINATES,
  GRID_VARIANCE,
  GaussianMixture,
  grid_log_density,
  grid_mixture,
  grid_training_set,
  sample_grid,
)

PathLike = Union[str, pathlib.Path]

# ---------------------------------------------------------------------------
# Files.


def load_npz(path: PathLike, key: str = "x") -> np.ndarray:
  """The array named `key` of the `.npz` archive at `path` (no pickles)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"No .npz file at {path}.")
  try:
    archive = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path} is not a readable .npz archive: {e}") from e
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise ValueError(f"{path} is a .npy file, not an .npz archive.")
  with archive:
    names = list(archive.files)
    if key not in names:
      raise ValueError(f"{path} holds no array {key!r}; it holds {names}.")
    try:
      return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile,
            zlib.error) as e:
      raise ValueError(f"{path}: array {key!r} is corrupt: {e}") from e


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
               0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: PathLike) -> np.ndarray:
  """The array in the IDX file at `path` (gzip-compressed when it ends .gz).

  IDX is MNIST's format: two zero bytes, a type code, the rank, the
  dimensions as big-endian uint32, then the data, row-major and big-endian.
  """
  path = pathlib.Path(path)
  try:
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise FileNotFoundError(f"No IDX file at {path}.") from None
  except (OSError, EOFError, zlib.error) as e:
    raise ValueError(f"{path} could not be read: {e}") from e
  if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
    raise ValueError(
        f"{path} is not an IDX file: bad magic number {raw[:4].hex()!r}.")
  rank = raw[3]
  header = 4 + 4 * rank
  if len(raw) < header:
    raise ValueError(f"{path} is truncated inside its IDX header.")
  shape = struct.unpack(f">{rank}I", raw[4:header])
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  expected = math.prod(shape) * dtype.itemsize
  if len(raw) - header != expected:
    raise ValueError(
        f"{path} is truncated or corrupt: its header gives shape {shape} "
        f"({expected} bytes of data) but it holds {len(raw) - header} bytes.")
  array = np.frombuffer(raw, dtype, offset=header).reshape(shape)
  return array.astype(dtype.newbyteorder("="))


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_file(directory: pathlib.Path, name: str) -> pathlib.Path:
  candidates = [directory / name, directory / f"{name}.gz"]
  for candidate in candidates:
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(
      f"Neither {candidates[0]} nor {candidates[1]} exists.")


def load_mnist(directory: PathLike, split: str = "train", *,
               dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
  """MNIST from the standard IDX files in `directory` (optionally gzipped).

  Args:
    directory: holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
      `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (or `*.gz`).
    split: 'train' (60,000 images) or 'test' (10,000).
    dtype: float32 (pixels in [0, 1]) or uint8 (the raw pixels, a quarter
      of the memory; `as_float` gives bitwise the float32 images).

  Returns:
    `(images [N, 28, 28, 1] of dtype, labels [N] int64)`.
  """
  if split not in _MNIST_FILES:
    raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
  dtype = np.dtype(dtype)
  if dtype not in (np.float32, np.uint8):
    raise ValueError(f"dtype must be float32 or uint8; got {dtype}.")
  directory = pathlib.Path(directory)
  image_path, label_path = (_find_file(directory, name)
                            for name in _MNIST_FILES[split])
  images, labels = read_idx(image_path), read_idx(label_path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise ValueError(
        f"{image_path} must hold uint8 images [N, H, W]; got "
        f"{images.dtype} {images.shape}.")
  if labels.shape != images.shape[:1]:
    raise ValueError(
        f"{label_path} holds {labels.shape} labels for the {len(images)} "
        f"images of {image_path}.")
  images = images[..., None]
  return (images if dtype == np.uint8 else as_float(images),
          labels.astype(np.int64))


#: Side of the centred square cropped from each CelebA image (178×218).
CELEBA_CROP = 140
#: Side of the resized CelebA images.
CELEBA_SIZE = 64


def _celeba_image(path: pathlib.Path) -> np.ndarray:
  """One aligned CelebA image: centre-cropped, resized, uint8 [64, 64, 3]."""
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "load_celeba needs Pillow (installed with matplotlib): "
        "pip install 'couae-jax[experiments]'") from e
  try:
    with Image.open(path) as file:
      image = file.convert("RGB")
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f"{path} is not a readable image: {e}") from e
  cols, rows = image.size
  if min(cols, rows) < CELEBA_CROP:
    raise ValueError(
        f"{path} is {cols}×{rows}, smaller than the {CELEBA_CROP}×"
        f"{CELEBA_CROP} centre crop.")
  left, top = (cols - CELEBA_CROP) // 2, (rows - CELEBA_CROP) // 2
  image = image.crop((left, top, left + CELEBA_CROP, top + CELEBA_CROP))
  image = image.resize((CELEBA_SIZE, CELEBA_SIZE), Image.Resampling.LANCZOS)
  return np.asarray(image)


def celeba_files(directory: PathLike,
                 limit: Optional[int] = None) -> list[pathlib.Path]:
  """The CelebA JPEGs `load_celeba` reads, in sorted name order.

  Args:
    directory: the folder holding `img_align_celeba/`, or that folder itself.
    limit: only the first `limit` files.

  Raises:
    FileNotFoundError: no such folder, or no `.jpg` in it.
    ValueError: `limit` is not a positive integer or None.
  """
  if limit is not None and (isinstance(limit, bool)
                            or not isinstance(limit, numbers.Integral)
                            or limit < 1):
    raise ValueError(
        f"limit must be a positive integer or None; got {limit!r}.")
  directory = pathlib.Path(directory)
  folder = directory / "img_align_celeba"
  if not folder.is_dir():
    folder = directory
  if not folder.is_dir():
    raise FileNotFoundError(f"No CelebA folder at {directory}.")
  files = sorted(folder.glob("*.jpg"))[:limit]
  if not files:
    raise FileNotFoundError(f"No .jpg files in {folder}.")
  return files


def load_celeba(directory: PathLike, limit: Optional[int] = None, *,
                dtype=np.float32, workers: Optional[int] = None) -> np.ndarray:
  """Aligned CelebA images as in WAE: centre crop 140×140, resized to 64×64.

  Args:
    directory: the folder holding `img_align_celeba/`, or that folder itself.
    limit: load only the first `limit` images in file-name order. All 202,599
      images take 10 GB as float32 and 2.5 GB as uint8.
    dtype: float32 (pixels in [0, 1]) or uint8 (the raw pixels).
    workers: decoding threads (Pillow releases the GIL while decoding);
      None takes min(8, CPU count).

  Returns:
    `[N, 64, 64, 3]` of `dtype`, files in sorted name order.
  """
  dtype = np.dtype(dtype)
  if dtype not in (np.float32, np.uint8):
    raise ValueError(f"dtype must be float32 or uint8; got {dtype}.")
  files = celeba_files(directory, limit)
  images = np.empty((len(files), CELEBA_SIZE, CELEBA_SIZE, 3), dtype)
  workers = workers or min(8, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for i, image in enumerate(pool.map(_celeba_image, files)):
      images[i] = image
  if dtype == np.uint8:
    return images
  return np.divide(images, np.float32(255.0), out=images)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
  """The 8×8 handwritten digits shipped with scikit-learn (no download).

  Returns:
    `(images [1797, 8, 8, 1] float32 in [0, 1], labels [1797] int64)`.
  """
  try:
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "load_digits needs scikit-learn: pip install 'couae-jax[experiments]'"
    ) from e
  digits = datasets.load_digits()
  images = digits.images.astype(np.float32)[..., None] / np.float32(16.0)
  return images, digits.target.astype(np.int64)


# ---------------------------------------------------------------------------
# The input pipeline.


def _index(name: str, value, minimum: int) -> int:
  """`value` as an int >= `minimum` (numpy integers and 0-d arrays pass)."""
  try:
    if isinstance(value, bool):
      raise TypeError
    value = operator.index(value)
  except TypeError:
    raise ValueError(f"{name} must be an integer; got {value!r}.") from None
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}; got {value}.")
  return value


def as_float(examples) -> np.ndarray:
  """Examples as the networks see them: float32, uint8 pixels scaled to [0, 1].

  Images can be held as uint8 (a quarter of the memory: CelebA is 2.5 GB
  instead of 10) and converted a batch at a time.

  Args:
    examples: an array `[B, ...]` of uint8 pixels or of real numbers.

  Returns:
    float32 `[B, ...]`.

  Example:
    >>> as_float(np.array([[0, 51, 255]], np.uint8))
    array([[0. , 0.2, 1. ]], dtype=float32)
  """
  examples = np.asarray(examples)
  if examples.dtype == np.uint8:
    return examples.astype(np.float32) / np.float32(255.0)
  if not np.issubdtype(examples.dtype, np.number):
    raise TypeError(
        f"examples must be uint8 pixels or real numbers; got dtype "
        f"{examples.dtype}.")
  return examples.astype(np.float32, copy=False)


#: Examples checked at a time, so that a uint8 CelebA (2.5 GB) never gets a
#: full-size temporary.
_CHECK_CHUNK = 4096


def check_examples(examples: np.ndarray, source: str) -> np.ndarray:
  """Rejects an array that is not a training set `[N, *features]`.

  Training needs at least two examples (the MMD compares pairs, the
  standardisation divides by a spread), each a finite real vector or image,
  not all alike. Checked in chunks of examples, so a uint8 image set gets no
  full-size temporary copy.

  Args:
    examples: the array as loaded.
    source: what it was loaded from (a path, or a name such as
      `data='grid'`); every message starts with it.

  Returns:
    `examples`, unchanged.

  Raises:
    TypeError: not a NumPy array, or of a dtype that is not real numbers
      (strings, objects, complex numbers, dates).
    ValueError: a scalar or 1-D array, no features, fewer than two
      examples, an example holding NaN or infinity, or every example the
      same (e.g. all-zero images).

  Example:
    >>> check_examples(np.zeros((5, 2)), "a.npz")
    Traceback (most recent call last):
      ...
    ValueError: a.npz: every one of its 5 examples is the same (all 0.0, e.g. blank images): there is nothing to learn and no spread to standardise by.
  """
  if not isinstance(examples, np.ndarray):
    raise TypeError(f"{source}: the examples must be a NumPy array; got "
                    f"{type(examples).__name__}.")
  dtype = examples.dtype
  if np.issubdtype(dtype, np.complexfloating):
    # NumPy's float cast would keep the real part and only warn.
    raise TypeError(
        f"{source} holds complex numbers ({dtype}); the networks take real "
        "data: store the real and imaginary parts as separate features "
        "(e.g. np.stack([x.real, x.imag], axis=-1)).")
  if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
    raise TypeError(
        f"{source} holds {dtype} values (dtype kind {dtype.kind!r}), not "
        "numbers; store the examples as a numeric array.")
  if examples.ndim == 0:
    raise ValueError(
        f"{source} holds a scalar; training needs examples [N, *features].")
  if examples.ndim == 1:
    raise ValueError(
        f"{source} holds a 1-D array of {len(examples)} values; training "
        "needs examples [N, *features] (for N examples of one value each, "
        "reshape it to [N, 1]).")
  if not math.prod(examples.shape[1:]):
    raise ValueError(
        f"{source}: its examples have no features (shape {examples.shape}).")
  if len(examples) < 2:
    raise ValueError(
        f"{source} holds {len(examples)} example{'s' * (len(examples) != 1)} "
        f"(shape {examples.shape}); training needs at least 2.")
  first = examples[:1]
  varies = False
  bad_rows, first_bad = 0, None
  floating = np.issubdtype(dtype, np.inexact)
  for start in range(0, len(examples), _CHECK_CHUNK):
    chunk = examples[start:start + _CHECK_CHUNK]
    flat = chunk.reshape(len(chunk), -1)
    if floating:
      finite = np.isfinite(flat).all(axis=1)
      if not finite.all():
        bad_rows += int(np.count_nonzero(~finite))
        if first_bad is None:
          first_bad = start + int(np.argmin(finite))
        flat, chunk = flat[finite], chunk[finite]
    varies = varies or bool(np.any(chunk != first))
  if bad_rows:
    raise ValueError(
        f"{source}: {bad_rows} of its {len(examples)} examples "
        f"{'holds' if bad_rows == 1 else 'hold'} NaN or infinite values (the "
        f"first is row {first_bad}); remove or repair them.")
  if not varies:
    value = first.ravel()[0]
    alike = (f"all {value}, e.g. blank images" if np.all(first == value)
             else "identical")
    raise ValueError(
        f"{source}: every one of its {len(examples)} examples is the same "
        f"({alike}): there is nothing to learn and no spread to standardise "
        "by.")
  return examples


class BatchIterator:
  """Deterministic, resumable batches of one process's share of the data.

  Epoch `e` visits the examples in the order
  `np.random.default_rng((seed, e)).permutation(n)` (or `0..n-1` without
  shuffling), `global_batch_size` at a time; each process receives
  `global_batch_size // process_count` consecutive examples of every global
  batch, process `i` the `i`-th slice, so the processes' batches concatenated
  in process order are the global batch. Every process holds the full `data`
  and the same seed. Iteration never stops; `steps_per_epoch` batches make an
  epoch. Full-batch training is `global_batch_size = len(data)`.

  `state()` is `{'epoch', 'position'}`, the epoch and the index in its order
  of the next example; `restore(state)` (or `from_state`) continues exactly
  where the saved iterator would have.

  Example:
    >>> it = BatchIterator(np.arange(10), 4, seed=0, shuffle=False)
    >>> [next(it).tolist() for _ in range(3)], it.state()
    ([[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]], {'epoch': 1, 'position': 4})
  """

  def __init__(self, data: np.ndarray, global_batch_size: int,
               seed: int, *, process_index: int = 0, process_count: int = 1,
               shuffle: bool = True, drop_remainder: bool = True):
    """Args:
      data: `[n, ...]`, the examples along the first axis.
      global_batch_size: examples per step over all processes.
      seed: non-negative int; fixes every epoch's order.
      process_index: this process, `0 <= process_index < process_count`
        (`jax.process_index()` in multi-process runs).
      process_count: processes sharing each global batch.
      shuffle: permute the examples every epoch.
      drop_remainder: skip an epoch's last `n % global_batch_size` examples;
        otherwise each epoch ends with that smaller batch.
    """
    if not isinstance(data, np.ndarray) or data.ndim < 1:
      raise ValueError(
          "data must be a numpy array [n, ...]; got "
          f"{type(data).__name__} {getattr(data, 'shape', '')}.")
    self._data = data
    self._batch = _index("global_batch_size", global_batch_size, 1)
    self._seed = _index("seed", seed, 0)
    self._count = _index("process_count", process_count, 1)
    self._process = _index("process_index", process_index, 0)
    self._shuffle = bool(shuffle)
    self._drop = bool(drop_remainder)
    n = len(data)
    if self._process >= self._count:
      raise ValueError(
          f"process_index must be < process_count={self._count}; got "
          f"{self._process}.")
    if self._batch % self._count:
      raise ValueError(
          f"global_batch_size={self._batch} must be divisible by "
          f"process_count={self._count}; use a multiple of {self._count}.")
    if self._drop and self._batch > n:
      raise ValueError(
          f"global_batch_size={self._batch} exceeds the {n} examples, so "
          "drop_remainder=True leaves no batch; lower global_batch_size or "
          "set drop_remainder=False.")
    if not self._drop and (n % self._batch) % self._count:
      raise ValueError(
          f"The last batch of each epoch holds {n % self._batch} examples, "
          f"not divisible by process_count={self._count}; set "
          "drop_remainder=True or change global_batch_size.")
    self._epoch = 0
    self._position = 0
    self._order: tuple[int, Optional[np.ndarray]] = (-1, None)

  @classmethod
  def from_state(cls, data: np.ndarray, global_batch_size: int, seed: int,
                 state: Mapping[str, Any], **kwargs) -> "BatchIterator":
    """A new iterator (same arguments as `__init__`) resumed at `state`."""
    iterator = cls(data, global_batch_size, seed, **kwargs)
    iterator.restore(state)
    return iterator

  @property
  def steps_per_epoch(self) -> int:
    n = len(self._data)
    return n // self._batch if self._drop else -(-n // self._batch)

  def state(self) -> dict[str, int]:
    """`{'epoch': int, 'position': int}`; JSON- and checkpoint-friendly."""
    return {"epoch": self._epoch, "position": self._position}

  def restore(self, state: Mapping[str, Any]) -> None:
    """Continues from `state`, a value of `state()` (ints or integer arrays)."""
    try:
      epoch, position = state["epoch"], state["position"]
    except (KeyError, TypeError):
      raise ValueError(
          "state must be a mapping with 'epoch' and 'position'; got "
          f"{state!r}.") from None
    epoch = _index("state['epoch']", epoch, 0)
    position = _index("state['position']", position, 0)
    if position > len(self._data):
      raise ValueError(
          f"state['position']={position} exceeds the {len(self._data)} "
          "examples; the state belongs to another data set.")
    self._epoch, self._position = epoch, position
    self._roll_over()

  def __iter__(self) -> "BatchIterator":
    return self

  def __next__(self) -> np.ndarray:
    """This process's slice `[local, ...]` of the next global batch."""
    stop = min(self._position + self._batch, len(self._data))
    global_indices = self._epoch_order()[self._position:stop]
    local = len(global_indices) // self._count
    indices = global_indices[self._process * local:(self._process + 1) * local]
    self._position = stop
    self._roll_over()
    return self._data[indices]

  def _roll_over(self) -> None:
    """Moves to the next epoch once no batch is left in this one."""
    left = len(self._data) - self._position
    if left == 0 or (self._drop and left < self._batch):
      self._epoch, self._position = self._epoch + 1, 0

  def _epoch_order(self) -> np.ndarray:
    epoch, order = self._order
    if order is None or epoch != self._epoch:
      n = len(self._data)
      order = (np.random.default_rng((self._seed, self._epoch)).permutation(n)
               if self._shuffle else np.arange(n))
      self._order = (self._epoch, order)
    return order


def shard_batch(local_batch: Any, mesh: Mesh, axis: str = "data", *,
                batch_dim: int = 0) -> Any:
  """Assembles every process's local batch into one global `jax.Array`.

  The global batch is the processes' local batches concatenated in process
  order (what `BatchIterator` slices), sharded along `axis` of `mesh` and
  replicated along the mesh's other axes. Call it on every process.

  Args:
    local_batch: an array `[local_batch, ...]`, or a pytree of them.
    mesh: the device mesh.
    axis: the mesh axis the batch dimension is split over.
    batch_dim: which dimension of each array is the batch (the trainer's
      stacks of steps and ensemble members `[K, S, B, ...]` use 2).

  Returns:
    The same pytree of global arrays, `local_batch * process_count` along
    `batch_dim`.
  """
  if axis not in mesh.axis_names:
    raise ValueError(
        f"axis={axis!r} is not an axis of the mesh; its axes are "
        f"{mesh.axis_names}.")
  axis_dim = mesh.axis_names.index(axis)
  process = jax.process_index()
  local_shards = len({index[axis_dim] for index, device
                      in np.ndenumerate(mesh.devices)
                      if device.process_index == process})
  if not local_shards:
    raise ValueError(f"The mesh holds no device of process {process}.")
  if isinstance(batch_dim, bool) or not isinstance(batch_dim, int) \
      or batch_dim < 0:
    raise ValueError(
        f"batch_dim must be a non-negative int; got {batch_dim!r}.")
  sharding = NamedSharding(mesh, PartitionSpec(*[None] * batch_dim, axis))

  def place(array):
    array = np.asarray(array)
    if array.ndim <= batch_dim or array.shape[batch_dim] % local_shards:
      raise ValueError(
          f"The local batch of shape {array.shape} must split evenly over "
          f"the {local_shards} shards of mesh axis {axis!r} on this process; "
          f"use a local batch size that is a multiple of {local_shards} "
          f"(a global batch size that is a multiple of {mesh.shape[axis]}).")
    return jax.make_array_from_process_local_data(sharding, array)

  return jax.tree.map(place, local_batch)


__all__ = [
    "CELEBA_CROP", "CELEBA_SIZE", "GRID_COORDINATES", "GRID_VARIANCE",
    "BatchIterator", "GaussianMixture", "as_float", "celeba_files",
    "check_examples",
    "grid_log_density", "grid_mixture", "grid_training_set", "load_celeba",
    "load_digits", "load_mnist", "load_npz", "read_idx", "sample_grid",
    "shard_batch",
]
