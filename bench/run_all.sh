#!/usr/bin/env bash
# Every benchmark figure of bench/RESULTS.md, in the order they were made. Run from the repo root
# in the project's virtual environment. Times are for this project's 2-core CPU machine.
set -euo pipefail

# flow core (2D time-to-quality, sampler overhead)            ~2 min
python bench/bench_core.py

# search overhead vs bare model calls (256 runs, budget 500)   ~2 min
python bench/bench_search_overhead.py | tee bench/overhead_quadratic.txt
python bench/bench_search_overhead.py --methods rbf,rbf+dps --reward flat | tee bench/overhead_flat.txt
# RBF's ratio split into tensor work, model slow-down and bookkeeping, four configurations   ~2 min
for cfg in "untrained linear-sde quadratic" "untrained vp-sde quadratic" "trained linear-sde task" "trained vp-sde task"; do
  set -- $cfg
  python bench/bench_search_overhead.py --methods rbf --model "$1" --mode "$2" --reward "$3" --allocator steady \
      --repeats 7 --no-one-per-call --floor
done | tee bench/overhead_rbf_floor.txt

# against peer libraries, side by side (pip install -e ".[bench]": torchcfm, torchdiffeq)   ~8 min
python bench/bench_peers.py | tee bench/peers.txt

# the two regimes (bench/RESULTS.md section 2a): grids a-d, then the summaries   ~60 min
toyflow bench search --task rare-mode counting aesthetic --models oracle mlp \
    --methods bon sop smc code svdd rbf rbf-strict --modes linear-ode linear-sde vp-sde \
    --budgets 50 100 200 500 1000 --runs 64 --out bench/results_regime_a.csv
python bench/table.py bench/results_regime_a.csv --extra realism > bench/table_2d.md
toyflow bench search --task rare-mode counting aesthetic --scale 8 --models oracle \
    --methods bon sop smc code svdd rbf rbf-strict --modes linear-ode linear-sde vp-sde \
    --budgets 50 100 200 500 1000 --runs 64 --out bench/results_regime_b.csv
for i in 0 1; do   # the flow-map oracle costs 289 mixture evaluations per call: two shards in parallel
  toyflow bench search --task rare-mode counting aesthetic --scale 8 --models flowmap flowmap-mlp \
      --methods bon sop smc code svdd rbf rbf-strict --modes linear-ode linear-sde vp-sde \
      --budgets 50 100 200 500 1000 --runs 64 --shard $i/2 --out bench/results_regime_c.$i.csv &
done
wait
toyflow bench merge bench/results_regime_c.csv bench/results_regime_c.0.csv bench/results_regime_c.1.csv
rm bench/results_regime_c.0.csv bench/results_regime_c.1.csv
for spec in "x1:--models oracle" "x8:--scale 8 --models oracle" "x8f:--scale 8 --models flowmap flowmap-mlp"; do
  name=${spec%%:*}; args=${spec#*:}
  for dp in linear vp; do
    toyflow bench search --task rare-mode counting aesthetic $args --methods bon svdd rbf \
        --modes linear-sde vp-sde --budgets 100 500 --runs 64 --time-grid vp-snr --diffusion-path $dp \
        --out /tmp/d_$name.$dp.csv
  done
  python -c "import csv,sys; from pathlib import Path; from toyflow.benchmark import write_csv; \
rows=[r for p in sys.argv[2:] for r in csv.DictReader(open(p))]; write_csv(Path(sys.argv[1]), rows)" \
      bench/results_regime_d_$name.csv /tmp/d_$name.linear.csv /tmp/d_$name.vp.csv
done
python bench/summary_regimes.py bench/results_regime_{a,b,c}.csv
python bench/cross_regimes.py bench/results_regime_d_{x1,x8,x8f}.csv
(for g in a b c; do python bench/table.py bench/results_regime_$g.csv --extra realism; done) > bench/table_regimes.md
# ablations: time grids, SMC temperature                               ~3 min
for g in linear-snr exp; do
  toyflow bench search --task rare-mode counting aesthetic --models oracle mlp --methods bon smc svdd rbf rbf-strict \
      --modes linear-sde vp-sde --budgets 100 500 --runs 64 --time-grid $g --out bench/results_2d_grid-$g.csv
done
toyflow bench search --task rare-mode counting aesthetic --models oracle mlp --methods smc \
    --modes linear-ode linear-sde vp-sde --budgets 50 100 200 500 1000 --runs 64 --option smc.lam=0.05 \
    --out bench/results_2d_smc-lam0.05.csv

# MNIST classifiers, flow quality, sampling time               ~3 min
python bench/bench_train_speed.py   # fp32 vs --amp-cpu training step, the shipped UNet
python bench/bench_train_speed.py --layout v5   # the same for the v5 flow's layout (shipped before the distilled flow)
python bench/bench_train_speed.py --layout v4   # the same for UNet() of the v2-v4 flows
python bench/bench_mnist.py --data-dir ../shared/data/mnist | tee bench/mnist_quality.txt
python bench/bench_mnist.py --data-dir ../shared/data/mnist --quality-only --seed 1   # two more noise sets
python bench/bench_mnist.py --data-dir ../shared/data/mnist --quality-only --seed 2

# image-scale search (16 runs per cell, 3 shards in parallel)  ~35 min
bash bench/mnist_tables.sh
# RBF's chunk width on the image model (discard_share)                  ~3 min
python bench/bench_rbf_chunks.py | tee bench/rbf_chunks.txt
