"""The StarGAN-across-domains example: prepare.py draws disjoint, deterministic, labelled styles, and run.py's
quick form trains one StarGAN and the pairwise CycleGANs, scores every ordered pair beside the input itself,
writes the table between markers and draws the figure."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from imxlate.data import list_images, load_rgb
from imxlate.classifier import classify, load_classifier

ROOT = Path(__file__).parents[1]
PREPARE, RUN = ROOT / "examples/stargan_domains/prepare.py", ROOT / "examples/stargan_domains/run.py"
DOMAINS = ["serif", "sans-inverse", "mono-red"]
FONTS = [Path("/usr/share/fonts/truetype/dejavu") / f
         for f in ("DejaVuSerif.ttf", "DejaVuSans.ttf", "DejaVuSansMono.ttf")]
pytestmark = pytest.mark.skipif(not all(f.is_file() for f in FONTS), reason="needs fonts-dejavu-core")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def prepare(out: Path) -> None:
    r = subprocess.run([sys.executable, PREPARE, out, "--domains", "3", "--train-per-digit", "2",
                        "--val-per-digit", "1", "--test-per-digit", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in list_images(root)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("styles")
    prepare(out)
    return out


def test_prepare_is_labelled_disjoint_and_deterministic(data, tmp_path):
    for split, n in (("train", 2), ("val", 1), ("test", 2)):
        assert sorted(p.name for p in (data / split).iterdir()) == sorted(DOMAINS)
        for d in DOMAINS:
            assert sorted(p.name for p in (data / split / d).iterdir()) == [str(k) for k in range(10)]
            assert len(list_images(data / split / d)) == 10 * n
    split_bytes = {s: set(digests(data / s).values()) for s in ("train", "val", "test")}
    assert not (split_bytes["train"] & split_bytes["test"]) and not (split_bytes["val"] & split_bytes["test"])
    serif, inverse = load_rgb(data / "test/serif/3/0000.png"), load_rgb(data / "test/sans-inverse/3/0000.png")
    assert serif.size == (32, 32) and serif.getpixel((0, 0)) == (255, 255, 255)  # black on white
    assert inverse.getpixel((0, 0)) == (0, 0, 0)  # white on black
    again = tmp_path / "again"
    prepare(again)
    assert digests(again) == digests(data)


def test_quick_run_scores_every_ordered_pair(data, tmp_path):
    work = tmp_path / "work"
    r = subprocess.run([sys.executable, RUN, "--data", data, "--quick", "--jobs", "2", "--work", work],
                       capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    readme = (work / "README.md").read_text()
    assert "<!-- stargan-domains:start -->" in readme and "<!-- stargan-domains:end -->" in readme
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in readme.splitlines() if line.startswith("|")]
    assert rows[0][:2] == ["source -> target", "class kept: StarGAN"]
    rows = rows[2:]  # below the header and the alignment row
    pairs = [(s, d) for s in DOMAINS for d in DOMAINS if s != d]
    assert [row[0] for row in rows] == [f"{s} -> {d}" for s, d in pairs] + ["**mean over pairs**"]
    assert all(len(row) == 9 and all(0 <= float(c) <= 100 for c in row[1:]) for row in rows)
    # the input's own columns are the judges' readings of the untranslated test digits
    digit = load_classifier(next(work.glob("classifier-digit-*.safetensors")))
    domain = load_classifier(next(work.glob("classifier-domain-*.safetensors")))
    for (s, d), row in zip(pairs, rows):
        paths = list_images(data / "test" / s)
        kept = sum(p == path.parent.name for p, path in zip(classify(digit, paths), paths)) / len(paths)
        hit = sum(p == d for p in classify(domain, paths)) / len(paths)
        assert (row[3], row[6]) == (f"{100 * kept:.1f}", f"{100 * hit:.1f}")
    assert len(list(work.glob("stargan-*/model.safetensors"))) == 1
    assert len(list(work.glob("cyclegan-*/model.safetensors"))) == 3
    with Image.open(work / "stargan_domains.png") as im:  # a header row and two rows (StarGAN, CycleGANs) per domain
        assert im.width > 4 * 4 * 32 and im.height > 2 * len(DOMAINS) * 32
