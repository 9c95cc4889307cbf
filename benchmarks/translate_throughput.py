"""Images/s of the default CycleGAN generator (9 blocks, ngf 64) at 256x256, batch 1 and batch 8.

    python benchmarks/translate_throughput.py [--device auto] [--repeats 5]

Runs the same path `imxlate translate` uses (Translator.translate_tensor: padding, inference mode);
batch 1 and batch 8 are interleaved in each repeat so they see the same machine load; medians.
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
from imxlate.device import describe_machine, pick_device  # noqa: E402
from imxlate.translate import Translator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    device = pick_device(args.device)
    family = CycleGAN(CycleGANConfig(n_blocks=9), ["a", "b"], args.size).to(device)
    family.eval()
    tr = Translator(family, Path("benchmark"))
    rates = {1: [], 8: []}
    for _ in range(args.repeats):
        for batch in (1, 8):
            x = torch.rand(batch, 3, args.size, args.size) * 2 - 1
            tr.translate_tensor(x, "b")  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            n = 0
            t0 = time.perf_counter()
            while n < 8 or time.perf_counter() - t0 < 2.0:
                tr.translate_tensor(x, "b")
                n += batch
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates[batch].append(n / (time.perf_counter() - t0))
    print(f"machine: {describe_machine(device)}; device {device}")
    for batch, r in rates.items():
        print(f"translate {args.size}x{args.size}, batch {batch}: {median(r):.2f} images/s "
              f"(median of {len(r)}; all: {', '.join(f'{v:.2f}' for v in r)})")
    print(f"batch 8 / batch 1 throughput ratio: {median([b / a for a, b in zip(rates[1], rates[8])]):.2f}")


if __name__ == "__main__":
    main()
