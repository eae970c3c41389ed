"""Encoders and decoders of the Coulomb autoencoder and its baselines.

Two families of `flax.linen` modules:

* `MLPEncoder` / `MLPDecoder`: fully connected, ReLU hidden layers, linear
  output. With the defaults they are the paper's Grid networks, encoder
  2→128→128→h and decoder h→128→128→2.
* `ConvEncoder` / `ConvDecoder`: the CelebA architecture of the WAE paper
  (Tolstikhin et al. 2018, appendix), with k×k kernels (`kernel_size`,
  default 4; WAE's are 5×5), generalised to other image sizes by choosing the
  number of stride-2 stages from the image size (`conv_stages`). With SAME
  padding the feature-map sizes do not depend on k.

Every module takes `width`, a factor scaling all hidden widths and channel
counts (`scale_width`; the paper's width ablation uses 0.25, 0.5 and 1), and
its `__call__` a keyword `train` (BatchNorm on batch statistics, updating its
running averages). An encoder maps `x: [B, *data_shape]` to codes `[B, h]`,
or when `stochastic` (the VAE) to a Gaussian's `(mean, log_var)`; a decoder
maps `z: [B, h]` back. `Autoencoder` pairs them (one `init`, either half in
an `apply`), `make_autoencoder` builds the pair for a data shape, and `encode`
/ `decode` run a trained model's halves, jitted.

Bad arguments raise a `ValueError` or `TypeError` naming the argument: module
attributes at construction, inputs when traced (shapes and dtypes only).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping
from typing import Any, Optional, Sequence, Union, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from couae_jax import _checks
from couae_jax._architecture import (
  DEFAULT_KERNEL_SIZE,
  ENCODER_CHANNELS,
  MAX_DECODER_STAGES,
  MIN_FEATURE_SIZE,
  conv_stages,
  min_parameter_count,
  scale_width,
)

_BATCH_NORM: dict[str, Any] = dict(momentum=0.9, epsilon=1e-5)

Encoding = Union[jax.Array, tuple[jax.Array, jax.Array]]


# ---------------------------------------------------------------------------
# Validation (the architecture rules are in `_architecture`).


def _check_dtype(dtype) -> None:
  """None (infer the computation dtype) or a floating dtype."""
  if dtype is not None:
    _checks.floating_dtype("dtype", dtype)


def _check_conv_fields(module) -> None:
  """The attributes the conv encoder and decoder share."""
  _checks.positive_number("width", module.width)
  _check_dtype(module.dtype)
  _checks.axis_name("axis_name", module.axis_name)
  _checks.positive_int("kernel_size", module.kernel_size)


def _check_batch(name: str, x, *, rank: Optional[int] = None,
                 min_rank: int = 2,
                 example_shape: Optional[tuple[int, ...]] = None) -> jax.Array:
  """Checks `x` is a floating batch `[B, ...]` and returns it as an array.

  `example_shape`, if given, is the required shape of `x[0]`; otherwise `x`
  needs rank `rank`, or at least `min_rank`.
  """
  x = _checks.floating_array(name, x, min_rank=0)
  shape = tuple(x.shape)
  if x.ndim and not shape[0]:
    # An empty batch would otherwise fail inside a reshape with a
    # ZeroDivisionError (encoders), or pass silently (decoders).
    raise ValueError(
        f"{name} must hold at least one example; got shape {shape}.")
  if example_shape is not None:
    if shape[1:] != example_shape:
      dims = ", ".join(str(d) for d in example_shape)
      raise ValueError(
          f"{name} must have shape [B, {dims}] (a batch of the model's "
          f"examples); got shape {shape}.")
  elif x.ndim < min_rank or (rank is not None and x.ndim != rank):
    expected = f"rank {rank}" if rank is not None else f"rank >= {min_rank}"
    raise ValueError(
        f"{name} must be a batch of {expected} (leading batch dimension); "
        f"got shape {shape}.")
  return x


# ---------------------------------------------------------------------------
# Layers shared by the modules. Each is called inside a compact method, so the
# submodules it creates belong to the caller.


def _latent_head(x: jax.Array, latent_dim: int, stochastic: bool,
                 dtype: Optional[Any]) -> Encoding:
  """The encoder's linear output: codes `[B, h]` or `(mean, log_var)`."""
  if stochastic:
    return (nn.Dense(latent_dim, dtype=dtype, name="mean")(x),
            nn.Dense(latent_dim, dtype=dtype, name="log_var")(x))
  return nn.Dense(latent_dim, dtype=dtype, name="codes")(x)


