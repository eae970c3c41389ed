"""Throughput, roofline fraction and peak memory of `couae_jax.mmd.mmd2`.

Measures, in one run on the default JAX backend:

* pairs per second of the unbiased `mmd2` estimate and of its value and
  gradient (`jax.value_and_grad` w.r.t. both samples), for the Coulomb,
  Gaussian and IMQ kernels (scale sqrt(2h)), n = m in {256, 1024, 2048, 4096,
  16384}, h in {8, 64}, three ways side by side:
    - naive:   the textbook double-vmap Gram matrices (materialise [n, m, h]),
               diagonal masked out, same normalisation; run for n <= 2048 only;
    - dense:   `mmd2(..., block_size=None)`; run for n <= 4096 only;
    - blocked: `mmd2(..., block_size=--block-size)` (default 128: at
               n = m = 4096, h = 64 it reached 58 % of the matmul ceiling
               against 45 % at 64 and 256, BUILD_NOTES.md);
  "pairs" means n * m (the reported rate is n * m / time); the estimator
  itself visits (n + m)^2 ordered pairs, 4x that when n = m;
* the speedup of dense and blocked value+grad over naive value+grad;
* the float32 matmul ceiling (2048^3 and 4096^3 matmuls, same precision as
  the library) and the fraction of it reached by value+grad (FLOP model below);
* peak RSS of fresh subprocesses running blocked Coulomb value+grad at
  n = m in {32768, 65536}, h = 64, and dense at n = m = 4096 for comparison.

Every function is jitted and compiled ahead of time (compile time reported
separately), then timed with `block_until_ready`; the reported time is the
median of `--repeats` runs (default 5) after one warm-up run.

Command (from the repository root):

    python -m experiments.bench_mmd                 # full set (long)
    python -m experiments.bench_mmd --quick         # smoke test, < 1 minute
    python -m experiments.bench_mmd --sizes 512,2048 --dims 64 --kernels coulomb

Results: a table on stdout and JSON at `--out` (default
bench_results/bench_mmd.json).

Targets:
* value+grad at n = m = 4096, h = 64 at least 40x faster than naive. Naive
  cannot run at 4096 here ([n, m, h] residuals ~27 GiB), so the ratio is
  reported at n = m = 2048, the largest naive size;
* blocked value+grad at n = m = 32768 and 65536, h = 64, under 1.5 GiB peak;
* blocked value+grad at n = m = 4096, h = 64 reaching at least half of the
  matmul ceiling.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import pathlib
import resource
import subprocess
import sys
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from couae_jax import kernels
from couae_jax import mmd
from experiments import _bench

# FLOP model for the roofline fraction: every pass over the (n + m)^2 ordered
# pairs of [x; y] is a matrix multiply contracting h, i.e. 2h FLOPs per pair;
# the elementwise kernel work is not counted (it is what keeps us below 1).
# Library blocked value+grad: for each row block one matmul gives the squared
# distances and one multiplies the gradient weights (kernel slopes) by the
# column points; the gradient comes out of the same sweep -> 2 passes.
BLOCKED_VG_PASSES = 2
# Dense value+grad through autodiff: the forward distance matmul, then the
# transpose of `rows @ cols.T` is two matmuls (cotangent @ cols for the row
# points, cotangent.T @ rows for the column points) -> 3 passes.
DENSE_VG_PASSES = 3
VG_PASSES = {"dense": DENSE_VG_PASSES, "blocked": BLOCKED_VG_PASSES}

METHODS = ("naive", "dense", "blocked")
MODES = ("value", "value_and_grad")
KERNEL_NAMES = ("coulomb", "gaussian", "imq")

FULL = dict(sizes=(256, 1024, 2048, 4096, 16384), dims=(8, 64),
            kernels=KERNEL_NAMES, repeats=5, ceiling_sizes=(2048, 4096))
QUICK = dict(sizes=(256, 1024), dims=(8,), kernels=KERNEL_NAMES, repeats=2,
             ceiling_sizes=(2048,))

NAIVE_MAX_N = 2048   # naive value+grad at 2048, h=64 holds ~6.8 GiB
DENSE_MAX_N = 4096   # dense Gram at 16384 is 4 GiB per [n+m, n+m] matrix
LARGE_RUNS = (("coulomb", 32768, 64, "blocked"),
              ("coulomb", 65536, 64, "blocked"),
              ("coulomb", 4096, 64, "dense"))

TARGET_N, TARGET_H = 4096, 64
TARGET_SPEEDUP = 40.0
TARGET_PEAK_MIB = 1536.0
TARGET_CEILING_FRACTION = 0.5
GIB = 2.0**30


# ----------------------------------------------------------------------------
# What is measured.


def make_kernel(name: str, h: int) -> kernels.Kernel:
  """The benchmark's kernels, all at length scale sqrt(2h)."""
  scale = math.sqrt(2.0 * h)
  return {
      "coulomb": kernels.coulomb,  # eps=DEFAULT_EPS, scale=sqrt(2h) by default
      "gaussian": functools.partial(kernels.gaussian, scale=scale),
      "imq": functools.partial(kernels.imq, scale=scale),
  }[name]


