"""The pair sums every MMD estimator of `couae_jax.mmd` is made of.

Stack the codes and the prior samples into `z = [x; y]`; every estimator is
`sum_{a, b} c_ab k(z_a, z_b)` over ordered pairs, the weight `c_ab` depending
only on which sample each point belongs to (`PairWeights`). `row_sums`
evaluates a block of rows against every column at once (the dense path, and
generic kernels, differentiated by JAX); `radial_blocked` streams row blocks,
each against the columns one tile at a time, for radial kernels, computing
the gradient in the same sweep (a custom VJP that stores nothing quadratic).
`couae_jax.mmd` validates the inputs, chooses the path and lays out the rows
and columns (`Rows`, `Columns`); this module trusts what it is given.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional, cast

import jax
import jax.numpy as jnp

from couae_jax import kernels as kernels_lib


@dataclasses.dataclass(frozen=True)
class PairWeights:
  """The weight of a pair by the samples its two points come from."""
  xx: float
  yy: float
  xy: float
  include_diagonal: bool


def unbiased_weights(n: int, m: int) -> PairWeights:
  # The cross term -2/(nm) sum_ij k(x_i, y_j) is spread over both orders.
  return PairWeights(1.0 / (n * (n - 1)), 1.0 / (m * (m - 1)), -1.0 / (n * m),
                      include_diagonal=False)


def biased_weights(n: int, m: int) -> PairWeights:
  return PairWeights(1.0 / n**2, 1.0 / m**2, -1.0 / (n * m),
                      include_diagonal=True)


class Rows(NamedTuple):
  """The points whose rows of the pair matrix this device sums.

  The rows are the local x rows followed by the local y rows. `in_x` holds
  them in the frame of the x columns (every point minus x's centre) and
  `in_y` in the frame of the y columns (minus y's centre); without centring
  both are the points themselves. `position` is a row's global index within
  its own sample (-1 for padding), which locates the diagonal; `weight_x` /
  `weight_y` weight the row's pairs with x / y columns.
  """
  in_x: jax.Array       # [r, h]
  in_y: jax.Array       # [r, h]
  from_x: jax.Array     # [r] bool
  position: jax.Array   # [r] int32
  weight_x: jax.Array   # [r]
  weight_y: jax.Array   # [r]


class Columns(NamedTuple):
  x: jax.Array          # [n, h], every x of the global batch (x's frame)
  y: jax.Array          # [m, h], every y (y's frame)


def sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """`[r, c]` squared distances between the rows of `a` and of `b`.

  For h <= `EXACT_MAX_DIM` they are summed from differences: exact to an ulp,
  and no slower than a matrix multiply with an inner dimension that small.
  This matters for the Coulomb kernel at h = 3, which depends on sqrt(t): a
  rounding error in t near 0 becomes a visible error in k.

  Otherwise they come from one matrix multiply, `‖a‖² + ‖b‖² - 2 a·b`, which
  carries a rounding error of a few ulps of `‖a‖² + ‖b‖²`; results below that
  floor are indistinguishable from 0 and are set to 0, so coincident points
  get exactly the kernel's value at 0. (At h > 4 every profile here is smooth
  in t at 0, so that error does not show in k.) The comparison is written so
  that a NaN stays NaN.
  """
  if a.shape[-1] <= EXACT_MAX_DIM:
    # h >= 1 terms, so never `sum`'s start 0.
    return cast(jax.Array, sum(d * d for d in _coordinate_differences(a, b)))
  sq_a = jnp.sum(a * a, axis=-1)[:, None]
  sq_b = jnp.sum(b * b, axis=-1)[None, :]
  cross = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
  t = sq_a + sq_b - 2.0 * cross
  ulps = _ROUNDING_ULPS * jnp.finfo(t.dtype).eps
  # Not `ulps * (sq_a + sq_b)`: a shared `sq_a + sq_b` would be a second
  # tile-sized array in memory, where this is fused into `t`'s computation.
  return jnp.where(t <= ulps * sq_a + ulps * sq_b, 0.0, t)


def _coordinate_differences(a: jax.Array, b: jax.Array) -> list[jax.Array]:
  """`[r, c]` differences per coordinate: `[r, c, h]` with h <= 4 innermost
  would waste the vector lanes."""
  return [a[:, k, None] - b[None, :, k] for k in range(a.shape[-1])]


def _weighted_differences(w: jax.Array, a: jax.Array,
                          b: jax.Array) -> jax.Array:
  """`[r, h]`: `sum_j w_ij (a_i - b_j)`, exactly for small h as above.

  For larger h it is `a_i sum_j w_ij - (w @ b)_i`, one matrix multiply.
  """
  if a.shape[-1] <= EXACT_MAX_DIM:
    return jnp.stack([jnp.sum(w * d, axis=1)
                      for d in _coordinate_differences(a, b)], axis=-1)
  return a * jnp.sum(w, axis=1, keepdims=True) - jnp.dot(
      w, b, precision=jax.lax.Precision.HIGHEST)


#: Largest h whose squared distances are summed from differences.
EXACT_MAX_DIM = 4
#: Ulps of `‖a‖² + ‖b‖²` below which a matrix-multiply distance counts as 0.
_ROUNDING_ULPS = 8


def gram_fn(kernel: kernels_lib.Kernel, radial: Optional[kernels_lib.BoundRadialKernel]):
  """`gram(rows, cols, diagonal) -> [r, c]` kernel values."""
  if radial is not None:
    def gram(rows, cols, diagonal):
      return radial.profile(jnp.where(diagonal, 0.0, sq_distances(rows, cols)))
  else:
    def gram(rows, cols, diagonal):
      del diagonal
      return kernel(rows[:, None, :], cols[None, :, :])
  return gram


def _diagonal(rows: Rows, from_sample: bool, offset, size: int) -> jax.Array:
  """`[r, size]` mask of the pairs of a row with itself, for the columns
  `offset ... offset + size - 1` of one sample."""
  same = rows.from_x if from_sample else ~rows.from_x
  return same[:, None] & (
      rows.position[:, None]
      == offset + jnp.arange(size, dtype=jnp.int32)[None, :])


def _column_sets(rows: Rows, cols: Columns):
  """(from_x, row points, column points, row weights) of the two column
  sets."""
  return ((True, rows.in_x, cols.x, rows.weight_x),
          (False, rows.in_y, cols.y, rows.weight_y))


def row_sums(gram, weights: PairWeights, rows: Rows,
              cols: Columns) -> jax.Array:
  """`[r]`: each row's weighted sum of kernel values over all columns (the
  dense path and generic kernels; differentiated by JAX)."""
  total = jnp.zeros(rows.in_x.shape[0], rows.in_x.dtype)
  for from_x, points, col_points, weight in _column_sets(rows, cols):
    diagonal = _diagonal(rows, from_x, 0, col_points.shape[0])
    k = gram(points, col_points, diagonal)
    if not weights.include_diagonal:
      k = jnp.where(diagonal, 0.0, k)
    total = total + weight * jnp.sum(k, axis=1)
  return total


def _tile_sums(radial, include_diagonal: bool, rows: Rows, points,
               from_x: bool, tile, offset, with_grads: bool):
  """Row sums (and row gradients) of a row block against one column tile,
  unweighted (`_block_sums` weights the rows).

  With `with_grads`: `c` and `k` symmetric give d/dz_a sum_{a', b} c_a'b
  k(z_a', z_b) = 2 sum_b c_ab k'(t_ab) 2 (z_a - z_b), with t the squared
  distance and k' the profile's slope: a function of row a alone, two matrix
  multiplies a tile. The row weight `c_a.` is constant over a sample's
  columns, so it multiplies the tile's sums, not its entries; and where the
  estimator leaves a point's pair with itself out, that pair is put at
  t = inf, where the kernels that vanish at infinity are exactly 0 with slope
  0. XLA then keeps four tile-sized arrays in memory (the matrix product, and
  for the Coulomb kernels q, k and the slopes), where masking k and weighting
  the entries made six: memory traffic on them, not the arithmetic, is what
  the blocked path spends most of its time on (BUILD_NOTES, section 1).
  """
  diagonal = _diagonal(rows, from_x, offset, tile.shape[0])
  vanishes = radial.bounds()[0] == 0.0  # all but the 2-D logarithmic kernel
  t = jnp.where(diagonal, 0.0 if include_diagonal or not vanishes else jnp.inf,
                sq_distances(points, tile))
  if with_grads:
    k, slope = jax.jvp(radial.profile, (t,), (jnp.ones_like(t),))
  else:
    k, slope = radial.profile(t), None
  if not (include_diagonal or vanishes):
    k = jnp.where(diagonal, 0.0, k)
  if slope is None:
    return jnp.sum(k, axis=1), None
  # A point's slope against itself is masked: for kernels whose slope at 0
  # is not 0, `a sum_b s_ab - sum_b s_ab b` would not cancel it exactly.
  slope = jnp.where(diagonal, 0.0, slope)
  return jnp.sum(k, axis=1), _weighted_differences(slope, points, tile)


def _block_sums(radial, weights: PairWeights, rows: Rows, cols: Columns,
                column_tile: Optional[int], with_grads: bool):
  """`[r]` row sums and (with `with_grads`) `[r, h]` row gradients of one row
  block against every column, the columns of each sample taken `column_tile`
  at a time (`lax.scan`, so that the tile-sized temporaries stay in cache)."""
  r, h = rows.in_x.shape
  total = jnp.zeros(r, rows.in_x.dtype)
  grads = jnp.zeros((r, h), rows.in_x.dtype) if with_grads else None
  for from_x, points, col_points, weight in _column_sets(rows, cols):
    tiles_of = functools.partial(_tile_sums, radial, weights.include_diagonal,
                                 rows, points, from_x, with_grads=with_grads)
    size = col_points.shape[0]
    # `full` whole tiles of `tile` columns, then the rest (all of them
    # without column_tile, or with one of at least `size`).
    tile = size if column_tile is None else min(column_tile, size)
    full = size // tile if tile < size else 0
    parts = []
    if full:
      stacked = col_points[:full * tile].reshape(full, tile, h)

      def step(carry, tile_and_offset, tiles_of=tiles_of):
        s, g = tiles_of(*tile_and_offset)
        return (carry[0] + s, None if g is None else carry[1] + g), None

      init = (jnp.zeros(r, total.dtype),
              jnp.zeros((r, h), total.dtype) if with_grads else None)
      carry, _ = jax.lax.scan(
          step, init,
          (stacked, tile * jnp.arange(full, dtype=jnp.int32)))
      parts.append(carry)
    if full * tile < size:
      start = full * tile
      parts.append(tiles_of(col_points[start:], start))
    for s, g in parts:
      total = total + weight * s
      if grads is not None and g is not None:  # both, or neither: with_grads
        grads = grads + (4.0 * weight)[:, None] * g
  return total, grads


def in_blocks(rows: Rows, block_size: int) -> Rows:
  """Pads the rows to whole blocks (padding weighs 0) and stacks the blocks."""
  r = rows.in_x.shape[0]
  padded = -(-r // block_size) * block_size
  fill = {"position": -1}

  def pad_and_split(name, leaf):
    widths = [(0, padded - r)] + [(0, 0)] * (leaf.ndim - 1)
    leaf = jnp.pad(leaf, widths, constant_values=fill.get(name, 0))
    return leaf.reshape((padded // block_size, block_size) + leaf.shape[1:])

  return Rows(*(pad_and_split(name, leaf)
                 for name, leaf in zip(Rows._fields, rows, strict=True)))


def _unblock(stacked: jax.Array, r: int) -> jax.Array:
  return stacked.reshape((-1,) + stacked.shape[2:])[:r]


def radial_blocked(radial, weights, block_size, column_tile, axis_name,
                    rows_and_columns, x, y, centers):
  """Streams row blocks; reverse mode reuses gradients from the same sweep."""

  def sweep(x, y, centers, with_grads: bool):
    rows, cols = rows_and_columns(x, y, centers)
    blocks = in_blocks(rows, block_size)
    sums, grads = jax.lax.map(
        lambda block: _block_sums(radial, weights, block, cols, column_tile,
                                  with_grads),
        blocks)
    if with_grads:
      grads = _unblock(grads, rows.in_x.shape[0])
      grads = (grads[:x.shape[0]], grads[x.shape[0]:])
    return global_sum(jnp.sum(sums), axis_name), grads

  @jax.custom_vjp
  def estimate(x, y, centers):
    return sweep(x, y, centers, with_grads=False)[0]

  def forward(x, y, centers):
    value, grads = sweep(x, y, centers, with_grads=True)
    return value, (grads, centers)

  def backward(residuals, cotangent):
    (gx, gy), centers = residuals
    return (cotangent * gx, cotangent * gy,
            jax.tree.map(jnp.zeros_like, centers))

  estimate.defvjp(forward, backward)
  try:
    return estimate(x, y, centers)
  except TypeError as error:
    if "forward-mode" not in str(error):
      raise
    raise ValueError(
        f"the blocked MMD path (block_size={block_size}, chosen by "
        f"block_size='auto' unless given) is differentiated in reverse mode "
        f"first (jax.grad, jax.vjp, jax.hessian); for forward mode (jax.jvp, "
        f"jax.jacfwd) pass block_size=None, the dense path, which supports "
        f"every transformation.") from error


def global_sum(value: jax.Array, axis_name) -> jax.Array:
  return value if axis_name is None else jax.lax.psum(value, axis_name)
