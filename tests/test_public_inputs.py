"""Bad input to the public functions of the training-side modules.

config, train, checkpointing, loop, evaluation, priors and kernels: every
public function raises early, with a ValueError or TypeError whose message
names the argument (not an error from inside Flax, Optax, Orbax or XLA).
Rows are (call, error, pattern); a call takes the module's shared objects.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from couae_jax import checkpointing, evaluation, inference, kernels, loop, priors, train
from couae_jax import config as config_lib
from couae_jax import scaling as scaling_lib

KEY = jax.random.key(0)
CONFIG = config_lib.TrainConfig(hidden=(8,), batch_size=8)
MODEL = train.build_model(CONFIG, (2,))
OPTIMIZER = train.make_optimizer(CONFIG)
EXAMPLE = np.zeros((1, 2), np.float32)
POINTS = np.zeros((10, 2), np.float32)


pytestmark = pytest.mark.standard_promotion  # optax/flax promote


@pytest.fixture(scope="module")
def state():
  """A TrainState's shapes: enough for every check, nothing compiled."""
  return jax.eval_shape(
      lambda: train.init_state(MODEL, OPTIMIZER, EXAMPLE, CONFIG.seed))


@pytest.fixture(scope="module")
def trained():
  """A TrainedModel with zero parameters (its checks never run it)."""
  variables = jax.eval_shape(MODEL.init, KEY, EXAMPLE)
  params = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype),
                        variables["params"])
  return inference.TrainedModel(model=MODEL, params=params,
                                batch_stats={}, config=CONFIG, step=0,
                                data_shape=(2,))


def _raises(call, error, match, *args):
  with pytest.raises(error, match=match):
    call(*args)


# ---------------------------------------------------------------------------
# config


@pytest.mark.parametrize("call,error,match", [
    (lambda: config_lib.parse_overrides("lam=1", []), TypeError, "config"),
    (lambda: config_lib.parse_overrides(CONFIG, "--config.lam=1"), TypeError,
     "args must be a sequence"),
    (lambda: config_lib.parse_overrides(CONFIG, None), TypeError, "args"),
    (lambda: config_lib.parse_overrides(CONFIG, [b"--config.lam=1"]),
     TypeError, "args must hold strings"),
    (lambda: config_lib.parse_overrides(CONFIG, ["--lam=1"]), ValueError,
     r"args must be --config\.FIELD=VALUE"),
    (lambda: config_lib.parse_overrides(CONFIG, ["--config.lamda=1"]),
     ValueError, "unknown config field 'lamda'"),
    (lambda: config_lib.parse_overrides(CONFIG, ["--config.steps=x"]),
     ValueError, "config.steps must be of type int"),
    (lambda: config_lib.parse_overrides(CONFIG, ["--config.standardize=2"]),
     ValueError, "config.standardize"),
    (lambda: config_lib.TrainConfig.from_dict([("lam", 1.0)]), TypeError,
     "values must be a mapping"),
    (lambda: config_lib.TrainConfig.from_dict({"lamda": 1.0}), ValueError,
     "lamda"),
    (lambda: config_lib.validate({"lam": 1.0}), TypeError,
     "config must be a TrainConfig"),
    (lambda: config_lib.validate(CONFIG, devices=0), ValueError, "devices"),
    (lambda: config_lib.validate(CONFIG, processes=1.5), ValueError,
     "processes"),
    (lambda: config_lib.validate(CONFIG.replace(lam="1")), ValueError,
     "lam='1' must be a finite number"),
    (lambda: config_lib.validate(CONFIG.replace(width=float("inf"))),
     ValueError, "width=inf"),
    (lambda: config_lib.validate(CONFIG.replace(steps=True)), ValueError,
     "steps=True must be an int"),
    (lambda: config_lib.validate(CONFIG.replace(latent_dim=3.0)), ValueError,
     "latent_dim"),
    (lambda: config_lib.validate(CONFIG.replace(hidden=(8.5,))), ValueError,
     "hidden"),
    (lambda: config_lib.validate(CONFIG.replace(model=3)), ValueError,
     "model=3"),
    (lambda: config_lib.validate(CONFIG.replace(standardize="yes")),
     ValueError, "standardize"),
    (lambda: config_lib.validate(CONFIG.replace(batch_size=9), devices=2),
     ValueError, "batch_size=9"),
])
def test_config_rejects_bad_arguments(call, error, match):
  _raises(call, error, match)


