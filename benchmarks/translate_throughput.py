"""Folder translation against the generator's pure forward rate and a plain loop, on the same weights.

    python benchmarks/translate_throughput.py [--device auto] [--repeats 3] [--size 256] [--count 32]
                                              [--n-blocks 9] [--batches 1 8]

Ways over the same `count` PNG files of size x size, with the default CycleGAN generator (9 blocks, ngf 64,
random weights), interleaved in each repeat (the order rotating from repeat to repeat) so they see the same
machine load:

* folder: Translator.translate_folder, what `imxlate translate DIR` runs (background decoding and encoding,
  size buckets; batches of the device's default size, 1 on the CPU and 8 on a GPU, or each of --batches);
* forward: the generator alone on already decoded tensors in inference mode, batches of the device's default
  size (the ceiling: no files at all);
* loop: a plain one-image-at-a-time loop as a user would write it: decode, no_grad forward, encode.

Printed per way: images/s of wall time and CPU seconds per image (every thread of the process, so background
decoding counts), medians; then folder/forward and folder/loop, each the median of the ratios taken within a
repeat. On a loaded machine the CPU-time ratios are the steadier ones; the wall-time ones also show overlap.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _machine import median  # noqa: E402

from imxlate.data import to_image, to_tensor  # noqa: E402
from imxlate.device import describe_machine, pick_device  # noqa: E402
from imxlate.families.cyclegan import CycleGAN, CycleGANConfig  # noqa: E402
from imxlate.translate import Translator, default_batch_size  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--n-blocks", type=int, default=9)
    ap.add_argument("--batches", type=int, nargs="*", default=[],
                    help="folder runs with these batch sizes too (default: only the device's default)")
    args = ap.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    family = CycleGAN(CycleGANConfig(n_blocks=args.n_blocks), ["a", "b"], args.size).to(device)
    family.eval()
    tr = Translator(family, Path("benchmark"))
    net = family.nets["G_ab"]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    default = default_batch_size(device)

    with tempfile.TemporaryDirectory() as tmp:
        src, warm = Path(tmp) / "in", Path(tmp) / "warm"
        src.mkdir()
        warm.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.count):
            small = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8))
            small.resize((args.size, args.size), Image.BICUBIC).save(src / f"img{i:03d}.png")
        files = sorted(src.iterdir())
        for f in files[:2]:
            shutil.copy(f, warm)
        tensors = [to_tensor(Image.open(f).convert("RGB")) for f in files]

        def folder(batch):
            def run(r, inputs=src):
                tr.translate_folder([str(inputs)], "b", Path(tmp) / f"folder{batch}-{r}", batch_size=batch,
                                    progress=False)
            return run

        @torch.inference_mode()
        def forward(r, inputs=src):
            xs = tensors[:2] if inputs == warm else tensors
            for i in range(0, len(xs), default):
                net(torch.stack(xs[i:i + default]).to(device)).cpu()

        def loop(r, inputs=src):
            out = Path(tmp) / f"loop{r}"
            out.mkdir()
            for f in sorted(inputs.iterdir()):
                x = to_tensor(Image.open(f).convert("RGB"))[None].to(device)
                with torch.no_grad():
                    y = net(x)
                to_image(y[0].cpu()).save(out / f.name)

        ways = {"folder": folder(None)}
        ways.update({f"folder b{b}": folder(b) for b in args.batches if b != default})
        ways.update(forward=forward, loop=loop)
        for fn in ways.values():  # warm-up (kernels picked, pools made)
            fn("w", warm)
        wall = {k: [] for k in ways}
        cpu = {k: [] for k in ways}
        names = list(ways)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                sync()
                t0, c0 = time.perf_counter(), time.process_time()
                ways[name](r)
                sync()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)

    n = args.count
    print(f"machine: {describe_machine(device)}; device {device}")
    print(f"{n} images {args.size}x{args.size}, {args.n_blocks}-block generator, folder batch {default} "
          f"(the device's default), medians of {args.repeats} interleaved repeats")
    for name in ways:
        runs = f"wall s: {', '.join(f'{v:.2f}' for v in wall[name])}; CPU s: {', '.join(f'{v:.2f}' for v in cpu[name])}"
        print(f"{name:12s} {n / median(wall[name]):7.3f} images/s  {median(cpu[name]) / n:7.3f} CPU s/image  ({runs})")
    for name in [k for k in ways if k.startswith("folder")]:
        for other in ("forward", "loop"):
            by_wall = median([b / a for a, b in zip(wall[name], wall[other])])
            by_cpu = median([b / a for a, b in zip(cpu[name], cpu[other])])
            print(f"{name} / {other}: {by_wall:.3f} by wall time, {by_cpu:.3f} by CPU time")


if __name__ == "__main__":
    main()
