"""Peak memory (RSS) and CPU time of translation: folders of many mixed-size images, large images streamed in
tiles, and the cost of streaming against the untiled forward.

    python benchmarks/translate_memory.py folder [--counts 20 500] [--batches 1 8] [--repeats 2]
    python benchmarks/translate_memory.py large --sizes 7680x4320 --max-memory 4GB [--reference 1024x1024]
    python benchmarks/translate_memory.py large --sizes 8000x6000 --format jpg       # default options
    python benchmarks/translate_memory.py ratio --size 1024x1024 --max-memory 1GB --tile 256 [--repeats 3]

Every measurement runs in a fresh Python process (so one run's peak cannot hide another's), which prints
its peak resident set size (getrusage ru_maxrss), its resident size before translating (model built and
warmed up on a small image: the baseline), and its CPU seconds. Runs of one table are interleaved.

* folder: Translator.translate_folder over the first N of one list of PNG files whose sides are drawn from
  32-96 pixels, so that sizes rarely repeat and size buckets rarely fill (what made folders of mixed sizes
  grow before buckets were bounded); a small CycleGAN generator (ngf 8, 2 blocks, random weights), since
  what grows with a folder is the images held, not the network.
* large: Translator.translate_folder (what `imxlate translate` runs: decoded and encoded in its threads, the
  memory budget parsed once) on one file of each size (a smooth random picture, PNG or JPEG) with the default
  CycleGAN generator (9 blocks, ngf 64, random weights) unless --ngf/--n-blocks say otherwise: with
  --max-memory and --tile as given (none: imxlate's defaults), and untiled with --untiled. --reference WxH
  also times the untiled forward at that size, for its CPU time per pixel, and compares each run with it.
* ratio: CPU time of Translator.translate_tensor on a random image, untiled and streamed (each --max-memory
  and --tile given, and with --tile-mib streamed whatever the budget, buffers in memory, tiles of at most that
  many MiB), interleaved, each in a fresh process; the median ratio over --repeats and the largest
  difference of the outputs in 8-bit levels.
The measured processes get the oneDNN kernel-cache settings that `imxlate translate` sets (cli.py).
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
CLI_ENV = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128", "LRU_CACHE_CAPACITY": "128"}  # as `imxlate translate` sets


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
    elif spec["kind"] == "large":
        report = tr.translate_folder([spec["image"]], "b", spec["out"], progress=False, tile=spec["tile"],
                                     max_memory=spec["max_memory"])
        assert len(report.written) == 1 and not report.failed, report.failed
    else:  # forward: one random image, no files; "stream": streamed whatever the budget, tiles of tile_mib at most
        from imxlate import tiling

        w, h = spec["size"]
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1
        c0 = time.process_time()
        if spec["kind"] == "stream":
            tiling.CPU_TILE_BYTES = spec["tile_mib"] * MIB
            program = tr._watch("b", None, 1).program
            with torch.inference_mode():
                y = tiling.stream(program, x, tiling.Budget(2**40))
        else:
            y = tr.translate_tensor(x, "b", tile=spec["tile"], max_memory=spec["max_memory"])
        np.save(spec["out"], ((y[0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak": peak, "baseline": baseline, "cpu": time.process_time() - c0,
                      "wall": time.perf_counter() - t0}))


def measure(spec: dict, env: list[str] = ()) -> dict:
    """Run one measurement in a fresh process (with the environment variables `env`, NAME=VALUE)."""
    environ = {**os.environ, **CLI_ENV, **dict(e.split("=", 1) for e in env)}
    run = subprocess.run([sys.executable, __file__, "child", json.dumps(spec)], capture_output=True, text=True,
                         env=environ)
    if run.returncode != 0:
        raise SystemExit(f"measurement {spec} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.splitlines()[-1])


def smooth_image(path: Path, width: int, height: int, seed: int) -> None:
    """A smooth random picture (an 8x8 one upsampled) saved as PNG or JPEG (by the suffix)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8))
    small.resize((width, height), Image.BICUBIC).save(path, quality=90)


