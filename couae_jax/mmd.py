"""Maximum mean discrepancy estimators, dense or streamed in row blocks.

All estimators share one formulation. Stack the codes and the prior samples
into `z = [x; y]`; every estimator is a weighted sum over ordered pairs,
`sum_{a, b} c_ab k(z_a, z_b)`, where the weight `c_ab` depends only on which
sample each point belongs to (and the unbiased estimators drop `a = b`). The
sum is evaluated one block of rows at a time against all columns, which gives

* a blocked path whose peak memory is O(block_size * (n + m)) for the value and
  the gradient: for radial kernels the forward pass computes the gradient of
  each row block in the same sweep (the gradient of row a needs only row a of
  the Gram matrix, since `k` and `c` are symmetric), so reverse mode stores
  nothing quadratic; for other kernels each block is rematerialised. On CPU
  each row block meets the columns one cache-sized tile at a time;
* a dense path (`block_size=None`: one block holding every row, differentiated
  by JAX, so forward mode and higher derivatives work);
* the global-batch estimator for data parallelism (`axis_name`): each device
  holds its rows, gathers all columns, and adds its partial sum with `psum`.

`block_size="auto"`, the default, picks the blocked path and its block size
from n, m, h and the backend.

For the kernels of `couae_jax.kernels` at h > 4 the Gram blocks come from one
matrix multiply, `‖a‖² + ‖b‖² - 2 a·b`, taken in the frame of the column's
sample (every point minus that sample's coordinate-wise median): MMD is
translation invariant, and in that frame the formula's cancellation error is
proportional to the distances themselves, not to the samples' offset from the
origin or from each other. Other kernels are called on broadcast
`[block, n, h]` pairs.

NaN or infinite inputs give a NaN estimate and NaN gradients, on every path.

Accuracy (h > 4). A matrix-multiply distance `t` carries an absolute error of
a few ulps of `‖a - c‖² + ‖b - c‖²`, c the column sample's median, and values
below 8 such ulps count as 0. So distances within a sample are resolved down
to about 1e-3 of that sample's spread around its median in float32 (for
pairs across samples the error is relative to `t` itself), whatever the
samples' offset from the origin or from each other; the inputs' own float32
rounding (an ulp of |z|) is the limit below that. A point whose squared
distance from a centre overflows the dtype (|z| beyond ~1e19 in float32) is
at infinite distance from everything: kernel value 0, its limit (two such
points together give NaN).
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Union

import jax
import jax.numpy as jnp

from couae_jax import _checks, _pair_sums
from couae_jax import kernels as kernels_lib

Kernel = kernels_lib.Kernel


#: `block_size="auto"`, the default: the fastest path for these shapes and
#: this backend (`_auto_block_size`).
AUTO = "auto"

BlockSize = Union[int, str, None]


# ----------------------------------------------------------------------------
# Choosing the path.

#: Rows per block that `block_size="auto"` aims at on CPU, and the column
#: tiles: at least `_CPU_COLUMN_TILE` columns, and at least
#: `_CPU_TILE_ENTRIES` entries for small blocks. 512 x 1024 float32 tiles
#: (2 MiB) were within 3 % of the fastest block size at n = 4096 on one
#: 2-core machine and the fastest measured on another (BUILD_NOTES section 1,
#: `experiments/bench_mmd.py`).
_CPU_BLOCK_ROWS = 512
_CPU_COLUMN_TILE = 1024
_CPU_TILE_ENTRIES = 128 * 1024
#: On GPUs and TPUs: blocks of up to this many rows, and no column tiles,
#: with the block's Gram temporaries (counted as four) under this share of
#: the device's memory. Larger blocks were faster on an H200 up to 8192 rows
#: (fewer sequential launches); a fixed 256 MiB budget made the default 1.35x
#: slower than the best block at n = m = 32768 (BUILD_NOTES section 1).
_ACCEL_BLOCK_ROWS = 8192
_ACCEL_MEMORY_SHARE = 32
_ACCEL_FALLBACK_BUDGET = 1 << 30
#: Generic kernels broadcast `[rows, cols, h]`: dense while that is this small.
_GENERIC_BUDGET = 1 << 26


def _even_blocks(rows: int, target: int) -> int:
  """The block size nearest `target` that splits `rows` into equal blocks
  (rounded up to a multiple of 8), so that padding wastes little."""
  blocks = -(-rows // max(1, target))
  size = -(-rows // blocks)
  return min(rows, -(-size // 8) * 8)


def _auto_block_size(rows: int, cols: int, h: int, itemsize: int,
                     fused: bool, backend: str) -> Optional[int]:
  """What `block_size="auto"` becomes for `rows` local rows against `cols`
  columns: an int, or None for the dense path (small generic problems)."""
  if not fused:
    # Generic kernels (and traced hyperparameters): autodiff either way; the
    # dense path while its [rows, cols, h] broadcast is small.
    per_row = cols * max(h, 4) * itemsize
    if rows * per_row <= _GENERIC_BUDGET:
      return None
    return max(1, _GENERIC_BUDGET // per_row)
  if backend == "cpu":
    return _even_blocks(rows, _CPU_BLOCK_ROWS)
  memory = _memory_bytes(backend)
  budget = (memory // _ACCEL_MEMORY_SHARE if memory
            else _ACCEL_FALLBACK_BUDGET)
  target = max(128, min(_ACCEL_BLOCK_ROWS, budget // (4 * cols * itemsize)))
  return _even_blocks(rows, target)


def _column_tile(block_size: int, backend: str) -> Optional[int]:
  """Columns per tile of the fused blocked path (None: all at once)."""
  if backend != "cpu":
    return None
  return max(_CPU_COLUMN_TILE, _CPU_TILE_ENTRIES // max(1, block_size))


@functools.lru_cache(maxsize=None)
def _memory_bytes(backend: str) -> Optional[int]:
  """The default device's memory (its allocator's limit), or for CPUs the
  machine's physical memory; None if unknown."""
  try:
    stats = jax.local_devices(backend=backend)[0].memory_stats()
    if stats and stats.get("bytes_limit"):
      return int(stats["bytes_limit"])
  except Exception:  # pylint: disable=broad-except  # backends differ
    pass
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return None


