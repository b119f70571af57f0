#!/usr/bin/env bash
# Every benchmark figure of bench/RESULTS.md, in the order they were made. Run from the repo root
# in the project's virtual environment. Times are for this project's 2-core CPU machine.
set -euo pipefail

# issue 2: flow core (2D time-to-quality, sampler overhead)            ~2 min
python bench/bench_core.py

# issue 3: search overhead vs bare model calls (256 runs, budget 500)   ~2 min
python bench/bench_search_overhead.py | tee bench/overhead_quadratic.txt
python bench/bench_search_overhead.py --methods rbf,rbf+dps --reward flat | tee bench/overhead_flat.txt

# issue 3: the toy replication of the paper's table (2 models x 3 tasks) ~15 min
toyflow bench search --task rare-mode counting aesthetic --models oracle mlp \
    --methods bon sop smc code svdd rbf rbf-official --modes linear-ode linear-sde vp-sde \
    --budgets 50 100 200 500 1000 --runs 64 --out bench/results_2d.csv --plot figures/scaling_2d.png
python bench/table.py bench/results_2d.csv --extra realism > bench/table_2d.md
python bench/summary_2d.py
# ablations: time grids, SMC temperature                               ~3 min
for g in linear-snr exp; do
  toyflow bench search --task rare-mode counting aesthetic --models oracle mlp --methods bon smc svdd rbf \
      --modes linear-sde vp-sde --budgets 100 500 --runs 64 --time-grid $g --out bench/results_2d_grid-$g.csv
done
toyflow bench search --task rare-mode counting aesthetic --models oracle mlp --methods smc \
    --modes linear-ode linear-sde vp-sde --budgets 50 100 200 500 1000 --runs 64 --option smc.lam=0.05 \
    --out bench/results_2d_smc-lam0.05.csv

# issue 4: MNIST classifiers, flow quality, sampling time               ~3 min
python bench/bench_train_speed.py   # fp32 vs --amp-cpu training step, the shipped UNet
python bench/bench_train_speed.py --layout v5   # the same for the v5 flow's layout (shipped until session 6)
python bench/bench_train_speed.py --layout v4   # the same for UNet() of the v2-v4 flows
python bench/bench_mnist.py --data-dir ../shared/data/mnist | tee bench/mnist_quality.txt
python bench/bench_mnist.py --data-dir ../shared/data/mnist --quality-only --seed 1   # two more noise sets
python bench/bench_mnist.py --data-dir ../shared/data/mnist --quality-only --seed 2

# issue 4: image-scale search (16 runs per cell, 3 shards in parallel)  ~35 min
bash bench/mnist_tables.sh
# RBF's chunk width on the image model (discard_share)                  ~3 min
python bench/bench_rbf_chunks.py | tee bench/rbf_chunks.txt
