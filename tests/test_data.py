"""Tests of couae_jax.data: Grid, file loaders, BatchIterator, shard_batch."""

import gzip
import itertools
import os
import struct
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from scipy import special, stats

from couae_jax import data

# ---------------------------------------------------------------------------
# Grid.


def test_grid_means():
  means = data.grid_mixture().means
  assert means.shape == (25, 2)
  axis = np.array([-21.0, -10.5, 0.0, 10.5, 21.0])
  assert {tuple(m) for m in means} == set(itertools.product(axis, axis))
  np.testing.assert_array_equal(means[7], [axis[1], axis[2]])  # k = 5 i + j


def test_grid_log_density_matches_scipy():
  points, _ = data.sample_grid(1, 50)
  points = np.concatenate([points, [[0.3, -5.0], [100.0, -300.0]]])
  components = [stats.multivariate_normal(mean, 0.1 * np.eye(2)).logpdf(points)
                for mean in data.grid_mixture().means]
  expected = special.logsumexp(components, axis=0) - np.log(25)
  actual = data.grid_log_density(points)
  assert actual.dtype == np.float64
  np.testing.assert_allclose(actual, expected, rtol=1e-10)
  assert np.all(np.isfinite(actual))  # Far from every mode too.


def test_grid_log_density_shapes_and_errors():
  assert data.grid_log_density(np.zeros((3, 4, 2))).shape == (3, 4)
  with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
    data.grid_log_density(np.zeros((3, 3)))


def test_grid_sampling_statistics():
  points, modes = data.sample_grid(0, 25_000, dtype=np.float64)
  means = data.grid_mixture().means
  counts = np.bincount(modes, minlength=25)
  assert stats.chisquare(counts).pvalue > 1e-4
  residuals = points - means[modes]
  np.testing.assert_allclose(residuals.mean(0), 0.0, atol=0.01)
  np.testing.assert_allclose(np.cov(residuals.T), 0.1 * np.eye(2), atol=0.005)
  nearest = np.argmin(((points[:, None] - means) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(nearest, modes)
  # The mixture's entropy is about 3.75 nats (the paper's ceiling).
  entropy = -data.grid_log_density(points).mean()
  assert abs(entropy - (np.log(25) + 1 + np.log(2 * np.pi * 0.1))) < 0.02
  assert abs(entropy - 3.75) < 0.03


def test_grid_sampling_is_deterministic():
  a, modes_a = data.sample_grid(3, 10)
  b, modes_b = data.sample_grid(3, 10)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(modes_a, modes_b)
  assert a.dtype == np.float32
  assert not np.array_equal(a, data.sample_grid(4, 10)[0])
  key = jax.random.key(3)
  np.testing.assert_array_equal(data.sample_grid(key, 10)[0],
                                data.sample_grid(key, 10)[0])
  np.testing.assert_array_equal(
      data.sample_grid(jax.random.PRNGKey(3), 10)[0],
      data.sample_grid(jax.random.key(3), 10)[0])


def test_grid_training_set():
  points, modes = data.grid_training_set(seed=0)
  assert points.shape == (500, 2) and points.dtype == np.float32
  np.testing.assert_array_equal(np.bincount(modes), np.full(25, 20))
  distance = np.linalg.norm(points - data.grid_mixture().means[modes], axis=1)
  assert distance.max() < 2.0
  np.testing.assert_array_equal(points, data.grid_training_set(seed=0)[0])


# ---------------------------------------------------------------------------
# Files.


def write_idx(path, array, type_code=0x08):
  raw = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
  raw += struct.pack(f">{array.ndim}I", *array.shape)
  raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
  # Closed here: an unclosed gzip file is empty on disk until it is collected.
  with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
    f.write(raw)


@pytest.fixture
def mnist_dir(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
  images[0, 0, 0], images[0, 0, 1] = 0, 255
  labels = np.arange(5, dtype=np.uint8)
  write_idx(tmp_path / "train-images-idx3-ubyte", images)
  write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
  write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[:3])
  write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:3])
  return tmp_path, images, labels


