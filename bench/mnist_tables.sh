#!/usr/bin/env bash
# Image-scale search tables of bench/RESULTS.md §3: 3 tasks x 7 methods x 3 modes x 4 budgets,
# 16 runs per cell. Each task's grid runs as 3 shards in parallel (1 thread each), then
# `toyflow bench merge` puts the rows back in grid order. 3 shards, not 2: shard i takes every
# 3rd cell, which mixes the budgets 50..500 evenly, while 2 shards would give one of them every
# budget-100 and budget-500 cell (70 % of the work). ~40 min on this project's 2-core CPU.
# Run from the repo root in the project's virtual environment.
set -euo pipefail
DATA=${TOYFLOW_DATA:-../shared/data/mnist}
TMP=$(mktemp -d)
export OMP_NUM_THREADS=1
for t in mnist-digit mnist-ink mnist-thick; do
  for i in 0 1 2; do
    toyflow bench search --task $t --digits 7 --models unet --methods bon sop smc code svdd rbf rbf-strict \
        --modes linear-ode linear-sde vp-sde --budgets 50 100 200 500 --runs 16 \
        --data-dir "$DATA" --shard $i/3 --out "$TMP/$t.$i.csv" > "$TMP/$t.$i.log" 2>&1 &
  done
  wait
  toyflow bench merge bench/results_$t.csv "$TMP/$t.0.csv" "$TMP/$t.1.csv" "$TMP/$t.2.csv"
done
python bench/table.py bench/results_mnist-*.csv --extra fid > bench/table_mnist.md
python bench/table.py bench/results_mnist-digit.csv bench/results_mnist-thick.csv --metric accuracy --error "" --extra diversity >> bench/table_mnist.md
python bench/summary_mnist.py
rm -rf "$TMP"
