"""KDE evaluation: exact log-density, bandwidth selection, protocol, modes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp

from couae_jax import data, evaluation


def _reference_kde(queries, samples, bandwidth):
  q = np.asarray(queries, np.float64)
  s = np.asarray(samples, np.float64)
  sq = ((q[:, None, :] - s[None, :, :]) ** 2).sum(-1)
  d = q.shape[1]
  return (logsumexp(-0.5 * sq / bandwidth**2, axis=1) - np.log(len(s))
          - 0.5 * d * np.log(2 * np.pi * bandwidth**2))


@pytest.mark.parametrize("bandwidth", [1e-3, 0.1, 2.0, 30.0])
def test_kde_log_density_matches_float64(bandwidth):
  rng = np.random.default_rng(0)
  queries = rng.normal(size=(37, 2)).astype(np.float32)
  samples = (rng.normal(size=(301, 2)) * 3).astype(np.float32)
  got = np.asarray(evaluation.kde_log_density(queries, samples, bandwidth,
                                              block_size=8))
  want = _reference_kde(queries, samples, bandwidth)
  # Relative to the log-density's magnitude (up to ~1e5 at bandwidth 1e-3).
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5)


def test_kde_rejects_bad_input():
  x = np.zeros((4, 2), np.float32)
  with pytest.raises(ValueError, match="bandwidth"):
    evaluation.kde_log_density(x, x, 0.0)
  with pytest.raises(ValueError, match="same last dimension"):
    evaluation.kde_log_density(x, np.zeros((4, 3), np.float32), 1.0)
  with pytest.raises(TypeError, match="queries"):
    evaluation.kde_log_density(np.zeros((4, 2), np.int32), x, 1.0)


def test_bandwidth_selection_prefers_the_true_scale():
  rng = np.random.default_rng(1)
  samples = rng.normal(size=(2000, 1)).astype(np.float32)
  best, scores = evaluation.select_bandwidth(samples, [0.01, 0.3, 10.0])
  assert best == 0.3 and scores[0.3] > max(scores[0.01], scores[10.0])


def test_protocol_on_true_grid_samples_approaches_the_exact_likelihood():
  test = data.sample_grid(7, 4000)[0]
  generate = lambda n, seed: data.sample_grid(1000 + seed, n)[0]
  result = evaluation.held_out_log_likelihood(
      generate, test, selection_samples=2000, fit_samples=8000, batches=4)
  exact = data.grid_log_density(test).mean()
  # The modes' std is 0.32; with 2000 selection points CV picks 0.1 or 0.32.
  assert result["bandwidth"] in (pytest.approx(0.1), pytest.approx(10**-0.5))
  assert exact - 0.3 < result["mean"] < exact + 0.05
  assert len(result["batch_means"]) == 4


def test_mode_coverage_counts_modes_and_off_mode_mass():
  mixture = data.grid_mixture()
  points, _ = data.sample_grid(3, 2500)
  between = np.full((500, 2), 5.25, np.float32)  # half-way between modes
  result = evaluation.mode_coverage(np.concatenate([points, between]),
                                    mixture.means, np.sqrt(0.1))
  assert result["modes_covered"] == 25
  assert result["off_mode_fraction"] == pytest.approx(500 / 3000, abs=0.01)
  collapsed = np.tile(mixture.means[7], (100, 1))
  one_mode = evaluation.mode_coverage(collapsed, mixture.means, np.sqrt(0.1))
  assert one_mode["modes_covered"] == 1 and one_mode["counts"][7] == 100
  assert one_mode["off_mode_fraction"] == 0.0
