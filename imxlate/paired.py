"""Metrics against ground truth for test sets that have it (files matched by name): L1, SSIM,
top-1 retrieval, and the colour-histogram-matching baseline."""
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

    Retrieval: a prediction counts when its own target is the nearest (L1) of all targets.
    """
    if len(preds) != len(targets) or not preds:
        raise ImxlateError("paired scores need as many predictions as targets, at least one")
    t = torch.stack([pixels(im) for im in targets])
    p = torch.stack([pixels(im, targets[i].size) for i, im in enumerate(preds)])
    l1 = (p - t).abs().flatten(1).mean(1)
    top1 = (nearest(p, t) == torch.arange(len(p))).double().mean()
    return {"n": len(preds), "l1": float(l1.mean()), "ssim": float(np.mean([ssim(a, b) for a, b in zip(p, t)])),
            "top1": float(top1)}


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
