#!/usr/bin/env bash
# On a machine with a GPU: a fresh virtual environment, the differential suite
# and the numerics tests on the GPU, then the benchmark in float32 and
# mixed_float16, channels_last and channels_first. Writes logs and the
# benchmark's result files (benchmarks/common.py names them) to ${OUT:-gpu_check}/.
#
#   bash benchmarks/gpu_check.sh
#
# TensorFlow places the ops on the GPU by itself; the tests make no CPU-only
# assumption (the oneDNN-dependent rules only apply where TensorFlow's CPU
# kernels run). PyTorch (CPU, float64) stays the reference.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check}
mkdir -p "$out"

python3 -m venv /tmp/tf_conv3dt_gpu_venv
# shellcheck disable=SC1091
. /tmp/tf_conv3dt_gpu_venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test]" "tensorflow[and-cuda]"
python -c "import tensorflow as tf; gpus = tf.config.list_physical_devices('GPU'); \
print(tf.__version__, gpus); assert gpus, 'no GPU visible to TensorFlow'" | tee "$out/device.txt"

TF_CONV3DT_DIFFERENTIAL_CONFIGS=${CONFIGS:-200} python -m pytest -q -p no:cacheprovider \
  tests/test_differential.py tests/test_numerics.py 2>&1 | tee "$out/tests.txt"

for policy in float32 mixed_float16; do
  for format in channels_last channels_first; do
    python benchmarks/bench_conv3d_transpose.py --repeats 20 --policy "$policy" \
      --data-format "$format" --out "$out" 2>&1 | tee "$out/bench_${policy}_${format}.txt"
  done
done
