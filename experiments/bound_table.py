"""How informative is the generalisation bound at a given N? A table.

Command:
  python -m experiments.bound_table [--n 500] [--delta 0.05]
      [--eps 1e-2,1e-4] [--xi 1,10,100] [--lam 1,10] [--out FILE.json]

For the Coulomb kernel in h = 3 and the sliced Coulomb kernel in h = 64 (K =
1/ε for both, `couae_jax.bounds.kernel_bound`, so their rows agree) and each ε,
ξ and λ, prints the deviation `t + λ s` that the paper's bound guarantees
with probability 1 - delta on N samples (`bounds.deviation_at_confidence`),
and the smallest power of ten N at which that deviation falls to 1 or below.

Expected result (N = 500, the Grid's training set): deviations of about 30·λ
at ε = 1e-2 and 3000·λ at ε = 1e-4, against an objective of order 1: the
bound needs N of 1e6 to 1e12 to say anything (BUILD_NOTES.md, section 6).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json

from couae_jax import bounds, kernels

LARGEST_POWER = 16


def _floats(text: str) -> list[float]:
  return [float(v) for v in text.split(",")]


#: (kernel, h): the paper's kernel where the Grid uses it, and the default
#: sliced kernel at the CelebA latent size.
KERNELS = ((kernels.coulomb, 3), (kernels.sliced_coulomb, 64))


def rows(n: int, delta: float, eps_values, xi_values, lam_values) -> list:
  table = []
  for (kernel, h), eps in itertools.product(KERNELS, eps_values):
    bound_k = bounds.kernel_bound(functools.partial(kernel, eps=eps), h=h)
    for xi in xi_values:
      for lam in lam_values:
        deviation = bounds.deviation_at_confidence(n, delta, xi, bound_k, lam)
        informative_n = next(
            (10**k for k in range(1, LARGEST_POWER + 1)
             if bounds.deviation_at_confidence(10**k, delta, xi, bound_k,
                                               lam).total <= 1), None)
        table.append({"kernel": kernel.__name__, "h": h, "eps": eps,
                      "K": bound_k, "xi": xi, "lam": lam,
                      "t": deviation.t, "s": deviation.s,
                      "total": deviation.total,
                      "n_for_total_1": informative_n})
  return table


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=500)
  parser.add_argument("--delta", type=float, default=0.05)
  parser.add_argument("--eps", type=_floats, default=[1e-2, 1e-4])
  parser.add_argument("--xi", type=_floats, default=[1.0, 10.0, 100.0])
  parser.add_argument("--lam", type=_floats, default=[1.0, 10.0])
  parser.add_argument("--out", default=None, help="also write the rows here")
  args = parser.parse_args(argv)
  table = rows(args.n, args.delta, args.eps, args.xi, args.lam)
  print(f"N = {args.n}, confidence {1 - args.delta:g}")
  print(f"{'kernel':>15}{'h':>4}{'eps':>7}{'K':>8}{'xi':>6}{'lam':>6}{'t':>8}{'s':>10}"
        f"{'t + lam s':>11}{'N for <= 1':>12}")
  for r in table:
    needed = f"{r['n_for_total_1']:.0e}" if r["n_for_total_1"] else "> 1e16"
    print(f"{r['kernel']:>15}{r['h']:>4}{r['eps']:>7g}{r['K']:>8g}{r['xi']:>6g}{r['lam']:>6g}"
          f"{r['t']:>8.3f}{r['s']:>10.2f}{r['total']:>11.1f}{needed:>12}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"n": args.n, "delta": args.delta, "rows": table}, f,
                indent=1)


if __name__ == "__main__":
  main()
