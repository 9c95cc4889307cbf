"""Instance-norm statistics shared by the frames of one sequence: the cheap cure for flicker.

An instance norm normalises each image with its own mean and variance, so two frames that differ by
a little noise get slightly different statistics at every norm, and the output shimmers. `Steady`
runs a generator with statistics that stay put from frame to frame:

* "first": every frame uses the statistics the first frame had at each norm;
* "running": each frame uses an exponential moving average of the frames so far (it follows slow
  changes of light and scene, unlike "first").

One forward pass per frame: each norm measures its input, blends, and normalises with the result, in
execution order (a norm's input depends on the statistics of the norms before it). Which norms count
is tiling's rule (tiling._global_norm); batch norms and other layers are left as they are.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .errors import ImxlateError
from .tiling import _global_norm

MODES = ("first", "running")
MOMENTUM = 0.1  # weight of the newest frame in the running average


class _SteadyNorm(nn.Module):
    def __init__(self, norm: nn.InstanceNorm2d, index: int, steady: "Steady"):
        super().__init__()
        self.norm, self.index, self.steady = norm, index, steady

    def forward(self, x):
        var, mean = torch.var_mean(x.float(), dim=(2, 3), unbiased=False)  # (B, C) each
        stats = self.steady.stats
        rows = []
        for k in range(x.shape[0]):  # frames in order: each one's statistics follow the ones before it
            prev = stats.get(self.index)
            if prev is None:
                prev = (mean[k], var[k])
            elif self.steady.mode == "running":
                prev = (prev[0] + MOMENTUM * (mean[k] - prev[0]), prev[1] + MOMENTUM * (var[k] - prev[1]))
            stats[self.index] = prev
            rows.append(prev)
        m = torch.stack([r[0] for r in rows])[:, :, None, None]
        v = torch.stack([r[1] for r in rows])[:, :, None, None]
        y = ((x.float() - m) * torch.rsqrt(v + self.norm.eps)).to(x.dtype)
        if self.norm.affine:
            y = y * self.norm.weight[None, :, None, None] + self.norm.bias[None, :, None, None]
        return y


class Steady:
    """Statistics shared across calls: `steady(net, x)` is net(x) for the next frames x (B,C,H,W) in order."""

    def __init__(self, mode: str):
        if mode not in MODES:
            raise ImxlateError(f"--steady {mode}: use first or running")
        self.mode = mode
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._work: tuple[nn.Module, nn.Module] | None = None  # (the network, its working copy)

    def __call__(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self._work is None or self._work[0] is not net:
            self._work, self.stats = (net, self._working_copy(net)), {}
        return self._work[1](x)

    def _working_copy(self, net: nn.Module) -> nn.Module:
        work = copy.deepcopy(net).eval()
        names = [name for name, m in work.named_modules() if _global_norm(m)]  # in execution order
        for i, name in enumerate(names):
            parent, _, attr = name.rpartition(".")
            setattr(work.get_submodule(parent), attr, _SteadyNorm(work.get_submodule(name), i, self))
        return work
