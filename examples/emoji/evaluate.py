"""Held-out quality of an emoji model in both directions, against exact ground truth.

    python examples/emoji/evaluate.py DATA [--model weights/emoji-twemoji-noto.safetensors] [--readme] [--worst]

DATA is the folder made by prepare.py. For each direction, every test image is translated and
compared with the same code point drawn in the other style: mean L1 (0-1 scale), SSIM and top-1
retrieval (is the translation nearer its own target than every other test target?), beside three
baselines: the input itself (identity), the input under a Gaussian blur of radius BLUR (1 px: pixel
metrics reward hedging, and a blur is the simplest hedge) and per-channel colour-histogram matching
to the target training domain. Prints a markdown table; --readme writes it and a picture grid into the README;
--worst draws, per direction, the N_WORST (12) test code points where the model's SSIM falls furthest below the
input's own (the identity baseline's), to see what the model gets wrong.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from PIL import Image, ImageFilter

import imxlate
from imxlate.data import list_images, load_rgb
from imxlate.paired import domain_histogram, image_ssim, match_histogram, paired_scores

HERE = Path(__file__).parent
GRID = HERE.parent / "figures" / "emoji_grid.png"
WORST = HERE.parent / "figures" / "emoji_worst.png"
N_WORST = 12  # code points each way in the --worst figure
BLUR = 1.0  # radius (px) of the blurred-input baseline


def evaluate(data: Path, model) -> tuple[list[str], dict]:
    rows, shown = [], {}
    for src, dst in (("twemoji", "noto"), ("noto", "twemoji")):
        inputs = list_images(data / "test" / src)
        targets = [load_rgb(data / "test" / dst / p.name) for p in inputs]
        sources = [load_rgb(p) for p in inputs]
        hist = domain_histogram(data / dst)
        methods = {
            "imxlate model": [model.translate(im, to=dst) for im in sources],
            "identity (input)": sources,
            f"blurred input ({BLUR:g} px)": [im.filter(ImageFilter.GaussianBlur(BLUR)) for im in sources],
            "histogram matching": [match_histogram(im, hist) for im in sources],
        }
        for name, preds in methods.items():
            s = paired_scores(preds, targets)
            rows.append(f"| {src} -> {dst} | {name} | {s['n']} | {s['l1']:.4f} | {s['ssim']:.4f} | {s['top1']:.3f} |")
        shown[src] = (sources, methods["imxlate model"], targets)
    return rows, shown


def worst(shown: dict, n: int = N_WORST) -> dict:
    """Per direction, the n (input, translation, target) triples whose SSIM gain over the input is lowest."""
    out = {}
    for src, (sources, preds, targets) in shown.items():
        gain = [image_ssim(p, t) - image_ssim(s, t) for s, p, t in zip(sources, preds, targets)]
        order = sorted(range(len(gain)), key=gain.__getitem__)[:n]
        out[src] = tuple([row[i] for i in order] for row in (sources, preds, targets))
    return out


def grid(shown: dict, path: Path, scale: int = 2, n: int = 8) -> None:
    """Per direction, three rows (input, translation, ground truth) of the first n code points."""
    rows = [r[:n] for src in shown for r in shown[src]]
    w, h = rows[0][0].size
    sheet = Image.new("RGB", (n * w, len(rows) * h), "white")
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            sheet.paste(im.convert("RGB"), (j * w, i * h))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST).save(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default=None, help="model file (default: the shipped emoji model)")
    ap.add_argument("--readme", action="store_true", help="write the table into the READMEs and draw the grid")
    ap.add_argument("--worst", action="store_true", help=f"draw the {N_WORST} worst code points each way into {WORST.name}")
    args = ap.parse_args()
    if not (args.data / "test" / "twemoji").is_dir():
        sys.exit(f"error: {args.data} is not a prepared emoji folder; run examples/emoji/prepare.py first")
    model = imxlate.load(args.model, to="noto", device="cpu")
    rows, shown = evaluate(args.data, model)
    table = "\n".join(["| direction | method | n | L1 (lower is better) | SSIM (higher) | top-1 retrieval |",
                       "|---|---|---:|---:|---:|---:|", *rows])
    print(f"model: {model.path.name}\n\n{table}")
    if args.readme:
        grid(shown, GRID)
        block = f"<!-- results:start -->\n{table}\n<!-- results:end -->"
        for readme in (HERE / "README.md", HERE.parents[1] / "README.md"):
            text = re.sub(r"<!-- results:start -->.*<!-- results:end -->", lambda _: block, readme.read_text(), flags=re.S)
            readme.write_text(text)
        print(f"wrote the table into both READMEs and the grid to {GRID}")
    if args.worst:
        grid(worst(shown), WORST, n=N_WORST)
        print(f"wrote the worst code points to {WORST}")


if __name__ == "__main__":
    main()
