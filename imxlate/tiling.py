"""Tiled inference that equals the untiled forward, so images of any size fit in a bounded memory.

Cutting an image into tiles changes two things, and both are undone here:

* Convolutions near a tile's edge see the tile's padding instead of the neighbouring pixels. Each
  tile is therefore run with a margin (halo) as wide as the network's receptive field, and only its
  core is kept. Tile edges fall on multiples of the network's total downsampling, so strided layers
  see the same pixel grid as on the whole image; a tile edge that is an image edge is padded by the
  network itself exactly as the whole image is.
* Instance normalisation uses statistics of the whole image. Before the tiles are run, the mean and
  variance that every instance norm sees are computed over the whole image, one norm after the
  other (each one's statistics depend on the norms before it), streaming the tiles each time as far
  as that norm only. The tiles are then run with those statistics. Batch norm (eval mode, running
  statistics) and no norm need nothing.

The price of equality is time: one streamed pass per instance-norm layer (each stopping at its
norm) before the final pass; memory stays that of one tile. Works on imxlate's ResnetGenerator and
UnetGenerator (nets/resnet.py, nets/unet.py) and refuses other layer types.
"""
from __future__ import annotations

import copy
import ctypes
import ctypes.util
import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn as nn

from .errors import ImxlateError
from .nets.resnet import ResnetBlock, ResnetGenerator
from .nets.unet import UnetBlock, UnetGenerator

TILEABLE = (ResnetGenerator, UnetGenerator)
_POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Dropout, nn.Identity, nn.BatchNorm2d)


def _global_norm(m: nn.Module) -> bool:
    """An instance norm that normalises with the statistics of the input itself (not running ones)."""
    return isinstance(m, nn.InstanceNorm2d) and not (m.track_running_stats and not m.training)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass
class Geometry:
    """How far outputs reach into the input, in image pixels: `halo` for the whole network and
    `norm_halos[i]` up to instance norm i; `multiple`: the total downsampling (tile edges fall on it)."""
    multiple: int
    halo: int
    norm_halos: list[int]


def geometry(net: nn.Module) -> Geometry:
    """Walk the layers in execution order, adding up each one's reach (scaled to image pixels)."""
    if not isinstance(net, TILEABLE):
        raise ImxlateError(f"tiling works on ResNet and U-Net generators, not {type(net).__name__}; "
                           "translate without tiling (shrink large images with --size)")
    scale, reach, pending, most, norm_reach = 1, 0, 0, 1, []
    for m in net.modules():
        if list(m.children()):
            continue
        if isinstance(m, nn.ReflectionPad2d):
            pending = max(m.padding)
            continue
        if isinstance(m, nn.Conv2d):
            k, p, d, s = max(m.kernel_size), max(m.padding) + pending, max(m.dilation), max(m.stride)
            reach += max(p, k - 1 - p) * d * scale
            scale *= s
        elif isinstance(m, nn.ConvTranspose2d):
            k, p, s = max(m.kernel_size), max(m.padding), max(m.stride)
            reach += (math.ceil(max(p, k - 1 - p) / s) + 1) * scale
            scale //= s
        elif isinstance(m, nn.Upsample) and m.mode == "nearest" and float(m.scale_factor) == int(m.scale_factor):
            reach += scale
            scale //= int(m.scale_factor)
        elif _global_norm(m):
            norm_reach.append(reach)
        elif not isinstance(m, _POINTWISE + (nn.InstanceNorm2d,)):
            raise ImxlateError(f"tiling does not know the layer {type(m).__name__} in this generator; "
                               "translate without tiling (shrink large images with --size)")
        pending = 0
        most = max(most, scale)
    return Geometry(most, _round_up(reach + most, most), [_round_up(r + most, most) for r in norm_reach])


# ---- the norms of the working copy ---------------------------------------------------------------

class _Stop(Exception):
    """Ends a statistics pass at the norm whose statistics it gathers."""


class _Run:
    """What the norms of a working copy do now: norms before `known` use `stats`; norm `known` gathers
    (count, mean, M2) over the rows/columns `core` (image pixels within the tile) and stops the pass."""

    def __init__(self):
        self.stats: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.known = 0
        self.core = (0, 0, 0, 0)
        self.tile_h = 1
        self.acc = None


