"""Local minima of the MMD in the codes: Coulomb vs Gaussian and IMQ kernels.

Command:
  python -m experiments.local_minima --workdir DIR [--steps N] [--reps R]
      [--kernels coulomb,gaussian_0.5,...] [--estimator biased|unbiased]
      [--full]

The paper's theorem: with the Coulomb kernel (N > h > 2), every local extremum
of the MMD as a function of the codes {z_i} is global. This experiment
optimises N codes directly (no networks) against a FIXED sample of N prior
points y ~ N(0, I_h), from many initialisations, with plain gradient descent
and with Adam (both with a cosine-decayed step), for every kernel named in
`--kernels` (see `parse_kernel`): the Coulomb kernel at several eps and h, and
Gaussian and IMQ kernels at several bandwidths. The runs of one kernel and
optimiser are one jitted program: `vmap` over initialisations, `lax.scan` over
steps.

Objective. By default the biased (V-statistic) `mmd.mmd2_biased`. Its diagonal
terms are constants, so its gradient differs from the unbiased `mmd.mmd2`'s
only in weighting code-code pairs by 1/N² instead of 1/(N(N-1)): every code
then carries the same charge as a prior point, and a single code far from the
rest sees a net attracting charge. With the unbiased weights that net charge
is exactly 0 (N-1 codes at 1/(N(N-1)) each against N prior points at 1/N²),
so far codes feel only a dipole field and descent can carry them off to
infinity, a failure the theorem (about extrema at finite points) does not
exclude; `--estimator unbiased` shows it. The biased estimate is >= 0 and is 0
exactly when the codes are the prior points, the same minimiser for every
kernel here.

Initialisations (`INIT_KINDS`): `normal` (codes ~ N(0, I), like the prior),
`far` (a N(0, 0.5² I) cloud 10 away), `clumped` (all within 0.01 of the
origin), `one_side` (a N(0, I) cloud with its first coordinate moved to
3 + |g|, entirely on one side of the prior).

Criterion of reaching the global minimum, per kernel: let `reference` be the
MMD reached by Adam started from the prior points themselves, `best` the
lower of it and every run's final MMD, and `defect` the MMD of the prior
points with the closest pair merged (one code moved onto its nearest
neighbour: the cheapest wrong assignment). A run reaches the global minimum
when `final - best <= 0.1 * (defect - best)`, i.e. it is within a tenth of
the cheapest structural defect of the best value. Each run also records
where its codes ended (`matching`): `empty` prior points (no code within half
the prior's smallest pairwise distance), `shared` ones (two or more codes),
`free` codes, and `free_force`, the largest gradient on a free code in units
of one pair term (times N²/2), which tells a stuck run (~0) from an unfinished
one.

Writes DIR/results.json (per kernel: `global_fraction`, per-optimiser and
per-initialisation fractions, and `runs`, one record per run) and
DIR/trajectories.png (codes' paths in the first two coordinates for the
Coulomb kernel and a Gaussian, same `one_side` start, Adam).

Defaults: N = 32, h = 3 (H for `*_hH`), 8 runs per initialisation and
optimiser, 3000 steps, Adam lr 0.05 with b1 = 0.5, b2 = 0.9 (the authors'
betas; with b2 = 0.999 Adam's memory of the huge gradients at the Coulomb
kernel's cusp froze codes that were still being pulled, and runs ended
unfinished), gradient descent at 0.01 per unit pair force; about 100 s on a
2-core CPU. `--full`: 16 runs, 10000 steps.

Expected result (measured, defaults, biased estimator): with Adam the Coulomb
kernel at eps = 1e-2 reaches the global minimum from every start (32/32). At
eps = 1e-1 and 1e-4 (and h = 5, eps = 1e-4) it does not: all but one failed
Adam run end with two codes bound in one prior point's eps-core and another
prior point empty, and stay so to the last step. That is what a local minimum
of the regularised kernel looks like (inside the core the kernel is not
harmonic, and the prior point pulls each of the two codes harder than they
push each other; no second-order check was made); the theorem is about the
unregularised kernel.
The coulomb_h5 failures (eps = 1e-2, core radius 0.68 in units where the
prior's nearest neighbours are about 0.7 apart) leave free codes at rest.
Gaussian kernels of bandwidth 0.2 and 0.5 and IMQ 0.5 fail from every start
(codes at rest away from the prior points, forces ~1e-7); wider Gaussians
fail from `far` starts (vanishing gradient); IMQ 1.0 and 2.0 succeed with
Adam. Plain gradient descent at one step size fails for every Coulomb kernel:
the cusp's pull, 1/(scale eps²) per pair, is 10^4 to 10^8 times the far
field, so a step small enough for the core (h = 3: about scale² eps³)
cannot move distant codes. With `--estimator unbiased` codes escape to 60-100 units.
The sliced Coulomb kernel (`sliced_h5`, `sliced_h8`; at h = 3 it is `coulomb`)
reaches the global minimum in every Adam run at h = 5 and 8, where the paper's
kernel (`coulomb_h5`, `coulomb_h8`) leaves codes at rest away from the prior
points (BUILD_NOTES.md, section 1b).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import optimize as scipy_optimize

from couae_jax import kernels, mmd
from experiments import _results

INIT_KINDS = ("normal", "far", "clumped", "one_side")
OPTIMIZERS = ("adam", "gd")
DEFAULT_KERNELS = ("coulomb,coulomb_eps1e-1,coulomb_eps1e-4,coulomb_h5,"
                   "coulomb_h5_eps1e-4,coulomb_h8,sliced_h5,sliced_h8,"
                   "gaussian_0.2,gaussian_0.5,gaussian_1.0,gaussian_2.0,"
                   "imq_0.5,imq_1.0,imq_2.0")
#: `coulomb` is the paper's kernel, `sliced` the sliced Coulomb kernel (the
#: same kernel at h = 3).
COULOMB_FAMILIES = {"coulomb": kernels.coulomb,
                    "sliced": kernels.sliced_coulomb}
ESTIMATORS = {"biased": mmd.mmd2_biased, "unbiased": mmd.mmd2}
#: Fraction of the cheapest structural defect a run may lie above the best.
DEFECT_FRACTION = 0.1
FAR_DISTANCE = 10.0
ONE_SIDE_OFFSET = 3.0


class KernelSpec(NamedTuple):
  name: str
  h: int
  kernel: Callable[..., jax.Array]
  description: str


def parse_kernel(name: str) -> KernelSpec:
  """`coulomb[_epsE][_hH]`, `sliced[_epsE][_hH]`, `gaussian_S` or `imq_S`.

  S is the bandwidth. The Coulomb kernels default to h = 3 and eps = kernels.DEFAULT_EPS, with the
  library's unit length sqrt(2 h); Gaussian and IMQ kernels run in h = 3.
  """
  family, *options = name.split("_")
  if family in COULOMB_FAMILIES:
    h, eps = 3, kernels.DEFAULT_EPS
    for option in options:
      if option.startswith("eps"):
        eps = float(option[3:])
      elif option.startswith("h"):
        h = int(option[1:])
      else:
        raise ValueError(f"unknown Coulomb option {option!r} in {name!r}; "
                         f"use {family}_eps1e-3, {family}_h5, ...")
    kernel = COULOMB_FAMILIES[family]
    return KernelSpec(name, h, functools.partial(kernel, eps=eps),
                      f"{kernel.__name__} h={h} eps={eps:g} scale=sqrt(2h)")
  if family in ("gaussian", "imq") and len(options) == 1:
    scale = float(options[0])
    fn = kernels.gaussian if family == "gaussian" else kernels.imq
    return KernelSpec(name, 3, functools.partial(fn, scale=scale),
                      f"{family} h=3 scale={scale:g}")
  raise ValueError(f"unknown kernel {name!r}; use coulomb[_epsE][_hH], "
                   f"sliced[_epsE][_hH], gaussian_S or imq_S.")


def initial_codes(key: jax.Array, kind: str, reps: int, n: int,
                  h: int) -> jax.Array:
  """`[reps, n, h]` starting codes of one kind (see INIT_KINDS)."""
  key_codes, key_direction = jax.random.split(key)
  normal = jax.random.normal(key_codes, (reps, n, h))
  if kind == "normal":
    return normal
  if kind == "far":
    direction = jax.random.normal(key_direction, (reps, 1, h))
    direction /= jnp.linalg.norm(direction, axis=-1, keepdims=True)
    return 0.5 * normal + FAR_DISTANCE * direction
  if kind == "clumped":
    return 0.01 * normal
  if kind == "one_side":
    return normal.at[..., 0].set(ONE_SIDE_OFFSET + jnp.abs(normal[..., 0]))
  raise ValueError(f"unknown init kind {kind!r}; choose from {INIT_KINDS}")


def make_optimizer(name: str, steps: int, *, adam_lr: float, adam_b2: float,
                   gd_lr: float, n: int) -> optax.GradientTransformation:
  """Adam, or gradient descent whose step is `gd_lr` times the per-code force.

  The MMD's gradient in one code is 2/N² times the sum of its pair forces, so
  plain gradient descent runs at learning rate `gd_lr * N² / 2`.
  """
  if name == "adam":
    return optax.adam(optax.cosine_decay_schedule(adam_lr, steps), b1=0.5,
                      b2=adam_b2)
  if name == "gd":
    return optax.sgd(optax.cosine_decay_schedule(gd_lr * n * n / 2, steps))
  raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


def descend(loss: Callable[[jax.Array], jax.Array],
            optimizer: optax.GradientTransformation, codes: jax.Array,
            steps: int, snapshots: int) -> jax.Array:
  """Minimises `loss` from `codes: [n, h]`; returns `[snapshots, n, h]`.

  The snapshots are the codes after every `steps // snapshots` steps (the last
  is the final codes).
  """
  def step(carry, _):
    codes, state = carry
    updates, state = optimizer.update(jax.grad(loss)(codes), state, codes)
    return (optax.apply_updates(codes, updates), state), None

  def chunk(carry, _):
    carry, _ = jax.lax.scan(step, carry, None, length=steps // snapshots)
    return carry, carry[0]

  _, path = jax.lax.scan(chunk, (codes, optimizer.init(codes)), None,
                         length=snapshots)
  return path


def defect_cost(estimator, kernel, prior: np.ndarray) -> float:
  """The MMD of the prior points with their closest pair merged."""
  dist = np.linalg.norm(prior[:, None] - prior[None], axis=-1)
  np.fill_diagonal(dist, np.inf)
  i, j = np.unravel_index(np.argmin(dist), dist.shape)
  codes = prior.copy()
  codes[i] = prior[j]
  return float(estimator(jnp.asarray(codes), jnp.asarray(prior), kernel))


def matching(codes: np.ndarray, prior: np.ndarray, radius: float,
             force: np.ndarray) -> dict:
  """Where the final codes sit relative to the prior points.

  Args:
    codes: `[n, h]` final codes.
    prior: `[n, h]` prior points.
    radius: a code within `radius` of a prior point occupies it.
    force: `[n]` each code's gradient norm, in pair-force units.

  Returns:
    `max_matched_distance` of the optimal code-to-prior assignment; `empty`,
    prior points no code occupies; `shared`, prior points two or more codes
    occupy; `free`, codes occupying none; `free_force`, the largest force on a
    free code (0 if none). (Occupied codes of the h = 3 Coulomb kernel feel the
    finite pull of the kernel's cusp even at the minimum, so only free codes
    tell a stuck run from a moving one.)
  """
  dist = np.linalg.norm(codes[:, None] - prior[None], axis=-1)
  rows, cols = scipy_optimize.linear_sum_assignment(dist)
  occupants = np.sum(dist <= radius, axis=0)
  free = dist.min(axis=1) > radius
  return {"max_matched_distance": float(dist[rows, cols].max()),
          "empty": int(np.sum(occupants == 0)),
          "shared": int(np.sum(occupants >= 2)),
          "free": int(np.sum(free)),
          "free_force": float(force[free].max()) if free.any() else 0.0}


def run_kernel(spec: KernelSpec, args, estimator) -> dict:
  n = args.n
  prior = jax.random.normal(jax.random.key(args.seed), (n, spec.h))
  prior_np = np.asarray(prior, np.float64)
  loss = lambda codes: estimator(codes, prior, spec.kernel)  # noqa: E731
  starts = jnp.concatenate([
      initial_codes(jax.random.fold_in(jax.random.key(args.seed + 1), index),
                    kind, args.reps, n, spec.h)
      for index, kind in enumerate(INIT_KINDS)])
  kinds = [kind for kind in INIT_KINDS for _ in range(args.reps)]

  @functools.partial(jax.jit, static_argnums=0)
  def optimise(optimizer_name, starts):
    optimizer = make_optimizer(optimizer_name, args.steps, adam_lr=args.adam_lr,
                               adam_b2=args.adam_b2, gd_lr=args.gd_lr, n=n)
    final = jax.vmap(lambda z: descend(loss, optimizer, z, args.steps, 1)[-1])(
        starts)
    values = jax.vmap(loss)(final)
    force = jax.vmap(jax.grad(loss))(final) * (n * n / 2)
    return final, values, jnp.linalg.norm(force, axis=-1)

  reference = float(optimise("adam", prior[None])[1][0])
  defect = defect_cost(estimator, spec.kernel, prior_np)
  dist = np.linalg.norm(prior_np[:, None] - prior_np[None], axis=-1)
  radius = 0.5 * dist[np.triu_indices(n, 1)].min()

  runs = []
  for optimizer_name in OPTIMIZERS:
    final, values, force = optimise(optimizer_name, starts)
    final, values, force = (np.asarray(a, np.float64)
                            for a in (final, values, force))
    for index, kind in enumerate(kinds):
      runs.append({"init": kind, "optimizer": optimizer_name,
                   "rep": index % args.reps, "final_mmd": values[index]}
                  | matching(final[index], prior_np, radius, force[index]))
  values = [r["final_mmd"] for r in runs if math.isfinite(r["final_mmd"])]
  best = min([reference] + values)
  tolerance = DEFECT_FRACTION * (defect - best)
  for r in runs:
    r["gap"] = r["final_mmd"] - best
    r["reached_global"] = bool(r["gap"] <= tolerance)

  def fraction(selected):
    return float(np.mean([r["reached_global"] for r in selected]))

  return {
      "kernel": spec.description, "h": spec.h, "n": n,
      "reference_mmd": reference, "best_mmd": best, "defect_mmd": defect,
      "tolerance": tolerance, "match_radius": radius,
      "global_fraction": fraction(runs),
      "by_optimizer": {o: fraction([r for r in runs if r["optimizer"] == o])
                       for o in OPTIMIZERS},
      "by_init": {f"{o}/{k}": fraction([r for r in runs
                                        if r["optimizer"] == o
                                        and r["init"] == k])
                  for o in OPTIMIZERS for k in INIT_KINDS},
      "runs": runs,
  }


def plot_trajectories(workdir: str, names, args, estimator) -> str:
  """Paths of the codes from one `one_side` start under Adam, per kernel."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 5),
                           squeeze=False)
  for ax, name in zip(axes[0], names):
    spec = parse_kernel(name)
    prior = jax.random.normal(jax.random.key(args.seed), (args.n, spec.h))
    start = initial_codes(
        jax.random.fold_in(jax.random.key(args.seed + 1),
                           INIT_KINDS.index("one_side")),
        "one_side", 1, args.n, spec.h)[0]
    optimizer = make_optimizer("adam", args.steps, adam_lr=args.adam_lr,
                               adam_b2=args.adam_b2, gd_lr=args.gd_lr,
                               n=args.n)
    path = jax.jit(lambda z: descend(
        lambda c: estimator(c, prior, spec.kernel), optimizer, z, args.steps,
        100))(start)
    path = np.concatenate([np.asarray(start)[None], np.asarray(path)])
    for i in range(args.n):
      ax.plot(path[:, i, 0], path[:, i, 1], lw=0.7, color="tab:blue",
              alpha=0.6)
    ax.scatter(path[-1, :, 0], path[-1, :, 1], s=14, color="tab:blue",
               label="codes (end)")
    ax.scatter(path[0, :, 0], path[0, :, 1], s=8, color="tab:gray",
               label="codes (start)")
    prior = np.asarray(prior)
    ax.scatter(prior[:, 0], prior[:, 1], marker="x", color="tab:red",
               label="prior sample")
    final_mmd = float(estimator(jnp.asarray(path[-1]), jnp.asarray(prior),
                                spec.kernel))
    ax.set_title(f"{name}: final MMD² {final_mmd:.3g}")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_aspect("equal", adjustable="datalim")
  axes[0, 0].legend(loc="lower left", fontsize=8)
  fig.tight_layout()
  path_png = os.path.join(workdir, "trajectories.png")
  fig.savefig(path_png, dpi=110)
  plt.close(fig)
  return path_png


