"""The sliced Coulomb kernel: a divergence at every latent size (issue #10).

The properties a Coulomb regulariser needs at the latent sizes images use,
checked at those sizes: h up to 256, n = m = 512, float32, the defaults of
`losses.coulomb_regularizer`. References are float64 NumPy.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_rotation, sliced_coulomb_profile, sq_dists

from couae_jax import config as config_lib
from couae_jax import kernels, losses, mmd, testing
from experiments import divergence_table

PROPERTY_HS = (3, 4, 8, 16, 32, 64, 128, 256)
#: Each wrong configuration must score this many null standard deviations
#: above an independent sample of the prior.
SEPARATION = 10.0


@pytest.mark.parametrize("h", PROPERTY_HS)
def test_wrong_codes_score_far_above_a_prior_sample(h):
  """Collapsed codes, codes on a subspace, and rescaled prior samples, at
  n = m = 512 with the defaults (`experiments.divergence_table` prints it)."""
  result = divergence_table.separations(h)
  assert result["null_std"] > 0
  for name, row in result["wrong"].items():
    assert row["separation"] >= SEPARATION, (name, h, row, result["null_std"])
    assert row["grad_finite"] and row["grad_max_abs"] > 0, (name, h, row)


@pytest.mark.parametrize("h", (16, 64))
def test_the_papers_kernel_lets_collapse_win_there(h):
  """Why `coulomb` warns above h = 4: collapse onto the mean scores below an
  independent prior sample, and the V-statistic goes negative."""
  kernel = losses.coulomb_kernel(h, kernel="coulomb")
  codes = divergence_table.wrong_codes(jax.random.key(0), h)["collapsed_on_mean"]
  prior = jax.random.normal(jax.random.key(1), (divergence_table.POINTS, h))
  assert float(mmd.mmd2(codes, prior, kernel)) < 0
  assert float(mmd.mmd2_biased(codes, prior, kernel)) < 0
  sliced = losses.coulomb_kernel(h)
  assert float(mmd.mmd2_biased(codes, prior, sliced)) > 0


@pytest.mark.parametrize("h", (8, 64, 256))
@pytest.mark.parametrize("layout", ("spread", "clustered"))
def test_gram_matrices_are_positive_semidefinite(np_rng, h, layout):
  """Float64 Gram matrices of the kernel's closed form, on spread points and
  on tight clusters (where a kernel that is not positive definite shows
  it first)."""
  if layout == "spread":
    points = np_rng.normal(size=(300, h))
  else:
    centres = np_rng.normal(size=(10, h))
    points = (centres[:, None, :]
              + 0.05 * np_rng.normal(size=(10, 30, h))).reshape(300, h)
  gram = sliced_coulomb_profile(sq_dists(points, points), h=h,
                                eps=kernels.DEFAULT_EPS)
  smallest = np.linalg.eigvalsh(gram)[0]
  assert smallest > -1e-9 * np.abs(gram).max(), smallest


def test_the_papers_kernel_has_a_negative_eigenvalue_above_h_4(np_rng):
  """The same check on `coulomb` at h = 16 fails: it is not positive
  definite there."""
  h = 16
  points = np.concatenate([np.zeros((1, h)), np_rng.normal(size=(299, h))])
  # The library's own kernel on the float64 points, as the reference check.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", kernels.NotPositiveDefiniteWarning)
    gram = np.asarray(kernels.coulomb(points[:, None, :], points[None, :, :]),
                      np.float64)
  assert np.linalg.eigvalsh(gram)[0] < -1.0


@pytest.mark.parametrize("h", (4, 8, 64))
def test_slice_average_of_3d_coulomb_is_the_riesz_kernel(h):
  """`E_P 1/‖P w‖ = c_h / ‖w‖` over uniformly random 3-D slices P, the
  identity `sliced_coulomb` rests on (Monte Carlo, float64)."""
  rng = np.random.default_rng(h)
  w = rng.normal(size=h)
  frames = np.linalg.qr(rng.normal(size=(200_000, h, 3)))[0]  # [S, h, 3]
  average = np.mean(1.0 / np.linalg.norm(np.einsum("shk,h->sk", frames, w),
                                         axis=-1))
  c_h = math.exp(math.lgamma(h / 2) - math.lgamma((h - 1) / 2)
                 - math.lgamma(1.5))
  np.testing.assert_allclose(average * np.linalg.norm(w), c_h, rtol=0.02)


def test_at_h_3_it_is_the_papers_kernel_bit_for_bit():
  """So the Grid (h = 3) trains exactly as before with the new default."""
  x = jax.random.normal(jax.random.key(0), (64, 3))
  y = jax.random.uniform(jax.random.key(1), (80, 3), minval=-1.0)
  for block_size in (None, 16):
    def value_and_grad(kernel):
      return jax.jit(jax.value_and_grad(
          lambda a, b: losses.coulomb_regularizer(
              a, b, kernel=kernel, block_size=block_size), (0, 1)))(x, y)
    sliced, paper = value_and_grad("sliced_coulomb"), value_and_grad("coulomb")
    for a, b in zip(jax.tree.leaves(sliced), jax.tree.leaves(paper)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("h", (3, 8, 64, 256))
def test_passes_the_property_kit(h):
  testing.assert_kernel_properties(kernels.sliced_coulomb, h=h)
  testing.assert_mmd_properties(
      functools.partial(mmd.mmd2, kernel=kernels.sliced_coulomb), h=h,
      blocked=functools.partial(mmd.mmd2, kernel=kernels.sliced_coulomb,
                                block_size=5))


def test_is_rotation_invariant_at_h_64(np_rng):
  x, y = np_rng.normal(size=(2, 40, 64)).astype(np.float32)
  rotation = random_rotation(64, 0).astype(np.float32)
  value = mmd.mmd2(x, y, kernels.sliced_coulomb)
  rotated = mmd.mmd2(x @ rotation, y @ rotation, kernels.sliced_coulomb)
  np.testing.assert_allclose(float(rotated), float(value), rtol=1e-4,
                             atol=1e-6)


def test_claims_positive_definiteness_at_every_h():
  for h in (3, 5, 64, 1024):
    assert kernels.radial_form(kernels.sliced_coulomb, h).positive_definite()
  assert kernels.radial_form(kernels.coulomb, 4).positive_definite()
  assert not kernels.radial_form(kernels.coulomb, 5).positive_definite()


def test_the_papers_kernel_warns_above_h_4_and_the_default_does_not():
  codes = jax.random.normal(jax.random.key(0), (16, 8))
  with pytest.warns(kernels.NotPositiveDefiniteWarning, match="h <= 4"):
    kernels.coulomb(codes, codes)
  with pytest.warns(kernels.NotPositiveDefiniteWarning, match="sliced_coulomb"):
    losses.coulomb_regularizer(codes, key=jax.random.key(1), kernel="coulomb")
  with warnings.catch_warnings():
    warnings.simplefilter("error", kernels.NotPositiveDefiniteWarning)
    kernels.coulomb(codes[:, :4], codes[:, :4])
    losses.coulomb_regularizer(codes, key=jax.random.key(1))


def test_bad_kernel_names_and_sizes_raise():
  codes = jnp.zeros((8, 5))
  with pytest.raises(ValueError, match="kernel must be one of"):
    losses.coulomb_regularizer(codes, key=jax.random.key(0), kernel="riesz")
  with pytest.raises(ValueError, match="coulomb_kernel='riesz'"):
    config_lib.validate(config_lib.TrainConfig(coulomb_kernel="riesz"))
  with pytest.raises(ValueError, match=r"h = x.shape\[-1\] >= 3; got h=2"):
    kernels.sliced_coulomb(jnp.zeros((4, 2)), jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="eps"):
    kernels.sliced_coulomb(codes, codes, eps=0.0)


def test_h_2_still_takes_the_logarithmic_kernel():
  assert losses.coulomb_kernel(2).func is kernels.coulomb_log
  assert losses.coulomb_kernel(2, kernel="coulomb").func is kernels.coulomb_log


@pytest.mark.standard_promotion  # optax promotes
def test_grid_training_is_bitwise_unchanged_by_the_new_default(tmp_path):
  """The Grid (h = 3, uniform prior) trains to the same bits with either
  kernel: its results carry over to the new default."""
  from couae_jax import loop
  from experiments import grid
  params = {}
  for kernel in ("coulomb", "sliced_coulomb"):
    config = grid.model_config("couae", 0, 30, [
        f"--config.coulomb_kernel={kernel}", "--config.hidden=16,16",
        "--config.log_every=30", "--config.checkpoint_every=30"])
    trained = loop.fit(config, str(tmp_path / kernel), progress=False)
    params[kernel] = jax.tree.leaves(trained.params)
  for a, b in zip(params["coulomb"], params["sliced_coulomb"]):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
