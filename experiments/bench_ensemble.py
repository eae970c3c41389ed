"""How `loop.fit_seeds` should advance its seeds: vmapped in one call, or
looped one call per seed and step (`TrainConfig.ensemble`).

For each workload, S seeds advance K steps, side by side in one process:

* vmap: the trainer's `lax.scan` over the K steps of the step vmapped over
  the S seeds, one call (`ensemble="vmap"`);
* loop: one call per seed and step (`ensemble="loop"`).

Each is warmed up once (compilation), then `--repeats` rounds call the two in
turn (interleaving keeps them comparable on a loaded machine); the table
gives the median milliseconds per seed-step and the ratio vmap / loop
(above 1: looping is faster). Synthetic data, CouAE, the trainer's defaults
otherwise.

Command (from the repository root):

    python -m experiments.bench_ensemble [--repeats 5] [--out FILE]

Results: a table on stdout and JSON at `--out` (default
runs/bench_ensemble.json).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

import numpy as np

from couae_jax import config as config_lib
from couae_jax import ensemble, train
from couae_jax import objective as objective_lib
from experiments import _bench

SEEDS, STEPS = 3, 10
#: name -> (example shape, config fields): the Grid's MLP, Fashion-MNIST's
#: conv nets at the experiment's width, and the CelebA nets at 1/16.
WORKLOADS = {
    "grid mlp": ((2,), dict(architecture="mlp", latent_dim=3,
                            hidden=(128, 128), batch_size=500)),
    "fashion conv 28x28": ((28, 28, 1), dict(architecture="conv",
                                             latent_dim=8, width=1 / 32,
                                             batch_size=100)),
    "celeba conv 64x64": ((64, 64, 3), dict(architecture="conv",
                                            latent_dim=64, width=1 / 16,
                                            batch_size=64)),
}
RUNNERS = {"vmap": ensemble.Vmapped, "loop": ensemble.Looped}


def measure(name: str, repeats: int) -> dict:
  shape, fields = WORKLOADS[name]
  config = config_lib.TrainConfig(steps_per_call=STEPS, **fields)
  mesh = train.make_mesh()
  model = train.build_model(config, shape, axis_name=train.DATA_AXIS)
  optimizer = train.make_optimizer(config)
  example = np.zeros((1, *shape), np.float32)

  def init_member(seed):
    return train.init_state(model, optimizer, example, seed)

  step_kwargs = dict(model=model,
                     objective=objective_lib.make_objective(config),
                     optimizer=optimizer)
  local = np.random.default_rng(0).random(
      (STEPS, SEEDS, config.batch_size, *shape), dtype=np.float32)
  runners, compile_s = {}, {}
  for mode, runner in RUNNERS.items():
    start = time.perf_counter()
    runners[mode] = runner(mesh, init_member, None, range(SEEDS), step_kwargs)
    runners[mode].run(local)  # compiles
    compile_s[mode] = time.perf_counter() - start
  times = {mode: [] for mode in RUNNERS}
  for _ in range(repeats):
    for mode, runner in runners.items():
      start = time.perf_counter()
      runner.run(local)  # returns host metrics: the calls have finished
      times[mode].append((time.perf_counter() - start) / (SEEDS * STEPS))
  medians = {mode: statistics.median(t) for mode, t in times.items()}
  return {"workload": name, "seeds": SEEDS, "steps": STEPS,
          "batch": config.batch_size, "latent_dim": config.latent_dim,
          "width": config.width, "compile_s": compile_s,
          "seed_step_s": times, "median_seed_step_s": medians,
          "vmap_over_loop": medians["vmap"] / medians["loop"]}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--workloads", default=",".join(WORKLOADS))
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path("runs/bench_ensemble.json"))
  args = parser.parse_args(argv)
  names = args.workloads.split(",")
  if set(names) - set(WORKLOADS) or args.repeats < 1:
    parser.error(f"--workloads must name {list(WORKLOADS)}, --repeats >= 1")
  load_before = os.getloadavg()
  records = [measure(name, args.repeats) for name in names]
  rows = [[r["workload"], r["batch"],
           _bench.fmt(1e3 * r["median_seed_step_s"]["vmap"]),
           _bench.fmt(1e3 * r["median_seed_step_s"]["loop"]),
           _bench.fmt(r["vmap_over_loop"], ".2f")] for r in records]
  _bench.print_table(f"{SEEDS} seeds, {STEPS} steps, medians of "
                     f"{args.repeats}", ["workload", "batch",
                                         "vmap ms/seed-step",
                                         "loop ms/seed-step", "vmap / loop"],
                     rows)
  result = {"records": records, "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "metadata": _bench.metadata("experiments.bench_ensemble")}
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2))
  print(f"load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}; "
        f"JSON in {args.out}")


if __name__ == "__main__":
  main()
