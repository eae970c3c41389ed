"""Tests of couae_jax.models: shapes, width scaling, BatchNorm, validation."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from couae_jax import models

KEY = jax.random.key(0)


def abstract_init(model, x):
  """The variables' shapes, without running (or compiling) the network."""
  return jax.eval_shape(model.init, KEY, x)


def random_variables(model, x, seed=0):
  """Variables with random parameters, skipping `init`'s slow compilation.

  Flax's truncated-normal initialisers take seconds to compile on CPU; the
  tests that run a network need only some parameters of the right shapes.
  """
  rng = np.random.default_rng(seed)
  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    value = {"['mean']": 0.0, "['var']": 1.0}.get(name)
    if value is None:
      return jnp.asarray(0.3 * rng.standard_normal(leaf.shape), leaf.dtype)
    return jnp.full(leaf.shape, value, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, abstract_init(model, x))


def param_count(variables) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def kernel_shapes(variables, half):
  """{layer name: kernel shape} of one half of an Autoencoder."""
  return {name: layer["kernel"].shape
          for name, layer in variables["params"][half].items()
          if "kernel" in layer}


def test_mlp_grid_architecture():
  model = models.make_autoencoder("mlp", (2,), latent_dim=2)
  x = jnp.zeros((5, 2))
  variables = abstract_init(model, x)
  assert list(variables) == ["params"]
  assert sorted(kernel_shapes(variables, "encoder").values()) == sorted(
      [(2, 128), (128, 128), (128, 2)])
  assert sorted(kernel_shapes(variables, "decoder").values()) == sorted(
      [(2, 128), (128, 128), (128, 2)])
  codes, x_hat = jax.eval_shape(model.apply, variables, x)
  assert codes.shape == (5, 2) and x_hat.shape == (5, 2)


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_mlp_param_count_scales_with_width(width):
  model = models.make_autoencoder("mlp", (2,), latent_dim=3, width=width)
  w = max(1, round(128 * width))
  dense = lambda n_in, n_out: n_in * n_out + n_out
  expected = (dense(2, w) + dense(w, w) + dense(w, 3)
              + dense(3, w) + dense(w, w) + dense(w, 2))
  assert param_count(abstract_init(model, jnp.zeros((1, 2)))) == expected


def test_mlp_on_images_flattens_and_reshapes():
  model = models.make_autoencoder("mlp", [8, 8, 1], latent_dim=4, width=0.25)
  codes, x_hat = jax.eval_shape(
      lambda x: model.init_with_output(KEY, x)[0], jnp.zeros((3, 8, 8, 1)))
  assert codes.shape == (3, 4) and x_hat.shape == (3, 8, 8, 1)


@pytest.mark.parametrize("shape,expected", [
    ((64, 64, 3), 4), ((32, 32, 3), 4), ((28, 28, 1), 2), ((8, 8, 1), 2),
    ((16, 16, 1), 3), ((6, 6, 1), 1)])
def test_conv_stages(shape, expected):
  assert models.conv_stages(shape) == expected


# (data_shape, width, encoder's last feature map, decoder's first map)
CONV_CONFIGS = [
    ((8, 8, 1), 1.0, (2, 2, 256), (2, 2, 1024)),
    ((28, 28, 1), 0.25, (7, 7, 64), (7, 7, 256)),
    ((64, 64, 3), 0.25, (4, 4, 256), (8, 8, 256)),
]


@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("data_shape,width,enc_map,dec_map", CONV_CONFIGS)
def test_conv_shapes(data_shape, width, enc_map, dec_map, stochastic):
  model = models.make_autoencoder("conv", data_shape, latent_dim=16,
                                  width=width, stochastic=stochastic)
  x = jnp.zeros((2, *data_shape))
  variables = abstract_init(model, x)
  assert set(variables) == {"params", "batch_stats"}
  encoding, x_hat = jax.eval_shape(model.apply, variables, x)
  assert x_hat.shape == x.shape
  if stochastic:
    assert [e.shape for e in encoding] == [(2, 16), (2, 16)]
  else:
    assert encoding.shape == (2, 16)
  head = variables["params"]["encoder"]["mean" if stochastic else "codes"]
  assert head["kernel"].shape == (math.prod(enc_map), 16)
  decoder = variables["params"]["decoder"]
  assert decoder["Dense_0"]["kernel"].shape == (16, math.prod(dec_map))
  assert decoder["output"]["kernel"].shape[-1] == data_shape[-1]


def test_conv_channels_scale_with_width():
  def channels(width):
    model = models.make_autoencoder("conv", (64, 64, 3), 8, width=width)
    variables = abstract_init(model, jnp.zeros((1, 64, 64, 3)))
    return [kernel_shapes(variables, half)[name][-1]
            for half, names in [("encoder", ["Conv_0", "Conv_1", "Conv_2",
                                             "Conv_3"]),
                                ("decoder", ["ConvTranspose_0",
                                             "ConvTranspose_1",
                                             "ConvTranspose_2"])]
            for name in names]
  assert channels(1.0) == [128, 256, 512, 1024, 512, 256, 128]
  assert channels(0.25) == [32, 64, 128, 256, 128, 64, 32]
  assert channels(0.5) == [64, 128, 256, 512, 256, 128, 64]


