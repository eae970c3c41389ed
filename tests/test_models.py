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


@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("data_shape,width,enc_map,dec_map", [
    ((64, 64, 3), 0.25, (4, 4, 256), (8, 8, 256)),  # CelebA
    ((8, 8, 1), 1 / 16, (2, 2, 16), (2, 2, 64)),    # digits
])
def test_conv_kernel_size_5_keeps_the_shapes(data_shape, width, enc_map,
                                             dec_map, stochastic):
  """WAE's 5×5 kernels: SAME padding keeps every feature map's size, so only
  the kernels' spatial shapes change."""
  model = models.make_autoencoder("conv", data_shape, latent_dim=16,
                                  width=width, stochastic=stochastic,
                                  kernel_size=5)
  assert model.encoder.kernel_size == model.decoder.kernel_size == 5
  x = jnp.zeros((2, *data_shape))
  variables = abstract_init(model, x)
  encoding, x_hat = jax.eval_shape(model.apply, variables, x)
  assert x_hat.shape == x.shape
  codes = encoding[0] if stochastic else encoding
  assert codes.shape == (2, 16)
  head = variables["params"]["encoder"]["mean" if stochastic else "codes"]
  assert head["kernel"].shape == (math.prod(enc_map), 16)
  assert variables["params"]["decoder"]["Dense_0"]["kernel"].shape == (
      16, math.prod(dec_map))
  stages = models.conv_stages(data_shape)
  for half, count in [("encoder", stages),
                      ("decoder", min(stages, models.MAX_DECODER_STAGES) + 1)]:
    convs = {name: shape for name, shape in kernel_shapes(variables,
                                                          half).items()
             if len(shape) == 4}
    assert len(convs) == count, (half, convs)
    assert all(shape[:2] == (5, 5) for shape in convs.values()), convs
  # The default stays the 4×4 of before; the channels do not depend on k.
  default = abstract_init(models.make_autoencoder(
      "conv", data_shape, latent_dim=16, width=width, stochastic=stochastic),
      x)
  for half in ("encoder", "decoder"):
    for name, shape in kernel_shapes(default, half).items():
      other = kernel_shapes(variables, half)[name]
      if len(shape) == 4:
        assert shape[:2] == (4, 4) and shape[2:] == other[2:]
      else:
        assert shape == other


def test_conv_kernel_size_5_runs_at_64x64():
  model = models.make_autoencoder("conv", (64, 64, 3), latent_dim=8,
                                  width=1 / 32, kernel_size=5)
  x = jnp.asarray(np.random.default_rng(0).random((2, 64, 64, 3)),
                  jnp.float32)
  variables = random_variables(model, x)
  codes, x_hat = model.apply(variables, x)
  assert codes.shape == (2, 8) and x_hat.shape == (2, 64, 64, 3)
  assert bool(jnp.isfinite(x_hat).all())


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


# Bad input: each public function and module raises early, with the error
# type and a message naming the argument. Rows are (call, error, pattern).


def _raises(call, error, match):
  with pytest.raises(error, match=match):
    call()


@pytest.mark.parametrize("call,error,match", [
    (lambda: models.scale_width(0, 1.0), ValueError, "features"),
    (lambda: models.scale_width(8.0, 1.0), ValueError, "features"),
    (lambda: models.scale_width(8, 0.0), ValueError, "width"),
    (lambda: models.scale_width(8, True), ValueError, "width"),
    (lambda: models.scale_width(8, "1"), ValueError, "width"),
])
def test_scale_width_rejects_bad_arguments(call, error, match):
  _raises(call, error, match)


@pytest.mark.parametrize("call,error,match", [
    (lambda: models.conv_stages([8, 8, 1]), ValueError, "image_shape.*tuple"),
    (lambda: models.conv_stages((8, 8)), ValueError,
     r"image_shape.*\(height, width"),
    (lambda: models.conv_stages((7, 7, 1)), ValueError, "image_shape.*even"),
    (lambda: models.conv_stages((2, 2, 1)), ValueError, "image_shape"),
    (lambda: models.conv_stages((8, 8, 0)), ValueError, "image_shape"),
    (lambda: models.conv_stages((6, 7, 1), name="out_shape"), ValueError,
     "out_shape"),
])
def test_conv_stages_rejects_bad_arguments(call, error, match):
  _raises(call, error, match)


