"""Speed, share of the matmul ceiling and peak memory of `couae_jax.mmd.mmd2`.

Measures, in one run on the default JAX backend, for each kernel, n = m and h
(one "cell"), the unbiased `mmd2` estimate and its value and gradient
(`jax.value_and_grad` w.r.t. both samples), called these ways side by side:

  - naive:    the textbook double-vmap Gram matrices (materialise [n, m, h]),
              same normalisation; n <= --naive-max-n only;
  - dense:    `mmd2(..., block_size=None)`; n <= --dense-max-n only;
  - default:  `mmd2(x, y, kernel)`, i.e. `block_size="auto"` (recorded as
              method "blocked", block_size "auto");
  - block B:  `mmd2(..., block_size=B)` for each B of --block-sizes (method
              "blocked");
  - torch:    with --torch (and torch importable), the same estimate in
              PyTorch as a user would first write it: Gram matrices from
              `torch.cdist`, value and gradient by autograd, on the same
              inputs, in the value+grad rounds (on CUDA when JAX's backend
              is a GPU, synchronised before the clock stops);
  - and a float32 matmul of --ceiling-size³ at the library's precision
    (HIGHEST), the ceiling, timed in the same rounds.

All calls of a cell are timed in turn, round after round
(`_bench.time_interleaved`: one warm-up each, then --repeats rounds in random
order, each call made twice and the second timed; medians reported), so that
their ratios and their share of the ceiling share the machine's load. The FLOP model of the share: every pass over the (n + m)²
ordered pairs of [x; y] is a matrix multiply contracting h (2h FLOPs a pair);
blocked value+grad makes 2 passes (distances; slope-weighted points), dense
value+grad 3 (autodiff: the forward matmul and its transpose's two); the
elementwise kernel work is not counted (it is what keeps us below 1).

Peak memory: fresh subprocesses run one value+grad each (VmHWM, and on an
accelerator its allocator's `peak_bytes_in_use`, which the target then
reads), the default
call at n = m = 32768 and 65536, h = 64, block 1024 at 32768 (two block-sized
Gram temporaries would be 2 x 1024 x 65536 x 4 B = 512 MiB), and dense at
4096; --large-runs names another set. The children allocate accelerator
memory as they need it (no preallocation), beside what this process holds.

On a GPU, `experiments/bench_gpu.sh` runs this at GPU sizes (BUILD_NOTES
section 1 has its table).

Command (from the repository root):

    python -m experiments.bench_mmd                  # full set (long)
    python -m experiments.bench_mmd --quick          # smoke test, ~1 minute
    python -m experiments.bench_mmd --sizes 4096 --dims 64 \\
        --kernels sliced_coulomb,coulomb --no-large --out /tmp/bench_mmd.json

Results: tables on stdout and JSON at --out (default runs/bench_mmd.json;
runs/ is not part of the source tree). The JSON records the load average
before and after the run (`uptime`): on a shared machine compare only the
ratios within one run.

Targets (issue #14; value+grad, h = 64, the default sliced Coulomb kernel):
* the default call within 10 % of the best explicit block size at n = 4096,
  and >= 5x faster than torch's `cdist` formulation there;
* value+grad at n = 4096 >= 60 % of the ceiling measured in the same run,
  at n = 32768 >= 50 %;
* peak memory of the default call at n = m = 65536 < 1 GiB.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from couae_jax import kernels, mmd
from experiments import _bench

BLOCKED_VG_PASSES = 2
DENSE_VG_PASSES = 3
VG_PASSES = {"dense": DENSE_VG_PASSES, "blocked": BLOCKED_VG_PASSES}

METHODS = ("naive", "dense", "blocked")
MODES = ("value", "value_and_grad")
KERNEL_NAMES = ("sliced_coulomb", "coulomb", "gaussian", "imq")

FULL = dict(sizes=(1024, 4096, 16384), dims=(8, 64),
            kernels=("sliced_coulomb", "coulomb", "gaussian"), repeats=5,
            block_sizes=(64, 128, 256, 512))
QUICK = dict(sizes=(256, 1024), dims=(8,), kernels=KERNEL_NAMES, repeats=2,
             block_sizes=(64, 128))

NAIVE_MAX_N = 2048   # naive value+grad at 2048, h=64 holds ~6.8 GiB
DENSE_MAX_N = 4096   # dense Gram at 16384 is 4 GiB per [n+m, n+m] matrix
CEILING_SIZE = 2048
LARGE_RUNS = ("sliced_coulomb:32768:64:auto", "sliced_coulomb:65536:64:auto",
              "sliced_coulomb:32768:64:1024", "sliced_coulomb:4096:64:none")

TARGET_H = 64
TARGET_KERNEL = "sliced_coulomb"
TARGET_DEFAULT_OVER_BEST = 1.10
TARGET_SPEEDUP_OVER_TORCH = 5.0
TARGET_FRACTION = {4096: 0.60, 32768: 0.50}
TARGET_PEAK_MIB = {65536: 1024.0}
GIB = 2.0**30


# ----------------------------------------------------------------------------
# What is measured.


def make_kernel(name: str, h: int) -> kernels.Kernel:
  """The benchmark's kernels, all at length scale sqrt(2h)."""
  scale = (2.0 * h) ** 0.5
  return {
      "sliced_coulomb": kernels.sliced_coulomb,  # eps, scale: the defaults
      "coulomb": kernels.coulomb,
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


class TorchTimed:
  """The estimate and its gradient in PyTorch, timed as `_bench.Timed` is.

  The formulation a PyTorch user writes first: `k = 1 / ((d / scale)^p +
  eps)` on `torch.cdist` distance matrices (p = h - 2 for `coulomb`, 1 for
  `sliced_coulomb`, the library's default eps and scale), the unbiased
  estimate from the three Gram matrices, and `backward()` for the gradient
  w.r.t. both samples. `compile_s` is 0: nothing is compiled.
  """

  def __init__(self, kernel_name: str, x: jax.Array, y: jax.Array):
    import torch  # pylint: disable=import-outside-toplevel
    self.torch = torch
    h = x.shape[-1]
    self.power = {"coulomb": h - 2, "sliced_coulomb": 1}[kernel_name]
    self.scale = (2.0 * h) ** 0.5
    on_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    self.device = torch.device("cuda" if on_gpu else "cpu")
    self.args = tuple(torch.from_numpy(np.array(a)).to(self.device)
                      for a in (x, y))
    self.compile_s = 0.0
    self.last_output = None

  def _gram(self, a, b):
    r = self.torch.cdist(a, b) / self.scale
    return 1.0 / (r**self.power + kernels.DEFAULT_EPS)

  def _off_diagonal_mean(self, a):
    k = self._gram(a, a)
    return (k.sum() - k.diagonal().sum()) / (len(a) * (len(a) - 1))

  def __call__(self) -> float:
    start = time.perf_counter()
    x, y = (a.detach().requires_grad_() for a in self.args)
    value = (self._off_diagonal_mean(x) + self._off_diagonal_mean(y)
             - 2.0 * self._gram(x, y).mean())
    value.backward()
    if self.device.type == "cuda":
      self.torch.cuda.synchronize()  # CUDA kernels run asynchronously
    elapsed = time.perf_counter() - start
    self.last_output = (value.item(), (x.grad, y.grad))
    return elapsed


def release_torch_memory() -> None:
  """Hands torch's cached CUDA blocks back, for the peak-memory children."""
  import torch  # pylint: disable=import-outside-toplevel
  if torch.cuda.is_available():
    torch.cuda.empty_cache()


def torch_available() -> bool:
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def objective(method: str, mode: str, kernel: kernels.Kernel,
              block_size) -> Callable[[jax.Array, jax.Array], Any]:
  """`f(x, y)`: the estimate, or (estimate, (grad_x, grad_y)).

  `block_size="auto"` is the default call, `mmd2(x, y, kernel)` with no
  block_size argument.
  """
  if method == "naive":
    estimate = functools.partial(naive_mmd2, kernel=kernel)
  elif method == "dense":
    estimate = functools.partial(mmd.mmd2, kernel=kernel, block_size=None)
  elif block_size == "auto":
    estimate = functools.partial(mmd.mmd2, kernel=kernel)
  else:
    estimate = functools.partial(mmd.mmd2, kernel=kernel,
                                 block_size=block_size)
  if mode == "value":
    return estimate
  return jax.value_and_grad(estimate, argnums=(0, 1))


def make_inputs(n: int, h: int) -> tuple[jax.Array, jax.Array]:
  """Codes x ~ N(0, I) and prior samples y ~ N(0.1, I), n of each."""
  kx, ky = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (n, h), jnp.float32)
  y = jax.random.normal(ky, (n, h), jnp.float32) + 0.1
  return jax.block_until_ready((x, y))


