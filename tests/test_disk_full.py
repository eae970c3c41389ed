"""A full disk ends a run with one clear error, whatever layer noticed it."""

import errno

import pytest

from couae_jax import checkpointing, loop
from couae_jax import config as config_lib

pytestmark = pytest.mark.standard_promotion  # optax/flax promote

TINY = dict(data="grid", latent_dim=3, hidden=(8,), batch_size=100,
            grid_train_size=100, steps=4, checkpoint_every=2, log_every=2)


def _orbax_style_failure():
  """An ENOSPC wrapped the way TensorStore reports it through orbax."""
  try:
    raise OSError(errno.ENOSPC, "No space left on device")
  except OSError as cause:
    raise ValueError("Error writing local file: [OS error 28]") from cause


@pytest.mark.parametrize("failure", [
    lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "disk")),
    _orbax_style_failure,
    lambda: (_ for _ in ()).throw(
        ValueError("write failed: No space left on device")),
])
def test_disk_full_during_a_save_is_one_clear_error(tmp_path, monkeypatch,
                                                    failure):
  def full_disk_save(self, step, *args, **kwargs):
    failure()

  monkeypatch.setattr(checkpointing.Checkpointer, "save", full_disk_save)
  with pytest.raises(loop.DiskFull, match="No space left on device while "
                     "training in .*run.*free space") as info:
    loop.fit(config_lib.TrainConfig(**TINY), str(tmp_path / "run"),
             progress=False)
  assert info.value.errno == errno.ENOSPC
  assert info.value.__suppress_context__


def test_other_save_errors_pass_through(tmp_path, monkeypatch):
  def failing_save(self, step, *args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied")

  monkeypatch.setattr(checkpointing.Checkpointer, "save", failing_save)
  with pytest.raises(PermissionError):
    loop.fit(config_lib.TrainConfig(**TINY), str(tmp_path / "run"),
             progress=False)
