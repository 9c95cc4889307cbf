"""Any image size at the cost of one forward: the memory budget, the tile plan, and translations streamed
one stage at a time over the whole image.

An image whose forward fits the memory budget (`--max-memory`, the whole process's) is translated in one
piece. A larger one is *streamed*, with the same result to float rounding:

* The translation (the family's networks, called in a chain, as watched on a small probe) is compiled into
  stages. A stage runs one convolution (with the padding and upsampling before it, the pointwise layers
  after it) over the whole image, tile by tile. Each tile carries only that layer's margin, on a grid
  aligned to its downsampling, and a tile edge that is an image edge is padded by the layer itself, as the
  whole image is. The stage writes its output to a whole-image buffer and gathers the statistics (count,
  mean, squared deviations, Chan et al.) of the norm after it: an instance norm, whose statistics need
  every pixel, ends a stage, as does a join (a residual sum, a U-Net concatenation).
* Pointwise work - the norm once its statistics are complete, activations, batch norm in eval mode, residual
  sums, concatenations, a StarGAN's target code, U-GAT-IT's attention weights - is done when the next stage
  reads its tiles. So every convolution runs once per pixel, plus its margins: about the cost of one
  untiled forward, less on the CPU, whose caches hold a tile (benchmarks/RESULTS.md).
* A buffer lives in memory (on the device) while it fits what the budget leaves after the tiles, else in an
  unnamed temporary file (in TMPDIR), read and written by position: such a file has no name to leave
  behind, and the system frees it when the process ends, by Ctrl-C or a kill. (Memory-mapped pages would
  count as the process's own memory until the system runs short of it, so the budget would not hold.)

Streams the ResNet, U-Net, encoder-decoder and U-GAT-IT light generators and chains of them (CycleGAN, CUT,
DiscoGAN, UNIT, StarGAN, U-GAT-IT light), with instance, batch, layer-instance or no norm. Other layers (a
deformable convolution reads as far as its offsets say) make a translation one that runs untiled, and one
refused when it does not fit the budget.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import shutil
import sys
import tempfile
import weakref
from dataclasses import dataclass, replace
from fractions import Fraction

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from .config import check_at_least
from .errors import ImxlateError
from .nets.discogan import EncoderDecoderGenerator
from .nets.resnet import ResnetBlock, ResnetGenerator
from .nets.stargan import ResidualBlock, StarGenerator, TrackedInstanceNorm2d
from .nets.ugatit import EPS as LIN_EPS
from .nets.ugatit import ILN, AdaLINBlock, UGATITGenerator
from .nets.unet import UnetBlock, UnetGenerator
from .nets.unit import Decoder, Encoder

TILEABLE = (ResnetGenerator, UnetGenerator)  # the generators --steady and --compile work on
GIB = 2**30
# Whole-image memory around a streamed forward, per pixel: the decoded image, the float input and its padded
# copy, the output, the crop of it and data.to_image's conversions of it to 8 bits (measured with
# benchmarks/translate_memory.py, benchmarks/RESULTS.md).
IMAGE_BYTES_PER_PIXEL = 64
DECODED_BYTES_PER_PIXEL = 8  # an image decoded to be resized: its RGB(A) pixels and a conversion of them
PROBE_SIDE = 64  # probes of a translation are this size, rounded up to the family's size multiple
# The most memory one tile of a stage may take. On the CPU tiles that stay near its caches are faster than larger
# ones, and than the untiled forward (at 1024x1024: 16 MiB 0.86x its time, 4 MiB 0.98x, 256 MiB 1.11x;
# benchmarks/RESULTS.md); a GPU wants large tiles (not measured).
CPU_TILE_BYTES = 16 * 2**20
GPU_TILE_BYTES = 2**30


# ---- the memory budget and the options, parsed once per run --------------------------------------------

def parse_memory(value) -> int:
    """Bytes from an int or a string such as '4GB', '4G', '512MB', '2GiB' (units of 1024)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = int(value)
    else:
        text = str(value).strip().upper().replace("IB", "B")
        units = {"TB": 2**40, "GB": 2**30, "MB": 2**20, "KB": 2**10, "T": 2**40, "G": 2**30, "M": 2**20,
                 "K": 2**10, "B": 1}
        unit = next((u for u in units if text.endswith(u)), "")
        try:
            n = int(float(text[:len(text) - len(unit)]) * units.get(unit, 1))
        except ValueError:
            raise ImxlateError(f"--max-memory {value}: give a size such as 4GB or 512MB") from None
    if n <= 0:
        raise ImxlateError(f"--max-memory {value}: give a size above zero, such as 4GB")
    return n