def calls(n: int, args) -> list[tuple[str, Any]]:
  """(method, block_size) of every call of a cell that fits in memory."""
  out = []
  if n <= args.naive_max_n:
    out.append(("naive", None))
  if n <= args.dense_max_n:
    out.append(("dense", None))
  out.append(("blocked", "auto"))
  out.extend(("blocked", b) for b in args.block_sizes)
  return out


def label(method: str, block_size) -> str:
  if method != "blocked":
    return method
  return "default" if block_size == "auto" else f"block {block_size}"


# ----------------------------------------------------------------------------
# Timing.


def matmul_timed(size: int) -> _bench.Timed:
  a, b = make_inputs(size, size)
  matmul = functools.partial(jnp.dot, precision=jax.lax.Precision.HIGHEST)
  return _bench.Timed(jax.jit(matmul), (a, b))


def matmul_ceiling(sizes: Sequence[int], repeats: int) -> dict:
  """GFLOP/s of float32 square matmuls at the library's precision."""
  results = {}
  for size in sizes:
    t = _bench.time_interleaved({"mm": matmul_timed(size)}, repeats)["mm"]
    results[str(size)] = {"median_s": t.median_s, "runs_s": t.runs_s,
                          "gflops": 2.0 * size**3 / t.median_s / 1e9}
  return {"precision": "HIGHEST (as mmd2)", "by_size": results,
          "gflops": max(r["gflops"] for r in results.values())}


