"""Width ablation: CouAE on Grid at hidden widths ×0.25, ×0.5, ×1 and ×2.

Command:
  python -m experiments.width_ablation --workdir runs/width [--widths
      0.25,0.5,1,2] [--seeds 0,1] [--steps N] [--full] [--config.FIELD=VALUE]

For each width factor (every hidden width of encoder and decoder scaled), the
seeds of CouAE are trained together exactly as in `experiments.grid` (same
settings, same `--config.*` overrides) in DIR/width_<w>/seed<k>, scored with
the same KDE protocol, with the paper's ξ (the largest per-example
reconstruction error over the seed's training set and a fresh validation set
of the same size) and the deviation `t + λ s` the generalisation bound
guarantees at 95 % confidence (`couae_jax.bounds`, see `grid.generalization`).
Writes DIR/results.json (per width: `test_ll_mean`, `test_ll_std`, `xi`,
`seeds`, per-seed runs) and DIR/width_ablation.png (log-likelihood and ξ
against width).

Paper (ECAI 2020): ×0.25 −5.8 ± 0.4, ×0.5 −4.8 ± 0.4, ×1 −4.3 ± 0.1.
Expected result of the defaults (dev-cpu, 2 cores, 7-14 minutes): ×0.25
-4.75, ×0.5 -4.23, ×1 -4.21, ×2 -4.22, with ξ 1.65, 1.47, 1.68, 1.40
(BUILD_NOTES.md, section 4b).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from couae_jax import config as config_lib
from experiments import _results, grid

PAPER = {"0.25": (-5.8, 0.4), "0.5": (-4.8, 0.4), "1": (-4.3, 0.1)}


def width_key(width: float) -> str:
  """The results key of a width factor: `0.25`, `0.5`, `1`, `2`."""
  return f"{width:g}"


def run_width(width: float, seeds, steps: int, workdir: str, overrides,
              test: np.ndarray, protocol: dict) -> dict:
  result = grid.run_model(
      "couae", seeds, steps, workdir,
      [*overrides, f"--config.width={width}"], test, protocol,
      subdir=f"width_{width_key(width)}")
  xis = [run["xi"] for run in result["runs"]]
  deviations = [run["bound_deviation"] for run in result["runs"]]
  return result | {"width": width, "xi": float(np.mean(xis)),
                   "xi_max": float(np.max(xis)),
                   "bound_deviation": float(np.mean(deviations))}


def save_plot(results: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  keys = results["widths"]
  widths = [results[k]["width"] for k in keys]
  fig, (ll_ax, xi_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
  for k, w in zip(keys, widths):
    ll_ax.scatter([w] * len(results[k]["runs"]),
                  [run["test_ll"] for run in results[k]["runs"]],
                  color="tab:blue", s=10, alpha=0.5)
    xi_ax.scatter([w] * len(results[k]["runs"]),
                  [run["xi"] for run in results[k]["runs"]],
                  color="tab:red", s=10, alpha=0.5)
  ll_ax.errorbar(widths, [results[k]["test_ll_mean"] for k in keys],
                 yerr=[results[k]["test_ll_std"] for k in keys],
                 marker="o", label="couae-jax", color="tab:blue")
  paper = [k for k in keys if k in PAPER]
  ll_ax.errorbar([results[k]["width"] for k in paper],
                 [PAPER[k][0] for k in paper],
                 yerr=[PAPER[k][1] for k in paper], marker="s",
                 linestyle="--", color="gray", label="paper")
  ll_ax.axhline(results["protocol_ceiling_ll"], color="k", linewidth=0.8,
                label="protocol ceiling")
  xi_ax.plot(widths, [results[k]["xi"] for k in keys], marker="o",
             color="tab:red")
  for ax, label in ((ll_ax, "test log-likelihood"), (xi_ax, "ξ (max rec. error)")):
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [f"×{w:g}" for w in widths])
    ax.set_xlabel("width factor")
    ax.set_ylabel(label)
  xi_ax.set_yscale("log")
  ll_ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def print_table(results: dict) -> None:
  print(f"\n{'width':<8}{'test log-likelihood':>22}{'paper':>14}{'ξ':>10}"
        f"{'t+λs (95%)':>13}  per seed")
  for k in results["widths"]:
    r = results[k]
    paper = (f"{PAPER[k][0]:>8.1f} ± {PAPER[k][1]:.1f}" if k in PAPER
             else f"{'':>14}")
    print(f"×{k:<7}{r['test_ll_mean']:>14.3f} ± {r['test_ll_std']:<5.3f}"
          f"{paper}{r['xi']:>10.3g}"
          f"{r['bound_deviation']:>13.3g}  "
          + ", ".join(f"{run['test_ll']:.2f}" for run in r["runs"]))
  print(f"protocol ceiling {results['protocol_ceiling_ll']:.3f}, true mixture "
        f"{results['oracle_ll']:.3f}")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  grid.add_run_arguments(parser)
  parser.add_argument("--widths", default="0.25,0.5,1,2")
  args, overrides = parser.parse_known_args(argv)
  seeds, steps, protocol, test = grid.resolve_run_arguments(args)
  widths = [float(w) for w in args.widths.split(",")]
  if any(w <= 0 for w in widths):
    parser.error(f"--widths must be positive; got {args.widths}")
  for width in widths:  # reject bad overrides before any training
    config_lib.validate(grid.model_config(
        "couae", seeds[0], steps, [*overrides, f"--config.width={width}"]))

  os.makedirs(args.workdir, exist_ok=True)
  start = time.perf_counter()
  results = grid.reference_rows(test, protocol) | {
      "widths": [width_key(w) for w in widths], "protocol": protocol,
      "test_points": len(test), "confidence": grid.CONFIDENCE}
  for width in widths:
    print(f"training and scoring couae at width ×{width:g} ({len(seeds)} "
          f"seeds, {steps} steps)", flush=True)
    results[width_key(width)] = run_width(width, seeds, steps, args.workdir,
                                          overrides, test, protocol)
  save_plot(results, os.path.join(args.workdir, "width_ablation.png"))
  _results.finish(args.workdir, results, start, print_table,
                  note=", plot width_ablation.png")


if __name__ == "__main__":
  main()
