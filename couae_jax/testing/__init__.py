"""Property-testing kit for kernels and MMD estimators: checks and strategies.

For anyone who writes a kernel with the contract of `couae_jax.kernels`
(`kernel(x: [..., h], y: [..., h]) -> [...]`) or an MMD estimator
(`estimator(x: [n, h], y: [m, h]) -> []`) and wants to test it as the project
tests its own:

* `assert_kernel_properties(kernel, h=...)` checks every property listed in
  `KERNEL_PROPERTIES` on deterministic point sets and raises `AssertionError`
  whose message starts with the name of the first violated property.
* `assert_mmd_properties(estimator, h=...)` does the same for estimators
  (`MMD_PROPERTIES`).
* `sample_sets`, `point_pairs` and `float_dtypes` are Hypothesis strategies
  for sets of points and pairs of points, including near-coincident and
  far-apart ones. Hypothesis is optional: it is imported when a strategy is
  built, so `import couae_jax.testing` needs only JAX and NumPy.

Tolerances. Two evaluations `a` and `b` that are equal in exact arithmetic
agree when `|a - b| <= rtol |b| + atol + r`. `rtol` defaults by dtype (1e-4
for float32, 1e-9 for float64). `atol` defaults to `rtol / 1000` times the
kernel's scale, the largest |k| over the test pairs at the scale of the points
(not the far-apart or far-out ones). `r` is the kernel's own rounding error,
estimated from its gradient: `r = 4 (e_a + e_b)` where, for each
evaluation, `e = eps * sum_j (|x_j| |dk/dx_j| + |y_j| |dk/dy_j|)` is the
first-order change of `k` when every input coordinate moves by one machine
epsilon of the input dtype, relative. A kernel that evaluates a large argument
(`cos(2 pi r / p)` at r >> p, a high power) has a large `e` there, so float32
rounding is not reported as a broken property, and a failure message saying
how much of the allowance was rounding means the difference is not.

The kernel is evaluated under `jax.jit`, as models use it: a few
compilations per run, one per point set, where eager evaluation compiles
every operation for every new shape (about 0.5 s of CPU per run on a CPU
host, 1 to 3 s for the first run at a new h and dtype); only `jit_agreement`
and `traces` call it eagerly too.

A pass is evidence, not proof: each property is checked on finitely many
points (each function's docstring says which), and `positive_definite` in
particular can only be refuted by a Gram matrix, never proven by one.
"""

# The package, by concern:
#   _kernel_checks  KERNEL_PROPERTIES, assert_kernel_properties, and a check
#                   per property, registered with a `_shared.Checks` that runs
#                   them in order and puts the property's name in front of a
#                   violation's message;
#   _kernel_case    the kernel under test: its point sets (probe rays, main
#                   pairs, positive-definiteness sets), its evaluations and
#                   their compile counts;
#   _mmd_checks     MMD_PROPERTIES, assert_mmd_properties, its samples and its
#                   checks, laid out the same way;
#   _strategies     PAIR_KINDS and the Hypothesis strategies;
#   _shared         what they share: argument checking, the comparisons that
#                   give verdicts and their tolerances, the check runner, the
#                   jitted kernel.
# A module uses another's names as `_shared.f64`, `_kernel_case.KernelCase`;
# names with a leading underscore stay in their module.

from couae_jax.testing._kernel_checks import (
    KERNEL_PROPERTIES,
    assert_kernel_properties,
)
from couae_jax.testing._mmd_checks import MMD_PROPERTIES, assert_mmd_properties
from couae_jax.testing._strategies import (
    PAIR_KINDS,
    float_dtypes,
    point_pairs,
    sample_sets,
)

__all__ = [
    "KERNEL_PROPERTIES", "MMD_PROPERTIES", "PAIR_KINDS",
    "assert_kernel_properties", "assert_mmd_properties", "float_dtypes",
    "point_pairs", "sample_sets",
]
