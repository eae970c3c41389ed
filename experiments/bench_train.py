"""Throughput of the CouAE train step, and the share of it spent in the MMD.

Measures the CouAE train step of `couae_jax.train.make_parallel_step` (the
trainer's defaults otherwise: Adam, lam = 10, the Coulomb MMD against N(0, I)
with as many prior samples as codes, `block_size` of `TrainConfig`) on
synthetic random batches of two configurations:

* mlp:  Grid-sized, data (2,), latent_dim 3, hidden (128, 128);
* conv: 64x64x3 images, latent_dim 64, the WAE CelebA networks at width
        `--conv-width`. The default is 1/16, not 1: at width 1 the step costs
        about 40 GFLOP per example (forward and backward), minutes per step at
        batch 256 on a 2-core CPU; 1/16 is about 256 times cheaper. The conv
        layers' cost falls with the width squared and the MMD's not at all,
        so the MMD share measured at a smaller width is an upper bound on its
        share at width 1;

at global batch 64, 256 and 1024, on 1 and on 4 CPU devices. For each it
reports

* steps/s and examples/s of `step(state, batch)`, the state threaded through
  (it is donated), with `block_until_ready`;
* the compile time of the step (ahead of time, `lower(...).compile()`);
* the share of a step spent in the MMD term, two ways side by side:
    - by difference: 1 - t(step without MMD) / t(step), where the step
      without MMD is the same step with a regulariser that returns the codes
      and a zero penalty (no prior draw, no mmd2, everything else unchanged);
    - alone: t(MMD term) / t(step), where the MMD term is the trainer's own
      regulariser (`objective.make_objective`: same prior draw, kernel and block
      size) differentiated w.r.t. codes of the batch's shape, under the same
      mesh and sharding.

JAX fixes its device count per process, so the command runs itself once per
device count in a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=N` and `JAX_PLATFORMS=cpu`.
Within a process every function is compiled ahead of time and called once as
a warm-up; then the full step, the step without MMD and the MMD term are
called in turn, `--repeats` times, and each one's median wall time is
reported (interleaving keeps the three comparable on a loaded machine).

Command (from the repository root):

    python -m experiments.bench_train                  # full set, ~8 min*
    python -m experiments.bench_train --quick          # smoke test, ~1 minute
    python -m experiments.bench_train --batches 256 --devices 1,4 \
        --conv-width 0.25 --repeats 3

(* on a 2-core CPU shared with other work: load average 3-5.) Results: a
table on stdout and JSON at `--out` (default runs/bench_train.json).

Target: the MMD term costs under 10% of a 64x64 conv step at batch 256.
"""

from __future__ import annotations

import argparse
import dataclasses
import fractions
import json
import os
import pathlib
import subprocess
import sys
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from couae_jax import config as config_lib
from couae_jax import objective as objective_lib
from couae_jax import train
from experiments import _bench

DATA_AXIS = train.DATA_AXIS



def uniform(rng: np.random.Generator, shape) -> np.ndarray:
  return rng.random(shape, dtype=np.float32)


def normal(rng: np.random.Generator, shape) -> np.ndarray:
  return rng.standard_normal(shape, dtype=np.float32)


#: The benchmarked configurations: the shape of an example, how synthetic
#: examples are drawn, and the config's model fields (the conv width is set
#: by `--conv-width`).
WORKLOADS = {
    "mlp": ((2,), normal,
            dict(architecture="mlp", latent_dim=3, hidden=(128, 128))),
    "conv": ((64, 64, 3), uniform, dict(architecture="conv", latent_dim=64)),
}
DEFAULT_CONV_WIDTH = 1 / 16  # width 1 is far too slow on a 2-core CPU

FULL = dict(batches={"mlp": (64, 256, 1024), "conv": (64, 256, 1024)},
            devices=(1, 4), repeats=5, conv_width=DEFAULT_CONV_WIDTH)
QUICK = dict(batches={"mlp": (64, 256), "conv": (64,)},
             devices=(1, 2), repeats=2, conv_width=1 / 16)

TARGET_WORKLOAD, TARGET_BATCH, TARGET_MMD_FRACTION = "conv", 256, 0.10

