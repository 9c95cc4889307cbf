"""Streamed (tiled) translation equals the untiled forward for every generator kind and family it knows;
buffers spill to unnamed temporary files that nothing outlives; images of any size go through the CLI within
a memory budget, checked before decoding or resizing; folder runs keep a bounded memory; translate and
exported graphs pad the same way."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imxlate import store, tiling
from imxlate.errors import ImxlateError
from imxlate.families import family_class
from imxlate.families.base import config_from
from imxlate.families.cyclegan import CycleGAN, CycleGANConfig
from imxlate.nets.common import init_weights
from imxlate.nets.resnet import ResnetGenerator
from imxlate.nets.unet import UnetGenerator
from imxlate.tiling import Budget, Geometry, compile_calls, stream, tiled_forward
from imxlate.translate import Translator, default_batch_size

from conftest import cli, write_images

# Outputs lie in [-1, 1]; tiles sum the norms' statistics in another order than the whole image does.
TOL = 5e-5


def lively(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights large enough that the output is not flat or saturated, and batch norms with real
    running statistics, so that a wrong statistic or a too-narrow margin shows in the output."""
    torch.manual_seed(seed)
    init_weights(net, 0.2)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if norms:  # running statistics of real activations (a cumulative average over a few batches)
        for m in norms:
            m.momentum = None
        with torch.no_grad():
            for _ in range(3):
                net.train()(torch.rand(2, 3, 64, 64) * 2 - 1)
    return net.eval()


NETS = {
    "resnet-instance": (lambda: ResnetGenerator(ngf=4, n_blocks=3), (92, 124)),
    "resnet-instance-resize": (lambda: ResnetGenerator(ngf=4, n_blocks=2, upsample="resize"), (60, 84)),
    "resnet-batch": (lambda: ResnetGenerator(ngf=4, n_blocks=2, norm="batch"), (76, 44)),
    "unet-instance": (lambda: UnetGenerator(ngf=4, n_downs=5, norm="instance"), (320, 288)),
    "unet-batch": (lambda: UnetGenerator(ngf=4, n_downs=5, norm="batch", upsample="resize"), (256, 352)),
}


@pytest.mark.parametrize("name", NETS)
def test_streamed_equals_the_whole_image(name):
    make, (h, w) = NETS[name]
    net = lively(make())
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        whole = net(x)
    assert whole.std() > 0.05 and (whole.abs() > 0.99).float().mean() < 0.5  # a real signal, not saturated
    for tile, ram in ((8, None), (36, 0), (64, None)):  # ram 0: every buffer in a temporary file
        assert (tiled_forward(net, x, tile, ram) - whole).abs().max() < TOL, (tile, ram)
    # The margins matter: without them interior tiles see their own padding, and the test would see it.
    program = compile_calls([(net, ())])
    for st in program.stages:
        st.geometry = Geometry(st.geometry.multiple, 0)
    assert (stream(program, x, Budget(2**40, 32)) - whole).abs().max() > 1e-3


def test_instance_norm_statistics_are_those_of_the_whole_image():
    """With margins wide enough but per-tile statistics the output differs: statistics are gathered whole."""
    net = lively(ResnetGenerator(ngf=4, n_blocks=1))
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    x[..., :32, :] *= 0.1  # the tiles differ in contrast, so their own statistics differ
    with torch.inference_mode():
        whole = net(x)
        per_tile = net(x[..., :32, :])  # the top tile normalised by itself
    assert (tiled_forward(net, x, 32)[..., :32, :] - whole[..., :32, :]).abs().max() < TOL
    assert (per_tile[..., :16, :] - whole[..., :16, :]).abs().max() > 1e-2


def family_translator(name: str, domains=("a", "b"), **cfg) -> Translator:
    cls = family_class(name)
    family = cls(config_from(cls.Config, cfg), list(domains), 32)
    torch.manual_seed(0)
    for net in family.nets.values():
        init_weights(net, 0.2)
    family.eval()
    return Translator(family, Path("test"))


STREAMED = {
    "cyclegan-resnet": ("cyclegan", {"ngf": 4, "n_blocks": 2}),
    "cyclegan-unet": ("cyclegan", {"generator": "unet", "ngf": 4, "n_downs": 5, "norm": "instance"}),
    "cut": ("cut", {"ngf": 4, "n_blocks": 1}),
    "discogan-batch": ("discogan", {"ngf": 4}),
    "discogan-instance": ("discogan", {"ngf": 4, "norm": "instance"}),
    "unit": ("shared-latent", {"ngf": 4, "n_blocks": 2}),  # a chain: encoder, then the other domain's decoder
    "stargan": ("stargan", {"ngf": 4, "n_blocks": 1}),  # the target code tiled over the image
    "ugatit-light": ("ugatit", {"ngf": 4, "n_blocks": 2, "light": True}),  # attention, AdaLIN from whole statistics
}


