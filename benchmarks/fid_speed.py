"""FID speed: imxlate.metrics against scipy.linalg.sqrtm (the pytorch-fid formula), medians of repeated runs.

1. Full pipeline, 140 vs 120 images of 256 px (PNG folders): load the network, extract features, FID.
   The Inception weights are seeded random ones (write_random_inception_weights), so the FID values are
   meaningless; the speed is that of the real network. The distance step is timed with both methods on
   the same features.
2. Distance only, 2048 vs 2048 feature vectors of 2048-d.

Run: python benchmarks/fid_speed.py [--repeats 3] [--only pipeline|distance]. scipy is needed here only, never
by the library. On a shared, oversubscribed machine OpenBLAS's spinning threads can slow LAPACK calls tenfold:
compare with OPENBLAS_NUM_THREADS=1 (printed with the machine line).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg
import torch
from PIL import Image

from imxlate import metrics as M
from imxlate.device import describe_machine


def machine() -> str:
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    return f"{describe_machine()}, numpy {np.__version__}, scipy {scipy.__version__}, OPENBLAS_NUM_THREADS={blas}"


def fid_scipy(f1: np.ndarray, f2: np.ndarray) -> float:
    """The pytorch-fid computation: covariances, then tr sqrtm(S1 S2) by scipy's Schur method."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def write_images(folder: Path, n: int, size: int, rng: np.random.Generator) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        coarse = torch.from_numpy(rng.random((1, 3, 8, 8), dtype=np.float32))
        x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")[0].permute(1, 2, 0).numpy()
        x = np.clip(x * 255 + rng.normal(0, 10, x.shape), 0, 255).astype(np.uint8)
        Image.fromarray(x, "RGB").save(folder / f"{i:04d}.png")
    return folder


def pipeline(repeats: int, n_real: int, n_fake: int, size: int) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = M.write_random_inception_weights(tmp / "random_inception.pth", seed=0)
        real, fake = write_images(tmp / "real", n_real, size, rng), write_images(tmp / "fake", n_fake, size, rng)
        rows = {"load network": [], "features (both folders)": [], "distance, imxlate": [], "distance, scipy sqrtm": []}
        for _ in range(repeats):
            t, inception = timed(lambda: M.load_inception(weights, allow_unverified=True, device="cpu"))
            rows["load network"].append(t)
            t, (fr, ff) = timed(lambda: [M.extract(s, *inception, progress=False) for s in (real, fake)])
            rows["features (both folders)"].append(t)
            t, ours = timed(M.fid_from_features, fr.feats, ff.feats)
            rows["distance, imxlate"].append(t)
            t, ref = timed(fid_scipy, fr.feats, ff.feats)
            rows["distance, scipy sqrtm"].append(t)
    med = {k: statistics.median(v) for k, v in rows.items()}
    total_ours = med["load network"] + med["features (both folders)"] + med["distance, imxlate"]
    total_scipy = med["load network"] + med["features (both folders)"] + med["distance, scipy sqrtm"]
    print(f"\n## Full pipeline: FID of {n_real} vs {n_fake} images at {size} px, random Inception weights, CPU, "
          f"median of {repeats}")
    print("| step | median s | runs s |\n|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {med[k]:.3f} | {', '.join(f'{x:.3f}' for x in v)} |")
    print(f"| total, imxlate | {total_ours:.3f} | |\n| total with scipy sqrtm distance | {total_scipy:.3f} | |")
    print(f"distance speed-up {med['distance, scipy sqrtm'] / med['distance, imxlate']:.1f}x, "
          f"pipeline speed-up {total_scipy / total_ours:.2f}x; FID imxlate {ours:.6f}, scipy {ref:.6f} "
          f"(relative difference {abs(ours - ref) / abs(ours):.1e})")


def distance_only(repeats: int, n: int, dims: int = 2048) -> None:
    rng = np.random.default_rng(1)
    mix = rng.standard_normal((dims, dims)) / np.sqrt(dims)
    f1 = np.maximum(rng.standard_normal((n, dims)) @ mix, 0)
    f2 = np.maximum(rng.standard_normal((n, dims)) @ mix + 0.05, 0)
    auto = "eigh" if n >= dims else "nuclear"  # what fid_from_features picks
    rows = {"imxlate eigh (auto when n >= d)": lambda: M.fid_from_features(f1, f2, "eigh"),
            "imxlate nuclear (auto when n < d)": lambda: M.fid_from_features(f1, f2, "nuclear"),
            "scipy sqrtm (pytorch-fid formula)": lambda: fid_scipy(f1, f2)}
    M.fid_from_features(f1[:50], f2[:50])  # warm up BLAS threads before timing
    times = {k: [] for k in rows}
    values = {}
    for _ in range(repeats):
        for k, fn in rows.items():
            t, values[k] = timed(fn)
            times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    eig, nuc, ref = rows
    ours = eig if auto == "eigh" else nuc
    print(f"\n## Distance only: {n} vs {n} feature vectors of {dims}-d, median of {repeats}")
    print("| method | median s | runs s | FID |\n|---|---|---|---|")
    for k in rows:
        print(f"| {k} | {med[k]:.3f} | {', '.join(f'{x:.3f}' for x in times[k])} | {values[k]:.9f} |")
    print(f"imxlate's automatic choice here is {auto}: {med[ref] / med[ours]:.1f}x faster than scipy; relative "
          f"difference to scipy {abs(values[ours] - values[ref]) / abs(values[ref]):.1e}, eigh vs nuclear "
          f"{abs(values[eig] - values[nuc]) / abs(values[eig]):.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--real", type=int, default=140)
    p.add_argument("--fake", type=int, default=120)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--features", type=int, default=2048, help="vectors per side for the distance-only timing")
    p.add_argument("--only", choices=("pipeline", "distance"), help="run one part")
    args = p.parse_args()
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    if args.only != "distance":
        pipeline(args.repeats, args.real, args.fake, args.size)
    if args.only != "pipeline":
        distance_only(args.repeats, args.features)
    print(f"\nload average at end {os.getloadavg()[0]:.2f} (above the core count: other work shared the CPU)")


if __name__ == "__main__":
    main()