@pytest.mark.parametrize("call,error,match", [
    (lambda: models.MLPEncoder(0), ValueError, "latent_dim"),
    (lambda: models.MLPEncoder(2.0), ValueError, "latent_dim"),
    (lambda: models.ConvEncoder(-2), ValueError, "latent_dim"),
    (lambda: models.MLPEncoder(2, width=0.0), ValueError, "width"),
    (lambda: models.MLPDecoder(2, width=-1), ValueError, "width"),
    (lambda: models.ConvEncoder(2, width=float("inf")), ValueError, "width"),
    (lambda: models.ConvDecoder((8, 8, 1), width=float("nan")), ValueError,
     "width"),
    (lambda: models.MLPEncoder(2, hidden=(128, 0)), ValueError, "hidden"),
    (lambda: models.MLPEncoder(2, hidden=[128]), ValueError, "hidden.*tuple"),
    (lambda: models.MLPDecoder(2, hidden=128), ValueError, "hidden"),
    (lambda: models.MLPDecoder((2, 0)), ValueError, "out_dim"),
    (lambda: models.MLPDecoder(0), ValueError, "out_dim"),
    (lambda: models.ConvDecoder((7, 7, 1)), ValueError, "out_shape.*even"),
    (lambda: models.ConvDecoder((8, 8)), ValueError,
     r"out_shape.*\(height, width"),
    (lambda: models.ConvDecoder([8, 8, 1]), ValueError, "out_shape.*tuple"),
    (lambda: models.MLPEncoder(2, stochastic="yes"), TypeError, "stochastic"),
    (lambda: models.ConvEncoder(2, stochastic=1), TypeError, "stochastic"),
    (lambda: models.MLPEncoder(2, dtype=jnp.int32), TypeError, "dtype"),
    (lambda: models.MLPDecoder(2, dtype="nonsense"), TypeError, "dtype"),
    (lambda: models.ConvDecoder((8, 8, 1), dtype=bool), TypeError, "dtype"),
    (lambda: models.ConvEncoder(2, axis_name=0), TypeError, "axis_name"),
    (lambda: models.ConvDecoder((8, 8, 1), axis_name=("data",)), TypeError,
     "axis_name"),
    (lambda: models.ConvEncoder(2, kernel_size=0), ValueError, "kernel_size"),
    (lambda: models.ConvEncoder(2, kernel_size=4.0), ValueError,
     "kernel_size"),
    (lambda: models.ConvDecoder((8, 8, 1), kernel_size=-5), ValueError,
     "kernel_size"),
    (lambda: models.ConvDecoder((8, 8, 1), kernel_size=True), ValueError,
     "kernel_size"),
    (lambda: models.Autoencoder(models.MLPEncoder(2), "decoder"), TypeError,
     "decoder"),
    (lambda: models.Autoencoder(None, models.MLPDecoder(2)), TypeError,
     "encoder"),
])
def test_modules_reject_bad_attributes_at_construction(call, error, match):
  _raises(call, error, match)


MLP = models.make_autoencoder("mlp", (2,), latent_dim=3, hidden=(4,))
CONV = models.make_autoencoder("conv", (8, 8, 1), latent_dim=3, width=1 / 16)


def _trace(module, x, **kwargs):
  """Traces `module.init` on `x` (shapes only), so input checks run."""
  return lambda: jax.eval_shape(
      lambda x: module.init(KEY, x, **kwargs), x)