def test_load_mnist(mnist_dir):
  directory, images, labels = mnist_dir
  x, y = data.load_mnist(directory)
  assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
  assert x.min() == 0.0 and x.max() == 1.0
  np.testing.assert_allclose(x[..., 0] * 255, images, atol=1e-4)
  np.testing.assert_array_equal(y, labels)
  x_test, y_test = data.load_mnist(str(directory), split="test")  # gzipped
  np.testing.assert_array_equal(x_test, x[:3])
  np.testing.assert_array_equal(y_test, labels[:3])


@pytest.mark.parametrize("dtype,code", [(">i4", 0x0C), (">f4", 0x0D),
                                        (">f8", 0x0E), (">i2", 0x0B)])
def test_read_idx_types(tmp_path, dtype, code):
  array = np.arange(24).reshape(2, 3, 4).astype(dtype) - 5
  write_idx(tmp_path / "a.idx", array, code)
  loaded = data.read_idx(tmp_path / "a.idx")
  np.testing.assert_array_equal(loaded, array)
  assert loaded.dtype.isnative


def test_mnist_missing_and_corrupt_files(mnist_dir):
  directory, _, _ = mnist_dir
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
    data.load_mnist(directory / "nowhere")
  with pytest.raises(ValueError, match="split"):
    data.load_mnist(directory, split="valid")
  path = directory / "train-images-idx3-ubyte"
  raw = path.read_bytes()
  path.write_bytes(raw[:-10])
  with pytest.raises(ValueError, match=f"{path}.*truncated"):
    data.load_mnist(directory)
  path.write_bytes(b"\x1f\x8b" + raw[2:])
  with pytest.raises(ValueError, match=f"{path}.*magic"):
    data.load_mnist(directory)
  path.write_bytes(raw)
  write_idx(directory / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
  with pytest.raises(ValueError, match="labels"):
    data.load_mnist(directory)
  (directory / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
  with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
    data.load_mnist(directory, split="test")


def write_jpeg(path, size=(178, 218), inner=(0, 200, 0), outer=(220, 0, 0)):
  """A JPEG with colour `inner` inside the centre 140×140 and `outer` around."""
  image = pytest.importorskip("PIL.Image")
  cols, rows = size
  pixels = np.empty((rows, cols, 3), np.uint8)
  pixels[:] = outer
  top, left = (rows - 140) // 2, (cols - 140) // 2
  pixels[top:top + 140, left:left + 140] = inner
  image.fromarray(pixels).save(path, quality=95)


def test_load_celeba(tmp_path):
  folder = tmp_path / "img_align_celeba"
  folder.mkdir()
  for i in range(3):
    write_jpeg(folder / f"{i:06d}.jpg", inner=(0, 60 * (i + 1), 0))
  images = data.load_celeba(tmp_path)
  assert images.shape == (3, 64, 64, 3) and images.dtype == np.float32
  assert images.min() >= 0.0 and images.max() <= 1.0
  # The crop keeps only the centre colour: green, no red border (JPEG's
  # chroma subsampling bleeds a little red into the crop's edge pixels).
  interior = images[:, 4:-4, 4:-4]
  np.testing.assert_allclose(interior[..., 0], 0.0, atol=0.05)
  np.testing.assert_allclose(interior[..., 1].mean(axis=(1, 2)),
                             [60 / 255, 120 / 255, 180 / 255], atol=0.02)
  np.testing.assert_array_equal(data.load_celeba(tmp_path, limit=2),
                                images[:2])
  np.testing.assert_array_equal(data.load_celeba(folder), images)


def test_celeba_errors(tmp_path):
  pytest.importorskip("PIL")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    data.load_celeba(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="No .jpg"):
    data.load_celeba(tmp_path)
  with pytest.raises(ValueError, match="limit"):
    data.load_celeba(tmp_path, limit=0)
  write_jpeg(tmp_path / "small.jpg", size=(100, 218))
  with pytest.raises(ValueError, match="small.jpg.*smaller"):
    data.load_celeba(tmp_path)
  (tmp_path / "small.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
  with pytest.raises(ValueError, match="small.jpg"):
    data.load_celeba(tmp_path)


def test_load_npz(tmp_path):
  x = np.arange(12.0).reshape(3, 4)
  np.savez(tmp_path / "a.npz", x=x, images=x + 1)
  np.testing.assert_array_equal(data.load_npz(tmp_path / "a.npz"), x)
  np.testing.assert_array_equal(
      data.load_npz(str(tmp_path / "a.npz"), key="images"), x + 1)
  with pytest.raises(ValueError, match="'y'.*holds"):
    data.load_npz(tmp_path / "a.npz", key="y")
  with pytest.raises(FileNotFoundError, match="b.npz"):
    data.load_npz(tmp_path / "b.npz")
  (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 broken")
  with pytest.raises(ValueError, match="c.npz"):
    data.load_npz(tmp_path / "c.npz")
  np.save(tmp_path / "d.npy", x)
  with pytest.raises(ValueError, match=r"d.npy.*\.npy"):
    data.load_npz(tmp_path / "d.npy")


def test_load_digits():
  pytest.importorskip("sklearn")
  images, labels = data.load_digits()
  assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
  assert images.min() == 0.0 and images.max() == 1.0
  assert labels.shape == (1797,) and set(labels) == set(range(10))


# ---------------------------------------------------------------------------
# BatchIterator.


def take(iterator, steps):
  return [next(iterator) for _ in range(steps)]


def test_batches_are_deterministic_and_cover_each_epoch():
  x = np.arange(20)
  batches = take(data.BatchIterator(x, 5, seed=1), 8)
  again = take(data.BatchIterator(x, 5, seed=1), 8)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a, b)
  for epoch in (batches[:4], batches[4:]):
    np.testing.assert_array_equal(np.sort(np.concatenate(epoch)), x)
  assert not np.array_equal(np.concatenate(batches[:4]),
                            np.concatenate(batches[4:]))
  other = take(data.BatchIterator(x, 5, seed=2), 4)
  assert not np.array_equal(np.concatenate(other), np.concatenate(batches[:4]))
  np.testing.assert_array_equal(
      np.concatenate(batches[:4]),
      np.random.default_rng((1, 0)).permutation(20))


def test_process_slices_tile_the_global_batch():
  x = np.arange(60).reshape(30, 2)
  global_batches = take(data.BatchIterator(x, 8, seed=5), 7)
  local = [take(data.BatchIterator(x, 8, seed=5, process_index=i,
                                   process_count=4), 7) for i in range(4)]
  for step, expected in enumerate(global_batches):
    parts = [local[i][step] for i in range(4)]
    assert all(part.shape == (2, 2) for part in parts)
    np.testing.assert_array_equal(np.concatenate(parts), expected)


@pytest.mark.parametrize("drop_remainder", [True, False])
@pytest.mark.parametrize("process_index", [0, 1])
def test_resume_mid_epoch_equals_uninterrupted(drop_remainder, process_index):
  x = np.arange(22)
  kwargs = dict(process_index=process_index, process_count=2,
                drop_remainder=drop_remainder)
  uninterrupted = take(data.BatchIterator(x, 6, 9, **kwargs), 12)
  for stop in (1, 2, 4, 5):
    iterator = data.BatchIterator(x, 6, 9, **kwargs)
    take(iterator, stop)
    state = iterator.state()
    assert set(state) == {"epoch", "position"}
    assert all(type(v) is int for v in state.values())
    restored = data.BatchIterator.from_state(
        x, 6, 9, {k: np.int64(v) for k, v in state.items()}, **kwargs)
    for a, b in zip(take(restored, 12 - stop), uninterrupted[stop:]):
      np.testing.assert_array_equal(a, b)
    fresh = data.BatchIterator(x, 6, 9, **kwargs)
    fresh.restore(state)
    np.testing.assert_array_equal(next(fresh), uninterrupted[stop])


def test_remainder_handling():
  x = np.arange(10)
  dropped = data.BatchIterator(x, 4, 0, shuffle=False)
  assert dropped.steps_per_epoch == 2
  assert [b.tolist() for b in take(dropped, 3)] == [
      [0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]
  kept = data.BatchIterator(x, 4, 0, shuffle=False, drop_remainder=False)
  assert kept.steps_per_epoch == 3
  assert [b.tolist() for b in take(kept, 4)] == [
      [0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2, 3]]
  assert kept.state() == {"epoch": 1, "position": 4}


def test_full_batch_mode():
  points, _ = data.grid_training_set()
  iterator = data.BatchIterator(points, len(points), seed=0)
  assert iterator.steps_per_epoch == 1
  for epoch in range(1, 4):
    batch = next(iterator)
    assert batch.shape == points.shape
    np.testing.assert_array_equal(np.sort(batch, axis=0),
                                  np.sort(points, axis=0))
    assert iterator.state() == {"epoch": epoch, "position": 0}


@pytest.mark.parametrize("kwargs,match", [
    (dict(global_batch_size=6, process_count=4), "multiple of 4"),
    (dict(global_batch_size=12), "exceeds"),
    (dict(global_batch_size=4, process_index=2, process_count=2),
     "process_index"),
    (dict(global_batch_size=4, process_count=4, drop_remainder=False),
     "drop_remainder=True"),
    (dict(global_batch_size=0), "global_batch_size"),
    (dict(global_batch_size=2, seed=-1), "seed"),
])
def test_iterator_errors(kwargs, match):
  kwargs = dict(dict(seed=0), **kwargs)
  with pytest.raises(ValueError, match=match):
    data.BatchIterator(np.arange(10), **kwargs)


def test_restore_rejects_bad_states():
  iterator = data.BatchIterator(np.arange(10), 2, 0)
  for state, match in [({"epoch": 0}, "position"),
                       ({"epoch": 0, "position": 11}, "exceeds"),
                       ({"epoch": -1, "position": 0}, "epoch"),
                       ({"epoch": 0.5, "position": 0}, "epoch")]:
    with pytest.raises(ValueError, match=match):
      iterator.restore(state)


# ---------------------------------------------------------------------------
# shard_batch.


def test_shard_batch_on_one_device():
  mesh = jax.make_mesh((1,), ("data",))
  local = np.arange(12.0, dtype=np.float32).reshape(6, 2)
  batch = data.shard_batch(local, mesh)
  assert isinstance(batch, jax.Array) and batch.shape == (6, 2)
  assert batch.sharding.spec == jax.sharding.PartitionSpec("data")
  np.testing.assert_array_equal(batch, local)
  tree = data.shard_batch({"x": local, "y": np.arange(6)}, mesh)
  assert tree["y"].shape == (6,)
  with pytest.raises(ValueError, match="'batch' is not an axis"):
    data.shard_batch(local, mesh, axis="batch")


def test_shard_batch_over_two_devices():
  """Two CPU devices in a subprocess (device count is fixed at import)."""
  script = textwrap.dedent("""
      import jax, numpy as np
      from couae_jax import data
      mesh = jax.make_mesh((2,), ("data",))
      batch = data.shard_batch(np.arange(8.0).reshape(4, 2), mesh)
      shards = [s.data.shape for s in batch.addressable_shards]
      assert shards == [(2, 2), (2, 2)], shards
      try:
        data.shard_batch(np.zeros((3, 2)), mesh)
      except ValueError as e:
        assert "multiple of 2" in str(e), e
      else:
        raise AssertionError("no error for an odd batch")
      """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