# Fields that `train.make_optimizer`, `build_model`, the objective and
# `loop.load_dataset` checked again before `validate` became the one
# boundary: `validate` rejects each, naming the field.
@pytest.mark.parametrize("changes,match", [
    (dict(schedule="linear"), "schedule='linear'"),
    (dict(learning_rate=0.0), "learning_rate=0.0"),
    (dict(b2=1.0), "b2=1.0"),
    (dict(warmup_steps=-1), "warmup_steps=-1"),
    (dict(schedule="piecewise"), r"lr_boundaries=\(\)"),
    (dict(lr_boundaries=(0.5,), lr_factors=(0.1,)), "lr_boundaries=.*only"),
    (dict(schedule="piecewise", lr_boundaries=(0.5,), lr_factors=(0.1, 0.2)),
     "lr_factors=.*one factor per boundary"),
    (dict(schedule="piecewise", lr_boundaries=0.5, lr_factors=(0.1,)),
     "lr_boundaries=0.5 must be a tuple"),
    (dict(prior="cauchy"), "prior='cauchy'"),
    (dict(prior_scale=0.0), "prior_scale=0.0"),
    (dict(prior_scale=-1.0), "prior_scale=-1.0"),
    (dict(model="vae", prior_scale=2.0), "prior_scale=2.0.*VAE"),
    (dict(model="gan"), "model='gan'"),
    (dict(eps=0.0), "eps=0.0"),
    (dict(block_size=-1), "block_size=-1"),
    (dict(architecture="rnn"), "architecture='rnn'"),
    (dict(conv_kernel_size=0), "conv_kernel_size=0"),
    (dict(conv_kernel_size=2.5), "conv_kernel_size=2.5 must be an int"),
    (dict(data="imagenet"), "data='imagenet'"),
    (dict(data="npz"), "set --config.data_path"),
    (dict(grid_train_size=30), "grid_train_size=30"),
])
def test_validate_rejects_what_the_builders_no_longer_check(changes, match):
  with pytest.raises(ValueError, match="bad config: .*" + match):
    config_lib.validate(CONFIG.replace(**changes))


def test_validate_accepts_numpy_numbers_and_list_hidden():
  config_lib.validate(CONFIG.replace(lam=np.float32(2.0), steps=np.int64(5),
                                     hidden=[8, 4]))


# ---------------------------------------------------------------------------
# train


NOT_A_CONFIG = {"model": "couae"}


@pytest.mark.parametrize("call,error,match", [
    (lambda: train.build_model(CONFIG, 2), ValueError, "data_shape"),
    (lambda: train.build_model(CONFIG, (2, 0)), ValueError, "data_shape"),
    (lambda: train.build_model(CONFIG, ()), ValueError, "data_shape"),
])
def test_train_functions_reject_bad_arguments(call, error, match):
  _raises(call, error, match)


def test_init_state_accepts_traced_seeds():
  states = jax.eval_shape(jax.vmap(
      lambda seed: train.init_state(MODEL, OPTIMIZER, EXAMPLE, seed)),
                          jnp.arange(2))
  assert states.step.shape == (2,)


# ---------------------------------------------------------------------------
# checkpointing


@pytest.mark.parametrize("call,error,match", [
    (lambda tmp: checkpointing.Checkpointer(3, CONFIG, (2,)), TypeError,
     "workdir"),
    (lambda tmp: checkpointing.Checkpointer(b"dir", CONFIG, (2,)), TypeError,
     "workdir"),
    (lambda tmp: checkpointing.Checkpointer("", CONFIG, (2,)), ValueError,
     "workdir"),
    (lambda tmp: checkpointing.Checkpointer(tmp, CONFIG, (0,)), ValueError,
     "data_shape"),
    (lambda tmp: checkpointing.Checkpointer(tmp, CONFIG, 2), ValueError,
     "data_shape"),
    (lambda tmp: inference.restore(3), TypeError, "workdir"),
    (lambda tmp: inference.restore(None), TypeError, "workdir"),
    (lambda tmp: inference.restore(tmp, step=-1), ValueError, "step"),
    (lambda tmp: inference.restore(tmp, step=1.0), ValueError, "step"),
    (lambda tmp: inference.restore(tmp, step=True), ValueError, "step"),
    (lambda tmp: inference.restore(tmp, step="latest"), ValueError,
     "step"),
])
def test_checkpointer_and_restore_reject_bad_arguments(tmp_path, call, error,
                                                       match):
  _raises(call, error, match, str(tmp_path))


def test_restore_accepts_paths_and_reports_missing_checkpoints(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoints"):
    inference.restore(tmp_path, step=np.int64(3))


@pytest.mark.parametrize("call,error,match", [
    (lambda c, s: c.restore(-2, s), ValueError, "step"),
    (lambda c, s: c.restore(7, s), FileNotFoundError, "step 7"),
])
def test_checkpointer_methods_reject_bad_arguments(tmp_path, state, call,
                                                   error, match):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), CONFIG, (2,))
  try:
    _raises(call, error, match, checkpointer, state)
  finally:
    checkpointer.close()


