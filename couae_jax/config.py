"""The training configuration: one frozen dataclass, overridable by name.

`TrainConfig` holds every choice of a run. It is saved with each checkpoint,
so a restored model knows how it was trained, and a workdir refuses to resume
under a different configuration. `validate` rejects bad values before anything
is compiled, with a message saying what to change.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import numbers
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Sequence

import numpy as np

from couae_jax import _checks, _config_limits, kernels, losses
from couae_jax._config_limits import kernel_scale_range

MODELS = ("couae", "wae", "vae")
DATASETS = ("grid", "digits", "npz", "mnist", "celeba")
ARCHITECTURES = ("auto", "mlp", "conv")
PRIORS = ("normal", "uniform")
SCHEDULES = ("constant", "cosine", "piecewise")
ENSEMBLES = ("auto", "vmap", "loop")


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
    conv_kernel_size: the side k of the conv nets' k×k (transposed)
      convolution kernels (4; WAE's CelebA nets use 5). Unused by MLPs.
    steps: optimisation steps in total.
    batch_size: the global batch (all devices and processes together).
    seed: fixes initialisation, data order, prior samples and noise.
    lam: the weight λ of the regulariser in `REC + λ D(q_Z, p_Z)`.
    learning_rate, b1, b2: Adam's settings.
    schedule: `constant`, `cosine` decay of the learning rate to 0, or
      `piecewise`: constant, multiplied by `lr_factors[i]` from the step at
      fraction `lr_boundaries[i]` of `steps` on (see `train.make_optimizer`).
    lr_boundaries: for `schedule='piecewise'`, where the rate drops, as
      fractions of `steps` in (0, 1), strictly increasing; fraction f is step
      `floor(f * steps + 0.5)` (the nearest step), so the schedule keeps its
      shape when `steps` changes. Must be empty for the other schedules.
    lr_factors: for `schedule='piecewise'`, the factor (> 0) by which the rate
      is multiplied at each boundary, one per boundary; they compound (WAE's
      CelebA run: boundaries `(30/55, 50/55)`, factors `(0.5, 0.2)`).
    warmup_steps: linear warm-up steps.
    prior: `normal` (N(0, I)) or `uniform` (on [-1, 1]^h), before
      `prior_scale`.
    prior_scale: the factor (> 0) multiplying the prior's samples; the MMD
      kernels' default scales follow it. `vae` requires 1 (its KL is to
      N(0, I)).
    eps: the Coulomb kernel's regulariser.
    coulomb_kernel: CouAE's kernel for h >= 3: `sliced_coulomb` (positive
      definite at every h) or `coulomb`, the paper's `1/(u^(h-2) + eps)`.
    kernel_scale: the Coulomb kernel's unit length; 0 takes the prior's
      `sigma * sqrt(2 h)`; set, within `kernel_scale_range` (float32).
    num_prior_samples: prior samples per step (global); 0 takes batch_size.
    block_size: rows per block of the streamed MMD; 0 evaluates it densely.
    steps_per_call: steps run inside one jitted call (a `lax.scan`); calls
      also end at every log, checkpoint and evaluation step.
    ensemble: how `loop.fit_seeds` advances its seeds (`ensemble.runner`):
      "vmap" (one call of every seed's steps), "loop" (one call per seed and
      step), "auto" (loop for conv networks, which XLA:CPU runs slower
      vmapped). Both give the same run up to float32 rounding.
    checkpoint_every: save every this many steps (and at the end).
    keep_checkpoints: how many of the latest checkpoints to keep (the best one
      by `best_metric` is kept besides).
    best_metric: the training metric whose lowest value marks the best
      checkpoint.
    log_every: steps between progress and JSONL log lines.
    eval_every: steps between evaluations (figures); 0 evaluates at the end.
    grid_train_size: training points of the Grid data set.
    stochastic_encoder: for `couae` and `wae`, a Gaussian encoder: the MMD is
      of reparameterised samples of N(mean, diag(exp(log_var))) (the VAE's
      encoder always is Gaussian).
    standardize: train on `scaling.DataScaling.of(data)`-standardised data;
      the trained model takes and gives data in their own units.
    distributed: call `jax.distributed.initialize()` (multi-host runs; also
      `COUAE_DISTRIBUTED=1`).

  Settings that would train one thing and report or sample another are
  rejected by `validate`: a `vae` with a prior other than N(0, I); a field of
  `MODEL_FIELDS` changed from its default for a model that does not read it
  (the Coulomb kernel's for `wae` and `vae`, the MMD's for `vae`); a
  `data_path` for generated data. `hidden` (conv), `conv_kernel_size` (MLP),
  `grid_train_size` and `stochastic_encoder` (`vae`) serve every model at
  their defaults and are not refused.

  Defaults are the paper's Grid run. Construction does not check values;
  `validate` does, and `from_dict` converts and rejects unknown names.

  Example:
    >>> from couae_jax import config as config_lib
    >>> config = config_lib.TrainConfig(latent_dim=8, hidden=(8,))
    >>> config.replace(model="wae").model, config.batch_size
    ('wae', 500)
    >>> config_lib.TrainConfig.from_dict(config.to_dict()) == config
    True
    >>> config_lib.TrainConfig.from_dict({"lamda": 1.0})
    Traceback (most recent call last):
      ...
    ValueError: unknown config fields ['lamda'].
  """
  data: str = "grid"
  data_path: str = ""
  model: str = "couae"
  architecture: str = "auto"
  latent_dim: int = 3
  width: float = 1.0
  hidden: tuple[int, ...] = (128, 128)
  conv_kernel_size: int = 4
  steps: int = 2000
  batch_size: int = 500
  seed: int = 0
  lam: float = 10.0
  learning_rate: float = 1e-3
  b1: float = 0.5
  b2: float = 0.9
  schedule: str = "constant"
  lr_boundaries: tuple[float, ...] = ()
  lr_factors: tuple[float, ...] = ()
  warmup_steps: int = 0
  prior: str = "normal"
  prior_scale: float = 1.0
  eps: float = kernels.DEFAULT_EPS
  coulomb_kernel: str = "sliced_coulomb"
  kernel_scale: float = 0.0
  num_prior_samples: int = 0
  block_size: int = 128
  steps_per_call: int = 1
  ensemble: str = "auto"
  checkpoint_every: int = 500
  keep_checkpoints: int = 2
  best_metric: str = "loss"
  log_every: int = 100
  eval_every: int = 0
  grid_train_size: int = 500
  stochastic_encoder: bool = False
  standardize: bool = False
  distributed: bool = False

  def replace(self, **changes) -> "TrainConfig":
    """A copy with the named fields changed (unknown names: TypeError)."""
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    """`{field: value}` for every field (tuples stay tuples)."""
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    """The fields as a JSON object with sorted keys."""
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
    """The config with `values` (e.g. parsed JSON or strings) converted to
    the fields' types; missing fields keep their defaults.

    Raises:
      TypeError: `values` not a mapping.
      ValueError: an unknown field, or a value not convertible to its type.
    """
    if not isinstance(values, Mapping):
      raise TypeError(
          f"values must be a mapping of config fields; got "
          f"{type(values).__name__}.")
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
      item = typing.get_args(hint)[0]
      return tuple(item(v) for v in value)
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
  """Applies `--config.FIELD=VALUE` arguments (a sequence of str) to
  `config`, later ones winning; values are converted to the field's type
  (`hidden=64,32` gives `(64, 32)`, booleans take true/false/1/0), not
  validated. Raises TypeError for non-strings, ValueError for another form,
  an unknown field (listing the fields) or a value not of its type.

  Example:
    >>> from couae_jax import config as config_lib
    >>> config = config_lib.parse_overrides(
    ...     config_lib.TrainConfig(),
    ...     ["--config.lam=2.5", "--config.hidden=64,32"])
    >>> config.lam, config.hidden
    (2.5, (64, 32))
    >>> config_lib.parse_overrides(config, ["--config.steps=1.5"])
    Traceback (most recent call last):
      ...
    ValueError: config.steps must be of type int; got '1.5'.
  """
  check_type(config)
  if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
    raise TypeError(
        f"args must be a sequence of strings like '--config.lam=1'; got "
        f"{type(args).__name__} {args!r:.80}.")
  args = list(args)
  for arg in args:
    if not isinstance(arg, str):
      raise TypeError(
          f"args must hold strings like '--config.lam=1'; got "
          f"{type(arg).__name__} {arg!r:.80}.")
  changes: dict[str, Any] = {}
  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  for arg in args:
    if not arg.startswith("--config.") or "=" not in arg:
      raise ValueError(
          f"args must be --config.FIELD=VALUE arguments; got {arg!r}; fields: "
          f"{', '.join(sorted(fields))}.")
    name, value = arg[len("--config."):].split("=", 1)
    if name not in fields:
      raise ValueError(f"unknown config field {name!r}; fields: "
                       f"{', '.join(sorted(fields))}.")
    changes[name] = value
  merged = config.to_dict() | changes
  return TrainConfig.from_dict(merged)


