"""CycleGAN end to end: the paper's architecture, the CLI, exact resume, model files, translate."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import imxlate
from imxlate.families import load_model
from imxlate import store
from imxlate.nets.common import param_count
from imxlate.nets.patchgan import PatchDiscriminator
from imxlate.nets.resnet import ResnetGenerator
from imxlate.nets.unet import UnetGenerator

from conftest import cli, interrupt_at, write_images

TINY = ["--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8", "--n-blocks", "2", "--quiet"]


def test_parameter_counts_match_the_reference():
    assert param_count(ResnetGenerator(ngf=64, n_blocks=9, norm="instance")) == 11_378_179
    assert param_count(ResnetGenerator(ngf=64, n_blocks=6, norm="instance")) == 7_837_699
    assert param_count(PatchDiscriminator(ndf=64, n_layers=3, norm="instance")) == 2_764_737


def test_reference_key_layout_and_shapes():
    g = ResnetGenerator(ngf=64, n_blocks=9)
    keys = list(g.state_dict())
    assert keys[0] == "model.1.weight" and keys[-1] == "model.26.bias"
    assert "model.10.conv_block.5.weight" in keys  # without dropout
    assert "model.10.conv_block.6.weight" in ResnetGenerator(n_blocks=9, dropout=True).state_dict()
    assert g(torch.zeros(1, 3, 64, 48)).shape == (1, 3, 64, 48)
    assert PatchDiscriminator()(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)  # 70x70 patches


def test_unet_matches_the_pix2pix_reference():
    # the reference prints 54.408 M (unet_256) and 29.238 M (6 levels) for 1-channel in and out, batch norm
    assert param_count(UnetGenerator(1, 1, ngf=64, n_downs=8, norm="batch")) == 54_407_809
    assert param_count(UnetGenerator(1, 1, ngf=64, n_downs=6, norm="batch")) == 29_237_889
    keys = list(UnetGenerator(ngf=8, n_downs=5, norm="batch").state_dict())
    assert keys[0] == "model.model.0.weight" and keys[-1] == "model.model.3.bias"  # outer down, outer up
    assert "model.model.1.model.2.running_mean" in keys  # nested blocks as in UnetSkipConnectionBlock
    dropped = UnetGenerator(ngf=8, n_downs=7, norm="batch", dropout=True)
    assert sum(isinstance(m, torch.nn.Dropout) for m in dropped.modules()) == 2  # the 8 ngf levels only
    for upsample in ("transpose", "resize"):
        g = UnetGenerator(ngf=8, n_downs=5, norm="none", upsample=upsample)
        assert g(torch.zeros(2, 3, 64, 32)).shape == (2, 3, 64, 32)


def test_unet_generator_trains_and_translates_any_size(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    unet = ["--generator", "unet", "--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8", "--quiet"]
    bad = cli("train", "--data", ".", "--domains", "photos", "vangogh", "--steps", "2", *unet, "--n-downs", "6",
              ok=False)
    assert bad.exit_code != 0 and "--n-downs" in bad.output and "Traceback" not in bad.output
    mixed = cli("train", "--data", ".", "--domains", "photos", "vangogh", "--steps", "2", *unet, "--n-blocks", "2",
                ok=False)
    assert mixed.exit_code != 0 and "--n-blocks" in mixed.output and "Traceback" not in mixed.output
    assert not Path("runs").exists()
    cli("train", "--data", ".", "--domains", "photos", "vangogh", "--steps", "2", *unet)
    model = Path("runs/photos2vangogh/model.safetensors")
    meta = store.read_metadata(model)
    assert meta["config"]["generator"] == "unet" and meta["config"]["n_downs"] == 5  # 32 px: 1x1 bottleneck
    assert meta["config"]["n_blocks"] is None  # a ResNet setting, not recorded for a U-Net
    cli("translate", "input", "--to", "vangogh", "--model", model, "--out", "out", "--quiet")
    for src in Path("input").iterdir():  # 37x29 and 33x51 are padded to multiples of 32 and cropped back
        assert Image.open(Path("out") / src.name).size == Image.open(src).size


def test_train_translate_info_through_the_cli(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    cli("train", "--data", ".", "--domains", "photos", "vangogh", "--steps", "3", "--sample-every", "2", *TINY)
    run = Path("runs/photos2vangogh")
    for name in ("checkpoint.safetensors", "model.safetensors", "log.jsonl"):
        assert (run / name).is_file()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000002.png", "step_0000003.png"]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and "cycle_a" in log[-1]

    meta = store.read_metadata(run / "model.safetensors")
    assert meta["family"] == "cyclegan" and meta["domains"] == ["photos", "vangogh"]
    assert meta["config"]["ngf"] == 8 and meta["config"]["n_blocks"] == 2
    assert meta["directions"] == ["photos->vangogh", "vangogh->photos"]
    assert meta["training"]["steps"] == 3 and meta["image_size"] == 32
    assert meta["normalization"]["range"] == [-1, 1]

    # a file and a folder of odd-sized, non-square images keep their sizes
    single = cli("translate", "input/img000.png", "--to", "vangogh", "--model", run / "model.safetensors", "--out", "one")
    assert Image.open("one/img000.png").size == (37, 29), single.output
    cli("translate", "input", "--to", "photos", "--out", "all", "--quiet")
    for src in Path("input").iterdir():
        assert Image.open(Path("all") / src.name).size == Image.open(src).size

    info = cli("info", str(run / "model.safetensors"))
    assert "cyclegan" in info.output and "photos->vangogh" in info.output and "19," not in info.output


def test_model_file_alone_rebuilds_the_networks(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    cli("train", "--domains", "photos", "vangogh", "--steps", "1", *TINY)
    model = Path("runs/photos2vangogh/model.safetensors")
    tensors, _ = store.read_file(model)
    assert {k.split(".")[0] for k in tensors} == {"G_ab", "G_ba"}  # generators only
    umask = os.umask(0)
    os.umask(umask)
    assert model.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    family = load_model(model)
    assert param_count(family.nets["G_ab"]) == param_count(ResnetGenerator(ngf=8, n_blocks=2))
    tr = imxlate.load(model)
    img = Image.new("RGBA", (30, 22), (255, 0, 0, 128))
    out = tr.translate(img, to="vangogh")
    assert out.size == (30, 22) and out.mode == "RGBA" and out.getchannel("A").getextrema() == (128, 128)
    x = torch.rand(2, 3, 20, 28) * 2 - 1
    assert tr.translate(x, to="photos").shape == (2, 3, 20, 28)


@pytest.mark.parametrize("workers, ema", [(0, 0), (1, 0.9)])
def test_resume_is_bit_identical(two_domains, monkeypatch, workers, ema):
    monkeypatch.chdir(two_domains)
    common = ["--domains", "photos", "vangogh", "--workers", workers, "--dropout", "--ema", ema, *TINY]
    cli("train", *common, "--steps", "5", "--out", "straight")
    interrupt_at(monkeypatch, 2)
    assert "interrupted at step 2" in cli("train", *common, "--steps", "5", "--out", "split", ok=False).output
    cli("train", "--resume", "split", "--workers", workers, "--quiet")
    a, b = store.load_checkpoint("straight/checkpoint.safetensors"), store.load_checkpoint("split/checkpoint.safetensors")
    assert a["step"] == b["step"] == 5

    def tensors(x, path=""):
        if isinstance(x, torch.Tensor):
            yield path, x
        elif isinstance(x, dict):
            for k, v in x.items():
                yield from tensors(v, f"{path}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                yield from tensors(v, f"{path}/{i}")

    ta, tb = dict(tensors({"f": a["family_state"], "ema": a["ema"]})), dict(tensors({"f": b["family_state"], "ema": b["ema"]}))
    assert ta.keys() == tb.keys() and len(ta) > 50
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_moving_average_goes_into_the_model_file(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    cli("train", "--domains", "photos", "vangogh", "--steps", "4", "--ema", "0.999", *TINY)
    state = store.load_checkpoint("runs/photos2vangogh/checkpoint.safetensors")
    saved, _ = store.read_file("runs/photos2vangogh/model.safetensors")
    ema, live = state["ema"], state["family_state"]["nets"]
    assert set(ema) == set(saved) and len(ema) > 20
    for k, v in saved.items():  # the file holds the average, which lags the live weights
        assert torch.equal(v, ema[k]), k
    first = "G_ab.model.1.weight"
    live_w = live["G_ab"][first.removeprefix("G_ab.")]
    assert not torch.equal(saved[first], live_w)
    assert store.read_metadata("runs/photos2vangogh/model.safetensors")["training"]["config"]["ema"] == 0.999
    result = cli("train", "--domains", "photos", "vangogh", "--ema", "1.5", *TINY, ok=False)
    assert result.exit_code == 2 and "--ema 1.5" in result.output


def test_cyclegan_writes_averaged_weights_by_default(two_domains, monkeypatch):
    """The default recipe (--ema 0.999 for cyclegan, chosen on the glyph benchmark's validation characters)
    writes the average; --ema 0 and the other families write the last weights."""
    monkeypatch.chdir(two_domains)
    common = ["--domains", "photos", "vangogh", "--steps", "3", *TINY]
    cli("train", *common, "--out", "default")
    cli("train", *common, "--out", "off", "--ema", "0")
    cli("train", *common, "--out", "cut", "--model", "cut")
    ema = {run: store.read_metadata(f"{run}/model.safetensors")["training"]["config"]["ema"] for run in ("default", "off", "cut")}
    assert ema == {"default": 0.999, "off": 0.0, "cut": 0.0}
    averaged, _ = store.read_file("default/model.safetensors")
    last, _ = store.read_file("off/model.safetensors")
    live = store.load_checkpoint("default/checkpoint.safetensors")["family_state"]["nets"]
    assert averaged.keys() == last.keys()
    for k, v in last.items():  # the same seed trains the same weights; only what is written differs
        net, name = k.split(".", 1)
        assert torch.equal(v, live[net][name]), k
    assert any(not torch.equal(averaged[k], last[k]) for k in last)


def test_snapshots_are_model_files_of_their_step(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    cli("train", "--domains", "photos", "vangogh", "--steps", "5", "--snapshot-every", "2", "--ema", "0.9", *TINY)
    snaps = Path("runs/photos2vangogh/snapshots")
    assert sorted(p.name for p in snaps.iterdir()) == ["step_0000002.safetensors", "step_0000004.safetensors"]
    assert store.read_metadata(snaps / "step_0000002.safetensors")["training"]["steps"] == 2
    early, _ = store.read_file(snaps / "step_0000002.safetensors")
    late, _ = store.read_file(snaps / "step_0000004.safetensors")
    final, _ = store.read_file("runs/photos2vangogh/model.safetensors")
    assert early.keys() == final.keys()
    assert not all(torch.equal(early[k], late[k]) for k in early)  # the weights moved between snapshots
    assert not all(torch.equal(late[k], final[k]) for k in late)
    cli("translate", "input/img000.png", "--to", "vangogh", "--model", snaps / "step_0000002.safetensors",
        "--out", "snap")
    assert Image.open("snap/img000.png").size == (37, 29)


def test_image_modes_and_orientation(tmp_path):
    from imxlate.data import load_rgb

    base = Image.new("RGB", (8, 4), (200, 100, 50))
    cases = {
        "p.png": base.convert("P"),
        "l.png": base.convert("L"),
        "la.png": base.convert("LA"),
        "rgba.png": base.convert("RGBA"),
        "cmyk.tif": base.convert("CMYK"),
        "i16.png": Image.fromarray((torch.full((4, 8), 40000, dtype=torch.int32)).numpy().astype("uint16")),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        out = load_rgb(tmp_path / name)
        assert out.mode == "RGB" and out.size == (8, 4), name
    assert load_rgb(tmp_path / "i16.png").getpixel((0, 0)) == (156, 156, 156)  # 40000/65535*255
    assert abs(load_rgb(tmp_path / "cmyk.tif").getpixel((0, 0))[0] - 200) < 3
    rotated = base.copy()
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated.save(tmp_path / "exif.jpg", exif=exif)
    assert load_rgb(tmp_path / "exif.jpg").size == (4, 8)


def test_corrupt_files_are_skipped_and_reported(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    Path("photos/broken.png").write_bytes(b"not an image")
    good = Path("vangogh/img000.png").read_bytes()
    Path("vangogh/truncated.png").write_bytes(good[: len(good) // 2])
    result = cli("train", "--domains", "photos", "vangogh", "--steps", "2", *TINY)
    assert "broken.png" in result.output
    Path("input/bad.jpg").write_bytes(b"\xff\xd8 garbage")
    result = cli("translate", "input", "--to", "vangogh", "--out", "out", ok=False)
    assert result.exit_code == 1 and "bad.jpg" in result.output
    assert len(list(Path("out").iterdir())) == 4


def test_linked_folders_are_followed_once(tmp_path):
    from imxlate.data import list_images
    write_images(tmp_path / "elsewhere", 3)
    write_images(tmp_path / "photos", 2)
    (tmp_path / "photos" / "more").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "photos" / "same").symlink_to(tmp_path / "elsewhere")  # a second link to the same folder
    (tmp_path / "photos" / "loop").symlink_to(tmp_path / "photos")     # a link back up the tree
    (tmp_path / "photos" / "gone.png").symlink_to(tmp_path / "missing.png")
    found = list_images(tmp_path / "photos")
    assert len(found) == 5 and len({p.resolve() for p in found}) == 5


def test_user_errors_are_one_line(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    Path("empty").mkdir()
    r = cli("train", "--domains", "photos", "empty", *TINY, ok=False)
    assert r.exit_code == 2 and "no readable image" in r.output and "Traceback" not in r.output
    assert not Path("runs").exists()
    r = cli("train", "--domains", "photos", "vangogh", "--no-such-option", "3", *TINY, ok=False)
    assert r.exit_code == 2 and "--no-such-option" in r.output
    cli("train", "--domains", "photos", "vangogh", "--steps", "1", *TINY)
    r = cli("translate", "input", "--to", "vangogh", "--out", "input", ok=False)
    assert r.exit_code == 2 and "over input" in r.output
    r = cli("translate", "input", "--to", "photos", "--model", "input/img000.png", ok=False)
    assert r.exit_code == 2 and "not" in r.output


def test_nan_loss_stops_with_a_message(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    # A NaN loss weight is refused up front; one too large for float32 makes the loss overflow while training.
    r = cli("train", "--domains", "photos", "vangogh", "--steps", "3", "--lambda-cycle", "1e39", *TINY, ok=False)
    assert r.exit_code == 2 and ("became inf" in r.output or "became nan" in r.output) and "checkpoint" in r.output
    assert not Path("runs/photos2vangogh/model.safetensors").exists()


def test_ctrl_c_leaves_a_checkpoint_that_resumes(two_domains):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "imxlate", "train", "--domains", "photos", "vangogh", "--steps", "100000",
           "--log-every", "1", "--workers", "0", *TINY]
    proc = subprocess.Popen(cmd, cwd=two_domains, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = two_domains / "runs/photos2vangogh/log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "imxlate train --resume" in output
    state = store.load_checkpoint(two_domains / "runs/photos2vangogh/checkpoint.safetensors")
    step = state["step"]
    assert step >= 2
    resumed = subprocess.run([sys.executable, "-m", "imxlate", "train", "--resume", "runs/photos2vangogh",
                              "--steps", str(step + 1), "--quiet"], cwd=two_domains, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert store.read_metadata(two_domains / "runs/photos2vangogh/model.safetensors")["training"]["steps"] == step + 1


def test_no_pickle_loading_in_the_package():
    """Our own files are safetensors; torch.load appears only where users hand us foreign weight
    files (reference checkpoints, VGG, Inception), and always with weights_only=True."""
    root = Path(imxlate.__file__).parent
    foreign_readers = {"foreign.py", "perceptual.py", "metrics.py", "inception.py"}
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert path.name in foreign_readers and "weights_only=True" in line, (path, line)
