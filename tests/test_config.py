"""The config fields of WAE's CelebA settings: the piecewise learning-rate
schedule, the prior's scale and the conv kernels' size (validation, parsing,
the optimizer they build), and that their defaults change nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from couae_jax import checkpointing, inference, priors
from couae_jax import config as config_lib
from couae_jax import objective as objective_lib
from couae_jax import train as train_lib

pytestmark = pytest.mark.standard_promotion  # optax/flax promote

# WAE's CelebA schedule over 55 "epochs" of one step each: x0.5 after 30,
# x0.2 after 50.
WAE = config_lib.TrainConfig(schedule="piecewise", steps=55,
                             lr_boundaries=(30 / 55, 50 / 55),
                             lr_factors=(0.5, 0.2))


# ---------------------------------------------------------------------------
# The piecewise schedule.


@pytest.mark.parametrize("steps, expected", [
    # The boundaries are fractions of the run: they scale with `steps`.
    (55, {29: 1e-3, 30: 5e-4, 49: 5e-4, 50: 1e-4, 54: 1e-4}),
    (110, {59: 1e-3, 60: 5e-4, 99: 5e-4, 100: 1e-4, 109: 1e-4}),
    (111429, {0: 1e-3, 60778: 1e-3, 60779: 5e-4, 101298: 5e-4,
              101299: 1e-4}),  # 55 CelebA epochs of 100 images
])
def test_piecewise_rate_just_before_and_after_each_boundary(steps, expected):
  config = WAE.replace(steps=steps)
  config_lib.validate(config)
  schedule = train_lib.learning_rate_schedule(config)
  for step, rate in expected.items():
    assert float(schedule(step)) == pytest.approx(rate, rel=1e-6), step


def _adam_update_at(optimizer, step):
  """The update `optimizer` makes to `w` at step `step` (0-based), from a
  state whose moments are those after one gradient of ones."""
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.array([1.0, -2.0, 0.5])}
  state = optimizer.init(params)
  _, state = optimizer.update(grads, state, params)
  state = optax.tree_utils.tree_set(state, count=jnp.asarray(step, jnp.int32))
  updates, _ = optimizer.update(grads, state, params)
  return np.asarray(updates["w"])


@pytest.mark.parametrize("step, rate", [
    (29, 1e-3), (30, 5e-4), (49, 5e-4), (50, 1e-4)])
def test_the_optimizer_steps_with_the_piecewise_rate(step, rate):
  """Adam's update at step s is that of Adam at the constant rate the
  schedule gives at s."""
  expected = _adam_update_at(optax.adam(rate, b1=WAE.b1, b2=WAE.b2), step)
  actual = _adam_update_at(train_lib.make_optimizer(WAE), step)
  np.testing.assert_allclose(actual, expected, rtol=1e-6)


def test_piecewise_with_warmup_multiplies_the_ramp():
  config = WAE.replace(warmup_steps=10)
  schedule = train_lib.learning_rate_schedule(config)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(5e-4)
  assert float(schedule(29)) == pytest.approx(1e-3)
  assert float(schedule(30)) == pytest.approx(5e-4)


def test_boundary_steps_round_to_the_nearest_step_and_merge():
  assert config_lib.boundary_steps(WAE) == {30: 0.5, 50: 0.2}
  # Two fractions on the same step of a short run: the factors compound.
  short = WAE.replace(steps=1)
  assert config_lib.boundary_steps(short) == {1: pytest.approx(0.1)}
  schedule = train_lib.learning_rate_schedule(short)
  assert float(schedule(0)) == pytest.approx(1e-3)
  assert float(schedule(1)) == pytest.approx(1e-4)
  assert config_lib.boundary_steps(config_lib.TrainConfig()) == {}


def test_piecewise_fields_parse_from_the_command_line():
  config = config_lib.parse_overrides(config_lib.TrainConfig(), [
      "--config.schedule=piecewise", "--config.lr_boundaries=0.5,0.9",
      "--config.lr_factors=0.5,0.2"])
  assert config.lr_boundaries == (0.5, 0.9)
  assert config.lr_factors == (0.5, 0.2)
  config_lib.validate(config)
  assert config_lib.TrainConfig.from_dict(config.to_dict()) == config
  # JSON (checkpoint meta) holds lists.
  assert config_lib.TrainConfig.from_dict(
      {"lr_boundaries": [0.5, 0.9]}).lr_boundaries == (0.5, 0.9)
  cleared = config_lib.parse_overrides(
      config, ["--config.lr_boundaries=", "--config.lr_factors="])
  assert cleared.lr_boundaries == cleared.lr_factors == ()
  with pytest.raises(ValueError, match="config.lr_boundaries must be of type"):
    config_lib.parse_overrides(config, ["--config.lr_boundaries=0.5,half"])


BAD_PIECEWISE = [
    (dict(lr_boundaries=(), lr_factors=()), "lr_boundaries=()"),
    (dict(lr_boundaries=(0.0, 0.9)), r"lr_boundaries=\(0.0, 0.9\).*\(0, 1\)"),
    (dict(lr_boundaries=(0.5, 1.0)), r"lr_boundaries=.*\(0, 1\)"),
    (dict(lr_boundaries=(0.9, 0.5)), r"lr_boundaries=.*strictly increasing"),
    (dict(lr_boundaries=(0.5, 0.5)), r"lr_boundaries=.*strictly increasing"),
    (dict(lr_factors=(0.5,)), r"lr_factors=\(0.5,\).*one factor per"),
    (dict(lr_factors=(0.5, 0.0)), r"lr_factors=.*> 0"),
    (dict(lr_factors=(0.5, -1.0)), r"lr_factors=.*> 0"),
    (dict(schedule="cosine"),
     r"lr_boundaries=.*, lr_factors=.* applies only to schedule='piecewise'"),
    (dict(schedule="constant", lr_boundaries=()),
     r"lr_factors=\(0.5, 0.2\) applies only"),
]


@pytest.mark.parametrize("changes, message", BAD_PIECEWISE)
def test_validate_rejects_bad_piecewise_fields(changes, message):
  with pytest.raises(ValueError, match="bad config: " + message):
    config_lib.validate(WAE.replace(**changes))


@pytest.mark.parametrize("changes, message", [
    (dict(lr_boundaries=(0.5, float("nan"))),
     "lr_boundaries=.*must be a tuple of finite numbers"),
    (dict(lr_factors=("half", 0.2)),
     "lr_factors=.*must be a tuple of finite numbers"),
])
def test_validate_rejects_piecewise_fields_of_the_wrong_type(changes,
                                                              message):
  with pytest.raises(ValueError, match="bad config: " + message):
    config_lib.validate(WAE.replace(**changes))


@pytest.mark.parametrize("field, value, message", [
    ("lr_boundaries", (0.5, float("inf")), "lr_boundaries=.*finite numbers"),
    ("lr_factors", (True, 0.2), "lr_factors=.*finite numbers"),
    ("prior_scale", 0.0, "prior_scale=0.0 must be > 0"),
    ("prior_scale", -2.0, "prior_scale=-2.0 must be > 0"),
    ("prior_scale", float("nan"), "prior_scale=nan must be a finite number"),
    ("conv_kernel_size", 0, "conv_kernel_size=0 must be >= 1"),
    ("conv_kernel_size", 5.0, "conv_kernel_size=5.0 must be an int"),
])
def test_validate_rejects_bad_new_fields(field, value, message):
  with pytest.raises(ValueError, match="bad config: " + message):
    config_lib.validate(WAE.replace(**{field: value}))


def test_vae_keeps_the_standard_normal_prior():
  vae = config_lib.TrainConfig(model="vae", prior_scale=2.0 ** 0.5)
  with pytest.raises(ValueError,
                     match=r"bad config: prior_scale=1.414.*VAE's KL is to "
                     r"N\(0, I\)"):
    config_lib.validate(vae)
  config_lib.validate(vae.replace(prior_scale=1.0))
  for model in ("couae", "wae"):
    config_lib.validate(vae.replace(model=model))


# ---------------------------------------------------------------------------
# The defaults change nothing.


def test_new_fields_default_to_the_previous_behaviour():
  config = config_lib.TrainConfig()
  assert (config.schedule, config.lr_boundaries, config.lr_factors,
          config.prior_scale, config.conv_kernel_size) == (
              "constant", (), (), 1.0, 4)
  # A constant rate stays a float; the prior is the very same function.
  assert train_lib.learning_rate_schedule(config) == config.learning_rate
  assert objective_lib.make_objective(config).prior is priors.standard_normal
  assert objective_lib.make_objective(config.replace(prior="uniform")).prior is priors.uniform
  model = train_lib.build_model(config, (8, 8, 1))
  assert model.encoder.kernel_size == model.decoder.kernel_size == 4
  cosine = config.replace(schedule="cosine", warmup_steps=10, steps=100)
  reference = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100)
  schedule = train_lib.learning_rate_schedule(cosine)
  for step in (0, 5, 10, 50, 99):
    assert float(schedule(step)) == float(reference(step))


def test_conv_kernel_size_reaches_the_networks():
  config = config_lib.TrainConfig(conv_kernel_size=5, latent_dim=4,
                                  width=1 / 16)
  model = train_lib.build_model(config, (8, 8, 1))
  assert model.encoder.kernel_size == model.decoder.kernel_size == 5
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jnp.zeros((1, 8, 8, 1)))
  assert variables["params"]["encoder"]["Conv_0"]["kernel"].shape[:2] == (5, 5)
  assert variables["params"]["decoder"]["output"]["kernel"].shape[:2] == (5, 5)
  with pytest.raises(ValueError, match="bad config: conv_kernel_size=0"):
    config_lib.validate(config.replace(conv_kernel_size=0))


def test_a_checkpoint_written_before_the_new_fields_resumes(tmp_path):
  """Its meta lacks the new fields: they count as their defaults, which is
  what `restore` gives them."""
  config = config_lib.TrainConfig(hidden=(8,))
  state = train_lib.init_state(train_lib.build_model(config, (2,)),
                               train_lib.make_optimizer(config),
                               np.zeros((1, 2), np.float32), seed=0)
  saver = checkpointing.Checkpointer(str(tmp_path), config, (2,))
  new_fields = ("lr_boundaries", "lr_factors", "prior_scale",
                "conv_kernel_size")
  for name in new_fields:
    del saver._meta["config"][name]
  saver.save(1, state, {"epoch": 0, "position": 1}, {"loss": 1.0})
  saver.wait_until_finished()
  saver.check_config(config)
  with pytest.raises(checkpointing.ConfigMismatchError,
                     match="prior_scale: saved 1.0, now 2.0"):
    saver.check_config(config.replace(prior_scale=2.0))
  saver.close()
  assert inference.restore(str(tmp_path)).config == config



def _checkpoint_without_kernel_field(tmp_path, config):
  """A checkpoint of `config` as written before `coulomb_kernel` existed."""
  state = train_lib.init_state(train_lib.build_model(config, (2,)),
                               train_lib.make_optimizer(config),
                               np.zeros((1, 2), np.float32), seed=0)
  saver = checkpointing.Checkpointer(str(tmp_path), config, (2,))
  del saver._meta["config"]["coulomb_kernel"]
  saver.save(1, state, {"epoch": 0, "position": 1}, {"loss": 1.0})
  saver.wait_until_finished()
  return saver

def test_a_checkpoint_from_before_the_sliced_kernel_keeps_the_papers(
    tmp_path):
  """A CouAE checkpoint at h > 3 without `coulomb_kernel` was trained with
  the paper's kernel: it restores with it and refuses to resume under the
  new default, which would change its objective mid-run."""
  config = config_lib.TrainConfig(hidden=(8,), latent_dim=5,
                                  coulomb_kernel="coulomb")
  saver = _checkpoint_without_kernel_field(tmp_path, config)
  saver.check_config(config)
  with pytest.raises(checkpointing.ConfigMismatchError,
                     match="coulomb_kernel: saved 'coulomb', now "
                           "'sliced_coulomb'"):
    saver.check_config(config.replace(coulomb_kernel="sliced_coulomb"))
  saver.close()
  assert inference.restore(str(tmp_path)).config == config


@pytest.mark.parametrize("changes", [dict(latent_dim=3),
                                     dict(model="wae", latent_dim=5)])
def test_a_checkpoint_the_new_kernel_does_not_change_resumes(tmp_path,
                                                             changes):
  """At h = 3 the two kernels are one, and WAE uses neither: such an old
  checkpoint resumes under the new default."""
  config = config_lib.TrainConfig(hidden=(8,), **changes)
  saver = _checkpoint_without_kernel_field(tmp_path, config)
  saver.check_config(config)
  saver.close()
  assert inference.restore(str(tmp_path)).config == config


def test_a_checkpoint_with_fields_its_model_ignored_restores(tmp_path):
  """Saved before `validate` refused them, the Coulomb kernel's fields of a
  VAE were ignored: it restores, and resumes, with their defaults."""
  config = config_lib.TrainConfig(hidden=(8,), model="vae")
  state = train_lib.init_state(train_lib.build_model(config, (2,)),
                               train_lib.make_optimizer(config),
                               np.zeros((1, 2), np.float32), seed=0)
  saver = checkpointing.Checkpointer(
      str(tmp_path), config.replace(eps=0.5, kernel_scale=2.0), (2,))
  saver.save(1, state, {"epoch": 0, "position": 1}, {"loss": 1.0})
  saver.wait_until_finished()
  saver.check_config(config)
  saver.close()
  assert inference.restore(str(tmp_path)).config == config
