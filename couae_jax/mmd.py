"""Maximum mean discrepancy estimators, dense or streamed in row blocks.

All estimators share one formulation. Stack the codes and the prior samples
into `z = [x; y]`; every estimator is a weighted sum over ordered pairs,
`sum_{a, b} c_ab k(z_a, z_b)`, where the weight `c_ab` depends only on which
sample each point belongs to (and the unbiased estimators drop `a = b`). The
sum is evaluated one block of rows at a time against all columns, which gives

* a dense path (one block holding every row, differentiated by JAX);
* a blocked path whose peak memory is O(block_size * (n + m)) for the value and
  the gradient: for radial kernels the forward pass computes the gradient of
  each row block in the same sweep (the gradient of row a needs only row a of
  the Gram matrix, since `k` and `c` are symmetric), so reverse mode stores
  nothing quadratic; for other kernels each block is rematerialised;
* the global-batch estimator for data parallelism (`axis_name`): each device
  holds its rows, gathers all columns, and adds its partial sum with `psum`.

For the kernels of `couae_jax.kernels` the Gram blocks come from one matrix
multiply, `‖a‖² + ‖b‖² - 2 a·b`, after centring both samples on their common
mean (MMD is translation invariant; centring keeps the cancellation error of
that formula proportional to the samples' spread, not to their offset).
Other kernels are called on broadcast `[block, n, h]` pairs.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from couae_jax import _checks
from couae_jax import kernels as kernels_lib

Kernel = kernels_lib.Kernel


@dataclasses.dataclass(frozen=True)
class _PairWeights:
  """The weight of a pair by the samples its two points come from."""
  xx: float
  yy: float
  xy: float
  include_diagonal: bool


def _unbiased_weights(n: int, m: int) -> _PairWeights:
  # The cross term -2/(nm) sum_ij k(x_i, y_j) is spread over both orders.
  return _PairWeights(1.0 / (n * (n - 1)), 1.0 / (m * (m - 1)), -1.0 / (n * m),
                      include_diagonal=False)


def _biased_weights(n: int, m: int) -> _PairWeights:
  return _PairWeights(1.0 / n**2, 1.0 / m**2, -1.0 / (n * m),
                      include_diagonal=True)


class _Rows(NamedTuple):
  """The points whose rows of the pair matrix this device sums.

  `points` are the local x rows followed by the local y rows; `position` is a
  row's global index within its own sample (-1 for padding), which locates the
  diagonal; `weight_x` / `weight_y` weight the row's pairs with x / y columns.
  """
  points: jax.Array     # [r, h]
  from_x: jax.Array     # [r] bool
  position: jax.Array   # [r] int32
  weight_x: jax.Array   # [r]
  weight_y: jax.Array   # [r]


class _Columns(NamedTuple):
  x: jax.Array          # [n, h], every x of the global batch
  y: jax.Array          # [m, h]


def _diagonal(rows: _Rows, from_sample: jax.Array, size: int) -> jax.Array:
  """`[r, size]` mask of the pairs of a row with itself."""
  same = rows.from_x if from_sample else ~rows.from_x
  return same[:, None] & (
      rows.position[:, None] == jnp.arange(size, dtype=jnp.int32)[None, :])


def _sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """`[r, c]` squared distances between the rows of `a` and of `b`.

  For h <= `_EXACT_MAX_DIM` they are summed from differences: exact to an ulp,
  and no slower than a matrix multiply with an inner dimension that small.
  This matters for the Coulomb kernel at h = 3, which depends on sqrt(t): a
  rounding error in t near 0 becomes a visible error in k.

  Otherwise they come from one matrix multiply, `‖a‖² + ‖b‖² - 2 a·b`, which
  carries a rounding error of a few ulps of `‖a‖² + ‖b‖²`; results below that
  floor are indistinguishable from 0 and are set to 0, so coincident points
  get exactly the kernel's value at 0. (At h > 4 every profile here is smooth
  in t at 0, so that error does not show in k.)
  """
  if a.shape[-1] <= _EXACT_MAX_DIM:
    return sum(d * d for d in _coordinate_differences(a, b))
  sq_a = jnp.sum(a * a, axis=-1)[:, None]
  sq_b = jnp.sum(b * b, axis=-1)[None, :]
  cross = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
  t = sq_a + sq_b - 2.0 * cross
  floor = _ROUNDING_ULPS * jnp.finfo(t.dtype).eps * (sq_a + sq_b)
  return jnp.where(t > floor, t, 0.0)


def _coordinate_differences(a: jax.Array, b: jax.Array) -> list[jax.Array]:
  """`[r, c]` differences per coordinate: `[r, c, h]` with h <= 4 innermost
  would waste the vector lanes."""
  return [a[:, k, None] - b[None, :, k] for k in range(a.shape[-1])]


def _weighted_differences(w: jax.Array, a: jax.Array,
                          b: jax.Array) -> jax.Array:
  """`[r, h]`: `sum_j w_ij (a_i - b_j)`, exactly for small h as above.

  For larger h it is `a_i sum_j w_ij - (w @ b)_i`, one matrix multiply.
  """
  if a.shape[-1] <= _EXACT_MAX_DIM:
    return jnp.stack([jnp.sum(w * d, axis=1)
                      for d in _coordinate_differences(a, b)], axis=-1)
  return a * jnp.sum(w, axis=1, keepdims=True) - jnp.dot(
      w, b, precision=jax.lax.Precision.HIGHEST)


#: Largest h whose squared distances are summed from differences.
_EXACT_MAX_DIM = 4
#: Ulps of `‖a‖² + ‖b‖²` below which a matrix-multiply distance counts as 0.
_ROUNDING_ULPS = 8


def _gram_fn(kernel: Kernel, radial: Optional[kernels_lib.BoundRadialKernel]):
  """`gram(rows, cols, diagonal) -> [r, c]` kernel values."""
  if radial is not None:
    def gram(rows, cols, diagonal):
      return radial.profile(jnp.where(diagonal, 0.0, _sq_distances(rows, cols)))
  else:
    def gram(rows, cols, diagonal):
      del diagonal
      return kernel(rows[:, None, :], cols[None, :, :])
  return gram


def _row_sums(gram, weights: _PairWeights, rows: _Rows,
              cols: _Columns) -> jax.Array:
  """`[r]`: each row's weighted sum of kernel values over all columns."""
  total = jnp.zeros(rows.points.shape[0], rows.points.dtype)
  for from_x, col_points, weight in ((True, cols.x, rows.weight_x),
                                     (False, cols.y, rows.weight_y)):
    diagonal = _diagonal(rows, from_x, col_points.shape[0])
    k = gram(rows.points, col_points, diagonal)
    if not weights.include_diagonal:
      k = jnp.where(diagonal, 0.0, k)
    total = total + weight * jnp.sum(k, axis=1)
  return total


