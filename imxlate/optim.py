"""Optimizer mechanics, written once for every family: one `update` that accumulates gradients, averages them
over torchrun ranks and steps through the fp16 scaler; the learning-rate schedule; their checkpoint state.

A family only says which parameters each named optimizer holds (`Family.make_optimizers`); the loop wraps
them in `Optimizers` before the first step or a resume.
"""
from __future__ import annotations

import torch

from .distributed import average_gradients
from .precision import Precision


def adam(params, cfg) -> torch.optim.Adam:
    """Adam with the config's `lr`, `beta1`, `beta2` and, where the family has one, `weight_decay` (every family's
    optimizer)."""
    decay = getattr(cfg, "weight_decay", 0.0)  # UNIT's and U-GAT-IT's L2 decay; the other papers have none
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=decay)


def linear_decay(step: int, total: int, decay_start: int) -> float:
    """Learning-rate factor: constant, then linear decay to zero over the remaining steps (CycleGAN/StarGAN)."""
    if step < decay_start or total <= decay_start:
        return 1.0
    return max(0.0, 1.0 - (step - decay_start) / (total - decay_start))


def describe_schedule(lr: dict) -> str:
    """A run's recorded schedule ({"constant_steps", "zero_at_step"}) in words."""
    if lr["zero_at_step"] > lr["constant_steps"]:
        return f"constant for {lr['constant_steps']} steps, then linear decay to zero at step {lr['zero_at_step']}"
    return "constant"


class Optimizers(dict):
    """Named optimizers (e.g. 'G' and 'D') with the run's precision (--amp) and gradient accumulation."""

    def __init__(self, opts: dict[str, torch.optim.Optimizer], amp: str = "none", device="cpu", accumulate: int = 1):
        super().__init__(opts)
        for opt in self.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.precision = Precision(amp, device)
        self.accumulate = accumulate

    def update(self, name: str, loss: torch.Tensor, step: int | None = None) -> None:
        """Backward `loss` and step optimizer `name`, averaging gradients over ranks. With accumulation
        the optimizer steps on every `accumulate`-th call (by `step`); step None steps at once."""
        opt = self[name]
        first = step is None or step % self.accumulate == 0
        last = step is None or (step + 1) % self.accumulate == 0
        if first:
            opt.zero_grad(set_to_none=True)
        self.precision.backward(loss / self.accumulate)
        if last:
            average_gradients([p for g in opt.param_groups for p in g["params"]])
            self.precision.step(opt)

    def set_lr_factor(self, factor: float) -> None:
        """Scale every learning rate to `factor` x its initial value."""
        for opt in self.values():
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def state(self) -> dict:
        return {"opts": {k: v.state_dict() for k, v in self.items()}, "scaler": self.precision.state()}

    def load(self, state: dict) -> None:
        for k, v in self.items():
            v.load_state_dict(state["opts"][k])
        self.precision.load(state.get("scaler", {}))
