"""U-GAT-IT's networks (Kim et al. 2020, "U-GAT-IT: Unsupervised Generative Attentional Networks with
Adaptive Layer-Instance Normalization for Image-to-Image Translation").

The generator encodes the image, weighs the feature map by a class activation map (CAM) attention learnt
from "is this the source domain?", and decodes with AdaLIN: per channel a learnt mix (rho) of instance norm
and layer norm, by which the model chooses how much texture and shape change, scaled and shifted by gamma
and beta that an MLP reads off the attended map. The discriminators (a global and a local one per domain)
carry the same attention. Every network returns (output, cam_logit, heatmap); the CAM outputs are for
training.

Initialisation: PyTorch's defaults, as in the official code (it calls no initialiser).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import apply_spectral_norm, norm_layer, resize_conv
from .resnet import ResnetBlock

EPS = 1e-5  # the official code's epsilon in IN and LN


def layer_instance_norm(x: torch.Tensor, rho: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> gamma * (rho * IN(x) + (1 - rho) * LN(x)) + beta; rho (C,); gamma and beta (C,), or
    (B, C) per image (AdaLIN). Both norms divide by the biased variance (the official code's by the unbiased
    one: at feature maps of 16x16 and more the two differ by under half a percent)."""
    rho = rho[:, None, None]
    mixed = rho * F.instance_norm(x, eps=EPS) + (1 - rho) * F.layer_norm(x, x.shape[1:], eps=EPS)
    return mixed * gamma[..., None, None] + beta[..., None, None]


class AdaLIN(nn.Module):
    """Adaptive layer-instance norm: learnt rho (paper: 0.9 at the start), gamma and beta given per image."""

    def __init__(self, channels: int):
        super().__init__()
        self.rho = nn.Parameter(torch.full((channels,), 0.9))

    def forward(self, x, gamma, beta):
        return layer_instance_norm(x, self.rho, gamma, beta)


class ILN(nn.Module):
    """Layer-instance norm of the upsampling layers: learnt rho (0 at the start: layer norm), gamma (1), beta (0)."""

    def __init__(self, channels: int):
        super().__init__()
        self.rho = nn.Parameter(torch.zeros(channels))
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return layer_instance_norm(x, self.rho, self.gamma, self.beta)


def clip_rho(net: nn.Module) -> None:
    """Clip every rho of `net` to [0, 1] (the official code's RhoClipper, after each generator step)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (AdaLIN, ILN)):
                m.rho.clamp_(0, 1)


class AdaLINBlock(nn.Module):
    """x + (pad, 3x3 conv, AdaLIN, ReLU, pad, 3x3 conv, AdaLIN)(x): the decoder's residual block."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=False))
        self.norm1 = AdaLIN(dim)
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=False))
        self.norm2 = AdaLIN(dim)

    def forward(self, x, gamma, beta):
        y = torch.relu(self.norm1(self.conv1(x), gamma, beta))
        return x + self.norm2(self.conv2(y), gamma, beta)


class CAM(nn.Module):
    """Class activation map attention: (B, C, h, w) -> (attended map (B, C, h, w), cam_logit (B, 2),
    heatmap (B, 1, h, w)). The logits of global average and global max pooling (one weight vector each)
    decide the domain; the map times each vector, concatenated and fused by a 1x1 conv, is what follows."""

    def __init__(self, channels: int, activation: nn.Module, spectral: bool = False):
        super().__init__()
        self.gap_fc = nn.Linear(channels, 1, bias=False)
        self.gmp_fc = nn.Linear(channels, 1, bias=False)
        if spectral:  # the discriminators' CAM: spectral norm on both logits, not on the 1x1 conv (official)
            self.gap_fc = nn.utils.parametrizations.spectral_norm(self.gap_fc)
            self.gmp_fc = nn.utils.parametrizations.spectral_norm(self.gmp_fc)
        self.conv1x1 = nn.Conv2d(2 * channels, channels, 1)
        self.activation = activation

    def forward(self, x):
        # Each weight is read once: under spectral norm a read runs a power iteration. The attention uses the
        # logit's (normalised) weight; the official code reads the stored unnormalised one there.
        w_avg, w_max = self.gap_fc.weight, self.gmp_fc.weight  # (1, C) each
        cam_logit = torch.cat([x.mean((2, 3)) @ w_avg.t(), x.amax((2, 3)) @ w_max.t()], 1)
        x = torch.cat([x * w_avg.view(1, -1, 1, 1), x * w_max.view(1, -1, 1, 1)], 1)
        x = self.activation(self.conv1x1(x))
        return x, cam_logit, x.sum(1, keepdim=True)


