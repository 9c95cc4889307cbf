"""CycleGAN's generators that move strokes: --generator deform (DG-Font's deformable skip connections, the
offset loss) and --warp affine (a spatial transformer's learned affine warp before the ResNet or the U-Net);
for both the CLI, exact resume, model files, translate and export."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import deform_conv2d

import imxlate
from imxlate import store
from imxlate.families import build_family, load_model
from imxlate.nets.common import init_weights, param_count
from imxlate.nets.deform import DeformResnetGenerator, DeformSkip, deform_conv3x3, offset_loss
from imxlate.nets.resnet import ResnetGenerator
from imxlate.nets.warp import IDENTITY, AffineWarp, sampling_grid
from imxlate.nets.unet import UnetGenerator

from conftest import cli, interrupt_at, write_images

TINY = ["--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8", "--n-blocks", "1", "--quiet"]
TINY_UNET = [o for o in TINY if o not in ("--n-blocks", "1")] + ["--generator", "unet", "--n-downs", "5"]
DEFORM = ["--generator", "deform", *TINY]
MOVERS = {"deform": ["--generator", "deform", *TINY], "affine": ["--warp", "affine", *TINY],
          "affine-unet": ["--warp", "affine", *TINY_UNET]}
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def skewed(net, seed: int = 0):
    """`net` with random offset predictors (deform: skips that sample pixels away from the regular grid; affine:
    a warp that slants, stretches and shifts)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if isinstance(net, AffineWarp):
            net.theta_weight.copy_(torch.randn(net.theta_weight.shape, generator=g))
            net.theta_bias.add_(torch.randn(6, generator=g) * 0.2)
            return net
        for skip in (net.skip_half, net.skip_full):
            skip.offset_weight.copy_(torch.randn(skip.offset_weight.shape, generator=g) * 0.3)
            skip.offset_bias.copy_(torch.randn(skip.offset_bias.shape, generator=g))
    return net


def test_the_resnet_layout_plus_two_deformable_skips():
    extra = 0  # what DG-Font's skips add to the CycleGAN ResNet generator (ngf 64, 9 blocks)
    for c in (64, 128):  # the skips at H and at H/2: a 3x3 conv and a 3x3 predictor of 18 offsets + 9 masks
        extra += c * c * 9 + c + 27 * 2 * c * 9 + 27
    extra += 128 * 64 * 9 + 64 * 3 * 49  # the layers after a concatenation take twice the channels
    resnet = param_count(ResnetGenerator(ngf=64, n_blocks=9))
    assert param_count(DeformResnetGenerator(ngf=64, n_blocks=9)) == resnet + extra
    for upsample in ("transpose", "resize"):
        g = DeformResnetGenerator(ngf=8, n_blocks=1, upsample=upsample)
        assert g(torch.zeros(2, 3, 36, 28)).shape == (2, 3, 36, 28)


def test_a_new_generator_starts_with_plain_skip_connections():
    torch.manual_seed(0)
    g = init_weights(DeformResnetGenerator(ngf=8, n_blocks=1))
    with torch.no_grad():
        y, offsets = g.deformed(torch.rand(2, 3, 32, 24) * 2 - 1)
    assert [o.shape for o in offsets] == [(2, 18, 32, 24), (2, 18, 16, 12)]  # (dy, dx) per tap, at H and H/2
    assert all(torch.equal(o, torch.zeros_like(o)) for o in offsets)
    assert float(offset_loss(offsets)) == 0.0
    assert 0.01 < float(g.skip_full.conv.weight.detach().std()) < 0.03  # init_weights' N(0, 0.02) reached it
    enc, dec = torch.randn(2, 8, 10, 12), torch.randn(2, 8, 10, 12)
    out, _ = g.skip_full(enc, dec)
    plain = F.conv2d(enc, g.skip_full.conv.weight, g.skip_full.conv.bias, padding=1)
    assert torch.allclose(out, plain, atol=1e-6)