def _bn_relu(x: jax.Array, train: bool, dtype: Optional[Any],
             axis_name: Optional[str]) -> jax.Array:
  # With axis_name, the batch statistics are those of the global batch, so a
  # data-parallel step computes what the single-device step does.
  x = nn.BatchNorm(use_running_average=not train, dtype=dtype,
                   axis_name=axis_name, **_BATCH_NORM)(x)
  return nn.relu(x)


# ---------------------------------------------------------------------------
# Fully connected networks.


class MLPEncoder(nn.Module):
  """Fully connected encoder: ReLU hidden layers, linear output.

  Inputs of any shape `[B, ...]` are flattened to `[B, d]` first. The
  parameters are a `Dense_<i>` layer per hidden width and the head `codes`
  (`[d', h]` kernel), or `mean` and `log_var` when stochastic.

  Attributes:
    latent_dim: the code size h, an int >= 1.
    hidden: nominal widths of the hidden layers, input side first (default
      `(128, 128)`; `()` gives a linear encoder).
    width: factor scaling every hidden width (`scale_width`; default 1).
    stochastic: return a diagonal Gaussian's `(mean, log_var)` (VAE) instead
      of deterministic codes (default False).
    dtype: computation dtype (parameters stay float32); None (default) infers
      it.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> encoder = models.MLPEncoder(latent_dim=3, hidden=(16,))
    >>> x = jnp.ones((5, 2))
    >>> variables = encoder.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables["params"])
    {'Dense_0': {'bias': (16,), 'kernel': (2, 16)}, 'codes': {'bias': (3,), 'kernel': (16, 3)}}
    >>> encoder.apply(variables, x).shape
    (5, 3)
  """
  latent_dim: int
  hidden: tuple[int, ...] = (128, 128)
  width: float = 1.0
  stochastic: bool = False
  dtype: Optional[Any] = None

  def __post_init__(self):
    _checks.positive_int("latent_dim", self.latent_dim)
    _checks.shape_tuple("hidden", self.hidden, min_rank=0, allow_list=False)
    _checks.positive_number("width", self.width)
    _checks.python_bool("stochastic", self.stochastic)
    _check_dtype(self.dtype)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> Encoding:
    """Encodes `x: [B, ...]` (floating, flattened per example) to codes
    `[B, h]` or `(mean, log_var)`; `train` is unused (a uniform interface)."""
    _checks.python_bool("train", train)
    x = _check_batch("x", x, min_rank=2)
    x = x.reshape(x.shape[0], -1)
    for features in self.hidden:
      x = nn.relu(nn.Dense(scale_width(features, self.width),
                           dtype=self.dtype)(x))
    return _latent_head(x, self.latent_dim, self.stochastic, self.dtype)


