"""Image folders, decoding to RGB, training transforms and unaligned, exactly resumable sampling."""
from __future__ import annotations

import glob
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import ImxlateError, missing_path_message

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "none")
# The guard against decompression bombs (tiny files that decode to huge images), when no --max-pixels is given:
# more pixels than Pillow's own limit (Image.MAX_IMAGE_PIXELS, 89.5 MP) AND more than this many per byte of the
# file. An 8-bit image, even a flat one, compresses to at most about 800 pixels a byte (RGB about 310); a bomb
# of 1-bit pixels reaches 8,000.
BOMB_PIXELS = 89_478_485
BOMB_PIXELS_PER_BYTE = 1024
_PIL_LIMIT = threading.Lock()  # Pillow's own check is lifted while an image is opened: too_large's applies


def is_image(path: Path) -> bool:
    """True when the file name has an image extension we read (any letter case)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path) -> list[Path]:
    """All image files under `folder`, recursively (following linked folders, each once), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImxlateError(f"{folder} is not a folder")
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree, or a second link to the same folder
            dirs[:] = []
            continue
        seen.add(real)
        found += [p for p in (Path(root) / f for f in files) if p.is_file() and is_image(p)]
    return sorted(found)


def expand_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """Files, folders and globs -> (image path, path relative to the output folder) pairs."""
    pairs = []
    for item in inputs:
        matches = [Path(m) for m in sorted(glob.glob(item))] if glob.has_magic(item) else [Path(item)]
        if not matches:
            raise ImxlateError(f"no file matches {item}")
        for path in matches:
            if path.is_dir():
                pairs += [(p, p.relative_to(path)) for p in list_images(path)]
            elif path.is_file():
                pairs.append((path, Path(path.name)))
            else:
                raise ImxlateError(missing_path_message(path))
    return pairs


def _black_and_white(a: np.ndarray) -> tuple[float, float]:
    """The values of a finite grey array that become black and white (see `_to_8bit`)."""
    if a.dtype.kind in "ui" and a.dtype.itemsize <= 2:
        return float(np.iinfo(a.dtype).min), float(np.iinfo(a.dtype).max)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if a.dtype.kind in "ui":  # mode I holds 16-bit PNGs (Pillow < 10.3), signed 16-bit and 32-bit TIFFs
        for kind in (np.uint16, np.int16):
            if np.iinfo(kind).min <= lo and hi <= np.iinfo(kind).max:
                return float(np.iinfo(kind).min), float(np.iinfo(kind).max)
    elif (0.0 <= lo and hi <= 1.0) or lo == hi:
        return 0.0, 1.0
    return lo, hi


def _to_8bit(img: Image.Image, path: str | Path) -> Image.Image:
    """Grey images with 16 or 32 bits per pixel (modes I;16*, I, F) -> mode L, scaled by a range, never clipped.

    Integers are scaled by the full range of their type (uint16: v / 257), as image viewers show them: a file
    rarely says it holds 12-bit data, so that stays dark, and a folder's images (a video's frames) keep their
    relative brightness. Mode I (int32) takes the 16-bit type its values fit, else their own min..max.
    Floats map [0, 1] to black..white when every value is within it (the usual convention), else their own
    min..max. NaN and -inf become the lowest finite value, +inf the highest, with a warning on stderr.
    """
    a = np.asarray(img)
    finite = np.isfinite(a)
    if not finite.all():
        print(f"warning: {path}: {a.size - int(finite.sum())} pixel(s) are NaN or infinite; NaN and -inf are "
              "shown as the image's darkest value, +inf as its brightest", file=sys.stderr)
        lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 0.0)
        a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
    black, white = _black_and_white(a)
    scaled = (a.astype(np.float32) - black) * np.float32(255.0 / (white - black)) + np.float32(0.5)
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")


def too_large(width: int, height: int, max_pixels: int | None, file_bytes: int | None = None) -> str | None:
    """Why an image of this size is refused, or None: more pixels than `max_pixels` when that is given; else
    a decompression bomb, more pixels than BOMB_PIXELS and than BOMB_PIXELS_PER_BYTE per byte of its file."""
    pixels = width * height
    size = f"{width}x{height} pixels ({pixels / 1e6:.1f} MP)"
    if max_pixels is not None:
        if pixels <= max_pixels:
            return None
        return f"{size} is more than the limit of {max_pixels} pixels; shrink it with --size N or raise --max-pixels"
    if file_bytes is None or pixels <= max(BOMB_PIXELS, BOMB_PIXELS_PER_BYTE * file_bytes):
        return None
    return (f"{size} from a file of {file_bytes / 1024:.0f} KB is more than the limit against decompression "
            f"bombs ({BOMB_PIXELS / 1e6:.1f} MP, or {BOMB_PIXELS_PER_BYTE} pixels per byte of file); if it is a "
            f"real image, pass --max-pixels {pixels}")


