"""Seconds per CycleGAN training iteration at 256x256, batch 1, the default architecture
(9-block ResNet generators, 70x70 PatchGANs, LSGAN, cycle + identity losses, image pools).

    python benchmarks/train_step.py [--device auto] [--steps 5] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import median  # noqa: E402

from imxlate.families.cyclegan import CycleGAN, CycleGANConfig  # noqa: E402
from imxlate.train import describe_machine, pick_device  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    device = pick_device(args.device)
    family = CycleGAN(CycleGANConfig(n_blocks=9), ["a", "b"], args.size).to(device)
    family.setup_training()
    family.train()
    batch = {"images": {d: torch.rand(1, 3, args.size, args.size) * 2 - 1 for d in "ab"}, "labels": {}}
    family.train_step(batch, 0)  # warm-up
    times = []
    step = 1
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            family.train_step(batch, step)
            step += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / args.steps)
    print(f"machine: {describe_machine(device)}; device {device}")
    print(f"train step {args.size}x{args.size}, batch 1: {median(times):.3f} s/iteration "
          f"(median of {len(times)} x {args.steps} steps; all: {', '.join(f'{t:.3f}' for t in times)})")


if __name__ == "__main__":
    main()