SCALING = scaling_lib.DataScaling(mean=np.zeros(2, np.float32), scale=2.0)


@pytest.mark.parametrize("call,error,match", [
    (lambda: scaling_lib.DataScaling(mean=[0.0, 0.0], scale=1.0), TypeError,
     "mean"),
    (lambda: scaling_lib.DataScaling(mean=np.zeros(2), scale=0.0),
     ValueError, "scale"),
    (lambda: scaling_lib.DataScaling(mean=np.zeros(2), scale=float("nan")),
     ValueError, "scale"),
    (lambda: scaling_lib.DataScaling(mean=np.zeros(2), scale="1"),
     ValueError, "scale"),
    (lambda: scaling_lib.DataScaling.of(np.zeros(3)), ValueError, "data"),
    (lambda: scaling_lib.DataScaling.of(np.ones((4, 2))), ValueError,
     "constant"),
    (lambda: scaling_lib.DataScaling.from_dict({"mean": [0.0]}),
     ValueError, "values"),
    (lambda: SCALING.apply(np.zeros((3, 5), np.float32)), ValueError,
     r"x must have shape \[B, 2\]"),
    (lambda: SCALING.invert(np.zeros(2, np.float32)), ValueError,
     r"x must have shape \[B, 2\]"),
])
def test_data_scaling_rejects_bad_arguments(call, error, match):
  _raises(call, error, match)


@pytest.mark.parametrize("call,error,match", [
    (lambda t: t.encode(np.zeros((3, 5), np.float32)), ValueError,
     r"x must have shape \[B, 2\].*\(3, 5\)"),
    (lambda t: t.encode(np.zeros(2, np.float32)), ValueError,
     r"x must have shape \[B, 2\]"),
    (lambda t: t.encode(np.zeros((3, 2), np.int32)), TypeError,
     "x must have a floating dtype"),
    (lambda t: t.reconstruct(np.zeros((3, 2, 1), np.float32)), ValueError,
     r"x must have shape \[B, 2\]"),
    (lambda t: t.decode(np.zeros((3, 2), np.float32)), ValueError,
     r"z must have shape \[B, 3\].*\(3, 2\)"),
    (lambda t: t.decode(np.zeros(3, np.float32)), ValueError,
     r"z must have shape \[B, 3\]"),
    (lambda t: t.decode(np.zeros((3, 3), bool)), TypeError, "z"),
    (lambda t: t.sample(0, 3), TypeError, "key"),
    (lambda t: t.sample(jax.random.split(KEY, 3), 3), TypeError, "key"),
    (lambda t: t.sample(KEY, 0), ValueError, "n must be a positive integer"),
    (lambda t: t.sample_prior(KEY, 2.5), ValueError, "n"),
    (lambda t: t.sample_prior(KEY, True), ValueError, "n"),
])
def test_trained_model_methods_reject_bad_arguments(trained, call, error,
                                                    match):
  _raises(call, error, match, trained)


# ---------------------------------------------------------------------------
# loop


@pytest.mark.parametrize("call,error,match", [
    (lambda tmp: loop.fit(NOT_A_CONFIG, tmp), TypeError, "config"),
    (lambda tmp: loop.fit(CONFIG, 3), TypeError, "workdir"),
    (lambda tmp: loop.fit(CONFIG, tmp, progress="no"), TypeError,
     "progress"),
    (lambda tmp: loop.fit(CONFIG.replace(lam=-1.0), tmp), ValueError,
     "lam=-1.0"),
    (lambda tmp: loop.fit_seeds(NOT_A_CONFIG, [0], tmp), TypeError, "config"),
    (lambda tmp: loop.fit_seeds(CONFIG, [0], None), TypeError, "workdir"),
    (lambda tmp: loop.fit_seeds(CONFIG, [1, 1], tmp), ValueError, "seeds"),
    (lambda tmp: loop.fit_seeds(CONFIG, 3, tmp), ValueError, "seeds"),
    (lambda tmp: loop.fit_seeds(CONFIG, [-1], tmp), ValueError, "seeds"),
    (lambda tmp: loop.fit_seeds(CONFIG, [], tmp), ValueError, "seeds"),
    (lambda tmp: loop.seed_workdir(1, 0), TypeError, "workdir"),
    (lambda tmp: loop.seed_workdir(tmp, -1), ValueError, "seed"),
    (lambda tmp: loop.seed_workdir(tmp, "1"), ValueError, "seed"),
    (lambda tmp: loop.seed_workdir(tmp, True), ValueError, "seed"),
    (lambda tmp: loop.seed_workdir(tmp, 1.0), ValueError, "seed"),
])
def test_loop_functions_reject_bad_arguments(tmp_path, call, error, match):
  _raises(call, error, match, str(tmp_path))