def validate(config: TrainConfig, *, devices: int = 1,
             processes: int = 1) -> None:
  """Rejects a bad configuration before any compilation: the one check.

  `loop.fit` runs it before anything is built, `inference.restore` before a
  model is rebuilt; everything that takes a config (`objective.make_objective`,
  `train.make_optimizer`, `train.build_model`, `loop.load_dataset`) trusts it.
  It checks each field's type and range; that the fields agree (the piecewise
  schedule's fields and `schedule`; a `vae` with the N(0, I) prior its KL is
  to; no field the model does not read changed from its default,
  `unread_fields`; a `data_path` only for data read from files); that a set
  `kernel_scale` is one float32 evaluates the kernel at
  (`kernel_scale_range`); that the networks' training state fits in memory;
  and that the global batch and prior samples split over `devices` and
  `processes`. The data set's size is checked where it is loaded
  (`validate_data_size`).

  Raises:
    TypeError: `config` not a `TrainConfig`.
    ValueError: a bad field: the message starts `bad config:` and names the
      field and what to change.

  Example:
    >>> from couae_jax import config as config_lib
    >>> config_lib.validate(config_lib.TrainConfig(batch_size=10), devices=4)
    Traceback (most recent call last):
      ...
    ValueError: bad config: batch_size=10 is not divisible by the 4 devices; use a multiple of 4.
    >>> vae = config_lib.TrainConfig(model="vae", prior="uniform")
    >>> config_lib.validate(vae)
    Traceback (most recent call last):
      ...
    ValueError: bad config: prior='uniform': the VAE's KL is to N(0, I), the prior it generates from; set --config.prior=normal for model='vae'.
  """
  check_type(config)
  _checks.positive_int("devices", devices)
  _checks.positive_int("processes", processes)

  def require(condition: bool, message: str) -> None:
    if not condition:
      raise ValueError(f"bad config: {message}")

  _check_field_types(config, require)
  for name, choices in (("model", MODELS), ("data", DATASETS),
                        ("architecture", ARCHITECTURES), ("prior", PRIORS),
                        ("schedule", SCHEDULES), ("ensemble", ENSEMBLES)):
    value = getattr(config, name)
    require(value in choices, f"{name}={value!r}; choose one of {choices}.")
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
  # The trainer stacks the seeds of an ensemble as int32.
  require(0 <= config.seed < 2**31,
          f"seed={config.seed} must lie in [0, 2**31).")
  require(config.batch_size >= 2,
          f"batch_size={config.batch_size} must be >= 2 (the MMD needs two "
          "codes).")
  require(config.batch_size % processes == 0,
          f"batch_size={config.batch_size} is not divisible by the "
          f"{processes} processes; use a multiple of {processes}.")
  require(config.batch_size % devices == 0,
          f"batch_size={config.batch_size} is not divisible by the {devices} "
          f"devices; use a multiple of {devices}.")
  require(config.num_prior_samples == 0 or config.num_prior_samples >= 2,
          f"num_prior_samples={config.num_prior_samples}: the unbiased MMD "
          "needs at least 2 prior samples; use 0 (as many as batch_size) or "
          "2 or more.")
  prior_samples = config.num_prior_samples or config.batch_size
  require(prior_samples % devices == 0,
          f"num_prior_samples={config.num_prior_samples} must be 0 (same as "
          f"the batch) or a positive multiple of the {devices} devices.")
  require(config.learning_rate > 0,
          f"learning_rate={config.learning_rate} must be > 0.")
  require(0 <= config.b1 < 1 and 0 <= config.b2 < 1,
          f"b1={config.b1}, b2={config.b2} must lie in [0, 1).")
  require(0 <= config.warmup_steps < config.steps,
          f"warmup_steps={config.warmup_steps} must lie in [0, steps).")
  _check_piecewise(config, require)
  require(config.prior_scale > 0,
          f"prior_scale={config.prior_scale} must be > 0.")
  # The VAE's KL is to N(0, I) whatever the prior fields say, and a trained
  # model generates from the objective's prior: they must be that prior.
  require(config.model != "vae" or config.prior == "normal",
          f"prior={config.prior!r}: the VAE's KL is to N(0, I), the prior it "
          "generates from; set --config.prior=normal for model='vae'.")
  require(config.model != "vae" or config.prior_scale == 1,
          f"prior_scale={config.prior_scale}: the VAE's KL is to N(0, I); "
          "set --config.prior_scale=1 for model='vae'.")
  unread = unread_fields(config)
  require(not unread, "; ".join(
      f"{name}={getattr(config, name)!r} (read by "
      f"{'/'.join(MODEL_FIELDS[name])} only)" for name in unread)
      + f": model={config.model!r} would ignore "
      f"{'it' if len(unread) == 1 else 'them'}; leave "
      f"{'it' if len(unread) == 1 else 'them'} at the default or change "
      "--config.model.")
  require(config.conv_kernel_size >= 1,
          f"conv_kernel_size={config.conv_kernel_size} must be >= 1.")
  require(config.eps > 0, f"eps={config.eps} must be > 0.")
  require(config.coulomb_kernel in losses.COULOMB_KERNELS,
          f"coulomb_kernel={config.coulomb_kernel!r}; choose one of "
          f"{tuple(losses.COULOMB_KERNELS)}.")
  require(config.kernel_scale >= 0,
          f"kernel_scale={config.kernel_scale} must be > 0, or 0 for the "
          "default.")
  _config_limits.check_kernel_scale(config, require)
  require(config.block_size >= 0,
          f"block_size={config.block_size} must be > 0, or 0 for dense.")
  require(config.steps_per_call >= 1,
          f"steps_per_call={config.steps_per_call} must be >= 1.")
  require(config.checkpoint_every >= 1,
          f"checkpoint_every={config.checkpoint_every} must be >= 1.")
  require(config.keep_checkpoints >= 1,
          f"keep_checkpoints={config.keep_checkpoints} must be >= 1.")
  require(config.best_metric in ("loss", "rec", "reg"),
          f"best_metric={config.best_metric!r}; choose loss, rec or reg.")
  require(config.log_every >= 1, f"log_every={config.log_every} must be >= 1.")
  require(config.eval_every >= 0,
          f"eval_every={config.eval_every} must be >= 0.")
  require(config.data not in _FILE_DATA or bool(config.data_path),
          f"data={config.data!r} reads files: set --config.data_path.")
  # A path with generated data is a forgotten --config.data: the run would
  # train on the Grid (or the digits) and never read the file.
  require(config.data in _FILE_DATA or not config.data_path,
          f"data_path={config.data_path!r} is not read by data="
          f"{config.data!r} (generated data); set --config.data to one of "
          f"{_FILE_DATA} to train on it, or leave data_path empty.")
  require(config.grid_train_size >= 25 and config.grid_train_size % 25 == 0,
          f"grid_train_size={config.grid_train_size} must be a positive "
          "multiple of 25 (equal points per mode).")
  _config_limits.check_model_memory(config, require)


