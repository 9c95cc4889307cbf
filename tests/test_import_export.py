"""Importing reference CycleGAN/pix2pix and StarGAN generator checkpoints, refusing foreign files,
and exporting one direction of a model to ONNX and TorchScript.

The reference-layout generators are written here from the published architectures (module order
and indices, not imxlate's classes), saved with torch.save(state_dict) as the reference code does.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from typer.testing import CliRunner

import imxlate
from imxlate import store
from imxlate.cli import app
from imxlate.errors import ImxlateError
from imxlate.export import export_model
from imxlate.foreign import import_checkpoint

NGF, SIZE = 8, 32
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
runner = CliRunner()


# ---- reference-layout generators -------------------------------------------------------------------

class RefResnetBlock(nn.Module):
    def __init__(self, dim, norm, dropout, bias):
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm(dim), nn.ReLU(True)]
        layers += [nn.Dropout(0.5)] if dropout else []
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class RefResnetGenerator(nn.Module):
    """The CycleGAN repository's ResnetGenerator layout: model.1 stem conv ... model.26 output conv (9 blocks)."""

    def __init__(self, ngf=NGF, n_blocks=9, norm="instance", dropout=False, legacy=False):
        super().__init__()
        if norm == "instance":  # legacy: the running buffers of files from PyTorch 0.3
            norm_layer, bias = (lambda c: nn.InstanceNorm2d(c, track_running_stats=legacy)), True
        else:
            norm_layer, bias = nn.BatchNorm2d, False
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=bias), norm_layer(ngf), nn.ReLU(True)]
        for c in (ngf, 2 * ngf):
            layers += [nn.Conv2d(c, 2 * c, 3, 2, 1, bias=bias), norm_layer(2 * c), nn.ReLU(True)]
        layers += [RefResnetBlock(4 * ngf, norm_layer, dropout, bias) for _ in range(n_blocks)]
        for c in (4 * ngf, 2 * ngf):
            layers += [nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1, bias=bias), norm_layer(c // 2),
                       nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class RefUnetLevel(nn.Module):
    """One level of pix2pix's UnetSkipConnectionBlock: Sequential [down..., inner level, up...] in `model`."""

    def __init__(self, outer, inner, sub=None, in_ch=None, outermost=False, norm="batch", dropout=False):
        super().__init__()
        norm_layer, bias = (nn.BatchNorm2d, False) if norm == "batch" else (nn.InstanceNorm2d, True)
        self.outermost = outermost
        down = nn.Conv2d(in_ch or outer, inner, 4, 2, 1, bias=bias)
        if outermost:
            layers = [down, sub, nn.ReLU(True), nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1), nn.Tanh()]
        elif sub is None:
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True),
                      nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=bias), norm_layer(outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down, norm_layer(inner), sub, nn.ReLU(True),
                      nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1, bias=bias), norm_layer(outer)]
            layers += [nn.Dropout(0.5)] if dropout else []
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class RefUnetGenerator(nn.Module):
    """pix2pix's UnetGenerator(3, 3, num_downs, ngf): innermost 8 ngf, num_downs - 5 more at 8 ngf (with
    dropout), then 4, 2, 1 ngf and the outermost level."""

    def __init__(self, num_downs=5, ngf=NGF, norm="batch"):
        super().__init__()
        block = RefUnetLevel(8 * ngf, 8 * ngf, norm=norm)
        for _ in range(num_downs - 5):
            block = RefUnetLevel(8 * ngf, 8 * ngf, block, norm=norm, dropout=True)
        for outer in (4 * ngf, 2 * ngf, ngf):
            block = RefUnetLevel(outer, 2 * outer, block, norm=norm)
        self.model = RefUnetLevel(3, ngf, block, in_ch=3, outermost=True, norm=norm)

    def forward(self, x):
        return self.model(x)


class RefStarBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        norm = lambda: nn.InstanceNorm2d(dim, affine=True, track_running_stats=True)  # noqa: E731
        self.main = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, bias=False), norm(), nn.ReLU(True),
                                  nn.Conv2d(dim, dim, 3, 1, 1, bias=False), norm())

    def forward(self, x):
        return x + self.main(x)