@pytest.mark.parametrize("case", STREAMED)
def test_every_family_translation_streams_equal(case):
    name, cfg = STREAMED[case]
    domains = ("a", "b", "c") if name == "stargan" else ("a", "b")
    tr = family_translator(name, domains, **cfg)
    x = torch.rand(2, 3, 70, 90, generator=torch.Generator().manual_seed(2)) * 2 - 1  # odd sizes: padded
    whole = tr.translate_tensor(x, "b", max_memory="64GB")
    assert whole.std() > 0.05
    for limits in (Budget(2**40, 16), Budget(2**40, 40, ram=0)):
        assert (tr.translate_tensor(x, "b", max_memory=limits) - whole).abs().max() < TOL, limits


def test_translations_that_cannot_stream_are_refused_clearly():
    """Layers streaming does not know (a deformable convolution reads as far as its offsets say) run untiled;
    --tile, or an image that does not fit the budget untiled, is one clear error."""
    tr = family_translator("cyclegan", generator="deform", ngf=4, n_blocks=1)
    x = torch.rand(1, 3, 40, 40) * 2 - 1
    assert tr.translate_tensor(x, "b").shape == x.shape
    with pytest.raises(ImxlateError, match="--tile"):
        tr.translate_tensor(x, "b", tile=16)
    with pytest.raises(ImxlateError, match="cannot be streamed"):
        tr.translate_tensor(x, "b", max_memory=Budget(tiling.memory_in_use(x.device) + 2**10))


def test_a_budget_streams_and_keeps_buffers_in_memory_while_they_fit():
    tr = family_translator("cyclegan", ngf=8, n_blocks=2)
    x = torch.rand(1, 3, 300, 332) * 2 - 1
    whole = tr.translate_tensor(x, "b", max_memory="64GB")
    watched = tr._watch("b", None, 1)
    rss = tiling.memory_in_use(x.device)
    tight = Budget(rss + int(watched.bytes_per_pixel * 300 * 332 * 0.5))  # half the untiled forward's need
    assert tiling.streams(watched, x, tight, "cyclegan")
    places, in_files = tiling._places(watched.program, x, 2**30)
    assert all(places.values()) and in_files == 0
    places, in_files = tiling._places(watched.program, x, 0)
    assert not any(places.values()) and in_files > 0
    assert (tr.translate_tensor(x, "b", max_memory=tight) - whole).abs().max() < TOL


def test_tiling_errors_are_clear():
    tr = family_translator("cyclegan", ngf=4, n_blocks=1)
    with pytest.raises(ImxlateError, match="--max-memory"):
        tr.translate_tensor(torch.zeros(1, 3, 8, 8), "b", max_memory="lots")
    with pytest.raises(ImxlateError, match="--max-memory"):
        tr.translate_tensor(torch.zeros(1, 3, 64, 64), "b", max_memory=1000)  # not even one tile fits
    with pytest.raises(ImxlateError, match="tile"):
        tr.translate_tensor(torch.zeros(1, 3, 8, 8), "b", tile=0)
    with pytest.raises(ImxlateError, match="fixed size"):
        family_translator("ugatit", ngf=4, n_blocks=1).translate_tensor(torch.zeros(1, 3, 8, 8), "b", tile=16)


INTERRUPTED = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, {tests!r})
    from test_tiling import family_translator
    from imxlate.tiling import Budget
    torch.set_num_threads(1)
    tr = family_translator("cyclegan", ngf=16, n_blocks=2)
    x = torch.rand(1, 3, 1024, 1024) * 2 - 1
    for _ in range(50):  # every buffer in a temporary file, small tiles: long enough to be interrupted
        tr.translate_tensor(x, "b", max_memory=Budget(2**40, 64, ram=0))