def vg_gflops(method: str, n: int, h: int, seconds: float) -> float:
  """Achieved GFLOP/s of a value+grad run under the pass-count model."""
  return VG_PASSES[method] * 2 * h * (2 * n)**2 / seconds / 1e9


def run_cell(kernel_name: str, n: int, h: int, args) -> tuple[list, dict]:
  """Every call of one (kernel, n, h) cell, both modes, interleaved with the
  ceiling matmul; returns the records and the cell's summary."""
  kernel = make_kernel(kernel_name, h)
  x, y = make_inputs(n, h)
  cell_calls = calls(n, args)
  records = {c: {"kernel": kernel_name, "n": n, "m": n, "h": h,
                 "method": c[0], "block_size": c[1],
                 "call": label(*c), "status": "ok"} for c in cell_calls}
  ceiling = {}
  modes = ("value_and_grad",) if args.vg_only else MODES
  for mode in modes:
    timed = {label(*c): _bench.Timed(jax.jit(objective(c[0], mode, kernel,
                                                       c[1])), (x, y))
             for c in cell_calls}
    if args.torch and mode == "value_and_grad":
      timed["torch"] = TorchTimed(kernel_name, x, y)
    timed["matmul"] = matmul_timed(args.ceiling_size)
    timings = _bench.time_interleaved(timed, args.repeats)
    mm = timings.pop("matmul")
    if "torch" in timings:
      torch_timing = timings.pop("torch")
      torch_record = {**dataclasses.asdict(torch_timing),
                      "value": timed["torch"].last_output[0],
                      "pairs_per_s": n * n / torch_timing.median_s}
    ceiling[mode] = 2.0 * args.ceiling_size**3 / mm.median_s / 1e9
    for c in cell_calls:
      t = timings[label(*c)]
      out = timed[label(*c)].last_output
      value = out[0] if isinstance(out, tuple) else out
      entry = {**dataclasses.asdict(t), "value": float(value),
               "pairs_per_s": n * n / t.median_s}
      if mode == "value_and_grad" and c[0] != "naive":
        entry["gflops"] = vg_gflops(c[0], n, h, t.median_s)
        entry["ceiling_fraction"] = entry["gflops"] / ceiling[mode]
      records[c][mode] = entry
  records = list(records.values())
  vg = {r["call"]: r["value_and_grad"] for r in records}
  explicit = {r["block_size"]: vg[r["call"]] for r in records
              if r["method"] == "blocked" and r["block_size"] != "auto"}
  best = min(explicit, key=lambda b: explicit[b]["median_s"])
  summary = {
      "kernel": kernel_name, "n": n, "h": h,
      "ceiling_gflops": ceiling["value_and_grad"],
      "default_block_size": _auto_block(n, h),
      "default_ms": 1e3 * vg["default"]["median_s"],
      "default_fraction": vg["default"]["ceiling_fraction"],
      "best_block_size": best,
      "best_ms": 1e3 * explicit[best]["median_s"],
      "best_fraction": explicit[best]["ceiling_fraction"],
      "default_over_best": vg["default"]["median_s"]
                           / explicit[best]["median_s"],
      "dense_ms": 1e3 * vg["dense"]["median_s"] if "dense" in vg else None,
      "naive_ms": 1e3 * vg["naive"]["median_s"] if "naive" in vg else None,
      "torch_ms": (1e3 * torch_record["median_s"] if args.torch else None),
      "torch_value": torch_record["value"] if args.torch else None,
      "default_speedup_over_torch": (
          torch_record["median_s"] / vg["default"]["median_s"]
          if args.torch else None),
      "explicit_ms": {str(b): 1e3 * e["median_s"]
                      for b, e in explicit.items()},
  }
  return records, summary


