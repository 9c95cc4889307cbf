"""Latent mapping: both stages through the CLI on class folders, exact resume in each stage (the
stage-1 one after a real Ctrl-C), the model file alone, stochastic translation, the noise pairs,
frozen VAEs in stage 2 and the class-map checks."""
from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from imxlate.families import load_model
from imxlate import store
from imxlate.cli import app
from imxlate.data import Domain
from imxlate.errors import ImxlateError
from imxlate.families.latent_mapping import LatentMapping, LatentMappingConfig, pair_matrix, parse_class_map

from conftest import write_images

runner = CliRunner()
TINY = ["--nf", "4", "--z-dim", "4", "--hidden", "8", "--layers", "1"]


def cli(*args, code: int = 0):
    """Run the imxlate CLI in-process; assert its exit status."""
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == code, f"{r.output}\n{r.exception!r}"
    return r


def train(data, out, vae_steps, steps, *extra, code: int = 0):
    """A tiny 32 px latent-mapping run between domains x and y with the map 0 -> 2, 1 -> 3."""
    return cli("train", "--model", "latent-mapping", "--data", data, "--domains", "x", "y", "--out", out,
               "--vae-steps", vae_steps, "--steps", steps, "--class-map", "0:2,1:3", "--batch-size", 4,
               "--workers", 0, "--quiet", "--no-flip", "--log-every", 1, *TINY, *extra, code=code)


