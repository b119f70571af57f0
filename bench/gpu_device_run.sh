#!/usr/bin/env bash
# The GPU checks in one prepared command, sized for one 10-minute call on a lent GPU machine that
# reaches nothing outside it (bench/RESULTS.md, "GPU"):
#   1. bench/gpu_train_mnist.py: the MNIST flow trained on the GPU (bf16 autocast, TF32) for a
#      200 s budget of training and evaluations (a timed probe sets the step count), steps/s, time
#      to the quality target, the chosen checkpoint's quality, search wall time GPU vs CPU;
#   2. bench/gpu_bench.py: the peer benchmark with GPU-sized problems (3 rounds).
# The flow trains on t10k with train5k as the reference digits: offline there is no full training
# split (train50k / val5k need it); the report names the classifier that saw the reference.
#
# Here, once per checkout:   bench/gpu_device_run.sh --prepare
#   (torchcfm + POT wheels for the device's Python 3.12 into .whl/, the MNIST IDX files from
#    $TOYFLOW_DATA or ../shared/data/mnist into .devdata/mnist; both listed in .git/info/exclude)
# There (carry .whl and .devdata):   bash bench/gpu_device_run.sh
#   writes gpu_train.md, gpu_train.json, gpu_bench.md and both logs to $OUT (default out/gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  set -e
  for p in /.whl/ /.devdata/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl torchcfm==1.0.7 pot==0.9.7.post1
  mkdir -p .devdata/mnist
  cp "${TOYFLOW_DATA:-../shared/data/mnist}"/*-ubyte.gz .devdata/mnist/
  du -sh .whl .devdata
  exit 0
fi
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
(nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)") 2>&1 | tee "$OUT/device.txt"
status=0
timeout 330 python3 bench/gpu_train_mnist.py --require-cuda --data-dir .devdata/mnist --split test \
    --reference-split train5k --time-budget 200 --threads 16 --quiet --out-dir /tmp/gpu-mnist \
    --md "$OUT/gpu_train.md" 2>&1 | tee "$OUT/gpu_train.log" || status=1
cp /tmp/gpu-mnist/report.json "$OUT/gpu_train.json" 2>/dev/null
timeout 230 python3 bench/gpu_bench.py --require-cuda --rounds 3 --out "$OUT/gpu_bench.md" 2>&1 \
    | tee "$OUT/gpu_bench.log" || status=1
exit $status
