"""The FID Inception network (pool-3 features), re-exported by `fid`.

`InceptionV3` and `inception_feature_fn`; `fid` documents them and holds the
Fréchet distance and the weights' file format.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FeatureFn = Callable[[np.ndarray], Any]

#: The network's input side; images are resized to it bilinearly.
INCEPTION_SIZE = 299
#: The smallest input side the network accepts (its last map is then 1×1).
MIN_INCEPTION_SIZE = 75

_BN_EPSILON = 1e-3  # TF's Inception, kept by torchvision's BasicConv2d.



def _checked_dtype(dtype: Any) -> np.dtype:
  """`dtype` as a NumPy dtype, if the network can compute in it here."""
  try:
    dtype = np.dtype(dtype)
  except TypeError as e:
    raise ValueError(f"dtype must be float32 or float64; got {dtype!r}.") \
        from e
  if dtype not in (np.float32, np.float64):
    raise ValueError(f"dtype must be float32 or float64; got {dtype}.")
  # Without x64, JAX would silently compute a float64 request in float32.
  if jax.dtypes.canonicalize_dtype(dtype) != dtype:
    raise ValueError("dtype float64 needs jax_enable_x64 (jax.config.update("
                     "'jax_enable_x64', True) or the jax.enable_x64 context).")
  return dtype


def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


class _ConvBN(nn.Module):
  """torchvision's `BasicConv2d`: bias-free convolution, BatchNorm, ReLU."""
  features: int
  kernel: Any
  strides: Any = 1
  padding: Any = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, _pair(self.kernel), strides=_pair(self.strides),
                padding=[(p, p) for p in _pair(self.padding)], use_bias=False,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=_BN_EPSILON,
                     name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3×3 stride-1 average that ignores the zero padding, as TF's (PyTorch's
  default would count it), in `x`'s dtype."""
  # Not `nn.avg_pool(..., count_include_pad=False)`: it divides by a pool of
  # `jnp.ones`, which are float64 under `jax_enable_x64`, and that turns
  # every later layer float64. The counts depend only on the static shape,
  # so NumPy computes them.
  total = jax.lax.reduce_window(x, np.zeros((), x.dtype), jax.lax.add,
                                (1, 3, 3, 1), (1, 1, 1, 1),
                                ((0, 0), (1, 1), (1, 1), (0, 0)))

  def counts(n: int) -> np.ndarray:  # in-range taps of each output position
    index = np.arange(n)
    return (np.minimum(index + 1, n - 1) - np.maximum(index - 1, 0) + 1)

  divisor = np.outer(counts(x.shape[1]), counts(x.shape[2]))
  return total / jnp.asarray(divisor[None, :, :, None], x.dtype)


def _max_pool_3x3(x: jax.Array, stride: int = 2) -> jax.Array:
  padding = ((1, 1), (1, 1)) if stride == 1 else "VALID"
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=padding)


class _InceptionA(nn.Module):
  """Mixed_5b/5c/5d (35×35)."""
  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = _ConvBN(64, 1, name="branch1x1")(x)
    b5 = _ConvBN(48, 1, name="branch5x5_1")(x)
    b5 = _ConvBN(64, 5, padding=2, name="branch5x5_2")(b5)
    b3 = _ConvBN(64, 1, name="branch3x3dbl_1")(x)
    b3 = _ConvBN(96, 3, padding=1, name="branch3x3dbl_2")(b3)
    b3 = _ConvBN(96, 3, padding=1, name="branch3x3dbl_3")(b3)
    pool = _ConvBN(self.pool_features, 1, name="branch_pool")(
        _avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, pool], axis=-1)


#: One convolution of a branch: (name, features, kernel, strides, padding).
_BranchConv = tuple[str, int, Any, int, Any]


class _Reduction(nn.Module):
  """Mixed_6a (35×35 → 17×17) and Mixed_7a (17×17 → 8×8): chains of
  convolutions, each ending at stride 2, beside a stride-2 max pool."""
  branches: tuple[tuple[_BranchConv, ...], ...]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    outputs = []
    for branch in self.branches:
      y = x
      for name, features, kernel, strides, padding in branch:
        y = _ConvBN(features, kernel, strides, padding, name=name)(y)
      outputs.append(y)
    return jnp.concatenate([*outputs, _max_pool_3x3(x)], axis=-1)