def folder(args, tmp: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp / "in"
    src.mkdir()
    files = []
    for i in range(max(args.counts)):
        w, h = (int(v) for v in rng.integers(32, 97, size=2))
        files.append(src / f"img{i:04d}.png")
        smooth_image(files[-1], w, h, i)
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
    print(f"generator ngf {args.ngf}, {args.n_blocks} blocks; one {args.format.upper()} per size, decoded, translated "
          "and encoded as `imxlate translate` does")
    per_pixel = reference(args, tmp) if args.reference else None
    ways = ([("streamed", args.tile, args.max_memory)] if args.tiled else []) + ([("untiled", None, "1TB")]
                                                                                  if args.untiled else [])
    for size in args.sizes:
        w, h = (int(v) for v in size.lower().split("x"))
        image = tmp / f"{w}x{h}.{args.format}"
        smooth_image(image, w, h, 0)
        for name, tile, budget in ways:
            spec = {"kind": "large", "ngf": args.ngf, "n_blocks": args.n_blocks, "image": str(image),
                    "tile": tile, "max_memory": budget, "out": str(tmp / f"out-{name}-{w}x{h}")}
            x = measure(spec, args.env)
            how = ", ".join(f for f in (f"--tile {tile}" if tile else "", f"--max-memory {budget}" if budget else "")
                            if f) or "default options"
            against = (f"; {x['cpu'] / (per_pixel * w * h):.3f}x the untiled forward's CPU time per pixel"
                       if per_pixel else "")
            print(f"{w}x{h} {name} ({how}): peak {x['peak']:7.1f} MiB, before translating {x['baseline']:.1f} MiB, "
                  f"CPU {x['cpu']:.1f} s, wall {x['wall']:.1f} s{against}", flush=True)


def reference(args, tmp: Path) -> float:
    """CPU seconds per pixel of the untiled forward at --reference (median of --repeats)."""
    w, h = (int(v) for v in args.reference.lower().split("x"))
    spec = {"kind": "forward", "ngf": args.ngf, "n_blocks": args.n_blocks, "size": (w, h), "tile": None,
            "max_memory": "1TB", "out": str(tmp / "reference.npy")}
    runs = [measure(spec, args.env)["cpu"] for _ in range(args.repeats)]
    per_pixel = median(runs) / (w * h)
    print(f"untiled forward at {w}x{h}: CPU {', '.join(f'{r:.1f}' for r in runs)} s; "
          f"{per_pixel * 1e6:.2f} s per megapixel")
    return per_pixel


def ratio(args, tmp: Path) -> None:
    """Streamed against untiled CPU time of the forward alone, interleaved, and how far their outputs differ."""
    w, h = (int(v) for v in args.size.lower().split("x"))
    ways = [("untiled", None, "1TB")] + [(f"--max-memory {m}", None, m) for m in args.max_memory] + \
        [(f"--tile {t}", t, "1TB") for t in args.tile] + [(f"tiles of at most {m} MiB", m, None) for m in args.tile_mib]
    print(f"generator ngf {args.ngf}, {args.n_blocks} blocks; translate_tensor on one random {w}x{h} image; CPU "
          f"seconds of the forward, each run a fresh process, interleaved, {args.repeats} rounds")
    times: dict = {}
    for r in range(args.repeats):
        for name, tile, budget in ways:
            spec = {"kind": "forward" if budget else "stream", "ngf": args.ngf, "n_blocks": args.n_blocks,
                    "size": (w, h), "tile": tile, "tile_mib": tile, "max_memory": budget,
                    "out": str(tmp / f"{len(times)}-{r}.npy")}
            times.setdefault(name, []).append((measure(spec, args.env), spec["out"]))
    base = median([x["cpu"] for x, _ in times["untiled"]])
    reference_out = np.load(times["untiled"][0][1]).astype(int)
    for name, runs in times.items():
        cpu = median([x["cpu"] for x, _ in runs])
        levels = max(int(np.abs(np.load(out).astype(int) - reference_out).max()) for _, out in runs)
        each = ", ".join(f"{x['cpu']:.1f}" for x, _ in runs)
        print(f"{name}: CPU {each} s, median {cpu:.2f} s, "
              f"{cpu / base:.3f}x untiled; peak {median([x['peak'] for x, _ in runs]):.0f} MiB; outputs differ "
              f"from the untiled one by at most {levels} levels of 255")


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
    g.add_argument("--format", choices=("png", "jpg"), default="png")
    g.add_argument("--tile", type=int, default=None, help="tile side (default: chosen by --max-memory)")
    g.add_argument("--max-memory", default=None, help="budget of the streamed runs (default: imxlate's)")
    g.add_argument("--untiled", action="store_true", help="also untiled (a budget of 1 TB)")
    g.add_argument("--no-tiled", dest="tiled", action="store_false", help="only untiled")
    g.add_argument("--reference", default=None, help="WIDTHxHEIGHT: time the untiled forward there, per pixel")
    g.add_argument("--repeats", type=int, default=1, help="runs of the --reference forward")
    r = sub.add_parser("ratio")
    r.add_argument("--size", default="1024x1024", help="WIDTHxHEIGHT")
    r.add_argument("--max-memory", nargs="*", default=["1GB"], help="budgets of streamed runs")
    r.add_argument("--tile", type=int, nargs="*", default=[256], help="forced tile sides of streamed runs")
    r.add_argument("--tile-mib", type=int, nargs="*", default=[], help="streamed with buffers in memory, tiles of "
                   "at most this many MiB (tiling.CPU_TILE_BYTES)")
    r.add_argument("--repeats", type=int, default=3)
    for p in (g, r):
        p.add_argument("--ngf", type=int, default=64)
        p.add_argument("--n-blocks", type=int, default=9)
    for p in (f, g, r):
        p.add_argument("--env", nargs="*", default=[], help="NAME=VALUE environment variables of the measured runs")
    args = ap.parse_args()
    from imxlate.device import describe_machine

    print(f"machine: {describe_machine()}; each measurement in a fresh process with one torch thread")
    with tempfile.TemporaryDirectory() as tmp:
        {"folder": folder, "large": large, "ratio": ratio}[args.what](args, Path(tmp))


if __name__ == "__main__":
    main()
