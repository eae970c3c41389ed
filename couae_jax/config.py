"""The training configuration: one frozen dataclass, overridable by name.

`TrainConfig` holds every choice of a run. It is saved with each checkpoint,
so a restored model knows how it was trained, and a workdir refuses to resume
under a different configuration. `validate` rejects bad values before anything
is compiled, with a message saying what to change.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Optional, Sequence

from couae_jax import kernels

MODELS = ("couae", "wae", "vae")
DATASETS = ("grid", "digits", "npz", "mnist", "celeba")
ARCHITECTURES = ("auto", "mlp", "conv")
PRIORS = ("normal", "uniform")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Every setting of a training run.

  Attributes:
    data: `grid`, `digits`, `npz`, `mnist` or `celeba`.
    data_path: the file (npz) or directory (mnist, celeba) to read.
    model: `couae` (Coulomb MMD), `wae` (multi-scale IMQ MMD) or `vae` (KL).
    architecture: `mlp`, `conv`, or `auto` (conv for images, mlp otherwise).
    latent_dim: h, the size of the codes.
    width: the factor scaling every hidden width (the paper's ablation uses
      0.25, 0.5 and 1).
    hidden: the MLP's hidden widths at width 1.
    steps: optimisation steps in total.
    batch_size: the global batch (all devices and processes together).
    seed: fixes initialisation, data order, prior samples and noise.
    lam: the weight λ of the regulariser in `REC + λ D(q_Z, p_Z)`.
    learning_rate, b1, b2: Adam's settings.
    schedule: `constant` or `cosine` decay of the learning rate to 0.
    warmup_steps: linear warm-up steps.
    prior: `normal` (N(0, I)) or `uniform` (on [-1, 1]^h).
    eps: the Coulomb kernel's regulariser.
    kernel_scale: the Coulomb kernel's unit length; 0 takes the prior's
      `sigma * sqrt(2 h)`.
    num_prior_samples: prior samples per step (global); 0 takes batch_size.
    block_size: rows per block of the streamed MMD; 0 evaluates it densely
      (autodiff through whole Gram matrices: several times slower on CPU, see
      BUILD_NOTES.md).
    checkpoint_every: save every this many steps (and at the end).
    keep_checkpoints: how many of the latest checkpoints to keep (the best one
      by `best_metric` is kept besides).
    best_metric: the training metric whose lowest value marks the best
      checkpoint.
    log_every: steps between progress and JSONL log lines.
    eval_every: steps between evaluations (figures); 0 evaluates at the end.
    grid_train_size: training points of the Grid data set.
    distributed: call `jax.distributed.initialize()` (multi-host runs); it
      can also be asked for with the environment variable
      `COUAE_DISTRIBUTED=1`.
  """
  data: str = "grid"
  data_path: str = ""
  model: str = "couae"
  architecture: str = "auto"
  latent_dim: int = 3
  width: float = 1.0
  hidden: tuple[int, ...] = (128, 128)
  steps: int = 2000
  batch_size: int = 500
  seed: int = 0
  lam: float = 10.0
  learning_rate: float = 1e-3
  b1: float = 0.5
  b2: float = 0.9
  schedule: str = "constant"
  warmup_steps: int = 0
  prior: str = "normal"
  eps: float = kernels.DEFAULT_EPS
  kernel_scale: float = 0.0
  num_prior_samples: int = 0
  block_size: int = 128
  checkpoint_every: int = 500
  keep_checkpoints: int = 2
  best_metric: str = "loss"
  log_every: int = 100
  eval_every: int = 0
  grid_train_size: int = 500
  distributed: bool = False

  def replace(self, **changes) -> "TrainConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown config fields {unknown}.")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _coerce(name, hints[name], value)
                  for name, value in values.items()})


def _coerce(name: str, hint, value):
  """Converts a JSON or command-line value to the field's declared type."""
  origin = typing.get_origin(hint)
  try:
    if origin is tuple:
      if isinstance(value, str):
        value = [v for v in value.strip("()[] ").split(",") if v.strip()]
      return tuple(int(v) for v in value)
    if hint is bool:
      if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0"):
          raise ValueError(value)
        return value.lower() in ("true", "1")
      return bool(value)
    if hint is int and isinstance(value, float) and not value.is_integer():
      raise ValueError(value)
    return hint(value)
  except (TypeError, ValueError):
    raise ValueError(
        f"config.{name} must be of type {getattr(hint, '__name__', hint)}; "
        f"got {value!r}.") from None


