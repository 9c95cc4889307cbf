"""The benchmark scripts run in their CPU form with tiny settings (no timings are checked)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "benchmarks"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run(script, *args, device=True):
    r = subprocess.run([sys.executable, str(BENCH / script), *(["--device", "cpu"] if device else []), *map(str, args)],
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
    out = run("translate_throughput.py", "--size", 32, "--count", 3, "--n-blocks", 1, "--repeats", 1, "--batches", 2)
    for line in ("folder ", "folder b2 ", "forward ", "loop ", "folder / forward:", "folder / loop:", "machine:"):
        assert line in out, out


def test_translate_memory_cpu_form():
    out = run("translate_memory.py", "folder", "--counts", 2, 4, "--batches", 1, "--repeats", 1, device=False)
    assert "batch 1,    4 images: peak" in out and "machine:" in out, out
    out = run("translate_memory.py", "large", "--sizes", "64x48", "--tile", 32, "--ngf", 4, "--n-blocks", 1,
              device=False)
    assert "64x48 streamed (--tile 32): peak" in out, out


def test_video_flicker_cpu_form():
    out = run("video_flicker.py", "--frames", 2, "--seeds", 1, device=False)
    for line in ("still   input", "still   first", "moving  None", "moving  running"):
        assert line in out, out