# ---------------------------------------------------------------------------
# evaluation


def _generate(n, seed):
  return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


@pytest.mark.parametrize("call,error,match", [
    (lambda: evaluation.kde_log_density(POINTS[0], POINTS, 1.0), ValueError,
     "queries"),
    (lambda: evaluation.kde_log_density(POINTS, POINTS[:0], 1.0), ValueError,
     "samples"),
    (lambda: evaluation.kde_log_density(POINTS, POINTS, -1.0), ValueError,
     "bandwidth"),
    (lambda: evaluation.kde_log_density(POINTS, POINTS, 1.0, block_size=0),
     ValueError, "block_size"),
    (lambda: evaluation.select_bandwidth(POINTS[:, 0]), ValueError,
     r"samples must be a set of points of shape \[n, d\]"),
    (lambda: evaluation.select_bandwidth(POINTS.astype(str)), TypeError,
     "samples"),
    (lambda: evaluation.select_bandwidth(POINTS[:3]), ValueError,
     "samples must hold at least 5 points"),
    (lambda: evaluation.select_bandwidth(POINTS, folds=1), ValueError,
     "folds"),
    (lambda: evaluation.select_bandwidth(POINTS, folds=2.0), ValueError,
     "folds"),
    (lambda: evaluation.select_bandwidth(POINTS, []), ValueError,
     "bandwidths"),
    (lambda: evaluation.select_bandwidth(POINTS, [0.1, 0.0]), ValueError,
     "bandwidths"),
    (lambda: evaluation.select_bandwidth(POINTS, 0.1), TypeError,
     "bandwidths"),
    (lambda: evaluation.select_bandwidth(POINTS, ["0.1"]), TypeError,
     "bandwidths"),
    (lambda: evaluation.select_bandwidth(POINTS, seed=-1), ValueError,
     "seed"),
    (lambda: evaluation.held_out_log_likelihood(None, POINTS), TypeError,
     "generate"),
    (lambda: evaluation.held_out_log_likelihood(_generate, POINTS[:, 0]),
     ValueError, "true_samples"),
    (lambda: evaluation.held_out_log_likelihood(_generate, POINTS, batches=3),
     ValueError, "batches=3"),
    (lambda: evaluation.held_out_log_likelihood(_generate, POINTS, batches=0),
     ValueError, "batches"),
    (lambda: evaluation.held_out_log_likelihood(_generate, POINTS,
                                            selection_samples=4),
     ValueError, "selection_samples"),
    (lambda: evaluation.held_out_log_likelihood(_generate, POINTS,
                                            fit_samples=0),
     ValueError, "fit_samples"),
    (lambda: evaluation.held_out_log_likelihood(_generate, POINTS, seed=0.5),
     ValueError, "seed"),
    (lambda: evaluation.held_out_log_likelihood(_generate, POINTS,
                                            bandwidths=[-1.0]),
     ValueError, "bandwidths"),
    (lambda: evaluation.held_out_log_likelihood(
        lambda n, seed: np.zeros((n, 3), np.float32), POINTS,
        selection_samples=10, fit_samples=10, batches=2),
     ValueError, r"generate\(n, seed\) must return \[n, d\] = \[10, 2\]"),
    (lambda: evaluation.mode_coverage(POINTS[:, 0], POINTS, 1.0), ValueError,
     "samples"),
    (lambda: evaluation.mode_coverage(POINTS, POINTS[:0], 1.0), ValueError,
     "means"),
    (lambda: evaluation.mode_coverage(POINTS, np.zeros((2, 3)), 1.0),
     ValueError, "samples and means must have the same last dimension"),
    (lambda: evaluation.mode_coverage(POINTS, POINTS, 0.0), ValueError,
     "std"),
    (lambda: evaluation.mode_coverage(POINTS, POINTS, 1.0, radius=-1.0),
     ValueError, "radius"),
    (lambda: evaluation.mode_coverage(POINTS, POINTS, 1.0, min_count=0),
     ValueError, "min_count"),
])
def test_evaluation_functions_reject_bad_arguments(call, error, match):
  _raises(call, error, match)


# ---------------------------------------------------------------------------
# priors


