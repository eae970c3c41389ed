"""Timing, tables and metadata shared by the benchmark scripts."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import random
import shlex
import statistics
import sys
import time
from typing import Any, Optional, Sequence

import jax


@dataclasses.dataclass
class Timing:
  compile_s: float
  median_s: float
  runs_s: list[float]


class Timed:
  """An AOT-compiled function and its arguments, timed call by call.

  With `threaded`, the function returns `(new_first_argument, ...)` and the
  first argument is replaced by it after every call (a train state, which the
  step donates). `last_output` holds the latest call's output.
  """

  def __init__(self, jitted, args: tuple, *, threaded: bool = False):
    start = time.perf_counter()
    self.compiled = jitted.lower(*args).compile()
    self.compile_s = time.perf_counter() - start
    self.args, self.threaded = args, threaded
    self.last_output = None

  def __call__(self) -> float:
    """Runs once to completion; returns the wall time in seconds."""
    start = time.perf_counter()
    out = jax.block_until_ready(self.compiled(*self.args))
    elapsed = time.perf_counter() - start
    if self.threaded:
      self.args = (out[0], *self.args[1:])
    self.last_output = out
    return elapsed


def time_interleaved(functions: dict[str, Timed], repeats: int, *,
                     warmup: bool = True) -> dict[str, Timing]:
  """One warm-up call each, then `repeats` rounds calling each in turn.

  Calling the functions in turn, rather than one after the other, spreads
  any change in machine load over all of them, so their ratios stay fair.
  Each round calls them in its own (seeded) random order, and each twice in a
  row, timing the second call: the first call after one that allocates and
  frees gigabytes (the dense Gram matrices) ran 30-50 % slower than the same
  program elsewhere (n = 4096, h = 64 MMD, BUILD_NOTES section 1), so no
  timed call may pay for its predecessor.
  """
  if warmup:
    for fn in functions.values():
      fn()
  runs = {name: [] for name in functions}
  for round_index in range(repeats):
    for name in random.Random(round_index).sample(list(functions),
                                                  len(functions)):
      functions[name]()
      runs[name].append(functions[name]())
  return {name: Timing(fn.compile_s, statistics.median(runs[name]),
                       runs[name])
          for name, fn in functions.items()}


def print_table(title: str, headers: Sequence[str],
                rows: Sequence[Sequence[Any]]) -> None:
  """Prints a left-aligned text table."""
  cells = [[str(c) for c in row] for row in [headers, *rows]]
  widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
  line = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths))
  print(f"\n{title}")
  print(line(cells[0]))
  print("  ".join("-" * w for w in widths))
  for row in cells[1:]:
    print(line(row))


def fmt(value: Optional[float], spec: str = ".3g", suffix: str = "") -> str:
  return "-" if value is None else f"{value:{spec}}{suffix}"


def int_list(text: str) -> tuple[int, ...]:
  return tuple(int(v) for v in text.split(","))


def metadata(module: str) -> dict:
  """The machine, software and command of a benchmark run."""
  device = jax.devices()[0]
  return {
      "jax_version": jax.__version__,
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
      "device_count": jax.device_count(),
      "cpu_count": os.cpu_count(),
      "platform": platform.platform(),
      "python": platform.python_version(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "command": shlex.join([sys.executable, "-m", module, *sys.argv[1:]]),
      "xla_flags": os.environ.get("XLA_FLAGS"),
      "load_average_at_start": os.getloadavg(),
  }
