"""Shared test helpers: real image files in temporary folders, one CPU thread for tiny models."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

# Tiny networks run fastest on one thread, and a busy 2-core machine makes OpenMP spin-waits very slow.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def write_images(folder: Path, n: int, sizes=((40, 36),), seed: int = 0, exts=(".png", ".jpg"), tint=None) -> list[Path]:
    """Write `n` real image files (cycling through sizes and extensions) with smooth random content."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        base = rng.random((4, 4, 3)) * 255
        if tint is not None:
            base = 0.5 * base + 0.5 * np.array(tint)
        img = Image.fromarray(base.astype(np.uint8)).resize((w, h), Image.BILINEAR)
        p = folder / f"img{i:03d}{exts[i % len(exts)]}"
        img.save(p)
        paths.append(p)
    return paths


@pytest.fixture
def two_domains(tmp_path):
    """tmp_path/photos and tmp_path/vangogh with 5 small images each, plus input/ of mixed sizes."""
    write_images(tmp_path / "photos", 5, seed=1, tint=(200, 60, 60))
    write_images(tmp_path / "vangogh", 5, seed=2, tint=(60, 60, 200))
    write_images(tmp_path / "input", 4, sizes=((37, 29), (64, 48), (33, 51)), seed=3)
    return tmp_path


def cli(*args, ok=True):
    """Run the real CLI in-process (Typer's runner); with ok, the command must succeed."""
    from imxlate.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def interrupt_at(monkeypatch, step: int) -> None:
    """A Ctrl-C as training step `step` ends, once, in in-process runs: the run saves its checkpoint and stops
    as it does for a user. Resumed with the same --steps, it must equal a straight run (a run stopped by a
    smaller --steps would not: --steps fits the learning-rate schedule into the run)."""
    from imxlate.train import Run

    original, fired = Run.iterate, []

    def iterate(self, batch):
        losses = original(self, batch)
        if self.step == step and not fired:
            fired.append(step)
            signal.raise_signal(signal.SIGINT)
        return losses

    monkeypatch.setattr(Run, "iterate", iterate)
