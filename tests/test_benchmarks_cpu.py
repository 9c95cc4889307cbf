"""The benchmark scripts run in their CPU form with tiny settings (no timings are checked)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "benchmarks"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run(script, *args):
    r = subprocess.run([sys.executable, str(BENCH / script), "--device", "cpu", *map(str, args)],
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_gpu_benchmark_cpu_form():
    out = run("gpu.py", "--sizes", 32, "--ngf", 4, "--n-blocks", 1, "--steps", 1, "--repeats", 1, "--seconds", 0,
              "--min-images", 1, "--families", "cyclegan", "stargan")
    assert "skipped: fp16" in out and "ddp: skipped (no GPU)" in out
    assert "translate 32x32 batch 1 fp32:" in out and "translate 32x32 batch 1 bf16:" in out
    assert "train step cyclegan 32x32" in out and "train step stargan 32x32" in out


def test_translate_throughput_cpu_form():
    out = run("translate_throughput.py", "--size", 32, "--count", 3, "--n-blocks", 1, "--repeats", 1, "--batch", 2)
    for line in ("folder ", "forward ", "loop ", "folder / forward:", "machine:"):
        assert line in out, out