def _auto_block(n: int, h: int) -> int:
  """The block size `block_size="auto"` picks for this cell (for the
  report)."""
  return mmd._auto_block_size(2 * n, 2 * n, h, 4, True,  # pylint: disable=protected-access
                              jax.default_backend())


# ----------------------------------------------------------------------------
# Peak memory in fresh subprocesses.


def peak_rss_mib() -> float:
  """This process's peak resident set size so far, in MiB (VmHWM on Linux:
  `ru_maxrss` survives execve, so a child would report its parent's)."""
  try:
    with open("/proc/self/status") as status:
      for line in status:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 2**10  # kB
  except OSError:
    pass
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def device_peak_mib() -> Optional[float]:
  """The default device's peak allocation so far in MiB, where its backend
  reports one (GPUs, TPUs); None on CPU, where VmHWM is the measure."""
  if jax.default_backend() == "cpu":
    return None
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**20


def parse_single(spec: str) -> tuple[str, int, int, Any]:
  kernel_name, n, h, block = spec.split(":")
  block = {"auto": "auto", "none": None}.get(block, block)
  return kernel_name, int(n), int(h), (int(block) if isinstance(block, str)
                                       and block.isdigit() else block)


def run_single(spec: str) -> dict:
  """Child side: one value+grad run, timed once (no warm-up), with peak RSS."""
  kernel_name, n, h, block = parse_single(spec)
  x, y = make_inputs(n, h)
  rss_inputs = peak_rss_mib()
  method = "dense" if block is None else "blocked"
  fn = objective(method, "value_and_grad", make_kernel(kernel_name, h), block)
  timed = _bench.Timed(jax.jit(fn), (x, y))
  seconds = timed()
  return {"kernel": kernel_name, "n": n, "m": n, "h": h, "method": method,
          "block_size": block, "call": label(method, block),
          "compile_s": timed.compile_s, "seconds": seconds,
          "value": float(timed.last_output[0]),
          "peak_rss_after_inputs_mib": rss_inputs,
          "peak_rss_mib": peak_rss_mib(),
          "device_peak_mib": device_peak_mib(),
          "resolved_block_size": _auto_block(n, h) if block == "auto" else block}