def _check_dense_fits(rows: int, cols: int, h: int, itemsize: int,
                      radial: bool, backend: str, names) -> None:
  """Refuses a dense evaluation whose Gram matrices cannot fit in memory."""
  # A lower bound: the matrix product and the kernel values (radial), or the
  # broadcast [rows, cols, h] differences (generic), each materialised once.
  need = (2 * rows * cols if radial else rows * cols * h) * itemsize
  have = _memory_bytes(backend)
  if have is not None and need > have:
    raise ValueError(
        f"block_size=None evaluates the Gram matrices densely, which needs at "
        f"least {need / 2**30:.1f} GiB for {rows} rows against {cols} columns "
        f"({names[0]} and {names[1]} together, h={h}), more than the "
        f"{have / 2**30:.1f} GiB of this {backend} device; pass "
        f"block_size='auto' (the default) or an integer block_size to stream "
        f"it in O(block_size * (n + m)) memory.")


def _check_block_size(block_size) -> None:
  if isinstance(block_size, str):
    if block_size != AUTO:
      raise ValueError(f"block_size must be 'auto', None or a positive "
                       f"integer; got {block_size!r}.")
    return
  _checks.positive_int("block_size", block_size, allow_none=True)


def _all_finite(x, y, axis_name) -> jax.Array:
  finite = jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(y))
  if axis_name is not None:
    finite = jax.lax.pmin(finite.astype(jnp.int32), axis_name) > 0
  return finite


def _poisoned(x, y, axis_name):
  """`x` and `y`, all NaN if any point (on any device) is NaN or infinite.

  Every estimate is then NaN, value and gradient, whatever the kernel, h or
  path: the distance floor and the centring must not turn a bad code into a
  finite estimate. For finite inputs this adds 0: the same bits.
  """
  bad = jnp.where(_all_finite(x, y, axis_name), 0.0, jnp.nan).astype(x.dtype)
  bad = jax.lax.stop_gradient(bad)
  return x + bad, y + bad


def _centers(x, y, axis_name):
  """Each sample's coordinate-wise median over the global batch.

  The matrix-multiply distances of x columns are taken with every point
  minus x's centre, those of y columns minus y's: the rounding error of
  `‖a‖² + ‖b‖² - 2 a·b` then scales with the distances within a sample
  (pairs inside one sample) or with the distance itself (pairs across
  samples, where the frame's centre is near the column point), not with
  the samples' offset from the origin or from each other. The median keeps
  a few far outliers from dragging a sample's frame away from its bulk.
  """
  if axis_name is not None:
    x = jax.lax.all_gather(x, axis_name, tiled=True)
    y = jax.lax.all_gather(y, axis_name, tiled=True)
  return jax.lax.stop_gradient((jnp.median(x, axis=0),
                                jnp.median(y, axis=0)))