def _row_sums_and_grads(radial: kernels_lib.BoundRadialKernel,
                        weights: _PairWeights, rows: _Rows, cols: _Columns):
  """Row sums and the gradient of the whole estimate w.r.t. each row's point.

  With `c` and `k` symmetric, d/dz_a sum_{a', b} c_a'b k(z_a', z_b) =
  2 sum_b c_ab k'(t_ab) 2 (z_a - z_b), with t the squared distance and k' the
  profile's slope: a function of row a alone, two matrix multiplies a block.
  """
  points = rows.points
  total = jnp.zeros(points.shape[0], points.dtype)
  grads = jnp.zeros_like(points)
  for from_x, col_points, weight in ((True, cols.x, rows.weight_x),
                                     (False, cols.y, rows.weight_y)):
    diagonal = _diagonal(rows, from_x, col_points.shape[0])
    t = jnp.where(diagonal, 0.0, _sq_distances(points, col_points))
    k, slope = jax.jvp(radial.profile, (t,), (jnp.ones_like(t),))
    if not weights.include_diagonal:
      k = jnp.where(diagonal, 0.0, k)
    slope = weight[:, None] * jnp.where(diagonal, 0.0, slope)
    total = total + weight * jnp.sum(k, axis=1)
    grads = grads + 4.0 * _weighted_differences(slope, points, col_points)
  return total, grads


