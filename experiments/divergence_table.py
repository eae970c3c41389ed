"""Does the Coulomb regulariser tell wrong codes from a prior sample, at every h?

Command:
  python -m experiments.divergence_table [--dims 3,4,8,16,32,64,128,256]
      [--kernels sliced_coulomb,coulomb] [--points 512] [--null-draws 16]
      [--out runs/divergence_table.json]

For each latent size h, `losses.coulomb_regularizer` with its defaults (float32,
N(0, I) prior) between 512 codes and 512 prior samples, for codes that do not
match the prior: collapsed onto the prior's mean, collapsed onto one prior
sample, spread over a random h/2-dimensional subspace through the mean, and a
prior sample scaled by 0.5 and by 2. Each is printed in standard deviations of
the null (an independent pair of prior samples, `--null-draws` pairs) above
the null mean, with the gradient's largest entry. A divergence scores every one
of them far above 0; `tests/test_sliced_coulomb.py` requires >= 10 of the
default kernel. Expected result (BUILD_NOTES.md, section 1b): the sliced
kernel scores >= 69 everywhere; the paper's kernel scores below the null for
collapsed codes at h >= 16.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax import kernels, losses
from experiments import _bench

DIMS = (3, 4, 8, 16, 32, 64, 128, 256)
POINTS = 512
NULL_DRAWS = 16


def wrong_codes(key: jax.Array, h: int, n: int = POINTS) -> dict[str, jax.Array]:
  """Codes that do not match N(0, I_h), `[n, h]` each, by name."""
  jitter, one, basis, coords, matched = jax.random.split(key, 5)
  tiny = 1e-3 * jax.random.normal(jitter, (n, h))
  subspace, _ = jnp.linalg.qr(jax.random.normal(basis, (h, max(1, h // 2))))
  sample = jax.random.normal(matched, (n, h))
  return {
      "collapsed_on_mean": tiny,
      "collapsed_on_a_prior_sample": jax.random.normal(one, (1, h)) + tiny,
      "on_a_half_dimensional_subspace":
          jax.random.normal(coords, (n, subspace.shape[1])) @ subspace.T,
      "scaled_by_0.5": 0.5 * sample,
      "scaled_by_2": 2.0 * sample,
  }


@functools.lru_cache(maxsize=None)
def _value_and_grad(kernel: str):
  """The default regulariser against given prior samples and its gradient in
  the codes, jitted (one compilation per kernel and shape)."""
  def penalty(codes, prior_samples):
    return losses.coulomb_regularizer(codes, prior_samples, kernel=kernel)
  return jax.jit(penalty), jax.jit(jax.value_and_grad(penalty))


def separations(h: int, *, kernel: str = "sliced_coulomb", n: int = POINTS,
                null_draws: int = NULL_DRAWS, seed: int = 0) -> dict:
  """Null statistics and, per wrong configuration, its score in null
  standard deviations above the null mean and its largest gradient entry."""
  value, value_and_grad = _value_and_grad(kernel)
  null_key, prior_key, wrong_key = jax.random.split(
      jax.random.fold_in(jax.random.key(seed), h), 3)
  draws = jax.random.normal(null_key, (null_draws, 2, n, h))
  nulls = np.array([float(value(a, b)) for a, b in draws])
  null_mean, null_std = float(nulls.mean()), float(nulls.std(ddof=1))
  prior = jax.random.normal(prior_key, (n, h))
  rows = {}
  for name, codes in wrong_codes(wrong_key, h, n).items():
    score, grad = value_and_grad(codes, prior)
    rows[name] = {
        "value": float(score),
        "separation": (float(score) - null_mean) / null_std,
        "grad_finite": bool(jnp.all(jnp.isfinite(grad))),
        "grad_max_abs": float(jnp.max(jnp.abs(grad)))}
  return {"h": h, "kernel": kernel, "null_mean": null_mean,
          "null_std": null_std, "wrong": rows}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dims", type=_bench.int_list, default=DIMS)
  parser.add_argument("--kernels", default="sliced_coulomb,coulomb")
  parser.add_argument("--points", type=int, default=POINTS)
  parser.add_argument("--null-draws", type=int, default=NULL_DRAWS)
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path("runs/divergence_table.json"))
  args = parser.parse_args(argv)
  names = args.kernels.split(",")
  if set(names) - set(losses.COULOMB_KERNELS):
    parser.error(f"--kernels must name {sorted(losses.COULOMB_KERNELS)}")
  table = []
  with warnings.catch_warnings():  # the paper's kernel warns above h = 4
    warnings.simplefilter("ignore", kernels.NotPositiveDefiniteWarning)
    for name in names:
      for h in args.dims:
        table.append(separations(h, kernel=name, n=args.points,
                                 null_draws=args.null_draws))
  wrong = list(table[0]["wrong"])
  _bench.print_table(
      f"score of wrong codes, in null standard deviations above the null "
      f"(n = m = {args.points}, {args.null_draws} null pairs)",
      ["kernel", "h", "null std", *wrong],
      [[r["kernel"], r["h"], f"{r['null_std']:.2g}",
        *(f"{r['wrong'][w]['separation']:.0f}" for w in wrong)]
       for r in table])
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(
      {"meta": _bench.metadata("experiments.divergence_table"),
       "rows": table}, indent=2))
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
