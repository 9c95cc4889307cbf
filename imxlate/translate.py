"""Inference: translating tensors, images and folders of any size, writing outputs."""
from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import store, tiling
from .config import check_at_least, check_seed
from .data import expand_inputs, has_alpha, load_image, open_image, to_image, to_tensor, too_large
from .errors import ImxlateError, from_os_error
from .families import load_model
from .models import find_model

console = Console(highlight=False, stderr=True)


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



class Translator:
    """A loaded model: `translate(image, to=...)` for PIL images or tensors, `translate_folder(...)`."""

    def __init__(self, family, path: Path, precision: str = "fp32", compile: bool = False):
        self.family, self.path = family, path
        self.domains = family.domains
        self.meta = family.meta
        self._watched: dict = {}  # (to, src, batch) -> tiling.Translation
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
        """Refuse a target or source domain this model does not know, or the same one twice."""
        if to not in self.domains:
            raise ImxlateError(f"this model translates between {', '.join(self.domains)}; it does not know '{to}'")
        if src is not None and src not in self.domains:
            raise ImxlateError(f"this model does not know source domain '{src}' ({', '.join(self.domains)})")
        if src == to:
            raise ImxlateError(f"source and target are both '{to}'")

    @torch.inference_mode()
    def translate_tensor(self, x: torch.Tensor, to: str, src: str | None = None,
                         generator: torch.Generator | None = None, tile: int | None = None,
                         max_memory=None, steady=None) -> torch.Tensor:
        """(B,3,H,W) in [-1,1], any H and W -> (B,3,H,W) in [-1,1] translated into domain `to`.

        Images whose forward would need more than `max_memory` (bytes, '4GB' or a tiling.Budget; default: see
        tiling.default_memory_budget) are streamed in tiles with the same result (imxlate.tiling); `tile`
        (pixels per side) forces tiles of that size. `steady` (an imxlate.steady.Steady): the images are the
        next frames of a sequence, normalised with shared statistics (see check_steady).
        """
        self.check_domain(to, src)
        fam = self.family
        limits = tiling.budget(max_memory, fam.device, tile)
        x = x.to(fam.device, torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h, w = x.shape[-2:]
        if fam.fixed_size:
            self.check_translation(to, src, limits)
            with self._autocast():
                y = fam.translate(F.interpolate(x, size=(fam.image_size, fam.image_size), mode="bilinear",
                                                antialias=True, align_corners=False), to, src, generator)
            return F.interpolate(y.float(), size=(h, w), mode="bilinear", antialias=True,
                                 align_corners=False).clamp(-1, 1)
        m = fam.size_multiple
        xp, (t, l) = tiling.pad_to_multiple(x, m) if h % m or w % m else (x, (0, 0))
        del x
        y = self._translate_padded(xp, to, src, generator, limits, steady)
        return y[..., t:t + h, l:l + w].float().contiguous()

    def _translate_padded(self, x: torch.Tensor, to: str, src: str | None, generator, limits: tiling.Budget,
                          steady) -> torch.Tensor:
        """The translation of x (padded to the size multiple): streamed when it must be, else one forward."""
        watched = self._watch(to, src, x.shape[0])
        with self._autocast():
            if tiling.streams(watched, x, limits, self.family.name):
                if steady is not None:
                    raise ImxlateError(f"a {x.shape[-1]}x{x.shape[-2]} frame needs tiles to fit in memory, and "
                                       "tiles cannot share statistics across frames: leave out --steady or shrink "
                                       "with --size")
                return tiling.stream(watched.program, x, limits)
            if steady is not None:
                return steady(self.check_steady(to, src), x)
            if self.compile and self._generator(to, src) is not None:
                return self._forward(self._generator(to, src), x)
            return self.family.translate(x, to, src, generator)

    def check_steady(self, to: str, src: str | None = None):
        """The network that shared statistics run (one ResNet or U-Net generator), else a clear error."""
        net = None if self.family.fixed_size else self._generator(to, src)
        if net is None:
            raise ImxlateError(f"--steady works on ResNet and U-Net generators; this {self.family.name} model's "
                               "translation is not one: leave out --steady")
        return net

    def check_translation(self, to: str, src: str | None = None, limits: tiling.Budget | None = None) -> None:
        """Before any image is read: refuse a direction the model does not translate (a one-way model's other
        one), and --tile where the translation cannot be tiled (a fixed-size family, layers tiling does not
        know)."""
        self.check_domain(to, src)
        tile = limits is not None and limits.tile
        if self.family.fixed_size and tile:
            raise ImxlateError(f"the {self.family.name} family translates at a fixed size "
                               f"({self.family.image_size} px), never in tiles: leave out --tile")
        if not self.family.fixed_size:
            watched = self._watch(to, src, 1)  # a probe: the family refuses a direction it lacks
            if tile:
                tiling.refuse_tile(watched, self.family.name)

    def _watch(self, to: str, src: str | None, batch: int) -> tiling.Translation:
        """How the translation into `to` goes (networks, stages, memory), watched once per batch size."""
        if (to, src, batch) not in self._watched:
            self._watched[(to, src, batch)] = tiling.watch(self.family, to, src, batch)
        return self._watched[(to, src, batch)]

    def _generator(self, to: str, src: str | None):
        """The network that translates into `to` when the translation is one ResNet or U-Net generator
        called on the image, else None."""
        calls = self._watch(to, src, 1).calls
        one = len(calls) == 1 and not calls[0][1] and isinstance(calls[0][0], tiling.TILEABLE)
        return calls[0][0] if one else None

    def translate(self, image, to: str, src: str | None = None, seed: int | None = None, tile: int | None = None,
                  max_memory=None):
        """A PIL image -> the translated PIL image (alpha kept); a tensor (3,H,W) or (B,3,H,W) -> tensor.
        `tile` and `max_memory`: see translate_tensor (large images are tiled with the same result)."""
        g = torch.Generator(self.family.device).manual_seed(seed) if seed is not None else None
        if isinstance(image, torch.Tensor):
            single = image.dim() == 3
            y = self.translate_tensor(image[None] if single else image, to, src, g, tile, max_memory)
            return y[0] if single else y
        alpha = image.convert("RGBA").getchannel("A") if has_alpha(image) else None
        rgb = image.convert("RGB")
        out = to_image(self.translate_tensor(to_tensor(rgb)[None], to, src, g, tile, max_memory)[0])
        if alpha is not None:
            out.putalpha(alpha)
        return out

    def translate_folder(self, inputs: list[str], to: str, out: str | Path | None = None, src: str | None = None,
                         batch_size: int | None = None, size: int | None = None, samples: int = 1,
                         seed: int | None = None, overwrite: bool = False, progress: bool = True,
                         max_pixels: int | None = None, tile: int | None = None, max_memory=None,
                         steady: str | None = None, ext: str | None = None) -> "Report":
        """Translate files, folders (recursive, mirrored) and globs into `out` -> a Report.

        `out` defaults to default_out(to); outputs keep their input's name and format unless `ext` names one
        (see plan_outputs), and a file already there is refused unless `overwrite`.

        An image that cannot be read, does not fit the memory budget or `max_pixels` (after `size`; without
        `max_pixels`, a decompression bomb: data.too_large) or fails to translate is reported in Report.failed
        and the others go on; an error writing an output ends the run. Images are decoded and outputs
        encoded in background threads while the network runs; at most `batch_size` decoded images wait for a
        batch, so memory does not grow with the folder (default: default_batch_size of the device), and an
        image that takes a large part of the memory budget is translated alone.
        `steady` ('first' or 'running', see imxlate.steady): the images are frames of one sequence, in
        name order, and share their normalisation statistics (less flicker).
        """
        return translate_paths(self, inputs, to, out, src, batch_size, size, samples, seed, overwrite, progress,
                               max_pixels, tile, max_memory, steady, ext)


# ---- folders ---------------------------------------------------------------------------------------

@dataclass
class Report:
    """What a folder run did: the outputs written (in input order) and the inputs skipped, with why."""
    out: Path
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def default_out(to: str) -> Path:
    """The output folder when none is given: <to>-translated in the current directory, the same on every run
    (a file already in it is refused unless --overwrite, as in any --out)."""
    return Path(f"{to}-translated")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_options(batch_size: int | None = None, size: int | None = None, samples: int = 1,
                  seed: int | None = None, max_pixels: int | None = None) -> None:
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
        raise ImxlateError(f"{len(existing)} output file(s) already exist in {out}/ (e.g. {existing[0]}): pass "
                           "--overwrite to replace them, or choose another --out")


# The formats outputs are written in, by file suffix: Pillow's name, whether it holds an alpha channel, and how it
# is saved (JPEG and WebP at quality 95, JPEG without chroma subsampling: the translation's colour edges stay).
FORMATS = {".png": ("PNG", True, {}), ".jpg": ("JPEG", False, {"quality": 95, "subsampling": 0}),
           ".jpeg": ("JPEG", False, {"quality": 95, "subsampling": 0}), ".webp": ("WEBP", True, {"quality": 95}),
           ".tif": ("TIFF", True, {}), ".tiff": ("TIFF", True, {}), ".bmp": ("BMP", False, {})}


def check_ext(ext: str | None) -> str | None:
    """--ext as an output suffix ('jpg' or '.JPG' -> '.jpg'), None when not given; an unknown one is refused."""
    if ext is None:
        return None
    suffix = "." + ext.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ImxlateError(f"--ext {ext}: choose png, jpg, webp, tiff or bmp")
    return suffix


def _has_alpha(path: Path) -> bool:
    """Whether an image file holds transparency, from its header (as data.load_image reads it)."""
    try:
        with open_image(path) as img:
            return has_alpha(img)
    except Exception:  # unreadable: reported when it is decoded
        return False


def output_suffix(path: Path, ext: str | None = None) -> str:
    """The suffix (so the format) of an input's output: `ext` when given, else the input's own (JPEG stays JPEG,
    PNG stays PNG, ...); PNG for a format imxlate does not write (GIF's palette cannot hold a translation) and
    for an image with alpha when the format cannot hold it (JPEG, BMP)."""
    suffix = ext or path.suffix
    if suffix.lower() not in FORMATS:
        return ".png"
    if not FORMATS[suffix.lower()][1] and _has_alpha(path):
        return ".png"
    return suffix


def plan_outputs(pairs: list[tuple[Path, Path]], out: Path, samples: int,
                 ext: str | None = None) -> list[tuple[Path, list[Path]]]:
    """(input, [output per sample]) mirroring relative paths, in the format output_suffix gives (`ext`: a suffix
    from check_ext); name clashes get -2, -3."""
    taken, plan = set(), []
    for src, rel in pairs:
        stem, suffix = rel.with_suffix(""), output_suffix(src, ext)
        names = [f"{stem}_{k}" for k in range(samples)] if samples > 1 else [str(stem)]
        outs = []
        for n in names:
            cand, i = out / f"{n}{suffix}", 2
            while cand in taken:
                cand, i = out / f"{n}-{i}{suffix}", i + 1
            taken.add(cand)
            outs.append(cand)
        plan.append((src, outs))
    return plan


def translate_paths(tr: Translator, inputs, to, out, src, batch_size, size, samples, seed, overwrite, progress,
                    max_pixels: int | None = None, tile: int | None = None, max_memory=None,
                    steady: str | None = None, ext: str | None = None) -> Report:
    """Translator.translate_folder's work: check everything, plan the outputs, then run the folder."""
    check_options(batch_size, size, samples, seed, max_pixels)
    ext = check_ext(ext)
    limits = tiling.budget(max_memory, tr.family.device, tile)  # parsed once for the run
    tr.check_translation(to, src, limits)
    shared = make_steady(tr, steady, to, src, limits.tile, samples)
    pairs = expand_inputs(list(inputs))
    if not pairs:
        raise ImxlateError(f"no images found in {', '.join(map(str, inputs))}")
    out = _output_folder(out, inputs, to)
    plan = plan_outputs(pairs, out, samples, ext)
    check_outputs(plan, pairs, out, overwrite)
    store.prepare_folder(out, create=False)  # made when the first output is written
    run = _FolderRun(tr, to, src, Report(out), batch_size or default_batch_size(tr.family.device), size, samples,
                     seed, max_pixels, limits, shared)
    return run.run(plan, progress)


def _output_folder(out, inputs, to: str) -> Path:
    """--out, or default_out(to) (refused inside an input folder)."""
    if out is None:
        out = default_out(to)
        if any(_inside(out, Path(i)) for i in inputs if Path(i).is_dir()):
            raise ImxlateError("the default output folder would be inside an input folder; pass --out")
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        store.prepare_folder(out)  # says what is wrong with it
    return out


class _FolderRun:
    """One folder run: images decoded ahead in a thread, translated in batches of one size, encoded and written
    in another thread, in input order. An image that takes a large part of the memory budget is translated
    alone: nothing is decoded, waiting or being written beside it."""

    def __init__(self, tr: Translator, to: str, src: str | None, report: Report, batch_size: int, size: int | None,
                 samples: int, seed: int | None, max_pixels: int | None, limits: tiling.Budget, steady):
        self.tr, self.to, self.src, self.report = tr, to, src, report
        self.batch_size, self.size, self.samples, self.max_pixels = batch_size, size, samples, max_pixels
        self.limits, self.steady = limits, steady
        self.device = tr.family.device
        self.g = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        # Decoded images waiting for a batch, by size, oldest bucket first; never more than batch_size in all.
        self.buckets: dict[tuple[int, int], list] = {}
        self.writes: deque = deque()  # (output, future of its encoding and writing), in order
        self.decoder = ThreadPoolExecutor(1, "imxlate-decode")
        self.encoder = ThreadPoolExecutor(1, "imxlate-encode")

    def run(self, plan: list[tuple[Path, list[Path]]], progress: bool) -> Report:
        """Translate every (input, outputs) of the plan -> the report."""
        columns = (TextColumn("translating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        try:
            with Progress(*columns, console=console, disable=not progress) as bar:
                task = bar.add_task("", total=len(plan))
                for (path, outs), decoded in zip(plan, self._decode_ahead([p for p, _ in plan])):
                    self._take(path, outs, decoded)
                    bar.advance(task)
                for key in list(self.buckets):
                    self._flush(key)
                self._finish(block=True)
        finally:
            self.decoder.shutdown(cancel_futures=True)
            self.encoder.shutdown(cancel_futures=True)
        return self.report

    def _decode_ahead(self, paths: list[Path]):
        """Futures of the decoded images in order, at most batch_size decoding ahead, and none after a large
        image (by its header) until that one has been taken."""
        pending: deque = deque()
        for path in paths:
            large = self._large(*self._peek(path))
            while large and pending:
                yield pending.popleft()
            pending.append(self.decoder.submit(self._decode, path))
            if large or len(pending) > self.batch_size:
                yield pending.popleft()
        while pending:
            yield pending.popleft()

    def _take(self, path: Path, outs: list[Path], decoded) -> None:
        """Put a decoded image in its size's bucket and translate the buckets that are ready."""
        try:
            key, t, alpha = decoded.result()
        except Exception as e:  # corrupt, unsupported or too large: report, skip, go on
            self._fail(path, e)
            return
        large = self._large(*key)
        if large:  # alone: the buckets before it are translated and everything written first
            for k in list(self.buckets):
                self._flush(k)
            self._finish(block=True)
        self.buckets.setdefault(key, []).append((path, t, alpha, outs))
        del t
        if large or len(self.buckets[key]) >= self.batch_size:
            self._flush(key)
        elif sum(map(len, self.buckets.values())) > self.batch_size:
            self._flush(next(iter(self.buckets)))  # mixed sizes: the oldest bucket goes, part-full
        if large:
            self._finish(block=True)

    def _peek(self, path: Path) -> tuple[int, int]:
        """The size an image will be translated at, from its header ((0, 0) when it cannot be read)."""
        try:
            with open_image(path) as img:  # data.load_image's guard against bombs applies when it is decoded
                return tiling.sized(*img.size, self.size)
        except Exception:  # the decoder says what is wrong with it
            return 0, 0

    def _large(self, width: int, height: int) -> bool:
        return tiling.image_bytes(width, height, self.batch_size) > self.limits.total // 4

    def _check(self, width: int, height: int) -> str | None:
        """Why an image of this size (from its header) is not translated, or None: checked before it is
        decoded, and with --size before it is resized."""
        if not self.size:
            return tiling.check_fits(width, height, self.limits, self.device)
        w, h = tiling.sized(width, height, self.size)
        return too_large(w, h, self.max_pixels) or tiling.check_fits(w, h, self.limits, self.device,
                                                                     decoded=(width, height))

    def _decode(self, path: Path):
        """-> ((width, height), the image as a tensor, its alpha channel or None); resized with --size."""
        rgb, alpha = load_image(path, None if self.size else self.max_pixels, self._check)
        if self.size:
            rgb = rgb.resize(tiling.sized(*rgb.size, self.size), Image.BICUBIC)
            alpha = alpha.resize(rgb.size, Image.BICUBIC) if alpha is not None else None
        return rgb.size, to_tensor(rgb), alpha

    def _fail(self, path: Path, e: BaseException) -> None:
        self.report.failed.append((path, str(e).splitlines()[0] if str(e) else type(e).__name__))
        print(f"skipped {path}: {self.report.failed[-1][1]}", file=sys.stderr)

    def _flush(self, key: tuple[int, int]) -> None:
        """Translate the bucket of size `key` and queue its outputs for writing; an image it cannot translate
        is reported and the others go on."""
        items = self.buckets.pop(key)
        x = torch.stack([t for _, t, _, _ in items]) if len(items) > 1 else items[0][1][None]
        items = [(path, alpha, outs) for path, _, alpha, outs in items]  # the decoded tensors go with x
        try:
            results = [self.tr.translate_tensor(x, self.to, self.src, self.g, None, self.limits, self.steady)
                       for _ in range(self.samples)]
        except ImxlateError as e:  # too large even in tiles: the others go on
            for path, _, _ in items:
                self._fail(path, e)
            return
        except (RuntimeError, ValueError, MemoryError) as e:  # out of memory, too small...: the others go on
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            for path, _, _ in items:
                self._fail(path, ImxlateError(f"the model could not translate it at {key[0]}x{key[1]} pixels "
                                              f"({why}); try another size with --size"))
            return
        del x
        for i, (_, alpha, outs) in enumerate(items):
            for k, o in enumerate(outs):
                self.writes.append((o, self.encoder.submit(_encode, results[k][i], alpha, o)))
        del results
        self._finish(block=False)
        while len(self.writes) > 2 * self.batch_size * self.samples:  # the encoder is behind: wait for it
            self.writes[0][1].exception()
            self._finish(block=False)

    def _finish(self, block: bool) -> None:
        """Record the writes done (all of them when `block`), in order; a failed write ends the run."""
        while self.writes and (block or self.writes[0][1].done()):
            o, fut = self.writes.popleft()
            try:
                fut.result()
            except OSError as e:
                raise from_os_error(e, f"writing {o}", f"the {len(self.report.written)} image(s) written before "
                                    f"it in {self.report.out}/ are complete") from None
            self.report.written.append(o)


def _encode(y: torch.Tensor, alpha, o: Path) -> None:
    """Write the translated image y (3, H, W) in [-1, 1], with its alpha channel where the format of `o` (by its
    suffix, one of FORMATS) holds one (plan_outputs sends images with alpha to PNG otherwise)."""
    fmt, holds_alpha, options = FORMATS[o.suffix.lower()]
    img = to_image(y)
    if alpha is not None and holds_alpha:
        img.putalpha(alpha)
    o.parent.mkdir(parents=True, exist_ok=True)
    store.write_atomically(o, lambda f: img.save(f, format=fmt, **options))


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