class MLPDecoder(nn.Module):
  """Fully connected decoder: ReLU hidden layers, linear output.

  Attributes:
    out_dim: the output size per example: an int `d` gives `[B, d]`; a shape
      tuple gives `[B, *out_dim]` (e.g. `(28, 28, 1)` for an MLP on images).
    hidden: nominal widths of the hidden layers, code side first (default
      `(128, 128)`).
    width: factor scaling every hidden width (`scale_width`; default 1).
    dtype: computation dtype (parameters stay float32); None (default) infers
      it.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> decoder = models.MLPDecoder((4, 4, 1), hidden=(8,))
    >>> z = jnp.ones((5, 2))
    >>> variables = decoder.init(jax.random.key(0), z)
    >>> decoder.apply(variables, z).shape
    (5, 4, 4, 1)
  """
  out_dim: Union[int, tuple[int, ...]]
  hidden: tuple[int, ...] = (128, 128)
  width: float = 1.0
  dtype: Optional[Any] = None

  def __post_init__(self):
    _checks.shape_tuple("out_dim", self._out_shape, allow_list=False)
    _checks.shape_tuple("hidden", self.hidden, min_rank=0, allow_list=False)
    _checks.positive_number("width", self.width)
    _check_dtype(self.dtype)
    super().__post_init__()

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> jax.Array:
    """Decodes codes `z: [B, h]` to `[B, *out_dim]`; `train` is unused."""
    _checks.python_bool("train", train)
    z = _check_batch("z", z, rank=2)
    for features in self.hidden:
      z = nn.relu(nn.Dense(scale_width(features, self.width),
                           dtype=self.dtype)(z))
    x = nn.Dense(math.prod(self._out_shape), dtype=self.dtype,
                 name="output")(z)
    return x.reshape(z.shape[0], *self._out_shape)

  @property
  def _out_shape(self) -> tuple[int, ...]:
    if isinstance(self.out_dim, numbers.Integral):
      return (self.out_dim,)
    # A tuple, or a value that `setup`'s `shape_tuple` rejects as it is.
    return cast(tuple[int, ...], self.out_dim)


# ---------------------------------------------------------------------------
# Convolutional networks.


class ConvEncoder(nn.Module):
  """Convolutional encoder of the WAE CelebA architecture.

  `conv_stages(image)` stride-2 k×k convolutions (k = `kernel_size`, SAME
  padding) with channels
  `ENCODER_CHANNELS[:stages]` (128, 256, 512, 1024) scaled by `width`, each
  followed by BatchNorm (momentum 0.9, epsilon 1e-5) and ReLU, then a flatten
  and a dense code layer. A
  64×64×3 image becomes a 4×4×1024 map; 28×28×1 becomes 7×7×256; 8×8×1
  becomes 2×2×256.

  Attributes:
    latent_dim: the code size h, an int >= 1.
    width: factor scaling every channel count (`scale_width`; default 1).
    stochastic: return a diagonal Gaussian's `(mean, log_var)` (VAE) instead
      of deterministic codes (default False).
    dtype: computation dtype (parameters stay float32); None (default) infers
      it.
    axis_name: the data-parallel mesh axis over which BatchNorm averages its
      batch statistics in training (inside `shard_map`); None (default) for
      one device.
    kernel_size: the side k of the square kernels, an int >= 1 (default
      `DEFAULT_KERNEL_SIZE`, 4; WAE's CelebA encoder uses 5).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> encoder = models.ConvEncoder(latent_dim=4, width=1 / 16)
    >>> x = jnp.ones((2, 8, 8, 1))
    >>> variables = jax.eval_shape(encoder.init, jax.random.key(0), x)
    >>> sorted(variables), variables["params"]["Conv_1"]["kernel"].shape
    (['batch_stats', 'params'], (4, 4, 8, 16))
  """
  latent_dim: int
  width: float = 1.0
  stochastic: bool = False
  dtype: Optional[Any] = None
  axis_name: Optional[str] = None
  kernel_size: int = DEFAULT_KERNEL_SIZE

  def __post_init__(self):
    _checks.positive_int("latent_dim", self.latent_dim)
    _checks.python_bool("stochastic", self.stochastic)
    _check_conv_fields(self)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> Encoding:
    """Encodes images `x: [B, H, W, C]` (H, W even and >= 4,
    `conv_stages`) to codes `[B, h]` or `(mean, log_var)`. With `train`,
    BatchNorm normalises with batch statistics and updates its running
    averages (`mutable=['batch_stats']`); without, it uses them."""
    _checks.python_bool("train", train)
    x = _check_batch("x", x, rank=4)
    stages = conv_stages(tuple(x.shape[1:]), name="x.shape[1:]")
    kernel = (self.kernel_size, self.kernel_size)
    for channels in ENCODER_CHANNELS[:stages]:
      x = nn.Conv(scale_width(channels, self.width), kernel, strides=(2, 2),
                  padding="SAME", use_bias=False, dtype=self.dtype)(x)
      x = _bn_relu(x, train, self.dtype, self.axis_name)
    x = x.reshape(x.shape[0], -1)
    return _latent_head(x, self.latent_dim, self.stochastic, self.dtype)