def memory_in_use(device: torch.device) -> int:
    """Bytes this process holds now: on a GPU what torch has allocated there, else the resident set size."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        import resource  # the peak, where the current size cannot be read: an upper bound

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def default_memory_budget(device: torch.device) -> int:
    """The memory a run may use, the whole process: what it holds now plus half the RAM available now (Linux
    MemAvailable; half the physical RAM elsewhere), and no more than half of what an address-space limit
    (ulimit -v) leaves; on a GPU, what torch holds there plus 80% of its free memory."""
    if device.type == "cuda":
        return memory_in_use(device) + int(torch.cuda.mem_get_info(device)[0] * 0.8)
    try:
        room = _meminfo_kb("/proc/meminfo", "MemAvailable:") * 1024 // 2
    except (OSError, StopIteration, ValueError):
        room = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            room = min(room, max(0, limit - _meminfo_kb("/proc/self/status", "VmSize:") * 1024) // 2)
    except (ImportError, OSError, StopIteration, ValueError):
        pass
    return memory_in_use(device) + room


def _meminfo_kb(path: str, key: str) -> int:
    with open(path) as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


@dataclass(frozen=True)
class Budget:
    """What a run may use: `total` bytes (the whole process's; on a GPU torch's memory there), tiles of `tile`
    image pixels a side when forced, and `ram`: bytes of whole-image buffers kept in memory (None: what the
    total leaves after the tiles; 0 puts every buffer in a temporary file)."""
    total: int
    tile: int | None = None
    ram: int | None = None


def budget(max_memory=None, device: torch.device | str = "cpu", tile: int | None = None) -> Budget:
    """--max-memory (bytes, '4GB', a Budget, or None: default_memory_budget) and --tile, checked and parsed once
    per run."""
    check_tile(tile)
    if isinstance(max_memory, Budget):
        return replace(max_memory, tile=tile) if tile else max_memory
    device = torch.device(device)
    total = parse_memory(max_memory) if max_memory is not None else default_memory_budget(device)
    return Budget(total, tile)


def check_tile(tile: int | None) -> None:
    """Refuse a tile side below one pixel."""
    check_at_least({"tile": tile}, 1)


def image_bytes(width: int, height: int, batch: int = 1) -> int:
    """Memory of the whole-image tensors of translating an image of this size (see IMAGE_BYTES_PER_PIXEL)."""
    return IMAGE_BYTES_PER_PIXEL * batch * width * height


def sized(width: int, height: int, size: int | None) -> tuple[int, int]:
    """The size an image is translated at: with --size, its short side scaled to `size`."""
    if not size:
        return width, height
    s = size / min(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def check_fits(width: int, height: int, limits: Budget, device: torch.device,
               decoded: tuple[int, int] | None = None) -> str | None:
    """Why an image translated at this size cannot be within the budget, or None: checked from its header,
    before it is decoded or resized (`decoded`: its size in the file, when it is resized)."""
    need = image_bytes(width, height) + (DECODED_BYTES_PER_PIXEL * decoded[0] * decoded[1] if decoded else 0)
    free = limits.total - memory_in_use(device)
    if need <= free:
        return None
    return (f"{width}x{height} pixels ({width * height / 1e6:.1f} MP) needs about {need / GIB:.1f} GiB for the "
            f"image alone, more than the {max(free, 0) / GIB:.1f} GiB that --max-memory leaves; raise "
            "--max-memory or shrink it with --size")


# ---- padding -------------------------------------------------------------------------------------------

def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B,C,H,W) to multiples of `multiple`, split as evenly as can be (the extra pixel after), by
    mirroring at the edges (as reflection padding, and again back and forth when the padding is wider
    than the image) -> (padded, (top, left)). The one padding of translate and of exported graphs:
    shape arithmetic and index_select only, so a trace keeps it for every size."""
    h, w = x.shape[-2], x.shape[-1]
    ph, pw = (-h) % multiple, (-w) % multiple
    top, left = ph // 2, pw // 2
    x = x.index_select(-2, _mirrored(h, top, ph, x.device))
    return x.index_select(-1, _mirrored(w, left, pw, x.device)), (top, left)


def _mirrored(n, before, total, device) -> torch.Tensor:
    """Indices into 0..n-1 of positions -before .. n+total-before-1, reflected at the edges (period 2n-2)."""
    i = torch.arange(n + total, device=device) - before
    period = torch.zeros((), dtype=i.dtype, device=device) + (2 * n - 2 + 1 // n)  # 1 // n: 1 for a 1-px side
    k = torch.remainder(i, period)  # a tensor divisor: exporters take it where a symbolic scalar fails
    return torch.where(k < n, k, 2 * n - 2 - k)


# ---- how far layers reach --------------------------------------------------------------------------------

_SPATIAL = (nn.ReflectionPad2d, nn.ZeroPad2d, nn.Conv2d, nn.ConvTranspose2d, nn.Upsample)
_CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)
_POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Dropout, nn.Identity)


def _global_norm(m: nn.Module) -> bool:
    """An instance norm that normalises with the statistics of the input itself (not running ones)."""
    return isinstance(m, nn.InstanceNorm2d) and (type(m) is TrackedInstanceNorm2d
                                                 or not (m.track_running_stats and not m.training))


def _pointwise(m: nn.Module) -> bool:
    """A layer that maps each pixel on its own: activations, and norms with running statistics."""
    running = isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.track_running_stats and not m.training
    return isinstance(m, _POINTWISE) or (running and not _global_norm(m))


