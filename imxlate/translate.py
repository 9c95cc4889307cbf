"""Inference: finding a model, translating tensors, images and folders of any size, writing outputs."""
from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import store, tiling
from .families import load_model
from .config import check_at_least, check_seed
from .data import MAX_PIXELS, expand_inputs, load_image, to_image, to_tensor, too_large
from .errors import ImxlateError, from_os_error, missing_path_message

console = Console(highlight=False, stderr=True)


# ---- finding a model ------------------------------------------------------------------------------

def shipped_models() -> list[Path]:
    """Model files that ship inside the package (imxlate.weights)."""
    try:
        root = resources.files("imxlate.weights")
    except ModuleNotFoundError:
        return []
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".safetensors"))


def run_models(runs: Path = Path("runs")) -> list[Path]:
    """Model files under a runs folder, newest first."""
    if not runs.is_dir():
        return []
    return sorted(runs.rglob(store.MODEL), key=lambda p: p.stat().st_mtime, reverse=True)


def find_model(model: str | None, to: str | None) -> tuple[Path, str]:
    """-> (model file, how it was chosen). Order: --model (file or run folder); the newest model
    under ./runs that translates into `to`; a shipped model that does; else a clear error. (A one-sided
    model, e.g. CUT, knows its source domain but does not translate into it.)"""
    if model:
        p = Path(model)
        if p.is_dir():
            p = p / store.MODEL
        if not p.is_file():
            why = missing_path_message(p) if os.path.lexists(p) else f"no model file at {p}"
            raise ImxlateError(f"{why}; --model takes a .safetensors file or a run folder")
        return p, "given"
    seen = []
    for where, paths in (("./runs", run_models()), ("the models shipped with imxlate", shipped_models())):
        for p in paths:
            try:
                meta = store.read_metadata(p)
            except ImxlateError:
                continue
            domains = meta.get("domains", [])
            targets = [d.split("->")[-1] for d in meta.get("directions", [])] or domains
            seen.append((p, domains))
            if to is None or to in targets:
                return p, f"newest in {where}" if where == "./runs" else "shipped"
    known = "; ".join(f"{p} ({', '.join(d)})" for p, d in seen) or "none"
    raise ImxlateError(f"no model knows domain '{to}'. Looked in ./runs and the shipped models; "
                       f"found: {known}. Train one with `imxlate train --domains A {to}` or pass --model")


# ---- translating tensors ---------------------------------------------------------------------------

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


