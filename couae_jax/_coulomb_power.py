"""`1 / ((r / scale)^p + eps)` from `r²`, with a derivative finite everywhere.

The profile of `kernels.coulomb` (p = h - 2) and `kernels.sliced_coulomb`
(p = 1). `1 / r^(h-2)` over- and underflows float32 for ordinary latent sizes
(two standard-normal codes in h = 64 are about 11 apart, and 11^62 is not a
float32); in units of the kernels' default scale, typical pairs sit near
`r / scale = 1`, where `(r / scale)^(h-2)` is representable for h up to
several hundred. The power is evaluated by exact multiplications, so distant
pairs give +inf and `k = 0` (the correct limit), close pairs give `k = 1 / eps`,
and the custom JVP is written in a form that stays finite in both limits and
at coincident points.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


def profile(p: int, sq_dist: jax.Array, eps, scale) -> jax.Array:
  """`1 / ((sq_dist / scale²)^(p/2) + eps)` in `sq_dist`'s dtype, p >= 1."""
  dtype = sq_dist.dtype
  return _coulomb_of_sq(p, sq_dist, jnp.asarray(eps, dtype),
                        _inverse_square(scale, dtype))


def _inverse_square(scale, dtype) -> jax.Array:
  """`scale ** -2` in `dtype`, at most the dtype's largest finite value: a
  scale so small that it overflows then still gives coincident points
  `0 * scale**-2 = 0` (kernel 1/eps) rather than NaN."""
  return jnp.minimum(jnp.asarray(scale, dtype) ** -2, jnp.finfo(dtype).max)


def _power_half(u: jax.Array, p: int) -> jax.Array:
  """`u ** (p / 2)` for u >= 0 by exact multiplications (no exp/log)."""
  q = jax.lax.integer_pow(u, p // 2) if p >= 2 else jnp.ones_like(u)
  return q * jnp.sqrt(u) if p % 2 else q


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _coulomb_of_sq(p: int, sq_dist, eps, inv_scale_sq):
  q = _power_half(sq_dist * inv_scale_sq, p)
  return 1.0 / (q + eps)


def _coulomb_of_sq_jvp(p, primals, tangents):
  sq_dist, eps, inv_scale_sq = primals
  d_sq, d_eps, d_inv = tangents
  q = _power_half(sq_dist * inv_scale_sq, p)
  k = 1.0 / (q + eps)
  # q*k = q/(q + eps) in (0, 1), written two ways so that neither q = inf
  # (distant pairs) nor q << eps (close pairs) loses it: 1 - eps*k cancels
  # catastrophically when q << eps, and q*k is inf*0 when q overflows.
  qk = jnp.where(q < eps, q * k, 1.0 - eps * k)
  # d k / d log(sq_dist) = -(p/2) q k^2; dividing by sq_dist gives the slope in
  # sq_dist. At coincident points we take the slope to be 0: for p >= 2 that is
  # the limit, for p = 1 the slope diverges but the gradient in x, the slope
  # times 2(x - y), stays bounded, and 0 is the symmetric choice.
  # (Tested as `== 0`, not `> 0`, so that a NaN distance keeps a NaN slope.)
  log_slope = -0.5 * p * qk * k
  tangent = jnp.zeros_like(k)
  if not isinstance(d_sq, SymbolicZero):
    if p == 1:
      # The same slope, -k^2 inv_scale_sq / (2 q), from q and k alone: the
      # MMD's blocked path can then compute q with the distances, in the
      # matrix multiply's own loop, instead of keeping the distances as well.
      coincident = q == 0
      d_k_d_sq = jnp.where(coincident, 0.0, -0.5 * inv_scale_sq * k * k
                           / jnp.where(coincident, 1.0, q))
    else:
      coincident = sq_dist == 0
      d_k_d_sq = jnp.where(coincident, 0.0,
                           log_slope / jnp.where(coincident, 1.0, sq_dist))
    tangent = tangent + d_k_d_sq * d_sq
  if not isinstance(d_eps, SymbolicZero):
    tangent = tangent - k * k * d_eps
  if not isinstance(d_inv, SymbolicZero):
    tangent = tangent + log_slope / inv_scale_sq * d_inv
  return k, tangent


_coulomb_of_sq.defjvp(_coulomb_of_sq_jvp, symbolic_zeros=True)
