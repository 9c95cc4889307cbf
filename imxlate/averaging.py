"""An exponential moving average of a family's kept networks (--ema; Karras et al. 2018, Yazici et al. 2019).

The loop owns it: it folds the weights in after every iteration, swaps the average in while it writes
samples and model files, and keeps it in the checkpoint. Families never see it.
"""
from __future__ import annotations

import contextlib

import torch


class MovingAverage:
    """The average of the tensors of `family`'s kept networks (off when `decay` is 0)."""

    def __init__(self, family, decay: float):
        self.family, self.decay = family, decay
        self.tensors = {k: t.detach().clone() for k, t in self._live().items()} if decay > 0 else {}

    def _live(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers of the networks a model file keeps, each shared tensor once."""
        nets = self.family.nets
        return {k: t for k, t in [*nets.named_parameters(), *nets.named_buffers()] if k.split(".")[0] in self.family.keep}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold the current weights in after iteration `step` (0-based); the decay ramps up as
        min(decay, (1 + step) / (10 + step)) so that short runs are not dominated by the initial weights."""
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, t in self._live().items():
            if k not in self.tensors:
                continue
            if t.is_floating_point():
                self.tensors[k].lerp_(t, 1 - decay)
            else:
                self.tensors[k].copy_(t)

    @contextlib.contextmanager
    def applied(self):
        """Inside the block the kept networks hold the averaged weights (no-op when off)."""
        if not self.tensors:
            yield
            return
        live = self._live()
        saved = {k: t.detach().clone() for k, t in live.items()}
        with torch.no_grad():
            for k, t in live.items():
                t.copy_(self.tensors[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, t in live.items():
                    t.copy_(saved[k])

    def state(self) -> dict:
        return self.tensors

    def load(self, state: dict) -> None:
        for k, t in state.items():
            self.tensors[k].copy_(t)
