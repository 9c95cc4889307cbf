"""Choosing the device (CUDA, MPS or CPU) and describing the machine, for training, inference and benchmarks."""
from __future__ import annotations

import os
import platform

import torch

from .errors import ImxlateError


def pick_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """'auto' -> CUDA (this rank's GPU), else MPS, else CPU; otherwise the device named, checked."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank or 0)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ImxlateError(f"unknown device '{spec}'; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ImxlateError(f"--device {spec}: CUDA is not available here; use --device cpu or auto")
    if dev.type == "cuda" and dev.index is None and local_rank is not None:
        dev = torch.device("cuda", local_rank)
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ImxlateError("--device mps: MPS is not available here; use --device cpu or auto")
    return dev


def describe_machine(device: torch.device | None = None) -> str:
    """CPU model, cores, torch threads and version, and the GPU when `device` is CUDA (for figures we print)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if device is not None and device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text
