#!/usr/bin/env bash
# The image-scale table of both MNIST flows (bench/RESULTS.md §3, "In the paper's regime") at one
# budget: 3 tasks x 7 methods x 3 modes, each flow's grid as 2 shards in parallel (1 thread each),
# merged back into grid order. Usage (from the repo root, in the project's virtual environment):
#   bench/mnist_fewstep_tables.sh BUDGET RUNS [MODELS]   e.g. 50 64 (~30 min), 100 64 or 200 32 (~40 min each on this
#   project's 2-core CPU); MODELS defaults to "unet unet-fewstep" (e.g. 500 32 unet-fewstep: the student alone)
# writes bench/results_mnist_b${BUDGET}_{unet,unet-fewstep}.csv; then
#   python bench/summary_fewstep.py bench/results_mnist_b*_unet.csv bench/results_mnist_b*_unet-fewstep.csv
set -euo pipefail
BUDGET=${1:?budget}; RUNS=${2:?runs per cell}; MODELS=${3:-unet unet-fewstep}
DATA=${TOYFLOW_DATA:-../shared/data/mnist}
TMP=$(mktemp -d)
export OMP_NUM_THREADS=1
for model in $MODELS; do
  for i in 0 1; do
    toyflow bench search --task mnist-thick mnist-ink mnist-digit --digits 7 --models $model \
        --methods bon smc svdd code rbf dps rbf+dps --modes linear-ode linear-sde vp-sde \
        --budgets "$BUDGET" --runs "$RUNS" --threads 1 --data-dir "$DATA" --shard $i/2 \
        --out "$TMP/$model.$i.csv" > "$TMP/$model.$i.log" 2>&1 &
  done
  wait
  toyflow bench merge "bench/results_mnist_b${BUDGET}_$model.csv" "$TMP/$model.0.csv" "$TMP/$model.1.csv"
done
rm -rf "$TMP"