def _round_up(n, multiple: int) -> int:
    return -(-math.ceil(n) // multiple) * multiple


class _NotStreamable(Exception):
    """A layer or structure that streaming does not know (its name says which)."""


@dataclass
class Geometry:
    """How far outputs reach into the input, in input pixels (`halo`, a multiple of `multiple`), and the
    largest downsampling on the way (`multiple`: tile edges fall on it)."""
    multiple: int
    halo: int


def _reach(layers: list[nn.Module]) -> tuple[Geometry, Fraction]:
    """The Geometry of local layers run in order, and their scale (input pixels per output pixel)."""
    scale, reach, pending, most = Fraction(1), Fraction(0), 0, Fraction(1)
    for m in layers:
        if isinstance(m, (nn.ReflectionPad2d, nn.ZeroPad2d)):
            pending = max(m.padding)
            continue
        if isinstance(m, nn.Conv2d) and not isinstance(m.padding, str):
            k, p, d, s = max(m.kernel_size), max(m.padding) + pending, max(m.dilation), max(m.stride)
            reach += max(p, k - 1 - p) * d * scale
            scale *= s
        elif isinstance(m, nn.ConvTranspose2d):
            k, p, s = max(m.kernel_size), max(m.padding), max(m.stride)
            reach += (math.ceil(max(p, k - 1 - p) / s) + 1) * scale
            scale /= s
        elif (isinstance(m, nn.Upsample) and m.mode == "nearest" and m.size is None
              and float(m.scale_factor) == int(m.scale_factor)):
            reach += scale
            scale /= int(m.scale_factor)
        elif not _pointwise(m):
            raise _NotStreamable(type(m).__name__)
        pending = 0
        most = max(most, scale)
    if most.denominator != 1:
        raise _NotStreamable("a fractional stride")
    return Geometry(int(most), _round_up(reach, int(most))), scale


def geometry(net: nn.Module) -> Geometry:
    """The Geometry of a ResNet or U-Net generator's layers in execution order (skips reach less)."""
    try:
        if not isinstance(net, TILEABLE):
            raise _NotStreamable(type(net).__name__)
        return _reach([m for m in net.modules() if not list(m.children()) and not _global_norm(m)])[0]
    except _NotStreamable as e:
        raise ImxlateError(f"tiling does not know {e} in this generator; translate without tiling (shrink "
                           "large images with --size)") from None


# ---- a translation as stages over whole-image buffers ------------------------------------------------------

class _Buffer:
    """A whole-image activation (B, channels, H/step, W/step), written by one stage, read by later ones."""

    def __init__(self, channels: int, step: Fraction):
        self.channels, self.step = channels, step
        self.last_use = -1  # the last stage that reads it


# What a stage reads: a value pointwise over buffers, evaluated on each tile (_evaluate).

@dataclass(eq=False)
class _Read:
    buf: _Buffer


@dataclass(eq=False)
class _Map:
    value: object
    fn: object  # a pointwise layer, a _Norm or a _LayerInstanceNorm


@dataclass(eq=False)
class _Add:
    a: object
    b: object


@dataclass(eq=False)
class _Cat:
    parts: list


@dataclass(eq=False)
class _Code:
    """Constant channels (a StarGAN target code (B, k)), the same at every pixel."""
    code: torch.Tensor


def _channels(v) -> int:
    if isinstance(v, _Read):
        return v.buf.channels
    if isinstance(v, _Cat):
        return sum(_channels(p) for p in v.parts)
    if isinstance(v, _Code):
        return v.code.shape[1]
    return _channels(v.value if isinstance(v, _Map) else v.a)


def _reads(v) -> list[_Buffer]:
    if isinstance(v, _Read):
        return [v.buf]
    if isinstance(v, _Map):
        return _reads(v.value)
    parts = [v.a, v.b] if isinstance(v, _Add) else v.parts if isinstance(v, _Cat) else []
    return [b for p in parts for b in _reads(p)]


class _Stats:
    """The statistics a stage gathers for the norm after it (a key: the numbers are a _Run's)."""


def _combine(a, b):
    """Chan et al.: the (count, mean, sum of squared deviations) of two parts together."""
    (na, ma, qa), (nb, mb, qb) = a, b
    n = na + nb
    d = mb - ma
    return n, ma + d * nb / n, qa + qb + d * d * na * nb / n


class _Norm:
    """An instance norm applied with the statistics of its whole input (gathered by the stage that wrote it)."""

    def __init__(self, norm: nn.InstanceNorm2d, stats: _Stats):
        self.norm, self.stats = norm, stats

    def __call__(self, x: torch.Tensor, owned: bool, run: "_Run") -> torch.Tensor:
        """The norm of x, in place when x is `owned` (a tensor made for this tile, not a view of a buffer)."""
        mean, rstd = run.normalisers(self.stats, self.norm.eps)
        x = x.float()
        y = (x.sub_(mean) if owned else x - mean).mul_(rstd)
        if self.norm.affine:
            y = y.mul_(self.norm.weight[None, :, None, None]).add_(self.norm.bias[None, :, None, None])
        return y


class _LayerInstanceNorm:
    """U-GAT-IT's rho * IN(x) + (1 - rho) * LN(x), scaled by gamma and shifted by beta (an ILN's own, or an
    AdaLIN's from a _Style), all from the whole image's statistics: the layer's are the channels' pooled."""

    def __init__(self, rho: torch.Tensor, stats: _Stats, gamma=None, beta=None, style: "_Style | None" = None):
        self.rho, self.stats, self.gamma, self.beta, self.style = rho, stats, gamma, beta, style

    def __call__(self, x: torch.Tensor, owned: bool, run: "_Run") -> torch.Tensor:
        scale, shift = run.cached(self, self._affine)
        x = x.float()
        return (x.mul_(scale) if owned else x * scale).add_(shift)

    def _affine(self, run: "_Run") -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) per image and channel, (B, C, 1, 1): the norm and its gamma and beta in one."""
        n, mean, q = run.acc[self.stats]  # per channel (B, C)
        layer_mean = mean.mean(1, keepdim=True)
        layer_var = (q.sum(1, keepdim=True) + n * (mean - layer_mean).square().sum(1, keepdim=True)) \
            / (n * mean.shape[1])
        rstd, layer_rstd = torch.rsqrt(q / n + LIN_EPS), torch.rsqrt(layer_var + LIN_EPS)
        rho = self.rho.double()
        scale = rho * rstd + (1 - rho) * layer_rstd
        shift = -(rho * mean * rstd + (1 - rho) * layer_mean * layer_rstd)
        gamma, beta = self.style(run) if self.style else (self.gamma, self.beta)
        gamma, beta = gamma.double().expand_as(scale), beta.double().expand_as(scale)
        return ((scale * gamma).float()[:, :, None, None], (shift * gamma + beta).float()[:, :, None, None])


class _Style:
    """U-GAT-IT light's gamma and beta (B, C): its MLP on the channel means of the attended map (a stage's
    statistics)."""

    def __init__(self, net: UGATITGenerator, stats: _Stats):
        self.net, self.stats = net, stats

    def __call__(self, run: "_Run") -> tuple[torch.Tensor, torch.Tensor]:
        return run.cached(self, self._style)

    def _style(self, run: "_Run") -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net.mlp(run.acc[self.stats][1].float())
        return self.net.gamma(h), self.net.beta(h)


class _ChannelScale(nn.Module):
    """x times a weight per channel (U-GAT-IT's attention: the CAM logits' weights)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = weight

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1)