SINGLE_PREFIX = "BENCH_MMD_SINGLE "


def run_in_subprocess(spec: str) -> dict:
  """Parent side: runs one `--single` cell in a fresh interpreter."""
  command = [sys.executable, "-m", "experiments.bench_mmd", "--single", spec]
  root = pathlib.Path(__file__).resolve().parent.parent
  # This process's allocator keeps its share of an accelerator's memory: the
  # child takes what it needs rather than a share of what is left.
  env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  proc = subprocess.run(command, cwd=root, capture_output=True, text=True,
                        env=env)
  for line in proc.stdout.splitlines():
    if line.startswith(SINGLE_PREFIX):
      return {**json.loads(line[len(SINGLE_PREFIX):]), "status": "ok"}
  return {"spec": spec, "status": "failed", "returncode": proc.returncode,
          "stderr_tail": proc.stderr[-2000:]}


# ----------------------------------------------------------------------------
# Reporting.


def targets(summaries: list[dict], large: list[dict]) -> list[dict]:
  out = []
  for s in summaries:
    if s["kernel"] != TARGET_KERNEL or s["h"] != TARGET_H:
      continue
    if s["n"] == 4096:
      out.append({"target": f"default / best explicit block, n={s['n']}",
                  "measured": s["default_over_best"],
                  "threshold": TARGET_DEFAULT_OVER_BEST,
                  "higher_is_better": False})
    if s["n"] == 4096 and s["default_speedup_over_torch"] is not None:
      out.append({"target": f"default speed-up over torch cdist, n={s['n']}",
                  "measured": s["default_speedup_over_torch"],
                  "threshold": TARGET_SPEEDUP_OVER_TORCH,
                  "higher_is_better": True})
    if s["n"] in TARGET_FRACTION:
      out.append({"target": f"default v+g share of ceiling, n={s['n']}",
                  "measured": s["default_fraction"],
                  "threshold": TARGET_FRACTION[s["n"]],
                  "higher_is_better": True})
  for run in large:
    if (run.get("status") == "ok" and run["block_size"] == "auto"
        and run["n"] in TARGET_PEAK_MIB):
      on_device = run.get("device_peak_mib") is not None
      out.append({"target": f"default v+g peak "
                            f"{'device memory' if on_device else 'RSS'} MiB, "
                            f"n={run['n']}",
                  "measured": run["device_peak_mib" if on_device
                                  else "peak_rss_mib"],
                  "threshold": TARGET_PEAK_MIB[run["n"]],
                  "higher_is_better": False})
  for t in out:
    m = t["measured"]
    t["met"] = m >= t["threshold"] if t["higher_is_better"] else (
        m <= t["threshold"])
  return out


