#!/bin/bash
# The GPU checks of BUILD_NOTES section 1 (issue #14), one short run on a lent
# GPU machine (the `device` tool; its image brings jax, flax, optax, orbax,
# chex, torch and pytest). From the repository root:
#
#   OUT=runs/gpu DATA=/usr/share/datasets/fashion-mnist bash experiments/bench_gpu.sh
#
# STAGES (default "bench tests fashion") names the stages to run:
# 1. experiments.bench_mmd at GPU sizes: value+grad, h = 64, n = m = 4096 and 32768,
#    the default call against explicit blocks up to 8192, torch's cdist
#    formulation on CUDA, the float32 ceiling timed in the same rounds, and
#    device peak memory of the default call up to n = m = 131072;
# 2. the MMD tests that compare with float64 references, on the GPU backend;
# 3. a short Fashion-MNIST run (CouAE, h = 8, 2 seeds), for the trainer's
#    steps/s there (skipped when DATA is unset).
# Each stage has its own time limit, so a slow one cannot starve the next.
set -uo pipefail
STAGES=${STAGES:-bench tests fashion}
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.6
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
  --format=csv 2>&1 | tee "$OUT/machine.txt"
python3 -c "import jax, flax, optax, chex, orbax.checkpoint, torch; \
print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, \
'optax', optax.__version__, 'torch', torch.__version__)" 2>&1 | tee -a "$OUT/machine.txt"

if [[ $STAGES == *bench* ]]; then
date -u +%T
timeout 240 python3 -m experiments.bench_mmd --sizes 4096,32768 --dims 64 \
  --kernels sliced_coulomb,coulomb --vg-only --repeats 7 --torch \
  --block-sizes 256,512,1024,2048,4096,8192 --ceiling-size 8192 \
  --large-runs sliced_coulomb:32768:64:auto,sliced_coulomb:65536:64:auto,sliced_coulomb:131072:64:auto,sliced_coulomb:65536:64:4096,sliced_coulomb:4096:64:none \
  --out "$OUT/bench_mmd_gpu.json" 2>&1 | tee "$OUT/bench_mmd_gpu.txt"
fi

if [[ $STAGES == *tests* ]]; then
date -u +%T
timeout 90 python3 -m pytest -q -x -p no:cacheprovider -o addopts="" -m "not slow" \
  tests/test_mmd.py -k "value_matches_float64 or gradient_matches_float64 or dense_equals_blocked or default_equals_dense or nearly_coincident or auto_block" \
  2>&1 | tail -15 | tee "$OUT/pytest_gpu.txt"
fi

if [[ $STAGES == *fashion* && -n ${DATA:-} ]]; then
  date -u +%T
  timeout 150 python3 -m experiments.fashion --workdir /tmp/fashion_gpu --data-dir "$DATA" \
    --steps 600 --seeds 0,1 --widths none --models couae --dims 8 \
    --config.learning_rate=0.01 2>&1 | tail -40 | tee "$OUT/fashion_gpu.txt"
  cp /tmp/fashion_gpu/results.json "$OUT/fashion_gpu_results.json" 2>/dev/null
  (cd /tmp/fashion_gpu && find . -name '*.jsonl' | tar czf "$OUT/fashion_gpu_logs.tgz" -T -)
fi
date -u +%T
