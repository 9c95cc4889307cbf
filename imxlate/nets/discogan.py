"""DiscoGAN networks (Kim et al. 2017): an encoder-decoder generator without skips and a
discriminator of the same depth that returns one logit and its intermediate features.

Both halve (or double) the size four times with 4x4 stride-2 convolutions, so images are
multiples of 16; at 64x64 the bottleneck is 4x4. The generator's `main.N` layout follows the
reference implementation so its checkpoints map key for key.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .common import apply_spectral_norm, conv_bias, init_weights, norm_layer

DEPTH = 4  # stride-2 layers: 64x64 -> 4x4


class EncoderDecoderGenerator(nn.Module):
    """(B, in_ch, H, W) in [-1, 1] -> (B, out_ch, H, W) in [-1, 1]; H and W multiples of 16.

    Encoder: 4x4 stride-2 convs ngf-2ngf-4ngf-8ngf, LeakyReLU 0.2, norm after all but the first.
    Decoder: the mirror with transposed convs and ReLU, ending in tanh.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, norm: str = "batch"):
        super().__init__()
        bias = conv_bias(norm)
        widths = [ngf * 2**i for i in range(DEPTH)]  # 64, 128, 256, 512
        # The reference has no bias on the first and last layers; the others follow the norm.
        layers = [nn.Conv2d(in_ch, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=bias), norm_layer(norm, cout), nn.LeakyReLU(0.2, True)]
        for cin, cout in zip(widths[::-1], widths[-2::-1]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias), norm_layer(norm, cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[0], out_ch, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        init_weights(self)  # DCGAN initialisation, N(0, 0.02)

    def forward(self, x):
        return self.main(x)


class DiscoDiscriminator(nn.Module):
    """(B, in_ch, S, S) -> ((B, 1) raw logits, [features of layers 2-4]) for feature matching.

    Four 4x4 stride-2 convs (ndf doubling, LeakyReLU 0.2, norm after all but the first), then a
    convolution covering the whole final map (4x4 at 64 px, as in the reference) gives one logit.
    """

    def __init__(self, in_ch: int = 3, ndf: int = 64, image_size: int = 64, norm: str = "batch",
                 spectral_norm: bool = False):
        super().__init__()
        bias = conv_bias(norm)
        widths = [ndf * 2**i for i in range(DEPTH)]
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(in_ch, widths[0], 4, 2, 1, bias=False),
                                                   nn.LeakyReLU(0.2, True))])
        for cin, cout in zip(widths, widths[1:]):
            self.stages.append(nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=bias), norm_layer(norm, cout),
                                              nn.LeakyReLU(0.2, True)))
        final = image_size
        for _ in range(DEPTH):
            final //= 2
        if final < 1:
            raise ValueError(f"image size {image_size} is too small for the DiscoGAN discriminator (16 at least)")
        self.head = nn.Conv2d(widths[-1], 1, final, bias=False)
        init_weights(self)  # DCGAN initialisation, before spectral norm wraps the weights
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return self.head(x).flatten(1), features[1:]  # the reference matches layers 2-4
