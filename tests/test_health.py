"""Collapse is seen: a run built to collapse (an un-normalised U-Net on black-on-white glyphs) is warned about,
once per sign, on the console and in the log; the same run with instance norm stays silent."""
from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from imxlate import store
from imxlate.cli import app
from imxlate.health import D_NEAR_ZERO, PATIENCE, CollapseWatch

from conftest import interrupt_at

runner = CliRunner()


@pytest.fixture
def glyphs(tmp_path):
    """Black letters on white, 32 px: A-M and a-m in one domain, N-Z and n-z in the other."""
    font = ImageFont.load_default(size=24)
    for dom, chars in (("sans", string.ascii_uppercase[:13] + string.ascii_lowercase[:13]),
                       ("serif", string.ascii_uppercase[13:] + string.ascii_lowercase[13:])):
        (tmp_path / dom).mkdir()
        for ch in chars:
            img = Image.new("RGB", (32, 32), "white")
            ImageDraw.Draw(img).text((16, 16), ch, font=font, fill="black", anchor="mm")
            img.save(tmp_path / dom / f"{ord(ch)}.png")
    return tmp_path


def warnings_of(run: Path) -> list[str]:
    return [e["warning"] for e in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "warning" in e]


@pytest.mark.parametrize("norm, collapses", [("none", True), ("instance", False)])
def test_collapse_is_reported_and_a_healthy_run_is_silent(glyphs, monkeypatch, norm, collapses):
    monkeypatch.chdir(glyphs)
    r = runner.invoke(app, ["train", "--domains", "sans", "serif", "--crop-size", "32", "--load-size", "32",
                            "--generator", "unet", "--ngf", "8", "--ndf", "8", "--norm", norm, "--upsample", "resize",
                            "--spectral-norm", "--lambda-cycle", "20", "--lambda-identity", "1.0", "--batch-size", "4",
                            "--steps", "75", "--workers", "0", "--out", "run", "--quiet"])
    assert r.exit_code == 0, r.output
    said = warnings_of(Path("run"))
    if collapses:
        assert said and all("collapsed" in w and "--norm instance" in w for w in said), said
        assert len(said) == len(set(w.split(" translations")[0] for w in said))  # once per direction
        assert "collapsed" in r.output
    else:
        assert said == [] and "warning" not in r.output


def test_loss_signs_are_said_once_after_a_long_stretch():
    watch = CollapseWatch()
    said = []
    for step in range(1, 2 * PATIENCE + 1):
        # D_a wins outright; D_b is healthy; cycle_a is idt_a times a constant; cycle_b wanders; StarGAN's
        # domain classification and the gradient penalty are near zero in a healthy run
        losses = {"D_a": D_NEAR_ZERO / 2, "D_b": 0.2 + 0.01 * (step % 7), "cycle_a": 2 * (1 + step % 5),
                  "idt_a": 1 + step % 5, "cycle_b": 3 + step % 3, "idt_b": 1 + step % 5,
                  "D_cls": D_NEAR_ZERO / 10, "D_gp": D_NEAR_ZERO / 10}
        new = watch.losses(step, losses)
        said += [(step, m) for m in new]
    assert [s for s, _ in said] == [PATIENCE, PATIENCE]
    assert "D_a" in said[0][1] and "cycle_a and idt_a" in said[1][1]
    assert not any("D_b" in m or "cycle_b" in m or "D_cls" in m or "D_gp" in m for _, m in said)


def test_looking_at_translations_keeps_resume_exact(two_domains, monkeypatch):
    # batch norm and dropout are what switching to eval mode for a look could disturb
    monkeypatch.chdir(two_domains)
    common = ["--domains", "photos", "vangogh", "--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8",
              "--n-blocks", "1", "--norm", "batch", "--dropout", "--batch-size", "2", "--workers", "0", "--quiet"]
    assert runner.invoke(app, ["train", *common, "--steps", "30", "--out", "straight"]).exit_code == 0
    interrupt_at(monkeypatch, 20)
    assert runner.invoke(app, ["train", *common, "--steps", "30", "--out", "split"]).exit_code == 130
    assert runner.invoke(app, ["train", "--resume", "split", "--quiet"]).exit_code == 0
    a = store.load_checkpoint("straight/checkpoint.safetensors")["family_state"]["nets"]
    b = store.load_checkpoint("split/checkpoint.safetensors")["family_state"]["nets"]
    for net in a:
        for k, v in a[net].items():
            assert torch.equal(v, b[net][k]), (net, k)
