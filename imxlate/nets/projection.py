"""PatchNCE's projection heads (Park et al. 2020, "CUT"): sample feature vectors at the same places in
two feature maps, and map each through a two-layer MLP per layer onto the unit sphere."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


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