def _in_blocks(rows: _Rows, block_size: int) -> _Rows:
  """Pads the rows to whole blocks (padding weighs 0) and stacks the blocks."""
  r = rows.points.shape[0]
  padded = -(-r // block_size) * block_size
  fill = {"position": -1}

  def pad_and_split(name, leaf):
    widths = [(0, padded - r)] + [(0, 0)] * (leaf.ndim - 1)
    leaf = jnp.pad(leaf, widths, constant_values=fill.get(name, 0))
    return leaf.reshape((padded // block_size, block_size) + leaf.shape[1:])

  return _Rows(*(pad_and_split(name, leaf)
                 for name, leaf in zip(_Rows._fields, rows)))


def _unblock(stacked: jax.Array, r: int) -> jax.Array:
  return stacked.reshape((-1,) + stacked.shape[2:])[:r]


def _estimate(x, y, kernel: Kernel, *, weights_fn, block_size, axis_name,
              min_points: int) -> jax.Array:
  """Validates the inputs and evaluates `sum_ab c_ab k(z_a, z_b)`."""
  x = _checks.sample_set("x", x, min_points=1 if axis_name else min_points)
  y = _checks.sample_set("y", y, min_points=1 if axis_name else min_points)
  _checks.same_dimension("x", x, "y", y)
  _checks.positive_int("block_size", block_size, allow_none=True)
  radial = _resolve_kernel(kernel, x, y)
  dtype = _checks.compute_dtype(x, y)
  x, y = x.astype(dtype), y.astype(dtype)

  n_local, m_local = x.shape[0], y.shape[0]
  devices = 1 if axis_name is None else _axis_size(axis_name)
  n, m = n_local * devices, m_local * devices
  if n < min_points or m < min_points:
    raise ValueError(
        f"the global batch must hold at least {min_points} points of each "
        f"sample; got n={n} codes (x) and m={m} prior samples (y).")
  weights = weights_fn(n, m)

  if radial is not None and x.shape[-1] > _EXACT_MAX_DIM:
    # Translation invariance: centre the matrix-multiply distances on the
    # (global) mean, outside autodiff. The barrier makes rows and columns use
    # one copy of the centred points: XLA may otherwise recompute `x - center`
    # in several fusions with different rounding, so that a point's distance
    # to itself is no longer 0.
    center = jax.lax.stop_gradient(
        _global_sum(jnp.sum(x, 0) + jnp.sum(y, 0), axis_name) / (n + m))
    x, y = jax.lax.optimization_barrier((x - center, y - center))

  def rows_and_columns(x, y):
    # Traced inside the custom VJP of the blocked path, which must not close
    # over tracers: the device index is taken here.
    device = 0 if axis_name is None else jax.lax.axis_index(axis_name)
    rows = _Rows(
        points=jnp.concatenate([x, y]),
        from_x=jnp.arange(n_local + m_local) < n_local,
        position=jnp.concatenate([
            device * n_local + jnp.arange(n_local, dtype=jnp.int32),
            device * m_local + jnp.arange(m_local, dtype=jnp.int32)]),
        weight_x=jnp.concatenate([jnp.full(n_local, weights.xx, dtype),
                                  jnp.full(m_local, weights.xy, dtype)]),
        weight_y=jnp.concatenate([jnp.full(n_local, weights.xy, dtype),
                                  jnp.full(m_local, weights.yy, dtype)]),
    )
    if axis_name is None:
      cols = _Columns(x, y)
    else:
      cols = _Columns(jax.lax.all_gather(x, axis_name, tiled=True),
                      jax.lax.all_gather(y, axis_name, tiled=True))
    return rows, cols

  gram = _gram_fn(kernel, radial)
  if block_size is None:
    rows, cols = rows_and_columns(x, y)
    return _global_sum(jnp.sum(_row_sums(gram, weights, rows, cols)),
                       axis_name)
  if radial is None or not _static(radial.params):
    # Generic kernels, and radial ones whose hyperparameters are traced (being
    # differentiated, say), which the fused custom VJP cannot close over:
    # rematerialise each block and let autodiff do the rest.
    rows, cols = rows_and_columns(x, y)
    block_sums = jax.lax.map(
        jax.checkpoint(lambda block: jnp.sum(
            _row_sums(gram, weights, block, cols))),
        _in_blocks(rows, block_size))
    return _global_sum(jnp.sum(block_sums), axis_name)
  return _radial_blocked(radial, gram, weights, block_size, axis_name,
                         rows_and_columns, x, y)


def _radial_blocked(radial, gram, weights, block_size, axis_name,
                    rows_and_columns, x, y):
  """Streams row blocks; reverse mode reuses gradients from the same sweep."""

  def sweep(x, y, with_grads: bool):
    rows, cols = rows_and_columns(x, y)
    blocks = _in_blocks(rows, block_size)
    if with_grads:
      sums, grads = jax.lax.map(
          lambda block: _row_sums_and_grads(radial, weights, block, cols),
          blocks)
      grads = _unblock(grads, rows.points.shape[0])
      grads = (grads[:x.shape[0]], grads[x.shape[0]:])
    else:
      sums = jax.lax.map(
          lambda block: _row_sums(gram, weights, block, cols), blocks)
      grads = None
    return _global_sum(jnp.sum(sums), axis_name), grads

  @jax.custom_vjp
  def estimate(x, y):
    return sweep(x, y, with_grads=False)[0]

  def forward(x, y):
    return sweep(x, y, with_grads=True)

  def backward(grads, cotangent):
    return tuple(cotangent * g for g in grads)

  estimate.defvjp(forward, backward)
  return estimate(x, y)


def _static(params) -> bool:
  """Whether every hyperparameter is a concrete value, not a tracer."""
  return not any(isinstance(leaf, jax.core.Tracer)
                 for leaf in jax.tree.leaves(params))


def _axis_size(axis_name) -> int:
  return jax.lax.psum(1, axis_name)


def _global_sum(value: jax.Array, axis_name) -> jax.Array:
  return value if axis_name is None else jax.lax.psum(value, axis_name)


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
         block_size: Optional[int] = None,
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
    block_size: None evaluates the `[n + m, n + m]` Gram matrix at once (any
      JAX transformation applies). An integer streams blocks of that many rows,
      so that the value and its gradient take O(block_size * (n + m)) memory;
      the gradient is then computed in the same sweep as the value (reverse
      mode only: use the dense path for forward-mode derivatives).
    axis_name: inside `jax.shard_map`, the mesh axis over which `x` and `y` are
      sharded (the same shard size on every device). The result, the same on
      every device, is the estimate over the global batch, and its gradient
      w.r.t. the local shards is that of the global estimate. Each device
      evaluates only its own rows of pairs: O((n + m)² h / devices) work.

  Returns:
    A scalar in float32 (or the inputs' dtype if wider).

  Raises:
    ValueError: wrong ranks, mismatched h, n < 2 or m < 2, a non-positive
      block_size, bad kernel hyperparameters, or a kernel that returns the
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
    >>> bool(abs(mmd.mmd2(x, y, kernel) - mmd.mmd2(x, y, kernel, block_size=100))
    ...      < 1e-5)
    True
  """
  return _estimate(x, y, kernel, weights_fn=_unbiased_weights,
                   block_size=block_size, axis_name=axis_name, min_points=2)


def mmd2_biased(x: jax.Array, y: jax.Array, kernel: Kernel, *,
                block_size: Optional[int] = None,
                axis_name: Optional[str] = None) -> jax.Array:
  """The biased (V-statistic) estimate of MMD², diagonal terms included.

  `sum_{i,j} k(x_i, x_j) / n² + sum_{i,j} k(y_i, y_j) / m²
  - 2 sum_{i,j} k(x_i, y_j) / (nm)`, non-negative for a positive-definite
  kernel. Arguments, memory and sharding as in `mmd2`; n, m >= 1.

  Example:
    >>> import functools, jax.numpy as jnp
    >>> from couae_jax import kernels, mmd
    >>> x = jnp.zeros((3, 2)); y = jnp.ones((3, 2))
    >>> kernel = functools.partial(kernels.gaussian, scale=1.0)
    >>> mmd.mmd2_biased(x, y, kernel).round(4)
    Array(1.2642, dtype=float32)
  """
  return _estimate(x, y, kernel, weights_fn=_biased_weights,
                   block_size=block_size, axis_name=axis_name, min_points=1)


def mmd2_linear(x: jax.Array, y: jax.Array, kernel: Kernel) -> jax.Array:
  """Gretton et al.'s linear-time unbiased estimate of MMD², O(n h).

  Splits the samples into consecutive pairs and averages
  `k(x_a, x_b) + k(y_a, y_b) - k(x_a, y_b) - k(x_b, y_a)` over them. Its
  variance is much larger than `mmd2`'s; use it when n is too large for even
  the streamed quadratic estimator.

  Args:
    x: `[n, h]` codes.
    y: `[n, h]` prior samples (the same n), n >= 2; an odd last point is unused.
    kernel: as in `mmd2`.

  Returns:
    A scalar.

  Example:
    >>> import functools, jax
    >>> from couae_jax import kernels, mmd
    >>> x = jax.random.normal(jax.random.key(0), (4096, 4))
    >>> kernel = functools.partial(kernels.coulomb, eps=1e-3)
    >>> bool(mmd.mmd2_linear(x, x + 2.0, kernel) > 0.1)
    True
  """
  x = _checks.sample_set("x", x, min_points=2)
  y = _checks.sample_set("y", y, min_points=2)
  _checks.same_dimension("x", x, "y", y)
  if x.shape[0] != y.shape[0]:
    raise ValueError(
        f"mmd2_linear needs as many codes as prior samples; got x.shape="
        f"{tuple(x.shape)} and y.shape={tuple(y.shape)}.")
  _resolve_kernel(kernel, x, y)
  pairs = x.shape[0] // 2
  xa, xb = x[0:2 * pairs:2], x[1:2 * pairs:2]
  ya, yb = y[0:2 * pairs:2], y[1:2 * pairs:2]
  terms = kernel(xa, xb) + kernel(ya, yb) - kernel(xa, yb) - kernel(xb, ya)
  return jnp.mean(terms)


__all__ = ["Kernel", "mmd2", "mmd2_biased", "mmd2_linear"]
