"""The peer benchmark (bench/bench_peers.py) on a CUDA GPU, with GPU-sized problems, in one run.

Run:  pip install -e ".[bench]"
      python bench/gpu_bench.py [--rounds 5] [--quick] [--only train,ttq,mnist,ode,sde,search] [--out FILE.md]

Sections (each toyflow against its peer or bare baseline, interleaved round by round, best and median):

- train:  2D flow matching per step, batch 4,096 and 65,536, fp32 on both sides (toyflow ``train_flow``
          with ``amp=False``, by default and with ``fused_adamw=True``, vs the torchcfm loop with the same
          VelocityMLP, and with its own MLP);
- ttq:    time to energy distance <= 0.01 (the CPU section as it is: batch 256, launch-bound on a GPU);
- mnist:  MNIST training samples/s (shipped UNet layout, batch 256, bf16 autocast on both sides) vs a
          bare PyTorch loop;
- ode:    ODE sampling of 100,000 and 1,000,000 particles, 10 and 100 Euler steps, vs torchdiffeq and
          bare calls;
- sde:    SDE sampling of 100,000 and 1,000,000 particles, same noise, vs a bare loop;
- search: ``search.run`` vs its own model calls, R = 4,096 runs, budget 500 (BoN, SVDD, RBF), and
          RBF vs SVDD wall time per NFE at budget 10,000 with R = 4,096.

Without CUDA it says so and exits with status 0 (``--require-cuda``: status 1), having measured nothing.
``--device cpu`` runs the same prepared script on the CPU instead (with ``--quick``: a smoke test of the
script, e.g. tests/test_gpu_bench.py; its ratios are not GPU figures). Wall times are measured with
``torch.cuda.synchronize`` around every timed region; the table goes to stdout and, with ``--out``,
to a Markdown file. The whole run takes a few minutes on a current GPU (--quick: well under one).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent

SIZES = {
    "train": [dict(steps=300, batch=4096, amp=False), dict(steps=300, batch=65536, amp=False)],
    "ttq": [dict()],
    "mnist": [dict(steps=20, batch=256)],
    "ode": [dict(ns=(100_000, 1_000_000), steps_list=(10, 100))],
    "sde": [dict(ns=(100_000, 1_000_000), steps_list=(10, 100))],
    "search": [dict(runs=4096, budget=500, big_budget=10_000, big_runs=4096, big_rounds=3)],
}
QUICK = {  # a smoke run: every code path, small enough for a CPU in seconds
    "train": [dict(steps=10, batch=1024, amp=False)],
    "ttq": [dict(ladder=(50,), cfm_max=100, cfm_every=50, n_eval=300)],
    "mnist": [dict(steps=1, batch=8, arch=dict(channels=(8, 16, 16), mid_blocks=1, mid_attention=True))],
    "ode": [dict(ns=(5_000,), steps_list=(10,))],
    "sde": [dict(ns=(5_000,), steps_list=(10,))],
    "search": [dict(runs=32, budget=50, big_budget=200, big_runs=32, big_rounds=1)],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of every comparison (default 5; --quick: 2)")
    ap.add_argument("--only", default=",".join(SIZES), help=f"comma-separated sections (default all: {','.join(SIZES)})")
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 rounds: a smoke run of every section")
    ap.add_argument("--out", default=None, help="also write the table to this Markdown file")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cuda (default), or cpu to run this script where there is no GPU (a smoke test with --quick)")
    ap.add_argument("--require-cuda", action="store_true", help="exit with status 1 when CUDA is not available")
    args = ap.parse_args(argv)
    sections = args.only.split(",")
    for section in sections:
        if section not in SIZES:
            ap.error(f"unknown section {section!r}; choose from {', '.join(SIZES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: gpu_bench measured nothing (bench/bench_peers.py is the CPU benchmark; "
              "--device cpu runs this script on the CPU)")
        return 1 if args.require_cuda else 0
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import bench_peers as bp  # here, not at the top: without CUDA the script exits before importing toyflow

    device = torch.device(args.device)
    bp.DEVICE_IS_CPU[0] = device.type == "cpu"
    bp.ROWS.clear()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
        torch.backends.cudnn.allow_tf32 = False
        name = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    else:
        name = f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"torch {torch.__version__}, {name}", flush=True)
    rounds = 2 if args.quick else args.rounds
    sizes = QUICK if args.quick else SIZES
    t0 = time.perf_counter()
    for section in sections:
        for kw in sizes[section]:
            bp.SECTIONS[section](device, 1 if section == "ttq" and args.quick else rounds, **kw)
    bp.print_table()
    wall = time.perf_counter() - t0
    print(f"\n{wall:.0f} s in all")
    if args.out:
        head = (f"gpu_bench on {name}, torch {torch.__version__}, {wall:.0f} s, rounds {rounds}"
                f"{' (quick)' if args.quick else ''}: python bench/gpu_bench.py {' '.join(argv or sys.argv[1:])}\n\n")
        Path(args.out).write_text(head + bp.table_markdown())
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