@pytest.mark.parametrize("call,error,match", [
    # MLPEncoder.__call__
    (_trace(models.MLPEncoder(2), jnp.zeros(4)), ValueError,
     "x must be a batch of rank >= 2"),
    (_trace(models.MLPEncoder(2), jnp.zeros((4, 2), jnp.int32)), TypeError,
     "x must have a floating dtype"),
    (_trace(models.MLPEncoder(2), jnp.zeros((4, 2)), train=jnp.array(True)),
     TypeError, "train"),
    # MLPDecoder.__call__
    (_trace(models.MLPDecoder(2), jnp.zeros(4)), ValueError,
     "z must be a batch of rank 2"),
    (_trace(models.MLPDecoder(2), jnp.zeros((4, 2, 1))), ValueError,
     "z must be a batch of rank 2"),
    (_trace(models.MLPDecoder(2), jnp.zeros((4, 2), bool)), TypeError, "z"),
    (_trace(models.MLPEncoder(2), jnp.zeros((0, 2))), ValueError,
     "x must hold at least one example"),
    # ConvEncoder.__call__
    (_trace(models.ConvEncoder(2), jnp.zeros((0, 8, 8, 1))), ValueError,
     "x must hold at least one example"),
    (_trace(models.ConvEncoder(2), jnp.zeros((1, 9, 9, 1))), ValueError,
     r"x\.shape\[1:\].*even"),
    (_trace(models.ConvEncoder(2), jnp.zeros((9, 9, 1))), ValueError,
     "x must be a batch of rank 4"),
    (_trace(models.ConvEncoder(2), jnp.zeros((1, 1, 8, 8, 1))), ValueError,
     "x must be a batch of rank 4"),
    (_trace(models.ConvEncoder(2), jnp.zeros((1, 8, 8, 1)), train="yes"),
     TypeError, "train"),
    # ConvDecoder.__call__
    (_trace(models.ConvDecoder((8, 8, 1)), jnp.zeros(3)), ValueError,
     "z must be a batch of rank 2"),
    (_trace(models.ConvDecoder((8, 8, 1)), jnp.zeros((2, 3), jnp.int8)),
     TypeError, "z"),
    # Autoencoder.__call__ / encode: x against the decoder's data_shape.
    (_trace(MLP, jnp.zeros((4, 3))), ValueError, r"x must have shape \[B, 2\]"),
    (_trace(MLP, jnp.zeros(2)), ValueError, r"x must have shape \[B, 2\]"),
    (_trace(MLP, jnp.zeros((4, 2, 1))), ValueError, r"x.*\[B, 2\]"),
    (_trace(CONV, jnp.zeros((4, 8, 8))), ValueError,
     r"x must have shape \[B, 8, 8, 1\]"),
    (_trace(CONV, jnp.zeros((4, 8, 8, 3))), ValueError, r"x.*\[B, 8, 8, 1\]"),
    (_trace(MLP, jnp.zeros((4, 2), jnp.int32)), TypeError, "x"),
    (_trace(MLP, jnp.zeros((4, 2)), train=1), TypeError, "train"),
    (_trace(MLP, jnp.zeros((4, 2)), method=models.Autoencoder.encode,
            train=None), TypeError, "train"),
    # Autoencoder.decode: z against the encoder's latent_dim.
    (_trace(MLP, jnp.zeros((4, 2)), method=models.Autoencoder.decode),
     ValueError, r"z must have shape \[B, 3\]"),
    (_trace(CONV, jnp.zeros(3), method=models.Autoencoder.decode),
     ValueError, r"z must have shape \[B, 3\]"),
    (_trace(MLP, jnp.zeros((4, 3), jnp.int32),
            method=models.Autoencoder.decode), TypeError, "z"),
])
def test_modules_reject_bad_inputs_at_trace_time(call, error, match):
  _raises(call, error, match)


@pytest.mark.parametrize("call,error,match", [
    (lambda: models.make_autoencoder("rnn", (2,), 4), ValueError, "kind"),
    (lambda: models.make_autoencoder(None, (2,), 4), TypeError, "kind"),
    (lambda: models.make_autoencoder("mlp", (), 4), ValueError, "data_shape"),
    (lambda: models.make_autoencoder("mlp", "2", 4), ValueError, "data_shape"),
    (lambda: models.make_autoencoder("mlp", (2, -1), 4), ValueError,
     "data_shape"),
    (lambda: models.make_autoencoder("conv", (2, 2, 1), 4), ValueError,
     "data_shape"),
    (lambda: models.make_autoencoder("conv", [6, 7, 1], 4), ValueError,
     "data_shape"),
    (lambda: models.make_autoencoder("conv", (8, 8), 4), ValueError,
     "data_shape"),
    (lambda: models.make_autoencoder("mlp", (2,), 0), ValueError,
     "latent_dim"),
    (lambda: models.make_autoencoder("conv", (64, 64, 3), 0), ValueError,
     "latent_dim"),
    (lambda: models.make_autoencoder("mlp", (2,), 4, width=0), ValueError,
     "width"),
    (lambda: models.make_autoencoder("conv", (8, 8, 1), 4, width=-0.5),
     ValueError, "width"),
    (lambda: models.make_autoencoder("mlp", (2,), 4, hidden=128), ValueError,
     "hidden"),
    (lambda: models.make_autoencoder("mlp", (2,), 4, hidden=[64, 0]),
     ValueError, "hidden"),
    (lambda: models.make_autoencoder("mlp", (2,), 4, stochastic="vae"),
     TypeError, "stochastic"),
    (lambda: models.make_autoencoder("mlp", (2,), 4, dtype=jnp.int32),
     TypeError, "dtype"),
    (lambda: models.make_autoencoder("conv", (8, 8, 1), 4, axis_name=1),
     TypeError, "axis_name"),
    (lambda: models.make_autoencoder("conv", (8, 8, 1), 4, kernel_size=0),
     ValueError, "kernel_size"),
    (lambda: models.make_autoencoder("mlp", (2,), 4, kernel_size="5"),
     ValueError, "kernel_size"),
])
def test_make_autoencoder_rejects_bad_arguments(call, error, match):
  _raises(call, error, match)


def test_make_autoencoder_accepts_lists():
  model = models.make_autoencoder("mlp", [8, 8, 1], 4, hidden=[16, 8])
  assert model.decoder.out_dim == (8, 8, 1)
  assert model.encoder.hidden == (16, 8) and model.decoder.hidden == (8, 16)