class ConvDecoder(nn.Module):
  """Convolutional decoder of the WAE CelebA architecture.

  With `u = min(conv_stages(out_shape), MAX_DECODER_STAGES)` upsampling
  stages: a dense layer to an `(H / 2^u) × (W / 2^u) × 1024·width` map and a
  ReLU, then `u` stride-2 k×k transposed convolutions (k = `kernel_size`,
  SAME padding) halving the channels (512, 256, 128 at width 1), each
  followed by BatchNorm and ReLU, then a stride-1 k×k transposed convolution
  to the output channels. For 64×64×3
  this is WAE's decoder: 8×8×1024 → 16×16×512 → 32×32×256 → 64×64×128 →
  64×64×3; 28×28×1 goes 7×7×1024 → 14×14×512 → 28×28×256 → 28×28×1.

  The output is linear (no sigmoid), as in WAE: it is fit to the data by the
  L2 reconstruction error, so it suits any pixel range. The loaders in
  `couae_jax.data` return pixels in [0, 1].

  Attributes:
    out_shape: `(height, width, channels)` of the images, a tuple that
      `conv_stages` accepts.
    width: factor scaling every channel count (`scale_width`; default 1).
    dtype, axis_name, kernel_size: as in `ConvEncoder`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> decoder = models.ConvDecoder((8, 8, 1), width=1 / 16)
    >>> z = jnp.ones((2, 4))
    >>> variables = jax.eval_shape(decoder.init, jax.random.key(0), z)
    >>> variables["params"]["Dense_0"]["kernel"].shape  # to a 2×2×64 map
    (4, 256)
  """
  out_shape: tuple[int, int, int]
  width: float = 1.0
  dtype: Optional[Any] = None
  axis_name: Optional[str] = None
  kernel_size: int = DEFAULT_KERNEL_SIZE

  def __post_init__(self):
    conv_stages(self.out_shape, name="out_shape")
    _check_conv_fields(self)
    super().__post_init__()

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> jax.Array:
    """Decodes codes `z: [B, h]` to images `[B, *out_shape]`; `train` as
    in `ConvEncoder`."""
    _checks.python_bool("train", train)
    z = _check_batch("z", z, rank=2)
    height, width, channels = self.out_shape
    stages = min(conv_stages(self.out_shape), MAX_DECODER_STAGES)
    rows, cols = height // 2**stages, width // 2**stages
    features = scale_width(ENCODER_CHANNELS[-1], self.width)
    x = nn.Dense(rows * cols * features, dtype=self.dtype)(z)
    x = nn.relu(x.reshape(z.shape[0], rows, cols, features))
    kernel = (self.kernel_size, self.kernel_size)
    for stage in range(1, stages + 1):
      x = nn.ConvTranspose(
          scale_width(ENCODER_CHANNELS[-1] // 2**stage, self.width), kernel,
          strides=(2, 2), padding="SAME", use_bias=False, dtype=self.dtype)(x)
      x = _bn_relu(x, train, self.dtype, self.axis_name)
    return nn.ConvTranspose(channels, kernel, padding="SAME",
                            dtype=self.dtype, name="output")(x)


# ---------------------------------------------------------------------------
# The autoencoder.


def reparameterize(key: jax.Array, mean: jax.Array,
                   log_var: jax.Array) -> jax.Array:
  """Samples `z = mean + exp(log_var / 2) · ε` with `ε ~ N(0, I)`: `key` one
  PRNG key, `mean` and `log_var` floating arrays of one shape and dtype
  (`[B, h]` or any), `z` of theirs.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> mean, log_var = jnp.zeros((4, 2)), jnp.full((4, 2), -50.0)
    >>> z = models.reparameterize(jax.random.key(0), mean + 1.0, log_var)
    >>> z.shape, z.dtype, z.round(3).tolist()[0]  # tiny variance: z ≈ mean
    ((4, 2), dtype('float32'), [1.0, 1.0])
  """
  _checks.prng_key("key", key)
  mean, log_var = _checks.gaussian_parameters(mean, log_var, min_rank=0)
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * log_var) * eps


