"""Networks of the shared-latent family (UNIT, Liu et al. 2017): encoders, decoders, a latent discriminator.

An encoder maps an image to a code of 4 x ngf channels at a quarter of its size; a decoder maps a
code back to an image. The last K residual blocks of the two encoders, and the first K of the two
decoders, are one module passed to both constructors, so their weights are one set of parameters.
"""
from __future__ import annotations

import torch.nn as nn

from .common import apply_spectral_norm, conv_bias, norm_layer
from .resnet import ResnetBlock, upsampling

DOWNSAMPLINGS = 2  # stride-2 layers in an encoder (and upsamplings in a decoder): codes are H/4 x W/4


def code_channels(ngf: int) -> int:
    """Channels of the shared code: ngf doubled once per downsampling."""
    return ngf * 2**DOWNSAMPLINGS


def residual_blocks(dim: int, n: int, norm: str) -> nn.Sequential:
    """n residual blocks of width `dim` (the CycleGAN block: two 3x3 convolutions)."""
    return nn.Sequential(*[ResnetBlock(dim, norm, dropout=False) for _ in range(n)])


class Encoder(nn.Module):
    """(B,3,H,W) in [-1,1] -> code (B, 4 ngf, H/4, W/4): 7x7 conv, two stride-2 convs, private then shared blocks.

    The code is the mean of UNIT's Gaussian q(z|x) (unit variance); the family adds the noise when training.
    """

    def __init__(self, shared: nn.Sequential, ngf: int = 64, n_blocks: int = 4, norm: str = "instance"):
        super().__init__()
        bias = conv_bias(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=bias), norm_layer(norm, ngf), nn.ReLU(True)]
        for i in range(DOWNSAMPLINGS):
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), norm_layer(norm, 2 * c), nn.ReLU(True)]
        dim = code_channels(ngf)
        self.private = nn.Sequential(*layers, *residual_blocks(dim, n_blocks - len(shared), norm))
        self.shared = shared

    def forward(self, x):
        return self.shared(self.private(x))


class Decoder(nn.Module):
    """Code (B, 4 ngf, h, w) -> image (B,3,4h,4w) in [-1,1]: shared then private blocks, two upsamplings, 7x7 conv, tanh."""

    def __init__(self, shared: nn.Sequential, ngf: int = 64, n_blocks: int = 4, norm: str = "instance",
                 upsample: str = "transpose"):
        super().__init__()
        bias = conv_bias(norm)
        dim = code_channels(ngf)
        layers = list(residual_blocks(dim, n_blocks - len(shared), norm))
        for i in range(DOWNSAMPLINGS):
            c = dim // 2**i
            layers += upsampling(c, upsample, bias) + [norm_layer(norm, c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.shared = shared
        self.private = nn.Sequential(*layers)

    def forward(self, z):
        return self.private(self.shared(z))


class LatentDiscriminator(nn.Module):
    """Code (B, C, h, w) -> (B, 1, ceil(h/2), ceil(w/2)) logits of "domain a" (a small conv net on the common space)."""

    def __init__(self, channels: int, width: int = 64, spectral_norm: bool = False):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 1, 1))
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, z):
        return self.model(z)