def default_memory_budget(device: torch.device) -> int:
    """The memory translate may use for a forward pass: 80% of the GPU's free memory, else half of the
    RAM available now (Linux MemAvailable; half the physical RAM elsewhere), and no more than half of
    what an address-space limit (ulimit -v) leaves this process."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] * 0.8)
    try:
        budget = _meminfo_kb("/proc/meminfo", "MemAvailable:") * 1024 // 2
    except (OSError, StopIteration, ValueError):
        budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            budget = min(budget, max(0, limit - _meminfo_kb("/proc/self/status", "VmSize:") * 1024) // 2)
    except (ImportError, OSError, StopIteration, ValueError):
        pass
    return budget


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> tuple[str, torch.dtype]:
    """(name, dtype) of a precision this device can translate in (autocast), else a clear error."""
    if precision not in PRECISIONS:
        raise ImxlateError(f"--precision {precision}: use fp32, bf16 or fp16")
    if precision == "fp32":
        return precision, torch.float32
    if device.type == "cpu" and precision == "fp16":
        raise ImxlateError("--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
    if device.type not in ("cpu", "cuda"):
        raise ImxlateError(f"--precision {precision} works on CUDA and the CPU; on {device.type} use fp32")
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ImxlateError("--precision bf16: this GPU does not support bfloat16; use fp16 or fp32")
    return precision, PRECISIONS[precision]


def default_batch_size(device: torch.device) -> int:
    """Images of equal size translated together when --batch-size is not given: 8 on a GPU, 1 on the CPU,
    where a batch costs more time per image than single images do (larger activations to allocate and
    page in; benchmarks/RESULTS.md) and holds more memory."""
    return 1 if device.type == "cpu" else 8


def _meminfo_kb(path: str, key: str) -> int:
    with open(path) as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


class Translator:
    """A loaded model: `translate(image, to=...)` for PIL images or tensors, `translate_folder(...)`."""

    def __init__(self, family, path: Path, precision: str = "fp32", compile: bool = False):
        self.family, self.path = family, path
        self.domains = family.domains
        self.meta = family.meta
        self._generators: dict = {}  # (to, src) -> the one tileable network translating it, or None
        self.precision, self.dtype = check_precision(precision, family.device)
        self.compile = compile
        self._compiled: dict = {}  # network -> torch.compile'd network
        self.channels_last = family.device.type == "cuda" and self.dtype != torch.float32
        if self.channels_last:  # tensor cores want NHWC; on the CPU it only costs conversions
            family.nets.to(memory_format=torch.channels_last)

    @classmethod
    def open(cls, path: str | Path | None = None, to: str | None = None, device: str = "auto",
             verify: bool = True, precision: str = "fp32", compile: bool = False) -> "Translator":
        """Load `path` (a model file or run folder), or find a model that knows domain `to`.

        `verify=False` skips the check of the file's recorded digest (NaN weights are refused anyway).
        `precision`: fp32, bf16 or fp16 (autocast; fp16 on CUDA only); `compile`: torch.compile the generator.
        """
        from .device import pick_device

        p, _ = find_model(str(path) if path else None, to)
        dev = pick_device(device)
        check_precision(precision, dev)
        return cls(load_model(p, dev, verify), p, precision, compile)

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.family.device.type, dtype=self.dtype)

    def _forward(self, net, x: torch.Tensor) -> torch.Tensor:
        """net(x), through torch.compile with `compile` (a failure to compile is one clear error)."""
        if not self.compile:
            return net(x)
        first = net not in self._compiled
        if first:
            self._compiled[net] = torch.compile(net)
        try:
            return self._compiled[net](x)
        except Exception as e:  # inductor raises many kinds (no compiler, unsupported op, ...)
            if not first:
                raise
            del self._compiled[net]
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ImxlateError(f"--compile failed: torch.compile could not compile the generator ({why}); "
                               "translate without --compile") from None

    def check_domain(self, to: str, src: str | None = None) -> None:
        if to not in self.domains:
            raise ImxlateError(f"this model translates between {', '.join(self.domains)}; it does not know '{to}'")
        if src is not None and src not in self.domains:
            raise ImxlateError(f"this model does not know source domain '{src}' ({', '.join(self.domains)})")
        if src == to:
            raise ImxlateError(f"source and target are both '{to}'")

    @torch.inference_mode()
    def translate_tensor(self, x: torch.Tensor, to: str, src: str | None = None,
                         generator: torch.Generator | None = None, tile: int | None = None,
                         max_memory: int | str | None = None, steady=None) -> torch.Tensor:
        """(B,3,H,W) in [-1,1], any H and W -> (B,3,H,W) in [-1,1] translated into domain `to`.

        Images whose forward pass would need more than `max_memory` (bytes or '4GB'; default: a share of
        the device's memory, see default_memory_budget) are translated in tiles with the same result
        (imxlate.tiling); `tile` (pixels per side) forces tiles of that size. `steady` (an
        imxlate.steady.Steady): the images are the next frames of a sequence, normalised with shared
        statistics (see check_steady).
        """
        self.check_domain(to, src)
        fam = self.family
        x = x.to(fam.device, torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h, w = x.shape[-2:]
        if fam.fixed_size:
            self.check_tiling(to, src, tile, max_memory)
            with self._autocast():
                y = fam.translate(F.interpolate(x, size=(fam.image_size, fam.image_size), mode="bilinear",
                                                antialias=True, align_corners=False), to, src, generator)
            return F.interpolate(y.float(), size=(h, w), mode="bilinear", antialias=True,
                                 align_corners=False).clamp(-1, 1)
        m = fam.size_multiple
        xp, (t, l) = pad_to_multiple(x, m) if h % m or w % m else (x, (0, 0))
        net, size = self._tiling(xp, to, src, tile, max_memory)
        with self._autocast():
            if size:
                if steady is not None:
                    raise ImxlateError(f"a {w}x{h} frame needs tiles to fit in memory, and tiles cannot share "
                                       "statistics across frames: leave out --steady or shrink with --size")
                y = tiling.tiled_forward(net, xp, size)
            elif steady is not None:
                y = steady(self.check_steady(to, src), xp)
            elif self.compile and self._generator(to, src) is not None:
                y = self._forward(self._generator(to, src), xp)
            else:
                y = fam.translate(xp, to, src, generator)
        return y[..., t:t + h, l:l + w].float().contiguous()

    def check_steady(self, to: str, src: str | None = None):
        """The network that shared statistics run (one ResNet or U-Net generator), else a clear error."""
        net = None if self.family.fixed_size else self._generator(to, src)
        if net is None:
            raise ImxlateError(f"--steady works on ResNet and U-Net generators; this {self.family.name} model's "
                               "translation is not one: leave out --steady")
        return net

    def _tiling(self, x: torch.Tensor, to: str, src: str | None, tile: int | None, max_memory) -> tuple:
        """(network, tile size) when `x` is to be tiled, else (None, None)."""
        net = self.check_tiling(to, src, tile, max_memory)
        if net is None:
            return None, None
        geo = tiling.geometry(net)
        if tile:
            return net, tile
        budget = parse_memory(max_memory) if max_memory is not None else default_memory_budget(self.family.device)
        size = tiling.choose_tile(net, geo, x.shape[0], x.shape[-2], x.shape[-1], budget)
        return (net, size) if size else (None, None)

    def check_tiling(self, to: str, src: str | None = None, tile: int | None = None, max_memory=None):
        """Refuse a bad `tile` or `max_memory`, or `tile` for a model that cannot be tiled -> the network
        tiles would run (None when the translation is not one tileable generator)."""
        if tile is not None:
            check_at_least({"tile": tile}, 1)
        if max_memory is not None:
            parse_memory(max_memory)
        if self.family.fixed_size:
            if tile:
                raise ImxlateError(f"the {self.family.name} family translates at a fixed size "
                                   f"({self.family.image_size} px), never in tiles: leave out --tile")
            return None
        net = self._generator(to, src)
        if net is None and tile:
            raise ImxlateError(f"tiling works on ResNet and U-Net generators; this {self.family.name} model's "
                               "translation is not one: leave out --tile (shrink large images with --size)")
        return net

    def _generator(self, to: str, src: str | None):
        """The network that translates into `to`, when the family's translation is one ResNet or U-Net
        generator called on the image (found once by watching a small translation), else None."""
        if (to, src) not in self._generators:
            fam, called = self.family, []
            hooks = [n.register_forward_pre_hook(lambda m, a, n=n: called.append((n, len(a))))
                     for n in fam.nets.values()]
            side = -(-64 // fam.size_multiple) * fam.size_multiple
            try:
                fam.translate(torch.zeros(1, 3, side, side, device=fam.device), to, src)
            finally:
                for hk in hooks:
                    hk.remove()
            one = len(called) == 1 and called[0][1] == 1 and isinstance(called[0][0], tiling.TILEABLE)
            self._generators[(to, src)] = called[0][0] if one else None
        return self._generators[(to, src)]

    def translate(self, image, to: str, src: str | None = None, seed: int | None = None, tile: int | None = None,
                  max_memory: int | str | None = None):
        """A PIL image -> the translated PIL image (alpha kept); a tensor (3,H,W) or (B,3,H,W) -> tensor.
        `tile` and `max_memory`: see translate_tensor (large images are tiled with the same result)."""
        g = torch.Generator(self.family.device).manual_seed(seed) if seed is not None else None
        if isinstance(image, torch.Tensor):
            single = image.dim() == 3
            y = self.translate_tensor(image[None] if single else image, to, src, g, tile, max_memory)
            return y[0] if single else y
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
        rgb = image.convert("RGB")
        out = to_image(self.translate_tensor(to_tensor(rgb)[None], to, src, g, tile, max_memory)[0])
        if alpha is not None:
            out.putalpha(alpha)
        return out

    def translate_folder(self, inputs: list[str], to: str, out: str | Path | None = None, src: str | None = None,
                         batch_size: int | None = None, size: int | None = None, samples: int = 1,
                         seed: int | None = None, overwrite: bool = False, progress: bool = True,
                         max_pixels: int = MAX_PIXELS, tile: int | None = None, max_memory: int | str | None = None,
                         steady: str | None = None) -> "Report":
        """Translate files, folders (recursive, mirrored) and globs into `out` -> a Report.

        An image that cannot be read, is larger than `max_pixels` (after `size`) or fails to translate
        is reported in Report.failed and the others go on; an error writing an output ends the run.
        Images are decoded and outputs encoded in background threads while the network runs; at most
        `batch_size` decoded images wait for a batch, so memory does not grow with the folder (default:
        default_batch_size of the device).
        `steady` ('first' or 'running', see imxlate.steady): the images are frames of one sequence, in
        name order, and share their normalisation statistics (less flicker).
        """
        return translate_paths(self, inputs, to, out, src, batch_size, size, samples, seed, overwrite, progress,
                               max_pixels, tile, max_memory, steady)


# ---- folders ---------------------------------------------------------------------------------------

@dataclass
class Report:
    out: Path
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def default_out(to: str) -> Path:
    """A new folder in the current directory named after the target domain: <to>-translated, -2, ..."""
    out, i = Path(f"{to}-translated"), 2
    while out.exists():
        out, i = Path(f"{to}-translated-{i}"), i + 1
    return out


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_options(batch_size: int | None = None, size: int | None = None, samples: int = 1,
                  seed: int | None = None, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse zero or negative sizes and counts (and seeds out of range) before anything runs."""
    check_at_least({"batch_size": batch_size, "size": size, "samples": samples, "max_pixels": max_pixels}, 1)
    check_seed(seed)


def check_outputs(plan: list[tuple[Path, list[Path]]], pairs, out: Path, overwrite: bool) -> None:
    """Refuse a plan that would replace an input or a folder, write outside `out` through a linked
    folder, or replace existing files (links included, dangling or not) without `overwrite`."""
    inputs_resolved = {p.resolve() for p, _ in pairs}
    outs = [o for _, sample_outs in plan for o in sample_outs]
    clash = [o for o in outs if os.path.lexists(o) and not o.is_symlink() and o.resolve() in inputs_resolved]
    if clash:
        raise ImxlateError(f"--out {out} would write over input {clash[0]}; choose another output folder")
    folders = [o for o in outs if o.is_dir() and not o.is_symlink()]
    if folders:
        raise ImxlateError(f"output {folders[0]} is a folder; remove it or choose another --out")
    for parent in sorted({o.parent for o in outs}):
        for p in (parent, *parent.parents):
            if p == out:
                break
            if os.path.lexists(p) and not p.is_dir():
                raise ImxlateError(f"{p} is a file where an output folder goes; remove it or choose another --out")
        if not _inside(parent, out):
            raise ImxlateError(f"{parent} is a link to a folder outside --out {out}; outputs are never written "
                               "through links: remove it or choose another --out")
    existing = [o for o in outs if os.path.lexists(o)]
    if existing and not overwrite:
        raise ImxlateError(f"{len(existing)} output file(s) already exist (e.g. {existing[0]}); "
                           "choose another --out or pass --overwrite")


def plan_outputs(pairs: list[tuple[Path, Path]], out: Path, samples: int) -> list[tuple[Path, list[Path]]]:
    """(input, [output per sample]) with outputs as PNG, mirroring relative paths; name clashes get -2, -3."""
    taken, plan = set(), []
    for src, rel in pairs:
        stem = rel.with_suffix("")
        names = [f"{stem}_{k}" for k in range(samples)] if samples > 1 else [str(stem)]
        outs = []
        for n in names:
            cand, i = out / f"{n}.png", 2
            while cand in taken:
                cand, i = out / f"{n}-{i}.png", i + 1
            taken.add(cand)
            outs.append(cand)
        plan.append((src, outs))
    return plan


def translate_paths(tr: Translator, inputs, to, out, src, batch_size, size, samples, seed, overwrite, progress,
                    max_pixels: int = MAX_PIXELS, tile: int | None = None, max_memory=None,
                    steady: str | None = None) -> Report:
    check_options(batch_size, size, samples, seed, max_pixels)
    batch_size = batch_size or default_batch_size(tr.family.device)
    tr.check_domain(to, src)
    tr.check_tiling(to, src, tile, max_memory)
    shared = make_steady(tr, steady, to, src, tile, samples)
    pairs = expand_inputs(list(inputs))
    if not pairs:
        raise ImxlateError(f"no images found in {', '.join(map(str, inputs))}")
    in_dirs = [Path(i) for i in inputs if Path(i).is_dir()]
    if out is None:
        out = default_out(to)
        if any(_inside(out, d) for d in in_dirs):
            raise ImxlateError("the default output folder would be inside an input folder; pass --out")
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        store.prepare_folder(out)  # says what is wrong with it
    plan = plan_outputs(pairs, out, samples)
    check_outputs(plan, pairs, out, overwrite)
    store.prepare_folder(out, create=False)  # made when the first output is written
    report = Report(out)
    g = torch.Generator(tr.family.device).manual_seed(seed) if seed is not None else None
    # Decoded images waiting for a batch, by size, oldest bucket first; never more than batch_size in all.
    buckets: dict[tuple[int, int], list] = {}
    writes: deque = deque()  # (output, future of its encoding and writing), in order

    def fail(path: Path, e: BaseException) -> None:
        report.failed.append((path, str(e).splitlines()[0] if str(e) else type(e).__name__))
        print(f"skipped {path}: {report.failed[-1][1]}", file=sys.stderr)

    def decode(path: Path):
        rgb, alpha = load_image(path, None if size else max_pixels)
        if size:
            w, h = rgb.size
            s = size / min(w, h)
            rgb = rgb.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
            alpha = alpha.resize(rgb.size, Image.BICUBIC) if alpha is not None else None
            refused = too_large(*rgb.size, max_pixels)
            if refused:
                raise ImxlateError(refused)
        return rgb.size, to_tensor(rgb), alpha

    def encode(y: torch.Tensor, alpha, o: Path) -> None:
        img = to_image(y)
        if alpha is not None:
            img.putalpha(alpha)
        o.parent.mkdir(parents=True, exist_ok=True)
        store.write_atomically(o, lambda f: img.save(f, format="PNG"))

    def finish(block: bool) -> None:
        """Record the writes done (all of them when `block`), in order; a failed write ends the run."""
        while writes and (block or writes[0][1].done()):
            o, fut = writes.popleft()
            try:
                fut.result()
            except OSError as e:
                raise from_os_error(e, f"writing {o}", f"the {len(report.written)} image(s) written before "
                                    f"it in {out}/ are complete") from None
            report.written.append(o)

    def flush(key):
        items = buckets.pop(key)
        x = torch.stack([t for _, t, _, _ in items])
        try:
            results = [tr.translate_tensor(x, to, src, g, tile, max_memory, shared) for _ in range(samples)]
        except ImxlateError as e:  # too large even in tiles: the others go on
            for path, _, _, _ in items:
                fail(path, e)
            return
        except (RuntimeError, ValueError, MemoryError) as e:  # out of memory, too small...: the others go on
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            for path, _, _, _ in items:
                fail(path, ImxlateError(f"the model could not translate it at {key[0]}x{key[1]} pixels ({why}); "
                                        "try another size with --size"))
            return
        for i, (_, _, alpha, outs) in enumerate(items):
            for k, o in enumerate(outs):
                writes.append((o, encoder.submit(encode, results[k][i], alpha, o)))
        finish(block=False)
        while len(writes) > 2 * batch_size * samples:  # the encoder is behind: wait for it
            o, fut = writes[0]
            fut.exception()
            finish(block=False)

    columns = (TextColumn("translating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    decoder, encoder = ThreadPoolExecutor(1, "imxlate-decode"), ThreadPoolExecutor(1, "imxlate-encode")
    try:
        with Progress(*columns, console=console, disable=not progress) as bar:
            task = bar.add_task("", total=len(plan))
            for (path, outs), decoded in zip(plan, _ahead(decoder, decode, [p for p, _ in plan], batch_size)):
                try:
                    key, t, alpha = decoded.result()
                except Exception as e:  # corrupt, unsupported or too large: report, skip, go on
                    fail(path, e)
                    bar.advance(task)
                    continue
                buckets.setdefault(key, []).append((path, t, alpha, outs))
                if len(buckets[key]) >= batch_size:
                    flush(key)
                elif sum(map(len, buckets.values())) > batch_size:
                    flush(next(iter(buckets)))  # mixed sizes: the oldest bucket goes, part-full
                bar.advance(task)
            for key in list(buckets):
                flush(key)
            finish(block=True)
    finally:
        decoder.shutdown(cancel_futures=True)
        encoder.shutdown(cancel_futures=True)
    return report


def make_steady(tr: Translator, steady: str | None, to: str, src: str | None, tile: int | None, samples: int = 1):
    """A Steady for `steady` ('first' | 'running' | None), after refusing what cannot go with it."""
    if steady is None:
        return None
    from .steady import Steady

    shared = Steady(steady)
    if tile:
        raise ImxlateError("--steady and --tile do not go together: tiles use each frame's own statistics")
    if samples > 1:
        raise ImxlateError("--steady translates each frame once: leave out --samples")
    tr.check_steady(to, src)
    return shared


def _ahead(pool: ThreadPoolExecutor, fn, items: list, depth: int):
    """Futures of fn(item) in order, with at most `depth` + 1 submitted ahead of the one being used."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > depth:
            yield pending.popleft()
    while pending:
        yield pending.popleft()
