#!/usr/bin/env bash
# Image-scale search tables of bench/RESULTS.md §3 (issue 4): 3 tasks x 6 methods x 3 modes x 4 budgets,
# 16 runs per cell. The grid runs as 2 shards in parallel (1 thread each, one per core), then
# `toyflow bench merge` puts the rows back in grid order. ~26 min on this project's 2-core CPU.
# Run from the repo root in the project's virtual environment.
set -euo pipefail
DATA=${TOYFLOW_DATA:-../shared/data/mnist}
TMP=$(mktemp -d)
export OMP_NUM_THREADS=1
for t in mnist-digit mnist-ink mnist-thick; do
  for i in 0 1; do
    toyflow bench search --task $t --digits 7 --models unet --methods bon sop smc code svdd rbf \
        --modes linear-ode linear-sde vp-sde --budgets 50 100 200 500 --runs 16 \
        --data-dir "$DATA" --shard $i/2 --out "$TMP/$t.$i.csv" > "$TMP/$t.$i.log" 2>&1 &
  done
  wait
  toyflow bench merge bench/results_$t.csv "$TMP/$t.0.csv" "$TMP/$t.1.csv"
done
python bench/table.py bench/results_mnist-*.csv --extra fid > bench/table_mnist.md
python bench/table.py bench/results_mnist-digit.csv bench/results_mnist-thick.csv --metric accuracy --error "" --extra diversity >> bench/table_mnist.md
python bench/summary_mnist.py
rm -rf "$TMP"
