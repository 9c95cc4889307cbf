"""The CycleGAN ResNet generator (Johnson et al. 2016, as used by Zhu et al. 2017).

The module indices follow the reference implementation's `model.N` layout, so its checkpoints map
onto this network key for key: stem 0-3, downsampling 4-9, residual blocks from 10, then
upsampling, output padding, convolution and tanh.
"""
from __future__ import annotations

import torch.nn as nn

from .common import conv_bias, norm_layer, resize_conv


def default_blocks(crop_size: int) -> int:
    """Residual blocks for a training crop (CycleGAN paper: 9 for 256x256 images, 6 for 128x128)."""
    return 9 if crop_size >= 256 else 6


def nce_layers(n_blocks: int) -> list[int]:
    """CUT's five PatchNCE layers (Park et al. 2020) in this generator's indices: 0 the padded input, 4 and 7
    the two stride-2 convolutions, 10 the first residual block, 14 the fifth (the last one when there are fewer).
    The encoder ends at index 9 + n_blocks."""
    return [0, 4, 7, 10, 10 + min(4, n_blocks - 1)]


def upsampling(channels: int, kind: str, bias: bool, out_ch: int | None = None) -> list[nn.Module]:
    """x2 upsampling to `out_ch` channels (default half of `channels`): a transposed convolution (the
    reference), or a nearest resize + convolution, which avoids checkerboard artefacts (Odena et al. 2016)."""
    out_ch = out_ch or channels // 2
    if kind == "transpose":
        return [nn.ConvTranspose2d(channels, out_ch, 3, stride=2, padding=1, output_padding=1, bias=bias)]
    if kind == "resize":
        return resize_conv(channels, out_ch, bias)
    raise ValueError(f"unknown upsampling {kind!r}; choose transpose or resize")


class ResnetBlock(nn.Module):
    """x + conv_block(x): pad, 3x3 conv, norm, ReLU, [dropout 0.5], pad, 3x3 conv, norm."""

    def __init__(self, dim: int, norm: str, dropout: bool):
        super().__init__()
        bias = conv_bias(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """(B, in_ch, H, W) in [-1, 1] -> (B, out_ch, H, W) in [-1, 1]; H and W multiples of 4."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: bool = False, upsample: str = "transpose"):
        super().__init__()
        bias = conv_bias(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7, bias=bias), norm_layer(norm, ngf), nn.ReLU(True)]
        for i in range(2):  # (B, ngf, H, W) -> (B, 4 ngf, H/4, W/4)
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), norm_layer(norm, 2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(4 * ngf, norm, dropout) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += upsampling(c, upsample, bias) + [norm_layer(norm, c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)