def validate_data_size(config: TrainConfig, num_examples: int, *,
                       devices: int = 1, processes: int = 1) -> None:
  """Rejects a `batch_size` larger than the data set (`num_examples`):
  the batch would have to be cut, changing the run; the message gives the
  largest batch that fits and splits over the devices.

  Example:
    >>> from couae_jax import config as config_lib
    >>> config_lib.validate_data_size(config_lib.TrainConfig(batch_size=600),
    ...                               500, devices=3)
    Traceback (most recent call last):
      ...
    ValueError: bad config: batch_size=600 exceeds the 500 training examples; set --config.batch_size=498 or less, a multiple of the 3 devices.
  """
  _checks.positive_int("num_examples", num_examples)
  _checks.positive_int("devices", devices)
  _checks.positive_int("processes", processes)
  if config.batch_size <= num_examples:
    return
  multiple = math.lcm(devices, processes)
  largest = num_examples - num_examples % multiple
  if largest < 2:
    advice = (f"the {num_examples} examples cannot be split over the "
              f"{devices} devices in batches of at least 2; use more data "
              "or fewer devices")
  elif multiple == 1:
    advice = f"set --config.batch_size={largest} or less"
  else:
    advice = (f"set --config.batch_size={largest} or less, a multiple of the "
              f"{devices} devices" + (f" and {processes} processes"
                                      if processes > 1 else ""))
  raise ValueError(
      f"bad config: batch_size={config.batch_size} exceeds the "
      f"{num_examples} training examples; {advice}.")


