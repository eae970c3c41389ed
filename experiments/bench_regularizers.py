"""Speed of the regularisers as a training step calls them: value and gradient.

Command:
  python -m experiments.bench_regularizers [--batches 256,1024] [--dims 8,64]
      [--repeats 7] [--out runs/bench_regularizers.json]

For each batch size B and latent size h: `jax.value_and_grad` of
`losses.coulomb_regularizer` (the default sliced Coulomb kernel, and
`kernel="coulomb"`, the paper's), of `losses.wae_regularizer` (multi-scale
IMQ, 7 scales) and of the Monte-Carlo sliced construction of
`experiments.latent_match` (16 random 3-D slices), w.r.t. `[B, h]` codes
against B given N(0, I) samples, jitted, dense (`block_size=None`),
streamed (`block_size=128`) and by default (`block_size="auto"`). The calls
are timed in turn, round after round (`_bench.time_interleaved`), so that
their ratios share the machine's load; each row gives the median over
`--repeats` rounds and its ratio to WAE's median in the same mode (the
Monte-Carlo construction is timed after the others, on its own: a call that
followed it in a round was slowed by it). The float32 matmul ceiling is
measured in the same
run. Writes the JSON to `--out`.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib

import jax

from couae_jax import losses
from experiments import _bench, bench_mmd, latent_match

REGULARIZERS = {
    "sliced_coulomb": losses.coulomb_regularizer,
    "coulomb": functools.partial(losses.coulomb_regularizer, kernel="coulomb"),
    "wae": losses.wae_regularizer,
}
#: Dense, an explicit block, and the default (`block_size="auto"`).
BLOCK_SIZES = (None, 128, "auto")


def value_and_grad(regularizer, block_size):
  def penalty(codes, prior_samples):
    return regularizer(codes, prior_samples, block_size=block_size)
  return jax.jit(jax.value_and_grad(penalty))


def mc_slices_value_and_grad():
  def penalty(codes, key):
    return latent_match.mc_slices_regularizer(codes, key=key)
  return jax.jit(jax.value_and_grad(penalty))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", type=_bench.int_list, default=(256, 1024))
  parser.add_argument("--dims", type=_bench.int_list, default=(8, 64))
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path("runs/bench_regularizers.json"))
  args = parser.parse_args(argv)
  result = {"meta": _bench.metadata("experiments.bench_regularizers"),
            "ceiling": bench_mmd.matmul_ceiling((2048,), args.repeats),
            "rows": []}
  for batch in args.batches:
    for h in args.dims:
      codes, prior = bench_mmd.make_inputs(batch, h)
      timed = {}
      for block_size in BLOCK_SIZES:
        for name, regularizer in REGULARIZERS.items():
          timed[(name, block_size)] = _bench.Timed(
              value_and_grad(regularizer, block_size), (codes, prior))
      timings = _bench.time_interleaved(
          {f"{n}/{b}": t for (n, b), t in timed.items()}, args.repeats)
      # Timed on its own after the others: any call that followed this 50x
      # longer one in a round ran 2-4 ms slower (seen on dev-cpu).
      timings["mc_slices/None"] = _bench.time_interleaved(
          {"mc_slices": _bench.Timed(mc_slices_value_and_grad(),
                                     (codes, jax.random.key(0)))},
          args.repeats)["mc_slices"]
      for name, block_size in (*timed, ("mc_slices", None)):
        timing = timings[f"{name}/{block_size}"]
        wae = timings[f"wae/{block_size}"]
        result["rows"].append({
            "regularizer": name, "batch": batch, "h": h,
            "block_size": block_size, "median_ms": 1e3 * timing.median_s,
            "runs_ms": [1e3 * t for t in timing.runs_s],
            "compile_s": timing.compile_s,
            "ratio_to_wae": timing.median_s / wae.median_s})
  _bench.print_table(
      f"value+grad, median of {args.repeats} interleaved rounds "
      f"(matmul ceiling {result['ceiling']['gflops']:.0f} GFLOP/s)",
      ["B", "h", "block", "regulariser", "ms", "x WAE"],
      [[r["batch"], r["h"], r["block_size"] or "dense", r["regularizer"],
        _bench.fmt(r["median_ms"], ".2f"), _bench.fmt(r["ratio_to_wae"], ".2f")]
       for r in result["rows"]])
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(result, indent=2))
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
