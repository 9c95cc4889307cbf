"""Translating videos (PyAV, the optional `video` extra): same frame rate and size, audio passed through.

    imxlate translate clip.mp4 --to zebra                # -> zebra-translated/clip.mp4
    imxlate translate clip.mp4 --to zebra --steady first  # frames share normalisation statistics

Frames are decoded, translated in batches and encoded as H.264 (MPEG-4 Part 2 where the PyAV build
lacks libx264) into a temporary file that is renamed into place when the video is complete. The audio
streams are copied packet for packet, never re-encoded. A folder of numbered frames is a sequence too:
folder translation keeps the frame names (frame_0001.png, ...).
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import store, tiling
from .data import to_image, to_tensor
from .errors import ImxlateError, from_os_error, missing_path_message

# Containers we write, by suffix; a video of another kind (.avi, .webm, ...) is written as .mp4.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _av():
    try:
        import av
    except ImportError:
        raise ImxlateError("translating videos needs PyAV: pip install 'imxlate[video]'") from None
    return av


def output_paths(videos: list[Path], out: Path, overwrite: bool) -> list[Path]:
    """Where each video goes: `out` itself when it names a video file (one input), else out/<name>."""
    if Path(out).suffix.lower() in CONTAINERS and len(videos) == 1:
        paths = [Path(out)]
    else:
        paths = [Path(out) / (v.name if v.suffix.lower() in CONTAINERS else v.stem + ".mp4") for v in videos]
    for v, o in zip(videos, paths):
        if os.path.lexists(o) and not o.is_symlink() and o.resolve() == v.resolve():
            raise ImxlateError(f"--out {out} would write over input {v}; choose another output folder")
        if o.is_dir():
            raise ImxlateError(f"output {o} is a folder; remove it or choose another --out")
        if os.path.lexists(o) and not overwrite:
            raise ImxlateError(f"{o} already exists; choose another --out or pass --overwrite")
    if len(set(paths)) < len(paths):
        raise ImxlateError("two input videos have the same name; translate them into different --out folders")
    return paths


def translate_video(tr, path: str | Path, to: str, out: str | Path, src: str | None = None,
                    batch_size: int | None = None,
                    size: int | None = None, seed: int | None = None, steady: str | None = None,
                    tile: int | None = None, max_memory=None) -> int:
    """Translate the video `path` into the video file `out` (written atomically) -> the number of frames.

    `steady`: 'first' or 'running' (imxlate.steady): frames share normalisation statistics (less flicker).
    `batch_size`: frames translated together (default: translate.default_batch_size of the device).
    `tile`, `max_memory` (or a tiling.Budget parsed once for a run): as Translator.translate_tensor.
    """
    from .translate import default_batch_size, make_steady

    av = _av()
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise ImxlateError(missing_path_message(path) if os.path.lexists(path) else f"{path} does not exist")
    limits = tiling.budget(max_memory, tr.family.device, tile)
    tr.check_translation(to, src, limits)
    shared = make_steady(tr, steady, to, src, limits.tile)
    g = torch.Generator(tr.family.device).manual_seed(seed) if seed is not None else None
    frames = _Frames(tr, to, src, g, limits, shared, batch_size or default_batch_size(tr.family.device), size)
    try:
        inp = av.open(str(path))
    except av.error.FFmpegError as e:
        raise ImxlateError(f"cannot read video {path}: {_why(e)}; give a video file (mp4, mov, mkv, ...)") from None
    except OSError as e:
        raise from_os_error(e, f"reading {path}") from None
    try:
        if not inp.streams.video:
            raise ImxlateError(f"{path} has no video stream")
        out.parent.mkdir(parents=True, exist_ok=True)
        with store.atomic_path(out) as tmp:
            with av.open(tmp, "w", format=CONTAINERS.get(out.suffix.lower(), "mp4")) as dst:
                _transcode(inp, dst, frames, path, out)
    except av.error.FFmpegError as e:
        raise ImxlateError(f"translating video {path} failed after {frames.count} frame(s): {_why(e)}") from None
    except OSError as e:
        raise from_os_error(e, f"writing {out}") from None
    finally:
        inp.close()
    return frames.count


def _transcode(inp, dst, frames: "_Frames", path: Path, out: Path) -> None:
    """Every frame of the video `inp` translated into `dst`, its audio packets copied as they are."""
    import av

    vin = inp.streams.video[0]
    audio = list(inp.streams.audio)
    frames.start(dst, vin.average_rate or vin.guessed_rate or Fraction(25), vin.codec_context.width,
                 vin.codec_context.height, path)  # the video stream first: all are added before the first packet
    try:
        aout = {a: dst.add_stream_from_template(a) if hasattr(dst, "add_stream_from_template")
                else dst.add_stream(template=a) for a in audio}
    except (ValueError, av.error.FFmpegError) as e:
        raise ImxlateError(f"cannot copy the audio of {path} into {out.suffix}: {_why(e)}") from None
    for packet in inp.demux(vin, *audio):
        if packet.stream in aout:
            if packet.dts is not None:
                packet.stream = aout[packet.stream]
                dst.mux(packet)
            continue
        for frame in packet.decode():
            frames.add(frame.to_image())
    frames.finish(path)


class _Frames:
    """Frames translated in batches (resized first with `size`) and encoded into a video stream, in order."""

    def __init__(self, tr, to: str, src: str | None, generator, limits: tiling.Budget, steady, batch_size: int,
                 size: int | None):
        self.tr, self.to, self.src, self.generator, self.limits, self.steady = tr, to, src, generator, limits, steady
        self.batch_size, self.size = batch_size, size
        self.batch: list[np.ndarray] = []
        self.count, self.dst, self.vout = 0, None, None

    def start(self, dst, rate: Fraction, width: int, height: int, path: Path) -> None:
        """Add the output video stream, after checking the frame size (after --size) against the budget."""
        w, h = tiling.sized(width, height, self.size)
        refused = tiling.check_fits(w, h, self.limits, self.tr.family.device)  # before any frame is resized
        if refused:
            raise ImxlateError(f"{path}: frames of {refused}")
        self.dst, self.vout = dst, _video_stream(dst, rate, w, h)

    def add(self, img: Image.Image) -> None:
        if self.size:
            img = img.resize(tiling.sized(img.width, img.height, self.size), Image.BICUBIC)
        self.batch.append(np.asarray(img))
        if len(self.batch) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        import av

        x = torch.stack([to_tensor(Image.fromarray(a)) for a in self.batch])
        y = self.tr.translate_tensor(x, self.to, self.src, self.generator, None, self.limits, self.steady)
        for img in y:
            frame = av.VideoFrame.from_ndarray(np.asarray(to_image(img)), format="rgb24")
            frame.pts = self.count
            for packet in self.vout.encode(frame):
                self.dst.mux(packet)
            self.count += 1
        self.batch.clear()

    def finish(self, path: Path) -> None:
        """Translate the frames left and flush the encoder."""
        if self.batch:
            self.flush()
        if self.count == 0:
            raise ImxlateError(f"{path} has no frames")
        for packet in self.vout.encode():
            self.dst.mux(packet)


def _video_stream(dst, rate: Fraction, width: int, height: int):
    """An H.264 stream (MPEG-4 Part 2 where libx264 is missing) at `rate` frames per second."""
    import av

    even = width % 2 == 0 and height % 2 == 0
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    if codec == "mpeg4" and not even:
        raise ImxlateError(f"this PyAV build cannot encode frames of odd size ({width}x{height}); "
                           "pass --size with an even number")
    s = dst.add_stream(codec, rate=rate)
    s.width, s.height = width, height
    s.pix_fmt = "yuv420p" if even else "yuv444p"  # 4:2:0 needs even sides
    s.time_base = Fraction(1, 1) / rate
    if codec == "libx264":
        s.options = {"crf": "17", "preset": "medium"}
    return s


def _why(e: Exception) -> str:
    return getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]


def read_frames(path: str | Path) -> tuple[list[np.ndarray], Fraction, int]:
    """(RGB frames as uint8 arrays, average frame rate, number of audio streams) of a video file."""
    av = _av()
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
        return frames, v.average_rate, len(c.streams.audio)


def write_frames(path: str | Path, frames: list[np.ndarray], rate: int | Fraction, audio: bool = False) -> None:
    """Write RGB uint8 frames as a video at `rate` (with a second of a quiet tone as AAC audio when `audio`)."""
    av = _av()
    path = Path(path)
    with av.open(str(path), "w") as c:
        v = _video_stream(c, Fraction(rate), frames[0].shape[1], frames[0].shape[0])
        a = c.add_stream("aac", rate=44100) if audio else None
        for i, arr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            t = np.arange(44100) / 44100
            samples = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for start in range(0, samples.shape[1], 1024):
                f = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]),
                                               format="fltp", layout="mono")
                f.sample_rate, f.pts = 44100, start
                for p in a.encode(f):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
