"""Seconds per training iteration. By default CycleGAN (both generators, both PatchGANs, LSGAN, cycle +
identity losses, image pools) with the paper's architecture at 256x256, batch 1 (9-block ResNet
generators). `--generators resnet unet` times several CycleGAN generators, `--models cyclegan cut fastcut`
several families with the same networks (CUT/FastCUT: ResNet generators); all in one run, interleaved
within each repeat, each with its ratio to the first.

    python benchmarks/train_step.py [--device auto] [--steps 5] [--repeats 3]
    python benchmarks/train_step.py --generators resnet unet --size 64 --batch 4 --ngf 16 --n-blocks 4 \\
        --ndf 32 --norm none --upsample resize --spectral-norm          # the emoji recipes
    python benchmarks/train_step.py --models cyclegan cut fastcut     # the contrastive families against CycleGAN
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import median  # noqa: E402

from imxlate.families import build_family  # noqa: E402
from imxlate.device import describe_machine, pick_device  # noqa: E402


def time_steps(family, batch, start: int, steps: int, device) -> float:
    """Mean seconds of `steps` training iterations."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        family.train_step(batch, start + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--generators", nargs="+", default=["resnet"], choices=["resnet", "unet"])
    ap.add_argument("--models", nargs="+", default=["cyclegan"], choices=["cyclegan", "cut", "fastcut"])
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--ndf", type=int, default=64)
    ap.add_argument("--n-blocks", type=int, default=9)
    ap.add_argument("--norm", default="instance")
    ap.add_argument("--upsample", default="transpose")
    ap.add_argument("--spectral-norm", action="store_true")
    args = ap.parse_args()
    device = pick_device(args.device)
    batch = {"images": {d: torch.rand(args.batch, 3, args.size, args.size) * 2 - 1 for d in "ab"}, "labels": {}}
    families = {}
    runs = [(m, g) for m in args.models for g in (args.generators if m == "cyclegan" else ["resnet"])]
    for m, g in runs:
        cfg = dict(ngf=args.ngf, ndf=args.ndf, n_blocks=args.n_blocks if g == "resnet" else None, norm=args.norm,
                   upsample=args.upsample, spectral_norm=args.spectral_norm)
        if m == "cyclegan":
            cfg["generator"] = g
        family = build_family(m, cfg, ["a", "b"], args.size).to(device)
        family.setup_training()
        family.train()
        family.train_step(batch, 0)  # warm-up
        families[f"{m} {g}"] = family
    times = {g: [] for g in families}
    for r in range(args.repeats):
        for g, family in families.items():
            times[g].append(time_steps(family, batch, 1 + r * args.steps, args.steps, device))
    print(f"machine: {describe_machine(device)}; device {device}")
    names = list(families)
    first = median(times[names[0]])
    for g, ts in times.items():
        print(f"train step {args.size}x{args.size}, batch {args.batch}, {g} generators: {median(ts):.3f} s/iteration "
              f"(median of {len(ts)} x {args.steps} steps; all: {', '.join(f'{t:.3f}' for t in ts)}); "
              f"ratio to {names[0]}: {median(ts) / first:.2f}")


if __name__ == "__main__":
    main()
