"""The generic trainer: any model (couae, wae, vae) on any supported data.

Command:
  python -m experiments.train --workdir DIR [--config.FIELD=VALUE ...]

e.g. `python -m experiments.train --workdir runs/grid --config.model=wae
--config.lam=10`. Fields and defaults: `couae_jax.config.TrainConfig` (the
default is CouAE on the Grid data, h = 3, 2000 full-batch steps: about a
minute on a 2-core CPU; expect a falling `rec` and a `reg` near 0). Running it
again on the same workdir resumes from the latest checkpoint; checkpoints are
in DIR/checkpoints, metrics in DIR/metrics.jsonl, figures in DIR/figures.
For several hosts, add `--config.distributed=true` (or set
COUAE_DISTRIBUTED=1) and start one process per host.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from couae_jax import config as config_lib
from couae_jax import loop


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      epilog="Config overrides: --config.FIELD=VALUE (fields: "
      + ", ".join(f.name for f in dataclasses.fields(config_lib.TrainConfig)) + ").")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--no-progress", action="store_true",
                      help="no progress bar (logs still go to metrics.jsonl)")
  args, overrides = parser.parse_known_args(argv)
  try:
    config = config_lib.parse_overrides(config_lib.TrainConfig(), overrides)
  except ValueError as error:
    parser.error(str(error))
  trained = loop.fit(config, args.workdir, progress=not args.no_progress)
  print(f"trained {config.model} to step {trained.step}; checkpoints in "
        f"{args.workdir}/checkpoints", file=sys.stderr)


if __name__ == "__main__":
  main()