def tensors(tree, path="") -> dict[str, torch.Tensor]:
    """Every tensor of a nested checkpoint state, by path."""
    if isinstance(tree, torch.Tensor):
        return {path: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else []
    return {k: v for key, sub in items for k, v in tensors(sub, f"{path}/{key}").items()}


def assert_same_checkpoints(p, q, step):
    a, b = store.load_checkpoint(p / "checkpoint.safetensors"), store.load_checkpoint(q / "checkpoint.safetensors")
    assert a["step"] == b["step"] == step
    ta, tb = tensors(a["family_state"]), tensors(b["family_state"])
    assert ta.keys() == tb.keys() and len(ta) > 20
    assert all(torch.equal(ta[k], tb[k]) for k in ta), [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


@pytest.fixture
def data(tmp_path):
    """Domain x with classes 0, 1 and domain y with classes 2, 3 (5 images each), 32x32, and inputs."""
    for domain, classes in (("x", "01"), ("y", "23")):
        for i, c in enumerate(classes):
            tint = [220 if j == int(c) % 3 else 40 for j in range(3)]
            write_images(tmp_path / domain / c, 5, sizes=((32, 32),), seed=int(c), tint=tint)
    write_images(tmp_path / "input", 2, sizes=((37, 29), (32, 32)), seed=9)
    return tmp_path


def test_two_stages_resume_exactly_in_each_and_translate(data, monkeypatch):
    # 10 images per domain, batch 4: 3 steps per epoch, so both resumes also cross an epoch boundary.
    full = data / "full"
    train(data, full, 3, 3)
    log = (full / "log.jsonl").read_text()
    lines = log.splitlines()  # stage 1 logs the VAE terms, stage 2 the mapping GANs'
    assert len(lines) == 6 and all('"kl_a"' in x for x in lines[:3]) and all('"D_b"' in x for x in lines[3:])

    # Stage 1: a real Ctrl-C after the first step; the checkpoint it writes resumes exactly.
    original = LatentMapping.train_step

    def interrupt_once(self, batch, step):
        losses = original(self, batch, step)
        if step == 0:
            signal.raise_signal(signal.SIGINT)
        return losses

    monkeypatch.setattr(LatentMapping, "train_step", interrupt_once)
    stage1 = data / "stage1"
    r = train(data, stage1, 3, 3, code=2)
    assert "interrupted at step 1" in r.output
    monkeypatch.setattr(LatentMapping, "train_step", original)
    cli("train", "--resume", stage1, "--steps", 3, "--workers", 0, "--quiet")
    assert_same_checkpoints(full, stage1, 6)

    # Stage 2: stop after one mapping step (step 4 of 6), resume with one worker process.
    stage2 = data / "stage2"
    train(data, stage2, 3, 1)
    assert store.load_checkpoint(stage2 / "checkpoint.safetensors")["step"] == 4
    cli("train", "--resume", stage2, "--steps", 3, "--workers", 1, "--quiet")
    assert_same_checkpoints(full, stage2, 6)

    model = stage2 / "model.safetensors"
    fam = load_model(model)  # the model file alone rebuilds both VAEs and both mappers
    assert fam.name == "latent-mapping" and fam.domains == ["x", "y"] and fam.cfg.class_map == "0:2,1:3"
    assert {k.split(".")[0] for k in store.read_file(model)[0]} == {"VAE_a", "VAE_b", "G_ab", "G_ba"}
    info = cli("info", model, "--json").output
    assert '"class_map": "0:2,1:3"' in info and '"vae_steps": 3' in info

    for dst in ("x", "y"):
        outs = [data / f"{dst}_{k}" for k in "abc"]
        for out, seed in zip(outs, (5, 5, 6)):
            cli("translate", data / "input", "--to", dst, "--model", model, "--out", out, "--samples", 3,
                "--seed", seed, "--quiet")
        names = sorted(p.name for p in outs[0].iterdir())
        assert names == [f"img{i:03d}_{k}.png" for i in range(2) for k in range(3)]
        pixels = lambda out, name: np.asarray(Image.open(out / name))  # noqa: E731
        assert Image.open(outs[0] / "img000_0.png").size == (37, 29)  # back to the input's size
        for name in names:  # --seed repeats exactly; another seed differs
            assert np.array_equal(pixels(outs[0], name), pixels(outs[1], name))
        assert any(not np.array_equal(pixels(outs[0], n), pixels(outs[2], n)) for n in names)
        variants = [pixels(outs[0], f"img000_{k}.png") for k in range(3)]  # three different samples
        assert all(not np.array_equal(variants[i], variants[j]) for i, j in ((0, 1), (0, 2), (1, 2)))


def test_class_map_naming_a_missing_class_fails_before_training(data):
    out = data / "bad"
    r = train(data, out, 1, 1, "--class-map", "0:2,1:7", code=2)
    assert r.output.strip().count("\n") == 0
    assert "class '7'" in r.output and "'y'" in r.output
    assert not out.exists()
    r = train(data, out, 1, 1, "--class-map", "0-2", code=2)  # syntax, also before training
    assert "SOURCE:TARGET" in r.output and not out.exists()


def test_class_maps_and_the_unsteered_warning(data, capsys):
    assert parse_class_map(" 0:5, 1:6 ,") == [("0", "5"), ("1", "6")]
    m = pair_matrix("0:a,1:a", ["x", "y"], [["0", "1"], ["a", "b"]])  # several to one
    assert m.tolist() == [[True, False], [True, False]]
    assert pair_matrix("", ["x", "y"], [["0", "1", "2"], ["2", "0"]]).tolist() == [[False, True], [False, False],
                                                                                  [True, False]]
    with pytest.raises(ImxlateError, match="share no class"):
        pair_matrix("", ["x", "y"], [["0"], ["1"]])
    with pytest.raises(ImxlateError, match="no class folders"):
        pair_matrix("0:1", ["x", "y"], [["0"], []])

    write_images(data / "plain", 3, sizes=((32, 32),))
    fam = LatentMapping(LatentMappingConfig(), ["x", "plain"], 32)
    fam.check_data([Domain("x", data / "x"), Domain("plain", data / "plain")])
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "'plain'" in err and "does not steer" in err
    assert pair_matrix("", ["x", "plain"], [["0", "1"], []]).all()


def test_noise_pairs_enter_d_and_stage_2_leaves_the_vaes_alone():
    torch.manual_seed(0)
    cfg = LatentMappingConfig(class_map="0:2,1:3", nf=4, z_dim=4, hidden=8, layers=1, vae_steps=2)
    fam = LatentMapping(cfg, ["x", "y"], 32, {"x": ["0", "1"], "y": ["2", "3"]})
    fam.setup_training()
    images = {"x": torch.rand(4, 3, 32, 32) * 2 - 1, "y": torch.rand(4, 3, 32, 32) * 2 - 1}
    batch = {"images": images, "labels": {"x": torch.tensor([0, 1, 0, 1]), "y": torch.tensor([1, 0, 0, 1])}}
    for step in range(2):
        assert "kl_a" in fam.train_step(batch, step)
    vaes = {f"{name}.{k}": v.clone() for name in ("VAE_a", "VAE_b") for k, v in fam.nets[name].state_dict().items()}
    gens = {k: v.clone() for k, v in fam.nets["G_ab"].state_dict().items()}

    # Same codes, noise and fakes: the discriminator's loss with and without the noise pairs.
    z, real, eps = torch.randn(4, 4), torch.randn(4, 4), torch.randn(4, 4)
    fake = fam.nets["G_ab"](z, eps)
    with_noise = fam.discriminator_loss(fam.nets["D_b"], z, real, fake, eps, noise_pairs=True)
    without = fam.discriminator_loss(fam.nets["D_b"], z, real, fake, eps, noise_pairs=False)
    assert not torch.isclose(with_noise, without)
    moved = fam.discriminator_loss(fam.nets["D_b"], z, real, fake, eps + 1, noise_pairs=True)
    assert not torch.isclose(with_noise, moved)  # the noise pairs' codes reach the loss

    for step in range(2, 5):
        losses = fam.train_step(batch, step)
        assert {"D_a", "D_b", "G_ab", "G_ba"} <= set(losses) and "kl_a" not in losses
    after = {f"{name}.{k}": v for name in ("VAE_a", "VAE_b") for k, v in fam.nets[name].state_dict().items()}
    assert len(vaes) == len(after) == 32 and all(torch.equal(vaes[k], after[k]) for k in vaes)
    assert not all(torch.equal(gens[k], v) for k, v in fam.nets["G_ab"].state_dict().items())
