"""Build a labelled multi-domain digit set offline: the ten digits drawn in up to five styles, each a domain.

Usage: python examples/stargan_domains/prepare.py OUT [--domains 4] [--seed 0] [--train-per-digit 150]
                                                  [--val-per-digit 10] [--test-per-digit 20]

A style is a family of fonts and a pair of colours (ink on paper); a digit is drawn as in examples/digits
(printed_image: a random font of the style, outline width, rotation, height and offset), then coloured. Writes
32x32 RGB PNGs as OUT/{train,val,test}/<domain>/<digit>/NNNN.png; every (domain, split, digit) draws from its
own random stream of --seed, so the splits hold different drawings and reruns give identical bytes.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def _load_digits_prepare():
    """examples/digits/prepare.py as a module (the digit drawing and the font folders live there)."""
    spec = importlib.util.spec_from_file_location("digits_prepare", HERE.parent / "digits" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


digits = _load_digits_prepare()

# domain -> (font files under the standard font folders, ink RGB, paper RGB). The order is fixed: --domains N
# takes the first N, and each domain's random streams depend on its place here, not on N.
STYLES = {
    "serif": (["dejavu/DejaVuSerif.ttf", "dejavu/DejaVuSerif-Bold.ttf", "liberation/LiberationSerif-Regular.ttf",
               "liberation/LiberationSerif-Bold.ttf", "freefont/FreeSerif.ttf", "freefont/FreeSerifBold.ttf"],
              (0, 0, 0), (255, 255, 255)),
    "sans-inverse": (["dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf", "liberation/LiberationSans-Regular.ttf",
                      "liberation/LiberationSans-Bold.ttf", "freefont/FreeSans.ttf", "freefont/FreeSansBold.ttf"],
                     (255, 255, 255), (0, 0, 0)),
    "mono-red": (["dejavu/DejaVuSansMono.ttf", "dejavu/DejaVuSansMono-Bold.ttf",
                  "liberation/LiberationMono-Regular.ttf", "liberation/LiberationMono-Bold.ttf",
                  "freefont/FreeMono.ttf", "freefont/FreeMonoBold.ttf"],
                 (200, 20, 20), (255, 255, 255)),
    "italic-blue": (["dejavu/DejaVuSerif-Italic.ttf", "dejavu/DejaVuSans-Oblique.ttf",
                     "liberation/LiberationSerif-Italic.ttf", "liberation/LiberationSans-Italic.ttf",
                     "freefont/FreeSerifItalic.ttf", "freefont/FreeSansOblique.ttf"],
                    (20, 40, 180), (250, 240, 190)),
    "narrow-green": (["dejavu/DejaVuSansCondensed.ttf", "dejavu/DejaVuSansCondensed-Bold.ttf",
                      "liberation/LiberationSansNarrow-Regular.ttf", "liberation/LiberationSansNarrow-Bold.ttf"],
                     (0, 110, 40), (225, 225, 225)),
}
SPLITS = ("train", "val", "test")


def style_fonts(domain: str) -> list[Path]:
    """The font files of a style found on this system, in a fixed order; exits with an install hint if none."""
    names = STYLES[domain][0]
    found = [d / name for name in names for d in digits.FONT_DIRS if (d / name).is_file()]
    if not found:
        sys.exit(f"error: no font of style '{domain}' found ({', '.join(Path(n).name for n in names)}); install "
                 "them with `sudo apt-get install fonts-dejavu-core fonts-dejavu-extra fonts-liberation "
                 "fonts-freefont-ttf`")
    return found


def coloured(grey: Image.Image, ink: tuple, paper: tuple) -> Image.Image:
    """Dark-on-white drawing (RGB, grey) -> the same shapes in `ink` on `paper` (antialiased edges blend)."""
    t = np.asarray(grey.convert("L"), dtype=np.float64)[..., None] / 255  # 0 ink .. 1 paper
    rgb = np.asarray(ink, dtype=np.float64) * (1 - t) + np.asarray(paper, dtype=np.float64) * t
    return Image.fromarray(np.round(rgb).astype(np.uint8))


def write_domain(out: Path, domain: str, seed: int, per_digit: dict[str, int]) -> None:
    """Draw per_digit[split] images of each digit in `domain`'s style into OUT/<split>/<domain>/<digit>/."""
    fonts, ink, paper = style_fonts(domain), *STYLES[domain][1:]
    for split, n in per_digit.items():
        for digit in range(10):
            rng = np.random.default_rng([seed, list(STYLES).index(domain), SPLITS.index(split), digit])
            folder = out / split / domain / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                grey = digits.printed_image(digit, fonts[rng.integers(len(fonts))], rng)
                coloured(grey, ink, paper).save(folder / f"{k:04d}.png")


def main(argv: list[str] | None = None) -> None:
    """Parse options, write every split of the first --domains styles, print counts and time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (train/, val/ and test/ are created inside)")
    parser.add_argument("--domains", type=int, default=4, choices=range(2, len(STYLES) + 1),
                        help=f"how many styles, taken in this order: {', '.join(STYLES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-digit", type=int, default=150)
    parser.add_argument("--val-per-digit", type=int, default=10)
    parser.add_argument("--test-per-digit", type=int, default=20)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT/train, val and test")
    args = parser.parse_args(argv)

    existing = [args.out / s for s in SPLITS if (args.out / s).exists()]
    if existing and not args.overwrite:
        sys.exit(f"error: {existing[0]} already exists; pass --overwrite to replace it or choose another OUT")
    for folder in existing:
        shutil.rmtree(folder)
    per_digit = {"train": args.train_per_digit, "val": args.val_per_digit, "test": args.test_per_digit}
    start = time.perf_counter()
    for domain in list(STYLES)[:args.domains]:
        write_domain(args.out, domain, args.seed, per_digit)
        print(f"{domain}: fonts {', '.join(f.stem for f in style_fonts(domain))}; "
              + ", ".join(f"{10 * n} {split}" for split, n in per_digit.items()))
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
