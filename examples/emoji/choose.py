"""Choose a training run's snapshot by its score on the validation code points, never the test set.

    python examples/emoji/choose.py RUN_DIR --data DATA

RUN_DIR is an `imxlate train ... --snapshot-every N` run folder; DATA is the folder prepare.py made,
whose val/ split (both styles of code points that neither training half holds) gives exact targets.
Every snapshot and the final model translate the validation images both ways and are scored as the
test set is (mean L1, SSIM); the chosen file is the one with the highest score, fixed before looking:
the mean, over both directions, of the relative gains over the input itself on L1 and on SSIM,
(L1_input - L1) / L1_input + (SSIM - SSIM_input) / SSIM_input.
Prints a table and the chosen file's path (pass it to ship.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import imxlate
from imxlate import store
from imxlate.data import list_images, load_rgb
from imxlate.paired import paired_scores

DIRECTIONS = (("twemoji", "noto"), ("noto", "twemoji"))


def validation_set(data: Path) -> dict:
    """Per direction: (inputs, targets, the input's own scores)."""
    out = {}
    for src, dst in DIRECTIONS:
        files = list_images(data / "val" / src)
        inputs = [load_rgb(p) for p in files]
        targets = [load_rgb(data / "val" / dst / p.name) for p in files]
        out[src, dst] = inputs, targets, paired_scores(inputs, targets)
    return out


def score(model_path: Path, val: dict) -> tuple[float, dict]:
    """(selection score, per-direction paired scores) of one model file on the validation set."""
    model = imxlate.load(str(model_path), device="cpu")
    total, parts = 0.0, {}
    for (src, dst), (inputs, targets, ident) in val.items():
        s = paired_scores([model.translate(im, to=dst) for im in inputs], targets)
        total += (ident["l1"] - s["l1"]) / ident["l1"] + (s["ssim"] - ident["ssim"]) / ident["ssim"]
        parts[src, dst] = s
    return total / len(val), parts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="a run folder trained with --snapshot-every")
    ap.add_argument("--data", type=Path, required=True, help="the folder prepare.py made (with val/)")
    args = ap.parse_args()
    if not (args.data / "val" / "twemoji").is_dir():
        sys.exit(f"error: {args.data} has no val/ split; rebuild it with examples/emoji/prepare.py")
    files = sorted((args.run / "snapshots").glob("step_*.safetensors")) + [args.run / "model.safetensors"]
    files = [f for f in files if f.is_file()]
    if not files:
        sys.exit(f"error: no snapshots or model.safetensors in {args.run}; train with --snapshot-every N")
    val = validation_set(args.data)
    print("| file | step | " + " | ".join(f"{s} -> {d} L1 | SSIM" for s, d in DIRECTIONS) + " | score |")
    print("|---|---:|" + "---:|---:|" * len(DIRECTIONS) + "---:|")
    cells = " | ".join(f"{v[2]['l1']:.4f} | {v[2]['ssim']:.4f}" for v in val.values())
    print(f"| the input itself | | {cells} | +0.0000 |")
    best = None
    for f in files:
        total, parts = score(f, val)
        step = store.read_metadata(f)["training"]["steps"]
        cells = " | ".join(f"{p['l1']:.4f} | {p['ssim']:.4f}" for p in parts.values())
        print(f"| {f.name} | {step} | {cells} | {total:+.4f} |", flush=True)
        if best is None or total > best[0]:
            best = (total, f)
    print(f"\nchosen: {best[1]} (score {best[0]:+.4f})")


if __name__ == "__main__":
    main()
