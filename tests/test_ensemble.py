"""How `loop.fit_seeds` advances its seeds: vmapped in one call, or looped."""

import shutil

import jax
import numpy as np
import pytest

from couae_jax import config as config_lib
from couae_jax import ensemble, inference, loop, train

pytestmark = pytest.mark.standard_promotion  # optax/flax promote

TINY = dict(data="grid", latent_dim=3, hidden=(32, 32), batch_size=500,
            log_every=5, checkpoint_every=5, steps=10, steps_per_call=5)


def _leaves(params) -> list[np.ndarray]:
  return [np.asarray(leaf) for leaf in jax.tree.leaves(params)]


def _equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b),
                                                  strict=True))


@pytest.fixture(scope="module")
def looped(tmp_path_factory):
  """`fit_seeds` of seeds 0 and 1, looped, to step 10: what the three tests
  below each trained the same way."""
  config = config_lib.TrainConfig(**TINY, ensemble="loop")
  return loop.fit_seeds(config, [0, 1], str(tmp_path_factory.mktemp("looped")),
                        progress=False)


def test_looped_seeds_are_each_seed_alone(looped, tmp_path):
  config = config_lib.TrainConfig(**TINY, ensemble="loop")
  alone = loop.fit(config.replace(seed=1), str(tmp_path / "alone"),
                   progress=False)
  # The same one-step program on the same batches: bitwise.
  assert _equal(looped[1].params, alone.params)
  assert not _equal(looped[0].params, looped[1].params)


def test_looped_and_vmapped_seeds_agree_to_rounding(looped, tmp_path):
  config = config_lib.TrainConfig(**TINY)
  vmapped = loop.fit_seeds(config.replace(ensemble="vmap"), [0, 1],
                           str(tmp_path / "vmapped"), progress=False)
  for a, b in zip(vmapped, looped, strict=True):
    for x, y in zip(_leaves(a.params), _leaves(b.params), strict=True):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_looped_run_resumes_exactly_and_may_switch_mode(looped, tmp_path):
  config = config_lib.TrainConfig(**TINY, ensemble="loop")
  uninterrupted = looped
  workdir = str(tmp_path / "resumed")
  loop.fit_seeds(config.replace(steps=5), [0, 1], workdir, progress=False)
  # The same half-way run, to resume in the other mode below.
  switched = str(tmp_path / "switched")
  shutil.copytree(workdir, switched)
  resumed = loop.fit_seeds(config, [0, 1], workdir, progress=False)
  for a, b in zip(uninterrupted, resumed, strict=True):
    assert _equal(a.params, b.params)
  # The mode changes float rounding only, so a run may resume in the other.
  loop.fit_seeds(config.replace(ensemble="vmap"), [0, 1], switched,
                 progress=False)
  assert inference.restore(loop.seed_workdir(switched, 1)).step == 10


@pytest.mark.parametrize("shape, expected", [
    ((2,), ensemble.Vmapped), ((8, 8, 1), ensemble.Looped)])
def test_auto_loops_over_conv_seeds_only(shape, expected):
  config = config_lib.TrainConfig(latent_dim=3, hidden=(8,))
  model = train.build_model(config, shape)
  assert ensemble.runner(config, model) is expected
  assert ensemble.runner(config.replace(ensemble="vmap"),
                         model) is ensemble.Vmapped


def test_validate_names_the_ensemble_field():
  with pytest.raises(ValueError, match="ensemble='scan'"):
    config_lib.validate(config_lib.TrainConfig(ensemble="scan"))
