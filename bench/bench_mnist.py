"""MNIST figures for bench/RESULTS.md. Run:  python bench/bench_mnist.py [--data-dir ../shared/data/mnist]
[--flow CHECKPOINT --quality-only] [--seed S] [--steps 20] [--time-grid uniform] [--mode linear-ode]

- classifier accuracy on data they did not train on (reward: train5k; evaluator: t10k);
- flow quality: 1,000 unconditional samples, 20 Euler steps (linear ODE): share classified by the
  evaluator with confidence >= 0.9, class frequencies, classifier-feature FID against held-out
  real digits the evaluator never saw (t10k), with the floor of two disjoint real t10k sets;
- a second opinion from the reward CNN (it chose no checkpoint): its confident share, its class
  frequencies, its agreement with the evaluator, and FID in its features against train5k, digits the flow never trained on,
  with the floor of two disjoint real train5k sets;
- CPU time to sample 64 images with 1, 4 and 20 steps (best of 3).

For a few-step student from ``bench/distill_fewstep_mnist.py --seed 0`` use ``--seed 1`` or ``2``: its
training trajectories start from ``torch.Generator().manual_seed(0)``'s noises, the very noises
``--seed 0`` samples from, so that seed measures memorisation, not quality.

``--mode linear-sde`` / ``vp-sde`` draws the quality samples with the search modes' SDEs instead (the
paper's g_t = 3 t^2; VP: the model converted to the VP path): with the true velocity the marginals,
hence these figures, are those of the ODE up to discretisation.
"""

from __future__ import annotations

import argparse
import time

import torch

from toyflow import dynamics, interpolants, metrics, pretrained
from toyflow.data.mnist import load_mnist
from toyflow.models import load_model


@torch.no_grad()
def accuracy(model, data, batch=1000) -> float:
    correct = 0
    for i in range(0, len(data.labels), batch):
        correct += (model(data.images[i:i + batch]).argmax(1) == data.labels[i:i + batch]).sum().item()
    return correct / len(data.labels)