@dataclass(eq=False)
class _Stage:
    """Writes `value`, run through the local `layers`, to the buffer `out`, gathering `stats` when a norm
    follows. Filled when the program is finished: geometry (in input pixels of the stage), `ratio` (output
    pixels per input pixel) and `work` (bytes per input pixel of a tile)."""
    value: object
    layers: list
    out: _Buffer
    stats: _Stats | None = None
    geometry: Geometry | None = None
    ratio: Fraction = Fraction(1)
    work: float = 0.0


@dataclass
class _Lazy:
    """A value during compilation: pointwise over buffers, then local layers not yet written anywhere."""
    value: object
    layers: tuple = ()


# Networks whose forward runs these children one after the other.
_CHAINS = {ResnetGenerator: ("model",), UnetGenerator: ("model",), EncoderDecoderGenerator: ("main",),
           Encoder: ("private", "shared"), Decoder: ("shared", "private")}


class _Compiler:
    """Turns networks into stages, walking their modules in execution order (each known type's forward)."""

    def __init__(self):
        self.stages: list[_Stage] = []

    def stage(self, lz: _Lazy, stats: bool = False) -> _Buffer:
        """A new stage writing `lz` to a new buffer -> the buffer."""
        out_ch, step = _channels(lz.value), _step(lz.value)
        for m in lz.layers:
            out_ch = getattr(m, "out_channels", out_ch)
        step *= _reach(list(lz.layers))[1]
        st = _Stage(lz.value, list(lz.layers), _Buffer(out_ch, step), _Stats() if stats else None)
        self.stages.append(st)
        return st.out

    def settle(self, lz: _Lazy):
        """A pointwise value equal to `lz` (its local layers written to a buffer, if it has any)."""
        return _Read(self.stage(lz)) if lz.layers else lz.value

    def shared(self, lz: _Lazy):
        """A value that two paths read: settled, and a join written out so that joins do not nest."""
        v = self.settle(lz)
        inner = v
        while isinstance(inner, _Map):
            inner = inner.value
        return v if isinstance(inner, _Read) else _Read(self.stage(_Lazy(v)))

    def walk(self, m: nn.Module, lz: _Lazy, extra: tuple = ()) -> _Lazy:
        """`lz` through module `m` (its forward, by its type)."""
        if extra and type(m) is not StarGenerator:
            raise _NotStreamable(f"{type(m).__name__} called with more than the image")
        if type(m) in _CHAINS:
            for name in _CHAINS[type(m)]:
                lz = self.walk(getattr(m, name), lz)
            return lz
        if type(m) is StarGenerator:  # the target code is tiled over the image as extra input channels
            return self.walk(m.main, _Lazy(_Cat([self.settle(lz), _Code(extra[0].to(torch.float32))])))
        if type(m) is nn.Sequential:
            for child in m:
                lz = self.walk(child, lz)
            return lz
        if type(m) in (ResnetBlock, ResidualBlock):  # x + block(x)
            x = self.shared(lz)
            return _Lazy(_Add(x, self.settle(self.walk(m.conv_block if type(m) is ResnetBlock else m.main,
                                                       _Lazy(x)))))
        if type(m) is UnetBlock:
            return self.walk(m.model, lz) if m.outermost else self.unet_level(m, lz)
        if type(m) is UGATITGenerator and m.light:
            return self.ugatit(m, lz)
        return self.leaf(m, lz)

    def ugatit(self, m: UGATITGenerator, lz: _Lazy) -> _Lazy:
        """U-GAT-IT light's translation (its CAM logits and heatmap are for training): the encoder; the map
        weighed by the attention, whose channel means give the decoder's gamma and beta; AdaLIN blocks."""
        x = self.settle(self.walk(m.encoder, lz))
        attended = _Cat([_Map(x, _ChannelScale(m.cam.gap_fc.weight)), _Map(x, _ChannelScale(m.cam.gmp_fc.weight))])
        self.stage(_Lazy(attended, (m.cam.conv1x1, m.cam.activation)), stats=True)
        x, style = _Read(self.stages[-1].out), _Style(m, self.stages[-1].stats)
        for block in m.blocks:
            x = self.adalin_block(block, x, style)
        return self.walk(m.decoder, _Lazy(x))

    def adalin_block(self, block: AdaLINBlock, x, style: _Style):
        """x + AdaLIN(conv(relu(AdaLIN(conv(x))))) -> a pointwise value."""
        x = self.shared(_Lazy(x))
        y = x
        for conv, norm in ((block.conv1, block.norm1), (block.conv2, block.norm2)):
            self.stage(self.walk(conv, _Lazy(y)), stats=True)
            y = _Map(_Read(self.stages[-1].out), _LayerInstanceNorm(norm.rho, self.stages[-1].stats, style=style))
            y = _Map(y, nn.ReLU()) if conv is block.conv1 else y
        return _Add(x, y)

    def unet_level(self, m: UnetBlock, lz: _Lazy) -> _Lazy:
        """cat(x, model(x)). The level's first layer is an in-place LeakyReLU (as in pix2pix), which changes x
        itself before the concatenation reads it: the skip carries the activated x."""
        x = self.shared(lz)
        first = m.model[0]
        skip = _Map(x, first) if getattr(first, "inplace", False) else x
        return _Lazy(_Cat([skip, self.settle(self.walk(m.model, _Lazy(x)))]))

    def leaf(self, m: nn.Module, lz: _Lazy) -> _Lazy:
        if _global_norm(m):
            return _Lazy(_Map(_Read(self.stage(lz, stats=True)), _Norm(m, self.stages[-1].stats)))
        if type(m) is ILN:
            self.stage(lz, stats=True)
            return _Lazy(_Map(_Read(self.stages[-1].out), _LayerInstanceNorm(m.rho, self.stages[-1].stats, m.gamma,
                                                                             m.beta)))
        if isinstance(m, _SPATIAL) and any(isinstance(c, _CONVOLUTIONS) for c in lz.layers):
            lz = _Lazy(self.settle(lz))  # one convolution per stage: margins stay those of one layer
        if isinstance(m, _SPATIAL) or (lz.layers and _pointwise(m)):
            _reach([m])  # refuses what it does not know
            return _Lazy(lz.value, lz.layers + (m,))
        if _pointwise(m):
            return _Lazy(_Map(lz.value, m))
        raise _NotStreamable(type(m).__name__)