class UGATITGenerator(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (translation (B, 3, H, W) in [-1, 1], cam_logit (B, 2), heatmap
    (B, 1, H/4, W/4)). Full: H = W = image_size, as its MLP reads the whole attended map; light (the
    map's channel means first): any H and W that are multiples of 4."""

    def __init__(self, ngf: int = 64, n_blocks: int = 4, image_size: int = 256, light: bool = False):
        super().__init__()
        self.image_size, self.light = image_size, light
        C = 4 * ngf
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=False), norm_layer("instance", ngf), nn.ReLU(True)]
        for c in (ngf, 2 * ngf):  # (B, ngf, H, W) -> (B, C, H/4, W/4)
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(c, 2 * c, 3, stride=2, bias=False),
                       norm_layer("instance", 2 * c), nn.ReLU(True)]
        # IN residual blocks; their convolutions' biases are cancelled by the norm (the official has none)
        self.encoder = nn.Sequential(*layers, *(ResnetBlock(C, "instance", False) for _ in range(n_blocks)))
        self.cam = CAM(C, nn.ReLU(True))
        width = C if light else C * (image_size // 4) ** 2
        self.mlp = nn.Sequential(nn.Linear(width, C, bias=False), nn.ReLU(True),
                                 nn.Linear(C, C, bias=False), nn.ReLU(True))
        self.gamma = nn.Linear(C, C, bias=False)
        self.beta = nn.Linear(C, C, bias=False)
        self.blocks = nn.ModuleList(AdaLINBlock(C) for _ in range(n_blocks))
        layers = []
        for c in (C, C // 2):  # nearest x2, pad, 3x3 conv to half the channels, ILN, ReLU
            layers += [*resize_conv(c, c // 2, bias=False), ILN(c // 2), nn.ReLU(True)]
        self.decoder = nn.Sequential(*layers, nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7, bias=False), nn.Tanh())

    def forward(self, x):
        if not self.light and tuple(x.shape[-2:]) != (self.image_size,) * 2:
            raise ValueError(f"the full U-GAT-IT generator takes {self.image_size}x{self.image_size} images (its MLP "
                             f"reads the whole feature map), not {x.shape[-1]}x{x.shape[-2]}; resize them")
        x, cam_logit, heatmap = self.cam(self.encoder(x))
        h = self.mlp(x.mean((2, 3)) if self.light else x.flatten(1))  # (B, C)
        gamma, beta = self.gamma(h), self.beta(h)
        for block in self.blocks:
            x = block(x, gamma, beta)
        return self.decoder(x), cam_logit, heatmap


class UGATITDiscriminator(nn.Module):
    """(B, 3, H, W) -> (patch logits (B, 1, H/2**(n-2) - 2, W/2**(n-2) - 2), cam_logit (B, 2), heatmap).

    n_layers counts the convolutions: n - 2 of stride 2 (the first to ndf channels, each next one doubling
    them), one of stride 1 doubling them, then the CAM and a convolution to one logit per patch. Paper: 7
    (global: 6x6 logits at 256 px, each seeing most of the image) and 5 (local: 30x30, 70x70 patches)."""

    def __init__(self, ndf: int = 64, n_layers: int = 5):
        super().__init__()
        layers, c = [nn.ReflectionPad2d(1), nn.Conv2d(3, ndf, 4, stride=2), nn.LeakyReLU(0.2, True)], ndf
        for _ in range(n_layers - 3):
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(c, 2 * c, 4, stride=2), nn.LeakyReLU(0.2, True)]
            c *= 2
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(c, 2 * c, 4), nn.LeakyReLU(0.2, True)]
        self.model = apply_spectral_norm(nn.Sequential(*layers))
        self.cam = CAM(2 * c, nn.LeakyReLU(0.2, True), spectral=True)
        self.classifier = apply_spectral_norm(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(2 * c, 1, 4, bias=False)))

    @staticmethod
    def smallest_input(n_layers: int) -> int:
        """The least image size it takes: its stride-2 layers must leave 3 positions for the two 4x4 convs."""
        return 3 * 2 ** (n_layers - 2)

    @staticmethod
    def most_layers(size: int) -> int:
        """The most layers whose discriminator takes `size`-pixel images (at least 3)."""
        n = 3
        while UGATITDiscriminator.smallest_input(n + 1) <= size:
            n += 1
        return n

    def forward(self, x):
        x, cam_logit, heatmap = self.cam(self.model(x))
        return self.classifier(x), cam_logit, heatmap