""")


def test_ctrl_c_while_streaming_leaves_no_temporary_file(tmp_path):
    """The spill files have no name: the folder is empty while they are open (seen through the process's file
    descriptors) and after a Ctrl-C, and the process closes them as it stops."""
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "OMP_NUM_THREADS": "1"}
    code = INTERRUPTED.format(tests=str(Path(__file__).parent))
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:
        seen, deadline = [], time.monotonic() + 120
        while not seen and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            fds = Path(f"/proc/{child.pid}/fd")
            try:
                seen = [os.readlink(fd) for fd in fds.iterdir() if os.readlink(fd).startswith(str(temp))]
            except OSError:  # a descriptor closed while it was listed
                continue
        assert seen, "no temporary buffer file was opened"
        assert list(temp.iterdir()) == []  # open, and already without a name
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert "KeyboardInterrupt" in err
    assert list(temp.iterdir()) == []


# ---- through the command line -------------------------------------------------------------------------

def model_file(folder: Path, ngf: int, n_blocks: int) -> Path:
    torch.manual_seed(0)
    family = CycleGAN(CycleGANConfig(ngf=ngf, n_blocks=n_blocks), ["a", "b"], 32)
    init_weights(family.nets, 0.2)
    path = folder / f"ngf{ngf}.safetensors"
    store.save_model(family, path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A CycleGAN model file with a tiny generator (ngf 1, one block): as fast as can be at 33 and 48 MP."""
    return model_file(tmp_path_factory.mktemp("model"), 1, 1)


def smooth(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)


def test_an_8k_png_and_a_48_mp_jpeg_translate_with_no_option(tmp_path, tiny_model):
    """Over the 4096 x 4096 pixels once refused by default; no pixel cap now, and neither file is a bomb."""
    smooth(7680, 4320).save(tmp_path / "frame8k.png")
    smooth(8000, 6000, 1).save(tmp_path / "photo48mp.jpg", quality=90)
    cli("translate", tmp_path / "frame8k.png", tmp_path / "photo48mp.jpg", "--to", "b", "--model", tiny_model,
        "--out", tmp_path / "out", "--quiet")
    assert Image.open(tmp_path / "out" / "frame8k.png").size == (7680, 4320)
    assert Image.open(tmp_path / "out" / "photo48mp.jpg").size == (8000, 6000)


def test_sizes_are_checked_against_the_budget_before_resizing(tmp_path, tiny_model):
    """--size 200000 would make a 2 x 10^10-pixel image of a small one: refused from the header, at once."""
    write_images(tmp_path / "in", 2, sizes=((40, 30),), exts=(".png",))
    start = time.monotonic()
    r = cli("translate", tmp_path / "in", "--to", "b", "--model", tiny_model, "--out", tmp_path / "out",
            "--size", "200000", "--max-memory", "4GB", "--quiet", ok=False)
    assert r.exit_code == 1 and "--max-memory" in r.output and "2 file(s) skipped" in r.output
    assert time.monotonic() - start < 30
    r = cli("translate", tmp_path / "in", "--to", "b", "--model", tiny_model, "--out", tmp_path / "capped",
            "--size", "100", "--max-pixels", "10000", "--quiet", ok=False)
    assert r.exit_code == 1 and "limit of 10000 pixels" in r.output
    cli("translate", tmp_path / "in", "--to", "b", "--model", tiny_model, "--out", tmp_path / "ok",
        "--size", "100", "--max-pixels", "20000", "--quiet")
    assert Image.open(tmp_path / "ok" / "img000.png").size == (133, 100)


def test_a_large_image_in_a_small_budget_streams_through_the_cli(tmp_path):
    """--max-memory below what the untiled forward needs (the process holds the rest): the output equals the
    untiled one, to 8-bit rounding."""
    model = model_file(tmp_path, 32, 1)
    smooth(600, 500).save(tmp_path / "in.png")
    cli("translate", tmp_path / "in.png", "--to", "b", "--model", model, "--out", tmp_path / "whole", "--quiet")
    watched = Translator.open(model, device="cpu")._watch("b", None, 1)
    assert watched.bytes_per_pixel > 4 * tiling.IMAGE_BYTES_PER_PIXEL
    cpu = torch.device("cpu")
    budget = tiling.memory_in_use(cpu) + 2 * tiling.image_bytes(600, 500) + int(watched.bytes_per_pixel * 600 * 500 / 4)
    cli("translate", tmp_path / "in.png", "--to", "b", "--model", model, "--out", tmp_path / "streamed",
        "--max-memory", str(budget), "--quiet")
    a, b = (np.asarray(Image.open(tmp_path / d / "in.png"), dtype=int) for d in ("whole", "streamed"))
    assert a.shape == b.shape and np.abs(a - b).max() <= 1


# ---- memory --------------------------------------------------------------------------------------------

def cyclegan(generator="resnet", ngf=4, **kw) -> Translator:
    cfg = CycleGANConfig(generator=generator, ngf=ngf, **kw)
    family = CycleGAN(cfg, ["a", "b"], 32)
    family.nets["G_ab"] = lively(family.nets["G_ab"])
    family.eval()
    return Translator(family, Path("test"))