def _step(v) -> Fraction:
    return _reads(v)[0].step


@dataclass(eq=False)
class Program:
    """A translation as stages: reads `source` (the padded image), writes `result`."""
    stages: list[_Stage]
    source: _Buffer
    result: _Buffer
    multiple: int  # image sizes must be multiples of it (every buffer's step and every stage's downsampling)


def compile_calls(calls: list[tuple[nn.Module, tuple]], channels: int = 3) -> Program:
    """A Program for the networks `calls` run as a chain ((network, its arguments after the image), in order),
    on images of `channels` channels; raises _NotStreamable for what it does not know."""
    comp = _Compiler()
    source = _Buffer(channels, Fraction(1))
    lz = _Lazy(_Read(source))
    for net, extra in calls:
        lz = comp.walk(net, lz, extra)
    result = comp.stage(lz) if lz.layers or not isinstance(lz.value, _Read) else lz.value.buf
    multiple = 1
    for i, st in enumerate(comp.stages):
        st.geometry, scale = _reach(st.layers)
        st.ratio = 1 / scale
        for buf in _reads(st.value):
            buf.last_use = i
        step = _step(st.value)
        multiple = math.lcm(multiple, int(step * st.geometry.multiple), int(max(st.out.step, 1)))
        st.work = _work(st)
    return Program(comp.stages, source, result, multiple)


def _work(st: _Stage) -> float:
    """Bytes per input pixel of a tile of stage `st`: the buffers read and the value made of them, then each
    layer's input and output (twice: the CPU's convolutions reorder both), then the crop written out."""
    c, area = _channels(st.value), Fraction(1)
    peak = sum(b.channels for b in _reads(st.value)) + c
    for m in st.layers:
        c2 = getattr(m, "out_channels", c)
        area2 = area / _reach([m])[1] ** 2
        peak = max(peak, 2 * (c * area + c2 * area2))
        c, area = c2, area2
    return float(4 * (peak + 2 * c * area))


def tiled_forward(net: nn.Module, x: torch.Tensor, tile: int, ram: int | None = None) -> torch.Tensor:
    """net(x) streamed in tiles of `tile` pixels a side (plus each stage's margin), equal to the untiled
    eval-mode forward up to float rounding; `ram`: see Budget. x: (B, C, H, W), H and W multiples of
    compile_calls([(net, ())]).multiple."""
    try:
        program = compile_calls([(net, ())], x.shape[1])
    except _NotStreamable as e:
        raise ImxlateError(f"tiling does not know {e} in this generator") from None
    return stream(program, x, Budget(2**50, tile, ram))


# ---- where buffers live ----------------------------------------------------------------------------------

class _TensorStore:
    """A buffer held as one tensor (in RAM, or on the GPU)."""

    def __init__(self, t: torch.Tensor):
        self.t = t

    def read(self, t: int, b: int, l: int, r: int, device: torch.device) -> tuple[torch.Tensor, bool]:
        """(the tile, whether it is a new tensor): a view of the buffer when it is on `device`."""
        view = self.t[:, :, t:b, l:r]
        return (view, False) if view.device == device else (view.to(device), True)

    def write(self, t: int, l: int, y: torch.Tensor) -> None:
        self.t[:, :, t:t + y.shape[-2], l:l + y.shape[-1]].copy_(y)

    def close(self) -> None:
        self.t = None


