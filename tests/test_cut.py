"""CUT and FastCUT: the paper's settings, PatchNCE on a hand-computed case, one-sided model files, the CLI."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image

import imxlate
from imxlate import losses, store
from imxlate.config import TrainConfig
from imxlate.families.cut import CUT, CUTConfig, FastCUT, FastCUTConfig
from imxlate.nets.common import param_count, sequential_features
from imxlate.nets.resnet import ResnetBlock

from conftest import cli, interrupt_at

TINY = ["--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8", "--n-blocks", "2", "--num-patches", "16",
        "--quiet"]


def test_patch_nce_on_a_hand_computed_case():
    # one image, two patches: q0 = (1, 0), q1 = (0, 1); k0 = (1, 0), k1 = (0.6, 0.8); temperature 0.5
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    k = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    row0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.2)))  # q0.k0 = 1, q0.k1 = 0.6
    row1 = -math.log(math.exp(1.6) / (math.exp(0.0) + math.exp(1.6)))  # q1.k0 = 0, q1.k1 = 0.8
    assert losses.patch_nce(q, k, 0.5).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # negatives come from the same image only: a second image does not change the first one's terms
    two = losses.patch_nce(torch.cat([q, q]), torch.cat([k, k.flip(1)]), 0.5)
    assert two.item() != pytest.approx((row0 + row1) / 2)


def test_the_papers_settings():
    c, f = CUTConfig(), FastCUTConfig()
    assert (c.lambda_gan, c.lambda_nce, c.nce_idt, c.flip_equivariance) == (1.0, 1.0, True, False)
    assert (f.lambda_nce, f.nce_idt, f.flip_equivariance) == (10.0, False, True)
    assert (c.num_patches, c.nce_units, c.nce_temperature, c.gan_loss) == (256, 256, 0.07, "lsgan")
    assert (c.lr, c.beta1, c.beta2, c.norm) == (2e-4, 0.5, 0.999, "instance")
    assert CUT.train_defaults["batch_size"] == 1 and (CUT.train_defaults["epochs"], CUT.train_defaults["epochs_decay"]) == (200, 200)
    assert (FastCUT.train_defaults["epochs"], FastCUT.train_defaults["epochs_decay"]) == (150, 50)


def test_nce_layers_and_heads_of_the_default_generator():
    cfg = CUT.resolve_config(CUTConfig(), TrainConfig(crop_size=256))
    assert cfg.n_blocks == 9 and cfg.nce_layers == "0,4,7,10,14"
    family = CUT(cfg, ["a", "b"], 256)
    g = family.nets["G_ab"].model
    # the paper's five: the (padded) input, both downsampling convolutions, residual blocks 1 and 5
    assert isinstance(g[0], nn.ReflectionPad2d)
    assert all(isinstance(g[i], nn.Conv2d) and g[i].stride == (2, 2) for i in (4, 7))
    assert isinstance(g[10], ResnetBlock) and isinstance(g[14], ResnetBlock) and g[14] is list(g.children())[14]
    assert sum(isinstance(m, ResnetBlock) for m in list(g)[10:15]) == 5
    feats = sequential_features(g, torch.zeros(1, 3, 64, 64), [0, 4, 7, 10, 14])
    assert [f.shape[1] for f in feats] == [3, 128, 256, 256, 256]
    # one head per layer: Linear(C, 256) -> ReLU -> Linear(256, 256)
    per_head = [c * 256 + 256 + 256 * 256 + 256 for c in (3, 128, 256, 256, 256)]
    assert [param_count(h) for h in family.nets["F_ab"].heads] == per_head
    assert param_count(family.nets["F_ab"]) == 560_384
    assert set(family.nets) == {"G_ab", "D_b", "F_ab"} and family.keep == ("G_ab",)


def test_flipped_inputs_are_compared_with_their_features_flipped_back():
    torch.manual_seed(0)
    # layer 0 (the padded input) is exactly flip-equivariant; strided convolutions are only nearly so
    cfg = CUT.resolve_config(CUTConfig(ngf=8, n_blocks=2, nce_layers="0"), TrainConfig(crop_size=32))
    family = CUT(cfg, ["a", "b"], 32)
    G, F = family.nets["G_ab"], family.nets["F_ab"]
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        family.rng.manual_seed(3)
        same = family.nce(G, F, x, x, flipped=False)
        family.rng.manual_seed(3)
        flipped = family.nce(G, F, x, torch.flip(x, [3]), flipped=True)
    assert flipped.item() == pytest.approx(same.item(), rel=1e-5)
    with torch.no_grad():  # not flipping back would compare mirrored patches
        family.rng.manual_seed(3)
        assert family.nce(G, F, x, torch.flip(x, [3]), flipped=False).item() > same.item() + 0.1


@pytest.mark.parametrize("model", ["cut", "fastcut"])
def test_train_resume_translate_export_through_the_cli(two_domains, monkeypatch, model):
    monkeypatch.chdir(two_domains)
    common = ["--domains", "photos", "vangogh", "--model", model, "--workers", "0", *TINY]
    cli("train", *common, "--steps", "4", "--out", "straight")
    interrupt_at(monkeypatch, 2)
    assert "interrupted at step 2" in cli("train", *common, "--steps", "4", "--out", "split", ok=False).output
    cli("train", "--resume", "split", "--quiet")
    a = store.load_checkpoint("straight/checkpoint.safetensors")["family_state"]
    b = store.load_checkpoint("split/checkpoint.safetensors")["family_state"]
    for net in ("G_ab", "D_b", "F_ab"):
        for k, v in a["nets"][net].items():
            assert torch.equal(v, b["nets"][net][k]), (net, k)

    model_file = Path("straight/model.safetensors")
    tensors, _ = store.read_file(model_file)
    assert {k.split(".")[0] for k in tensors} == {"G_ab"}  # the generator alone: the file is one-sided
    meta = store.read_metadata(model_file)
    assert meta["family"] == model and meta["directions"] == ["photos->vangogh"]
    cli("translate", "input", "--to", "vangogh", "--model", model_file, "--out", "out", "--quiet")
    for src in Path("input").iterdir():
        assert Image.open(Path("out") / src.name).size == Image.open(src).size
    refused = cli("translate", "input", "--to", "photos", "--model", model_file, "--out", "back", ok=False)
    assert refused.exit_code != 0 and "only translates photos -> vangogh" in refused.output
    assert "Traceback" not in refused.output and not Path("back").exists()
    cli("export", model_file, "--to", "vangogh", "--format", "torchscript", "--out", "g.pt")
    ts = torch.jit.load("g.pt")
    x = torch.rand(1, 3, 36, 30)  # [0, 1] in and out; 30 is padded to 32 and cropped back
    own = ((imxlate.load(model_file, device="cpu").translate(x * 2 - 1, to="vangogh") + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(ts(x), own, atol=1e-5, rtol=1e-5)
    assert "photos->vangogh" in cli("info", model_file).output
    assert "straight" in cli("runs", ".").output


def test_bidirectional_trains_both_directions_into_one_file(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    cli("train", "--domains", "photos", "vangogh", "--model", "cut", "--bidirectional", "--steps", "2", *TINY)
    model_file = Path("runs/photos2vangogh/model.safetensors")
    assert {k.split(".")[0] for k in store.read_file(model_file)[0]} == {"G_ab", "G_ba"}
    assert store.read_metadata(model_file)["directions"] == ["photos->vangogh", "vangogh->photos"]
    cli("translate", "input", "--to", "photos", "--out", "back", "--quiet")
    assert len(list(Path("back").iterdir())) == len(list(Path("input").iterdir()))
