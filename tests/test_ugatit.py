"""U-GAT-IT and U-GAT-IT-light: the paper's settings, AdaLIN and CAM on direct cases, rho clipping, the CLI
(train, exact resume, model file, translate, export), and the refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import imxlate
from imxlate import store
from imxlate.config import TrainConfig
from imxlate.families import load_model
from imxlate.families.ugatit import UGATIT, UGATITConfig
from imxlate.nets.common import param_count
from imxlate.nets.ugatit import ILN, CAM, AdaLIN, UGATITDiscriminator, UGATITGenerator, layer_instance_norm

from conftest import cli, interrupt_at

TINY = ["--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8", "--n-blocks", "1", "--quiet"]


def tiny_family(light: bool, **options) -> UGATIT:
    cfg = UGATITConfig(ngf=8, ndf=8, n_blocks=1, light=light, **options)
    cfg = UGATIT.resolve_config(cfg, TrainConfig(crop_size=32))
    torch.manual_seed(0)
    return UGATIT(cfg, ["a", "b"], 32)


def test_the_papers_settings():
    c = UGATITConfig()
    assert (c.ngf, c.ndf, c.n_blocks, c.light) == (64, 64, 4, False)
    assert (c.lambda_gan, c.lambda_cycle, c.lambda_identity, c.lambda_cam) == (1.0, 10.0, 10.0, 1000.0)
    assert (c.lr, c.beta1, c.beta2, c.weight_decay) == (1e-4, 0.5, 0.999, 1e-4)
    d = UGATIT.train_defaults
    assert (d["batch_size"], d["load_size"], d["crop_size"]) == (1, 286, 256)
    assert (d["epochs"], d["epochs_decay"]) == (147, 147)  # 1e6 iterations, decay from halfway, at 3,400 images
    resolved = UGATIT.resolve_config(UGATITConfig(), TrainConfig(crop_size=256))
    assert (resolved.n_layers_global, resolved.n_layers_local) == (7, 5)  # n_dis 6
    small = UGATIT.resolve_config(UGATITConfig(), TrainConfig(crop_size=64))
    assert (small.n_layers_global, small.n_layers_local) == (6, 5)  # 7 layers need 96 px
    assert torch.equal(AdaLIN(4).rho, torch.full((4,), 0.9))
    iln = ILN(4)
    assert (iln.rho.tolist(), iln.gamma.tolist(), iln.beta.tolist()) == ([0.0] * 4, [1.0] * 4, [0.0] * 4)
    family = tiny_family(light=False)
    family.setup_training()
    for opt in family.opts.values():
        group = opt.param_groups[0]
        assert type(opt) is torch.optim.Adam
        assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-4, (0.5, 0.999), 1e-4)
    assert sum(p.numel() for p in family.opts["G"].param_groups[0]["params"]) == sum(
        param_count(family.nets[k]) for k in ("G_ab", "G_ba"))
    assert len(family.opts["D"].param_groups[0]["params"]) == 4 * len(list(family.nets["D_a_local"].parameters()))


def test_discriminators_of_the_paper():
    with torch.device("meta"):  # the 256 px global discriminator is large; shapes need no values
        glob, local = UGATITDiscriminator(64, 7), UGATITDiscriminator(64, 5)
    assert glob.cam.conv1x1.out_channels == 2048 and local.cam.conv1x1.out_channels == 512
    convs = [m for m in glob.modules() if isinstance(m, torch.nn.Conv2d) and m is not glob.cam.conv1x1]
    assert len(convs) == 7 and [m.stride[0] for m in convs] == [2] * 5 + [1, 1]
    assert all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)  # spectral norm
    assert torch.nn.utils.parametrize.is_parametrized(glob.cam.gap_fc, "weight")
    small_g, small_l = UGATITDiscriminator(2, 7), UGATITDiscriminator(2, 5)
    x = torch.zeros(1, 3, 256, 256)
    logits, cam_logit, heatmap = small_g(x)
    assert logits.shape == (1, 1, 6, 6) and cam_logit.shape == (1, 2) and heatmap.shape == (1, 1, 7, 7)
    assert small_l(x)[0].shape == (1, 1, 30, 30)
    assert small_g(torch.zeros(1, 3, 96, 96))[0].shape == (1, 1, 1, 1)  # the least input of 7 layers
    assert [UGATITDiscriminator.most_layers(s) for s in (8, 16, 32, 64, 96, 256)] == [3, 4, 5, 6, 7, 8]


def test_layer_instance_norm_mixes_instance_and_layer_norm():
    x = torch.randn(2, 3, 5, 4)
    ones, zeros = torch.ones(3), torch.zeros(3)
    torch.testing.assert_close(layer_instance_norm(x, ones, ones, zeros), F.instance_norm(x, eps=1e-5))
    torch.testing.assert_close(layer_instance_norm(x, zeros, ones, zeros), F.layer_norm(x, x.shape[1:], eps=1e-5))
    rho = torch.tensor([0.0, 0.5, 1.0])
    mixed = layer_instance_norm(x, rho, ones, zeros)
    half = 0.5 * (F.instance_norm(x, eps=1e-5) + F.layer_norm(x, x.shape[1:], eps=1e-5))
    torch.testing.assert_close(mixed[:, 1], half[:, 1])
    gamma, beta = torch.randn(2, 3), torch.randn(2, 3)  # AdaLIN: one gamma and beta per image
    out = layer_instance_norm(x, rho, gamma, beta)
    torch.testing.assert_close(out, mixed * gamma[:, :, None, None] + beta[:, :, None, None])


def test_cam_logits_and_heatmap():
    torch.manual_seed(0)
    cam = CAM(4, torch.nn.ReLU())
    x = torch.randn(2, 4, 3, 5)
    attended, logit, heatmap = cam(x)
    w_avg, w_max = cam.gap_fc.weight[0], cam.gmp_fc.weight[0]
    torch.testing.assert_close(logit[:, 0], (x.mean((2, 3)) * w_avg).sum(1))
    torch.testing.assert_close(logit[:, 1], (x.amax((2, 3)) * w_max).sum(1))
    weighted = torch.cat([x * w_avg[:, None, None], x * w_max[:, None, None]], 1)
    torch.testing.assert_close(attended, torch.relu(cam.conv1x1(weighted)))
    torch.testing.assert_close(heatmap, attended.sum(1, keepdim=True))


def test_light_is_much_smaller_and_takes_any_size():
    with torch.device("meta"):
        full, light = UGATITGenerator(64, 4, 256), UGATITGenerator(64, 4, 256, light=True)
    # the only difference: the MLP's first layer reads C x 64 x 64 values instead of C channel means (C = 256)
    assert param_count(full) - param_count(light) == 256 * 256 * (64 * 64 - 1)
    assert (param_count(light), param_count(full)) == (10_591_936, 278_961_856)  # per generator
    torch.manual_seed(0)
    g = UGATITGenerator(8, 1, 32, light=True)
    y, cam_logit, heatmap = g(torch.rand(2, 3, 20, 28) * 2 - 1)
    assert y.shape == (2, 3, 20, 28) and cam_logit.shape == (2, 2) and heatmap.shape == (2, 1, 5, 7)
    assert y.abs().max() <= 1
    with pytest.raises(ValueError, match="32x32"):
        UGATITGenerator(8, 1, 32)(torch.zeros(1, 3, 20, 28))


@pytest.mark.parametrize("light", [False, True])
def test_rho_stays_within_0_and_1(light):
    family = tiny_family(light, lr=1.0)  # Adam's first steps move every rho by about 1: from 0.9 out of [0, 1]
    family.setup_training()
    g = torch.Generator().manual_seed(0)
    batch = {"images": {d: torch.rand(1, 3, 32, 32, generator=g) * 2 - 1 for d in "ab"}}
    for step in range(2):
        family.train_step(batch, step)
    norms = [m for k in family.keep for m in family.nets[k].modules() if isinstance(m, (AdaLIN, ILN))]
    rhos = torch.cat([m.rho.detach() for m in norms])
    assert rhos.numel() == 2 * (2 * 32 + 16 + 8) and rhos.min() >= 0 and rhos.max() <= 1
    assert ((rhos == 0) | (rhos == 1)).float().mean() > 0.5  # clipped at the bounds, not left at 0.9 +- 1


@pytest.mark.parametrize("light", [False, True])
def test_train_resume_translate_export_through_the_cli(two_domains, monkeypatch, light):
    monkeypatch.chdir(two_domains)
    common = ["--domains", "photos", "vangogh", "--model", "ugatit", "--workers", "0", "--sample-every", "2", *TINY,
              *(["--light"] if light else [])]
    cli("train", *common, "--steps", "4", "--out", "straight")
    interrupt_at(monkeypatch, 2)
    assert "interrupted at step 2" in cli("train", *common, "--steps", "4", "--out", "split", ok=False).output
    cli("train", "--resume", "split", "--quiet")
    a = store.load_checkpoint("straight/checkpoint.safetensors")["family_state"]
    b = store.load_checkpoint("split/checkpoint.safetensors")["family_state"]
    assert set(a["nets"]) == {"G_ab", "G_ba", "D_a_global", "D_a_local", "D_b_global", "D_b_local"}
    for net, sd in a["nets"].items():
        for k, v in sd.items():
            assert torch.equal(v, b["nets"][net][k]), (net, k)
    for name in ("G", "D"):
        assert all(torch.equal(s["exp_avg"], t["exp_avg"]) for s, t in
                   zip(a["opts"][name]["state"].values(), b["opts"][name]["state"].values()))
    log = [json.loads(line) for line in Path("straight/log.jsonl").read_text().splitlines()]
    assert {"cam_ab", "cam_ba", "cycle_a", "idt_b", "D_a", "D_b"} <= set(log[-1])
    assert sorted(p.name for p in Path("straight/samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]

    model_file = Path("straight/model.safetensors")
    tensors, _ = store.read_file(model_file)
    assert {k.split(".")[0] for k in tensors} == {"G_ab", "G_ba"}
    meta = store.read_metadata(model_file)
    assert meta["family"] == "ugatit" and meta["image_size"] == 32
    assert (meta["config"]["light"], meta["config"]["n_layers_global"]) == (light, 5)
    family = load_model(model_file)
    assert family.fixed_size is not light
    cli("translate", "input", "--to", "vangogh", "--model", model_file, "--out", "out", "--quiet")
    for src in Path("input").iterdir():  # 37x29, 64x48, 33x51: the full model goes through 32x32 and back
        assert Image.open(Path("out") / src.name).size == Image.open(src).size
    tr = imxlate.load(model_file)
    x = torch.rand(2, 3, 20, 28) * 2 - 1
    y = tr.translate(x, to="photos")
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, 20, 28)
    if light:  # no resizing: the same as the generator itself
        torch.testing.assert_close(y, family.nets["G_ba"](x)[0])
    export = cli("export", model_file, "--to", "vangogh", "--format", "onnx", "--out", "g.onnx", ok=False)
    if light:
        assert export.exit_code == 0, export.output
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession("g.onnx", providers=["CPUExecutionProvider"])
        x01 = torch.rand(1, 3, 30, 42)
        got = torch.from_numpy(session.run(None, {"image": x01.numpy()})[0])
        own = ((tr.translate(x01 * 2 - 1, to="vangogh") + 1) / 2).clamp(0, 1)
        torch.testing.assert_close(got, own, atol=1e-4, rtol=1e-4)
    else:
        assert export.exit_code == 2 and "fixed size" in export.output and "Traceback" not in export.output
        assert len(export.output.strip().splitlines()) == 1 and not Path("g.onnx").exists()


@pytest.mark.parametrize("options, expected", [
    (["--crop-size", "30", "--load-size", "36"], "--crop-size 30: U-GAT-IT takes multiples of 4"),
    (["--n-layers-global", "7"], "--crop-size 32: a discriminator of --n-layers-global 7 needs 96 px"),
    (["--n-layers-local", "2"], "--n-layers-local 2: give 3 or more"),
    (["--preprocess", "none"], "--preprocess none keeps each image's size"),
])
def test_refusals_are_one_line(two_domains, monkeypatch, options, expected):
    monkeypatch.chdir(two_domains)
    r = cli("train", "--domains", "photos", "vangogh", "--model", "ugatit", *TINY, *options, ok=False)
    assert r.exit_code == 2 and expected in " ".join(r.output.split()) and "Traceback" not in r.output
    assert not Path("runs").exists()