def naive_mmd2(x: jax.Array, y: jax.Array, kernel: kernels.Kernel) -> jax.Array:
  """The unbiased MMD² estimate from double-vmap Gram matrices."""
  def gram(a, b):
    return jax.vmap(lambda p: jax.vmap(lambda q: kernel(p, q))(b))(a)

  def off_diagonal_mean(a):
    k = len(a)
    return jnp.sum(jnp.where(jnp.eye(k, dtype=bool), 0.0, gram(a, a))) / (
        k * (k - 1))

  return (off_diagonal_mean(x) + off_diagonal_mean(y)
          - 2.0 * jnp.mean(gram(x, y)))


def objective(method: str, mode: str, kernel: kernels.Kernel,
              block_size: int) -> Callable[[jax.Array, jax.Array], Any]:
  """`f(x, y)`: the estimate, or (estimate, (grad_x, grad_y))."""
  if method == "naive":
    estimate = functools.partial(naive_mmd2, kernel=kernel)
  else:
    estimate = functools.partial(
        mmd.mmd2, kernel=kernel,
        block_size=block_size if method == "blocked" else None)
  if mode == "value":
    return estimate
  return jax.value_and_grad(estimate, argnums=(0, 1))


def make_inputs(n: int, h: int) -> tuple[jax.Array, jax.Array]:
  """Codes x ~ N(0, I) and prior samples y ~ N(0.1, I), n of each."""
  kx, ky = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (n, h), jnp.float32)
  y = jax.random.normal(ky, (n, h), jnp.float32) + 0.1
  return jax.block_until_ready((x, y))


def skip_reason(method: str, n: int, h: int, args) -> Optional[str]:
  """Why a cell is not run (memory), or None."""
  if method == "naive" and n > args.naive_max_n:
    return (f"naive n>{args.naive_max_n}: [n,m,h] is "
            f"{n * n * h * 4 / GIB:.1f} GiB per Gram")
  if method == "dense" and n > args.dense_max_n:
    return (f"dense n>{args.dense_max_n}: [n+m,n+m] is "
            f"{(2 * n)**2 * 4 / GIB:.1f} GiB per Gram")
  return None


# ----------------------------------------------------------------------------
# Timing.


def time_jitted(fn: Callable, args: Sequence[jax.Array], repeats: int,
                warmup: bool = True) -> tuple[_bench.Timing, Optional[float]]:
  """Compile time, median of `repeats` runs, and the (scalar) estimate."""
  timed = _bench.Timed(jax.jit(fn), tuple(args))
  timing = _bench.time_interleaved({"fn": timed}, repeats,
                                   warmup=warmup)["fn"]
  out = timed.last_output
  value = out[0] if isinstance(out, tuple) else out
  return timing, (float(value) if value.ndim == 0 else None)


def matmul_ceiling(sizes: Sequence[int], repeats: int) -> dict:
  """GFLOP/s of float32 square matmuls at the library's precision."""
  matmul = functools.partial(jnp.dot, precision=jax.lax.Precision.HIGHEST)
  results = {}
  for size in sizes:
    a, b = make_inputs(size, size)
    t, _ = time_jitted(matmul, (a, b), repeats)
    results[str(size)] = {"median_s": t.median_s, "runs_s": t.runs_s,
                          "gflops": 2.0 * size**3 / t.median_s / 1e9}
  return {"precision": "HIGHEST (as mmd2)", "by_size": results,
          "gflops": max(r["gflops"] for r in results.values())}


