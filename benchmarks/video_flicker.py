"""Flicker of a translated still-camera clip with and without --steady.

    python benchmarks/video_flicker.py [--frames 24] [--noise 4] [--seeds 3]

The clip: the 12 example characters of examples/glyphs/inputs laid out as a 4x3 grid, twice each way (a page of
512x384 px), filmed by
a still camera: every frame adds fresh sensor noise (Gaussian, --noise levels of 255), and in the "moving"
clips a dark 48-pixel square crosses the page along one band of rows. Frames are PNG files (lossless, so no codec
adds change of its own), translated as one sequence by Translator.translate_folder, as `imxlate translate
FRAMES/ --steady MODE` does, with the shipped sans->serif model (weights/glyphs-sans-serif.safetensors: a
CycleGAN ResNet generator with instance norm), with --steady off, first and running.

Printed per clip kind and mode: the mean absolute change between consecutive frames (0-255 levels) over the
whole frame and over the still part (rows farther from the square's band than the network's reach), as mean
+- std over seeds, beside the input's own change.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))

from imxlate.device import describe_machine  # noqa: E402
from imxlate.tiling import geometry  # noqa: E402
from imxlate.translate import Translator  # noqa: E402

BAND = (168, 216)  # rows the moving square covers


def page() -> np.ndarray:
    chars = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((ROOT / "examples/glyphs/inputs").glob("*.png"))]
    rows = [np.concatenate(chars[i:i + 4], axis=1) for i in range(0, 12, 4)]
    return np.tile(np.concatenate(rows, axis=0), (2, 2, 1)).astype(float)  # (384, 512, 3)


def clip(folder: Path, frames: int, noise: float, moving: bool, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base, out = page(), []
    folder.mkdir()
    for i in range(frames):
        f = base + rng.normal(0, noise, base.shape)
        if moving:
            side = BAND[1] - BAND[0]
            x = 4 + i * (base.shape[1] - side - 8) // max(1, frames - 1)
            f[BAND[0]:BAND[1], x:x + side] = 20
        out.append(np.clip(f, 0, 255).round().astype(np.uint8))
        Image.fromarray(out[-1]).save(folder / f"frame_{i + 1:04d}.png")
    return out


def change(frames: list[np.ndarray], rows: np.ndarray) -> tuple[float, float]:
    """(mean |consecutive difference| over the frame, the same over `rows`)."""
    d = [np.abs(a.astype(float) - b.astype(float)) for a, b in zip(frames, frames[1:])]
    return float(np.mean([x.mean() for x in d])), float(np.mean([x[rows].mean() for x in d]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "weights/glyphs-sans-serif.safetensors"))
    ap.add_argument("--to", default="serif")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--noise", type=float, default=4.0)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    tr = Translator.open(args.model, device="cpu")
    reach = geometry(tr.check_steady(args.to)).halo
    rows = np.ones(page().shape[0], bool)
    rows[max(0, BAND[0] - reach):BAND[1] + reach] = False
    modes = (None, "first", "running")
    table: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("still", "moving"):
            for seed in range(args.seeds):
                src = Path(tmp) / f"{kind}{seed}"
                table.setdefault((kind, "input"), []).append(
                    change(clip(src, args.frames, args.noise, kind == "moving", seed), rows))
                for mode in modes:
                    out = Path(tmp) / f"{kind}{seed}-{mode}"
                    tr.translate_folder([str(src)], args.to, out, progress=False, steady=mode)
                    frames = [np.asarray(Image.open(p)) for p in sorted(out.iterdir())]
                    table.setdefault((kind, str(mode)), []).append(change(frames, rows))
    print(f"machine: {describe_machine(torch.device('cpu'))}")
    print(f"model {Path(args.model).name} -> {args.to}; {args.frames} frames of 512x384, noise sigma {args.noise}, "
          f"{args.seeds} seeds; still part: {rows.sum()} of {len(rows)} rows (the network reaches {reach} px)")
    print("clip    steady    change, whole frame    change, still part   (0-255 levels, mean +- std over seeds)")
    for (kind, mode), v in table.items():
        a = np.array(v)
        print(f"{kind:7s} {mode:8s}  {a[:, 0].mean():6.2f} +- {a[:, 0].std():4.2f}        "
              f"{a[:, 1].mean():6.2f} +- {a[:, 1].std():4.2f}")


if __name__ == "__main__":
    main()
