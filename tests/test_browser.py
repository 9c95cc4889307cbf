"""The report and the try-a-model page in a real browser (headless Chromium over the DevTools protocol):
report.html of a tiny run opens from disk with every plot and sample grid drawn and nothing missing, and
the page of `imxlate serve` takes an image through its file input and shows the model's translation of it,
ready to download. Skipped where no Chromium is installed."""
from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imxlate
from imxlate.serve import Server

from chromium import Browser, find_chromium, translate_on_page
from conftest import cli, write_images

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium binary (Debian: apt install chromium)")

TINY = ["--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8", "--n-blocks", "1", "--workers", "0",
        "--log-every", "1", "--sample-every", "2", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("browser")
    write_images(data / "photos", 4, seed=1, tint=(200, 60, 60))
    write_images(data / "vangogh", 4, seed=2, tint=(60, 60, 200))
    cli("train", "--data", data, "--domains", "photos", "vangogh", *TINY, "--steps", 5, "--out", data / "run")
    return data / "run"


@pytest.fixture(scope="module")
def browser():
    with Browser(CHROMIUM, timeout=90) as b:  # killed with its whole process group, whatever the tests did
        yield b


def test_report_opens_with_its_plots_and_grids(run, browser):
    browser.open((run / "report.html").resolve().as_uri())
    shown = browser.load_images()
    assert browser.problems() == []
    assert shown and all(img["width"] > 0 and img["height"] > 0 for img in shown), shown
    plots = [img for img in shown if img["cls"] == "plot"]
    assert len(plots) == 4 and all(img["src"].startswith("data:image/png;base64,") for img in plots)
    grids = sorted(img["src"] for img in shown if img["cls"] != "plot")
    assert grids == [f"samples/{p.name}" for p in sorted((run / "samples").iterdir())] and len(grids) == 3
    for img in shown:  # the sizes the browser decoded are the files' own
        if img["cls"] != "plot":
            assert (img["width"], img["height"]) == Image.open(run / img["src"]).size
    text = browser.evaluate("document.body.innerText")
    for fact in ("Losses", "Sample grids", "step 4", "Recipe", "photos, vangogh", "5 of 5"):
        assert fact in text, fact


def test_page_translates_an_uploaded_image(run, browser, tmp_path):
    model = imxlate.load(run / "model.safetensors", device="cpu")
    upload = write_images(tmp_path, 1, sizes=((37, 29),), seed=3, exts=(".png",))[0]
    server = Server(model, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        translate_on_page(browser, server.url, upload, "vangogh")
        captions = browser.evaluate("[...document.querySelectorAll('#out figcaption')].map(c => c.textContent)")
        link = browser.evaluate("(a => a && [a.download, a.href.slice(0, 5)])"
                                "(document.querySelector('#out a[download]'))")
        received = browser.fetch_bytes("document.querySelectorAll('#out img')[1].src")
        problems = browser.problems()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
    assert problems == [] and browser.evaluate("document.getElementById('msg').textContent") == ""
    assert captions == ["input: img000.png ", "vangogh download"] and link == ["img000-to-vangogh.png", "blob:"]
    out = Image.open(io.BytesIO(received))
    assert out.format == "PNG" and out.size == (37, 29)
    got = np.asarray(out.convert("RGB"), dtype=np.int16)
    expected = np.asarray(model.translate(Image.open(upload).convert("RGB"), "vangogh"), dtype=np.int16)
    assert np.abs(got - expected).max() <= 1  # the model's translation of the uploaded file
    assert np.abs(got - np.asarray(Image.open(upload).convert("RGB"), dtype=np.int16)).mean() > 5  # not the input