def vg_gflops(method: str, n: int, h: int, seconds: float) -> float:
  """Achieved GFLOP/s of a value+grad run under the pass-count model."""
  return VG_PASSES[method] * 2 * h * (2 * n)**2 / seconds / 1e9


# ----------------------------------------------------------------------------
# The sweep.


def run_cell(kernel_name: str, n: int, h: int, method: str, args) -> dict:
  """Both modes of one (kernel, n, h, method) cell."""
  record = {"kernel": kernel_name, "n": n, "m": n, "h": h, "method": method,
            "block_size": args.block_size if method == "blocked" else None}
  reason = skip_reason(method, n, h, args)
  if reason:
    return {**record, "status": "not run", "reason": reason}
  kernel = make_kernel(kernel_name, h)
  x, y = make_inputs(n, h)
  for mode in MODES:
    t, value = time_jitted(objective(method, mode, kernel, args.block_size),
                           (x, y), args.repeats)
    record[mode] = {**dataclasses.asdict(t), "value": value,
                    "pairs_per_s": n * n / t.median_s}
  return {**record, "status": "ok"}


def add_comparisons(records: list[dict], ceiling_gflops: float) -> None:
  """Speedup over naive and roofline fraction of each value+grad cell."""
  naive = {(r["kernel"], r["n"], r["h"]): r for r in records
           if r["method"] == "naive" and r["status"] == "ok"}
  for r in records:
    if r["status"] != "ok" or r["method"] == "naive":
      continue
    vg = r["value_and_grad"]
    base = naive.get((r["kernel"], r["n"], r["h"]))
    if base:
      vg["speedup_vs_naive"] = (base["value_and_grad"]["median_s"]
                                / vg["median_s"])
      vg["abs_diff_vs_naive"] = abs(vg["value"]
                                    - base["value_and_grad"]["value"])
    vg["gflops"] = vg_gflops(r["method"], r["n"], r["h"], vg["median_s"])
    vg["ceiling_fraction"] = vg["gflops"] / ceiling_gflops


# ----------------------------------------------------------------------------
# Peak memory in fresh subprocesses.


def peak_rss_mib() -> float:
  """This process's peak resident set size so far, in MiB.

  Reads VmHWM on Linux: `ru_maxrss` survives execve there, so a freshly
  started child would report the parent's peak at fork time if it was larger.
  """
  try:
    with open("/proc/self/status") as status:
      for line in status:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 2**10  # kB
  except OSError:
    pass
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def run_single(spec: str, args) -> dict:
  """Child side: one value+grad run, timed once (no warm-up), with peak RSS."""
  kernel_name, n, h, method = parse_single(spec)
  x, y = make_inputs(n, h)
  rss_inputs = peak_rss_mib()
  fn = objective(method, "value_and_grad", make_kernel(kernel_name, h),
                 args.block_size)
  t, value = time_jitted(fn, (x, y), repeats=1, warmup=False)
  return {"kernel": kernel_name, "n": n, "m": n, "h": h, "method": method,
          "block_size": args.block_size if method == "blocked" else None,
          "compile_s": t.compile_s, "seconds": t.median_s, "value": value,
          "pairs_per_s": n * n / t.median_s,
          "peak_rss_after_inputs_mib": rss_inputs,
          "peak_rss_mib": peak_rss_mib()}


def parse_single(spec: str) -> tuple[str, int, int, str]:
  kernel_name, n, h, method = spec.split(":")
  return kernel_name, int(n), int(h), method


SINGLE_PREFIX = "BENCH_MMD_SINGLE "