def open_image(path) -> Image.Image:
    """Image.open (the header read, the pixels not yet decoded) without Pillow's own decompression-bomb check:
    too_large applies imxlate's, which knows the file's size."""
    with _PIL_LIMIT:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def load_image(path: str | Path, max_pixels: int | None = None,
               check=None) -> tuple[Image.Image, Image.Image | None]:
    """Decode any image file to (RGB image, alpha channel or None), EXIF orientation applied.

    Refused from its header, before it is decoded: an image that too_large refuses (more than `max_pixels`
    pixels, or without it a decompression bomb), and one for which `check(width, height)` gives a reason.
    """
    with open_image(path) as img:
        file_bytes = os.path.getsize(path) if isinstance(path, (str, os.PathLike)) else None
        refused = too_large(*img.size, max_pixels, file_bytes) or (check(*img.size) if check else None)
        if refused:
            raise ImxlateError(refused)
        img = ImageOps.exif_transpose(img)
        img.load()
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit(img, path)
    alpha = None
    if has_alpha(img):
        img = img.convert("RGBA")
        alpha = img.getchannel("A")
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return img, alpha


def has_alpha(img: Image.Image) -> bool:
    """Whether a PIL image (opened or loaded) has transparency: an alpha channel, or a palette's or colour's
    transparency entry."""
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def load_rgb(path: str | Path, background=(255, 255, 255)) -> Image.Image:
    """Decode any image file to RGB; transparent parts are composited on `background`."""
    rgb, alpha = load_image(path)
    if alpha is None:
        return rgb
    canvas = Image.new("RGB", rgb.size, background)
    canvas.paste(rgb, mask=alpha)
    return canvas


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W) in [-1, 1]."""
    a = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    return a.float().div(127.5).sub(1.0)


def to_image(t: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [-1, 1] -> RGB PIL image, rounded to 8 bits."""
    a = t.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(a, "RGB")


@dataclass
class Transform:
    """Training preprocessing as in the CycleGAN reference: resize, random crop, random flip."""

    load_size: int = 286
    crop_size: int = 256
    preprocess: str = "resize_and_crop"
    flip: bool = True

    def __call__(self, img: Image.Image, g: torch.Generator) -> torch.Tensor:
        if self.preprocess == "resize_and_crop":
            img = img.resize((self.load_size, self.load_size), Image.BICUBIC)
        elif self.preprocess == "scale_width":
            w, h = img.size
            img = img.resize((self.load_size, max(self.crop_size, round(h * self.load_size / w))), Image.BICUBIC)
        elif self.preprocess == "none":
            w, h = img.size  # keep the size, round down to a multiple of 4
            return self._flip(to_tensor(img.crop((0, 0, w - w % 4, h - h % 4))), g)
        w, h = img.size
        if w < self.crop_size or h < self.crop_size:
            scale = self.crop_size / min(w, h)
            img = img.resize((max(self.crop_size, round(w * scale)), max(self.crop_size, round(h * scale))), Image.BICUBIC)
            w, h = img.size
        x = int(torch.randint(0, w - self.crop_size + 1, (1,), generator=g))
        y = int(torch.randint(0, h - self.crop_size + 1, (1,), generator=g))
        img = img.crop((x, y, x + self.crop_size, y + self.crop_size))
        return self._flip(to_tensor(img), g)

    def _flip(self, t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        flip = bool(torch.rand((), generator=g) < 0.5)
        return t.flip(-1) if self.flip and flip else t


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, or None when it is not a readable image."""
    try:
        with Image.open(path) as img:
            return img.size
    except Exception:
        return None


class Domain:
    """One domain's images; class labels come from first-level subfolder names (none: one class)."""

    def __init__(self, name: str, root: Path, max_images: int | None = None):
        self.name, self.root = name, root
        sizes = {p: _header_size(p) for p in list_images(root)}
        for p, size in sizes.items():
            if size is None:
                print(f"warning: skipping unreadable image {p}", file=sys.stderr)
        paths = [p for p, size in sizes.items() if size is not None]
        if not paths:
            raise ImxlateError(f"domain '{name}' has no readable image in {root} "
                               f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))} files)")
        if max_images:
            paths = paths[:max_images]
        self.paths = paths
        self.sizes = [sizes[p] for p in paths]
        subdirs = sorted({p.relative_to(root).parts[0] for p in paths if len(p.relative_to(root).parts) > 1})
        self.classes = subdirs if subdirs and all(len(p.relative_to(root).parts) > 1 for p in paths) else []
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = [index[p.relative_to(root).parts[0]] if self.classes else 0 for p in paths]

    def __len__(self) -> int:
        return len(self.paths)


