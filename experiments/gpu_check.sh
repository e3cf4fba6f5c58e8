#!/usr/bin/env bash
# The GPU checks in one command (run from the repo root on a machine with one NVIDIA GPU, JAX with
# CUDA, PyTorch with CUDA, flax, optax, orbax-checkpoint; no internet needed):
#   JAXCONV_DATA_DIR=/path/to/fashion-mnist OUT=/tmp/gpu bash experiments/gpu_check.sh
# 1. the benchmark's GPU epoch table and XLA-flag sweep, 2. full LeNet trainings on the real data
# (accuracy, seconds per epoch), 3. the op tests on the GPU (jitted == eager == float64 reference
# == PyTorch). Summaries are printed last; logs, metrics and JSON go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/jaxconv-gpu}
RUNS=${RUNS:-/tmp/jaxconv-gpu-runs}
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__)"

echo "== 1. benchmark (GPU)"
timeout "${BENCH_TIMEOUT:-270}" python3 experiments/benchmark.py --device gpu --section epoch \
  --gpu-sweep --json "$OUT/bench_gpu.json" > "$OUT/bench_gpu.log" 2>&1
echo "benchmark exit $?"

echo "== 2. LeNet on the real data"
for spec in "modern" "classic --optimizer sgd --lr 0.9"; do
  name=${spec%% *}
  timeout "${TRAIN_TIMEOUT:-90}" python3 -m jaxconv.cli train --variant $spec --quiet \
    --out-dir "$RUNS/lenet-$name" > "$OUT/train-$name.log" 2>&1
  cp "$RUNS/lenet-$name/metrics.jsonl" "$OUT/metrics-$name.jsonl" 2>/dev/null
  python3 - "$OUT/metrics-$name.jsonl" "$name" <<'PY' || echo "train $name: no metrics"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
secs = [r["epoch_seconds"] for r in rows]
print(f"train {sys.argv[2]}: epochs {len(rows)}, test_acc {rows[-1]['test_acc']:.4f}, "
      f"median s/epoch {statistics.median(secs):.4f}, first {secs[0]:.4f}")
PY
done > "$OUT/train_summary.txt" 2>&1

echo "== 3. op tests on the GPU"
timeout "${TEST_TIMEOUT:-120}" python3 -m pytest -q -p no:cacheprovider ${PYTEST_XDIST:+-n $PYTEST_XDIST} \
  tests/test_conv.py tests/test_pool.py tests/test_shapes.py > "$OUT/tests.log" 2>&1
echo "tests exit $?"; tail -3 "$OUT/tests.log"

echo "== summary"
tail -45 "$OUT/bench_gpu.log"
cat "$OUT/train_summary.txt"