LARGE = textwrap.dedent("""
    import json, resource, sys
    import torch
    from PIL import Image
    sys.path.insert(0, {tests!r})
    from test_tiling import cyclegan
    torch.set_num_threads(1)
    tr = cyclegan(n_blocks=2, ngf=24)
    img = Image.open({image!r}).convert("RGB")
    tr.translate(img.resize((64, 64)), "b")  # warm up: libraries loaded, pools made
    vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + 400 * 2**20, resource.RLIM_INFINITY))
    result = {{}}
    try:
        tr.translate(img, "b", max_memory="64GB")  # untiled: more than the limit allows
        result["untiled"] = "ok"
    except (RuntimeError, MemoryError) as e:
        result["untiled"] = "failed"
    tr.translate(img, "b").save({out!r})  # the default budget sees the limit and streams
    print(json.dumps(result))
""")


def test_large_image_is_streamed_under_an_address_space_limit(tmp_path):
    image, out = tmp_path / "large.png", tmp_path / "out.png"
    smooth(1500, 1500).save(image)
    code = LARGE.format(tests=str(Path(__file__).parent), image=str(image), out=str(out))
    env = {"OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1", "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.splitlines()[-1]) == {"untiled": "failed"}
    tr = cyclegan(n_blocks=2, ngf=24)
    expected = np.asarray(tr.translate(Image.open(image).convert("RGB"), "b", max_memory="64GB"), dtype=int)
    got = np.asarray(Image.open(out), dtype=int)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1  # 8-bit rounding of equal floats


FOLDER = textwrap.dedent("""
    import resource, sys
    import torch
    sys.path.insert(0, {tests!r})
    from test_tiling import cyclegan
    torch.set_num_threads(1)
    report = cyclegan(n_blocks=1).translate_folder([{folder!r}], "b", {out!r}, batch_size=4, progress=False)
    assert len(report.written) == {n} and not report.failed
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def test_folder_memory_does_not_grow_with_the_folder(tmp_path):
    """A folder of mixed sizes (no two alike, so no bucket ever fills): 5x the images, about the same peak.
    Holding every decoded image until the end, as size buckets used to, would add 32 images of ~800x800
    as float tensors (~250 MB). oneDNN's per-shape cache and the heap's growth are capped through the
    environment, as they must be set before torch starts (they added ~80 MB for 60 shapes otherwise)."""
    sizes = [(760 + 4 * i, 780 + 3 * i) for i in range(40)]
    peaks = {}
    for n in (8, 40):
        folder = tmp_path / f"in{n}"
        write_images(folder, n, sizes=sizes, exts=(".png",))
        code = FOLDER.format(tests=str(Path(__file__).parent), folder=str(folder), out=str(tmp_path / f"out{n}"), n=n)
        env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "2",
               "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "1"}
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        peaks[n] = int(run.stdout.split()[-1]) * 1024
    assert peaks[40] - peaks[8] < 100 * 2**20, peaks


def test_the_cpu_translates_one_image_at_a_time_by_default(tmp_path):
    """Batches cost time per image on the CPU (benchmarks/RESULTS.md), so folders go one image per forward
    there unless --batch-size says otherwise; the outputs do not depend on it."""
    assert default_batch_size(torch.device("cpu")) == 1 and default_batch_size(torch.device("cuda")) == 8
    write_images(tmp_path / "in", 6, sizes=((40, 36), (40, 36), (28, 44)), exts=(".png",))
    tr = cyclegan(n_blocks=1)
    seen = []
    hook = tr.family.nets["G_ab"].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    try:
        outs = {}
        for batch in (None, 4):
            seen.clear()
            report = tr.translate_folder([str(tmp_path / "in")], "b", tmp_path / f"out{batch}", batch_size=batch,
                                         progress=False)
            outs[batch] = [np.asarray(Image.open(p), dtype=int) for p in sorted(report.written)]
            assert len(outs[batch]) == 6 and not report.failed
            assert max(seen) == (1 if batch is None else 4), seen
    finally:
        hook.remove()
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(outs[None], outs[4]))  # 8-bit rounding of equal floats


def test_exported_module_pads_as_translate_does(tmp_path):
    from imxlate.export import exportable

    for generator, kw in (("resnet", {"n_blocks": 1}), ("unet", {"n_downs": 5})):
        tr = cyclegan(generator, **kw)
        module = exportable(tr.family, "b")
        x = torch.rand(1, 3, 23, 37)  # odd sizes; for the U-Net the padding is wider than the image
        with torch.inference_mode():
            exported = module(x)
        translated = (tr.translate_tensor(x * 2 - 1, "b") + 1) / 2
        assert (exported - translated.clamp(0, 1)).abs().max() < 1e-6, generator