@pytest.mark.parametrize("call,error,match", [
    (lambda: models.reparameterize(0, jnp.zeros(2), jnp.zeros(2)), TypeError,
     "key"),
    (lambda: models.reparameterize(jax.random.split(KEY), jnp.zeros(2),
                                   jnp.zeros(2)), TypeError, "key"),
    (lambda: models.reparameterize(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2)),
     TypeError, "key"),
    (lambda: models.reparameterize(KEY, jnp.zeros((3, 2)), jnp.zeros((2, 3))),
     ValueError, r"mean and log_var.*same shape.*\(3, 2\).*\(2, 3\)"),
    (lambda: models.reparameterize(KEY, jnp.zeros((3, 2)), jnp.zeros(2)),
     ValueError, "log_var"),
    (lambda: models.reparameterize(KEY, jnp.zeros(2, jnp.int32), jnp.zeros(2)),
     TypeError, "mean"),
    (lambda: models.reparameterize(KEY, jnp.zeros(2), jnp.zeros(2, jnp.int32)),
     TypeError, "log_var"),
    (lambda: models.reparameterize(KEY, jnp.zeros(2),
                                   jnp.zeros(2, jnp.bfloat16)),
     TypeError, "mean and log_var.*same dtype"),
])
def test_reparameterize_rejects_bad_arguments(call, error, match):
  _raises(call, error, match)


def test_reparameterize_accepts_raw_keys_and_traces():
  mean, log_var = jnp.zeros((3, 2)), jnp.zeros((3, 2))
  raw = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(
      models.reparameterize(raw, mean, log_var),
      models.reparameterize(jax.random.wrap_key_data(raw), mean, log_var))
  jitted = jax.eval_shape(jax.jit(models.reparameterize), KEY, mean, log_var)
  assert jitted.shape == (3, 2)


MLP_VARIABLES = random_variables(MLP, jnp.zeros((1, 2)))


@pytest.mark.parametrize("function", [models.encode, models.decode])
@pytest.mark.parametrize("model,variables,error,match", [
    (models.MLPEncoder(3), MLP_VARIABLES, TypeError,
     "model must be an Autoencoder"),
    ("mlp", MLP_VARIABLES, TypeError, "model"),
    (MLP, [MLP_VARIABLES["params"]], TypeError, "variables"),
    (MLP, {"batch_stats": {}}, ValueError, "variables.*'params'"),
])
def test_encode_and_decode_reject_bad_model_or_variables(
    function, model, variables, error, match):
  with pytest.raises(error, match=match):
    function(model, variables, jnp.zeros((4, 3)))


@pytest.mark.parametrize("x,error,match", [
    (jnp.zeros((4, 3)), ValueError, r"x must have shape \[B, 2\]"),
    (jnp.zeros(2), ValueError, r"x must have shape \[B, 2\]"),
    # Was a ZeroDivisionError inside the encoder's reshape.
    (jnp.zeros((0, 2)), ValueError,
     r"x must hold at least one example; got shape \(0, 2\)"),
    (jnp.zeros((4, 2), jnp.int32), TypeError, "x must have a floating dtype"),
])
def test_encode_rejects_bad_inputs(x, error, match):
  with pytest.raises(error, match=match):
    models.encode(MLP, MLP_VARIABLES, x)
  # The same checks run when encode is traced inside another jitted function.
  with pytest.raises(error, match=match):
    jax.eval_shape(lambda x: models.encode(MLP, MLP_VARIABLES, x), x)


@pytest.mark.parametrize("z,error,match", [
    (jnp.zeros((4, 2)), ValueError, r"z must have shape \[B, 3\]"),
    # Was an empty reconstruction, silently.
    (jnp.zeros((0, 3)), ValueError, "z must hold at least one example"),
    (jnp.zeros((4, 3, 1)), ValueError, r"z must have shape \[B, 3\]"),
    (jnp.zeros((4, 3), jnp.int32), TypeError, "z must have a floating dtype"),
])
def test_decode_rejects_bad_inputs(z, error, match):
  with pytest.raises(error, match=match):
    models.decode(MLP, MLP_VARIABLES, z)
  with pytest.raises(error, match=match):
    jax.eval_shape(lambda z: models.decode(MLP, MLP_VARIABLES, z), z)


def test_modules_are_hashable_for_static_arguments():
  model = models.make_autoencoder("conv", (28, 28, 1), 8, width=0.5)
  assert hash(model) == hash(
      models.make_autoencoder("conv", (28, 28, 1), 8, width=0.5))
  assert isinstance(model.encoder, nn.Module)
