"""The last step of every experiment: write DIR/results.json, print the table."""

from __future__ import annotations

import json
import os
import time
from typing import Callable


def finish(workdir: str, results: dict, start: float,
           print_table: Callable[[dict], None], *, note: str = "") -> None:
  """Records the wall time since `start` (a `time.perf_counter()` value) in
  `results`, writes it to `workdir/results.json` and prints the table."""
  results["wall_seconds"] = time.perf_counter() - start
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print_table(results)
  print(f"\n{results['wall_seconds']:.0f} s; results in "
        f"{workdir}/results.json{note}")