def report(result: dict) -> None:
  rows = []
  for r in result["sweep"]:
    vg = r["value_and_grad"]
    v = r.get("value", {"median_s": None, "compile_s": float("nan")})
    rows.append([r["kernel"], r["h"], r["n"], r["call"],
                 _bench.fmt(v["median_s"] and 1e3 * v["median_s"], ".1f"),
                 _bench.fmt(1e3 * vg["median_s"], ".1f"),
                 _bench.fmt(vg.get("gflops"), ".1f"),
                 _bench.fmt(vg.get("ceiling_fraction"), ".0%"),
                 f"{v['compile_s']:.1f}/{vg['compile_s']:.1f}"])
  _bench.print_table(
      "mmd2, medians of interleaved rounds; v+g = value_and_grad wrt x and y",
      ["kernel", "h", "n=m", "call", "value ms", "v+g ms", "v+g GFLOP/s",
       "of ceiling", "compile s"], rows)
  _bench.print_table(
      "per cell: the default call against the best explicit block size "
      "(value+grad, same rounds, ceiling timed in those rounds)",
      ["kernel", "h", "n=m", "ceiling GFLOP/s", "default (block)",
       "default ms", "of ceiling", "best block", "best ms", "of ceiling",
       "default/best", "dense ms", "naive ms", "torch ms", "torch/default"],
      [[s["kernel"], s["h"], s["n"], _bench.fmt(s["ceiling_gflops"], ".0f"),
        s["default_block_size"], _bench.fmt(s["default_ms"], ".1f"),
        _bench.fmt(s["default_fraction"], ".0%"), s["best_block_size"],
        _bench.fmt(s["best_ms"], ".1f"), _bench.fmt(s["best_fraction"], ".0%"),
        _bench.fmt(s["default_over_best"], ".2f"),
        _bench.fmt(s["dense_ms"], ".1f"), _bench.fmt(s["naive_ms"], ".1f"),
        _bench.fmt(s["torch_ms"], ".1f"),
        _bench.fmt(s["default_speedup_over_torch"], ".1f")]
       for s in result["cells"]])
  if result["large"]:
    _bench.print_table(
        "value+grad in fresh subprocesses (1 run, no warm-up)",
        ["kernel", "h", "n=m", "call", "seconds", "compile s",
         "peak RSS MiB", "RSS after inputs MiB", "device peak MiB"],
        [[r.get("kernel"), r.get("h"), r.get("n"), r.get("call"),
          _bench.fmt(r.get("seconds")), _bench.fmt(r.get("compile_s")),
          _bench.fmt(r.get("peak_rss_mib"), ".0f"),
          _bench.fmt(r.get("peak_rss_after_inputs_mib"), ".0f"),
          _bench.fmt(r.get("device_peak_mib"), ".0f")]
         if r["status"] == "ok"
         else [r["spec"], "FAILED", f"rc {r['returncode']}", *["-"] * 6]
         for r in result["large"]])
    for r in result["large"]:
      if r["status"] != "ok":
        print(f"\n{r['spec']} failed (rc {r['returncode']}):\n"
              f"{r['stderr_tail']}")
  if result["targets"]:
    _bench.print_table(
        "targets", ["target", "measured", "threshold", "met"],
        [[t["target"], _bench.fmt(t["measured"]), t["threshold"],
          "yes" if t["met"] else "NO"] for t in result["targets"]])
  print(f"\nload average (1, 5, 15 min): start "
        f"{result['meta']['load_average_at_start']}, end "
        f"{result['meta']['load_average_at_end']}")


# ----------------------------------------------------------------------------
# Entry point.


def str_list(text: str) -> tuple[str, ...]:
  names = tuple(text.split(","))
  unknown = set(names) - set(KERNEL_NAMES)
  if unknown:
    raise argparse.ArgumentTypeError(f"unknown kernels {sorted(unknown)}")
  return names