def print_table(results: dict) -> None:
  columns = [f"{o}/{k}" for o in OPTIMIZERS for k in INIT_KINDS]
  print(f"\n{'kernel':<18}{'global':>8}" + "".join(f"{c:>15}" for c in columns))
  for name in results["kernels"]:
    r = results[name]
    print(f"{name:<18}{r['global_fraction']:>8.0%}"
          + "".join(f"{r['by_init'][c]:>15.0%}" for c in columns))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--kernels", default=DEFAULT_KERNELS)
  parser.add_argument("--estimator", choices=sorted(ESTIMATORS),
                      default="biased")
  parser.add_argument("--n", type=int, default=32,
                      help="codes and prior points (N > h)")
  parser.add_argument("--reps", type=int, default=None,
                      help="runs per initialisation kind and optimiser "
                           "(default 8; --full 16)")
  parser.add_argument("--steps", type=int, default=None,
                      help="optimisation steps (default 3000; --full 10000)")
  parser.add_argument("--adam-lr", type=float, default=0.05)
  parser.add_argument("--adam-b2", type=float, default=0.9)
  parser.add_argument("--gd-lr", type=float, default=0.01,
                      help="gradient-descent step per unit pair force")
  parser.add_argument("--plot", default="coulomb,gaussian_0.5",
                      help="kernels whose trajectories are drawn ('' for none)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--full", action="store_true")
  args = parser.parse_args(argv)
  args.reps = args.reps or (16 if args.full else 8)
  args.steps = args.steps or (10_000 if args.full else 3_000)
  specs = [parse_kernel(name) for name in args.kernels.split(",")]
  for spec in specs:
    if args.n <= spec.h:
      parser.error(f"--n must exceed h (the theorem needs N > h); got "
                   f"n={args.n} for {spec.name} (h={spec.h}).")
  estimator = ESTIMATORS[args.estimator]

  os.makedirs(args.workdir, exist_ok=True)
  start = time.perf_counter()
  results = {"kernels": [s.name for s in specs], "estimator": args.estimator,
             "n": args.n, "reps": args.reps, "steps": args.steps,
             "adam_lr": args.adam_lr, "gd_lr": args.gd_lr, "seed": args.seed,
             "init_kinds": list(INIT_KINDS),
             "defect_fraction": DEFECT_FRACTION}
  for spec in specs:
    kernel_start = time.perf_counter()
    results[spec.name] = run_kernel(spec, args, estimator)
    print(f"{spec.name:<18} global {results[spec.name]['global_fraction']:.0%}"
          f"  ({time.perf_counter() - kernel_start:.0f} s)", flush=True)
  if args.plot:
    results["trajectories"] = plot_trajectories(
        args.workdir, args.plot.split(","), args, estimator)
  _results.finish(args.workdir, results, start, print_table)
  return results


if __name__ == "__main__":
  main()
