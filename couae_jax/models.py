"""Encoders and decoders of the Coulomb autoencoder and its baselines.

Two families of `flax.linen` modules:

* `MLPEncoder` / `MLPDecoder`: fully connected, ReLU hidden layers, linear
  output. With the defaults they are the paper's Grid networks, encoder
  2→128→128→h and decoder h→128→128→2.
* `ConvEncoder` / `ConvDecoder`: the CelebA architecture of the WAE paper
  (Tolstikhin et al. 2018, appendix), with 4×4 kernels, generalised to other
  image sizes by choosing the number of stride-2 stages from the image size
  (`conv_stages`).

Every module takes `width`, a factor that scales all hidden widths and channel
counts (the paper's width ablation uses 0.25, 0.5 and 1): a layer of nominal
width `w` gets `scale_width(w, width) = max(1, round(w * width))` units. Every
module's `__call__` takes a keyword `train` (BatchNorm uses batch statistics
and updates its running averages when True), so encoders and decoders are
interchangeable.

An encoder maps `x: [B, *data_shape]` to codes `[B, h]`, or, when
`stochastic=True` (the VAE), to the Gaussian posterior's `(mean, log_var)`,
each `[B, h]`. A decoder maps `z: [B, h]` to `[B, *data_shape]`.

`Autoencoder` pairs the two so one `init` creates both halves' variables, and a
trainer can run either half inside one `apply` through its `encode` and
`decode` methods; `make_autoencoder` builds the pair for a data shape, and the
jitted `encode` / `decode` functions run a trained model's halves on restored
variables.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from couae_jax import _checks

#: Name of the RNG stream `Autoencoder` draws stochastic codes from.
LATENT_RNG = "latent"

#: Channels of the convolutional encoder's stages at width 1 (WAE, CelebA).
ENCODER_CHANNELS = (128, 256, 512, 1024)
#: Most stride-2 stages in the decoder: WAE's CelebA decoder starts from 8×8.
MAX_DECODER_STAGES = 3
#: Smallest spatial size the encoder's last feature map may have.
MIN_FEATURE_SIZE = 2

_KERNEL = (4, 4)
_BATCH_NORM = dict(momentum=0.9, epsilon=1e-5)

Encoding = Union[jax.Array, tuple[jax.Array, jax.Array]]


# ---------------------------------------------------------------------------
# Validation and architecture rules.


def scale_width(features: int, width: float) -> int:
  """Units of a layer of nominal size `features` at width factor `width`."""
  return max(1, round(features * width))


def _check_width(width) -> None:
  if (isinstance(width, bool) or not isinstance(width, numbers.Real)
      or not math.isfinite(width) or width <= 0):
    raise ValueError(f"width must be a finite number > 0; got {width!r}.")


def _check_shape(name: str, shape, *, allow_empty: bool = False) -> None:
  """Checks `shape` is a tuple of ints >= 1 (tuples keep modules hashable, so
  they can be static arguments of `jax.jit`)."""
  if not isinstance(shape, tuple) or (not shape and not allow_empty) or any(
      isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1
      for d in shape):
    raise ValueError(
        f"{name} must be a {'' if allow_empty else 'non-empty '}tuple of "
        f"positive ints; got {shape!r}.")


def conv_stages(image_shape: tuple[int, int, int], *,
                name: str = "image_shape") -> int:
  """Number of stride-2 convolutions the encoder applies to an image.

  The rule: halve the height and width as often as both stay integers of at
  least `MIN_FEATURE_SIZE` (2), at most `len(ENCODER_CHANNELS)` (4) times.
  64×64 gives 4 stages (a 4×4 map, as in WAE), 32×32 gives 4 (2×2),
  28×28 gives 2 (7×7), 8×8 gives 2 (2×2). The decoder upsamples with
  `min(stages, MAX_DECODER_STAGES)` stride-2 transposed convolutions.

  Args:
    image_shape: `(height, width, channels)`.
    name: the argument that errors name.

  Returns:
    The number of stages, >= 1.

  Raises:
    ValueError: the shape is not `(H, W, C)`, or H or W is odd or < 4.
  """
  _check_shape(name, image_shape)
  if len(image_shape) != 3:
    raise ValueError(
        f"{name} of a convolutional model must be (height, width, channels); "
        f"got {image_shape}.")
  stages = 0
  while stages < len(ENCODER_CHANNELS) and all(
      size % 2 ** (stages + 1) == 0
      and size // 2 ** (stages + 1) >= MIN_FEATURE_SIZE
      for size in image_shape[:2]):
    stages += 1
  if stages == 0:
    raise ValueError(
        f"{name}: convolutional models need an even height and width of at "
        f"least {2 * MIN_FEATURE_SIZE}; got {image_shape}. Pad or resize the "
        "images, or use kind='mlp'.")
  return stages


def _check_batch(name: str, x: jax.Array, min_rank: int) -> None:
  if x.ndim < min_rank:
    raise ValueError(
        f"{name} must be a batch of rank >= {min_rank} (leading batch "
        f"dimension); got shape {tuple(x.shape)}.")


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

  Inputs of any shape `[B, ...]` are flattened to `[B, d]` first.

  Attributes:
    latent_dim: the code size h.
    hidden: nominal widths of the hidden layers, input side first.
    width: factor scaling every hidden width (`scale_width`).
    stochastic: return a diagonal Gaussian's `(mean, log_var)` (VAE) instead
      of deterministic codes.
    dtype: computation dtype (parameters stay float32); None infers it.
  """
  latent_dim: int
  hidden: tuple[int, ...] = (128, 128)
  width: float = 1.0
  stochastic: bool = False
  dtype: Optional[Any] = None

  def __post_init__(self):
    _checks.positive_int("latent_dim", self.latent_dim)
    _check_shape("hidden", self.hidden, allow_empty=True)
    _check_width(self.width)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> Encoding:
    """Encodes `x: [B, ...]` to codes `[B, h]` or `(mean, log_var)`.

    `train` is accepted for a uniform interface; the MLP has no layers that
    depend on it.
    """
    del train
    _check_batch("x", x, 2)
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
    hidden: nominal widths of the hidden layers, code side first.
    width: factor scaling every hidden width (`scale_width`).
    dtype: computation dtype (parameters stay float32); None infers it.
  """
  out_dim: Union[int, tuple[int, ...]]
  hidden: tuple[int, ...] = (128, 128)
  width: float = 1.0
  dtype: Optional[Any] = None

  def __post_init__(self):
    _check_shape("out_dim", self._out_shape)
    _check_shape("hidden", self.hidden, allow_empty=True)
    _check_width(self.width)
    super().__post_init__()

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> jax.Array:
    """Decodes codes `z: [B, h]` to `[B, *out_dim]`; `train` is unused."""
    del train
    _check_batch("z", z, 2)
    for features in self.hidden:
      z = nn.relu(nn.Dense(scale_width(features, self.width),
                           dtype=self.dtype)(z))
    x = nn.Dense(math.prod(self._out_shape), dtype=self.dtype,
                 name="output")(z)
    return x.reshape(z.shape[0], *self._out_shape)

  @property
  def _out_shape(self) -> tuple[int, ...]:
    return ((self.out_dim,) if isinstance(self.out_dim, numbers.Integral)
            else self.out_dim)


# ---------------------------------------------------------------------------
# Convolutional networks.


class ConvEncoder(nn.Module):
  """Convolutional encoder of the WAE CelebA architecture.

  `conv_stages(image)` stride-2 4×4 convolutions with channels
  `ENCODER_CHANNELS[:stages]` (128, 256, 512, 1024) scaled by `width`, each
  followed by BatchNorm (momentum 0.9, epsilon 1e-5) and ReLU, then a flatten
  and a dense code layer. A
  64×64×3 image becomes a 4×4×1024 map; 28×28×1 becomes 7×7×256; 8×8×1
  becomes 2×2×256.

  Attributes:
    latent_dim: the code size h.
    width: factor scaling every channel count (`scale_width`).
    stochastic: return a diagonal Gaussian's `(mean, log_var)` (VAE) instead
      of deterministic codes.
    dtype: computation dtype (parameters stay float32); None infers it.
    axis_name: the data-parallel mesh axis over which BatchNorm averages its
      batch statistics in training (inside `shard_map`); None for one device.
  """
  latent_dim: int
  width: float = 1.0
  stochastic: bool = False
  dtype: Optional[Any] = None
  axis_name: Optional[str] = None

  def __post_init__(self):
    _checks.positive_int("latent_dim", self.latent_dim)
    _check_width(self.width)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> Encoding:
    """Encodes images `x: [B, H, W, C]` to codes `[B, h]` or `(mean, log_var)`.

    Args:
      x: images, NHWC, in the range the decoder is trained to output.
      train: BatchNorm normalises with batch statistics and updates its
        running averages (`mutable=['batch_stats']`) when True, and uses the
        running averages when False.
    """
    _check_batch("x", x, 4)
    stages = conv_stages(tuple(x.shape[1:]), name="x.shape[1:]")
    for channels in ENCODER_CHANNELS[:stages]:
      x = nn.Conv(scale_width(channels, self.width), _KERNEL, strides=(2, 2),
                  padding="SAME", use_bias=False, dtype=self.dtype)(x)
      x = _bn_relu(x, train, self.dtype, self.axis_name)
    x = x.reshape(x.shape[0], -1)
    return _latent_head(x, self.latent_dim, self.stochastic, self.dtype)


class ConvDecoder(nn.Module):
  """Convolutional decoder of the WAE CelebA architecture.

  With `u = min(conv_stages(out_shape), MAX_DECODER_STAGES)` upsampling
  stages: a dense layer to an `(H / 2^u) × (W / 2^u) × 1024·width` map and a
  ReLU, then `u` stride-2 4×4 transposed convolutions halving the channels
  (512, 256, 128 at width 1), each followed by BatchNorm and ReLU, then a
  stride-1 4×4 transposed convolution to the output channels. For 64×64×3
  this is WAE's decoder: 8×8×1024 → 16×16×512 → 32×32×256 → 64×64×128 →
  64×64×3; 28×28×1 goes 7×7×1024 → 14×14×512 → 28×28×256 → 28×28×1.

  The output is linear (no sigmoid), as in WAE: it is fit to the data by the
  L2 reconstruction error, so it suits any pixel range. The loaders in
  `couae_jax.data` return pixels in [0, 1].

  Attributes:
    out_shape: `(height, width, channels)` of the images.
    width: factor scaling every channel count (`scale_width`).
    dtype: computation dtype (parameters stay float32); None infers it.
    axis_name: BatchNorm's data-parallel axis, as in `ConvEncoder`.
  """
  out_shape: tuple[int, int, int]
  width: float = 1.0
  dtype: Optional[Any] = None
  axis_name: Optional[str] = None

  def __post_init__(self):
    conv_stages(self.out_shape, name="out_shape")
    _check_width(self.width)
    super().__post_init__()

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> jax.Array:
    """Decodes codes `z: [B, h]` to images `[B, H, W, C]`.

    Args:
      z: codes.
      train: BatchNorm mode, as in `ConvEncoder`.
    """
    _check_batch("z", z, 2)
    height, width, channels = self.out_shape
    stages = min(conv_stages(self.out_shape), MAX_DECODER_STAGES)
    rows, cols = height // 2**stages, width // 2**stages
    features = scale_width(ENCODER_CHANNELS[-1], self.width)
    x = nn.Dense(rows * cols * features, dtype=self.dtype)(z)
    x = nn.relu(x.reshape(z.shape[0], rows, cols, features))
    for stage in range(1, stages + 1):
      x = nn.ConvTranspose(
          scale_width(ENCODER_CHANNELS[-1] // 2**stage, self.width), _KERNEL,
          strides=(2, 2), padding="SAME", use_bias=False, dtype=self.dtype)(x)
      x = _bn_relu(x, train, self.dtype, self.axis_name)
    return nn.ConvTranspose(channels, _KERNEL, padding="SAME",
                            dtype=self.dtype, name="output")(x)


# ---------------------------------------------------------------------------
# The autoencoder.


def reparameterize(key: jax.Array, mean: jax.Array,
                   log_var: jax.Array) -> jax.Array:
  """Samples `z = mean + exp(log_var / 2) · ε` with `ε ~ N(0, I)`.

  Args:
    key: PRNG key.
    mean, log_var: the Gaussian's mean and log-variance, `[B, h]` (any equal
      shapes).

  Returns:
    `z`, the shape and dtype of `mean`.
  """
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * log_var) * eps


class Autoencoder(nn.Module):
  """An encoder and a decoder trained together.

  Parameters live under `params/encoder` and `params/decoder` (BatchNorm
  statistics likewise under `batch_stats`). Run one half inside `apply` with
  `method`:

      codes = model.apply(variables, x, method=Autoencoder.encode)
      x_hat, updates = model.apply(variables, z, train=True,
                                   method=Autoencoder.decode,
                                   mutable=["batch_stats"])

  or both halves and anything between them with a function of the bound
  module, e.g. `method=lambda m, x: m.decode(m.encode(x, train=True) + ...)`.

  Attributes:
    encoder: maps `[B, *data_shape]` to codes `[B, h]` or `(mean, log_var)`.
    decoder: maps `[B, h]` to `[B, *data_shape]`.
  """
  encoder: nn.Module
  decoder: nn.Module

  def encode(self, x: jax.Array, *, train: bool = False) -> Encoding:
    """Codes `[B, h]` of `x: [B, *data_shape]`, or `(mean, log_var)`."""
    return self.encoder(x, train=train)

  def decode(self, z: jax.Array, *, train: bool = False) -> jax.Array:
    """Reconstructions `[B, *data_shape]` of codes `z: [B, h]`."""
    return self.decoder(z, train=train)

  def __call__(self, x: jax.Array, *,
               train: bool = False) -> tuple[Encoding, jax.Array]:
    """Encodes and decodes `x`; returns `(codes_or_stats, reconstruction)`.

    A stochastic encoder's code is sampled with `reparameterize` from the RNG
    stream `LATENT_RNG` when `train` is True (pass `rngs={'latent': key}`),
    and is the posterior mean otherwise.
    """
    encoding = self.encode(x, train=train)
    if isinstance(encoding, tuple):
      mean, log_var = encoding
      z = (reparameterize(self.make_rng(LATENT_RNG), mean, log_var)
           if train else mean)
    else:
      z = encoding
    return encoding, self.decode(z, train=train)


def make_autoencoder(kind: str, data_shape: Sequence[int], latent_dim: int, *,
                     width: float = 1.0,
                     hidden: Sequence[int] = (128, 128),
                     stochastic: bool = False,
                     dtype: Optional[Any] = None,
                     axis_name: Optional[str] = None) -> Autoencoder:
  """Builds the encoder/decoder pair for data of shape `data_shape`.

  Args:
    kind: 'mlp' (`MLPEncoder`/`MLPDecoder`, default hidden widths) or 'conv'
      (`ConvEncoder`/`ConvDecoder`, `data_shape = (H, W, C)`).
    data_shape: shape of one example, without the batch dimension, e.g.
      `(2,)` for Grid, `(64, 64, 3)` for CelebA.
    latent_dim: the code size h.
    width: factor scaling all hidden widths and channels.
    hidden: the MLPs' hidden widths at width 1 (encoder order; the decoder
      mirrors them). Unused by 'conv'.
    stochastic: Gaussian encoder returning `(mean, log_var)` (VAE).
    dtype: computation dtype of every layer; None infers it.
    axis_name: the data-parallel mesh axis BatchNorm averages over in training
      (conv only; MLPs have no BatchNorm).

  Returns:
    An unbound `Autoencoder`; call `init(key, x)` with a batch `x`.

  Raises:
    ValueError: naming the first invalid argument.

  Example:
    >>> model = make_autoencoder("mlp", (2,), latent_dim=2)
    >>> model.encoder.hidden, model.decoder.out_dim
    ((128, 128), (2,))
  """
  if isinstance(data_shape, list):
    data_shape = tuple(data_shape)
  _check_shape("data_shape", data_shape)
  if kind == "mlp":
    hidden = tuple(hidden)
    return Autoencoder(
        MLPEncoder(latent_dim, hidden=hidden, width=width,
                   stochastic=stochastic, dtype=dtype),
        MLPDecoder(data_shape, hidden=hidden[::-1], width=width, dtype=dtype))
  if kind == "conv":
    conv_stages(data_shape, name="data_shape")
    return Autoencoder(
        ConvEncoder(latent_dim, width=width, stochastic=stochastic,
                    dtype=dtype, axis_name=axis_name),
        ConvDecoder(data_shape, width=width, dtype=dtype,
                    axis_name=axis_name))
  raise ValueError(f"kind must be 'mlp' or 'conv'; got {kind!r}.")


@functools.partial(jax.jit, static_argnums=0)
def encode(model: Autoencoder, variables: Any, x: jax.Array) -> Encoding:
  """Encodes `x: [B, *data_shape]` with restored `variables`, in inference mode.

  BatchNorm uses its running averages; jitted per model and input shape.
  Returns codes `[B, h]`, or `(mean, log_var)` for a stochastic encoder.
  """
  return model.apply(variables, x, method=Autoencoder.encode)


@functools.partial(jax.jit, static_argnums=0)
def decode(model: Autoencoder, variables: Any, z: jax.Array) -> jax.Array:
  """Decodes codes `z: [B, h]` with restored `variables`, in inference mode."""
  return model.apply(variables, z, method=Autoencoder.decode)


__all__ = [
    "ENCODER_CHANNELS", "LATENT_RNG", "MAX_DECODER_STAGES", "MIN_FEATURE_SIZE",
    "Autoencoder", "ConvDecoder", "ConvEncoder", "Encoding", "MLPDecoder",
    "MLPEncoder", "conv_stages", "decode", "encode", "make_autoencoder",
    "reparameterize", "scale_width",
]
