"""Networks of the latent-mapping family: a convolutional VAE per domain, and small MLPs that work
on its codes (the mapping generator G(z, eps) and the discriminator of code pairs)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .common import apply_spectral_norm


def halvings(size: int) -> tuple[int, int]:
    """How often a stride-2 layer halves `size` exactly while above 4 -> (count, final size): 32 -> (3, 4)."""
    n = 0
    while size % 2 == 0 and size > 4:
        size, n = size // 2, n + 1
    return n, size


class ConvVAE(nn.Module):
    """(B,3,S,S) in [-1,1] <-> a Gaussian code of `z_dim` values (mean, log-variance).

    Encoder: 4x4 stride-2 convs (nf, 2nf, 4nf, ... at most 8nf), LeakyReLU 0.2, down to a small map
    (4x4 at 32 px), then a fully connected layer to mean and log-variance. Decoder: a fully connected
    layer back to that map, the mirror transposed convs with ReLU, tanh. The fully connected layers tie
    the network to one image size (translate resizes to it).
    """

    def __init__(self, image_size: int, z_dim: int = 32, nf: int = 32, channels: int = 3):
        super().__init__()
        n, s = halvings(image_size)
        if n == 0:
            raise ValueError(f"image size {image_size} must be even and above 4")
        widths = [nf * min(2**i, 8) for i in range(n)]
        enc, c_in = [], channels
        for w in widths:
            enc += [nn.Conv2d(c_in, w, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            c_in = w
        self.map_shape = (widths[-1], s, s)
        flat = widths[-1] * s * s
        self.features = nn.Sequential(*enc, nn.Flatten())
        self.to_code = nn.Linear(flat, 2 * z_dim)
        self.from_code = nn.Sequential(nn.Linear(z_dim, flat), nn.ReLU(True))
        dec = []
        for w in reversed(widths[:-1]):
            dec += [nn.ConvTranspose2d(c_in, w, 4, 2, 1), nn.ReLU(True)]
            c_in = w
        self.decoder = nn.Sequential(*dec, nn.ConvTranspose2d(c_in, channels, 4, 2, 1), nn.Tanh())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (mean, log-variance), each (B, z_dim)."""
        mean, logvar = self.to_code(self.features(x)).chunk(2, dim=1)
        return mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, z_dim) -> images (B,3,S,S) in [-1,1]."""
        return self.decoder(self.from_code(z).view(-1, *self.map_shape))


def mlp(d_in: int, d_out: int, hidden: int, layers: int) -> nn.Sequential:
    """`layers` fully connected hidden layers of width `hidden` with LeakyReLU 0.2, then a linear output."""
    mods, d = [], d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.LeakyReLU(0.2, True)]
        d = hidden
    return nn.Sequential(*mods, nn.Linear(d, d_out))


class CodeMapper(nn.Module):
    """G(z_src, eps) -> a code of the target domain; z_src, eps and the output are (B, z_dim)."""

    def __init__(self, z_dim: int = 32, hidden: int = 256, layers: int = 3):
        super().__init__()
        self.net = mlp(2 * z_dim, z_dim, hidden, layers)

    def forward(self, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, eps], dim=1))


class PairDiscriminator(nn.Module):
    """A pair of codes, concatenated (B, 2*z_dim) = [z_src, z_dst] -> (B, 1) raw logits.

    One tensor in, so the WGAN-GP penalty can interpolate pairs.
    """

    def __init__(self, z_dim: int = 32, hidden: int = 256, layers: int = 3, spectral_norm: bool = False):
        super().__init__()
        self.net = mlp(2 * z_dim, 1, hidden, layers)
        if spectral_norm:
            apply_spectral_norm(self.net)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.net(pairs)
