"""StarGAN networks (Choi et al. 2018): one generator conditioned on the target domain, and a
PatchGAN discriminator with a real/fake head and a domain-classification head.

Module names (`main.N`, `conv1`, `conv2`) follow the reference implementation so its checkpoints
map key for key.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import apply_spectral_norm


class TrackedInstanceNorm2d(nn.InstanceNorm2d):
    """Affine instance norm that keeps running statistics, as the reference does (so its state
    dicts match), but normalises every image by its own statistics in eval mode too: the
    reference never switches to eval mode, so this is how its models translate."""

    def __init__(self, channels: int):
        super().__init__(channels, affine=True, track_running_stats=True)

    def forward(self, x):
        if self.training:
            return super().forward(x)
        return F.instance_norm(x, None, None, self.weight, self.bias, use_input_stats=True, eps=self.eps)


class ResidualBlock(nn.Module):
    """x + (3x3 conv, norm, ReLU, 3x3 conv, norm), zero padding, no biases (the norms shift)."""

    def __init__(self, dim: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False), TrackedInstanceNorm2d(dim), nn.ReLU(True),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False), TrackedInstanceNorm2d(dim))

    def forward(self, x):
        return x + self.main(x)


class StarGenerator(nn.Module):
    """(B, 3, H, W) in [-1, 1] and (B, c_dim) target codes -> (B, 3, H, W); H and W multiples of 4.

    The code is tiled over the image and concatenated as c_dim extra input channels; then a 7x7
    stem, two 4x4 stride-2 downsamplings, residual blocks, two 4x4 stride-2 transposed convs and a
    7x7 output conv with tanh.
    """

    def __init__(self, c_dim: int, ngf: int = 64, n_blocks: int = 6):
        super().__init__()
        layers = [nn.Conv2d(3 + c_dim, ngf, 7, 1, 3, bias=False), TrackedInstanceNorm2d(ngf), nn.ReLU(True)]
        dim = ngf
        for _ in range(2):  # (B, ngf, H, W) -> (B, 4 ngf, H/4, W/4)
            layers += [nn.Conv2d(dim, 2 * dim, 4, 2, 1, bias=False), TrackedInstanceNorm2d(2 * dim), nn.ReLU(True)]
            dim *= 2
        layers += [ResidualBlock(dim) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=False), TrackedInstanceNorm2d(dim // 2),
                       nn.ReLU(True)]
            dim //= 2
        layers += [nn.Conv2d(dim, 3, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return self.main(torch.cat([x, c], dim=1))


def discriminator_layers(image_size: int) -> int:
    """Stride-2 layers for `image_size`: log2(size) - 1 (6 at 128 px, the paper's), capped at 6."""
    return max(1, min(6, int(math.log2(image_size)) - 1))


class StarDiscriminator(nn.Module):
    """(B, 3, S, S) -> ((B, 1, S/2^n, S/2^n) real/fake logits, (B, c_dim) domain logits).

    n 4x4 stride-2 convs (ndf doubling, LeakyReLU 0.01, no norm); a 3x3 conv gives the patch map,
    a conv as large as the final map gives the domain logits.
    """

    def __init__(self, image_size: int, c_dim: int, ndf: int = 64, n_layers: int | None = None,
                 spectral_norm: bool = False):
        super().__init__()
        n_layers = n_layers or discriminator_layers(image_size)
        layers = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.01)]
        dim, final = ndf, image_size // 2
        for _ in range(1, n_layers):
            layers += [nn.Conv2d(dim, 2 * dim, 4, 2, 1), nn.LeakyReLU(0.01)]
            dim, final = 2 * dim, final // 2
        if final < 1:
            raise ValueError(f"{n_layers} discriminator layers are too many for {image_size}px images")
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(dim, 1, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(dim, c_dim, final, bias=False)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x):
        h = self.main(x)
        return self.conv1(h), self.conv2(h).flatten(1)
