"""Differentiable augmentation of the discriminators' inputs (DiffAugment, Zhao et al. 2020).

Real and generated images are augmented alike, in the discriminator's and the generator's updates,
so a discriminator trained on a few hundred images cannot memorise them, while the generator still
learns the un-augmented distribution (the augmentations are differentiable and applied to both sides).
"""
from __future__ import annotations

import torch

POLICIES = ("translation", "cutout")


def check_policy(policy: str) -> list[str]:
    """'translation,cutout' -> ['translation', 'cutout']; unknown names raise ValueError."""
    names = [p for p in policy.split(",") if p]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    return names


def _draw(shape, low: int, high: int, generator, device) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=generator).to(device)


def translation(x: torch.Tensor, generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size in x and y, filling with zeros (the paper's 1/8)."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _draw((b, 1, 1), -sy, sy + 1, generator, x.device)
    dx = _draw((b, 1, 1), -sx, sx + 1, generator, x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy  # (B, H, 1): source row of each output row
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx  # (B, 1, W)
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)  # (B, 1, H, W)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    return x.flatten(2).gather(2, index).view_as(x) * inside


def cutout(x: torch.Tensor, generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero a square of `ratio` of the image's size at a random place in each image (the paper's 1/2)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    y0 = _draw((b, 1, 1), 0, h + 1 - ch % 2, generator, x.device) - ch // 2
    x0 = _draw((b, 1, 1), 0, w + 1 - cw % 2, generator, x.device) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= y0) & (rows < y0 + ch) & (cols >= x0) & (cols < x0 + cw)  # (B, H, W)
    return x * ~hole.unsqueeze(1)


def diff_augment(x: torch.Tensor, policy: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> the same shape, each named augmentation applied in turn with its own random draw."""
    for name in policy:
        x = translation(x, generator) if name == "translation" else cutout(x, generator)
    return x


def augmented(D, policy: list[str], generator: torch.Generator | None = None):
    """D itself when `policy` is empty, else a callable that augments its input first."""
    if not policy:
        return D
    return lambda x: D(diff_augment(x, policy, generator))