def _estimate(x, y, kernel: Kernel, *, weights_fn, block_size, axis_name,
              min_points: int, names=("x", "y")) -> jax.Array:
  """Validates the inputs and evaluates `sum_ab c_ab k(z_a, z_b)`."""
  x_name, y_name = names
  x = _as_array(x_name, x)
  y = _as_array(y_name, y)
  x = _checks.sample_set(x_name, x, min_points=1 if axis_name else min_points)
  y = _checks.sample_set(y_name, y, min_points=1 if axis_name else min_points)
  _checks.same_dimension(x_name, x, y_name, y)
  _check_block_size(block_size)
  radial = _resolve_kernel(kernel, x, y)
  dtype = _checks.compute_dtype(x, y)
  x, y = x.astype(dtype), y.astype(dtype)

  n_local, m_local = x.shape[0], y.shape[0]
  devices = 1 if axis_name is None else _axis_size(axis_name)
  n, m = n_local * devices, m_local * devices
  if n < min_points or m < min_points:
    raise ValueError(
        f"the global batch must hold at least {min_points} points of each "
        f"sample; got n={n} {x_name} and m={m} {y_name}.")
  weights = weights_fn(n, m)
  h = x.shape[-1]
  fused = radial is not None and _static(radial.params)
  backend = jax.default_backend()
  if block_size == AUTO:
    block_size = _auto_block_size(n_local + m_local, n + m, h,
                                  dtype.itemsize, fused, backend)
  if block_size is None:
    _check_dense_fits(n_local + m_local, n + m, h, dtype.itemsize,
                      radial is not None, backend, names)

  x, y = _poisoned(x, y, axis_name)
  centers = None
  if radial is not None and h > _pair_sums.EXACT_MAX_DIM:
    centers = _centers(x, y, axis_name)

  def rows_and_columns(x, y, centers):
    # Traced inside the custom VJP of the blocked path, which must not close
    # over tracers: the device index is taken here.
    device = 0 if axis_name is None else jax.lax.axis_index(axis_name)
    if centers is None:
      in_x = in_y = jnp.concatenate([x, y])
      col_x, col_y = x, y
    else:
      # The barrier makes rows and columns use one copy of the centred
      # points: XLA may otherwise recompute `x - center` in several fusions
      # with different rounding, so that a point's distance to itself is no
      # longer 0.
      cx, cy = centers
      col_x, y_in_x, x_in_y, col_y = jax.lax.optimization_barrier(
          (x - cx, y - cx, x - cy, y - cy))
      in_x = jnp.concatenate([col_x, y_in_x])
      in_y = jnp.concatenate([x_in_y, col_y])
    rows = _pair_sums.Rows(
        in_x=in_x, in_y=in_y,
        from_x=jnp.arange(n_local + m_local) < n_local,
        position=jnp.concatenate([
            device * n_local + jnp.arange(n_local, dtype=jnp.int32),
            device * m_local + jnp.arange(m_local, dtype=jnp.int32)]),
        weight_x=jnp.concatenate([jnp.full(n_local, weights.xx, dtype),
                                  jnp.full(m_local, weights.xy, dtype)]),
        weight_y=jnp.concatenate([jnp.full(n_local, weights.xy, dtype),
                                  jnp.full(m_local, weights.yy, dtype)]),
    )
    if axis_name is not None:
      col_x = jax.lax.all_gather(col_x, axis_name, tiled=True)
      col_y = jax.lax.all_gather(col_y, axis_name, tiled=True)
    return rows, _pair_sums.Columns(col_x, col_y)

  gram = _pair_sums.gram_fn(kernel, radial)
  if block_size is None:
    rows, cols = rows_and_columns(x, y, centers)
    return _pair_sums.global_sum(jnp.sum(_pair_sums.row_sums(gram, weights, rows, cols)),
                       axis_name)
  if not fused:
    # Generic kernels, and radial ones whose hyperparameters are traced (being
    # differentiated, say), which the fused custom VJP cannot close over:
    # rematerialise each block and let autodiff do the rest.
    rows, cols = rows_and_columns(x, y, centers)
    block_sums = jax.lax.map(
        jax.checkpoint(lambda block: jnp.sum(
            _pair_sums.row_sums(gram, weights, block, cols))),
        _pair_sums.in_blocks(rows, block_size))
    return _pair_sums.global_sum(jnp.sum(block_sums), axis_name)
  return _pair_sums.radial_blocked(radial, weights, block_size,
                         _column_tile(block_size, backend), axis_name,
                         rows_and_columns, x, y, centers)