#: The timed functions of a cell, in the order they are called each round.
STEP, STEP_WITHOUT_MMD, MMD_TERM = "step", "step_without_mmd", "mmd_term"


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a device-count child measures (passed to it as JSON)."""
  batches: dict[str, tuple[int, ...]]  # workload -> global batch sizes
  conv_width: float
  repeats: int
  block_size: int

  @classmethod
  def from_json(cls, text: str) -> "Settings":
    values = json.loads(text)
    values["batches"] = {k: tuple(v) for k, v in values["batches"].items()}
    return cls(**values)


# ----------------------------------------------------------------------------
# What is timed.


class WithoutMMD(objective_lib.Objective):
  """The CouAE objective with the MMD term removed: codes, zero penalty."""

  def regularize(self, encoding, key, axis_name):
    del key, axis_name
    return encoding, jnp.zeros((), encoding.dtype)


def mmd_term(mesh, objective: objective_lib.Objective):
  """`f(codes, key) -> (penalty, d penalty / d codes)`, SPMD over `mesh`."""
  def local(codes, key):
    return jax.value_and_grad(
        lambda c: objective.regularize(c, key, DATA_AXIS)[1])(codes)

  return jax.jit(jax.shard_map(local, mesh=mesh,
                               in_specs=(P(DATA_AXIS), P()),
                               out_specs=(P(), P(DATA_AXIS))))


def sharded_random(mesh, shape: Sequence[int], sample: Callable) -> jax.Array:
  """`sample(rng, shape)`, split along the mesh's data axis."""
  values = sample(np.random.default_rng(0), tuple(shape))
  return jax.device_put(values, NamedSharding(mesh, P(DATA_AXIS)))


@dataclasses.dataclass(frozen=True)
class Workload:
  """A configuration's model, optimizer and initial state on a mesh."""
  name: str
  data_shape: tuple[int, ...]
  sample: Callable  # draws synthetic examples
  config: config_lib.TrainConfig  # its batch_size is set per measurement
  model: Any
  optimizer: Any
  state: train.TrainState  # never donated: each step gets a copy

  @classmethod
  def build(cls, name: str, mesh, settings: Settings) -> "Workload":
    data_shape, sample, fields = WORKLOADS[name]
    config = config_lib.TrainConfig(
        block_size=settings.block_size,
        width=settings.conv_width if name == "conv" else 1.0, **fields)
    model = train.build_model(config, data_shape, axis_name=DATA_AXIS)
    optimizer = train.make_optimizer(config)
    state = jax.jit(
        lambda: train.init_state(model, optimizer,
                                 jnp.zeros((1, *data_shape)), config.seed),
        out_shardings=train.replicated(mesh))()
    return cls(name, data_shape, sample, config, model, optimizer, state)


def measure(workload: Workload, batch: int, mesh, repeats: int) -> dict:
  """Times the step, the step without MMD and the MMD term at `batch`."""
  config = workload.config.replace(batch_size=batch)
  config_lib.validate(config, devices=mesh.size)
  objective = objective_lib.make_objective(config)
  without = WithoutMMD(**{field.name: getattr(objective, field.name)
                          for field in dataclasses.fields(objective)})
  data = sharded_random(mesh, (batch, *workload.data_shape), workload.sample)
  codes = sharded_random(mesh, (batch, config.latent_dim), normal)

  def step(objective):
    jitted = train.make_parallel_step(
        mesh, model=workload.model, objective=objective,
        optimizer=workload.optimizer)
    return _bench.Timed(jitted, (jax.tree.map(jnp.copy, workload.state), data),
                 threaded=True)

  functions = {
      STEP: step(objective),
      STEP_WITHOUT_MMD: step(without),
      MMD_TERM: _bench.Timed(mmd_term(mesh, objective),
                      (codes, jax.random.key(0)), threaded=False),
  }
  timings = _bench.time_interleaved(functions, repeats)
  step_s = timings[STEP].median_s
  return {
      "workload": workload.name, "devices": mesh.size, "batch": batch,
      "data_shape": workload.data_shape, "latent_dim": config.latent_dim,
      "width": config.width, "block_size": config.block_size,
      "steps_per_s": 1.0 / step_s,
      "examples_per_s": batch / step_s,
      "compile_s": timings[STEP].compile_s,
      "mmd_fraction_by_difference":
          1.0 - timings[STEP_WITHOUT_MMD].median_s / step_s,
      "mmd_fraction_alone": timings[MMD_TERM].median_s / step_s,
      "timings": {name: dataclasses.asdict(t) for name, t in timings.items()},
  }


# ----------------------------------------------------------------------------
# One process per device count.

