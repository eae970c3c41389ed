"""Smoke test of experiments/local_minima.py on a tiny configuration."""

from __future__ import annotations

import json

import pytest

from couae_jax import kernels
from experiments import local_minima

pytestmark = pytest.mark.standard_promotion  # optax/flax promote


def test_local_minima_writes_the_results_contract(tmp_path, capsys):
  local_minima.main(["--workdir", str(tmp_path), "--n", "6", "--reps", "1",
                     "--steps", "20", "--kernels", "coulomb",
                     "--plot", "coulomb"])
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["kernels"] == ["coulomb"]
  for name in results["kernels"]:
    r = results[name]
    assert 0.0 <= r["global_fraction"] <= 1.0
    runs = r["runs"]
    kinds = len(local_minima.INIT_KINDS)
    assert len(runs) == kinds * len(local_minima.OPTIMIZERS)
    assert {"init", "optimizer", "final_mmd", "reached_global", "gap",
            "empty", "free", "shared"} <= set(runs[0])
    assert {run["init"] for run in runs} == set(local_minima.INIT_KINDS)
    assert r["global_fraction"] == pytest.approx(
        sum(run["reached_global"] for run in runs) / len(runs))
  assert (tmp_path / "trajectories.png").stat().st_size > 0
  assert "global" in capsys.readouterr().out


def test_parse_kernel_names():
  spec = local_minima.parse_kernel("coulomb_h5_eps1e-4")
  assert spec.h == 5 and spec.kernel.keywords == {"eps": 1e-4}
  assert local_minima.parse_kernel("imq_2.0").kernel.keywords == {"scale": 2.0}
  sliced = local_minima.parse_kernel("sliced_h8")
  assert sliced.h == 8 and sliced.kernel.func is kernels.sliced_coulomb
  with pytest.raises(ValueError, match="unknown kernel"):
    local_minima.parse_kernel("laplace_1.0")


def test_n_must_exceed_h(tmp_path):
  with pytest.raises(SystemExit):
    local_minima.main(["--workdir", str(tmp_path), "--n", "3",
                       "--kernels", "coulomb"])
