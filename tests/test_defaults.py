"""One rule for the default model (translate, eval, info, serve): the newest finished run under ./runs, else
the newest unfinished one, then a shipped model, said in one `Model:` line. Outputs keep their input's name and
format (--ext picks one; alpha a format cannot hold goes to PNG), and the default output folder is the same on
every run, refusing existing files unless --overwrite, as the README says."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.JpegImagePlugin import get_sampling

from imxlate.models import find_model

from conftest import cli, interrupt_at, write_images

REPO = Path(__file__).resolve().parents[1]
TINY = ["--domains", "photos", "vangogh", "--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8",
        "--n-blocks", "1", "--workers", "0", "--quiet"]
FINISHED, UNFINISHED = Path("runs/finished/model.safetensors"), Path("runs/unfinished/model.safetensors")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with photos/, vangogh/, input/ and two runs: runs/finished (2 of 2 steps) and runs/unfinished,
    whose model file is newer but whose run was resumed to 4 steps and stopped at 3."""
    root = tmp_path_factory.mktemp("defaults")
    write_images(root / "photos", 4, seed=1, tint=(200, 60, 60))
    write_images(root / "vangogh", 4, seed=2, tint=(60, 60, 200))
    write_images(root / "input", 2, sizes=((37, 29),), seed=3)  # one size: eval's paired scores stack them
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cli("train", *TINY, "--steps", "2", "--out", "runs/finished")
        cli("train", *TINY, "--steps", "2", "--out", "runs/unfinished")
        interrupt_at(mp, 3)
        stopped = cli("train", "--resume", "runs/unfinished", "--steps", "4", "--quiet", ok=False)
        assert stopped.exit_code == 130, stopped.output
    hour_ago = (root / UNFINISHED).stat().st_mtime - 3600
    os.utime(root / FINISHED, (hour_ago, hour_ago))  # the finished run's model is the older one
    return root


def model_line(result) -> str:
    return next(line for line in result.stderr.splitlines() if line.startswith("Model:"))


def test_translate_eval_info_and_serve_choose_the_finished_run(work, monkeypatch):
    monkeypatch.chdir(work)
    translated = cli("translate", "input", "--to", "vangogh", "--out", "out", "--quiet")
    assert model_line(translated).startswith(f"Model: {FINISHED} (newest finished run under ./runs;")
    scored = cli("eval", "--source", "input", "--to", "vangogh", "--paired-target", "input", "--json")
    assert model_line(scored).startswith(f"Model: {FINISHED} (newest finished run under ./runs;")
    described = cli("info")
    assert model_line(described).startswith(f"Model: {FINISHED} (newest finished run under ./runs;")
    assert str(FINISHED) in described.stdout and "photos, vangogh" in described.stdout
    assert find_model(None) == (FINISHED, "newest finished run under ./runs")  # what serve calls


def test_with_no_finished_run_the_newest_unfinished_one_is_used_and_said(work, tmp_path, monkeypatch):
    shutil.copytree(work / "runs" / "unfinished", tmp_path / "runs" / "unfinished")
    monkeypatch.chdir(tmp_path)
    path, how = find_model(None, "vangogh")
    assert path == UNFINISHED and "unfinished (at step 3 of 4)" in how and "none has finished" in how
    line = model_line(cli("info"))
    assert str(UNFINISHED) in line and "unfinished" in line


def test_a_shipped_model_when_no_run_knows_the_domain(work, monkeypatch):
    monkeypatch.chdir(work)
    path, how = find_model(None, "noto")
    assert "emoji" in path.name and how.startswith("shipped")


@pytest.fixture
def mixed(tmp_path):
    """in/: an RGB JPEG, an RGB PNG and an RGBA PNG of smooth content."""
    rng = np.random.default_rng(0)
    smooth = lambda w, h: Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8)).resize((w, h))  # noqa: E731
    (tmp_path / "in").mkdir()
    smooth(40, 32).save(tmp_path / "in" / "photo.jpg", quality=90)
    smooth(36, 36).save(tmp_path / "in" / "plain.png")
    rgba = smooth(30, 34).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((30, 34)))
    rgba.save(tmp_path / "in" / "cutout.png")
    return tmp_path


def translate(work, *args, ok=True):
    return cli("translate", *args, "--to", "vangogh", "--model", work / FINISHED, "--quiet", ok=ok)


def test_outputs_keep_their_input_format_and_alpha(work, mixed):
    translate(work, mixed / "in", "--out", mixed / "kept")
    kept = mixed / "kept"
    assert sorted(p.name for p in kept.iterdir()) == ["cutout.png", "photo.jpg", "plain.png"]
    photo = Image.open(kept / "photo.jpg")
    assert photo.format == "JPEG" and photo.size == (40, 32) and get_sampling(photo) == 0  # 4:4:4, no subsampling
    assert Image.open(kept / "plain.png").format == "PNG"
    cutout = Image.open(kept / "cutout.png")
    assert cutout.format == "PNG" and cutout.mode == "RGBA"
    assert np.array_equal(np.asarray(cutout.getchannel("A")), np.asarray(Image.open(mixed / "in" / "cutout.png").getchannel("A")))

    translate(work, mixed / "in", "--out", mixed / "png", "--ext", "png")
    assert sorted(p.name for p in (mixed / "png").iterdir()) == ["cutout.png", "photo.png", "plain.png"]
    assert all(Image.open(p).format == "PNG" for p in (mixed / "png").iterdir())
    lossless = Image.open(mixed / "png" / "photo.png")
    default = io.BytesIO()
    lossless.save(default, format="JPEG")  # Pillow's default: quality 75, 4:2:0 chroma subsampling
    error = lambda img: np.abs(np.asarray(img, dtype=float) - np.asarray(lossless, dtype=float)).mean()  # noqa: E731
    assert error(photo) < error(Image.open(default)) / 2  # quality 95, 4:4:4: far closer to the lossless file

    translate(work, mixed / "in", "--out", mixed / "jpg", "--ext", "jpg")  # JPEG cannot hold alpha: PNG for it
    assert sorted(p.name for p in (mixed / "jpg").iterdir()) == ["cutout.png", "photo.jpg", "plain.jpg"]
    assert Image.open(mixed / "jpg" / "cutout.png").mode == "RGBA"


def test_a_gif_becomes_png_and_an_unknown_ext_is_refused(work, mixed):
    Image.open(mixed / "in" / "plain.png").convert("P").save(mixed / "anim.gif")
    translate(work, mixed / "anim.gif", "--out", mixed / "gif")
    assert [p.name for p in (mixed / "gif").iterdir()] == ["anim.png"]
    refused = translate(work, mixed / "in", "--out", mixed / "x", "--ext", "gif", ok=False)
    assert refused.exit_code == 2 and "--ext gif" in refused.stderr and "png, jpg" in refused.stderr
    assert not (mixed / "x").exists()


def test_rerunning_into_the_default_folder_does_what_the_readme_says(work, mixed, monkeypatch):
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "`<to>-translated/` in the current folder, the same on every run" in readme
    assert "never replaced unless `--overwrite`" in readme
    monkeypatch.chdir(mixed)
    translate(work, "in")
    out = mixed / "vangogh-translated"
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(first) == ["cutout.png", "photo.jpg", "plain.png"]
    again = translate(work, "in", ok=False)
    assert again.exit_code == 2
    assert "3 output file(s) already exist in vangogh-translated/" in again.stderr and "--overwrite" in again.stderr
    assert sorted(p.name for p in mixed.iterdir()) == ["in", "vangogh-translated"]  # no numbered folder
    translate(work, "in", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # the same translation, replaced
