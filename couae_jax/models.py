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

Bad arguments raise a `ValueError` or `TypeError` naming the argument: module
attributes when the module is constructed, inputs when it is traced (shapes
and dtypes only, so every check is jit-safe).
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from collections.abc import Mapping
from typing import Any, Optional, Sequence, Union, cast

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

#: The side of the conv nets' square kernels unless `kernel_size` is given.
DEFAULT_KERNEL_SIZE = 4
_BATCH_NORM: dict[str, Any] = dict(momentum=0.9, epsilon=1e-5)

Encoding = Union[jax.Array, tuple[jax.Array, jax.Array]]


# ---------------------------------------------------------------------------
# Validation and architecture rules.


def _check_dtype(dtype) -> None:
  """None (infer the computation dtype) or a floating dtype."""
  if dtype is not None:
    _checks.floating_dtype("dtype", dtype)


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


def scale_width(features: int, width: float) -> int:
  """Units of a layer of nominal size `features` at width factor `width`.

  Args:
    features: the layer's size at width 1, an int >= 1.
    width: the factor scaling it, a finite number > 0.

  Returns:
    `max(1, round(features * width))`.

  Raises:
    ValueError: `features` not a positive int, or `width` not finite and > 0.

  Example:
    >>> from couae_jax import models
    >>> models.scale_width(128, 0.25), models.scale_width(128, 1e-3)
    (32, 1)
  """
  _checks.positive_int("features", features)
  _checks.positive_number("width", width)
  return max(1, round(features * width))