_MIXED_6A = (
    (("branch3x3", 384, 3, 2, 0),),
    (("branch3x3dbl_1", 64, 1, 1, 0), ("branch3x3dbl_2", 96, 3, 1, 1),
     ("branch3x3dbl_3", 96, 3, 2, 0)),
)
_MIXED_7A = (
    (("branch3x3_1", 192, 1, 1, 0), ("branch3x3_2", 320, 3, 2, 0)),
    (("branch7x7x3_1", 192, 1, 1, 0),
     ("branch7x7x3_2", 192, (1, 7), 1, (0, 3)),
     ("branch7x7x3_3", 192, (7, 1), 1, (3, 0)),
     ("branch7x7x3_4", 192, 3, 2, 0)),
)


class _InceptionC(nn.Module):
  """Mixed_6b–6e (17×17), factorised 7×7 convolutions."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    row: dict[str, Any] = dict(kernel=(1, 7), padding=(0, 3))
    col: dict[str, Any] = dict(kernel=(7, 1), padding=(3, 0))
    b1 = _ConvBN(192, 1, name="branch1x1")(x)
    b7 = _ConvBN(c7, 1, name="branch7x7_1")(x)
    b7 = _ConvBN(c7, **row, name="branch7x7_2")(b7)
    b7 = _ConvBN(192, **col, name="branch7x7_3")(b7)
    dbl = _ConvBN(c7, 1, name="branch7x7dbl_1")(x)
    dbl = _ConvBN(c7, **col, name="branch7x7dbl_2")(dbl)
    dbl = _ConvBN(c7, **row, name="branch7x7dbl_3")(dbl)
    dbl = _ConvBN(c7, **col, name="branch7x7dbl_4")(dbl)
    dbl = _ConvBN(192, **row, name="branch7x7dbl_5")(dbl)
    pool = _ConvBN(192, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, dbl, pool], axis=-1)


class _InceptionE(nn.Module):
  """Mixed_7b (`pool='avg'`, FIDInceptionE_1) and 7c (`'max'`, E_2)."""
  pool: str

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    row: dict[str, Any] = dict(kernel=(1, 3), padding=(0, 1))
    col: dict[str, Any] = dict(kernel=(3, 1), padding=(1, 0))
    b1 = _ConvBN(320, 1, name="branch1x1")(x)
    b3 = _ConvBN(384, 1, name="branch3x3_1")(x)
    b3 = jnp.concatenate([_ConvBN(384, **row, name="branch3x3_2a")(b3),
                          _ConvBN(384, **col, name="branch3x3_2b")(b3)], -1)
    dbl = _ConvBN(448, 1, name="branch3x3dbl_1")(x)
    dbl = _ConvBN(384, 3, padding=1, name="branch3x3dbl_2")(dbl)
    dbl = jnp.concatenate([_ConvBN(384, **row, name="branch3x3dbl_3a")(dbl),
                           _ConvBN(384, **col, name="branch3x3dbl_3b")(dbl)],
                          -1)
    # The 2015 graph max-pools in its last block (pytorch-fid's
    # FIDInceptionE_2), unlike the Inception-v3 paper.
    pooled = (_avg_pool_3x3(x) if self.pool == "avg"
              else _max_pool_3x3(x, stride=1))
    pool = _ConvBN(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, dbl, pool], axis=-1)


class InceptionV3(nn.Module):
  """The FID Inception-v3 up to its pool-3 features.

  Submodule and parameter names follow torchvision's (`Mixed_5b/branch1x1/
  conv/kernel` is `Mixed_5b.branch1x1.conv.weight`), so pytorch-fid's state
  dict maps onto it name by name. BatchNorm always uses its stored
  statistics.

  Attributes:
    image_size: side the input is bilinearly resized to (PyTorch's
      `align_corners=False`, no antialiasing, as pytorch-fid). FID is defined
      at 299; smaller sides (>= 75) only make tests cheap.
    dtype: the dtype every layer computes in. float32 (the default) also
      when `jax_enable_x64` is on; float64 (needs `jax_enable_x64`) is for
      checking the network against a reference to rounding level, and needs
      float64 variables too (flax's BatchNorm takes `rsqrt(var + eps)` in the
      statistics' dtype); `inception_feature_fn` casts them.
  """
  image_size: int = INCEPTION_SIZE
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """Pool-3 features `[B, 2048]` of RGB images `[B, H, W, 3]` in [0, 1]."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(
          f"images must be RGB [B, H, W, 3]; got shape {images.shape}.")
    if self.image_size < MIN_INCEPTION_SIZE:
      raise ValueError(f"image_size must be >= {MIN_INCEPTION_SIZE}; got "
                       f"{self.image_size}.")
    dtype = _checked_dtype(self.dtype)
    # Every layer computes in the input's dtype (flax promotes the weights
    # to it), except BatchNorm's rsqrt(var + eps), in the statistics' dtype.
    x = images.astype(dtype)
    size = (self.image_size, self.image_size)
    if x.shape[1:3] != size:
      x = jax.image.resize(x, (x.shape[0], *size, 3), "bilinear",
                           antialias=False)
    x = 2.0 * x - 1.0
    x = _ConvBN(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
    x = _ConvBN(32, 3, name="Conv2d_2a_3x3")(x)
    x = _ConvBN(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3(x)
    x = _ConvBN(80, 1, name="Conv2d_3b_1x1")(x)
    x = _ConvBN(192, 3, name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3(x)
    x = _InceptionA(32, name="Mixed_5b")(x)
    x = _InceptionA(64, name="Mixed_5c")(x)
    x = _InceptionA(64, name="Mixed_5d")(x)
    x = _Reduction(_MIXED_6A, name="Mixed_6a")(x)
    for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160),
                           ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = _InceptionC(channels, name=name)(x)
    x = _Reduction(_MIXED_7A, name="Mixed_7a")(x)
    x = _InceptionE("avg", name="Mixed_7b")(x)
    x = _InceptionE("max", name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


def inception_feature_fn(variables: Any, *,
                         image_size: int = INCEPTION_SIZE,
                         dtype: Any = jnp.float32) -> FeatureFn:
  """A jitted function from images to pool-3 features, for
  `activation_statistics`.

  On a CPU the network costs 0.21 CPU-seconds per image at 299×299 (0.6 s
  of wall time per image on a shared 2-core machine, BUILD_NOTES section 7):
  10,000 images take over half an hour of CPU time.

  Args:
    variables: `{'params', 'batch_stats'}` from `load_inception_weights`.
    image_size: the network's input side (299 for FID).
    dtype: `InceptionV3.dtype`: float32 (also under `jax_enable_x64`), or
      float64 (needs `jax_enable_x64`) for checks against a reference.

  Returns:
    `fn(images) -> [B, 2048]` in `dtype`, for RGB images `[B, H, W, 3]`,
    uint8 (divided by 255) or floating in [0, 1].

  Raises:
    ValueError: `image_size` below `MIN_INCEPTION_SIZE` or not an integer;
      `dtype` not float32/float64, or float64 without `jax_enable_x64`.
  """
  if isinstance(image_size, bool) or not isinstance(image_size, int) \
      or image_size < MIN_INCEPTION_SIZE:
    raise ValueError(f"image_size must be an integer >= {MIN_INCEPTION_SIZE};"
                     f" got {image_size!r}.")
  dtype = _checked_dtype(dtype)
  apply = jax.jit(InceptionV3(image_size, dtype).apply)
  # Exact for float64 (float32 files); on the device once, not per call.
  variables = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), variables)

  def features(images: np.ndarray) -> jax.Array:
    images = np.asarray(images)
    if images.dtype == np.uint8:
      images = images.astype(dtype) / dtype.type(255.0)
    elif not np.issubdtype(images.dtype, np.floating):
      raise TypeError(f"images must be uint8 or floating; got {images.dtype}.")
    return apply(variables, images)

  return features