def _as_array(name, value):
  """`value` as a JAX array in its canonical dtype (NumPy float64 becomes
  float32 unless x64 is enabled, quietly); non-floating input raises."""
  value = _checks.floating_array(name, value)
  if not isinstance(value, jax.Array):
    value = jnp.asarray(value)
  return value


def _static(params) -> bool:
  """Whether every hyperparameter is a concrete value, not a tracer."""
  return not any(isinstance(leaf, jax.core.Tracer)
                 for leaf in jax.tree.leaves(params))


def _axis_size(axis_name) -> int:
  return jax.lax.psum(1, axis_name)


def _resolve_kernel(kernel: Kernel, x: jax.Array, y: jax.Array
                    ) -> Optional[kernels_lib.BoundRadialKernel]:
  """Validates `kernel` for these samples; returns its radial form if any.

  The kernels of `couae_jax.kernels` validate their hyperparameters here
  (ValueError naming them); other callables are traced on abstract inputs to
  check the broadcasting contract.
  """
  if not callable(kernel):
    raise TypeError(f"kernel must be callable; got {kernel!r}.")
  radial = kernels_lib.radial_form(kernel, x.shape[-1])
  if radial is not None:
    return radial
  rows = jax.ShapeDtypeStruct((2, 1, x.shape[1]), x.dtype)
  cols = jax.ShapeDtypeStruct((1, 3, y.shape[1]), y.dtype)
  try:
    out = jax.eval_shape(kernel, rows, cols)
  except TypeError as error:
    raise TypeError(
        f"kernel must map x: [..., h] and y: [..., h] to [...]; calling it on "
        f"shapes (2, 1, h) and (1, 3, h) failed: {error}") from error
  if getattr(out, "shape", None) != (2, 3):
    raise ValueError(
        f"kernel must map x: [..., h] and y: [..., h] to the broadcast leading "
        f"shape [...]; for inputs of shapes (2, 1, {x.shape[1]}) and "
        f"(1, 3, {y.shape[1]}) it returned {getattr(out, 'shape', out)}, "
        f"expected (2, 3).")
  return None


def mmd2(x: jax.Array, y: jax.Array, kernel: Kernel, *,
         block_size: BlockSize = AUTO,
         axis_name: Optional[str] = None) -> jax.Array:
  """The unbiased estimate of MMD² between codes `x` and prior samples `y`.

  `sum_{i≠j} k(y_i, y_j) / (m(m-1)) + sum_{i≠j} k(x_i, x_j) / (n(n-1))
  - 2 sum_{i,j} k(x_i, y_j) / (nm)`, the estimator of Coulomb Autoencoders
  (and of Gretton et al., 2012). It can be negative.

  Args:
    x: `[n, h]` codes, n >= 2.
    y: `[m, h]` prior samples, m >= 2.
    kernel: `kernel(a, b) -> k` on `[..., h]` arrays, e.g.
      `functools.partial(kernels.sliced_coulomb, eps=1e-2)`. The kernels of
      `couae_jax.kernels` take a fast matrix-multiply path.
    block_size: `"auto"` (the default) streams the Gram matrix in blocks of
      rows chosen for speed from n, m, h and the backend (the dense path for
      small problems with a kernel that has no radial form). An integer
      streams blocks of that many rows: the value and its gradient take
      O(block_size * (n + m)) memory, and for the kernels of
      `couae_jax.kernels` the gradient is computed in the same sweep as the
      value (reverse mode: `jax.grad`, `jax.vjp`; derivatives of that
      gradient, e.g. `jax.hessian`, differentiate the sweep itself). None
      evaluates the `[n + m, n + m]` Gram matrix at once and supports every
      transformation: use it for forward mode of the estimate (`jax.jvp`,
      `jax.jacfwd`), which raises a ValueError naming `block_size` on the
      blocked path; it is refused (ValueError) where its Gram matrices
      cannot fit in the device's memory.
    axis_name: inside `jax.shard_map`, the mesh axis over which `x` and `y` are
      sharded (the same shard size on every device). The result, the same on
      every device, is the estimate over the global batch, and its gradient
      w.r.t. the local shards is that of the global estimate. Each device
      evaluates only its own rows of pairs: O((n + m)² h / devices) work.

  Returns:
    A scalar in float32 (or the inputs' dtype if wider); NaN, with NaN
    gradients, if any input is NaN or infinite.

  Raises:
    ValueError: wrong ranks, mismatched h, n < 2 or m < 2, a block_size that
      is not "auto", None or a positive int, a dense evaluation that cannot
      fit in memory, bad kernel hyperparameters, or a kernel that returns the
      wrong shape.
    TypeError: integer inputs or a kernel that is not callable.

  Example:
    >>> import functools, jax
    >>> from couae_jax import kernels, mmd
    >>> x = jax.random.normal(jax.random.key(0), (256, 8))
    >>> y = jax.random.normal(jax.random.key(1), (256, 8)) + 1.0
    >>> kernel = functools.partial(kernels.sliced_coulomb, eps=1e-2)
    >>> bool(mmd.mmd2(x, y, kernel) > 0.1)
    True
    >>> bool(abs(mmd.mmd2(x, y, kernel) - mmd.mmd2(x, y, kernel, block_size=None))
    ...      < 1e-5)
    True
  """
  return _estimate(x, y, kernel, weights_fn=_pair_sums.unbiased_weights,
                   block_size=block_size, axis_name=axis_name, min_points=2)


