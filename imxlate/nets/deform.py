"""The CycleGAN ResNet generator with DG-Font's deformable skip connections (Xie et al. 2021, FDSC).

A texture generator keeps its input's geometry: every output pixel is made from the input pixels at the same
place. DG-Font moves strokes instead: at two resolutions the encoder's feature crosses to the decoder through a
deformable 3x3 convolution (Dai et al. 2017; modulated, Zhu et al. 2019) whose sampling offsets are predicted
from the encoder's and the decoder's features together, and the deformed feature is concatenated to the
decoder's. An offset loss (the mean absolute offset, `offset_loss`) keeps the displacements small.

Settings from DG-Font's paper and released code: the two skips are the feature after the 7x7 stem (H) and after
the first stride-2 convolution (H/2); offsets (and modulation masks) come from a 3x3 convolution of the
concatenated decoder and encoder features, initialised to zero; the deformable convolution keeps the channel
count and has a bias, no norm or activation; its output is concatenated to the decoder's feature, so the next
layer takes twice the channels; the offset loss is the mean over both skips of mean |offset|, weight 0.5.
Our choices: the rest is the CycleGAN ResNet generator (nets/resnet.py: same stem, downsampling, residual
blocks, upsampling, widths), not DG-Font's deformable content encoder and AdaIN mixer; the mask is 2 sigmoid(m)
instead of sigmoid(m), so that zero-initialised predictors make each skip exactly a plain 3x3 convolution
(DG-Font's starts at half of one).

The deformable convolution is written with grid_sample (`deform_conv3x3`), equal to torchvision.ops.deform_conv2d
(tests check it), because of its CPU speed: a 64 px CycleGAN training step (ngf 32, 6 blocks, one thread) took
6.0x the ResNet generator's time with torchvision's kernel, 1.8x with this one.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import conv_bias, norm_layer
from .resnet import ResnetBlock, upsampling

TAPS = 9  # sampling points of a 3x3 kernel


def offset_loss(offsets: list[torch.Tensor]) -> torch.Tensor:
    """DG-Font's offset loss: the mean over the skips of the mean absolute offset (in feature pixels)."""
    return torch.stack([o.abs().mean() for o in offsets]).mean()


def deform_conv3x3(x: torch.Tensor, offsets: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None) -> torch.Tensor:
    """Modulated deformable 3x3 convolution, stride 1, zero padding 1: x (B, C, H, W), offsets (B, 18, H, W) as
    (dy, dx) per tap in row-major tap order, mask (B, 9, H, W), weight (C_out, C, 3, 3) -> (B, C_out, H, W);
    torchvision.ops.deform_conv2d(x, offsets, weight, bias, padding=1, mask=mask) by bilinear sampling."""
    b, c, h, w = x.shape
    taps = torch.arange(-1, 2, device=x.device, dtype=x.dtype)
    ys = (torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
          + taps.repeat_interleave(3).view(1, TAPS, 1, 1) + offsets[:, 0::2])       # (B, 9, H, W)
    xs = (torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
          + taps.repeat(3).view(1, TAPS, 1, 1) + offsets[:, 1::2])
    # pixel i's centre is at (2i + 1) / size - 1 in grid_sample's coordinates; outside the image reads zeros
    grid = torch.stack([(2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1], -1).view(b, TAPS * h, w, 2)
    cols = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, C, 9 H, W)
    cols = (cols.reshape(b, c, TAPS, h, w) * mask.unsqueeze(1)).reshape(b, c * TAPS, h, w)
    return F.conv2d(cols, weight.reshape(weight.shape[0], c * TAPS, 1, 1), bias)


class DeformSkip(nn.Module):
    """FDSC: (encoder feature, decoder feature), both (B, C, h, w) -> (the encoder feature through a modulated
    deformable 3x3 convolution (B, C, h, w), its offsets (B, 18, h, w) as (dy, dx) per tap)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)  # the deformable convolution's weights
        # The offset and mask predictor is kept as plain parameters, not an nn.Conv2d, so that init_weights
        # (N(0, 0.02) on every convolution) leaves it at zero: a new skip samples the regular 3x3 grid.
        self.offset_weight = nn.Parameter(torch.zeros(3 * TAPS, 2 * channels, 3, 3))
        self.offset_bias = nn.Parameter(torch.zeros(3 * TAPS))

    def forward(self, enc: torch.Tensor, dec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = F.conv2d(torch.cat([dec, enc], 1), self.offset_weight, self.offset_bias, padding=1)
        offsets, mask = pred[:, :2 * TAPS], 2 * torch.sigmoid(pred[:, 2 * TAPS:])
        return deform_conv3x3(enc, offsets, mask, self.conv.weight, self.conv.bias), offsets


class DeformResnetGenerator(nn.Module):
    """(B, in_ch, H, W) in [-1, 1] -> (B, out_ch, H, W) in [-1, 1]; H and W multiples of 4. `deformed(x)` also
    returns the skips' offsets, for `offset_loss`."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: bool = False, upsample: str = "transpose"):
        super().__init__()
        bias = conv_bias(norm)

        def down(c):  # (B, c, h, w) -> (B, 2c, h/2, w/2)
            return [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), norm_layer(norm, 2 * c), nn.ReLU(True)]

        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7, bias=bias), norm_layer(norm, ngf),
                                  nn.ReLU(True))
        self.down = nn.Sequential(*down(ngf))
        self.body = nn.Sequential(*down(2 * ngf), *[ResnetBlock(4 * ngf, norm, dropout) for _ in range(n_blocks)],
                                  *upsampling(4 * ngf, upsample, bias), norm_layer(norm, 2 * ngf), nn.ReLU(True))
        self.skip_half = DeformSkip(2 * ngf)
        self.up = nn.Sequential(*upsampling(4 * ngf, upsample, bias, out_ch=ngf), norm_layer(norm, ngf), nn.ReLU(True))
        self.skip_full = DeformSkip(ngf)
        self.out = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(2 * ngf, out_ch, 7), nn.Tanh())

    def deformed(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x -> (the translation, the offsets of the skips at H and at H/2)."""
        e1 = self.stem(x)                              # (B, ngf, H, W)
        e2 = self.down(e1)                             # (B, 2 ngf, H/2, W/2)
        d2 = self.body(e2)                             # (B, 2 ngf, H/2, W/2)
        s2, o2 = self.skip_half(e2, d2)
        d1 = self.up(torch.cat([s2, d2], 1))           # (B, ngf, H, W)
        s1, o1 = self.skip_full(e1, d1)
        return self.out(torch.cat([s1, d1], 1)), [o1, o2]

    def forward(self, x):
        return self.deformed(x)[0]
