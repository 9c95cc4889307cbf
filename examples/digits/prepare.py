"""Build a labelled two-domain digit benchmark offline: handwritten (scikit-learn digits) and printed (fonts).

Usage: python examples/digits/prepare.py OUT [--seed 0] [--printed-per-digit 150] [--printed-test-per-digit 40]

Writes 32x32 RGB PNGs, dark ink on a white background in both domains, as
OUT/{train,test}/{handwritten,printed}/<digit>/NNNN.png. Reruns with the same options give identical bytes.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 32
RENDER_PT = 96  # glyphs are drawn large, then shrunk with an antialiasing filter
# Debian font packages and the files this script looks for in the standard font folders.
KNOWN_FONTS = {
    "fonts-dejavu-core": ["dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf", "dejavu/DejaVuSerif.ttf",
                          "dejavu/DejaVuSerif-Bold.ttf", "dejavu/DejaVuSansMono.ttf", "dejavu/DejaVuSansMono-Bold.ttf"],
    "fonts-dejavu-extra": ["dejavu/DejaVuSans-ExtraLight.ttf", "dejavu/DejaVuSans-Oblique.ttf",
                           "dejavu/DejaVuSansCondensed-Bold.ttf", "dejavu/DejaVuSerif-Italic.ttf",
                           "dejavu/DejaVuSerifCondensed.ttf", "dejavu/DejaVuSansMono-Oblique.ttf"],
    "fonts-liberation": ["liberation/LiberationSans-Regular.ttf", "liberation/LiberationSans-Bold.ttf",
                         "liberation/LiberationSerif-Regular.ttf", "liberation/LiberationSerif-Italic.ttf",
                         "liberation/LiberationMono-Regular.ttf"],
    "fonts-freefont-ttf": ["freefont/FreeSans.ttf", "freefont/FreeSerifBold.ttf", "freefont/FreeMono.ttf",
                           "freefont/FreeSansOblique.ttf"],
    "fonts-urw-base35": ["urw-base35/NimbusSans-Regular.otf", "urw-base35/NimbusRoman-Regular.otf",
                         "urw-base35/NimbusMonoPS-Bold.otf", "urw-base35/URWBookman-Light.otf",
                         "urw-base35/URWGothic-Book.otf", "urw-base35/C059-Italic.otf",
                         "urw-base35/P052-Bold.otf", "urw-base35/Z003-MediumItalic.otf"],
}
FONT_DIRS = [Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype"), Path("/usr/local/share/fonts")]


def find_fonts() -> list[Path]:
    """The known font files present on this system, in a fixed order; exits with an install hint if none."""
    found = [d / name for names in KNOWN_FONTS.values() for name in names for d in FONT_DIRS if (d / name).is_file()]
    if not found:
        sys.exit("error: no known font found; install one, e.g. `sudo apt-get install fonts-dejavu-core` "
                 f"(also used if present: {', '.join(KNOWN_FONTS)})")
    return found


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 1797 8x8 digits as (images in 0..16, labels)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("error: scikit-learn is needed for the handwritten digits: pip install scikit-learn")
    bunch = load_digits()
    return bunch.images, bunch.target


def handwritten_image(grey8: np.ndarray) -> Image.Image:
    """One 8x8 image with 16 grey levels (0 = background) as a 32x32 RGB image, dark ink on white."""
    ink = Image.fromarray(np.round(255 - grey8 * (255 / 16)).astype(np.uint8))  # 2-D uint8 -> mode L
    # The 8x8 digits fill their frame; keep a 4-pixel white margin (as MNIST does) so both domains have similar
    # digit sizes.
    out = Image.new("L", (SIZE, SIZE), 255)
    out.paste(ink.resize((SIZE - 8, SIZE - 8), Image.Resampling.BILINEAR), (4, 4))
    return out.convert("RGB")


def stratified_split(labels: np.ndarray, test_fraction: float, rng: np.random.Generator) -> tuple[list, list]:
    """Indices (train, test) with the same share of each class in test; each list sorted."""
    train, test = [], []
    for digit in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        n_test = round(len(idx) * test_fraction)
        test += idx[:n_test].tolist()
        train += idx[n_test:].tolist()
    return sorted(train), sorted(test)


def printed_image(digit: int, font_path: Path, rng: np.random.Generator) -> Image.Image:
    """A digit in one font at a random height, offset, rotation and stroke width, as a 32x32 RGB image."""
    font = ImageFont.truetype(str(font_path), RENDER_PT)
    canvas = Image.new("L", (3 * RENDER_PT, 3 * RENDER_PT), 255)
    stroke = int(rng.integers(0, 5))  # extra outline in render pixels: 0 (font weight) .. 4 (heavy)
    ImageDraw.Draw(canvas).text((canvas.width // 2, canvas.height // 2), str(digit), font=font, fill=0,
                                anchor="mm", stroke_width=stroke, stroke_fill=0)
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BICUBIC, fillcolor=255)
    glyph = canvas.crop(Image.eval(canvas, lambda v: 255 - v).getbbox())
    # Scale the ink box to a random height like the handwritten digits (about 3/4 of the frame), width capped.
    height = rng.uniform(0.6, 0.9) * SIZE
    scale = min(height / glyph.height, 0.9 * SIZE / glyph.width)
    w, h = max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))
    glyph = glyph.resize((w, h), Image.Resampling.LANCZOS)
    out = Image.new("L", (SIZE, SIZE), 255)
    x = (SIZE - w) // 2 + int(rng.integers(-2, 3))
    y = (SIZE - h) // 2 + int(rng.integers(-2, 3))
    out.paste(glyph, (min(max(x, 0), SIZE - w), min(max(y, 0), SIZE - h)))
    return out.convert("RGB")


def write_handwritten(out: Path, seed: int) -> dict[str, int]:
    """Split the scikit-learn digits 80/20 per class and write them; returns counts per split."""
    images, labels = load_sklearn_digits()
    train, test = stratified_split(labels, 0.2, np.random.default_rng(seed))
    for split, indices in (("train", train), ("test", test)):
        for i in indices:
            path = out / split / "handwritten" / str(labels[i]) / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            handwritten_image(images[i]).save(path)
    return {"train": len(train), "test": len(test)}


def write_printed(out: Path, seed: int, per_digit: dict[str, int], fonts: list[Path]) -> dict[str, int]:
    """Render per_digit[split] printed images of each digit; train and test draw from different seed streams."""
    counts = {}
    for split_id, (split, n) in enumerate(per_digit.items()):
        for digit in range(10):
            rng = np.random.default_rng([seed, split_id, digit])
            folder = out / split / "printed" / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                printed_image(digit, fonts[rng.integers(len(fonts))], rng).save(folder / f"{k:04d}.png")
        counts[split] = 10 * n
    return counts


def main(argv: list[str] | None = None) -> None:
    """Parse options, write both domains and print counts and time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (train/ and test/ are created inside)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--printed-per-digit", type=int, default=150, help="printed training images per digit")
    parser.add_argument("--printed-test-per-digit", type=int, default=40, help="printed test images per digit")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT/train and OUT/test")
    args = parser.parse_args(argv)

    existing = [args.out / s for s in ("train", "test") if (args.out / s).exists()]
    if existing and not args.overwrite:
        sys.exit(f"error: {existing[0]} already exists; pass --overwrite to replace it or choose another OUT")
    for folder in existing:
        shutil.rmtree(folder)
    fonts = find_fonts()
    start = time.perf_counter()
    hand = write_handwritten(args.out, args.seed)
    printed = write_printed(args.out, args.seed,
                            {"train": args.printed_per_digit, "test": args.printed_test_per_digit}, fonts)
    print(f"fonts: {len(fonts)} ({', '.join(f.stem for f in fonts)})")
    for split in ("train", "test"):
        print(f"{split}: {hand[split]} handwritten, {printed[split]} printed")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
