"""Converts pytorch-fid's Inception weights (.pth) to the npz couae_jax reads.

Needs only PyTorch and NumPy: no JAX, no Flax, not even couae_jax. So it runs
on any machine with `pip install torch numpy` (the CPU build of torch is
enough), as a module from a checkout of this repository or as this one file
copied anywhere:

  python -m experiments.convert_fid_weights \
      pt_inception-2015-12-05-6726825d.pth pt_inception-2015-12-05-6726825d.npz
  python convert_fid_weights.py pt_inception-2015-12-05-6726825d.pth

The `.pth` is pytorch-fid's port of the TF 2015-12-05 FID Inception, from
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
The npz holds its state dict as NumPy arrays under the same names and in
PyTorch's layouts (couae_jax.fid transposes the convolution kernels when it
loads them), plus the `.pth`'s SHA-256. The script refuses a file whose
SHA-256 does not start with the published prefix 6726825d (override with
--force) and checks, in NumPy, that the state dict is a whole FID Inception:
94 convolutions each with its BatchNorm, 21,785,568 parameters in all.
`couae_jax.fid.load_inception_weights` checks every name and shape again
when it reads the npz. Pass the npz to the experiments with `--fid-weights`.

Expected result: "wrote ... (91 MiB; ...); pytorch-fid's file: True".
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
from typing import Any, Mapping

import numpy as np

# These repeat couae_jax.fid's constants so that this script imports nothing
# of couae_jax (whose package needs JAX); tests/test_fid.py checks that they
# agree.
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/"
                   "fid_weights/pt_inception-2015-12-05-6726825d.pth")
TORCH_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.npz"
TORCH_WEIGHTS_SHA256_PREFIX = "6726825d"
SOURCE_HASH_KEY = "couae_fid.source_sha256"
#: Convolution+BatchNorm layers of the FID Inception up to its pool-3.
CONV_LAYERS = 94
#: Their parameters (kernels, BatchNorm scales and offsets), as
#: `couae_jax.fid.InceptionV3` has them.
PARAMETERS = 21_785_568

_BN_NAMES = ("weight", "bias", "running_mean", "running_var")


def sha256_of(path) -> str:
  """The hex SHA-256 of a file, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _to_numpy(name: str, value: Any) -> np.ndarray:
  # Tensors are duck-typed so that this module never imports torch itself.
  if hasattr(value, "detach"):
    value = value.detach().cpu().numpy()
  array = np.asarray(value)
  if array.dtype == object:
    raise TypeError(f"state dict entry {name} is not an array; got "
                    f"{type(value).__name__}.")
  return array


def state_dict_arrays(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """pytorch-fid's state dict as NumPy arrays, checked to be a whole FID
  Inception.

  Args:
    state: name → tensor (or array), as `torch.load` returns the `.pth`.
      `fc.*` and `*.num_batches_tracked` are kept; couae_jax ignores them.

  Returns:
    name → array, names and PyTorch layouts unchanged.

  Raises:
    TypeError: `state` is not a mapping, or an entry is not an array.
    ValueError: a convolution without its BatchNorm (or with one of the wrong
      size), a kernel that is not 4-D, or the wrong number of layers or
      parameters; the message names what is wrong.
  """
  if not isinstance(state, Mapping):
    raise TypeError(f"state must be a mapping of names to tensors; got "
                    f"{type(state).__name__}.")
  arrays = {str(name): _to_numpy(str(name), value)
            for name, value in state.items()}
  problems, parameters = [], 0
  kernels = sorted(name for name in arrays if name.endswith(".conv.weight"))
  for name in kernels:
    kernel, layer = arrays[name], name[:-len(".conv.weight")]
    if kernel.ndim != 4:
      problems.append(f"{name} has shape {kernel.shape}, expected "
                      "[out, in, kH, kW]")
      continue
    parameters += kernel.size
    for leaf in _BN_NAMES:
      bn = f"{layer}.bn.{leaf}"
      if bn not in arrays:
        problems.append(f"missing {bn}")
      elif arrays[bn].shape != (kernel.shape[0],):
        problems.append(f"{bn} has shape {arrays[bn].shape}, expected "
                        f"({kernel.shape[0]},)")
      elif leaf in ("weight", "bias"):
        parameters += arrays[bn].size
  if len(kernels) != CONV_LAYERS:
    problems.append(f"{len(kernels)} convolutions, expected {CONV_LAYERS}")
  elif not problems and parameters != PARAMETERS:
    problems.append(f"{parameters:,} parameters, expected {PARAMETERS:,}")
  if problems:
    shown = "; ".join(problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    raise ValueError(
        f"state is not pytorch-fid's FID Inception: {shown}{more}. Convert "
        f"{TORCH_WEIGHTS_NAME} from {FID_WEIGHTS_URL}.")
  return arrays


def write_npz(arrays: Mapping[str, np.ndarray], target, *,
              source_sha256: str) -> None:
  """Writes `arrays` and the source's SHA-256 to the npz `target`."""
  arrays = dict(arrays)
  arrays[SOURCE_HASH_KEY] = np.asarray(source_sha256)
  with open(target, "wb") as f:  # np.savez would append '.npz' to other names.
    np.savez(f, **arrays)


def convert(source, target, *, force: bool = False) -> str:
  """Writes the npz of the `.pth` state dict at `source`; returns its SHA-256.

  Raises:
    ImportError: PyTorch is not installed (it is needed only here).
    ValueError: the file's SHA-256 is not pytorch-fid's (without `force`),
      or its state dict is not a whole FID Inception.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "converting the FID weights needs PyTorch (to read the .pth) and "
        "NumPy, nothing else: pip install torch numpy (the CPU build is "
        "enough), or run this script on any machine that has them and copy "
        "the npz back.") from e
  digest = sha256_of(source)
  if not digest.startswith(TORCH_WEIGHTS_SHA256_PREFIX) and not force:
    raise ValueError(
        f"{source} has SHA-256 {digest}, not pytorch-fid's "
        f"{TORCH_WEIGHTS_SHA256_PREFIX}...; download {FID_WEIGHTS_URL} "
        "again, or pass --force to convert it anyway.")
  # weights_only: a .pth is a pickle; this refuses anything but tensors.
  state = torch.load(source, map_location="cpu", weights_only=True)
  write_npz(state_dict_arrays(state), target, source_sha256=digest)
  return digest


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("source", help=f"the .pth ({TORCH_WEIGHTS_NAME})")
  parser.add_argument("target", nargs="?", default=WEIGHTS_NAME,
                      help=f"the npz to write (default {WEIGHTS_NAME})")
  parser.add_argument("--force", action="store_true",
                      help="convert even if the SHA-256 differs")
  args = parser.parse_args(argv)
  digest = convert(args.source, args.target, force=args.force)
  size = pathlib.Path(args.target).stat().st_size / 2**20
  print(f"wrote {args.target} ({size:.0f} MiB; source SHA-256 {digest}); "
        f"pytorch-fid's file: "
        f"{digest.startswith(TORCH_WEIGHTS_SHA256_PREFIX)}")


if __name__ == "__main__":
  main()