class _TiledNorm(nn.Module):
    def __init__(self, norm: nn.InstanceNorm2d, index: int, run: _Run):
        super().__init__()
        self.norm, self.index, self.run = norm, index, run

    def forward(self, x):
        run = self.run
        if self.index < run.known:
            mean, var = run.stats[self.index]
            y = (x - mean[:, :, None, None]) * torch.rsqrt(var + self.norm.eps)[:, :, None, None]
            if self.norm.affine:
                y = y * self.norm.weight[None, :, None, None] + self.norm.bias[None, :, None, None]
            return y
        if self.index == run.known:
            s = run.tile_h // x.shape[-2]  # this layer's scale: image pixels per activation pixel
            t, b, l, r = (v // s for v in run.core)
            core = x[..., t:b, l:r].float()
            var, mean = torch.var_mean(core, dim=(2, 3), unbiased=False)
            n = core.shape[-1] * core.shape[-2]
            part = (n, mean.double(), var.double() * n)
            run.acc = part if run.acc is None else _combine(run.acc, part)
            raise _Stop
        raise AssertionError("a norm after the one being measured ran")


def _combine(a, b):
    """Chan et al.: the (count, mean, sum of squared deviations) of two parts together."""
    (na, ma, qa), (nb, mb, qb) = a, b
    n = na + nb
    d = mb - ma
    return n, ma + d * nb / n, qa + qb + d * d * na * nb / n


def _working_copy(net: nn.Module) -> tuple[nn.Module, _Run, int]:
    """A copy of `net` in eval mode whose instance norms are driven by a _Run -> (copy, run, count)."""
    work, run = copy.deepcopy(net).eval(), _Run()
    names = [name for name, m in work.named_modules() if _global_norm(m)]  # in execution order
    for i, name in enumerate(names):
        parent, _, attr = name.rpartition(".")
        setattr(work.get_submodule(parent), attr, _TiledNorm(work.get_submodule(name), i, run))
    return work, run, len(names)


def _libc_trim():
    """glibc's malloc_trim, or None (another C library, or none found)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _libc_trim()


def _release_freed_memory() -> None:
    """Hand the heap's free memory back to the system. Tiles come in many shapes (edges, one margin per norm),
    and glibc keeps the activations freed by one tile in pieces that the next tile's do not fit: without this,
    the peak of a tiled run grew with the image (benchmarks/RESULTS.md)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _spans(size: int, tile: int, halo: int):
    """(core start, core end, tile start, tile end) along one axis."""
    for a in range(0, size, tile):
        b = min(size, a + tile)
        yield a, b, max(0, a - halo), min(size, b + halo)


@torch.inference_mode()
def tiled_forward(net: nn.Module, x: torch.Tensor, tile: int, geo: Geometry | None = None) -> torch.Tensor:
    """net(x) computed in tiles of `tile` x `tile` pixels (plus margins), equal to the untiled eval-mode
    forward up to float rounding. x: (B, C, H, W), H and W multiples of geometry(net).multiple."""
    geo = geo or geometry(net)
    m = geo.multiple
    h, w = x.shape[-2:]
    if h % m or w % m:
        raise ValueError(f"tiled_forward needs sizes that are multiples of {m}, not {h}x{w}")
    tile = _round_up(max(tile, m), m)
    work, run, count = _working_copy(net)

    def tiles(halo):
        for t, b, ty, by in _spans(h, tile, halo):
            for l, r, tx, rx in _spans(w, tile, halo):
                run.core, run.tile_h = (t - ty, b - ty, l - tx, r - tx), by - ty
                yield (t, b, l, r), x[..., ty:by, tx:rx]

    for i in range(count):
        run.known, run.acc = i, None
        for _, part in tiles(geo.norm_halos[i]):
            try:
                work(part)
            except _Stop:
                pass
            _release_freed_memory()
        n, mean, q = run.acc
        run.stats.append((mean.to(x.device, torch.float32), (q / n).to(x.device, torch.float32)))
    run.known = count
    out = None
    for (t, b, l, r), part in tiles(geo.halo):
        y = work(part)
        if out is None:
            out = torch.empty(*x.shape[:-3], y.shape[-3], h, w, dtype=y.dtype, device=y.device)
        ct, cl = run.core[0], run.core[2]
        out[..., t:b, l:r] = y[..., ct:ct + b - t, cl:cl + r - l]
        del y
        _release_freed_memory()
    return out


# ---- memory -------------------------------------------------------------------------------------

IMAGE_BYTES_PER_PIXEL = 2 * 6 * 4  # input and output (float32 RGB) and the copies made converting them
_bytes_per_pixel: "weakref.WeakKeyDictionary[nn.Module, float]" = weakref.WeakKeyDictionary()


def bytes_per_pixel(net: nn.Module, multiple: int) -> float:
    """Estimated peak bytes of activations per input pixel (per image) of an untiled forward of `net`:
    measured once on a small input, following what is alive at each layer (its input and output, plus
    the inputs that residual blocks and U-Net skips hold while their inner layers run)."""
    if net in _bytes_per_pixel:
        return _bytes_per_pixel[net]
    held, peak, hooks = [], [0], []

    def leaf(m, args, out):
        peak[0] = max(peak[0], sum(held) + args[0].numel() + out.numel())

    def enter(m, args):
        held.append(args[0].numel())

    def leave(m, args, out):
        held.pop()
        peak[0] = max(peak[0], sum(held) + args[0].numel() + 2 * out.numel())

    for mod in net.modules():
        if isinstance(mod, (ResnetBlock, UnetBlock)):
            hooks += [mod.register_forward_pre_hook(enter), mod.register_forward_hook(leave)]
        elif not list(mod.children()):
            hooks.append(mod.register_forward_hook(leaf))
    side = _round_up(64, multiple)
    p = next(net.parameters())
    try:
        with torch.inference_mode():
            net(torch.zeros(1, 3, side, side, device=p.device, dtype=p.dtype))
    finally:
        for hk in hooks:
            hk.remove()
    # x1.6: convolution workspaces and allocator slack (measured on the CPU: 1.55x for ResNet generators)
    _bytes_per_pixel[net] = 1.6 * peak[0] * p.element_size() / (side * side)
    return _bytes_per_pixel[net]


def choose_tile(net: nn.Module, geo: Geometry, batch: int, height: int, width: int, budget: int) -> int | None:
    """None when the untiled forward fits in `budget` bytes, else the largest tile (pixels per side) whose
    forward does; an ImxlateError when not even the smallest one fits. The whole-image tensors around the
    forward count too (IMAGE_BYTES_PER_PIXEL)."""
    bpp = bytes_per_pixel(net, geo.multiple) * batch
    left = budget - IMAGE_BYTES_PER_PIXEL * batch * height * width
    if bpp * height * width <= left:
        return None
    tile = _round_up(max(height, width), geo.multiple)
    while left > 0 and tile > geo.multiple:
        tile = _round_up(tile // 2, geo.multiple)
        if bpp * min(height, tile + 2 * geo.halo) * min(width, tile + 2 * geo.halo) <= left:
            return tile
    raise ImxlateError(f"a {width}x{height} image needs more than the memory budget of {budget / 2**30:.2f} GiB "
                       "even in tiles; raise --max-memory or shrink it with --size")
