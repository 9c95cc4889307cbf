"""The README's first command: the shipped emoji model translates the shipped examples, nothing else needed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import imxlate
from imxlate.models import shipped_models

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "emoji"


def test_readme_first_command(tmp_path):
    readme = (REPO / "README.md").read_text()
    assert "imxlate translate examples/emoji --to noto --out translated/" in readme
    exe = Path(sys.executable).parent / "imxlate"
    r = subprocess.run([str(exe), "translate", str(EXAMPLES), "--to", "noto", "--out", "translated/"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "shipped" in r.stderr
    inputs = sorted(p for p in EXAMPLES.rglob("*.png"))
    assert len(inputs) >= 10
    for src in inputs:
        out = tmp_path / "translated" / src.relative_to(EXAMPLES)
        assert out.is_file(), out
        a, b = Image.open(src), Image.open(out)
        assert a.size == b.size
        diff = np.abs(np.asarray(a.convert("RGB"), dtype=np.int16) - np.asarray(b.convert("RGB"), dtype=np.int16))
        assert diff.mean() > 1.0  # the model changed the picture


def test_shipped_model_is_found_by_domain_and_described(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./runs here: the shipped model is the one that knows the domain
    assert shipped_models(), "no model under weights/"
    model = imxlate.load(to="twemoji")
    assert set(model.domains) == {"twemoji", "noto"}
    assert model.meta["family"] == "cyclegan" and model.meta["training"]["steps"] > 0
    img = Image.open(sorted(EXAMPLES.rglob("*.png"))[0])
    assert model.translate(img, to="noto").size == img.size
    exe = Path(sys.executable).parent / "imxlate"
    info = subprocess.run([str(exe), "info"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "twemoji" in info.stdout and "cyclegan" in info.stdout


def test_shipped_glyph_model_translates_its_examples(tmp_path):
    """The second shipped model (Noto Sans CJK -> Noto Serif CJK), found by its target domain, under 10 MB."""
    glyphs = REPO / "examples" / "glyphs" / "inputs"
    shipped = [p for p in shipped_models() if p.name == "glyphs-sans-serif.safetensors"]
    assert shipped and shipped[0].stat().st_size < 10 * 2**20
    exe = Path(sys.executable).parent / "imxlate"
    r = subprocess.run([str(exe), "translate", str(glyphs), "--to", "serif", "--out", "serif/"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "glyphs-sans-serif" in r.stderr
    inputs = sorted(glyphs.glob("*.png"))
    assert len(inputs) == 12
    for src in inputs:
        a = np.asarray(Image.open(src).convert("L"), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "serif" / src.name).convert("L"), dtype=np.int16)
        assert a.shape == b.shape and np.abs(a - b).mean() > 1.0  # changed
        assert (b < 128).mean() > 0.02  # and still has ink: not a blank page
