"""A corpus of bad inputs, built at test time and run through the real CLI.

Every case checks: the exit status; one `error:` line on stderr, last, and no traceback; that no file
outside the case's --out folder was created, changed or removed (inputs included), hashed before and
after. One tiny model is trained once for the module; each case works in its own copy of the data.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from imxlate import store
from imxlate.cli import app

from conftest import write_images

TINY = ["--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8", "--n-blocks", "1", "--workers", "0",
        "--quiet"]
OUT = "out"  # every case's --out folder, relative to its working folder: the one place files may appear


# ---- building the corpus ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data folders and one tiny trained model (with its checkpoint), made once."""
    root = tmp_path_factory.mktemp("world")
    write_images(root / "photos", 4, seed=1, tint=(200, 60, 60))
    write_images(root / "vangogh", 4, seed=2, tint=(60, 60, 200))
    write_images(root / "input", 3, sizes=((37, 29), (48, 40)), seed=3)
    r = CliRunner().invoke(app, ["train", "--data", str(root), "--domains", "photos", "vangogh", "--steps", "2",
                                 "--out", str(root / "run"), *TINY])
    assert r.exit_code == 0, r.output
    return root


@pytest.fixture
def w(world, tmp_path, monkeypatch):
    """A working folder holding copies of the data, model.safetensors and checkpoint.safetensors."""
    for name in ("photos", "vangogh", "input"):
        shutil.copytree(world / name, tmp_path / name)
    shutil.copy(world / "run" / "model.safetensors", tmp_path / "model.safetensors")
    shutil.copy(world / "run" / "checkpoint.safetensors", tmp_path / "checkpoint.safetensors")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tree(root: Path) -> dict[str, str]:
    """Every file, link and special file under `root` but the --out folder -> a digest of what it is."""
    found = {}
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        if rel_folder.parts[:1] == (OUT,):
            dirs[:] = []
            continue
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            p = Path(folder) / name
            rel = str(rel_folder / name)
            if p.is_symlink():
                found[rel] = "link " + os.readlink(p)
            elif p.is_file():
                found[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                found[rel] = "special"
    return found


def png_declaring(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height, all black: a few KB that decode to width*height pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\0" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def rewrite_model(src: Path, dst: Path, tensors=None, meta=None, digest: bool = False) -> Path:
    """Write `src`'s tensors and metadata, changed by `tensors` / `meta` (callables), to `dst`; the
    recorded digest is left as it was (stale) unless `digest` recomputes it."""
    t, m = store.read_file(src)
    t = tensors(t) if tensors else t
    m = meta(dict(m)) if meta else m
    if digest:
        m[store.DIGEST_KEY] = json.dumps(store.digest(t, m))
    save_file(t, str(dst), metadata=m)
    return dst


def flip_byte(src: Path, dst: Path) -> Path:
    """A copy of `src` with one byte of its first tensor's data changed."""
    data = bytearray(src.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    first = next(v for k, v in sorted(header.items()) if k != "__metadata__")
    data[8 + n + first["data_offsets"][0] + 1] ^= 0x40
    dst.write_bytes(bytes(data))
    return dst


def fifo(p: Path) -> Path:
    os.mkfifo(p)
    return p


def nan_weights(t):
    k = next(k for k, v in t.items() if v.is_floating_point())
    t[k] = t[k].clone()
    t[k][0] = float("nan")
    return t


def scaled(t):
    k = next(k for k, v in t.items() if v.is_floating_point() and v.numel() > 1)
    t[k] = t[k] * 1.5
    return t


def train(*extra):
    return ["train", "--data", ".", "--domains", "photos", "vangogh", "--out", OUT, *TINY, *extra]


def translate(*extra, model="model.safetensors", inputs=("input",), to="vangogh", out=OUT):
    return ["translate", *inputs, "--to", to, "--model", model, "--out", out, "--quiet", *extra]


# id -> (prepare(w) -> CLI arguments, exit status, text the error line holds)
CASES = {
    # -- training options: refused before anything runs
    "train-steps-0": (lambda w: train("--steps", "0"), 2, "--steps 0"),
    "train-steps-negative": (lambda w: train("--steps", "-5"), 2, "--steps -5"),
    "train-epochs-0": (lambda w: train("--epochs", "0"), 2, "--epochs 0"),
    "train-epochs-decay-negative": (lambda w: train("--epochs-decay", "-1"), 2, "--epochs-decay -1"),
    "train-batch-size-0": (lambda w: train("--batch-size", "0"), 2, "--batch-size 0"),
    "train-crop-size-0": (lambda w: train("--crop-size", "0"), 2, "--crop-size 0"),
    "train-crop-too-small-for-patchgan": (lambda w: train("--crop-size", "16", "--load-size", "16"), 2,
                                          "needs 24 px or more"),
    "train-crop-too-small-for-cut": (lambda w: train("--model", "fastcut", "--crop-size", "16", "--load-size", "16"), 2,
                                     "needs 24 px or more"),
    "train-load-size-negative": (lambda w: train("--load-size", "-36"), 2, "--load-size -36"),
    "train-save-every-0": (lambda w: train("--save-every", "0"), 2, "--save-every 0"),
    "train-sample-every-0": (lambda w: train("--sample-every", "0"), 2, "--sample-every 0"),
    "train-log-every-0": (lambda w: train("--log-every", "0"), 2, "--log-every 0"),
    "train-workers-negative": (lambda w: train("--workers", "-1"), 2, "--workers -1"),
    "train-max-images-0": (lambda w: train("--max-images", "0"), 2, "--max-images 0"),
    "train-gradient-accumulation-0": (lambda w: train("--gradient-accumulation", "0"), 2, "--gradient-accumulation 0"),
    "train-seed-negative": (lambda w: train("--seed", "-1"), 2, "--seed -1"),
    "train-ema-2": (lambda w: train("--ema", "2"), 2, "--ema 2"),
    "train-amp-unknown": (lambda w: train("--amp", "fp8"), 2, "--amp fp8"),
    "train-preprocess-unknown": (lambda w: train("--preprocess", "zoom"), 2, "--preprocess zoom"),
    "train-steps-not-a-number": (lambda w: train("--steps", "ten"), 2, "--steps"),
    "train-ngf-0": (lambda w: train("--ngf", "0"), 2, "--ngf 0"),
    "train-lambda-cycle-negative": (lambda w: train("--lambda-cycle", "-10"), 2, "--lambda-cycle -10"),
    "train-lr-nan": (lambda w: train("--lr", "nan"), 2, "--lr nan"),
    "train-ngf-not-a-number": (lambda w: train("--ngf", "many"), 2, "--ngf"),
    "train-unknown-family-option": (lambda w: train("--bogus", "3"), 2, "--bogus"),
    "train-unknown-family": (lambda w: train("--model", "pix3pix"), 2, "pix3pix"),
    "train-unknown-device": (lambda w: train("--device", "tpu"), 2, "tpu"),
    "train-domain-twice": (lambda w: ["train", "--data", ".", "--domains", "photos", "photos", "--out", OUT, *TINY],
                           2, "more than once"),
    "train-one-domain": (lambda w: ["train", "--data", ".", "--domains", "photos", "--out", OUT, *TINY], 2, "two"),
    "train-no-domains": (lambda w: ["train", "--data", ".", "--out", OUT], 2, "--domains"),
    "train-missing-domain": (lambda w: ["train", "--data", ".", "--domains", "photos", "monet", "--out", OUT, *TINY],
                             2, "monet"),
    "train-data-missing": (lambda w: ["train", "--data", "nowhere", "--domains", "photos", "vangogh", "--out", OUT,
                                      *TINY], 2, "photos"),
    "train-domain-of-broken-images": (
        lambda w: ((w / "junk").mkdir(), (w / "junk" / "a.png").write_text("not an image"),
                   (w / "junk" / "b.jpg").write_bytes(b""),
                   ["train", "--data", ".", "--domains", "photos", "junk", "--out", OUT, *TINY])[-1], 2, "junk"),
    "train-domain-empty": (lambda w: ((w / "empty").mkdir(),
                                      ["train", "--data", ".", "--domains", "photos", "empty", "--out", OUT, *TINY])[-1],
                           2, "empty"),
    "train-out-in-proc": (lambda w: ["train", "--data", ".", "--domains", "photos", "vangogh", "--out", "/proc/imxlate-x",
                                     *TINY], 2, "/proc/imxlate-x"),
    "train-out-is-a-file": (lambda w: ((w / "taken").write_text("x"),
                                       ["train", "--data", ".", "--domains", "photos", "vangogh", "--out", "taken",
                                        *TINY])[-1], 2, "is a file"),
    "train-out-under-a-file": (lambda w: ((w / "taken").write_text("x"),
                                          ["train", "--data", ".", "--domains", "photos", "vangogh", "--out",
                                           "taken/sub", *TINY])[-1], 2, "taken is a file"),
    "train-out-holds-files": (lambda w: ((w / "used").mkdir(), (w / "used" / "notes.txt").write_text("x"),
                                         ["train", "--data", ".", "--domains", "photos", "vangogh", "--out", "used",
                                          *TINY])[-1], 2, "already holds files"),
    "train-resume-missing": (lambda w: ["train", "--resume", "nowhere"], 2, "nowhere"),
    "train-resume-model-file": (lambda w: ["train", "--resume", "model.safetensors"], 2, "model file"),
    "train-resume-damaged-checkpoint": (lambda w: (flip_byte(w / "checkpoint.safetensors", w / "c.safetensors"),
                                                   ["train", "--resume", "c.safetensors"])[-1], 2, "not intact"),
    "train-resume-with-family-options": (lambda w: ["train", "--resume", "checkpoint.safetensors", "--ngf", "4"], 2,
                                         "recipe"),
    "train-resume-steps-0": (lambda w: ["train", "--resume", "checkpoint.safetensors", "--steps", "0"], 2, "--steps 0"),
    # -- translate options
    "translate-batch-size-0": (lambda w: translate("--batch-size", "0"), 2, "--batch-size 0"),
    "translate-size-negative": (lambda w: translate("--size", "-3"), 2, "--size -3"),
    "translate-size-0": (lambda w: translate("--size", "0"), 2, "--size 0"),
    "translate-samples-0": (lambda w: translate("--samples", "0"), 2, "--samples 0"),
    "translate-max-pixels-0": (lambda w: translate("--max-pixels", "0"), 2, "--max-pixels 0"),
    "translate-seed-too-large": (lambda w: translate("--seed", str(2**70)), 2, "--seed"),
    "translate-unknown-domain": (lambda w: translate(to="monet"), 2, "monet"),
    "translate-from-equals-to": (lambda w: translate("--from", "vangogh"), 2, "both"),
    "translate-unknown-source": (lambda w: translate("--from", "monet"), 2, "monet"),
    "translate-unknown-device": (lambda w: translate("--device", "tpu"), 2, "tpu"),
    "translate-unknown-option": (lambda w: translate("--bogus"), 2, "--bogus"),
    "translate-no-inputs": (lambda w: ["translate", "--to", "vangogh"], 2, "inputs"),
    "translate-no-to": (lambda w: ["translate", "input"], 2, "--to"),
    "translate-batch-size-not-a-number": (lambda w: translate("--batch-size", "x"), 2, "--batch-size"),
    # -- translate inputs
    "input-missing": (lambda w: translate(inputs=("nothing.png",)), 2, "nothing.png does not exist"),
    "input-glob-matches-nothing": (lambda w: translate(inputs=("input/*.gif",)), 2, "no file matches"),
    "input-empty-folder": (lambda w: ((w / "empty").mkdir(), translate(inputs=("empty",)))[-1], 2, "no images"),
    "input-symlink-loop": (lambda w: (os.symlink("loop.png", w / "loop.png"), translate(inputs=("loop.png",)))[-1],
                           2, "loops"),
    "input-dangling-symlink": (lambda w: (os.symlink("gone.png", w / "dangling.png"),
                                          translate(inputs=("dangling.png",)))[-1], 2, "which does not exist"),
    "input-fifo": (lambda w: (fifo(w / "pipe.png"), translate(inputs=("pipe.png",)))[-1], 2, "not a regular file"),
    "input-empty-file": (lambda w: ((w / "empty.png").write_bytes(b""), translate(inputs=("empty.png",)))[-1],
                         1, "1 file(s) skipped"),
    "input-text-named-png": (lambda w: ((w / "text.png").write_text("hello"), translate(inputs=("text.png",)))[-1],
                             1, "1 file(s) skipped"),
    "input-truncated-png": (lambda w: ((w / "cut.png").write_bytes((w / "input" / "img000.png").read_bytes()[:60]),
                                       translate(inputs=("cut.png",)))[-1], 1, "1 file(s) skipped"),
    "input-huge-declared-png": (lambda w: ((w / "big.png").write_bytes(png_declaring(12000, 12000)),
                                           translate(inputs=("big.png",)))[-1], 1, "1 file(s) skipped"),
    "input-folder-with-bad-files": (
        lambda w: ((w / "input" / "text.png").write_text("hello"), (w / "input" / "zero.jpg").write_bytes(b""),
                   (w / "input" / "big.png").write_bytes(png_declaring(12000, 12000)),
                   (w / "input" / "dir.png").mkdir(), translate())[-1], 1, "3 file(s) skipped"),
    "input-folder-and-size-too-large": (lambda w: translate("--size", "200000"), 1, "3 file(s) skipped"),
    # -- translate --out
    "out-in-proc": (lambda w: translate(out="/proc/imxlate-x"), 2, "/proc/imxlate-x"),
    "out-is-a-file": (lambda w: ((w / "taken").write_text("x"), translate(out="taken"))[-1],
                      2, "taken is a file"),
    "out-under-a-file": (lambda w: ((w / "taken").write_text("x"),
                                    translate(out="taken/sub"))[-1], 2, "taken is a file"),
    "out-is-the-input-folder": (lambda w: translate(out="input"), 2, "write over input"),
    "out-has-the-outputs-already": (lambda w: ((w / OUT).mkdir(), (w / OUT / "img000.png").write_text("old"),
                                               translate())[-1], 2, "--overwrite"),
    "out-holds-a-dangling-link": (lambda w: ((w / OUT).mkdir(), os.symlink(w / "created-outside.png",
                                                                            w / OUT / "img000.png"),
                                             translate())[-1], 2, "--overwrite"),
    "out-holds-a-link-to-a-folder-outside": (
        lambda w: ((w / "input" / "sub").mkdir(), shutil.copy(w / "input" / "img000.png", w / "input" / "sub"),
                   (w / "elsewhere").mkdir(), (w / OUT).mkdir(), os.symlink(w / "elsewhere", w / OUT / "sub"),
                   translate("--overwrite"))[-1], 2, "outside --out"),
    "out-output-name-is-a-folder": (lambda w: ((w / OUT / "img000.png").mkdir(parents=True),
                                               translate("--overwrite"))[-1], 2, "is a folder"),
    # -- model files
    "model-missing": (lambda w: translate(model="nothing.safetensors"), 2, "nothing.safetensors"),
    "model-folder-without-model": (lambda w: translate(model="photos"), 2, "no model file"),
    "model-empty-file": (lambda w: ((w / "m.safetensors").write_bytes(b""), translate(model="m.safetensors"))[-1],
                         2, "not a readable safetensors file"),
    "model-truncated": (lambda w: ((w / "m.safetensors").write_bytes((w / "model.safetensors").read_bytes()[:5000]),
                                   translate(model="m.safetensors"))[-1], 2, "not a readable safetensors file"),
    "model-text-file": (lambda w: ((w / "m.safetensors").write_text("hello, I am text"),
                                   translate(model="m.safetensors"))[-1], 2, "not a readable"),
    "model-png-file": (lambda w: translate(model="input/img000.png"), 2, "not a readable"),
    "model-header-is-a-list": (lambda w: ((w / "m.safetensors").write_bytes(struct.pack("<Q", 2) + b"[]"),
                                          translate(model="m.safetensors"))[-1], 2, "not a readable"),
    "model-without-imxlate-metadata": (lambda w: (save_file({"x": torch.zeros(2)}, str(w / "m.safetensors")),
                                                  translate(model="m.safetensors"))[-1], 2, "not an imxlate model"),
    "model-metadata-not-json": (lambda w: (rewrite_model(w / "model.safetensors", w / "m.safetensors",
                                                         meta=lambda m: {**m, "domains": "photos, vangogh"}),
                                           translate("--no-verify", model="m.safetensors"))[-1], 2, "not valid JSON"),
    "model-domains-missing": (lambda w: (rewrite_model(w / "model.safetensors", w / "m.safetensors",
                                                       meta=lambda m: {k: v for k, v in m.items() if k != "domains"},
                                                       digest=True),
                                         translate(model="m.safetensors"))[-1], 2, "'domains' is missing"),
    "model-unknown-family": (lambda w: (rewrite_model(w / "model.safetensors", w / "m.safetensors",
                                                      meta=lambda m: {**m, "family": "pix3pix"}, digest=True),
                                        translate(model="m.safetensors"))[-1], 2, "pix3pix"),
    "model-config-does-not-build": (lambda w: (rewrite_model(w / "model.safetensors", w / "m.safetensors",
                                                             meta=lambda m: {**m, "config": '{"ngf": "wide"}'},
                                                             digest=True),
                                               translate(model="m.safetensors"))[-1], 2, "m.safetensors"),
    "model-newer-format": (lambda w: (rewrite_model(w / "model.safetensors", w / "m.safetensors",
                                                    meta=lambda m: {**m, "format_version": "99"}, digest=True),
                                      translate(model="m.safetensors"))[-1], 2, "upgrade imxlate"),
    "model-flipped-byte": (lambda w: (flip_byte(w / "model.safetensors", w / "m.safetensors"),
                                      translate(model="m.safetensors"))[-1], 2, "not intact"),
    "model-scaled-tensor": (lambda w: (rewrite_model(w / "model.safetensors", w / "m.safetensors", tensors=scaled),
                                       translate(model="m.safetensors"))[-1], 2, "not intact"),
    "model-nan-weights": (lambda w: (rewrite_model(w / "model.safetensors", w / "m.safetensors", tensors=nan_weights,
                                                   digest=True),
                                     translate(model="m.safetensors"))[-1], 2, "NaN"),
    "model-is-a-checkpoint": (lambda w: translate(model="checkpoint.safetensors"), 2, "training checkpoint"),
    "model-wrong-tensor-shapes": (lambda w: (rewrite_model(w / "model.safetensors", w / "m.safetensors",
                                                           tensors=lambda t: {k: v[:1] if v.dim() else v
                                                                              for k, v in t.items()}, digest=True),
                                             translate(model="m.safetensors"))[-1], 2, "do not fit"),
    # -- info
    "info-missing": (lambda w: ["info", "nothing.safetensors"], 2, "nothing.safetensors"),
    "info-text-file": (lambda w: ((w / "m.safetensors").write_text("text"), ["info", "m.safetensors"])[-1], 2,
                       "not a readable"),
    "info-metadata-not-json": (lambda w: (rewrite_model(w / "model.safetensors", w / "m.safetensors",
                                                        meta=lambda m: {**m, "training": "{oops"}, digest=True),
                                          ["info", "m.safetensors"])[-1], 2, "not valid JSON"),
    "info-flipped-byte": (lambda w: (flip_byte(w / "model.safetensors", w / "m.safetensors"),
                                     ["info", "m.safetensors"])[-1], 2, "not intact"),
    "info-nan-weights": (lambda w: (rewrite_model(w / "model.safetensors", w / "m.safetensors", tensors=nan_weights,
                                                  digest=True), ["info", "m.safetensors"])[-1], 2, "NaN"),
    # -- eval, export, import, runs, train-classifier
    "eval-batch-size-0": (lambda w: ["eval", "--model", "model.safetensors", "--batch-size", "0"], 2, "--batch-size 0"),
    "eval-real-without-fake": (lambda w: ["eval", "--real", "photos"], 2, "--fake"),
    "eval-source-without-to": (lambda w: ["eval", "--model", "model.safetensors", "--source", "input"], 2, "--to"),
    "eval-damaged-model": (lambda w: (flip_byte(w / "model.safetensors", w / "m.safetensors"),
                                      ["eval", "--model", "m.safetensors", "--source", "input", "--to", "vangogh"])[-1],
                           2, "not intact"),
    "export-unknown-domain": (lambda w: ["export", "model.safetensors", "--to", "monet", "--format", "torchscript",
                                         "--out", f"{OUT}/m.pt"], 2, "monet"),
    "export-unknown-format": (lambda w: ["export", "model.safetensors", "--to", "vangogh", "--format", "tflite",
                                         "--out", f"{OUT}/m.x"], 2, "tflite"),
    "export-out-is-a-folder": (lambda w: ["export", "model.safetensors", "--to", "vangogh", "--format", "torchscript",
                                          "--out", "photos"], 2, "is a folder"),
    "export-damaged-model": (lambda w: (flip_byte(w / "model.safetensors", w / "m.safetensors"),
                                        ["export", "m.safetensors", "--to", "vangogh", "--format", "torchscript",
                                         "--out", f"{OUT}/m.pt"])[-1], 2, "not intact"),
    "import-missing": (lambda w: ["import", "nothing.pth", "--from", "a", "--to", "b", "--out", f"{OUT}/m.safetensors"],
                       2, "nothing.pth does not exist"),
    "import-text-file": (lambda w: ((w / "g.pth").write_text("text"),
                                    ["import", "g.pth", "--from", "a", "--to", "b", "--out", f"{OUT}/m.safetensors"])[-1],
                         2, "not a readable PyTorch weights file"),
    "runs-missing-folder": (lambda w: ["runs", "nowhere"], 2, "no runs folder"),
    "train-classifier-steps-0": (lambda w: ["train-classifier", "photos", "--out", f"{OUT}/c.safetensors",
                                            "--steps", "0"], 2, "--steps 0"),
    # -- the command line itself
    "unknown-command": (lambda w: ["transalte", "input"], 2, "transalte"),
    "no-command": (lambda w: [], 2, "Missing command"),
}


def run(args, w: Path):
    before = tree(w)
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert tree(w) == before, "a file outside --out was created, changed or removed"
    return result


def error_line(result) -> str:
    """The one `error:` line, which is the last line on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, w):
    prepare, status, text = CASES[case]
    args = prepare(w)
    result = run(args, w)
    assert result.exit_code == status, result.stdout + result.stderr
    assert text in error_line(result)
    if status == 1:  # a folder run goes on past the files it cannot translate
        assert "skipped" in result.stderr


# ---- cases with more to check than the error line ------------------------------------------------------

def test_folder_run_skips_bad_images_and_translates_the_rest(w):
    (w / "input" / "text.png").write_text("hello")
    (w / "input" / "big.png").write_bytes(png_declaring(12000, 12000))
    result = run(translate(), w)
    assert result.exit_code == 1
    assert "more than the limit" in result.stderr and "--max-pixels" in result.stderr
    written = sorted(p.name for p in (w / OUT).iterdir())
    assert written == ["img000.png", "img001.jpg", "img002.png"]  # each keeps its input's format
    assert Image.open(w / OUT / "img001.jpg").size == Image.open(w / "input" / "img001.jpg").size


def test_an_image_too_small_for_the_network_is_skipped(w):
    Image.new("RGB", (1, 1), (10, 200, 30)).save(w / "input" / "dot.png")
    result = run(translate(), w)
    assert result.exit_code == 1
    assert "dot.png" in error_line(result) and "could not translate it at 1x1" in result.stderr
    assert sorted(p.name for p in (w / OUT).iterdir()) == ["img000.png", "img001.jpg", "img002.png"]


def test_overwrite_replaces_a_link_never_its_target(w):
    victim = w / "victim.png"
    victim.write_bytes(b"precious")
    (w / OUT).mkdir()
    os.symlink(victim, w / OUT / "img000.png")
    result = run(translate("--overwrite"), w)
    assert result.exit_code == 0, result.stderr
    assert victim.read_bytes() == b"precious"
    out = w / OUT / "img000.png"
    assert not out.is_symlink() and Image.open(out).size == (37, 29)


def test_full_disk_while_translating_keeps_finished_outputs(w, monkeypatch):
    real, calls = store._sync, []

    def full_disk_from_the_third(f):
        calls.append(f)
        if len(calls) > 2:  # each output is synced to the disk once, before its rename
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f)

    monkeypatch.setattr(store, "_sync", full_disk_from_the_third)
    result = run(translate("--batch-size", "1"), w)
    assert result.exit_code == 2
    line = error_line(result)
    assert "No space left on device" in line and "disk is full" in line and "2 image(s) written" in line
    assert sorted(p.name for p in (w / OUT).iterdir()) == ["img000.png", "img001.jpg"]  # no temporary file left
    for p in (w / OUT).iterdir():
        Image.open(p).load()  # complete


def test_full_disk_while_training_is_one_line(w, monkeypatch):
    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "_sync", full)
    result = run(train("--steps", "1"), w)
    assert result.exit_code == 2
    line = error_line(result)
    assert "checkpoint.safetensors" in line and "disk is full" in line
    assert not list((w / OUT).glob("*.tmp")) and not list((w / OUT).glob(".*.tmp"))


def test_eval_json_keeps_warnings_off_stdout(w):
    (w / "input" / "text.png").write_text("hello")
    result = run(["eval", "--model", "model.safetensors", "--source", "input", "--to", "vangogh", "--json"], w)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["directions"][0]["n_source"] == 4
    assert "skipped" in result.stderr and "text.png" in result.stderr


def test_training_refuses_options_before_writing_anything(w):
    result = run(train("--steps", "-5"), w)
    assert result.exit_code == 2 and not (w / OUT).exists() and not (w / "runs").exists()


# ---- 16-bit and float images: scaled by a range to 8 bits, never clipped --------------------------------

def grey_levels(path: Path) -> list[int]:
    """The grey levels load_image gives a grey file, left to right along its first row."""
    from imxlate.data import load_image

    rgb, alpha = load_image(path)
    a = np.asarray(rgb)
    assert rgb.mode == "RGB" and alpha is None and (a == a[..., :1]).all()  # grey stays grey
    return a[0, :, 0].tolist()


def test_a_float_tiff_in_0_1_keeps_its_greys(tmp_path):
    Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0]] * 2, np.float32)).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert grey_levels(tmp_path / "f.tif") == [0, 64, 128, 255]  # v * 255, mid-grey stays mid-grey


def test_a_16_bit_grey_png_is_scaled_by_the_full_16_bit_range(tmp_path):
    Image.fromarray(np.array([[0, 257, 32768, 40000, 65535]] * 2, np.uint16)).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode in ("I;16", "I")  # "I" before Pillow 10.3
    assert grey_levels(tmp_path / "g.png") == [0, 1, 128, 156, 255]  # v / 257, as image viewers show it


def test_a_float_image_outside_0_1_is_scaled_by_its_own_range(tmp_path):
    Image.fromarray(np.array([[-2.0, 0.0, 2.0, 6.0]] * 2, np.float32)).save(tmp_path / "f.tif")
    assert grey_levels(tmp_path / "f.tif") == [0, 64, 128, 255]  # -2..6 -> 0..255


def test_nan_and_infinite_pixels_are_replaced_and_said(tmp_path, capsys):
    Image.fromarray(np.array([[0.0, np.nan, 0.5, np.inf, -np.inf, 1.0]] * 2, np.float32)).save(tmp_path / "f.tif")
    assert grey_levels(tmp_path / "f.tif") == [0, 0, 128, 255, 0, 255]
    warning = capsys.readouterr().err
    assert "f.tif" in warning and "6 pixel(s) are NaN or infinite" in warning


def test_a_float_tiff_translates_through_the_cli(tmp_path, monkeypatch):
    from imxlate.models import shipped_models

    monkeypatch.chdir(tmp_path)
    model = next(p for p in shipped_models() if "emoji" in p.name)
    ramp = np.linspace(0.0, 1.0, 48, dtype=np.float32)
    Image.fromarray(np.outer(ramp, ramp[::-1])).save(tmp_path / "scan.tif")
    result = run(translate(inputs=("scan.tif",), to="noto", model=model), tmp_path)
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in (tmp_path / OUT).iterdir()] == ["scan.tif"]
    assert Image.open(tmp_path / OUT / "scan.tif").size == (48, 48)


# ---- transparency: every way an image holds it reads as the same alpha --------------------------------------

def transparent(mode: str) -> Image.Image:
    """A 4x2 image in `mode` whose left half is transparent (an alpha channel, or a palette's or colour key's
    transparency entry), its right half opaque."""
    rgba = Image.new("RGBA", (4, 2), (200, 30, 30, 255))
    rgba.paste((10, 10, 10, 0), (0, 0, 2, 2))
    if mode in ("RGBA", "LA"):
        return rgba.convert(mode)
    keyed = Image.new("RGB" if mode == "RGB" else "L", (4, 2), (200, 30, 30) if mode == "RGB" else 200)
    keyed.paste((10, 10, 10) if mode == "RGB" else 10, (0, 0, 2, 2))
    if mode == "P":
        keyed = keyed.convert("P")
        keyed.info["transparency"] = keyed.getpixel((0, 0))
    else:
        keyed.info["transparency"] = (10, 10, 10) if mode == "RGB" else 10
    return keyed


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "RGB", "L"])
def test_transparency_reads_as_alpha_in_files_uploads_and_outputs(tmp_path, mode):
    from imxlate.data import load_image
    from imxlate.serve import decode
    from imxlate.translate import output_suffix

    path = tmp_path / "cut.png"
    transparent(mode).save(path, transparency=transparent(mode).info.get("transparency"))
    _, alpha = load_image(path)
    assert alpha is not None and np.asarray(alpha).tolist() == [[0, 0, 255, 255]] * 2
    assert decode(path.read_bytes()).mode == "RGBA"
    assert output_suffix(path, ".jpg") == ".png"  # JPEG cannot hold the alpha
