"""--precision and --compile: bf16 on the CPU close to fp32; fp16 refused on the CPU with one error line."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imxlate import store
from imxlate.families.cyclegan import CycleGAN, CycleGANConfig
from imxlate.nets.common import init_weights
from imxlate.translate import Translator

from conftest import cli, write_images


@pytest.fixture
def model(tmp_path):
    torch.manual_seed(0)
    family = CycleGAN(CycleGANConfig(ngf=8, n_blocks=2), ["a", "b"], 32)
    init_weights(family.nets, 0.1)
    path = tmp_path / "m.safetensors"
    store.save_model(family, path)
    return path


def test_bf16_on_the_cpu_is_close_to_fp32(tmp_path, model):
    x = torch.rand(2, 3, 40, 52) * 2 - 1
    fp32 = Translator.open(model, device="cpu").translate_tensor(x, "b")
    tr = Translator.open(model, device="cpu", precision="bf16")
    bf16 = tr.translate_tensor(x, "b")
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert not tr.channels_last  # NHWC only on CUDA
    err = (bf16 - fp32).abs()
    assert err.mean() < 0.03 and err.max() < 0.3, (err.mean(), err.max())
    assert err.max() > 0  # it did run in bfloat16


def test_precision_flags_through_the_cli(tmp_path, model):
    write_images(tmp_path / "in", 2, sizes=((36, 28),), exts=(".png",))
    outs = {}
    for precision in ("fp32", "bf16"):
        cli("translate", tmp_path / "in", "--to", "b", "--model", model, "--out", tmp_path / precision,
            "--precision", precision, "--device", "cpu")
        outs[precision] = np.asarray(__import__("PIL.Image").Image.open(tmp_path / precision / "img000.png"), dtype=int)
    assert np.abs(outs["bf16"] - outs["fp32"]).mean() < 8  # 0-255 levels


@pytest.mark.parametrize("precision,says", [("fp16", "needs a CUDA GPU"), ("fp64", "use fp32, bf16 or fp16")])
def test_unusable_precision_is_one_error_line(tmp_path, model, precision, says):
    write_images(tmp_path / "in", 1)
    r = cli("translate", tmp_path / "in", "--to", "b", "--model", model, "--out", tmp_path / "out",
            "--precision", precision, "--device", "cpu", ok=False)
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1].startswith("error:"), r.output
    assert says in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_compile_gives_the_same_translation(tmp_path, model):
    x = torch.rand(1, 3, 32, 44) * 2 - 1
    plain = Translator.open(model, device="cpu").translate_tensor(x, "b")
    compiled = Translator.open(model, device="cpu", compile=True).translate_tensor(x, "b")
    assert (compiled - plain).abs().max() < 1e-4