def run_in_subprocess(kernel_name: str, n: int, h: int, method: str,
                      args) -> dict:
  """Parent side: runs one `--single` cell in a fresh interpreter."""
  spec = f"{kernel_name}:{n}:{h}:{method}"
  command = [sys.executable, "-m", "experiments.bench_mmd", "--single", spec,
             "--block-size", str(args.block_size)]
  root = pathlib.Path(__file__).resolve().parent.parent
  proc = subprocess.run(command, cwd=root, capture_output=True, text=True)
  for line in proc.stdout.splitlines():
    if line.startswith(SINGLE_PREFIX):
      return {**json.loads(line[len(SINGLE_PREFIX):]), "status": "ok"}
  return {"spec": spec, "status": "failed", "returncode": proc.returncode,
          "stderr_tail": proc.stderr[-2000:]}


# ----------------------------------------------------------------------------
# Reporting.


def sweep_rows(records: list[dict]) -> list[list[str]]:
  rows = []
  for r in records:
    key = [r["kernel"], r["h"], r["n"], r["method"]]
    if r["status"] != "ok":
      rows.append(key + ["not run"] * 2 + ["-"] * 4 + [r["reason"]])
      continue
    v, vg = r["value"], r["value_and_grad"]
    rows.append(key + [
        _bench.fmt(v["pairs_per_s"]), _bench.fmt(vg["pairs_per_s"]),
        _bench.fmt(vg.get("speedup_vs_naive"), ".1f", "x"),
        _bench.fmt(vg.get("gflops"), ".1f"),
        _bench.fmt(vg.get("ceiling_fraction"), ".0%"),
        f"{v['compile_s']:.2f}/{vg['compile_s']:.2f}", ""])
  return rows


def find(records, **key) -> Optional[dict]:
  for r in records:
    if r["status"] == "ok" and all(r.get(k) == v for k, v in key.items()):
      return r
  return None


def targets(records: list[dict], large: list[dict]) -> list[dict]:
  """The three headline targets, measured or 'not measured'."""
  out = []
  naive_ns = [r["n"] for r in records if r["method"] == "naive"
              and r["status"] == "ok" and r["h"] == TARGET_H
              and r["kernel"] == "coulomb"]
  n_cmp = max(naive_ns, default=None)
  for method in ("blocked", "dense"):
    r = n_cmp and find(records, kernel="coulomb", h=TARGET_H, n=n_cmp,
                       method=method)
    out.append({
        "target": f"coulomb h={TARGET_H} {method} v+g speedup vs naive "
                  f"(n={TARGET_N} wanted; measured at n={n_cmp or 'n/a'})",
        "measured": r and r["value_and_grad"].get("speedup_vs_naive"),
        "threshold": TARGET_SPEEDUP, "higher_is_better": True})
  for run in large:
    if run.get("method") == "blocked":
      out.append({
          "target": f"blocked v+g n={run['n']} h={run['h']} peak RSS MiB",
          "measured": run.get("peak_rss_mib"), "threshold": TARGET_PEAK_MIB,
          "higher_is_better": False})
  r = find(records, kernel="coulomb", h=TARGET_H, n=TARGET_N, method="blocked")
  out.append({
      "target": f"blocked coulomb v+g n={TARGET_N} h={TARGET_H} fraction of "
                f"matmul ceiling",
      "measured": r and r["value_and_grad"]["ceiling_fraction"],
      "threshold": TARGET_CEILING_FRACTION, "higher_is_better": True})
  for t in out:
    m = t["measured"]
    t["met"] = None if m is None else (
        m >= t["threshold"] if t["higher_is_better"] else m <= t["threshold"])
  return out


def report(result: dict) -> None:
  _bench.print_table(
      "MMD^2 throughput; pairs = n*m per second (estimator visits (n+m)^2); "
      "v+g = value_and_grad wrt x and y; speedup = naive v+g time / v+g time",
      ["kernel", "h", "n=m", "method", "value pairs/s", "v+g pairs/s",
       "v+g speedup", "v+g GFLOP/s", "of ceiling", "compile s (v/v+g)",
       "note"],
      sweep_rows(result["sweep"]))
  ceiling = result["matmul_ceiling"]
  _bench.print_table("float32 matmul ceiling", ["size", "median s", "GFLOP/s"],
              [[s, _bench.fmt(c["median_s"]), _bench.fmt(c["gflops"], ".1f")]
               for s, c in ceiling["by_size"].items()])
  if result["large"]:
    _bench.print_table(
        "value+grad in fresh subprocesses (1 run, no warm-up)",
        ["kernel", "h", "n=m", "method", "seconds", "compile s",
         "peak RSS MiB", "RSS after inputs MiB"],
        [[r.get("kernel"), r.get("h"), r.get("n"), r.get("method"),
          _bench.fmt(r.get("seconds")), _bench.fmt(r.get("compile_s")),
          _bench.fmt(r.get("peak_rss_mib"), ".0f"),
          _bench.fmt(r.get("peak_rss_after_inputs_mib"), ".0f")]
         if r["status"] == "ok" else [r["spec"], "FAILED", r["returncode"]]
         for r in result["large"]])
  _bench.print_table("targets", ["target", "measured", "threshold", "met"],
              [[t["target"], _bench.fmt(t["measured"]), t["threshold"],
                {None: "not measured", True: "yes", False: "NO"}[t["met"]]]
               for t in result["targets"]])


