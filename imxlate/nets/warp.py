"""A generator behind a spatial transformer (Jaderberg et al. 2015): a learned affine warp of its input.

A texture generator keeps its input's geometry: every output pixel is made from the input pixels at the same
place. Where two styles differ by a global change of geometry (a slant, narrower or wider proportions: a
sans font to an italic script, upright to oblique handwriting), the cheapest way to move every stroke at once
is one affine map of the whole picture. A small localisation network reads the input (resized to 64 px, so
its cost does not grow with the image) and predicts the 2x3 affine matrix; the input is resampled through it
(bilinear, the border repeated, as a photo's or a page's edge continues), and the generator (the ResNet or the
U-Net, unchanged) translates the warped picture.

Settings from Jaderberg et al.: the localisation network ends in a regressor of the six affine parameters
initialised to the identity transform (zero weights, identity bias), so a new warp leaves the generator as it
was. Our choices: the localisation network is three stride-2 3x3 convolutions (ngf, 2 ngf, 4 ngf
channels, ReLU, no norm) and a global average, the regressor linear.

A warp reads the whole picture, so this generator translates whole images, never in tiles.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


LOOK = 64  # the localisation network's input side, px
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def sampling_grid(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """F.affine_grid(theta, x.shape, align_corners=False) -> (B, H, W, 2), from shape arithmetic only, so that an
    exported graph keeps it for every image size."""
    h, w = x.shape[-2], x.shape[-1]
    ys = (2 * torch.arange(h, device=x.device, dtype=x.dtype) + 1) / h - 1   # pixel centres in [-1, 1]
    xs = (2 * torch.arange(w, device=x.device, dtype=x.dtype) + 1) / w - 1
    base = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w),
                        torch.ones_like(xs).view(1, w).expand(h, w)], -1)    # (H, W, 3): x, y, 1
    return torch.einsum("hwk,bjk->bhwj", base, theta)


class AffineWarp(nn.Module):
    """A generator `net` behind a learned affine warp: (B, C, H, W) in [-1, 1] -> net's output for the warped
    input. `warped(x)` also returns the affine matrices (B, 2, 3) in affine_grid's normalised coordinates."""

    def __init__(self, net: nn.Module, in_ch: int = 3, ngf: int = 64):
        super().__init__()
        self.look = nn.Sequential(nn.Conv2d(in_ch, ngf, 3, stride=2, padding=1), nn.ReLU(True),
                                  nn.Conv2d(ngf, 2 * ngf, 3, stride=2, padding=1), nn.ReLU(True),
                                  nn.Conv2d(2 * ngf, 4 * ngf, 3, stride=2, padding=1), nn.ReLU(True))
        # The regressor is kept as plain parameters, not an nn.Linear, so that init_weights (N(0, 0.02) on
        # every layer) leaves it at zero: a new warp is the identity.
        self.theta_weight = nn.Parameter(torch.zeros(6, 4 * ngf))
        self.theta_bias = nn.Parameter(torch.tensor(IDENTITY))
        self.net = net

    def affine(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> the affine matrices (B, 2, 3) that map output coordinates to input ones."""
        small = F.interpolate(x, size=(LOOK, LOOK), mode="bilinear", antialias=True, align_corners=False)
        features = self.look(small).mean((2, 3))                      # (B, 4 ngf)
        return F.linear(features, self.theta_weight, self.theta_bias).view(-1, 2, 3)

    def warped(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (the translation, the affine matrices)."""
        theta = self.affine(x)
        moved = F.grid_sample(x, sampling_grid(theta, x), mode="bilinear", padding_mode="border", align_corners=False)
        return self.net(moved), theta

    def forward(self, x):
        return self.warped(x)[0]