def _named_mmd2(x, y, kernel, *, names, block_size=AUTO, axis_name=None):
  """`mmd2` whose errors call the samples by `names` (for the losses)."""
  return _estimate(x, y, kernel, weights_fn=_pair_sums.unbiased_weights,
                   block_size=block_size, axis_name=axis_name, min_points=2,
                   names=names)


def mmd2_biased(x: jax.Array, y: jax.Array, kernel: Kernel, *,
                block_size: BlockSize = AUTO,
                axis_name: Optional[str] = None) -> jax.Array:
  """The biased (V-statistic) estimate of MMD², diagonal terms included.

  `sum_{i,j} k(x_i, x_j) / n² + sum_{i,j} k(y_i, y_j) / m²
  - 2 sum_{i,j} k(x_i, y_j) / (nm)`, non-negative for a positive-definite
  kernel. Arguments, paths, memory, NaN handling and sharding as in `mmd2`;
  n, m >= 1.

  Example:
    >>> import functools, jax.numpy as jnp
    >>> from couae_jax import kernels, mmd
    >>> x = jnp.zeros((3, 2)); y = jnp.ones((3, 2))
    >>> kernel = functools.partial(kernels.gaussian, scale=1.0)
    >>> mmd.mmd2_biased(x, y, kernel).round(4)
    Array(1.2642, dtype=float32)
  """
  return _estimate(x, y, kernel, weights_fn=_pair_sums.biased_weights,
                   block_size=block_size, axis_name=axis_name, min_points=1)


def mmd2_linear(x: jax.Array, y: jax.Array, kernel: Kernel) -> jax.Array:
  """Gretton et al.'s linear-time unbiased estimate of MMD², O(n h).

  Splits the samples into consecutive pairs and averages
  `k(x_a, x_b) + k(y_a, y_b) - k(x_a, y_b) - k(x_b, y_a)` over them. Its
  variance is much larger than `mmd2`'s; use it when n is too large for even
  the streamed quadratic estimator. It already is its fastest path: it has
  no block size.

  Args:
    x: `[n, h]` codes.
    y: `[n, h]` prior samples (the same n), n >= 2; an odd last point is unused.
    kernel: as in `mmd2`.

  Returns:
    A scalar; NaN, with NaN gradients, if any input (the unused odd point
    included) is NaN or infinite.

  Example:
    >>> import functools, jax
    >>> from couae_jax import kernels, mmd
    >>> x = jax.random.normal(jax.random.key(0), (4096, 4))
    >>> kernel = functools.partial(kernels.coulomb, eps=1e-3)
    >>> bool(mmd.mmd2_linear(x, x + 2.0, kernel) > 0.1)
    True
  """
  x = _checks.sample_set("x", _as_array("x", x), min_points=2)
  y = _checks.sample_set("y", _as_array("y", y), min_points=2)
  _checks.same_dimension("x", x, "y", y)
  if x.shape[0] != y.shape[0]:
    raise ValueError(
        f"mmd2_linear needs as many codes as prior samples; got x.shape="
        f"{tuple(x.shape)} and y.shape={tuple(y.shape)}.")
  _resolve_kernel(kernel, x, y)
  x, y = _poisoned(x, y, None)
  pairs = x.shape[0] // 2
  xa, xb = x[0:2 * pairs:2], x[1:2 * pairs:2]
  ya, yb = y[0:2 * pairs:2], y[1:2 * pairs:2]
  terms = kernel(xa, xb) + kernel(ya, yb) - kernel(xa, yb) - kernel(xb, ya)
  return jnp.mean(terms)


__all__ = ["AUTO", "Kernel", "mmd2", "mmd2_biased", "mmd2_linear"]