CHILD_PREFIX = "BENCH_TRAIN_CHILD "
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def run_child(devices: int, settings: Settings) -> dict:
  """Child side: every cell on a mesh of this process's `devices` devices."""
  if jax.device_count() != devices:
    raise RuntimeError(f"expected {devices} devices, got {jax.devices()}; "
                       f"is {DEVICE_COUNT_FLAG} overridden?")
  mesh = train.make_mesh()
  load_before = os.getloadavg()
  records = []
  for name, batches in settings.batches.items():
    workload = Workload.build(name, mesh, settings)
    for batch in batches:
      print(f"[{devices} device(s)] {name} batch {batch}", file=sys.stderr,
            flush=True)
      records.append(measure(workload, batch, mesh, settings.repeats))
  device = jax.devices()[0]
  return {"devices": devices, "backend": jax.default_backend(),
          "device_kind": device.device_kind,
          "xla_flags": os.environ.get("XLA_FLAGS"),
          "load_average_before": load_before,
          "load_average_after": os.getloadavg(), "records": records}


def child_env(devices: int) -> dict[str, str]:
  """The environment with JAX on `devices` CPU devices."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith(DEVICE_COUNT_FLAG)]
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": " ".join([*flags, f"{DEVICE_COUNT_FLAG}={devices}"])}


def run_in_subprocess(devices: int, settings: Settings) -> dict:
  """Parent side: runs the child for `devices` (its stderr passes through)."""
  command = [sys.executable, "-m", "experiments.bench_train", "--child",
             str(devices), json.dumps(dataclasses.asdict(settings))]
  root = pathlib.Path(__file__).resolve().parent.parent
  proc = subprocess.run(command, cwd=root, env=child_env(devices),
                        stdout=subprocess.PIPE, text=True)
  for line in proc.stdout.splitlines():
    if line.startswith(CHILD_PREFIX):
      return {**json.loads(line[len(CHILD_PREFIX):]), "status": "ok"}
  return {"devices": devices, "status": "failed",
          "returncode": proc.returncode, "records": []}


# ----------------------------------------------------------------------------
# Reporting.


def width_label(width: float) -> str:
  return str(fractions.Fraction(width).limit_denominator(1024))


def table_rows(records: list[dict]) -> list[list[str]]:
  ms = lambda r, name: _bench.fmt(1e3 * r["timings"][name]["median_s"])
  return [[r["devices"],
           r["workload"] + (f" w={width_label(r['width'])}"
                            if r["workload"] == "conv" else ""),
           r["batch"], ms(r, STEP), _bench.fmt(r["steps_per_s"]),
           _bench.fmt(r["examples_per_s"], ".4g"), _bench.fmt(r["compile_s"], ".2f"),
           ms(r, STEP_WITHOUT_MMD), ms(r, MMD_TERM),
           _bench.fmt(r["mmd_fraction_by_difference"], ".1%"),
           _bench.fmt(r["mmd_fraction_alone"], ".1%")]
          for r in records]


def targets(records: list[dict]) -> list[dict]:
  """The MMD share of the conv step at batch 256, per device count.

  Judged on the share measured alone: the difference of two step times is
  the noisier measure (a few percent of a step on a loaded machine), and is
  reported beside it as a check.
  """
  return [{
      "target": f"MMD share of the {TARGET_WORKLOAD} step (width "
                f"{width_label(r['width'])}) at batch {TARGET_BATCH} on "
                f"{r['devices']} device(s)",
      "measured": r["mmd_fraction_alone"],
      "by_difference": r["mmd_fraction_by_difference"],
      "threshold": TARGET_MMD_FRACTION,
      "met": r["mmd_fraction_alone"] < TARGET_MMD_FRACTION,
  } for r in records
      if r["workload"] == TARGET_WORKLOAD and r["batch"] == TARGET_BATCH]


def report(result: dict) -> None:
  block_size = result["settings"]["block_size"]
  _bench.print_table(
      f"CouAE train step on CPU, MMD block_size {block_size or 'dense'}; ms = "
      "median wall milliseconds; MMD share by difference = 1 - no-MMD step / "
      "step, alone = MMD term v+g / step",
      ["devices", "model", "batch", "step ms", "steps/s", "examples/s",
       "compile s", "no-MMD step ms", "MMD term ms", "MMD share (diff)",
       "MMD share (alone)"],
      table_rows(result["records"]))
  print()
  for child in result["children"]:
    if child["status"] != "ok":
      print(f"{child['devices']} device(s): FAILED (exit code "
            f"{child['returncode']}; its traceback is above)")
    else:
      print(f"{child['devices']} device(s): load average (1 min) "
            f"{child['load_average_before'][0]:.1f} before, "
            f"{child['load_average_after'][0]:.1f} after, on "
            f"{result['meta']['cpu_count']} CPUs")
  if result["targets"]:
    _bench.print_table("target", ["target", "share (alone)", "share (diff)",
                           "threshold", "met"],
                [[t["target"], _bench.fmt(t["measured"], ".1%"),
                  _bench.fmt(t["by_difference"], ".1%"), _bench.fmt(t["threshold"], ".0%"),
                  "yes" if t["met"] else "NO"]
                 for t in result["targets"]])


DEFINITIONS = {
    "time": "median wall seconds of `repeats` calls of the AOT-compiled "
            "function after one warm-up call, with block_until_ready; the "
            "step, the step without MMD and the MMD term are called in turn "
            "each round",
    "steps_per_s": "1 / median step time",
    "examples_per_s": "global batch / median step time",
    "compile_s": "jit(step).lower(state, batch).compile() wall seconds",
    STEP: "make_parallel_step with the trainer's CouAE regulariser",
    STEP_WITHOUT_MMD: "the same step, regulariser returning the codes and a "
                      "zero penalty (no prior draw, no mmd2)",
    MMD_TERM: "value_and_grad w.r.t. codes [batch, latent_dim] of the "
              "trainer's regulariser (prior draw + mmd2), shard_map over the "
              "same mesh",
    "mmd_fraction_by_difference": "1 - t(step_without_mmd) / t(step)",
    "mmd_fraction_alone": "t(mmd_term) / t(step)",
}


# ----------------------------------------------------------------------------
# Entry point.


def positive_fraction(text: str) -> float:
  """'0.125' or '1/8'."""
  try:
    value = float(fractions.Fraction(text))
  except (ValueError, ZeroDivisionError):
    raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
  if value <= 0:
    raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
  return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: mlp at batch 64,256 and conv at "
                           "width 1/16 batch 64, on 1 and 2 devices, 2 "
                           "repeats")
  parser.add_argument("--batches", type=_bench.int_list,
                      help="global batch sizes of both models (default "
                           "64,256,1024)")
  parser.add_argument("--devices", type=_bench.int_list,
                      help="CPU device counts, one process each (default 1,4)")
  parser.add_argument("--conv-width", type=positive_fraction,
                      help="width factor of the conv networks, e.g. 0.25 or "
                           f"1/4 (default {width_label(DEFAULT_CONV_WIDTH)}; "
                           "the paper's CelebA model is width 1)")
  parser.add_argument("--repeats", type=int, help="timed calls (default 5)")
  parser.add_argument("--block-size", type=int,
                      default=config_lib.TrainConfig().block_size,
                      help="the trainer's MMD block size (0: dense; "
                           "default: TrainConfig's)")
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path("runs/bench_train.json"))
  parser.add_argument("--child", nargs=2, metavar=("DEVICES", "SETTINGS"),
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  for name in ("batches", "devices", "repeats"):
    values = getattr(args, name)
    if values is not None and min(np.atleast_1d(values)) < 1:
      parser.error(f"--{name} must be >= 1.")
  defaults = QUICK if args.quick else FULL
  for name in ("devices", "repeats", "conv_width"):
    if getattr(args, name) is None:
      setattr(args, name, defaults[name])
  args.batches = ({name: args.batches for name in WORKLOADS} if args.batches
                  else defaults["batches"])
  for devices in args.devices:
    bad = sorted({b for bs in args.batches.values() for b in bs
                  if b % devices})
    if bad:
      parser.error(f"batches {bad} are not divisible by {devices} devices.")
  return args


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_args(argv)
  if args.child:
    devices, settings = int(args.child[0]), Settings.from_json(args.child[1])
    print(CHILD_PREFIX + json.dumps(run_child(devices, settings)), flush=True)
    return
  settings = Settings(batches=args.batches, conv_width=args.conv_width,
                      repeats=args.repeats, block_size=args.block_size)
  meta = _bench.metadata("experiments.bench_train")
  children = [run_in_subprocess(n, settings) for n in args.devices]
  records = [r for child in children for r in child.pop("records")]
  result = {
      "meta": {**meta, "load_average_at_end": os.getloadavg()},
      "settings": {**dataclasses.asdict(settings), "devices": args.devices,
                   "conv_width_note": (
                       "the paper's CelebA networks are width 1 (about 40 "
                       "GFLOP per example per step); the MMD share at a "
                       "smaller width bounds its share at width 1 from "
                       "above")},
      "definitions": DEFINITIONS,
      "children": children,
      "records": records,
      "targets": targets(records),
  }
  report(result)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2))
  print(f"\nwrote {args.out}")
  if any(child["status"] != "ok" for child in children):
    sys.exit(1)


if __name__ == "__main__":
  main()
