"""Tiled inference equals the untiled forward; large images are tiled within a memory limit; folder runs
keep a bounded memory; translate and exported graphs pad the same way."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imxlate.errors import ImxlateError
from imxlate.families.cyclegan import CycleGAN, CycleGANConfig
from imxlate.nets.common import init_weights
from imxlate.nets.resnet import ResnetGenerator
from imxlate.nets.unet import UnetGenerator
from imxlate.tiling import IMAGE_BYTES_PER_PIXEL, Geometry, bytes_per_pixel, choose_tile, geometry, tiled_forward
from imxlate.translate import Translator, default_batch_size

from conftest import write_images

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
def test_tiles_equal_the_whole_image(name):
    make, (h, w) = NETS[name]
    net = lively(make())
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        whole = net(x)
    assert whole.std() > 0.05 and (whole.abs() > 0.99).float().mean() < 0.5  # a real signal, not saturated
    for tile in (8, 36, 64):
        assert (tiled_forward(net, x, tile) - whole).abs().max() < TOL, tile
    # The margins matter: without them interior tiles see their own padding, and the test would see it.
    geo = geometry(net)
    narrow = Geometry(geo.multiple, geo.multiple, [geo.multiple] * len(geo.norm_halos))
    assert (tiled_forward(net, x, 32, narrow) - whole).abs().max() > 1e-3


def test_instance_norm_statistics_are_those_of_the_whole_image():
    """With margins wide enough but per-tile statistics the output differs: the global pass is needed."""
    net = lively(ResnetGenerator(ngf=4, n_blocks=1))
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    x[..., :32, :] *= 0.1  # the tiles differ in contrast, so their own statistics differ
    with torch.inference_mode():
        whole = net(x)
        per_tile = net(x[..., :32, :])  # the top tile normalised by itself
    assert (tiled_forward(net, x, 32)[..., :32, :] - whole[..., :32, :]).abs().max() < TOL
    assert (per_tile[..., :16, :] - whole[..., :16, :]).abs().max() > 1e-2


def cyclegan(generator="resnet", ngf=4, **kw) -> Translator:
    cfg = CycleGANConfig(generator=generator, ngf=ngf, **kw)
    family = CycleGAN(cfg, ["a", "b"], 32)
    family.nets["G_ab"] = lively(family.nets["G_ab"])
    family.eval()
    return Translator(family, Path("test"))


@pytest.mark.parametrize("generator,kw,large", [("resnet", {"n_blocks": 2}, (300, 333)),
                                                ("unet", {"n_downs": 5, "norm": "instance"}, (700, 733))])
def test_translate_tiles_odd_sizes_and_picks_tiles_by_memory(generator, kw, large):
    tr = cyclegan(generator, **kw)
    x = torch.rand(1, 3, 83, 101) * 2 - 1
    whole = tr.translate_tensor(x, "b", max_memory="64GB")
    assert whole.shape == x.shape
    for tile in (8, 40):
        assert (tr.translate_tensor(x, "b", tile=tile) - whole).abs().max() < TOL
    # A budget below the whole image's estimate: tiled automatically, same result.
    net = tr.check_tiling("b")
    assert net is tr.family.nets["G_ab"]
    x = torch.rand(1, 3, *large) * 2 - 1  # larger than a tile and its margins (the U-Net's are 224 px)
    whole = tr.translate_tensor(x, "b", max_memory="64GB")
    m = tr.family.size_multiple
    padded = (-(-large[0] // m) * m, -(-large[1] // m) * m)
    budget = int((bytes_per_pixel(net, m) * 0.6 + IMAGE_BYTES_PER_PIXEL) * padded[0] * padded[1])
    assert choose_tile(net, geometry(net), 1, *padded, budget) is not None
    assert (tr.translate_tensor(x, "b", max_memory=budget) - whole).abs().max() < TOL


def test_tiling_errors_are_clear():
    tr = cyclegan(n_blocks=1)
    with pytest.raises(ImxlateError, match="--max-memory"):
        tr.translate_tensor(torch.zeros(1, 3, 8, 8), "b", max_memory="lots")
    with pytest.raises(ImxlateError, match="--max-memory"):
        tr.translate_tensor(torch.zeros(1, 3, 64, 64), "b", max_memory=1000)  # not even one tile fits
    with pytest.raises(ImxlateError, match="tile"):
        tr.translate_tensor(torch.zeros(1, 3, 8, 8), "b", tile=0)


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
    tr.translate(img, "b").save({out!r})  # the default budget sees the limit and tiles
    print(json.dumps(result))
""")


def test_large_image_is_tiled_under_an_address_space_limit(tmp_path):
    image, out = tmp_path / "large.png", tmp_path / "out.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).resize((1500, 1500), Image.BILINEAR).save(image)
    code = LARGE.format(tests=str(Path(__file__).parent), image=str(image), out=str(out))
    # oneDNN keeps a primitive (with its scratch memory) per input shape, up to 1024 of them; tiles come in
    # many shapes (edges, corners, one margin per norm), so under a hard limit the cache must stay small.
    env = {"OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "2",
           "PATH": "/usr/bin:/bin"}
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
