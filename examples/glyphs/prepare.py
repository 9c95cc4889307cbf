"""Build the glyph-style benchmarks: the same characters drawn in two fonts, black on white, 64 px.

Four pairs, each from Debian font packages. Two differ mostly in stroke contrast (the easy pairs):
  cjk:   Noto Sans CJK SC -> Noto Serif CJK SC (fonts-noto-cjk), CJK unified ideographs
  latin: DejaVu Sans -> DejaVu Serif (fonts-dejavu-core), Latin, Greek and Cyrillic letters and signs
and two differ in shape (slant, proportions, where strokes go and how they end):
  z003:  DejaVu Sans -> URW Z003 Medium Italic (fonts-urw-base35), a calligraphic italic; the 555 characters
         both draw, so 150 test and 75 validation characters
  kai:   Noto Sans CJK SC -> AR PL UKai CN (fonts-arphic-ukai), a brush (kaishu) style; CJK as in cjk

Characters both fonts draw are shuffled (seeded) and cut four ways, disjoint: a held-out test set and a
validation set drawn in both styles (exact targets, never trained on), and two training halves, the first
drawn only in style A and the second only in style B, so training is unpaired.

    python examples/glyphs/prepare.py OUT [--pairs cjk latin z003 kai] [--size 64] [--seed 0]

Writes OUT/<pair>/{A,B}/ for training, A and B the pair's style names (`imxlate train --data OUT/cjk --domains
sans serif`), OUT/<pair>/val/{A,B}/ and OUT/<pair>/test/{A,B}/, one PNG per character named by its code point
(U+4E00.png).
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONTS = Path("/usr/share/fonts")
LATIN = [range(0x21, 0x7F), range(0xA1, 0x250), range(0x370, 0x530), range(0x1E00, 0x1F00)]
# pair -> (style A name, font file, ttc index), (style B ...), code point ranges, (test, val) counts, cap
PAIRS = {
    "cjk": (("sans", "opentype/noto/NotoSansCJK-Regular.ttc", 2), ("serif", "opentype/noto/NotoSerifCJK-Regular.ttc", 2),
            [range(0x4E00, 0xA000)], (300, 200), 6000),
    "latin": (("sans", "truetype/dejavu/DejaVuSans.ttf", 0), ("serif", "truetype/dejavu/DejaVuSerif.ttf", 0),
              LATIN, (200, 100), None),
    "z003": (("sans", "truetype/dejavu/DejaVuSans.ttf", 0), ("script", "opentype/urw-base35/Z003-MediumItalic.otf", 0),
             LATIN, (150, 75), None),
    "kai": (("sans", "opentype/noto/NotoSansCJK-Regular.ttc", 2), ("kai", "truetype/arphic/ukai.ttc", 0),
            [range(0x4E00, 0xA000)], (300, 200), 6000),
}
PACKAGES = {"cjk": "fonts-noto-cjk", "latin": "fonts-dejavu-core", "z003": "fonts-urw-base35 fonts-dejavu-core",
            "kai": "fonts-noto-cjk fonts-arphic-ukai"}
FILL = 0.8  # the em square spans this share of the image


def render(font: ImageFont.FreeTypeFont, ch: str, size: int) -> Image.Image:
    """One character, black on white, its line box centred (so glyphs keep their place relative to the baseline)."""
    img = Image.new("L", (size, size), 255)
    ImageDraw.Draw(img).text((size / 2, size / 2), ch, font=font, fill=0, anchor="mm")
    return img


def drawable(font: ImageFont.FreeTypeFont, ch: str, size: int, missing: bytes) -> bool:
    """The font has a glyph of its own for `ch` that leaves ink (not the .notdef box, not a blank)."""
    img = render(font, ch, size)
    data = img.tobytes()
    return data != missing and min(data) < 128


def characters(pair: str, size: int) -> list[str]:
    (_, fa, ia), (_, fb, ib), ranges, _, _ = PAIRS[pair]
    fonts = [ImageFont.truetype(str(FONTS / f), int(size * FILL), index=i) for f, i in ((fa, ia), (fb, ib))]
    missing = [render(f, chr(0x10FFFD), size).tobytes() for f in fonts]
    return [chr(c) for r in ranges for c in r
            if not chr(c).isspace() and all(drawable(f, chr(c), size, m) for f, m in zip(fonts, missing))]


def prepare(out: Path, pair: str, size: int, seed: int) -> dict:
    (name_a, fa, ia), (name_b, fb, ib), _, (n_test, n_val), cap = PAIRS[pair]
    for f in (fa, fb):
        if not (FONTS / f).is_file():
            raise SystemExit(f"error: {FONTS / f} is missing; install it with `apt-get install {PACKAGES[pair]}`")
    chars = characters(pair, size)
    random.Random(seed).shuffle(chars)
    if cap:
        chars = chars[:cap]
    test, val, rest = chars[:n_test], chars[n_test:n_test + n_val], chars[n_test + n_val:]
    half = len(rest) // 2
    fonts = {name_a: ImageFont.truetype(str(FONTS / fa), int(size * FILL), index=ia),
             name_b: ImageFont.truetype(str(FONTS / fb), int(size * FILL), index=ib)}
    root = out / pair
    parts = [(name_a, name_a, rest[:half]), (name_b, name_b, rest[half:])]
    parts += [(f"{split}/{s}", s, cs) for split, cs in (("test", test), ("val", val)) for s in (name_a, name_b)]
    for folder, style, cs in parts:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for ch in cs:
            render(fonts[style], ch, size).convert("RGB").save(root / folder / f"U+{ord(ch):04X}.png")
    return {"pair": pair, "characters": len(chars), name_a: half, name_b: len(rest) - half, "val": len(val),
            "test": len(test)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for pair in args.pairs:
        if (args.out / pair).exists() and any((args.out / pair).iterdir()):
            sys.exit(f"error: {args.out / pair} is not empty; choose another OUT or remove it")
        print(prepare(args.out, pair, args.size, args.seed))


if __name__ == "__main__":
    main()
