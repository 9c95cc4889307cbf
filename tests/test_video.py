"""Videos: translated at the same frame rate with their audio; --steady shares normalisation statistics
across frames (less flicker); folders of frames keep their names; a bad video is one error line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imxlate import store
from imxlate.families.cyclegan import CycleGAN, CycleGANConfig
from imxlate.nets.common import init_weights

from conftest import cli

av = pytest.importorskip("av")  # the `video` extra (in the `test` extra, so CI runs these)
from imxlate.video import read_frames, write_frames  # noqa: E402


@pytest.fixture
def model(tmp_path):
    torch.manual_seed(0)
    family = CycleGAN(CycleGANConfig(ngf=4, n_blocks=1), ["horse", "zebra"], 32)
    init_weights(family.nets, 0.2)  # lively enough that the output is not flat
    path = tmp_path / "m.safetensors"
    store.save_model(family, path)
    return path


def still_clip(path, n=8, size=(48, 40), moving=False, seed=0):
    """A still camera: one smooth image plus a little noise per frame (and a small object moving across)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.asarray(Image.fromarray((rng.random((6, 6, 3)) * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR))
    frames = []
    for i in range(n):
        f = base + rng.normal(0, 4, base.shape)
        if moving:
            f[4:14, 2 + 3 * i:12 + 3 * i] = 255
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    write_frames(path, frames, 12, audio=True)
    return frames


def frame_change(path) -> float:
    """Mean absolute difference between consecutive frames (0-255 levels)."""
    f = [x.astype(float) for x in read_frames(path)[0]]
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(f, f[1:])]))


def test_video_keeps_frame_count_rate_size_and_audio(tmp_path, model):
    clip = tmp_path / "clip.mp4"
    still_clip(clip)
    frames, rate, audio = read_frames(clip)
    assert (len(frames), rate, audio, frames[0].shape) == (8, 12, 1, (40, 48, 3))
    r = cli("translate", clip, "--to", "zebra", "--model", model, "--out", tmp_path / "out", "--batch-size", "3")
    assert "8 frames" in r.output
    out = tmp_path / "out" / "clip.mp4"
    frames_out, rate_out, audio_out = read_frames(out)
    assert (len(frames_out), rate_out, audio_out, frames_out[0].shape) == (8, 12, 1, (40, 48, 3))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip.mp4"]  # no temporary file left
    # An existing output is never replaced without --overwrite, and --out can name the video file.
    r = cli("translate", clip, "--to", "zebra", "--model", model, "--out", tmp_path / "out", ok=False)
    assert r.exit_code == 2 and "already exists" in r.output
    cli("translate", clip, "--to", "zebra", "--model", model, "--out", tmp_path / "z.mov", "--size", "20")
    small, _, _ = read_frames(tmp_path / "z.mov")
    assert (len(small), small[0].shape) == (8, (20, 24, 3))


def test_steady_first_makes_a_near_static_clip_steadier(tmp_path, model):
    clip = tmp_path / "clip.mp4"
    still_clip(clip, moving=True)
    change = {}
    for mode in (None, "first", "running"):
        out = tmp_path / f"{mode}.mp4"
        cli("translate", clip, "--to", "zebra", "--model", model, "--out", out, *(["--steady", mode] if mode else []))
        change[mode] = frame_change(out)
    assert change["first"] < change[None], change
    assert change["running"] < change[None], change


def test_steady_on_a_folder_of_frames_keeps_their_names(tmp_path, model):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(still_clip(tmp_path / "clip.mp4", n=4)):
        Image.fromarray(f).save(frames / f"frame_{i + 1:04d}.jpg")
    cli("translate", frames, "--to", "zebra", "--model", model, "--out", tmp_path / "out", "--steady", "first")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"frame_{i:04d}.jpg" for i in range(1, 5)]


BAD_OPTIONS = {"steady-mode": ["--steady", "sometimes"], "steady-tile": ["--steady", "first", "--tile", "16"],
               # frames of 2 x 10^10 pixels: refused from the stream's header, before any frame is resized
               "size-over-budget": ["--size", "200000", "--max-memory", "4GB"]}


@pytest.mark.parametrize("case", ["missing", "not-a-video", *BAD_OPTIONS])
def test_bad_videos_and_options_are_one_error_line(tmp_path, model, case):
    clip = tmp_path / "clip.mp4"
    extra = []
    if case == "not-a-video":
        clip.write_bytes(b"this is not a video" * 10)
    elif case != "missing":
        still_clip(clip, n=2)
        extra = BAD_OPTIONS[case]
    r = cli("translate", clip, "--to", "zebra", "--model", model, "--out", tmp_path / "out", *extra, ok=False)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith("error:") and "Traceback" not in r.output, r.output
    assert not (tmp_path / "out" / "clip.mp4").exists()