class _FileStore:
    """A buffer in an unnamed temporary file, as (B, H, W, C) in row order: a tile is one contiguous range
    per row (per image, for a full-width strip)."""

    def __init__(self, shape: tuple, dtype: torch.dtype, folder: str):
        self.shape, self.dtype = shape, dtype
        self.pixel = shape[1] * torch.empty((), dtype=dtype).element_size()  # bytes of one pixel's channels
        self.folder = folder
        try:
            self.file = tempfile.TemporaryFile(dir=folder, prefix="imxlate-", buffering=0)
            size = shape[0] * shape[2] * shape[3] * self.pixel
            if hasattr(os, "posix_fallocate"):  # reserve the space now: a full disk fails here, not midway
                try:
                    os.posix_fallocate(self.file.fileno(), 0, size)
                except OSError as e:
                    if e.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: a file system that cannot reserve
                        raise
        except OSError as e:
            raise _spill_error(e, folder) from None

    def _ranges(self, t: int, b: int, l: int, r: int):
        """(offset in the file, offset in the tile, length) of each contiguous piece of a tile, in bytes."""
        n, _, h, w = self.shape
        if l == 0 and r == w:
            length = (b - t) * w * self.pixel
            return [((i * h + t) * w * self.pixel, i * length, length) for i in range(n)]
        length = (r - l) * self.pixel
        return [(((i * h + y) * w + l) * self.pixel, (i * (b - t) + y - t) * length, length)
                for i in range(n) for y in range(t, b)]

    def read(self, t: int, b: int, l: int, r: int, device: torch.device) -> tuple[torch.Tensor, bool]:
        tile = torch.empty(self.shape[0], b - t, r - l, self.shape[1], dtype=self.dtype)
        view = memoryview(tile.view(torch.uint8).numpy()).cast("B")
        try:
            for at, pos, length in self._ranges(t, b, l, r):
                self.file.seek(at)
                while length:
                    got = self.file.readinto(view[pos:pos + length])
                    if not got:
                        raise OSError(5, "short read")
                    at, pos, length = at + got, pos + got, length - got
        except OSError as e:
            raise _spill_error(e, self.folder) from None
        return tile.permute(0, 3, 1, 2).contiguous().to(device), True

    def write(self, t: int, l: int, y: torch.Tensor) -> None:
        tile = y.permute(0, 2, 3, 1).to("cpu", self.dtype).contiguous()
        view = memoryview(tile.view(torch.uint8).numpy()).cast("B")
        try:
            for at, pos, length in self._ranges(t, t + y.shape[-2], l, l + y.shape[-1]):
                self.file.seek(at)
                while length:
                    put = self.file.write(view[pos:pos + length])
                    at, pos, length = at + put, pos + put, length - put
        except OSError as e:
            raise _spill_error(e, self.folder) from None

    def close(self) -> None:
        self.file.close()


def _spill_error(e: OSError, folder: str) -> ImxlateError:
    why = e.strerror or type(e).__name__
    return ImxlateError(f"a temporary buffer in {folder} failed ({why}); free space there, point TMPDIR to a "
                        "folder with more, raise --max-memory, or shrink the image with --size")


# ---- running a program -----------------------------------------------------------------------------------

def _bytes(buf: _Buffer, x: torch.Tensor) -> int:
    return int(x.shape[0] * buf.channels * (x.shape[-2] / buf.step) * (x.shape[-1] / buf.step) * 4)


def _places(program: Program, x: torch.Tensor, ram: int) -> tuple[dict, int]:
    """Which buffers live in memory (True) or in files (False), greedily in stage order within `ram` bytes,
    and the most bytes in files at once."""
    places, in_files, most = {}, 0, 0
    for i, st in enumerate(program.stages):
        if st.out is not program.result:
            size = _bytes(st.out, x)
            places[st.out] = size <= ram
            ram -= size if places[st.out] else 0
            in_files += 0 if places[st.out] else size
            most = max(most, in_files)
        for buf in {*_reads(st.value), st.out}:
            if buf in places and buf.last_use <= i:
                ram += _bytes(buf, x) if places[buf] else 0
                in_files -= 0 if places[buf] else _bytes(buf, x)
    return places, most