def main(data_dir=None, n=1000, seed=0, flow_checkpoint=None, quality_only=False, steps=20,
         time_grid="uniform", mode="linear-ode") -> None:
    torch.set_num_threads(2)
    test, train5k = load_mnist("test", data_dir), load_mnist("train5k", data_dir)
    reward, evaluator, flow = (pretrained.load(k) for k in ("mnist-reward", "mnist-evaluator", "mnist-flow"))
    if flow_checkpoint is not None:  # a training checkpoint instead of the shipped flow
        flow = load_model(flow_checkpoint, arch="unet").float().requires_grad_(False)
        print(f"flow: {flow_checkpoint} ({sum(p.numel() for p in flow.parameters()):,} parameters)")
    if not quality_only:
        print(f"reward classifier (trained on t10k) accuracy on train5k: {accuracy(reward, train5k):.4f}")
        print(f"evaluator (trained on train5k) accuracy on t10k: {accuracy(evaluator, test):.4f}")
    g = torch.Generator().manual_seed(seed)
    model, schedule = flow, interpolants.Linear()
    if mode == "vp-sde":
        schedule = interpolants.VP()
        model = interpolants.convert(flow, source=interpolants.Linear(), target=schedule)
    xs = []
    for _ in range(0, n, 250):
        xs.append(dynamics.sample(model, torch.randn(250, 1, 28, 28, generator=g), schedule, steps=steps,
                                   time_grid=time_grid, sde=mode != "linear-ode", generator=g).x)
    x = torch.cat(xs)[:n]
    with torch.no_grad():
        probs = torch.softmax(evaluator(x.clamp(-1, 1)), 1)
    conf, cls = probs.max(1)
    freq = torch.bincount(cls, minlength=10).float() / n
    share = (conf >= 0.9).float().mean().item()
    print(f"{n} samples, {steps} Euler steps ({mode}, {time_grid} grid): confident (p >= 0.9) {share:.4f} (s.e. {(share * (1 - share) / n) ** 0.5:.4f}); "
          f"class frequencies {[round(f, 3) for f in freq.tolist()]} (min {freq.min():.3f}, max {freq.max():.3f})")
    # evaluator features; reference digits the evaluator never saw (t10k), floor = two disjoint real sets
    fid = metrics.classifier_fid(x, test.images[:n], evaluator)
    floor = metrics.classifier_fid(test.images[5000:5000 + n], test.images[:n], evaluator)
    print(f"classifier-feature FID vs real t10k digits: samples {fid:.2f}; other real t10k digits {floor:.2f} (floor)")
    # a second opinion from a classifier that chose no checkpoint (the reward CNN, trained on t10k),
    # and FID against digits the flow never trained on (train5k) in its features, floor = two
    # disjoint real train5k sets of the same size
    with torch.no_grad():
        rconf, rcls = torch.softmax(reward(x.clamp(-1, 1)), 1).max(1)
    rshare = (rconf >= 0.9).float().mean().item()
    agree = (rcls == cls).float().mean().item()
    rfreq = torch.bincount(rcls, minlength=10).float() / n
    fid_held = metrics.classifier_fid(x, train5k.images[:n], reward)
    floor_held = metrics.classifier_fid(train5k.images[n:2 * n], train5k.images[:n], reward)
    real_share = (torch.softmax(reward(train5k.images[:n]), 1).max(1).values >= 0.9).float().mean().item()
    print(f"held-out view (reward CNN: chose no checkpoint): confident (p >= 0.9) {rshare:.4f} (s.e. "
          f"{(rshare * (1 - rshare) / n) ** 0.5:.4f}; real train5k digits {real_share:.4f}); class frequencies "
          f"{[round(f, 3) for f in rfreq.tolist()]} (min {rfreq.min():.3f}, max {rfreq.max():.3f}); argmax agrees with the "
          f"evaluator on {agree:.4f}; FID vs train5k (never trained on by the flow) in its features: samples "
          f"{fid_held:.2f}, floor (two disjoint real train5k sets) {floor_held:.2f}")
    if quality_only:
        return
    fid5 = metrics.classifier_fid(x, train5k.images[:n], evaluator)
    floor5 = metrics.classifier_fid(test.images[:n], train5k.images[:n], evaluator)
    print(f"classifier-feature FID vs train5k (the evaluator's own training digits): samples {fid5:.2f}; "
          f"real t10k digits {floor5:.2f}")
    z = torch.randn(64, 1, 28, 28, generator=g)
    for k in (1, 4, 20):
        best = min(_time(lambda: dynamics.sample(flow, z, "linear", steps=k)) for _ in range(3))
        print(f"sampling 64 images x {k} steps on CPU: {best:.2f} s ({best / 64 * 1e3:.1f} ms per image)")


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--flow", default=None, help="evaluate this flow checkpoint instead of the shipped mnist-flow")
    p.add_argument("--quality-only", action="store_true", help="only the flow quality and FID lines")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample noises (default 0, the recorded figures)")
    p.add_argument("--steps", type=int, default=20,
                   help="Euler steps of the quality samples (default 20, the issue's setting; more steps "
                        "separate the model's error from the discretisation's)")
    p.add_argument("--time-grid", default="uniform", choices=dynamics.TIME_GRIDS,
                   help="time grid of the quality samples (default uniform, the recorded figures)")
    p.add_argument("--mode", default="linear-ode", choices=("linear-ode", "linear-sde", "vp-sde"),
                   help="sampler of the quality samples (default linear-ode, the issue's setting)")
    a = p.parse_args()
    main(a.data_dir, a.n, a.seed, flow_checkpoint=a.flow, quality_only=a.quality_only, steps=a.steps,
         time_grid=a.time_grid, mode=a.mode)
