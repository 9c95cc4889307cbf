"""Which held-out characters a glyph model's translations are not retrieved for, beside the input's own misses,
and an overlay of the ones it loses: where its retrieval differs from the input's, and why.

    python examples/glyphs/misses.py MODEL --glyphs DATA/glyphs --pair latin --split val

Per direction it prints the characters the translation loses (the input itself is retrieved, the translation
is not) and gains (the reverse), each with the character it was read as; lost minus gained is the input's
top-1 minus the translation's, in characters. --figure draws, for the characters lost in the first direction,
the input over the true drawing and the translation over it: blue where they agree, cyan where only the
truth has ink, magenta where only the input or translation has it.
"""
from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import imxlate
from imxlate.data import list_images
from imxlate.paired import nearest, pixels

sys.path.insert(0, str(Path(__file__).parent))
from benchmark import PAIRS, draw_grid, glyph_sets, translate_all  # noqa: E402


def read_as(preds: list[Image.Image], targets: list[Image.Image]) -> list[int]:
    """The index of the held-out character each prediction is retrieved as (the benchmark's top-1)."""
    return nearest(*(torch.stack([pixels(im) for im in ims]) for ims in (preds, targets))).tolist()


def overlay(pred: Image.Image, truth: Image.Image) -> Image.Image:
    """Truth in the red channel, the prediction in the green, blue full: ink both have is blue."""
    p, t = (np.asarray(im.convert("L")) for im in (pred, truth))
    return Image.fromarray(np.stack([t, p, np.full_like(p, 255)], -1))


def char(name: str) -> str:
    """'U+0166' -> 'Ŧ (U+0166)'; a combining mark is shown on a dotted circle."""
    c = chr(int(name[2:], 16))
    return f"{'◌' + c if unicodedata.combining(c) else c} ({name})"


def misses(model: Path, root: Path, split: str, domains) -> list[dict]:
    """Per direction: lost and gained [(character, read as)] and the overlay rows of the lost ones."""
    tr = imxlate.load(model, device="cpu")
    out = []
    for (src, dst), (inputs, x, targets) in glyph_sets(root, split, domains).items():
        names = [p.stem for p in list_images(root / split / src)]
        fakes = translate_all(tr, x, dst, src)
        by_input, by_model = read_as(inputs, targets), read_as(fakes, targets)
        lost = [i for i in range(len(names)) if by_input[i] == i != by_model[i]]
        gained = [i for i in range(len(names)) if by_model[i] == i != by_input[i]]
        out.append({"direction": f"{src} -> {dst}", "n": len(names),
                    "lost": [(names[i], names[by_model[i]]) for i in lost],
                    "gained": [(names[i], names[by_input[i]]) for i in gained],
                    "rows": [(names[i], overlay(inputs[i], targets[i]), overlay(fakes[i], targets[i])) for i in lost]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--glyphs", type=Path, required=True, help="what examples/glyphs/prepare.py wrote")
    ap.add_argument("--pair", default="latin", choices=list(PAIRS))
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--figure", type=Path, help="draw the overlays of the first direction's lost characters here")
    args = ap.parse_args()
    result = misses(args.model, args.glyphs / args.pair, args.split, PAIRS[args.pair])
    for d in result:
        print(f"{d['direction']} ({d['n']} characters): {len(d['lost'])} lost, {len(d['gained'])} gained")
        for label in ("lost", "gained"):
            for name, other in d[label]:
                print(f"  {label}: {char(name)}, read as {char(other)}")
    rows = result[0]["rows"]
    if args.figure and rows:
        cols = list(zip(*[(inp, fake) for _, inp, fake in rows]))
        draw_grid([("input / truth", list(cols[0])), ("model / truth", list(cols[1]))], args.figure, scale=3)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
