"""Converts pytorch-fid's Inception weights (.pth) to the npz couae_jax reads.

Command (on a machine with PyTorch; nothing else here needs it):
  python -m experiments.convert_fid_weights \
      pt_inception-2015-12-05-6726825d.pth pt_inception-2015-12-05-6726825d.npz

The `.pth` is pytorch-fid's port of the TF 2015-12-05 FID Inception, from
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
The npz holds its state dict as NumPy arrays under the same names and
layouts, plus the `.pth`'s SHA-256; the script refuses a file whose SHA-256
does not start with the published prefix 6726825d (override with --force),
and checks that `couae_jax.fid.load_inception_weights` accepts the result.
Pass the npz to the experiments with `--fid-weights`.

Expected result: a ~90 MB npz, and "verified: True".
"""

from __future__ import annotations

import argparse

import numpy as np

from couae_jax import fid


def convert(source: str, target: str, *, force: bool = False) -> str:
  """Writes the npz of the `.pth` state dict at `source`; returns its SHA-256.

  Raises:
    ImportError: PyTorch is not installed (it is needed only here).
    ValueError: the file's SHA-256 is not pytorch-fid's (without `force`).
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "converting the FID weights needs PyTorch, only for reading the .pth "
        "file: pip install torch (CPU build is enough), or run this script "
        "on any machine that has it and copy the npz back.") from e
  digest = fid.sha256_of(source)
  if not digest.startswith(fid.TORCH_WEIGHTS_SHA256_PREFIX) and not force:
    raise ValueError(
        f"{source} has SHA-256 {digest}, not pytorch-fid's "
        f"{fid.TORCH_WEIGHTS_SHA256_PREFIX}...; download {fid.FID_WEIGHTS_URL}"
        " again, or pass --force to convert it anyway.")
  state = torch.load(source, map_location="cpu", weights_only=True)
  arrays = {name: tensor.detach().cpu().numpy()
            for name, tensor in state.items()}
  arrays[fid.SOURCE_HASH_KEY] = np.asarray(digest)
  with open(target, "wb") as f:
    np.savez(f, **arrays)
  fid.load_inception_weights(target)  # Fails loudly on a wrong layout.
  return digest


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("source", help=f"the .pth ({fid.TORCH_WEIGHTS_NAME})")
  parser.add_argument("target", nargs="?", default=fid.WEIGHTS_NAME,
                      help=f"the npz to write (default {fid.WEIGHTS_NAME})")
  parser.add_argument("--force", action="store_true",
                      help="convert even if the SHA-256 differs")
  args = parser.parse_args(argv)
  digest = convert(args.source, args.target, force=args.force)
  print(f"wrote {args.target} (source SHA-256 {digest}); verified: "
        f"{fid.weights_source_verified(args.target)}")


if __name__ == "__main__":
  main()
