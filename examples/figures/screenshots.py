"""Regenerate report.png and serve.png (beside this file) in headless Chromium.

    python examples/figures/screenshots.py DATA/glyphs/cjk

DATA/glyphs/cjk: the glyph data of examples/glyphs/prepare.py (folders sans/ and serif/). report.png: the
report.html of a short real run (a small CycleGAN, 300 steps at 64 px on one thread, a few minutes), down
to its recipe (whose data rows name this machine's folders). serve.png: the page of `imxlate serve` with the
shipped glyph model, after uploading one of examples/glyphs/inputs: the input beside its translation.
Needs a Chromium binary; the page is driven over the DevTools protocol by tests/chromium.py.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import imxlate  # noqa: E402
from chromium import Browser, find_chromium, translate_on_page  # noqa: E402
from imxlate.serve import Server  # noqa: E402

FIGURES = Path(__file__).resolve().parent
RUN = ["--domains", "sans", "serif", "--model", "cyclegan", "--ngf", "16", "--ndf", "16", "--n-blocks", "3",
       "--load-size", "64", "--crop-size", "64", "--no-flip", "--seed", "0", "--steps", "300", "--log-every", "5",
       "--sample-every", "100", "--workers", "0", "--quiet"]
MODEL = ROOT / "weights" / "glyphs-sans-serif.safetensors"
UPLOAD = ROOT / "examples" / "glyphs" / "inputs" / "U+4EF9.png"


def save_small(shot: Path, out: Path) -> None:
    """Write a screenshot as an optimised 256-colour PNG (the pages are mostly flat colour)."""
    rgb = Image.open(shot).convert("RGB")
    rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"{out.relative_to(ROOT)}: {Image.open(out).size}, {out.stat().st_size / 1e3:.0f} kB")


def report_shot(browser: Browser, data: Path, work: Path) -> None:
    # run from the work folder with a relative run folder, so the page names runs/sans2serif, not a path here
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if (work / "runs/sans2serif/model.safetensors").is_file():  # a finished run kept by --work: a new report only
        subprocess.run([sys.executable, "-m", "imxlate", "report", "runs/sans2serif"], cwd=work, check=True, env=env)
    else:
        subprocess.run([sys.executable, "-m", "imxlate", "train", "--data", str(data.resolve()), *RUN,
                        "--out", "runs/sans2serif"], cwd=work, check=True, env=env)
    browser.open((work / "runs/sans2serif/report.html").as_uri())
    shown = browser.load_images()
    problems = browser.problems()
    missing = [img["src"] for img in shown if not img["width"]]
    if problems or missing:
        sys.exit(f"error: the report did not show cleanly: {problems} {missing}")
    recipe = browser.evaluate("[...document.querySelectorAll('h2')].find(h => h.textContent === 'Recipe')"
                              ".getBoundingClientRect().top + window.scrollY")
    browser.screenshot(work / "report.png", full_page=True, max_height=int(recipe) - 8)
    save_small(work / "report.png", FIGURES / "report.png")


def serve_shot(browser: Browser, work: Path) -> None:
    server = Server(imxlate.load(MODEL, device="cpu"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        translate_on_page(browser, server.url, UPLOAD, "serif")
        problems = browser.problems()
        if problems:
            sys.exit(f"error: the page did not work cleanly: {problems}")
        bottom = browser.evaluate("document.getElementById('out').getBoundingClientRect().bottom + window.scrollY")
        browser.screenshot(work / "serve.png", full_page=True, max_height=int(bottom) + 40)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
    save_small(work / "serve.png", FIGURES / "serve.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?",
                        help="glyph data with sans/ and serif/ (examples/glyphs/prepare.py)")
    parser.add_argument("--only", choices=["report", "serve"], help="regenerate one of the two")
    parser.add_argument("--work", type=Path, help="keep the run here (default: a temporary folder); a finished "
                        "run found there is not trained again, only its report rewritten")
    args = parser.parse_args()
    if args.only != "serve" and args.data is None:
        parser.error("the report's run needs the glyph data: give DATA/glyphs/cjk (or --only serve)")
    binary = find_chromium()
    if binary is None:
        sys.exit("error: no Chromium found (Debian: apt install chromium; or set $CHROMIUM)")
    with tempfile.TemporaryDirectory() as temp, Browser(binary, width=1200, height=900, timeout=120) as browser:
        work = args.work or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        if args.only != "serve":
            report_shot(browser, args.data, work.resolve())
        if args.only != "report":
            serve_shot(browser, work.resolve())


if __name__ == "__main__":
    main()