@pytest.mark.parametrize("call,error,match", [
    (lambda: priors.sample_shard(None, KEY, (2, 3)), TypeError, "prior"),
    (lambda: priors.sample_shard(priors.uniform, 0, (2, 3)), TypeError,
     "key"),
    (lambda: priors.sample_shard(priors.uniform, KEY, (0, 3)), ValueError,
     "local_shape"),
    (lambda: priors.sample_shard(priors.uniform, KEY, 3), ValueError,
     "local_shape"),
    (lambda: priors.sample_shard(priors.uniform, KEY, ()), ValueError,
     "local_shape"),
    (lambda: priors.sample_shard(priors.uniform, KEY, (2.0, 3)), ValueError,
     "local_shape"),
    (lambda: priors.sample_shard(priors.uniform, KEY, (2, 3), jnp.int32),
     TypeError, "dtype"),
    (lambda: priors.sample_shard(priors.uniform, KEY, (2, 3),
                                 axis_name=("data",)), TypeError,
     "axis_name"),
    (lambda: priors.standard_normal(KEY, (2, -1)), ValueError, "shape"),
    (lambda: priors.standard_normal(jnp.zeros(2), (2, 3)), TypeError, "key"),
    (lambda: priors.uniform(KEY, (2, 3), dtype="nonsense"), TypeError,
     "dtype"),
    (lambda: priors.uniform(KEY, "23"), ValueError, "shape"),
    (lambda: priors.scaled(None, 2.0), TypeError, "prior"),
    (lambda: priors.scaled(priors.uniform, 0), ValueError, "scale"),
    (lambda: priors.scaled(priors.standard_normal, 2.0)(KEY, (0, 3)),
     ValueError, "shape"),
])
def test_priors_reject_bad_arguments(call, error, match):
  _raises(call, error, match)


def test_priors_accept_raw_keys_and_lists():
  raw = jax.random.PRNGKey(0)
  assert priors.standard_normal(raw, [2, 3]).shape == (2, 3)
  assert priors.sample_shard(priors.uniform, raw, [4, 1],
                             jnp.bfloat16).dtype == jnp.bfloat16


# ---------------------------------------------------------------------------
# kernels


FORM = kernels.gaussian.radial_form


@pytest.mark.parametrize("call,error,match", [
    (lambda: kernels.radial_form(None, 3), TypeError, "kernel"),
    (lambda: kernels.radial_form(kernels.gaussian, 0), ValueError, "h"),
    (lambda: kernels.radial_form(kernels.gaussian, 3.0), ValueError,
     "h must be a positive integer"),
    (lambda: kernels.radial_form(
        functools.partial(kernels.coulomb, eps=0.0), 5), ValueError, "eps"),
    (lambda: kernels.radial_form(
        functools.partial(kernels.gaussian, scale=-1.0), 5), ValueError,
     "scale"),
    (lambda: kernels.RadialForm(None, FORM.resolve, FORM.bounds,
                                FORM.positive_definite), TypeError,
     "profile"),
    (lambda: kernels.RadialForm(FORM.profile, FORM.resolve, (0.0, 1.0),
                                FORM.positive_definite), TypeError, "bounds"),
    (lambda: kernels.BoundRadialKernel("gaussian", 3, {"scale": 1.0}),
     TypeError, "form"),
    (lambda: kernels.BoundRadialKernel(FORM, 0, {"scale": 1.0}), ValueError,
     "h"),
    (lambda: kernels.BoundRadialKernel(FORM, 3, [1.0]), TypeError, "params"),
    (lambda: kernels.radial_form(kernels.coulomb, 3).profile(jnp.zeros(2, int)),
     TypeError, "sq_dist"),
    (lambda: kernels.multiscale(kernels.imq, scales=2.0), TypeError,
     "scales"),
    (lambda: kernels.multiscale(kernels.imq, scales=[]), ValueError,
     "scales"),
    (lambda: kernels.multiscale(kernels.imq, scales=[1.0, 0.0]), ValueError,
     "scales"),
    (lambda: kernels.multiscale(lambda x, y: x, scales=[1.0]), TypeError,
     "kernel"),
    (lambda: kernels.coulomb(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3))),
     TypeError, "x"),
    (lambda: kernels.coulomb(jnp.zeros((2, 3)), jnp.zeros((2, 4))),
     ValueError, "x and y must have the same last dimension"),
    (lambda: kernels.gaussian(jnp.zeros(3), jnp.zeros(3), scale=0.0),
     ValueError, "scale"),
    (lambda: kernels.imq(jnp.zeros(()), jnp.zeros(3), scale=1.0), ValueError,
     "x"),
])
def test_kernels_reject_bad_arguments(call, error, match):
  _raises(call, error, match)
