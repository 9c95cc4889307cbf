"""Mixed precision for training (--amp none|bf16|fp16): the autocast context of forward passes and, for fp16,
the gradient scaler that backward passes and optimizer steps go through. CUDA only; elsewhere a no-op."""
from __future__ import annotations

import contextlib

import torch


class Precision:
    def __init__(self, amp: str = "none", device: str | torch.device = "cpu"):
        self.amp, self.device_type = amp, torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type) if amp == "fp16" else None

    def autocast(self):
        """The context for forward passes: bf16 or fp16 autocast on CUDA, nothing otherwise."""
        if self.amp in ("bf16", "fp16") and self.device_type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    def state(self) -> dict:
        return self.scaler.state_dict() if self.scaler else {}

    def load(self, state: dict) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
