"""PatchNCE's projection heads (Park et al. 2020, "CUT"): sample feature vectors at the same places in
two feature maps, and map each through a two-layer MLP per layer onto the unit sphere; the PatchNCE loss
of a translation over the generator's own encoder layers."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import patch_nce
from .common import sequential_features


class PatchProjection(nn.Module):
    """One Linear(C, units) -> ReLU -> Linear(units, units) head per feature layer; outputs are L2-normalised.

    `channels` lists each layer's channel count (known from the generator, so the heads exist before the
    first batch and a checkpoint can hold them).
    """

    def __init__(self, channels: list[int], units: int = 256):
        super().__init__()
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(c, units), nn.ReLU(), nn.Linear(units, units))
                                   for c in channels)

    @staticmethod
    def locations(feats: list[torch.Tensor], n: int, generator: torch.Generator) -> list[torch.Tensor]:
        """For each (B, C, H, W) map, `n` distinct flat positions (all of them when H*W <= n), shared by the batch."""
        out = []
        for f in feats:
            hw = f.shape[2] * f.shape[3]
            out.append(torch.randperm(hw, generator=generator)[:min(n, hw)].to(f.device))
        return out

    def forward(self, feats: list[torch.Tensor], where: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each (B, C, H, W) map sampled at its positions -> (B, n, units) unit vectors."""
        out = []
        for head, f, idx in zip(self.heads, feats, where):
            picked = f.flatten(2)[:, :, idx].transpose(1, 2)  # (B, n, C)
            out.append(F.normalize(head(picked), dim=-1))
        return out

    def nce(self, encoder: nn.Sequential, layers: list[int], src: torch.Tensor, out: torch.Tensor, n: int,
            temperature: float, generator: torch.Generator, flipped: bool = False) -> torch.Tensor:
        """PatchNCE between `src` and its translation `out`, on the features of `encoder` (the generator's
        `nn.Sequential`) at `layers`, `n` shared locations per layer, averaged over the layers. When `out`
        translated the flipped `src`, its features are flipped back first (FastCUT's flip equivariance)."""
        q = sequential_features(encoder, out, layers)
        if flipped:
            q = [torch.flip(f, [3]) for f in q]
        k = sequential_features(encoder, src, layers)
        where = self.locations(k, n, generator)
        return sum(patch_nce(fq, fk, temperature) for fq, fk in zip(self(q, where), self(k, where))) / len(layers)