def upscale_note(domains: list[Domain], crop_size: int, preprocess: str = "resize_and_crop") -> str:
    """'; N of M images are smaller than 256 px and are upscaled (...)' for the training summary, or ''."""
    if preprocess == "none":
        return ""
    small = sum(min(w, h) < crop_size for d in domains for w, h in d.sizes)
    if not small:
        return ""
    total = sum(len(d) for d in domains)
    return (f"; {small} of {total} images are smaller than {crop_size} px and are upscaled "
            "(a lower --crop-size trains at their own resolution)")


def find_domain_folder(data: Path, name: str, index: int, split: str = "train") -> Path:
    """`DATA/name`, else the reference layout `DATA/trainA` (index 0), `DATA/trainB` (index 1), ..."""
    candidates = [data / name, data / split / name, data / f"{split}{chr(ord('A') + index)}"]
    for c in candidates:
        if c.is_dir():
            return c
    raise ImxlateError(f"no folder for domain '{name}': looked for {', '.join(str(c) for c in candidates)}")


def find_test_folder(train_folder: Path, name: str, index: int) -> Path | None:
    """The held-out split beside a domain's training folder, or None: `test/<name>` next to it or next
    to its `train/` parent, `testA`/`testB` next to `trainA`/`trainB`, or `<name>_test`."""
    train_folder = Path(train_folder)
    parent = train_folder.parent
    letter = chr(ord("A") + index)
    candidates = [parent / "test" / name, parent.parent / "test" / name, parent / f"{name}_test"]
    if train_folder.name == f"train{letter}":
        candidates.insert(0, parent / f"test{letter}")
    return next((c for c in candidates if c.is_dir() and c.resolve() != train_folder.resolve()), None)


class UnpairedDataset(torch.utils.data.Dataset):
    """Item p of epoch e: one augmented image per domain, chosen by a plan seeded by (seed, epoch).

    An epoch is max(|domain|) positions; each domain walks its own shuffled order, cycling when
    shorter (unaligned sampling). The plan and every augmentation depend only on (seed, epoch,
    position), so a run resumes exactly by starting at a position, whatever the worker count.
    """

    def __init__(self, domains: list[Domain], transform: Transform, seed: int):
        self.domains, self.transform, self.seed = domains, transform, seed
        self.length = max(len(d) for d in domains)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self.order = []
        for d in self.domains:
            reps = -(-self.length // len(d))
            self.order.append(torch.cat([torch.randperm(len(d), generator=g) for _ in range(reps)])[: self.length])
        self.aug_seeds = torch.randint(0, 2**62, (self.length, len(self.domains)), generator=g)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, pos: int) -> dict:
        images, labels = [], []
        for k, d in enumerate(self.domains):
            g = torch.Generator().manual_seed(int(self.aug_seeds[pos, k]))
            i = int(self.order[k][pos])
            for attempt in range(len(d)):
                j = (i + attempt) % len(d)
                try:
                    img = load_rgb(d.paths[j])
                    break
                except Exception as e:  # a corrupt file: report it, take the next image
                    print(f"warning: skipping unreadable image {d.paths[j]} ({e})", file=sys.stderr)
            else:
                raise ImxlateError(f"domain '{d.name}': no image could be decoded")
            images.append(self.transform(img, g))
            labels.append(d.labels[j])
        return {"images": images, "labels": torch.tensor(labels)}


def collate(items: list[dict], names: list[str]) -> dict:
    """List of dataset items -> {"images": {domain: (B,3,H,W)}, "labels": {domain: (B,)}}."""
    return {
        "images": {n: torch.stack([it["images"][k] for it in items]) for k, n in enumerate(names)},
        "labels": {n: torch.stack([it["labels"][k] for it in items]) for k, n in enumerate(names)},
    }


def worker_count(requested: int | None) -> int:
    """DataLoader workers: the request, else up to 4 but leave a core for training."""
    if requested is not None:
        return requested
    return max(0, min(4, (os.cpu_count() or 1) - 1))