class RefStarGenerator(nn.Module):
    """The StarGAN repository's Generator layout: main.0 conv (3 + c_dim -> ngf) ... residual main.K.main.*."""

    def __init__(self, c_dim, ngf=NGF, n_blocks=2):
        super().__init__()
        norm = lambda c: nn.InstanceNorm2d(c, affine=True, track_running_stats=True)  # noqa: E731
        layers = [nn.Conv2d(3 + c_dim, ngf, 7, 1, 3, bias=False), norm(ngf), nn.ReLU(True)]
        for c in (ngf, 2 * ngf):
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), norm(2 * c), nn.ReLU(True)]
        layers += [RefStarBlock(4 * ngf) for _ in range(n_blocks)]
        for c in (4 * ngf, 2 * ngf):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), norm(c // 2), nn.ReLU(True)]
        layers += [nn.Conv2d(ngf, 3, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x, c):
        c = c[:, :, None, None].repeat(1, 1, x.size(2), x.size(3))
        return self.main(torch.cat([x, c], dim=1))


def randomised(net: nn.Module, seed: int) -> nn.Module:
    """Random weights and running statistics (so dropping or keeping each one shows in the output)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * (0.2 if t.dim() > 1 else 0.5))
            else:
                t.fill_(7)
    return net


def save_sd(net: nn.Module, path: Path, drop: str | None = None) -> Path:
    sd = {k: v for k, v in net.state_dict().items() if drop is None or not k.endswith(drop)}
    torch.save(sd, path)
    return path


def images(n=2, h=SIZE, w=SIZE, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def one_line_error(args, out: Path):
    """Run `imxlate import/export ...`; assert one clear error line, no traceback and no file written."""
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert "Traceback" not in r.output
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    return lines[0]


# ---- CycleGAN import ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["instance", "legacy", "dropout", "batch"])
def test_cyclegan_import_matches_reference_network(tmp_path, kind):
    n_blocks = 6 if kind == "batch" else 9
    ref = randomised(RefResnetGenerator(NGF, n_blocks, "batch" if kind == "batch" else "instance",
                                        dropout=kind == "dropout", legacy=kind == "legacy"), seed=1)
    keys = list(ref.state_dict())
    assert "model.1.weight" in keys and "model.10.conv_block.1.weight" in keys
    if kind != "batch":
        assert keys[-1] == "model.26.bias"
    assert (f"model.10.conv_block.{6 if kind == 'dropout' else 5}.weight" in keys)
    assert any("running_mean" in k for k in keys) == (kind in ("legacy", "batch"))
    ckpt = save_sd(ref, tmp_path / "latest_net_G_A.pth")
    out = tmp_path / "h2z.safetensors"

    r = runner.invoke(app, ["import", str(ckpt), "--from", "horse", "--to", "zebra", "--out", str(out)])
    assert r.exit_code == 0, r.output

    meta = store.read_metadata(out)
    assert meta["family"] == "cyclegan" and meta["domains"] == ["horse", "zebra"]
    assert meta["directions"] == ["horse->zebra"]
    cfg = meta["config"]
    assert (cfg["ngf"], cfg["n_blocks"], cfg["norm"], cfg["dropout"]) == (
        NGF, n_blocks, "batch" if kind == "batch" else "instance", kind == "dropout")
    # The reference translates in eval mode, but its loader deletes legacy instance-norm buffers, so such
    # a network normalises each image by its own statistics: train mode here (it has no dropout).
    ref.train(kind == "legacy")
    x = images()
    with torch.no_grad():
        expected = ref(x)
    model = imxlate.load(out, device="cpu")
    got = model.translate(x, to="zebra")
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    with pytest.raises(ImxlateError, match="only translates horse -> zebra.*--reverse"):
        model.translate(x, to="horse")


@pytest.mark.parametrize("levels, norm", [(5, "batch"), (6, "instance")])
def test_pix2pix_unet_import_matches_reference_network(tmp_path, levels, norm):
    ref = randomised(RefUnetGenerator(levels, NGF, norm), seed=4).eval()  # eval: dropout off, running stats
    ckpt = save_sd(ref, tmp_path / "latest_net_G.pth")
    out = tmp_path / "facades.safetensors"
    r = runner.invoke(app, ["import", str(ckpt), "--from", "labels", "--to", "facade", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"generator=unet, ngf={NGF}, n_downs={levels}, norm={norm}" in r.output
    cfg = store.read_metadata(out)["config"]
    assert (cfg["generator"], cfg["ngf"], cfg["n_downs"], cfg["norm"]) == ("unet", NGF, levels, norm)
    x = images(h=2**levels, w=2 * 2**levels)
    with torch.no_grad():
        expected = ref(x)
    model = imxlate.load(out, device="cpu")
    got = model.translate(x, to="facade")
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    odd = images(n=1, h=2**levels - 3, w=2**levels + 5)  # padded to the U-Net's multiple and cropped back
    assert model.translate(odd, to="facade").shape == odd.shape


def test_cyclegan_reverse_gives_both_directions_and_info_shows_the_source(tmp_path):
    a2b = randomised(RefResnetGenerator(n_blocks=2), 2).eval()
    b2a = randomised(RefResnetGenerator(n_blocks=2), 3).eval()
    f_a2b, f_b2a = save_sd(a2b, tmp_path / "horse2zebra.pth"), save_sd(b2a, tmp_path / "zebra2horse.pth")
    out = tmp_path / "both.safetensors"
    written = import_checkpoint(f_a2b, out, src="horse", dst="zebra", reverse=f_b2a)
    assert written == out
    model = imxlate.load(out, device="cpu")
    x = images(1, 36, 44)
    with torch.no_grad():
        for net, to in ((a2b, "zebra"), (b2a, "horse")):
            assert torch.allclose(model.translate(x, to=to), net(x), atol=1e-5)
    meta = store.read_metadata(out)
    assert sorted(meta["directions"]) == ["horse->zebra", "zebra->horse"]
    assert meta["source"] == {"file": "horse2zebra.pth", "sha256": store.sha256(f_a2b),
                              "reverse_file": "zebra2horse.pth", "reverse_sha256": store.sha256(f_b2a)}
    r = runner.invoke(app, ["info", str(out)])
    assert r.exit_code == 0 and "imported from" in r.output and "horse2zebra.pth" in r.output, r.output
    r = runner.invoke(app, ["info", str(out), "--json"])
    assert json.loads(r.output)["source"] == meta["source"]


def test_a_one_way_model_is_not_trainable(tmp_path):
    r = runner.invoke(app, ["train", "--domains", "a", "b", "--data", str(tmp_path), "--one-way"])
    assert r.exit_code == 2 and "training needs both directions" in r.output, r.output


def test_reverse_with_another_architecture_is_refused(tmp_path):
    a = save_sd(randomised(RefResnetGenerator(n_blocks=2), 2), tmp_path / "a.pth")
    b = save_sd(randomised(RefResnetGenerator(n_blocks=3), 3), tmp_path / "b.pth")
    out = tmp_path / "m.safetensors"
    line = one_line_error(["import", a, "--from", "x", "--to", "y", "--reverse", b, "--out", out], out)
    assert "another architecture" in line


# ---- StarGAN import ----------------------------------------------------------------------------------

@pytest.mark.parametrize("old_file", [False, True])
def test_stargan_import_matches_reference_network(tmp_path, old_file):
    ref = randomised(RefStarGenerator(c_dim=3), seed=4)
    # Files from before PyTorch 0.4.1 have no num_batches_tracked.
    ckpt = save_sd(ref, tmp_path / "200000-G.ckpt", drop="num_batches_tracked" if old_file else None)
    out = tmp_path / "celeba.safetensors"
    domains = ["black_hair", "blond_hair", "brown_hair"]
    r = runner.invoke(app, ["import", str(ckpt), "--family", "stargan", "--domains", *domains, "--out", str(out)])
    assert r.exit_code == 0, r.output
    meta = store.read_metadata(out)
    assert meta["family"] == "stargan" and meta["domains"] == domains
    assert (meta["config"]["ngf"], meta["config"]["n_blocks"]) == (NGF, 2)
    # The reference translates without switching to eval mode: every image by its own statistics.
    ref.train()
    model = imxlate.load(out, device="cpu")
    x = images(3)
    for k, d in enumerate(domains):
        with torch.no_grad():
            expected = ref(x, F.one_hot(torch.full((3,), k), 3).float())
        assert torch.allclose(model.translate(x, to=d), expected, atol=1e-5)


def test_stargan_needs_one_name_per_label(tmp_path):
    ckpt = save_sd(randomised(RefStarGenerator(c_dim=3), 4), tmp_path / "1000-G.ckpt")
    out = tmp_path / "m.safetensors"
    line = one_line_error(["import", ckpt, "--domains", "a", "b", "--out", out], out)
    assert "3 domains" in line


# ---- refusing what is not a reference generator ------------------------------------------------------

def test_foreign_and_malformed_files_are_refused_with_one_line(tmp_path):
    net = randomised(RefResnetGenerator(n_blocks=2), 5)
    good = save_sd(net, tmp_path / "good.pth")
    cases = {}
    torch.save({"encoder.weight": torch.randn(4, 4), "head.bias": torch.randn(4)}, tmp_path / "random.pth")
    cases["random.pth"] = "could not place: encoder.weight, head.bias"
    torch.save(nn.Sequential(nn.Conv2d(3, 3, 1)), tmp_path / "module.pth")  # a pickled module, not a state dict
    cases["module.pth"] = "pickled Python objects"
    (tmp_path / "truncated.pth").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated.pth"] = "not a readable PyTorch weights file"
    torch.save({**net.state_dict(), "model.99.weight": torch.randn(3)}, tmp_path / "extra.pth")
    cases["extra.pth"] = "could not place: model.99.weight"
    torch.save({"model.model.0.weight": torch.randn(8, 3, 4, 4)}, tmp_path / "unet.pth")
    cases["unet.pth"] = "U-Net generator of 1 level"
    (tmp_path / "text.pth").write_text("not weights")
    cases["text.pth"] = "not a readable PyTorch weights file"
    for name, expected in cases.items():
        out = tmp_path / f"{name}.safetensors"
        line = one_line_error(["import", tmp_path / name, "--from", "a", "--to", "b", "--out", out], out)
        assert expected in line and name in line, line


def test_existing_output_is_not_overwritten(tmp_path):
    ckpt = save_sd(randomised(RefResnetGenerator(n_blocks=2), 5), tmp_path / "g.pth")
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep me")
    r = runner.invoke(app, ["import", str(ckpt), "--from", "a", "--to", "b", "--out", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert out.read_bytes() == b"keep me"


# ---- export --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_way_model(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("model")
    a = save_sd(randomised(RefResnetGenerator(n_blocks=2), 6), tmp / "a2b.pth")
    b = save_sd(randomised(RefResnetGenerator(n_blocks=2), 7), tmp / "b2a.pth")
    return import_checkpoint(a, tmp / "ab.safetensors", src="apple", dst="banana", reverse=b)


def eager(model_path: Path, x01: torch.Tensor, to: str) -> torch.Tensor:
    """imxlate's own translation of [0, 1] images, in [0, 1]."""
    return ((imxlate.load(model_path, device="cpu").translate(x01 * 2 - 1, to=to) + 1) / 2).clamp(0, 1)


SHAPES = [(1, 3, SIZE, SIZE), (3, 3, 30, 42)]


def test_onnx_export_matches_pytorch_at_two_sizes(tmp_path, two_way_model):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "banana.onnx"
    r = runner.invoke(app, ["export", str(two_way_model), "--to", "banana", "--format", "onnx",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "image" and outp.name == "translated"
    assert [isinstance(d, str) for d in inp.shape] == [True, False, True, True]  # batch, height, width dynamic
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["imxlate.to"] == "banana" and "[0, 1]" in meta["imxlate.convention"]
    for i, shape in enumerate(SHAPES):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(i))
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        assert got.shape == x.shape
        assert torch.allclose(got, eager(two_way_model, x, "banana"), atol=1e-4)


@pytest.mark.parametrize("to", ["banana", "apple"])
def test_torchscript_export_matches_pytorch_at_two_sizes(tmp_path, two_way_model, to):
    out = export_model(two_way_model, to, tmp_path / "m.pt", fmt="torchscript")
    extra = {"imxlate.json": ""}
    ts = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["imxlate.json"])["to"] == to
    for i, shape in enumerate(SHAPES):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            got = ts(x)
        assert got.shape == x.shape and got.dtype == torch.float32
        assert torch.allclose(got, eager(two_way_model, x, to), atol=1e-4)


def test_fp16_torchscript_keeps_float32_io(tmp_path, two_way_model):
    out = export_model(two_way_model, "banana", tmp_path / "h.pt", fmt="torchscript", fp16=True)
    ts = torch.jit.load(str(out))
    assert {p.dtype for p in ts.parameters()} == {torch.float16}
    x = torch.rand(2, 3, 28, 36)
    with torch.no_grad():
        got = ts(x)
    assert got.dtype == torch.float32 and got.shape == x.shape
    assert torch.allclose(got, eager(two_way_model, x, "banana"), atol=2e-2)


def test_stargan_torchscript_export_has_dynamic_batch(tmp_path):
    ckpt = save_sd(randomised(RefStarGenerator(c_dim=3), 8), tmp_path / "10-G.ckpt")
    model = import_checkpoint(ckpt, tmp_path / "s.safetensors", family="stargan", domains=["a", "b", "c"])
    ts = torch.jit.load(str(export_model(model, "c", tmp_path / "s.pt", fmt="torchscript")))
    for i, shape in enumerate(SHAPES):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            assert torch.allclose(ts(x), eager(model, x, "c"), atol=1e-4)


def test_export_refuses_a_direction_the_model_lacks(tmp_path):
    ckpt = save_sd(randomised(RefResnetGenerator(n_blocks=2), 9), tmp_path / "g.pth")
    model = import_checkpoint(ckpt, tmp_path / "one.safetensors", src="a", dst="b")
    out = tmp_path / "x.pt"
    for to, expected in (("a", "no direction into 'a'"), ("zz", "does not know 'zz'")):
        line = one_line_error(["export", model, "--to", to, "--format", "torchscript", "--out", out], out)
        assert expected in line, line
