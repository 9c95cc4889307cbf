"""Paired metrics against ground truth (the emoji table's L1, SSIM, top-1, histogram matching) and
`imxlate eval --paired-target`, on real image files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from imxlate.cli import app
from imxlate.errors import ImxlateError
from imxlate.paired import domain_histogram, image_ssim, ink_shape, match_histogram, paired_scores, shape_top1, ssim

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "emoji" / "inputs"


def flat(value: float, size: int = 16) -> torch.Tensor:
    return torch.full((3, size, size), value, dtype=torch.float64)


def test_ssim_of_flat_images_is_the_luminance_term_with_k1():
    # no variance anywhere: SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1), C1 = (0.01)^2 (Wang et al. 2004)
    c1 = 0.01**2
    assert ssim(flat(0.3), flat(0.3)) == pytest.approx(1.0)
    assert ssim(flat(0.2), flat(0.6)) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1))


def test_ssim_ranks_damage_and_is_symmetric():
    img = Image.open(sorted(EXAMPLES.glob("*.png"))[0]).convert("RGB")
    blurs = [image_ssim(img.filter(ImageFilter.GaussianBlur(r)), img) for r in (0.5, 1.5, 3)]
    shifts = [image_ssim(img.rotate(0, translate=(d, 0), fillcolor="white"), img) for d in (1, 4)]
    assert image_ssim(img, img) == pytest.approx(1.0)
    assert 1 > blurs[0] > blurs[1] > blurs[2] > 0 and 1 > shifts[0] > shifts[1] > 0  # more damage, lower SSIM
    assert image_ssim(img, img.filter(ImageFilter.GaussianBlur(1.5))) == pytest.approx(blurs[1])


def test_l1_top1_and_the_histogram_baseline():
    imgs = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("*.png"))[:4]]
    same = paired_scores(imgs, imgs)
    assert same == {"n": 4, "l1": 0.0, "ssim": pytest.approx(1.0), "top1": 1.0}
    swapped = paired_scores(imgs[::-1], imgs)
    assert swapped["top1"] == 0.0 and swapped["l1"] > 0.05
    one_off = paired_scores([Image.new("RGB", imgs[0].size, (255, 255, 250))] + imgs[1:], imgs)
    expected = np.abs(np.asarray(imgs[0], float) - np.array([255, 255, 250])).mean() / 255 / 4
    assert one_off["l1"] == pytest.approx(expected) and one_off["top1"] == 0.75
    with pytest.raises(ImxlateError):
        paired_scores(imgs[:2], imgs)
    # targets of several sizes: L1 and SSIM at each target's size, retrieval at the first one's
    sizes = [im.resize((40 + 8 * i, 40)) for i, im in enumerate(imgs)]
    mixed = paired_scores(sizes, sizes)
    assert mixed == {"n": 4, "l1": 0.0, "ssim": pytest.approx(1.0), "top1": 1.0}
    assert paired_scores(sizes[::-1], sizes)["top1"] == 0.0

    ramp = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (8, 1))[..., None].repeat(3, 2))
    reference = np.zeros((3, 256))
    reference[:, 40] = reference[:, 200] = 1.0  # half the reference's pixels at 40, half at 200
    matched = np.asarray(match_histogram(ramp, reference))
    assert set(np.unique(matched)) == {40, 200} and (matched == 40).mean() == pytest.approx(0.5, abs=0.01)


def glyph(ch: str, size: int, at: tuple[int, int], canvas: int = 64) -> Image.Image:
    """A character drawn black on white with DejaVu Sans (Pillow's bundled font when it is missing)."""
    from PIL import ImageDraw, ImageFont
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        font = ImageFont.load_default(size)
    img = Image.new("RGB", (canvas, canvas), "white")
    ImageDraw.Draw(img).text(at, ch, font=font, fill="black", anchor="mm")
    return img


def test_shape_retrieval_ignores_placement_scale_and_specks():
    chars = "AHKMRSWZ"
    targets = [glyph(c, 40, (32, 32)) for c in chars]
    moved = [glyph(c, 24, (20, 44)) for c in chars]  # smaller and elsewhere: pixel retrieval loses most
    assert shape_top1(moved, targets) == 1.0
    assert paired_scores(moved, targets)["top1"] < 0.5
    speck = glyph("H", 24, (32, 32))
    speck.putpixel((2, 2), (0, 0, 0))  # one stray pixel far from the ink does not stretch the box
    assert float(ink_shape(speck) @ ink_shape(glyph("H", 24, (32, 32)))) > 0.999
    assert float(ink_shape(targets[0]).norm()) == pytest.approx(1.0)
    # a page without ink is a miss, never a lucky first match; a rotated drawing is a different shape
    blank = [Image.new("RGB", (64, 64), "white")] * len(chars)
    assert shape_top1(blank, targets) == 0.0
    assert shape_top1([t.rotate(90, fillcolor="white") for t in targets], targets) < 1.0


def test_domain_histogram_counts_every_pixel(tmp_path):
    for i, colour in enumerate(((10, 20, 30), (10, 99, 30))):
        Image.new("RGB", (4, 5), colour).save(tmp_path / f"{i}.png")
    h = domain_histogram(tmp_path)
    assert h.sum() == 3 * 40 and h[0, 10] == 40 and h[1, 20] == h[1, 99] == 20


def test_eval_paired_target_through_the_cli(tmp_path, monkeypatch):
    """The shipped model translates copies of the example Twemoji; the inputs themselves are the 'truth'."""
    monkeypatch.chdir(tmp_path)  # no ./runs here: the shipped model is the one that knows `noto`
    src, truth = tmp_path / "src", tmp_path / "truth"
    src.mkdir()
    for p in sorted(EXAMPLES.glob("*.png"))[:3]:
        shutil.copy(p, src / p.name)
    shutil.copytree(src, truth)
    shutil.copy(sorted(src.iterdir())[0], truth / "extra.png")  # a target without a namesake input is not scored
    r = CliRunner().invoke(app, ["eval", "--source", str(src), "--to", "noto", "--paired-target", str(truth),
                                 "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{"):r.output.rindex("}") + 1])
    (direction,) = report["directions"]
    paired = direction["paired"]
    assert direction["direction"] == "twemoji->noto" and report["model"].endswith(".safetensors")
    assert paired["n"] == 3 and 0.005 < paired["l1"] < 0.2 and 0.3 < paired["ssim"] < 1.0
    r = CliRunner().invoke(app, ["eval", "--source", str(src), "--to", "noto", "--paired-target", str(tmp_path / "none")])
    assert r.exit_code == 2 and "Traceback" not in r.output and "--paired-target" in r.output

