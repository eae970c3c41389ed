"""Architecture rules of the networks in `models`, which re-exports them:
hidden widths (`scale_width`), convolutional stages (`conv_stages`) and a
lower bound on the parameter count (`min_parameter_count`).
"""

from __future__ import annotations

import itertools
from typing import Sequence

from couae_jax import _checks

#: Channels of the convolutional encoder's stages at width 1 (WAE, CelebA).
ENCODER_CHANNELS = (128, 256, 512, 1024)
#: Most stride-2 stages in the decoder: WAE's CelebA decoder starts from 8×8.
MAX_DECODER_STAGES = 3
#: Smallest spatial size the encoder's last feature map may have.
MIN_FEATURE_SIZE = 2

#: The side of the conv nets' square kernels unless `kernel_size` is given.
DEFAULT_KERNEL_SIZE = 4


def scale_width(features: int, width: float) -> int:
  """Units of a layer of nominal size `features` (an int >= 1) at width
  factor `width` (> 0): `max(1, round(features * width))`.

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

  `image_shape` is `(height, width, channels)`; errors name it `name`.

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
  already tens of billions of parameters. Arguments as `make_autoencoder`'s,
  taken as valid.

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
