"""Metrics against ground truth for test sets that have it (files matched by name): L1, SSIM,
top-1 retrieval, shape retrieval (drawings: placement and scale taken out), and the
colour-histogram-matching baseline."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data import list_images, load_rgb
from .errors import ImxlateError


def match_by_name(pred_dir: str | Path, target_dir: str | Path) -> list[tuple[Path, Path]]:
    """(prediction, target) pairs whose file names (without extension) agree."""
    targets = {p.relative_to(target_dir).with_suffix(""): p for p in list_images(target_dir)}
    pairs = [(p, targets[p.relative_to(pred_dir).with_suffix("")]) for p in list_images(pred_dir)
             if p.relative_to(pred_dir).with_suffix("") in targets]
    if not pairs:
        raise ImxlateError(f"no file in {pred_dir} has a namesake in {target_dir}")
    return pairs


def pixels(img: Image.Image, size=None) -> torch.Tensor:
    """An image as (3, H, W) float64 in [0, 1], resized (bicubic) to `size` when given: what paired scores compare."""
    if size and img.size != size:
        img = img.resize(size, Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.float64) / 255.0).permute(2, 0, 1)


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of (3,H,W) images in [0,1]."""
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 11, 11)
    x, y = x[None], y[None]
    blur = lambda t: F.conv2d(t, w, groups=3)  # noqa: E731 - valid window positions only
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def image_ssim(pred: Image.Image, target: Image.Image) -> float:
    """SSIM of one image against its target (resized to the target's size when they differ)."""
    return ssim(pixels(pred, target.size), pixels(target))


def nearest(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The index of the nearest target (L1 over pixels) of each prediction: what retrieval reads it as."""
    return torch.cdist(preds.flatten(1), targets.flatten(1), p=1).argmin(1)


def paired_scores(preds: list[Image.Image], targets: list[Image.Image]) -> dict:
    """Mean L1 (0-1 scale), mean SSIM and top-1 retrieval accuracy of predictions against their targets.

    Retrieval: a prediction counts when its own target is the nearest (L1) of all targets (compared at the first
    target's size when the targets differ in size; L1 and SSIM are always at each target's own size).
    """
    if len(preds) != len(targets) or not preds:
        raise ImxlateError("paired scores need as many predictions as targets, at least one")
    t = [pixels(im) for im in targets]
    p = [pixels(im, targets[i].size) for i, im in enumerate(preds)]
    l1, ssims = [float((a - b).abs().mean()) for a, b in zip(p, t)], [ssim(a, b) for a, b in zip(p, t)]
    if len({im.size for im in targets}) > 1:  # targets of several sizes: retrieval compares at the first one's
        p, t = ([pixels(im, targets[0].size) for im in ims] for ims in (preds, targets))
    top1 = (nearest(torch.stack(p), torch.stack(t)) == torch.arange(len(p))).double().mean()
    return {"n": len(preds), "l1": float(np.mean(l1)), "ssim": float(np.mean(ssims)), "top1": float(top1)}


def ink_shape(img: Image.Image, size: int = 32, trim: float = 0.02, sigma: float = 1.0) -> torch.Tensor:
    """A drawing's shape with its placement and scale taken out -> a unit (size*size,) float64 vector (zeros
    when there is no ink): the ink (1 - grey level, below 0.1 dropped) inside its box, the box spanning all but
    `trim` of the ink mass on each side (so stray specks do not stretch it), padded square, resized to
    size x size, blurred by a Gaussian of `sigma` px."""
    ink = 1.0 - torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float64) / 255.0)
    ink[ink < 0.1] = 0.0
    if float(ink.sum()) == 0.0:
        return torch.zeros(size * size, dtype=torch.float64)

    def span(mass: torch.Tensor) -> tuple[int, int]:
        cum = mass.cumsum(0) / mass.sum()
        return int((cum < trim).sum()), int((cum < 1 - trim).sum()) + 1

    (y0, y1), (x0, x1) = span(ink.sum(1)), span(ink.sum(0))
    box = ink[y0:y1, x0:x1]
    side = max(box.shape)
    top, left = (side - box.shape[0]) // 2, (side - box.shape[1]) // 2
    square = F.pad(box, (left, side - box.shape[1] - left, top, side - box.shape[0] - top))
    small = F.interpolate(square[None, None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    r = int(3 * sigma)
    g = torch.exp(-((torch.arange(-r, r + 1, dtype=torch.float64)) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    small = F.conv2d(F.conv2d(F.pad(small, (r, r, r, r)), g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1)).flatten()
    return small / small.norm()


def shape_top1(preds: list[Image.Image], targets: list[Image.Image]) -> float:
    """Placement- and scale-free retrieval: the share of predictions whose own target is the most similar
    (cosine of `ink_shape` vectors) of all targets; a prediction without ink counts as a miss."""
    if len(preds) != len(targets) or not preds:
        raise ImxlateError("shape retrieval needs as many predictions as targets, at least one")
    p = torch.stack([ink_shape(im) for im in preds])
    t = torch.stack([ink_shape(im) for im in targets])
    hit = (p @ t.T).argmax(1) == torch.arange(len(p))
    return float((hit & (p.norm(dim=1) > 0)).double().mean())


def domain_histogram(folder: str | Path, bins: int = 256) -> np.ndarray:
    """(3, bins) pooled colour histogram of a folder of images."""
    h = np.zeros((3, bins))
    for p in list_images(folder):
        a = np.asarray(load_rgb(p))
        for c in range(3):
            h[c] += np.bincount(a[..., c].ravel(), minlength=bins)
    return h


def match_histogram(img: Image.Image, reference: np.ndarray) -> Image.Image:
    """Map each channel of `img` so its CDF follows the reference histogram (a colour-transfer baseline)."""
    a = np.asarray(img.convert("RGB"))
    out = np.empty_like(a)
    for c in range(3):
        src_cdf = np.cumsum(np.bincount(a[..., c].ravel(), minlength=256)).astype(np.float64)
        src_cdf /= src_cdf[-1]
        ref_cdf = np.cumsum(reference[c]) / reference[c].sum()
        lut = np.clip(np.searchsorted(ref_cdf, src_cdf), 0, 255).astype(np.uint8)
        out[..., c] = lut[a[..., c]]
    return Image.fromarray(out, "RGB")
