"""Shared fixtures and float64 NumPy references for the kernel and MMD tests.

The references never call `couae_jax`: pairwise squared distances come from
NumPy broadcasting in float64 and the kernels from their closed forms.
`KernelCase` pairs each library kernel under test with its reference.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest

from couae_jax import kernels

try:  # The config context manager moved to the top level in newer JAX.
  _enable_x64 = jax.enable_x64
except AttributeError:  # pragma: no cover - older JAX
  from jax.experimental import enable_x64 as _enable_x64


@pytest.fixture(autouse=True)
def strict_dtype_promotion(request):
  """Every test runs with strict dtype promotion: no silent upcasts.

  Modules marked `standard_promotion` (`pytestmark`) run with JAX's default:
  they drive optax and flax, whose Adam bias correction (`b1 ** count`)
  promotes a Python float against an int32 count.
  """
  if request.node.get_closest_marker("standard_promotion"):
    yield
    return
  with jax.numpy_dtype_promotion("strict"):
    yield


@pytest.fixture
def rng() -> jax.Array:
  """A JAX key, for sampling inside jitted code."""
  return jax.random.key(0)


@pytest.fixture
def np_rng() -> np.random.Generator:
  """A seeded NumPy generator, for test inputs built outside JAX (eager JAX
  sampling would compile a program for every new shape)."""
  return np.random.default_rng(0)


@pytest.fixture
def enable_x64():
  with _enable_x64(True):
    yield


#: The tiny Grid run of the trainer tests: small MLPs, full batch, a few
#: seconds. `tests/test_train.py` and `tests/test_checkpoint_safety.py` use it.
TINY_TRAIN = dict(data="grid", latent_dim=3, hidden=(32, 32), batch_size=500,
                  log_every=10, checkpoint_every=10)


@pytest.fixture(scope="session")
def tiny_grid_run(tmp_path_factory):
  """`loop.fit` of `TrainConfig(steps=20, **TINY_TRAIN)` in a session-wide
  workdir (checkpoints 10 and 20, metrics, figures) and what it returned.

  Trained once for every test that reads a finished run; tests that change
  the workdir copy it first (it must stay as the run left it).
  """
  from couae_jax import config as config_lib
  from couae_jax import loop
  config = config_lib.TrainConfig(steps=20, **TINY_TRAIN)
  workdir = tmp_path_factory.mktemp("tiny_grid_run")
  # optax/flax promote (the `standard_promotion` of the trainer tests).
  with jax.numpy_dtype_promotion("standard"):
    trained = loop.fit(config, str(workdir), progress=False)
  return workdir, trained


# ----------------------------------------------------------------------------
# Float64 references.


def sq_dists(a, b) -> np.ndarray:
  """`[..., n, m]` squared distances by broadcasting, in float64."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  diff = a[..., :, None, :] - b[..., None, :, :]
  return np.sum(diff * diff, axis=-1)


def default_scale(h: int) -> float:
  return math.sqrt(2.0 * h)


def coulomb_profile(t, *, h, eps, scale=None):
  """`1 / ((sqrt(t) / scale)^(h - 2) + eps)` in float64."""
  scale = default_scale(h) if scale is None else scale
  with np.errstate(over="ignore"):
    q = (np.asarray(t, np.float64) / scale**2) ** ((h - 2) / 2.0)
    return 1.0 / (q + eps)


def coulomb_slope(t, *, h, eps, scale=None):
  """d k / d t of `coulomb_profile` (0 at t = 0, as the library defines)."""
  scale = default_scale(h) if scale is None else scale
  t = np.asarray(t, np.float64)
  p = h - 2
  with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
    q = (t / scale**2) ** (p / 2.0)
    k = 1.0 / (q + eps)
    slope = -0.5 * p * (q * k) * k / t
  return np.where((t > 0) & np.isfinite(q), slope, 0.0)


def sliced_coulomb_profile(t, *, h, eps, scale=None):
  """`1 / (sqrt(t) / scale + eps)` in float64."""
  scale = default_scale(h) if scale is None else scale
  return 1.0 / (np.sqrt(np.asarray(t, np.float64)) / scale + eps)


def sliced_coulomb_slope(t, *, h, eps, scale=None):
  """d k / d t of `sliced_coulomb_profile` (0 at t = 0, as the library
  defines)."""
  scale = default_scale(h) if scale is None else scale
  t = np.asarray(t, np.float64)
  r = np.sqrt(t)
  with np.errstate(divide="ignore", invalid="ignore"):
    slope = -0.5 / (scale * r * (r / scale + eps) ** 2)
  return np.where(t > 0, slope, 0.0)


def coulomb_log_profile(t, *, eps, scale=2.0):
  return -0.5 * np.log(np.asarray(t, np.float64) / scale**2 + eps)


def coulomb_log_slope(t, *, eps, scale=2.0):
  return -0.5 / (np.asarray(t, np.float64) + eps * scale**2)


def gaussian_profile(t, *, scale):
  return np.exp(-0.5 * np.asarray(t, np.float64) / scale**2)


def gaussian_slope(t, *, scale):
  return -0.5 / scale**2 * gaussian_profile(t, scale=scale)


def imq_profile(t, *, scale):
  c = scale**2
  return c / (c + np.asarray(t, np.float64))


def imq_slope(t, *, scale):
  c = scale**2
  return -c / (c + np.asarray(t, np.float64)) ** 2


