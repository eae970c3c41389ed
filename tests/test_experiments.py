"""Smoke runs of every experiment module on tiny settings."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from couae_jax import mmd
from couae_jax import objective as objective_lib
from experiments import (
  bench_mmd,
  bench_regularizers,
  bench_train,
  bound_table,
  divergence_table,
  grid,
  kernel_variance,
  latent_match,
  width_ablation,
)

pytestmark = pytest.mark.standard_promotion  # optax/flax promote


def test_grid_writes_the_results_contract(tmp_path, capsys):
  grid.main(["--workdir", str(tmp_path), "--seeds", "0", "--steps", "20",
             "--test-points", "400", "--protocol", "300,800,2",
             "--config.hidden=16,16"])
  results = json.loads((tmp_path / "results.json").read_text())
  assert {"oracle_ll", "protocol_ceiling_ll"} <= set(results)
  assert results["oracle_ll"] > results["protocol_ceiling_ll"] - 0.5
  for model in ("couae", "wae", "vae"):
    r = results[model]
    assert {"test_ll_mean", "test_ll_std", "seeds", "steps", "modes_covered",
            "runs"} <= set(r)
    assert r["seeds"] == [0] and r["steps"] == 20
    run = r["runs"][0]
    assert run["seed"] == 0 and run["workdir"] == f"{model}/seed0"
    assert run["xi"] > 0 and ("bound_deviation" in run) == (model != "vae")
    assert (tmp_path / run["workdir"] / "checkpoints").is_dir()
  assert "true mixture (exact)" in capsys.readouterr().out


def test_width_ablation_writes_the_results_contract(tmp_path):
  width_ablation.main([
      "--workdir", str(tmp_path), "--seeds", "0,1", "--steps", "10",
      "--widths", "0.25,2", "--test-points", "400", "--protocol", "300,800,2",
      "--config.hidden=8,8"])
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["widths"] == ["0.25", "2"]
  for key in ("0.25", "2"):
    r = results[key]
    assert {"test_ll_mean", "test_ll_std", "xi", "seeds"} <= set(r)
    assert r["seeds"] == [0, 1] and r["xi"] > 0
    assert r["config"]["width"] == float(key)
    assert [run["workdir"] for run in r["runs"]] == [
        f"width_{key}/seed0", f"width_{key}/seed1"]
    assert all(run["bound_deviation"] > 0 for run in r["runs"])
  assert (tmp_path / "width_ablation.png").stat().st_size > 0


def test_grid_rejects_bad_overrides_before_training(tmp_path):
  with pytest.raises(ValueError, match="lam=-1.0"):
    grid.main(["--workdir", str(tmp_path), "--config.lam=-1"])
  assert not (tmp_path / "couae").exists()


@pytest.mark.parametrize("model", ["couae", "wae"])
def test_grid_bound_kernel_is_the_trained_kernel(model):
  """The kernel behind the Grid's bound is the regulariser's, prior scale too."""
  config = grid.model_config(model, seed=0, steps=1, overrides=[
      "--config.prior=uniform", "--config.prior_scale=2",
      "--config.stochastic_encoder=false"])
  codes = jax.random.normal(jax.random.key(0), (config.batch_size,
                                                config.latent_dim))
  key = jax.random.key(1)
  _, penalty = objective_lib.make_objective(config).regularize(codes, key, None)
  prior_samples = objective_lib.make_objective(config).prior(key, codes.shape)
  expected = mmd.mmd2(codes, prior_samples,
                      objective_lib.make_objective(config).kernel)
  np.testing.assert_allclose(penalty, expected, rtol=1e-5)
  unscaled = objective_lib.make_objective(grid.model_config(model, 0, 1, [
      "--config.prior=uniform"])).kernel
  assert not np.isclose(
      mmd.mmd2(codes, prior_samples, unscaled), expected, rtol=1e-3)


def test_bench_mmd_smoke(tmp_path, capsys):
  """Every method runs; a peak-memory child that fails (here block_size=0)
  is a row of the table with its error, and the results are written all the
  same."""
  out = tmp_path / "bench.json"
  bench_mmd.main(["--sizes", "64", "--dims", "8", "--kernels", "coulomb",
                  "--repeats", "1",
                  "--large-runs", "coulomb:64:8:auto,coulomb:64:8:0",
                  "--out", str(out)])
  result = json.loads(out.read_text())
  methods = {r["method"] for r in result["sweep"] if r["status"] == "ok"}
  assert methods == {"naive", "dense", "blocked"}
  ok, failed = result["large"]
  assert ok["status"] == "ok" and ok["resolved_block_size"] == 128
  assert ok["peak_rss_mib"] > 0 and ok["device_peak_mib"] is None
  assert failed["status"] == "failed" and "block_size" in failed["stderr_tail"]
  assert "coulomb:64:8:0 failed" in capsys.readouterr().out


def test_bench_train_smoke(tmp_path):
  out = tmp_path / "bench.json"
  bench_train.main(["--batches", "8", "--devices", "1", "--repeats", "1",
                    "--conv-width", "1/64", "--out", str(out)])
  assert json.loads(out.read_text())["records"]


def test_kernel_variance_smoke(tmp_path):
  out = tmp_path / "kv.json"
  kernel_variance.main(["--dims", "3", "--eps", "0.01", "--n", "16",
                        "--draws", "4", "--out", str(out)])
  assert len(json.loads(out.read_text())["rows"]) == 1


def test_bound_table_smoke(tmp_path, capsys):
  out = tmp_path / "bounds.json"
  bound_table.main(["--n", "500", "--eps", "1e-2", "--xi", "1", "--lam", "10",
                    "--out", str(out)])
  paper, sliced = json.loads(out.read_text())["rows"]
  assert (paper["kernel"], paper["h"]) == ("coulomb", 3)
  assert (sliced["kernel"], sliced["h"]) == ("sliced_coulomb", 64)
  for row in (paper, sliced):
    assert row["K"] == 100.0 and row["total"] > 1 and row["n_for_total_1"] > 500
  assert "t + lam s" in capsys.readouterr().out


def test_kernel_variance_runs_both_coulomb_kernels(tmp_path):
  out = tmp_path / "kv.json"
  kernel_variance.main(["--dims", "3", "8", "--eps", "0.01", "--n", "16",
                        "--draws", "4", "--out", str(out)])
  rows = json.loads(out.read_text())["rows"]
  # The sliced kernel is the paper's at h = 3, so it runs at h = 8 only.
  assert [(r["kernel"], r["h"]) for r in rows] == [
      ("coulomb", 3), ("coulomb", 8), ("sliced_coulomb", 8)]


def test_divergence_table_smoke(tmp_path, capsys):
  out = tmp_path / "divergence.json"
  divergence_table.main(["--dims", "3,8", "--points", "32", "--null-draws",
                         "4", "--out", str(out)])
  rows = json.loads(out.read_text())["rows"]
  assert [(r["kernel"], r["h"]) for r in rows] == [
      ("sliced_coulomb", 3), ("sliced_coulomb", 8), ("coulomb", 3),
      ("coulomb", 8)]
  assert set(rows[0]["wrong"]) == set(divergence_table.wrong_codes(
      jax.random.key(0), 3, 4))
  assert "collapsed_on_mean" in capsys.readouterr().out


def test_latent_match_writes_the_results_contract(tmp_path):
  latent_match.main(["--workdir", str(tmp_path), "--dims", "3", "--seeds",
                     "0", "--steps", "4", "--regularizers",
                     "sliced_coulomb,mc_slices,wae"])
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["steps"] == 4 and results["lam"] == 10.0
  assert set(results["settings"]["flax_example"]["3"]) == {
      "sliced_coulomb", "mc_slices", "wae"}
  # The Monte-Carlo construction is not a trainer regulariser.
  assert set(results["settings"]["trainer_mlp"]["3"]) == {
      "sliced_coulomb", "wae"}
  row = results["settings"]["trainer_mlp"]["3"]["sliced_coulomb"]
  assert {"std_min", "std_max", "energy", "norm", "rec", "collapsed",
          "escaped", "seeds"} <= set(row)
  assert len(row["seeds"]) == 1 and row["rec"] > 0


def test_latent_match_rejects_unknown_regularizers(tmp_path):
  with pytest.raises(SystemExit):
    latent_match.main(["--workdir", str(tmp_path), "--regularizers", "kl"])


def test_bench_regularizers_smoke(tmp_path):
  out = tmp_path / "bench.json"
  bench_regularizers.main(["--batches", "16", "--dims", "4", "--repeats", "1",
                           "--out", str(out)])
  rows = json.loads(out.read_text())["rows"]
  assert {(r["regularizer"], r["block_size"]) for r in rows} == {
      (name, block) for name in ("sliced_coulomb", "coulomb", "wae")
      for block in bench_regularizers.BLOCK_SIZES} | {("mc_slices", None)}
  assert all(r["median_ms"] > 0 for r in rows)