def parse_overrides(config: TrainConfig, args: Sequence[str]) -> TrainConfig:
  """Applies `--config.FIELD=VALUE` arguments to `config`.

  Raises:
    ValueError: an argument not of that form, or an unknown field (the message
      lists the fields).
  """
  changes: dict[str, Any] = {}
  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  for arg in args:
    if not arg.startswith("--config.") or "=" not in arg:
      raise ValueError(
          f"expected --config.FIELD=VALUE, got {arg!r}; fields: "
          f"{', '.join(sorted(fields))}.")
    name, value = arg[len("--config."):].split("=", 1)
    if name not in fields:
      raise ValueError(
          f"unknown config field {name!r}; fields: {', '.join(sorted(fields))}.")
    changes[name] = value
  merged = config.to_dict() | changes
  return TrainConfig.from_dict(merged)


def validate(config: TrainConfig, *, devices: int = 1,
             processes: int = 1) -> None:
  """Rejects a bad configuration before any compilation.

  Args:
    config: the configuration.
    devices: devices the global batch is split over.
    processes: processes (hosts) feeding the global batch.

  Raises:
    ValueError: naming the field and what to change.
  """
  def require(condition: bool, message: str) -> None:
    if not condition:
      raise ValueError(f"bad config: {message}")

  require(config.model in MODELS,
          f"model={config.model!r}; choose one of {MODELS}.")
  require(config.data in DATASETS,
          f"data={config.data!r}; choose one of {DATASETS}.")
  require(config.architecture in ARCHITECTURES,
          f"architecture={config.architecture!r}; choose one of "
          f"{ARCHITECTURES}.")
  require(config.prior in PRIORS,
          f"prior={config.prior!r}; choose one of {PRIORS}.")
  require(config.schedule in SCHEDULES,
          f"schedule={config.schedule!r}; choose one of {SCHEDULES}.")
  require(config.lam >= 0, f"lam={config.lam} must be >= 0.")
  require(config.latent_dim >= 1,
          f"latent_dim={config.latent_dim} must be >= 1.")
  require(config.model != "couae" or config.latent_dim >= 2,
          f"latent_dim={config.latent_dim}: the Coulomb kernel needs h >= 2 "
          "(h = 2 uses the logarithmic kernel); set --config.latent_dim=3 or "
          "more.")
  require(config.width > 0, f"width={config.width} must be > 0.")
  require(all(w >= 1 for w in config.hidden) and len(config.hidden) >= 1,
          f"hidden={config.hidden} must be a non-empty list of widths >= 1.")
  require(config.steps >= 1, f"steps={config.steps} must be >= 1.")
  require(config.batch_size >= 2,
          f"batch_size={config.batch_size} must be >= 2 (the MMD needs two "
          "codes).")
  require(config.batch_size % processes == 0,
          f"batch_size={config.batch_size} is not divisible by the "
          f"{processes} processes; use a multiple of {processes}.")
  require(config.batch_size % devices == 0,
          f"batch_size={config.batch_size} is not divisible by the {devices} "
          f"devices; use a multiple of {devices}.")
  prior_samples = config.num_prior_samples or config.batch_size
  require(config.num_prior_samples >= 0 and prior_samples % devices == 0,
          f"num_prior_samples={config.num_prior_samples} must be 0 (same as "
          f"the batch) or a positive multiple of the {devices} devices.")
  require(config.learning_rate > 0,
          f"learning_rate={config.learning_rate} must be > 0.")
  require(0 <= config.b1 < 1 and 0 <= config.b2 < 1,
          f"b1={config.b1}, b2={config.b2} must lie in [0, 1).")
  require(0 <= config.warmup_steps < config.steps,
          f"warmup_steps={config.warmup_steps} must lie in [0, steps).")
  require(config.eps > 0, f"eps={config.eps} must be > 0.")
  require(config.kernel_scale >= 0,
          f"kernel_scale={config.kernel_scale} must be > 0, or 0 for the "
          "default.")
  require(config.block_size >= 0,
          f"block_size={config.block_size} must be > 0, or 0 for dense.")
  require(config.checkpoint_every >= 1,
          f"checkpoint_every={config.checkpoint_every} must be >= 1.")
  require(config.keep_checkpoints >= 1,
          f"keep_checkpoints={config.keep_checkpoints} must be >= 1.")
  require(config.best_metric in ("loss", "rec", "reg"),
          f"best_metric={config.best_metric!r}; choose loss, rec or reg.")
  require(config.log_every >= 1, f"log_every={config.log_every} must be >= 1.")
  require(config.eval_every >= 0,
          f"eval_every={config.eval_every} must be >= 0.")
  require(config.data not in ("npz", "mnist", "celeba") or config.data_path,
          f"data={config.data!r} reads files: set --config.data_path.")
  require(config.grid_train_size >= 25 and config.grid_train_size % 25 == 0,
          f"grid_train_size={config.grid_train_size} must be a positive "
          "multiple of 25 (equal points per mode).")


def optional(value: float) -> Optional[float]:
  """Config fields use 0 for 'the default'; the library uses None."""
  return value or None


__all__ = ["TrainConfig", "parse_overrides", "validate"]