def test_the_deformable_convolution_is_torchvisions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 9, generator=g, requires_grad=True)
    offsets = (torch.randn(2, 18, 7, 9, generator=g) * 3).requires_grad_()  # reaching past the borders too
    mask = (torch.rand(2, 9, 7, 9, generator=g) * 2).requires_grad_()
    weight, bias = torch.randn(4, 5, 3, 3, generator=g, requires_grad=True), torch.randn(4, generator=g)
    ours = deform_conv3x3(x, offsets, mask, weight, bias)
    ref = deform_conv2d(x, offsets, weight, bias, padding=1, mask=mask)
    assert torch.allclose(ours, ref, atol=1e-5)
    inputs = [x, offsets, mask, weight]
    for a, b in zip(torch.autograd.grad(ours.square().sum(), inputs), torch.autograd.grad(ref.square().sum(), inputs)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_offsets_move_the_sampling_and_receive_gradients():
    torch.manual_seed(0)
    skip = DeformSkip(4)
    enc, dec = torch.randn(1, 4, 9, 11), torch.randn(1, 4, 9, 11)
    with torch.no_grad():
        skip.offset_bias[1:18:2] = 1.0  # dx = +1 at every tap: each output reads the pixel to its right
    out, offsets = skip(enc, dec)
    plain = skip.conv(enc)
    assert torch.allclose(offsets[:, 1::2], torch.ones(1, 9, 9, 11)) and not offsets[:, 0::2].any()
    assert torch.allclose(out[..., :-1], plain[..., 1:], atol=1e-5)

    g = init_weights(DeformResnetGenerator(ngf=8, n_blocks=1))
    y, offsets = g.deformed(torch.rand(2, 3, 32, 32) * 2 - 1)
    y.square().mean().backward()  # at zero offsets the translation's gradient reaches the offset predictors
    for s in (g.skip_half, g.skip_full):
        assert s.offset_weight.grad.abs().sum() > 0 and s.offset_bias.grad.abs().sum() > 0


def test_a_new_affine_warp_leaves_its_generator_and_learns_a_warp():
    torch.manual_seed(0)
    g = init_weights(AffineWarp(ResnetGenerator(ngf=8, n_blocks=1), ngf=8))
    x = torch.rand(2, 3, 36, 28) * 2 - 1
    with torch.no_grad():
        y, theta = g.warped(x)
        assert torch.equal(theta, torch.tensor(IDENTITY).view(1, 2, 3).expand(2, 2, 3))  # Jaderberg et al.'s init
        assert torch.allclose(y, g.net(x), atol=1e-5)
    assert 0.01 < float(g.look[0].weight.detach().std()) < 0.03  # init_weights reached the localisation network
    g(x).square().mean().backward()  # at the identity the translation's gradient reaches the regressor
    assert g.theta_weight.grad.abs().sum() > 0 and g.theta_bias.grad.abs().sum() > 0

    theta, x_odd = torch.randn(2, 2, 3), torch.zeros(2, 1, 7, 9)  # the exportable grid is affine_grid's
    assert torch.allclose(sampling_grid(theta, x_odd), F.affine_grid(theta, [2, 1, 7, 9], align_corners=False),
                          atol=1e-5)
    g.net = torch.nn.Identity()  # the warp alone
    with torch.no_grad():
        g.theta_bias[2] = 4 / 28  # x shift of 2 pixels in affine_grid's [-1, 1] coordinates
        moved = g(x)
    assert torch.allclose(moved[..., :-2], x[..., 2:], atol=1e-5)  # output pixel j reads input pixel j + 2
    assert torch.allclose(moved[..., -2:], x[..., -1:].expand(-1, -1, -1, 2), atol=1e-5)  # the border repeated


def test_the_offset_loss_is_weighted_into_the_generator_losses():
    def family(generator, **extra):
        cfg = {"ngf": 8, "ndf": 8, "n_blocks": 1, "generator": generator, **extra}
        f = build_family("cyclegan", cfg, ["a", "b"], 32)
        f.setup_training()
        return f

    f = family("deform", lambda_offset=2.0)
    skewed(f.nets["G_ab"], 1), skewed(f.nets["G_ba"], 2)
    real_a, real_b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        total, parts, _ = f.generator_losses(real_a, real_b)
        for key, net, x in (("offset_ab", "G_ab", real_a), ("offset_ba", "G_ba", real_b)):
            o1, o2 = f.nets[net].deformed(x)[1]  # DG-Font: the mean over both skips of mean |offset|
            assert torch.allclose(parts[key], 2.0 * (o1.abs().mean() + o2.abs().mean()) / 2), key
            assert parts[key] > 0.1
    assert torch.allclose(total, sum(parts.values()))
    with torch.no_grad():
        _, parts, _ = family("resnet").generator_losses(real_a, real_b)
    assert not any(k.startswith("offset") for k in parts)


def test_training_through_the_cli_records_the_deform_generator(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    common = ["train", "--domains", "photos", "vangogh", "--steps", "2", "--log-every", "1"]
    bad = cli(*common, *TINY, "--lambda-offset", "1", ok=False)
    assert bad.exit_code == 2 and "--lambda-offset" in bad.output and "Traceback" not in bad.output
    bad = cli(*common, *DEFORM, "--n-downs", "5", ok=False)
    assert bad.exit_code == 2 and "--n-downs" in bad.output
    assert not Path("runs").exists()
    cli(*common, "--generator", "deform", "--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8",
        "--quiet", "--out", "run")
    meta = store.read_metadata("run/model.safetensors")
    # the paper defaults: DG-Font's offset weight 0.5; the residual blocks as for the ResNet generator
    assert meta["config"]["generator"] == "deform" and meta["config"]["lambda_offset"] == 0.5
    assert meta["config"]["n_blocks"] == 6
    assert meta["networks"]["G_ab"]["class"] == "DeformResnetGenerator"
    log = [json.loads(line) for line in Path("run/log.jsonl").read_text().splitlines()]
    assert all(0 <= row["offset_ab"] < 0.5 and 0 <= row["offset_ba"] < 0.5 for row in log) and len(log) == 2
    assert log[-1]["offset_ab"] > 0  # after one update the skips deform


def test_training_through_the_cli_records_the_affine_warp(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    common = ["train", "--domains", "photos", "vangogh", "--steps", "2", "--warp", "affine", *TINY]
    for extra, named in ((["--lambda-offset", "1"], "--lambda-offset"), (["--generator", "deform"], "--warp"),
                         (["--warp", "elastic"], "--warp elastic")):
        bad = cli(*common, *extra, ok=False)
        assert bad.exit_code == 2 and named in bad.output and "Traceback" not in bad.output
    assert not Path("runs").exists()
    cli(*common, "--out", "run")
    meta = store.read_metadata("run/model.safetensors")
    assert meta["config"]["warp"] == "affine" and meta["config"]["generator"] == "resnet"
    assert meta["networks"]["G_ab"]["class"] == "AffineWarp"
    family = load_model("run/model.safetensors")
    assert isinstance(family.nets["G_ab"].net, ResnetGenerator)


def test_training_names_the_shape_recipe_only_for_the_generator_that_keeps_the_layout(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    common = ["train", "--domains", "photos", "vangogh", "--steps", "1"]
    tiny = [o for o in TINY if o != "--quiet"]
    said = cli(*common, *tiny, "--out", "plain").output
    assert "Shapes: this generator keeps each input's layout" in said and "--generator unet --warp affine" in said
    said = cli(*common, *[o for o in TINY_UNET if o != "--quiet"], "--warp", "affine", "--out", "moving").output
    assert "Shapes:" not in said and "Training 1 steps" in said


@pytest.mark.parametrize("kind", ["deform", "affine"])
def test_resume_is_bit_identical(two_domains, monkeypatch, kind):
    monkeypatch.chdir(two_domains)
    common = ["--domains", "photos", "vangogh", "--workers", "0", "--ema", "0.9", *MOVERS[kind]]
    cli("train", *common, "--steps", "4", "--out", "straight")
    interrupt_at(monkeypatch, 2)
    assert "interrupted at step 2" in cli("train", *common, "--steps", "4", "--out", "split", ok=False).output
    cli("train", "--resume", "split", "--workers", "0", "--quiet")
    a, b = (store.load_checkpoint(f"{run}/checkpoint.safetensors") for run in ("straight", "split"))
    assert a["step"] == b["step"] == 4
    ta, tb = (dict(_tensors({"f": c["family_state"], "ema": c["ema"]})) for c in (a, b))
    assert ta.keys() == tb.keys() and any(("offset_weight" if kind == "deform" else "theta_weight") in k for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def _tensors(x, path=""):
    """(path, tensor) of every tensor in a nested checkpoint."""
    if isinstance(x, torch.Tensor):
        yield path, x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _tensors(v, f"{path}/{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _tensors(v, f"{path}/{i}")


@pytest.fixture(scope="module", params=list(MOVERS))
def skewed_model(tmp_path_factory, request) -> Path:
    """A model file of a tiny deform or warped (ResNet, U-Net) CycleGAN trained 2 steps through the CLI, then given
    large offsets or a large warp."""
    tmp = tmp_path_factory.mktemp(request.param)
    write_images(tmp / "photos", 3, seed=1)
    write_images(tmp / "vangogh", 3, seed=2)
    cli("train", "--data", tmp, "--domains", "photos", "vangogh", "--steps", "2", "--out", tmp / "run",
        *MOVERS[request.param])
    family = load_model(tmp / "run/model.safetensors")
    skewed(family.nets["G_ab"], 1), skewed(family.nets["G_ba"], 2)
    store.save_model(family, tmp / "skewed.safetensors")
    return tmp / "skewed.safetensors"


def test_the_model_file_alone_translates(skewed_model, tmp_path, monkeypatch):
    tensors, _ = store.read_file(skewed_model)
    assert {k.split(".")[0] for k in tensors} == {"G_ab", "G_ba"}
    family = load_model(skewed_model)
    net = family.nets["G_ab"]
    with torch.no_grad():
        if isinstance(net, DeformResnetGenerator):
            assert float(offset_loss(net.deformed(torch.zeros(1, 3, 32, 32))[1])) > 0.1
        else:
            assert (net.affine(torch.zeros(1, 3, 32, 32)) - torch.tensor(IDENTITY).view(2, 3)).abs().max() > 0.1
    tr = imxlate.load(skewed_model)
    assert tr.translate(Image.new("RGB", (30, 22), (255, 0, 0)), to="vangogh").size == (30, 22)
    assert tr.translate(torch.rand(2, 3, 20, 28) * 2 - 1, to="photos").shape == (2, 3, 20, 28)

    monkeypatch.chdir(tmp_path)
    write_images(Path("input"), 3, sizes=((37, 29), (96, 72), (33, 51)), seed=3)
    cli("translate", "input", "--to", "vangogh", "--model", skewed_model, "--out", "out", "--quiet")
    for src in Path("input").iterdir():
        assert Image.open(Path("out") / src.name).size == Image.open(src).size
    tiled = cli("translate", "input", "--to", "vangogh", "--model", skewed_model, "--out", "tiled", "--tile", "32",
                ok=False)
    # tiling knows the ResNet and U-Net generators' layers only (a warp reads the whole image): a one-line refusal
    assert tiled.exit_code == 2 and "--tile" in tiled.output and "Traceback" not in tiled.output


def eager(model: Path, x01: torch.Tensor, to: str) -> torch.Tensor:
    """imxlate's own translation of [0, 1] images, in [0, 1]."""
    return ((imxlate.load(model).translate(x01 * 2 - 1, to=to) + 1) / 2).clamp(0, 1)


def test_onnx_export_deforms_as_torch_does(skewed_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "vangogh.onnx"
    cli("export", skewed_model, "--to", "vangogh", "--format", "onnx", "--out", out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for i, shape in enumerate([(1, 3, 32, 32), (2, 3, 30, 42)]):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(i))
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        assert got.shape == x.shape
        assert torch.allclose(got, eager(skewed_model, x, "vangogh"), atol=1e-4)


def test_torchscript_export_deforms_as_torch_does(skewed_model, tmp_path):
    out = tmp_path / "photos.pt"
    cli("export", skewed_model, "--to", "photos", "--format", "torchscript", "--out", out)
    ts = torch.jit.load(str(out))
    x = torch.rand(2, 3, 30, 42, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(ts(x), eager(skewed_model, x, "photos"), atol=1e-4)