class Autoencoder(nn.Module):
  """An encoder and a decoder trained together.

  Parameters live under `params/encoder` and `params/decoder` (BatchNorm
  statistics under `batch_stats`). Run a half with
  `model.apply(variables, x, method=Autoencoder.encode)`, or both and
  anything between them with a function of the bound module (as
  `train.train_step` does). With this module's networks, `x` is checked to
  be `[B, *data_shape]` and `z` `[B, h]`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> model = models.Autoencoder(models.MLPEncoder(2, hidden=(8,)),
    ...                            models.MLPDecoder(3, hidden=(8,)))
    >>> x = jnp.ones((4, 3))
    >>> variables = model.init(jax.random.key(0), x)
    >>> sorted(variables["params"])
    ['decoder', 'encoder']
    >>> codes, x_hat = model.apply(variables, x)
    >>> codes.shape, x_hat.shape
    ((4, 2), (4, 3))
  """
  encoder: nn.Module
  decoder: nn.Module

  def __post_init__(self):
    for name in ("encoder", "decoder"):
      if not isinstance(getattr(self, name), nn.Module):
        raise TypeError(
            f"{name} must be a flax.linen Module; got "
            f"{type(getattr(self, name)).__name__}.")
    super().__post_init__()

  @property
  def data_shape(self) -> Optional[tuple[int, ...]]:
    """The shape of one example, `x[0]`: what this module's decoders output;
    None for a decoder of another kind."""
    if isinstance(self.decoder, MLPDecoder):
      return self.decoder._out_shape
    if isinstance(self.decoder, ConvDecoder):
      return self.decoder.out_shape
    return None

  def encode(self, x: jax.Array, *, train: bool = False) -> Encoding:
    """Codes `[B, h]` (or `(mean, log_var)`) of `x: [B, *data_shape]`.

    `train`: the encoder's training mode.
    """
    _checks.python_bool("train", train)
    data_shape = self.data_shape
    if data_shape is not None:
      x = _check_batch("x", x, example_shape=data_shape)
    return self.encoder(x, train=train)

  def decode(self, z: jax.Array, *, train: bool = False) -> jax.Array:
    """Reconstructions `[B, *data_shape]` of codes `z: [B, h]`."""
    _checks.python_bool("train", train)
    latent_dim = getattr(self.encoder, "latent_dim", None)
    if latent_dim is not None:
      z = _check_batch("z", z, example_shape=(latent_dim,))
    return self.decoder(z, train=train)

  def __call__(self, x: jax.Array, *,
               train: bool = False) -> tuple[Encoding, jax.Array]:
    """`(encode(x), decode(codes))`, a Gaussian encoder's codes its mean:
    what `init` runs to create both halves' variables."""
    encoding = self.encode(x, train=train)
    codes = encoding[0] if isinstance(encoding, tuple) else encoding
    return encoding, self.decode(codes, train=train)


