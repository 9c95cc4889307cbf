"""Peak memory (RSS) of translation: folders of many mixed-size images, and large images in tiles.

    python benchmarks/translate_memory.py folder [--counts 20 500] [--batches 1 8] [--repeats 2]
    python benchmarks/translate_memory.py large --sizes 512x512 768x768 [--tile 256] [--untiled]
    python benchmarks/translate_memory.py large --sizes 1160x1160 --untiled --no-tiled
    python benchmarks/translate_memory.py large --sizes 7680x4320 --tile 960 --ngf 4 --n-blocks 1

Every measurement runs in a fresh Python process (so one run's peak cannot hide another's), which prints
its peak resident set size (getrusage ru_maxrss), its resident size before translating (model built and
warmed up on a small image: the baseline), and its CPU seconds. Runs of one table are interleaved.

* folder: Translator.translate_folder over the first N of one list of PNG files whose sides are drawn from
  32-96 pixels, so that sizes rarely repeat and size buckets rarely fill (what made folders of mixed sizes
  grow before buckets were bounded); a small CycleGAN generator (ngf 8, 2 blocks, random weights), since
  what grows with a folder is the images held, not the network.
* large: Translator.translate on one PNG of each size (a smooth random picture) with the default CycleGAN
  generator (9 blocks, ngf 64, random weights) unless --ngf/--n-blocks say otherwise, decoded from and
  encoded to PNG as `imxlate translate` does: tiled with --tile, and untiled with --untiled.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _machine import median  # noqa: E402

MIB = 2**20


def _rss_kib(key: str = "VmRSS:") -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def child(spec: dict) -> None:
    """One measurement (in its own process): prints {"peak", "baseline"} in MiB and {"cpu"} in seconds."""
    import resource

    import torch

    from imxlate.families.cyclegan import CycleGAN, CycleGANConfig
    from imxlate.translate import Translator

    torch.set_num_threads(1)
    torch.manual_seed(0)
    family = CycleGAN(CycleGANConfig(ngf=spec["ngf"], n_blocks=spec["n_blocks"]), ["a", "b"], 256)
    family.eval()
    tr = Translator(family, Path("benchmark"))
    tr.translate(Image.new("RGB", (64, 64), (90, 140, 200)), "b")  # warm-up: libraries loaded, pools made
    baseline = _rss_kib() / 1024
    c0, t0 = time.process_time(), time.perf_counter()
    if spec["kind"] == "folder":
        report = tr.translate_folder(spec["inputs"], "b", spec["out"], batch_size=spec["batch"], progress=False)
        assert len(report.written) == len(spec["inputs"]) and not report.failed
    else:
        img = Image.open(spec["image"]).convert("RGB")
        tr.translate(img, "b", tile=spec["tile"], max_memory=spec["max_memory"]).save(spec["out"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak": peak, "baseline": baseline, "cpu": time.process_time() - c0,
                      "wall": time.perf_counter() - t0}))


def measure(spec: dict, env: list[str] = ()) -> dict:
    """Run one measurement in a fresh process (with the environment variables `env`, NAME=VALUE)."""
    environ = {**os.environ, **dict(e.split("=", 1) for e in env)}
    run = subprocess.run([sys.executable, __file__, "child", json.dumps(spec)], capture_output=True, text=True,
                         env=environ)
    if run.returncode != 0:
        raise SystemExit(f"measurement {spec} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.splitlines()[-1])


def smooth_png(path: Path, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8))
    small.resize((width, height), Image.BICUBIC).save(path)


def folder(args, tmp: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp / "in"
    src.mkdir()
    files = []
    for i in range(max(args.counts)):
        w, h = (int(v) for v in rng.integers(32, 97, size=2))
        files.append(src / f"img{i:04d}.png")
        smooth_png(files[-1], w, h, i)
    sides = {Image.open(f).size for f in files}
    print(f"{len(files)} PNG files, {len(sides)} different sizes, sides 32-96 px; generator ngf {args.ngf}, "
          f"{args.n_blocks} blocks; peak RSS in MiB, medians of {args.repeats} (each a fresh process)"
          + (f"; environment {' '.join(args.env)}" if args.env else ""))
    results: dict = {}
    for r in range(args.repeats):
        for batch in args.batches:
            for n in args.counts:
                spec = {"kind": "folder", "ngf": args.ngf, "n_blocks": args.n_blocks, "batch": batch,
                        "inputs": [str(f) for f in files[:n]], "out": str(tmp / f"out-{batch}-{n}-{r}")}
                results.setdefault((batch, n), []).append(measure(spec, args.env))
    for batch in args.batches:
        first = None
        for n in args.counts:
            rows = results[(batch, n)]
            peak, base = median([x["peak"] for x in rows]), median([x["baseline"] for x in rows])
            first = first or peak
            runs = ", ".join(f"{x['peak']:.1f}" for x in rows)
            print(f"batch {batch}, {n:4d} images: peak {peak:7.1f} MiB (runs: {runs}), before translating "
                  f"{base:.1f} (growth {peak - base:.1f}), CPU {median([x['cpu'] for x in rows]):.1f} s; "
                  f"peak / first count's: {peak / first:.3f}")


def large(args, tmp: Path) -> None:
    print(f"generator ngf {args.ngf}, {args.n_blocks} blocks; one PNG per size, decoded, translated, encoded")
    ways = ([("tiled", args.tile, args.max_memory)] if args.tiled else []) + ([("untiled", None, "1TB")]
                                                                               if args.untiled else [])
    for size in args.sizes:
        w, h = (int(v) for v in size.lower().split("x"))
        image = tmp / f"{w}x{h}.png"
        smooth_png(image, w, h, 0)
        for name, tile, budget in ways:
            spec = {"kind": "large", "ngf": args.ngf, "n_blocks": args.n_blocks, "image": str(image),
                    "tile": tile, "max_memory": budget, "out": str(tmp / f"out-{name}-{w}x{h}.png")}
            x = measure(spec, args.env)
            how = f"tile {tile}" if tile else ("untiled" if name == "untiled" else f"--max-memory {budget}")
            print(f"{w}x{h} {how}: peak {x['peak']:7.1f} MiB, before translating {x['baseline']:.1f} MiB, "
                  f"CPU {x['cpu']:.1f} s, wall {x['wall']:.1f} s", flush=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        return child(json.loads(sys.argv[2]))
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    f = sub.add_parser("folder")
    f.add_argument("--counts", type=int, nargs="+", default=[20, 500])
    f.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    f.add_argument("--repeats", type=int, default=2)
    f.add_argument("--ngf", type=int, default=8)
    f.add_argument("--n-blocks", type=int, default=2)
    g = sub.add_parser("large")
    g.add_argument("--sizes", nargs="+", default=["512x512", "768x768"], help="WIDTHxHEIGHT")
    g.add_argument("--tile", type=int, default=None, help="tile side (default: chosen by --max-memory)")
    g.add_argument("--max-memory", default=None, help="budget for the tiled runs (default: imxlate's)")
    g.add_argument("--untiled", action="store_true", help="also untiled (a budget of 1 TB)")
    g.add_argument("--no-tiled", dest="tiled", action="store_false", help="only untiled")
    g.add_argument("--ngf", type=int, default=64)
    g.add_argument("--n-blocks", type=int, default=9)
    for p in (f, g):
        p.add_argument("--env", nargs="*", default=[], help="NAME=VALUE environment variables of the measured runs")
    args = ap.parse_args()
    from imxlate.device import describe_machine

    print(f"machine: {describe_machine()}; each measurement in a fresh process with one torch thread")
    with tempfile.TemporaryDirectory() as tmp:
        (folder if args.what == "folder" else large)(args, Path(tmp))


if __name__ == "__main__":
    main()