#: Data sets read from `data_path`; the others are generated.
_FILE_DATA = ("npz", "mnist", "celeba")

#: The fields only some models read, with those models: `validate` refuses
#: them changed from their defaults for another model.
MODEL_FIELDS = {
    "eps": ("couae",), "coulomb_kernel": ("couae",),
    "kernel_scale": ("couae",), "block_size": ("couae", "wae"),
    "num_prior_samples": ("couae", "wae"),
}


def unread_fields(config: TrainConfig) -> list[str]:
  """The fields of `MODEL_FIELDS` that `config.model` does not read but
  that differ from their defaults, in declaration order.

  Example:
    >>> from couae_jax import config as config_lib
    >>> config_lib.unread_fields(config_lib.TrainConfig(model="wae",
    ...                                                 kernel_scale=2.0))
    ['kernel_scale']
  """
  defaults = TrainConfig()
  return [name for name, readers in MODEL_FIELDS.items()
          if config.model not in readers
          and getattr(config, name) != getattr(defaults, name)]


def without_unread_fields(config: TrainConfig) -> TrainConfig:
  """`config` with its `unread_fields` at their defaults: how a checkpoint
  saved before `validate` refused them (when they were ignored) restores."""
  defaults = TrainConfig()
  return config.replace(**{name: getattr(defaults, name)
                           for name in unread_fields(config)})