# ----------------------------------------------------------------------------
# Entry point.


def str_list(text: str) -> tuple[str, ...]:
  names = tuple(text.split(","))
  unknown = set(names) - set(KERNEL_NAMES)
  if unknown:
    raise argparse.ArgumentTypeError(f"unknown kernels {sorted(unknown)}")
  return names


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: n in {256, 1024}, h=8, 2 repeats, "
                           "2048 matmul ceiling only, no large-memory runs")
  parser.add_argument("--sizes", type=_bench.int_list, help="n = m values, e.g. "
                      "256,1024 (default 256,1024,2048,4096,16384)")
  parser.add_argument("--dims", type=_bench.int_list, help="h values (default 8,64)")
  parser.add_argument("--kernels", type=str_list,
                      help="subset of coulomb,gaussian,imq (default all)")
  parser.add_argument("--repeats", type=int, help="timed runs (default 5)")
  parser.add_argument("--block-size", type=int, default=128)
  parser.add_argument("--naive-max-n", type=int, default=NAIVE_MAX_N)
  parser.add_argument("--dense-max-n", type=int, default=DENSE_MAX_N)
  parser.add_argument("--no-large", action="store_true",
                      help="skip the fresh-subprocess peak-memory runs")
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path("bench_results/bench_mmd.json"))
  parser.add_argument("--single", metavar="KERNEL:N:H:METHOD",
                      help="internal: one value+grad run, prints peak RSS")
  args = parser.parse_args(argv)
  defaults = QUICK if args.quick else FULL
  for name, value in defaults.items():
    if getattr(args, name, None) is None:
      setattr(args, name, value)
  args.no_large = args.no_large or args.quick
  return args


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_args(argv)
  if args.single:
    print(SINGLE_PREFIX + json.dumps(run_single(args.single, args)))
    return
  ceiling = matmul_ceiling(args.ceiling_sizes, args.repeats)
  records = [run_cell(k, n, h, method, args)
             for k in args.kernels for h in args.dims for n in args.sizes
             for method in METHODS]
  add_comparisons(records, ceiling["gflops"])
  large = [] if args.no_large else [run_in_subprocess(*spec, args)
                                    for spec in LARGE_RUNS]
  result = {
      "meta": _bench.metadata("experiments.bench_mmd"),
      "settings": {"sizes": args.sizes, "dims": args.dims,
                   "kernels": args.kernels, "repeats": args.repeats,
                   "block_size": args.block_size,
                   "naive_max_n": args.naive_max_n,
                   "dense_max_n": args.dense_max_n},
      "definitions": {
          "pairs": "n*m; pairs_per_s = n*m / median seconds (the estimator "
                   "evaluates (n+m)^2 ordered pairs)",
          "time": "median wall seconds of `repeats` runs of the AOT-compiled "
                  "jitted function after one warm-up, with block_until_ready",
          "speedup_vs_naive": "naive value_and_grad median / this method's",
          "gflops": "passes * 2h * (n+m)^2 / seconds; passes = "
                    f"{VG_PASSES} (value_and_grad)",
          "ceiling_fraction": "gflops / matmul_ceiling.gflops (best size)",
      },
      "matmul_ceiling": ceiling,
      "sweep": records,
      "large": large,
  }
  result["targets"] = targets(records, large)
  report(result)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2))
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
