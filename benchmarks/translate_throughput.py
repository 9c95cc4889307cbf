"""Images/s of folder translation against the generator's pure forward rate and a plain loop.

    python benchmarks/translate_throughput.py [--device auto] [--repeats 5] [--size 256] [--count 32] [--n-blocks 9]

Three ways over the same `count` PNG files of size x size, with the default CycleGAN generator (9 blocks,
ngf 64, random weights), interleaved in each repeat so they see the same machine load; medians:

* folder: Translator.translate_folder (what `imxlate translate DIR` runs: background decoding and
  encoding, size buckets, batches of --batch);
* forward: the generator alone on batches of already-decoded tensors (the ceiling: no files at all);
* loop: a plain one-image-at-a-time loop (decode, inference_mode forward, encode), as a user would write.
"""
from __future__ import annotations

import argparse
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
from imxlate.translate import Translator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--n-blocks", type=int, default=9)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    family = CycleGAN(CycleGANConfig(n_blocks=args.n_blocks), ["a", "b"], args.size).to(device)
    family.eval()
    tr = Translator(family, Path("benchmark"))
    net = family.nets["G_ab"]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.count):
            small = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8))
            small.resize((args.size, args.size), Image.BICUBIC).save(src / f"img{i:03d}.png")
        files = sorted(src.iterdir())
        tensors = [to_tensor(Image.open(f).convert("RGB")) for f in files]

        def folder(r):
            tr.translate_folder([str(src)], "b", Path(tmp) / f"folder{r}", batch_size=args.batch, progress=False)

        @torch.inference_mode()
        def forward(r):
            for i in range(0, len(tensors), args.batch):
                net(torch.stack(tensors[i:i + args.batch]).to(device)).cpu()

        @torch.inference_mode()
        def loop(r):
            out = Path(tmp) / f"loop{r}"
            out.mkdir()
            for f in files:
                x = to_tensor(Image.open(f).convert("RGB"))[None].to(device)
                to_image(net(x)[0].cpu()).save(out / f.name)

        ways = {"folder": folder, "forward": forward, "loop": loop}
        for fn in ways.values():  # warm-up (kernels picked, pools made)
            fn("w")
        rates = {k: [] for k in ways}
        for r in range(args.repeats):
            for name, fn in ways.items():
                sync()
                t0 = time.perf_counter()
                fn(r)
                sync()
                rates[name].append(args.count / (time.perf_counter() - t0))

    print(f"machine: {describe_machine(device)}; device {device}")
    print(f"{args.count} images {args.size}x{args.size}, {args.n_blocks}-block generator, batch {args.batch}, "
          f"medians of {args.repeats}")
    for name, r in rates.items():
        print(f"{name:8s} {median(r):8.2f} images/s (all: {', '.join(f'{v:.2f}' for v in r)})")
    f, fw, lp = (median(rates[k]) for k in ("folder", "forward", "loop"))
    print(f"folder / forward: {f / fw:.2f}; folder / loop: {f / lp:.2f}")


if __name__ == "__main__":
    main()