def _tile(st: _Stage, size: tuple[int, int], work: int, forced: int | None, step: Fraction) -> tuple[int, int]:
    """(rows, columns) of a stage's tiles, in its input pixels: `forced` image pixels a side, else full-width
    strips or squares, whichever wastes less on margins within `work` bytes."""
    m, halo = st.geometry.multiple, st.geometry.halo
    h, w = size
    if forced:
        side = _round_up(forced / step, m)
        return min(side, h), min(side, w)
    px = work / st.work  # pixels a tile may have, margins included
    rows = int(px // w) - 2 * halo  # full-width strips: margins above and below only
    rows = h if rows >= h else rows // m * m
    side = int(math.isqrt(max(int(px), 0))) - 2 * halo
    side = side // m * m
    waste_rows = (rows + 2 * halo) / rows if rows >= m else math.inf
    waste_side = ((min(side, h) + 2 * halo) / min(side, h)) * ((min(side, w) + 2 * halo) / min(side, w)) \
        if side >= m else math.inf
    if waste_rows == math.inf and waste_side == math.inf:
        raise ImxlateError(f"not even the smallest tile fits the {work / GIB:.2f} GiB that --max-memory leaves "
                           "for tiles; raise --max-memory or shrink the image with --size")
    return (rows, w) if waste_rows <= waste_side else (min(side, h), min(side, w))


class _Run:
    """The state of one streamed run of a Program: where each buffer is and the statistics gathered so far
    (a Program itself never changes, so one can run in several threads)."""

    def __init__(self, device: torch.device, folder: str):
        self.device, self.folder = device, folder
        self.stores: dict = {}  # _Buffer -> _Slot
        self.acc: dict = {}  # _Stats -> (count, mean, sum of squared deviations), per image and channel
        self._derived: dict = {}

    def add_stats(self, key: _Stats, y: torch.Tensor) -> None:
        y = y.float()
        # Two passes, centred, summed in float32 (torch sums pairwise: ~1e-7 relative); torch.var_mean and sums
        # in float64 are ten times slower on the CPU.
        mean = y.mean((2, 3), keepdim=True)
        q = (y - mean).square_().sum((2, 3))
        part = (y.shape[-1] * y.shape[-2], mean[:, :, 0, 0].double(), q.double())
        self.acc[key] = _combine(self.acc[key], part) if key in self.acc else part

    def normalisers(self, key: _Stats, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1 / sqrt(variance + eps)) of the whole image, each (B, C, 1, 1) float32."""
        def make(run):
            n, mean, q = run.acc[key]
            return mean.float()[:, :, None, None], torch.rsqrt(q / n + eps).float()[:, :, None, None]
        return self.cached((key, eps), make)

    def cached(self, key, make):
        """make(self), made once per run (what a norm derives from complete statistics)."""
        if key not in self._derived:
            self._derived[key] = make(self)
        return self._derived[key]

    def close(self, buf: _Buffer) -> None:
        slot = self.stores.pop(buf, None)
        if slot is not None:
            slot.close()


class _Slot:
    """Where a buffer lives, made at its first write (when the dtype written is known): in memory
    (`in_memory`, on the device) or in a file. A stage that writes the whole buffer as one tile leaves it
    as it is."""

    def __init__(self, in_memory: bool, shape: tuple, run: _Run):
        self.in_memory, self.shape, self.run, self.store = in_memory, shape, run, None

    def write(self, t: int, l: int, y: torch.Tensor) -> None:
        if self.store is None and self.in_memory and tuple(y.shape) == self.shape and y.is_contiguous():
            self.store = _TensorStore(y)
            return
        if self.store is None:
            self.store = _TensorStore(torch.empty(self.shape, dtype=y.dtype, device=self.run.device)) \
                if self.in_memory else _FileStore(self.shape, y.dtype, self.run.folder)
        self.store.write(t, l, y)

    def read(self, *region) -> tuple[torch.Tensor, bool]:
        return self.store.read(*region, self.run.device)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _run_stage(st: _Stage, size: tuple[int, int], tile: tuple[int, int], run: _Run) -> None:
    """Stage `st` over the whole image, tile by tile."""
    h, w = size
    halo, k = st.geometry.halo, st.ratio
    out = run.stores[st.out]
    for t in range(0, h, tile[0]):
        b = min(h, t + tile[0])
        for l in range(0, w, tile[1]):
            r = min(w, l + tile[1])
            rt, rb, rl, rr = max(0, t - halo), min(h, b + halo), max(0, l - halo), min(w, r + halo)
            y, owned = _evaluate(st.value, (rt, rb, rl, rr), run)
            for layer in st.layers:
                y, owned = _layer(layer, y, owned)
            if y.shape[-2:] != ((rb - rt) * k, (rr - rl) * k):
                raise RuntimeError(f"a stage made {tuple(y.shape[-2:])} pixels of a {rb - rt}x{rr - rl} tile")
            y = y[..., int((t - rt) * k):int((b - rt) * k), int((l - rl) * k):int((r - rl) * k)]
            if st.stats is not None:
                run.add_stats(st.stats, y)
            out.write(int(t * k), int(l * k), y)
            del y


def _evaluate(v, region: tuple, run: _Run) -> tuple[torch.Tensor, bool]:
    """The pointwise value `v` over `region` (top, bottom, left, right in its pixels) -> (tensor, owned):
    owned when it is a tensor made for this tile, which layers may change in place, not a view of a buffer."""
    if isinstance(v, _Read):
        return run.stores[v.buf].read(*region)
    if isinstance(v, _Map):
        x, owned = _evaluate(v.value, region, run)
        return (v.fn(x, owned, run), True) if isinstance(v.fn, (_Norm, _LayerInstanceNorm)) \
            else _layer(v.fn, x, owned)
    if isinstance(v, _Add):
        (a, own_a), (b, own_b) = _evaluate(v.a, region, run), _evaluate(v.b, region, run)
        if a.dtype == b.dtype and (own_a or own_b):
            return (a.add_(b) if own_a else b.add_(a)), True
        return a + b, True
    if isinstance(v, _Cat):
        return torch.cat([_evaluate(p, region, run)[0] for p in v.parts], 1), True
    t, b, l, r = region
    return v.code[:, :, None, None].expand(-1, -1, b - t, r - l), False


def _layer(layer: nn.Module, x: torch.Tensor, owned: bool) -> tuple[torch.Tensor, bool]:
    """layer(x) -> (its output, owned); a layer that works in place gets a copy of a tensor that is not owned."""
    if getattr(layer, "inplace", False) and not owned:
        x, owned = x.clone(), True
    y = layer(x)
    return y, owned or y is not x


@torch.inference_mode()
def stream(program: Program, x: torch.Tensor, limits: Budget) -> torch.Tensor:
    """The program's output for x (B, C, H, W), H and W multiples of program.multiple, run stage by stage
    within `limits`: tiles get up to CPU_TILE_BYTES (GPU_TILE_BYTES on a GPU) and no more than half of what the
    budget leaves, buffers in memory the rest, then files."""
    n, _, h, w = x.shape
    if h % program.multiple or w % program.multiple:
        raise ValueError(f"streaming needs sizes that are multiples of {program.multiple}, not {h}x{w}")
    left = limits.total - memory_in_use(x.device) - _bytes(program.result, x)
    cap = CPU_TILE_BYTES if x.device.type == "cpu" else GPU_TILE_BYTES
    work = max(1, int(min(cap, max(left, 0) // 2)))
    places, in_files = _places(program, x, limits.ram if limits.ram is not None else left - work)
    run = _Run(x.device, tempfile.gettempdir())
    if in_files and shutil.disk_usage(run.folder).free < in_files * 1.05 + 2**26:
        raise ImxlateError(f"streaming this {w}x{h} image needs {in_files / GIB:.1f} GiB of temporary files, more "
                           f"than {run.folder} has free: free space there, point TMPDIR to a folder with more, "
                           "raise --max-memory, or shrink the image with --size")
    run.stores[program.source] = _Slot(True, tuple(x.shape), run)
    run.stores[program.source].store = _TensorStore(x)
    try:
        for i, st in enumerate(program.stages):
            run.stores[st.out] = _Slot(places.get(st.out, True), _shape(st.out, x), run)
            size = _shape(st.value, x)[2:]
            _run_stage(st, size, _tile(st, size, work // n, limits.tile, _step(st.value)), run)
            for buf in {*_reads(st.value), st.out} - {program.source, program.result}:
                if buf.last_use <= i:
                    run.close(buf)
            _release_freed_memory()
        return run.stores[program.result].store.t
    finally:
        for buf in list(run.stores):
            if buf is not program.result:
                run.close(buf)


def _shape(v, x: torch.Tensor) -> tuple[int, int, int, int]:
    """(B, C, H, W) of a buffer or value for the image x."""
    buf = v if isinstance(v, _Buffer) else _reads(v)[0]
    channels = v.channels if isinstance(v, _Buffer) else _channels(v)
    return x.shape[0], channels, int(x.shape[-2] / buf.step), int(x.shape[-1] / buf.step)


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
    """Hand the heap's free memory back to the system between stages: tiles of one stage come in a few
    shapes, and glibc keeps what one stage freed in pieces the next stage's tiles may not fit."""
    if _malloc_trim is not None:
        _malloc_trim(0)


# ---- watching a translation --------------------------------------------------------------------------------

@dataclass(eq=False)
class Translation:
    """What a family's translation into one domain does, watched once on a small probe: the networks it calls
    in a chain (`calls`: (network, its arguments after the image)), the Program that streams them (None when
    there is none, `why` says why), and the peak memory of its untiled forward (`bytes_per_pixel`, per image)."""
    calls: list
    program: Program | None
    why: str | None
    bytes_per_pixel: float


def watch(family, to: str, src: str | None, batch: int = 1) -> Translation:
    """Translate a probe (batch x 3 x 64 x 64, random) with `family`, watching which networks it calls and what
    memory its tensors take."""
    side = _round_up(PROBE_SIDE, family.size_multiple)
    x = (torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(family.device)
    calls = []
    hooks = [net.register_forward_hook(lambda m, args, out: calls.append((m, args, out)))
             for net in family.nets.values()]
    live = _LiveBytes()
    try:
        with torch.inference_mode(), live:
            y = family.translate(x, to, src)
    finally:
        for hk in hooks:
            hk.remove()
    chain, why = _chain(calls, x, y)
    program = None
    if chain is not None:
        try:
            program = compile_calls(chain, x.shape[1])
        except _NotStreamable as e:
            why = f"its {e} layers"
        if program is not None and family.size_multiple % program.multiple:
            program, why = None, f"a downsampling of {program.multiple} that translate does not pad to"
    # x1.7: what the tensors do not show, the CPU's reordered copies, workspaces and the heap's slack (the default
    # generator's untiled forward at 1024x1024 grew the process by 1.63x its tensors' peak; benchmarks/RESULTS.md)
    return Translation(chain or [], program, why, 1.7 * live.peak / (batch * side * side))


def _chain(calls: list, x: torch.Tensor, y) -> tuple[list | None, str | None]:
    """[(network, arguments after the image)] when each network took the previous one's output (the first, the
    image) and the last one's output (or its first part) is the translation; else (None, why)."""
    chain, prev = [], x
    for net, args, out in calls:
        if not args or args[0] is not prev:
            return None, "networks that are not one chain from image to image"
        chain.append((net, tuple(args[1:])))
        prev = out
    if not chain or not (y is prev or (isinstance(prev, tuple) and y is prev[0])):
        return None, "work outside its networks"
    return chain, None


class _LiveBytes(TorchDispatchMode):
    """The most bytes of tensors alive at once while it is active (tensors made before it do not count)."""

    def __init__(self):
        super().__init__()
        self.refs: dict[int, int] = {}  # storage -> tensors alive on it
        self.sizes: dict[int, int] = {}
        self.seen: dict[int, weakref.ref] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and id(t) not in self.seen:
                self._add(t)
        return out

    def _add(self, t: torch.Tensor) -> None:
        key = t.untyped_storage().data_ptr()
        if key not in self.refs:
            self.refs[key], self.sizes[key] = 0, t.untyped_storage().nbytes()
            self.now += self.sizes[key]
            self.peak = max(self.peak, self.now)
        self.refs[key] += 1
        ident = id(t)
        self.seen[ident] = weakref.ref(t, lambda _, k=key, i=ident: self._drop(k, i))

    def _drop(self, key: int, ident: int) -> None:
        self.seen.pop(ident, None)
        self.refs[key] -= 1
        if not self.refs[key]:
            self.now -= self.sizes.pop(key)
            del self.refs[key]


def refuse_tile(translation: Translation, family_name: str) -> None:
    """Refuse --tile for a translation that cannot be streamed."""
    if translation.program is None:
        raise ImxlateError(f"tiling works on ResNet, U-Net and encoder-decoder generators; this {family_name} "
                           f"model's translation has {translation.why}: leave out --tile (shrink large images "
                           "with --size)")


def streams(translation: Translation, x: torch.Tensor, limits: Budget, family_name: str) -> bool:
    """Whether the padded image x is to be streamed: when --tile says so, or when its untiled forward does not
    fit the budget; an ImxlateError when it must be and cannot be."""
    h, w = x.shape[-2:]
    if limits.tile:
        refuse_tile(translation, family_name)
        return True
    need = translation.bytes_per_pixel * x.shape[0] * h * w
    free = limits.total - memory_in_use(x.device)
    if need <= free:
        return False
    if translation.program is None:
        raise ImxlateError(f"a {w}x{h} image needs about {need / GIB:.1f} GiB to translate, more than the "
                           f"{max(free, 0) / GIB:.1f} GiB that --max-memory leaves, and this {family_name} model's "
                           f"translation cannot be streamed in tiles (it has {translation.why}): raise --max-memory "
                           "or shrink it with --size")
    return True
