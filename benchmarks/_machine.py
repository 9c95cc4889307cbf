"""Helpers the benchmark scripts share (the machine line itself is imxlate.device.describe_machine)."""
from __future__ import annotations


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
