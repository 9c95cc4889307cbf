"""The 70x70 PatchGAN discriminator (Isola et al. 2017): one logit per overlapping patch."""
from __future__ import annotations

import torch.nn as nn

from .common import apply_spectral_norm, conv_bias, norm_layer


class PatchDiscriminator(nn.Module):
    """(B, in_ch, H, W) -> (B, 1, H/8 - 2, W/8 - 2) raw logits; n_layers=3 gives 70x70 receptive fields."""

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 spectral_norm: bool = False):
        super().__init__()
        bias = conv_bias(norm)
        layers = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                       norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        if spectral_norm:
            apply_spectral_norm(self)

    @staticmethod
    def smallest_input(n_layers: int) -> int:
        """The least image size it takes: its last normalised layer must keep more than one position."""
        return 3 * 2**n_layers

    def forward(self, x):
        return self.model(x)