def test_stochastic_encoder_and_reparameterization():
  model = models.make_autoencoder("mlp", (2,), latent_dim=3, width=0.25,
                                  stochastic=True)
  x = jax.random.normal(KEY, (6, 2))
  variables = random_variables(model, x)
  (mean, log_var), x_hat = model.apply(variables, x)
  assert mean.shape == log_var.shape == (6, 3)
  assert not np.allclose(mean, log_var)
  # Evaluation decodes the posterior mean.
  np.testing.assert_allclose(x_hat, models.decode(model, variables, mean),
                             rtol=1e-6)
  # Training samples z from the "latent" RNG stream.
  rngs = {models.LATENT_RNG: jax.random.key(7)}
  _, sample_a = model.apply(variables, x, train=True, rngs=rngs)
  _, sample_b = model.apply(variables, x, train=True, rngs=rngs)
  np.testing.assert_array_equal(sample_a, sample_b)
  assert not np.allclose(sample_a, x_hat)
  with pytest.raises(Exception, match="latent"):
    model.apply(variables, x, train=True)


def test_reparameterize_statistics():
  mean, log_var = jnp.full((20000, 1), 2.0), jnp.full((20000, 1), np.log(9.0))
  z = models.reparameterize(KEY, mean, log_var)
  assert abs(float(z.mean()) - 2.0) < 0.1
  assert abs(float(z.std()) - 3.0) < 0.1


def test_batch_norm_train_and_eval():
  model = models.make_autoencoder("conv", (8, 8, 1), latent_dim=2,
                                  width=1 / 16)
  x = jax.random.uniform(KEY, (4, 8, 8, 1))
  variables = random_variables(model, x)
  # Inference: running averages, so each example is encoded on its own.
  codes = models.encode(model, variables, x)
  np.testing.assert_allclose(models.encode(model, variables, x[:2]),
                             codes[:2], rtol=1e-5, atol=1e-6)
  # Training: batch statistics, which also update the running averages.
  train = jax.jit(lambda xs: model.apply(
      variables, xs, train=True, method=models.Autoencoder.encode,
      mutable=["batch_stats"]))
  train_codes, updates = train(x)
  assert not np.allclose(train(x[:2])[0], train_codes[:2], atol=1e-4)
  old = jax.tree.leaves(variables["batch_stats"])
  new = jax.tree.leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(old, new))
  # Without mutable batch_stats, training mode is an error, not a silent bug.
  with pytest.raises(Exception, match="batch_stats"):
    jax.eval_shape(lambda xs: model.apply(variables, xs, train=True), x)


def test_encode_decode_one_apply():
  model = models.make_autoencoder("mlp", (2,), latent_dim=2, width=0.25)
  x = jax.random.normal(KEY, (3, 2))
  variables = model.init(KEY, x)
  codes, x_hat = model.apply(variables, x)
  both = model.apply(variables, x, method=lambda m, x: m.decode(m.encode(x)))
  np.testing.assert_allclose(both, x_hat, rtol=1e-6)
  np.testing.assert_allclose(models.encode(model, variables, x), codes,
                             rtol=1e-6)


def test_dtype_is_the_computation_dtype():
  model = models.make_autoencoder("mlp", (2,), 2, dtype=jnp.bfloat16)
  variables = abstract_init(model, jnp.zeros((1, 2)))
  codes, x_hat = jax.eval_shape(model.apply, variables, jnp.zeros((1, 2)))
  assert codes.dtype == x_hat.dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


@pytest.mark.parametrize("build,match", [
    (lambda: models.MLPEncoder(0), "latent_dim"),
    (lambda: models.ConvEncoder(-2), "latent_dim"),
    (lambda: models.MLPEncoder(2, width=0.0), "width"),
    (lambda: models.MLPDecoder(2, width=-1), "width"),
    (lambda: models.ConvDecoder((8, 8, 1), width=float("nan")), "width"),
    (lambda: models.MLPEncoder(2, hidden=(128, 0)), "hidden"),
    (lambda: models.MLPDecoder((2, 0)), "out_dim"),
    (lambda: models.ConvDecoder((7, 7, 1)), "out_shape.*even"),
    (lambda: models.ConvDecoder((8, 8)), r"out_shape.*\(height, width"),
    (lambda: models.ConvDecoder([8, 8, 1]), "out_shape.*tuple"),
    (lambda: models.MLPEncoder(2, hidden=[128]), "hidden.*tuple"),
    (lambda: models.make_autoencoder("conv", (2, 2, 1), 4), "data_shape"),
    (lambda: models.make_autoencoder("conv", [6, 7, 1], 4), "data_shape"),
    (lambda: models.make_autoencoder("conv", (64, 64, 3), 0), "latent_dim"),
    (lambda: models.make_autoencoder("mlp", (), 4), "data_shape"),
    (lambda: models.make_autoencoder("rnn", (2,), 4), "kind"),
])
def test_invalid_arguments_fail_at_construction(build, match):
  with pytest.raises(ValueError, match=match):
    build()


def test_conv_encoder_rejects_unsupported_input_at_trace_time():
  with pytest.raises(ValueError, match=r"x\.shape\[1:\].*even"):
    jax.eval_shape(models.ConvEncoder(2).init, KEY, jnp.zeros((1, 9, 9, 1)))
  with pytest.raises(ValueError, match="rank >= 4"):
    jax.eval_shape(models.ConvEncoder(2).init, KEY, jnp.zeros((9, 9, 1)))


def test_modules_are_hashable_for_static_arguments():
  model = models.make_autoencoder("conv", (28, 28, 1), 8, width=0.5)
  assert hash(model) == hash(
      models.make_autoencoder("conv", (28, 28, 1), 8, width=0.5))
  assert isinstance(model.encoder, nn.Module)