def large_run_list(text: str) -> tuple[str, ...]:
  specs = tuple(text.split(","))
  for spec in specs:
    try:
      kernel_name, *_ = parse_single(spec)
    except ValueError as error:
      raise argparse.ArgumentTypeError(
          f"expected KERNEL:N:H:BLOCK, got {spec!r}") from error
    str_list(kernel_name)
  return specs


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: n in {256, 1024}, h=8, 2 repeats, "
                           "no large-memory runs")
  parser.add_argument("--sizes", type=_bench.int_list,
                      help="n = m values (default 1024,4096,16384)")
  parser.add_argument("--dims", type=_bench.int_list,
                      help="h values (default 8,64)")
  parser.add_argument("--kernels", type=str_list,
                      help=f"subset of {','.join(KERNEL_NAMES)}")
  parser.add_argument("--repeats", type=int, help="timed rounds (default 5)")
  parser.add_argument("--block-sizes", type=_bench.int_list,
                      help="explicit block sizes compared with the default "
                           "call (default 64,128,256,512)")
  parser.add_argument("--ceiling-size", type=int, default=CEILING_SIZE,
                      help="the square matmul timed in every cell's rounds")
  parser.add_argument("--vg-only", action="store_true",
                      help="time value+grad only (skip the value-only calls)")
  parser.add_argument("--naive-max-n", type=int, default=NAIVE_MAX_N)
  parser.add_argument("--dense-max-n", type=int, default=DENSE_MAX_N)
  parser.add_argument("--torch", action="store_true",
                      help="also time torch's cdist formulation (value+grad, "
                           "coulomb and sliced_coulomb; needs torch)")
  parser.add_argument("--no-large", action="store_true",
                      help="skip the fresh-subprocess peak-memory runs")
  parser.add_argument("--large-runs", type=large_run_list,
                      default=LARGE_RUNS, metavar="KERNEL:N:H:BLOCK,...",
                      help="the peak-memory runs (BLOCK: an int, auto or "
                           "none; default " + ",".join(LARGE_RUNS) + ")")
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path("runs/bench_mmd.json"),
                      help="JSON results (default runs/bench_mmd.json)")
  parser.add_argument("--single", metavar="KERNEL:N:H:BLOCK",
                      help="internal: one value+grad run, prints peak RSS")
  args = parser.parse_args(argv)
  defaults = QUICK if args.quick else FULL
  for name, value in defaults.items():
    if getattr(args, name, None) is None:
      setattr(args, name, value)
  args.no_large = args.no_large or args.quick
  if args.torch and not torch_available():
    parser.error("--torch needs PyTorch: pip install torch")
  if args.torch and set(args.kernels) - {"coulomb", "sliced_coulomb"}:
    parser.error("--torch times the Coulomb kernels only: pass "
                 "--kernels coulomb,sliced_coulomb")
  return args


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_args(argv)
  if args.single:
    print(SINGLE_PREFIX + json.dumps(run_single(args.single)))
    return
  meta = _bench.metadata("experiments.bench_mmd")
  records, summaries = [], []
  for k in args.kernels:
    for h in args.dims:
      for n in args.sizes:
        cell_records, summary = run_cell(k, n, h, args)
        records += cell_records
        summaries.append(summary)
  if args.torch:
    release_torch_memory()
  large = [] if args.no_large else [
      run_in_subprocess(spec) for spec in args.large_runs]
  meta["load_average_at_end"] = os.getloadavg()
  result = {
      "meta": meta,
      "settings": {"sizes": args.sizes, "dims": args.dims,
                   "kernels": args.kernels, "repeats": args.repeats,
                   "block_sizes": args.block_sizes,
                   "ceiling_size": args.ceiling_size,
                   "vg_only": args.vg_only, "torch": args.torch,
                   "naive_max_n": args.naive_max_n,
                   "dense_max_n": args.dense_max_n},
      "definitions": {
          "time": "median wall seconds of `repeats` interleaved rounds of the "
                  "AOT-compiled jitted calls after one warm-up each, with "
                  "block_until_ready",
          "default": "mmd2(x, y, kernel), block_size='auto'",
          "gflops": "passes * 2h * (n+m)^2 / seconds; passes = "
                    f"{VG_PASSES} (value_and_grad)",
          "ceiling_fraction": "gflops / the GFLOP/s of a ceiling_size^3 "
                              "float32 HIGHEST matmul timed in the same "
                              "rounds",
      },
      "sweep": records,
      "cells": summaries,
      "large": large,
  }
  result["targets"] = targets(summaries, large)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2))
  report(result)
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