def conv_stages(image_shape: tuple[int, ...], *,
                name: str = "image_shape") -> int:
  """Number of stride-2 convolutions the encoder applies to an image.

  The rule: halve the height and width as often as both stay integers of at
  least `MIN_FEATURE_SIZE` (2), at most `len(ENCODER_CHANNELS)` (4) times.
  64×64 gives 4 stages (a 4×4 map, as in WAE), 32×32 gives 4 (2×2),
  28×28 gives 2 (7×7), 8×8 gives 2 (2×2). The decoder upsamples with
  `min(stages, MAX_DECODER_STAGES)` stride-2 transposed convolutions.

  Args:
    image_shape: `(height, width, channels)`, a tuple of positive ints.
    name: the argument that errors name (default 'image_shape').

  Returns:
    The number of stages, between 1 and 4.

  Raises:
    ValueError: the shape is not a tuple `(H, W, C)` of positive ints, or H or
      W is odd or < 4.

  Example:
    >>> from couae_jax import models
    >>> [models.conv_stages(s) for s in [(64, 64, 3), (28, 28, 1), (6, 6, 1)]]
    [4, 2, 1]
  """
  _checks.shape_tuple(name, image_shape, allow_list=False)
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

  Raises:
    ValueError: latent_dim, hidden or width invalid (at construction).
    TypeError: stochastic not a bool or dtype not floating.

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
    """Encodes `x: [B, ...]` (floating) to codes `[B, h]` or `(mean, log_var)`.

    `train` (default False) is accepted for a uniform interface; the MLP has no
    layers that depend on it.

    Raises:
      ValueError: `x` of rank < 2 (no batch dimension).
      TypeError: `x` not floating, or `train` not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from couae_jax import models
      >>> encoder = models.MLPEncoder(2, hidden=(4,), stochastic=True)
      >>> (mean, log_var), _ = jax.eval_shape(
      ...     encoder.init_with_output, jax.random.key(0), jnp.ones((3, 8, 8)))
      >>> mean.shape, log_var.shape
      ((3, 2), (3, 2))
    """
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

  Raises:
    ValueError: out_dim, hidden or width invalid (at construction).
    TypeError: dtype not floating.

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
    """Decodes codes `z: [B, h]` to `[B, *out_dim]`; `train` is unused.

    Raises:
      ValueError: `z` not of rank 2.
      TypeError: `z` not floating, or `train` not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from couae_jax import models
      >>> x_hat, _ = jax.eval_shape(models.MLPDecoder(3).init_with_output,
      ...                           jax.random.key(0), jnp.ones((4, 2)))
      >>> x_hat.shape
      (4, 3)
    """
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

  Raises:
    ValueError: latent_dim, width or kernel_size invalid (at construction).
    TypeError: stochastic not a bool, dtype not floating, axis_name not a str.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> encoder = models.ConvEncoder(latent_dim=4, width=1 / 16)
    >>> x = jnp.ones((2, 8, 8, 1))
    >>> variables = jax.eval_shape(encoder.init, jax.random.key(0), x)
    >>> sorted(variables), variables["params"]["Conv_1"]["kernel"].shape
    (['batch_stats', 'params'], (4, 4, 8, 16))
    >>> wae = models.ConvEncoder(latent_dim=4, width=1 / 16, kernel_size=5)
    >>> jax.eval_shape(wae.init, jax.random.key(0), x)["params"]["Conv_1"][
    ...     "kernel"].shape
    (5, 5, 8, 16)
  """
  latent_dim: int
  width: float = 1.0
  stochastic: bool = False
  dtype: Optional[Any] = None
  axis_name: Optional[str] = None
  kernel_size: int = DEFAULT_KERNEL_SIZE

  def __post_init__(self):
    _checks.positive_int("latent_dim", self.latent_dim)
    _checks.positive_number("width", self.width)
    _checks.python_bool("stochastic", self.stochastic)
    _check_dtype(self.dtype)
    _checks.axis_name("axis_name", self.axis_name)
    _checks.positive_int("kernel_size", self.kernel_size)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> Encoding:
    """Encodes images `x: [B, H, W, C]` to codes `[B, h]` or `(mean, log_var)`.

    Args:
      x: images, NHWC, floating, in the range the decoder is trained to
        output; H and W even and >= 4 (`conv_stages`).
      train: BatchNorm normalises with batch statistics and updates its
        running averages (`mutable=['batch_stats']`) when True, and uses the
        running averages when False (default).

    Raises:
      ValueError: `x` not of rank 4, or an image size `conv_stages` rejects.
      TypeError: `x` not floating, or `train` not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from couae_jax import models
      >>> codes, _ = jax.eval_shape(models.ConvEncoder(4).init_with_output,
      ...                           jax.random.key(0), jnp.ones((2, 8, 8, 1)))
      >>> codes.shape
      (2, 4)
    """
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
    dtype: computation dtype (parameters stay float32); None (default) infers
      it.
    axis_name: BatchNorm's data-parallel axis, as in `ConvEncoder` (default
      None).
    kernel_size: the side k of the square kernels, an int >= 1 (default
      `DEFAULT_KERNEL_SIZE`, 4; WAE's CelebA decoder uses 5).

  Raises:
    ValueError: out_shape, width or kernel_size invalid (at construction).
    TypeError: dtype not floating, axis_name not a str.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> decoder = models.ConvDecoder((8, 8, 1), width=1 / 16)
    >>> z = jnp.ones((2, 4))
    >>> variables = jax.eval_shape(decoder.init, jax.random.key(0), z)
    >>> variables["params"]["Dense_0"]["kernel"].shape  # to a 2×2×64 map
    (4, 256)
    >>> wae = models.ConvDecoder((8, 8, 1), width=1 / 16, kernel_size=5)
    >>> jax.eval_shape(wae.init, jax.random.key(0), z)["params"]["output"][
    ...     "kernel"].shape
    (5, 5, 16, 1)
  """
  out_shape: tuple[int, int, int]
  width: float = 1.0
  dtype: Optional[Any] = None
  axis_name: Optional[str] = None
  kernel_size: int = DEFAULT_KERNEL_SIZE

  def __post_init__(self):
    conv_stages(self.out_shape, name="out_shape")
    _checks.positive_number("width", self.width)
    _check_dtype(self.dtype)
    _checks.axis_name("axis_name", self.axis_name)
    _checks.positive_int("kernel_size", self.kernel_size)
    super().__post_init__()

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> jax.Array:
    """Decodes codes `z: [B, h]` to images `[B, H, W, C]`.

    Args:
      z: floating codes.
      train: BatchNorm mode, as in `ConvEncoder` (default False).

    Raises:
      ValueError: `z` not of rank 2.
      TypeError: `z` not floating, or `train` not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from couae_jax import models
      >>> decoder = models.ConvDecoder((8, 8, 1), width=1 / 16)
      >>> x_hat, _ = jax.eval_shape(decoder.init_with_output,
      ...                           jax.random.key(0), jnp.ones((2, 4)))
      >>> x_hat.shape
      (2, 8, 8, 1)
    """
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
  """Samples `z = mean + exp(log_var / 2) · ε` with `ε ~ N(0, I)`.

  Args:
    key: one PRNG key (`jax.random.key` or raw `jax.random.PRNGKey` data).
    mean: the Gaussian's mean, `[B, h]` (any shape), floating.
    log_var: its log-variance, the shape and dtype of `mean`.

  Returns:
    `z`, the shape and dtype of `mean`.

  Raises:
    TypeError: `key` not a single PRNG key, `mean` or `log_var` not floating,
      or their dtypes differ.
    ValueError: `mean` and `log_var` of different shapes.

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
  statistics likewise under `batch_stats`). Run one half inside `apply` with
  `method`:

      codes = model.apply(variables, x, method=Autoencoder.encode)
      x_hat, updates = model.apply(variables, z, train=True,
                                   method=Autoencoder.decode,
                                   mutable=["batch_stats"])

  or both halves and anything between them with a function of the bound
  module, e.g. `method=lambda m, x: m.decode(m.encode(x, train=True) + ...)`.

  With this module's encoders and decoders, inputs are checked against the
  pair: `x` must be `[B, *data_shape]` (the decoder's output shape) and `z`
  must be `[B, h]` (the encoder's `latent_dim`).

  Attributes:
    encoder: a module mapping `[B, *data_shape]` to codes `[B, h]` or
      `(mean, log_var)`.
    decoder: a module mapping `[B, h]` to `[B, *data_shape]`.

  Raises:
    TypeError: encoder or decoder not a Flax module.

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
    """Codes `[B, h]` of `x: [B, *data_shape]`, or `(mean, log_var)`.

    Args:
      x: a floating batch of examples.
      train: the encoder's training mode (default False).

    Raises:
      ValueError: `x` not of shape `[B, *data_shape]`.
      TypeError: `x` not floating, or `train` not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from couae_jax import models
      >>> model = models.make_autoencoder("mlp", (2,), 3, hidden=(8,))
      >>> x = jnp.ones((5, 2))
      >>> variables = model.init(jax.random.key(0), x)
      >>> model.apply(variables, x, method=models.Autoencoder.encode).shape
      (5, 3)
    """
    _checks.python_bool("train", train)
    data_shape = self.data_shape
    if data_shape is not None:
      x = _check_batch("x", x, example_shape=data_shape)
    return self.encoder(x, train=train)

  def decode(self, z: jax.Array, *, train: bool = False) -> jax.Array:
    """Reconstructions `[B, *data_shape]` of codes `z: [B, h]`.

    Args:
      z: a floating batch of codes.
      train: the decoder's training mode (default False).

    Raises:
      ValueError: `z` not of shape `[B, h]`.
      TypeError: `z` not floating, or `train` not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from couae_jax import models
      >>> model = models.make_autoencoder("mlp", (2,), 3, hidden=(8,))
      >>> variables = model.init(jax.random.key(0), jnp.ones((1, 2)))
      >>> z = jnp.zeros((5, 3))
      >>> model.apply(variables, z, method=models.Autoencoder.decode).shape
      (5, 2)
    """
    _checks.python_bool("train", train)
    latent_dim = getattr(self.encoder, "latent_dim", None)
    if latent_dim is not None:
      z = _check_batch("z", z, example_shape=(latent_dim,))
    return self.decoder(z, train=train)

  def __call__(self, x: jax.Array, *,
               train: bool = False) -> tuple[Encoding, jax.Array]:
    """Encodes and decodes `x`; returns `(codes_or_stats, reconstruction)`.

    A stochastic encoder's code is sampled with `reparameterize` from the RNG
    stream `LATENT_RNG` when `train` is True (pass `rngs={'latent': key}`),
    and is the posterior mean otherwise (default).

    Raises:
      ValueError, TypeError: as `encode`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from couae_jax import models
      >>> model = models.make_autoencoder("mlp", (2,), 3, hidden=(8,),
      ...                                 stochastic=True)
      >>> x = jnp.ones((5, 2))
      >>> variables = model.init(jax.random.key(0), x)
      >>> (mean, log_var), x_hat = model.apply(
      ...     variables, x, train=True, rngs={"latent": jax.random.key(1)})
      >>> mean.shape, x_hat.shape
      ((5, 3), (5, 2))
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
                     axis_name: Optional[str] = None,
                     kernel_size: int = DEFAULT_KERNEL_SIZE) -> Autoencoder:
  """Builds the encoder/decoder pair for data of shape `data_shape`.

  Args:
    kind: 'mlp' (`MLPEncoder`/`MLPDecoder`) or 'conv'
      (`ConvEncoder`/`ConvDecoder`, `data_shape = (H, W, C)`).
    data_shape: shape of one example, without the batch dimension, a tuple or
      list of positive ints, e.g. `(2,)` for Grid, `(64, 64, 3)` for CelebA.
    latent_dim: the code size h, an int >= 1.
    width: factor scaling all hidden widths and channels (default 1).
    hidden: the MLPs' hidden widths at width 1 (encoder order; the decoder
      mirrors them; default `(128, 128)`). Unused by 'conv'.
    stochastic: Gaussian encoder returning `(mean, log_var)` (VAE; default
      False).
    dtype: computation dtype of every layer; None (default) infers it.
    axis_name: the data-parallel mesh axis BatchNorm averages over in training
      (conv only; MLPs have no BatchNorm; default None).
    kernel_size: the side of the conv nets' square kernels, an int >= 1
      (default `DEFAULT_KERNEL_SIZE`, 4; WAE's CelebA nets use 5). Checked
      for 'mlp' too, but unused.

  Returns:
    An unbound `Autoencoder`; call `init(key, x)` with a batch
    `x: [B, *data_shape]`.

  Raises:
    ValueError: naming the first invalid of kind, data_shape (also an image
      shape `conv_stages` rejects, for 'conv'), hidden, kernel_size,
      latent_dim, width.
    TypeError: kind not a str, stochastic not a bool, dtype not floating,
      axis_name not a str.

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


def min_parameter_count(kind: str, latent_dim: int, *, width: float = 1.0,
                        hidden: Sequence[int] = (128, 128),
                        stochastic: bool = False,
                        kernel_size: int = DEFAULT_KERNEL_SIZE) -> int:
  """A lower bound on the parameters of `make_autoencoder(kind, ...)` at any
  data shape, without building it.

  Counts the weights of the layers every data shape has (for 'mlp' the
  hidden-to-hidden and code layers; for 'conv' one stage of each network,
  the code layers and the decoder's first transposed convolution), so a
  configuration can be sized before its data are loaded: a width of 1000 is
  already tens of billions of parameters.

  Args:
    kind: 'mlp' or 'conv'.
    latent_dim, width, hidden, stochastic, kernel_size: as in
      `make_autoencoder`, taken as valid.

  Returns:
    An int, at most the networks' parameter count at every data shape.

  Example:
    >>> from couae_jax import models
    >>> models.min_parameter_count("mlp", 3, width=1000.0) > 3e10
    True
  """
  def units(features):
    return scale_width(features, width)
  heads = 2 if stochastic else 1
  if kind == "mlp":
    widths = [units(w) for w in hidden]
    between = sum(a * b for a, b in itertools.pairwise(widths))
    # The input and output layers have at least one feature each.
    return (2 * between + (heads + 1) * latent_dim * widths[-1]
            + 2 * widths[0])
  k2 = kernel_size ** 2
  first, last = ENCODER_CHANNELS[0], ENCODER_CHANNELS[-1]
  fewest = units(last // 2**MAX_DECODER_STAGES)  # the decoder's last stage
  # The encoder's first convolution (one input channel at least) and code
  # layer; the decoder's dense layer, first transposed convolution and
  # output convolution.
  return (k2 * units(first) + heads * latent_dim * units(first)
          + latent_dim * units(last) + k2 * units(last) * units(last // 2)
          + k2 * fewest)


def _check_model(model, variables) -> None:
  if not isinstance(model, Autoencoder):
    raise TypeError(
        f"model must be an Autoencoder (see make_autoencoder); got "
        f"{type(model).__name__}.")
  if not isinstance(variables, Mapping):
    raise TypeError(
        f"variables must be the mapping `model.init` returns; got "
        f"{type(variables).__name__}.")
  if "params" not in variables:
    raise ValueError(
        f"variables must hold a 'params' collection, as `model.init` "
        f"returns; got the collections {sorted(variables)}.")


@functools.partial(jax.jit, static_argnums=0)
def _encode(model: Autoencoder, variables: Any, x: jax.Array) -> Encoding:
  # `apply` is typed for `mutable=` too; without it, it returns the output.
  return cast(Encoding, model.apply(variables, x, method=Autoencoder.encode))


@functools.partial(jax.jit, static_argnums=0)
def _decode(model: Autoencoder, variables: Any, z: jax.Array) -> jax.Array:
  return cast(jax.Array, model.apply(variables, z, method=Autoencoder.decode))


def encode(model: Autoencoder, variables: Any, x: jax.Array) -> Encoding:
  """Encodes `x: [B, *data_shape]` with restored `variables`, in inference mode.

  BatchNorm uses its running averages; jitted per model and input shape.

  Args:
    model: the (unbound) `Autoencoder`.
    variables: its variables, `{'params': ..., 'batch_stats': ...}` as
      `model.init` returns them (`batch_stats` only for conv models).
    x: a floating batch of examples.

  Returns:
    Codes `[B, h]`, or `(mean, log_var)` for a stochastic encoder.

  Raises:
    TypeError: model not an `Autoencoder`, variables not a mapping, `x` not
      floating.
    ValueError: no 'params' in variables, or `x` not `[B, *data_shape]`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> model = models.make_autoencoder("mlp", (2,), 3, hidden=(8,))
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 2)))
    >>> models.encode(model, variables, jnp.ones((5, 2))).shape
    (5, 3)
  """
  _check_model(model, variables)
  return _encode(model, variables, x)


def decode(model: Autoencoder, variables: Any, z: jax.Array) -> jax.Array:
  """Decodes codes `z: [B, h]` with restored `variables`, in inference mode.

  Args:
    model: the (unbound) `Autoencoder`.
    variables: its variables, as for `encode`.
    z: a floating batch of codes.

  Returns:
    Reconstructions `[B, *data_shape]`.

  Raises:
    TypeError: model not an `Autoencoder`, variables not a mapping, `z` not
      floating.
    ValueError: no 'params' in variables, or `z` not `[B, h]`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from couae_jax import models
    >>> model = models.make_autoencoder("mlp", (2,), 3, hidden=(8,))
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 2)))
    >>> models.decode(model, variables, jnp.zeros((5, 3))).shape
    (5, 2)
  """
  _check_model(model, variables)
  return _decode(model, variables, z)


__all__ = [
    "DEFAULT_KERNEL_SIZE", "ENCODER_CHANNELS", "LATENT_RNG",
    "MAX_DECODER_STAGES", "MIN_FEATURE_SIZE",
    "Autoencoder", "ConvDecoder", "ConvEncoder", "Encoding", "MLPDecoder",
    "MLPEncoder", "conv_stages", "decode", "encode", "make_autoencoder",
    "min_parameter_count",
    "reparameterize", "scale_width",
]