def _check_piecewise(config: TrainConfig, require) -> None:
  """`lr_boundaries` and `lr_factors` fit `schedule` (types checked first)."""
  boundaries, factors = config.lr_boundaries, config.lr_factors
  if config.schedule != "piecewise":
    given = ", ".join(f"{name}={tuple(value)}" for name, value in
                      (("lr_boundaries", boundaries), ("lr_factors", factors))
                      if len(value))
    require(not given,
            f"{given} applies only to schedule='piecewise' (schedule="
            f"{config.schedule!r}); set --config.schedule=piecewise or leave "
            "lr_boundaries and lr_factors empty.")
    return
  require(len(boundaries) >= 1,
          "lr_boundaries=() is empty: schedule='piecewise' needs at least "
          "one boundary (a fraction of steps in (0, 1)).")
  require(all(0 < b < 1 for b in boundaries),
          f"lr_boundaries={tuple(boundaries)} must be fractions of steps in "
          "(0, 1).")
  require(all(a < b for a, b in itertools.pairwise(boundaries)),
          f"lr_boundaries={tuple(boundaries)} must be strictly increasing.")
  require(len(factors) == len(boundaries),
          f"lr_factors={tuple(factors)} must hold one factor per boundary "
          f"({len(boundaries)} lr_boundaries).")
  require(all(f > 0 for f in factors),
          f"lr_factors={tuple(factors)} must all be > 0.")


def boundary_steps(config: TrainConfig) -> dict[int, float]:
  """The piecewise schedule's `{step: factor}`, in increasing order of
  step: each fraction of `config.lr_boundaries` rounded to the nearest step
  of `config.steps` (halves up); factors of one step multiply.

  Example:
    >>> from couae_jax import config as config_lib
    >>> config_lib.boundary_steps(config_lib.TrainConfig(
    ...     schedule="piecewise", steps=110,
    ...     lr_boundaries=(30 / 55, 50 / 55), lr_factors=(0.5, 0.2)))
    {60: 0.5, 100: 0.2}
  """
  steps: dict[int, float] = {}
  for fraction, factor in zip(config.lr_boundaries, config.lr_factors,
                              strict=True):
    step = math.floor(float(fraction) * config.steps + 0.5)
    steps[step] = steps.get(step, 1.0) * float(factor)
  return steps


def check_type(config, name: str = "config") -> None:
  """Raises TypeError unless `config` is a `TrainConfig` (values unchecked:
  that is `validate`)."""
  _checks.instance(name, config, TrainConfig, "a TrainConfig")


def _check_field_types(config: TrainConfig, require) -> None:
  """Each field has its declared type; reals are finite."""
  hints = typing.get_type_hints(TrainConfig)
  for field in dataclasses.fields(TrainConfig):
    value, hint = getattr(config, field.name), hints[field.name]
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[0] is int:
      ok = isinstance(value, (tuple, list)) and all(
          isinstance(v, numbers.Integral) and not isinstance(v, bool)
          for v in value)
      expected = "a tuple of ints"
    elif typing.get_origin(hint) is tuple:
      ok = isinstance(value, (tuple, list)) and all(
          isinstance(v, numbers.Real) and not isinstance(v, bool)
          and math.isfinite(v) for v in value)
      expected = "a tuple of finite numbers"
    elif hint is bool:
      ok, expected = isinstance(value, (bool, np.bool_)), "a bool"
    elif hint is int:
      ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
      expected = "an int"
    elif hint is float:
      ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))
      expected = "a finite number"
    else:
      ok, expected = isinstance(value, str), "a str"
    require(ok, f"{field.name}={value!r} must be {expected}.")


__all__ = ["MODEL_FIELDS", "TrainConfig", "boundary_steps", "check_type",
           "kernel_scale_range", "parse_overrides", "unread_fields",
           "validate", "validate_data_size", "without_unread_fields"]