def make_autoencoder(kind: str, data_shape: Sequence[int], latent_dim: int, *,
                     width: float = 1.0,
                     hidden: Sequence[int] = (128, 128),
                     stochastic: bool = False,
                     dtype: Optional[Any] = None,
                     axis_name: Optional[str] = None,
                     kernel_size: int = DEFAULT_KERNEL_SIZE) -> Autoencoder:
  """Builds the encoder/decoder pair for data of shape `data_shape`.

  `kind` 'mlp' (`MLPEncoder`/`MLPDecoder`, the decoder mirroring `hidden`)
  or 'conv' (`ConvEncoder`/`ConvDecoder`, `data_shape = (H, W, C)`, with
  `axis_name` and `kernel_size`); the other arguments are the modules'
  attributes. Returns an unbound `Autoencoder`: `init(key, x)` with a batch
  `x: [B, *data_shape]`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> model = models.make_autoencoder("mlp", (2,), latent_dim=2)
    >>> model.encoder.hidden, model.decoder.out_dim
    ((128, 128), (2,))
    >>> conv = models.make_autoencoder("conv", (8, 8, 1), 4, width=1 / 16)
    >>> x = jnp.ones((3, 8, 8, 1))
    >>> (codes, x_hat), _ = jax.eval_shape(conv.init_with_output,
    ...                                    jax.random.key(0), x)
    >>> codes.shape, x_hat.shape
    ((3, 4), (3, 8, 8, 1))
  """
  if not isinstance(kind, str):
    raise TypeError(f"kind must be 'mlp' or 'conv'; got {kind!r}.")
  if kind not in ("mlp", "conv"):
    raise ValueError(f"kind must be 'mlp' or 'conv'; got {kind!r}.")
  data_shape = _checks.shape_tuple("data_shape", data_shape)
  hidden = _checks.shape_tuple("hidden", hidden, min_rank=0)
  _checks.positive_int("kernel_size", kernel_size)
  if kind == "mlp":
    return Autoencoder(
        MLPEncoder(latent_dim, hidden=hidden, width=width,
                   stochastic=stochastic, dtype=dtype),
        MLPDecoder(data_shape, hidden=hidden[::-1], width=width, dtype=dtype))
  conv_stages(data_shape, name="data_shape")
  height, columns, channels = data_shape
  return Autoencoder(
      ConvEncoder(latent_dim, width=width, stochastic=stochastic,
                  dtype=dtype, axis_name=axis_name, kernel_size=kernel_size),
      ConvDecoder((height, columns, channels), width=width, dtype=dtype,
                  axis_name=axis_name, kernel_size=kernel_size))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(method, model: Autoencoder, variables: Any, inputs: jax.Array):
  # `apply` is typed for `mutable=` too; without it, it returns the output.
  return model.apply(variables, inputs, method=method)


def _run_half(method, model, variables, inputs):
  """`method` (`Autoencoder.encode` or `.decode`) of a trained `model`."""
  if not isinstance(model, Autoencoder):
    raise TypeError(
        f"model must be an Autoencoder (see make_autoencoder); got "
        f"{type(model).__name__}.")
  if not isinstance(variables, Mapping):
    raise TypeError(f"variables must be the mapping `model.init` returns; "
                    f"got {type(variables).__name__}.")
  if "params" not in variables:
    raise ValueError(f"variables must hold a 'params' collection, as "
                     f"`model.init` returns; got {sorted(variables)}.")
  return _apply(method, model, variables, inputs)


def encode(model: Autoencoder, variables: Any, x: jax.Array) -> Encoding:
  """Encodes `x: [B, *data_shape]` with trained `variables`
  (`{'params': ..., 'batch_stats': ...}` as `model.init` returns them) in
  inference mode, BatchNorm on its running averages; jitted per model and
  input shape. Returns codes `[B, h]`, or `(mean, log_var)`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> model = models.make_autoencoder("mlp", (2,), 3, hidden=(8,))
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 2)))
    >>> models.encode(model, variables, jnp.ones((5, 2))).shape
    (5, 3)
  """
  return cast(Encoding, _run_half(Autoencoder.encode, model, variables, x))


def decode(model: Autoencoder, variables: Any, z: jax.Array) -> jax.Array:
  """Decodes codes `z: [B, h]` to `[B, *data_shape]`, as `encode` encodes."""
  return cast(jax.Array, _run_half(Autoencoder.decode, model, variables, z))


__all__ = [
    "DEFAULT_KERNEL_SIZE", "ENCODER_CHANNELS",
    "MAX_DECODER_STAGES", "MIN_FEATURE_SIZE",
    "Autoencoder", "ConvDecoder", "ConvEncoder", "Encoding", "MLPDecoder",
    "MLPEncoder", "conv_stages", "decode", "encode", "make_autoencoder",
    "min_parameter_count",
    "reparameterize", "scale_width",
]