def mmd2_reference(x, y, profile, *, biased=False) -> float:
  """The U- (or V-) statistic MMD² from float64 Gram matrices."""
  kxx = profile(sq_dists(x, x))
  kyy = profile(sq_dists(y, y))
  kxy = profile(sq_dists(x, y))
  n, m = kxx.shape[0], kyy.shape[0]
  if biased:
    return kxx.sum() / n**2 + kyy.sum() / m**2 - 2.0 * kxy.mean()
  off_xx = kxx.sum() - np.trace(kxx)
  off_yy = kyy.sum() - np.trace(kyy)
  return off_xx / (n * (n - 1)) + off_yy / (m * (m - 1)) - 2.0 * kxy.mean()


def mmd2_reference_grad(x, y, slope):
  """Analytic float64 gradient of the unbiased MMD² w.r.t. x and y.

  d/dz_a sum_{a,b} c_ab k(|z_a - z_b|^2) = 4 sum_b c_ab k'(t_ab) (z_a - z_b).
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  n, m = x.shape[0], y.shape[0]
  z = np.concatenate([x, y])
  c = np.empty((n + m, n + m))
  c[:n, :n] = 1.0 / (n * (n - 1))
  c[n:, n:] = 1.0 / (m * (m - 1))
  c[:n, n:] = c[n:, :n] = -1.0 / (n * m)
  np.fill_diagonal(c, 0.0)
  w = c * slope(sq_dists(z, z))
  grad = 4.0 * (z * w.sum(1, keepdims=True) - w @ z)
  return grad[:n], grad[n:]


def random_rotation(h: int, seed: int) -> np.ndarray:
  """A Haar-random orthogonal matrix, float64."""
  q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(h, h)))
  return q * np.sign(np.diag(r))[None, :]


# ----------------------------------------------------------------------------
# Kernel cases: the library kernel with its float64 profile and slope.

RADIAL_NAMES = ("coulomb", "coulomb_eps", "sliced_coulomb",
                "sliced_coulomb_eps", "gaussian", "imq", "multiscale_imq",
                "multiscale_coulomb")


class KernelCase:
  """A library kernel for latent size `h` with its float64 reference."""

  def __init__(self, name: str, h: int):
    self.name, self.h = name, h
    s = math.sqrt(h)
    if name == "coulomb":
      # The defaults: eps = kernels.DEFAULT_EPS, scale = sqrt(2 h).
      eps = kernels.DEFAULT_EPS
      self.kernel = functools.partial(kernels.coulomb)
      self.profile = lambda t: coulomb_profile(t, h=h, eps=eps)
      self.slope = lambda t: coulomb_slope(t, h=h, eps=eps)
      self.at_zero = 1.0 / eps
    elif name == "coulomb_eps":
      eps, scale = 0.05, 0.9 * default_scale(h)
      self.kernel = functools.partial(kernels.coulomb, eps=eps, scale=scale)
      self.profile = lambda t: coulomb_profile(t, h=h, eps=eps, scale=scale)
      self.slope = lambda t: coulomb_slope(t, h=h, eps=eps, scale=scale)
      self.at_zero = 1.0 / eps
    elif name == "sliced_coulomb":
      eps = kernels.DEFAULT_EPS
      self.kernel = functools.partial(kernels.sliced_coulomb)
      self.profile = lambda t: sliced_coulomb_profile(t, h=h, eps=eps)
      self.slope = lambda t: sliced_coulomb_slope(t, h=h, eps=eps)
      self.at_zero = 1.0 / eps
    elif name == "sliced_coulomb_eps":
      eps, scale = 0.05, 0.9 * default_scale(h)
      self.kernel = functools.partial(kernels.sliced_coulomb, eps=eps,
                                      scale=scale)
      self.profile = lambda t: sliced_coulomb_profile(t, h=h, eps=eps,
                                                      scale=scale)
      self.slope = lambda t: sliced_coulomb_slope(t, h=h, eps=eps, scale=scale)
      self.at_zero = 1.0 / eps
    elif name == "coulomb_log":
      assert h == 2
      eps, scale = 1e-2, 1.5
      self.kernel = functools.partial(kernels.coulomb_log, eps=eps, scale=scale)
      self.profile = lambda t: coulomb_log_profile(t, eps=eps, scale=scale)
      self.slope = lambda t: coulomb_log_slope(t, eps=eps, scale=scale)
      self.at_zero = -0.5 * math.log(eps)
    elif name == "gaussian":
      self.kernel = functools.partial(kernels.gaussian, scale=s)
      self.profile = lambda t: gaussian_profile(t, scale=s)
      self.slope = lambda t: gaussian_slope(t, scale=s)
      self.at_zero = 1.0
    elif name == "imq":
      c = default_scale(h)
      self.kernel = functools.partial(kernels.imq, scale=c)
      self.profile = lambda t: imq_profile(t, scale=c)
      self.slope = lambda t: imq_slope(t, scale=c)
      self.at_zero = 1.0
    elif name == "multiscale_imq":
      scales = (0.5 * s, s, 2.0 * s)
      self.kernel = kernels.multiscale(kernels.imq, scales=scales)
      self.profile = lambda t: sum(imq_profile(t, scale=c) for c in scales)
      self.slope = lambda t: sum(imq_slope(t, scale=c) for c in scales)
      self.at_zero = 3.0
    elif name == "multiscale_coulomb":
      eps = 1e-2
      scales = tuple(f * default_scale(h) for f in (0.9, 1.0, 1.1))
      self.kernel = kernels.multiscale(kernels.coulomb, scales=scales, eps=eps)
      self.profile = lambda t: sum(
          coulomb_profile(t, h=h, eps=eps, scale=c) for c in scales)
      self.slope = lambda t: sum(
          coulomb_slope(t, h=h, eps=eps, scale=c) for c in scales)
      self.at_zero = 3.0 / eps
    else:
      raise ValueError(name)

  def __repr__(self):
    return f"KernelCase({self.name!r}, h={self.h})"
