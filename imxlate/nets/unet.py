"""The pix2pix U-Net generator (Isola et al. 2017), the CycleGAN reference's `--netG unet_128/unet_256`.

An encoder of 4x4 stride-2 convolutions (filters ngf, 2 ngf, 4 ngf, then 8 ngf) down to the bottleneck,
a mirrored decoder, and a skip connection at every level that concatenates the encoder's features to
the decoder's, so the input's edges reach the output without passing through the bottleneck.
Down: LeakyReLU 0.2, conv, norm (none on the first layer or the bottleneck); up: ReLU, x2 upsampling,
norm (none on the last layer), and with dropout asked for, dropout 0.5 in the 8 ngf levels above the
bottleneck; tanh at the end.
The blocks nest as in the reference (`model.model.1.model.3...`), so its key layout carries over.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .common import conv_bias, norm_layer, resize_conv


def unet_levels(size: int) -> int:
    """As many levels as `size` can be halved evenly (pix2pix: 8 at 256 px, 7 at 128, 6 at 64)."""
    return (size & -size).bit_length() - 1


def up_layer(in_ch: int, out_ch: int, kind: str, bias: bool) -> nn.Module:
    """x2 upsampling: a 4x4 stride-2 transposed convolution (the reference) or nearest resize + 3x3 conv."""
    if kind == "transpose":
        return nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=bias)
    if kind == "resize":
        return nn.Sequential(*resize_conv(in_ch, out_ch, bias))
    raise ValueError(f"unknown upsampling {kind!r}; choose transpose or resize")


class UnetBlock(nn.Module):
    """One level: down, the inner levels (if any), up; all but the outermost return cat(input, output)."""

    def __init__(self, outer: int, inner: int, sub: nn.Module | None = None, in_ch: int | None = None,
                 outermost: bool = False, norm: str = "batch", dropout: bool = False, upsample: str = "transpose"):
        super().__init__()
        self.outermost = outermost
        bias = conv_bias(norm)
        down = nn.Conv2d(in_ch or outer, inner, 4, stride=2, padding=1, bias=bias)
        if outermost:
            layers = [down, sub, nn.ReLU(True), up_layer(2 * inner, outer, upsample, True), nn.Tanh()]
        elif sub is None:  # the bottleneck: no norm after its down convolution, nothing to concatenate
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up_layer(inner, outer, upsample, bias),
                      norm_layer(norm, outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down, norm_layer(norm, inner), sub, nn.ReLU(True),
                      up_layer(2 * inner, outer, upsample, bias), norm_layer(norm, outer)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """(B, in_ch, H, W) in [-1, 1] -> (B, out_ch, H, W); H and W multiples of 2**n_downs (log2 of the
    training size makes the bottleneck 1x1, as unet_256 has 8 levels at 256 px)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_downs: int = 8,
                 norm: str = "batch", dropout: bool = False, upsample: str = "transpose"):
        super().__init__()
        if n_downs < 5:
            raise ValueError(f"a U-Net needs at least 5 levels, not {n_downs}")
        kw = dict(norm=norm, upsample=upsample)
        block = UnetBlock(8 * ngf, 8 * ngf, **kw)
        for _ in range(n_downs - 5):
            block = UnetBlock(8 * ngf, 8 * ngf, block, dropout=dropout, **kw)
        for mult in (4, 2, 1):
            block = UnetBlock(mult * ngf, 2 * mult * ngf, block, **kw)
        self.model = UnetBlock(out_ch, ngf, block, in_ch=in_ch, outermost=True, **kw)

    def forward(self, x):
        return self.model(x)
