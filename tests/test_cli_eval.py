"""`imxlate eval` checks its options before it loads anything: a bad --paired-target (or a missing
folder, or options that do not go together) is one error line, nothing is written, and neither the
model nor the Inception network is loaded first.

Each case runs with a model file that is not a model and Inception weights that do not exist: an
error about either would mean the check came too late.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imxlate import metrics
from imxlate.cli import app

from conftest import write_images

JUNK_MODEL = "junk.safetensors"  # text, not safetensors: loading it fails with "not a readable ..."


@pytest.fixture
def w(tmp_path, monkeypatch):
    """source/ and target/ images, truth/ with other file names, a junk model, Inception weights that are missing."""
    write_images(tmp_path / "source", 2, seed=1)
    write_images(tmp_path / "target", 3, seed=2)
    (tmp_path / "truth").mkdir()
    (tmp_path / "target" / "img000.png").rename(tmp_path / "truth" / "other.png")
    (tmp_path / JUNK_MODEL).write_text("not a model")
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    monkeypatch.setenv("IMXLATE_INCEPTION_WEIGHTS", str(tmp_path / "no-weights.pth"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def digest(root: Path) -> dict[str, str]:
    """Every file and folder under `root` -> its content digest ("folder" for folders)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*"))}


def one_error_line(args: list[str], root: Path) -> str:
    """Run `imxlate eval ...`; assert status 2, one `error:` line (the last on stderr), no traceback, no file
    created, changed or removed; -> the error line."""
    before = digest(root)
    r = CliRunner().invoke(app, ["eval", *args])
    assert r.exit_code == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stdout + r.stderr and r.stdout == ""
    assert digest(root) == before
    return lines[0]


MODEL_RUN = ["--model", JUNK_MODEL, "--source", "source", "--target", "target", "--to", "b", "--fid", "--kid"]

# id -> (eval arguments, text the error line holds)
CASES = {
    "paired-target-missing": ([*MODEL_RUN, "--paired-target", "nowhere"], "--paired-target: nowhere does not exist"),
    "paired-target-is-a-file": ([*MODEL_RUN, "--paired-target", "notes.txt"], "notes.txt is not a folder"),
    "paired-target-without-namesakes": ([*MODEL_RUN, "--paired-target", "truth"], "no file in source has a namesake"),
    "paired-target-without-inputs": (["--model", JUNK_MODEL, "--paired-target", "source"], "--paired-target needs"),
    "paired-target-of-saved-images-missing": (["--fake", "source", "--paired-target", "nowhere"], "nowhere"),
    "source-missing": (["--model", JUNK_MODEL, "--source", "nowhere", "--to", "b"], "--source: nowhere does not exist"),
    "target-missing": (["--model", JUNK_MODEL, "--source", "source", "--target", "nowhere", "--to", "b"],
                       "--target: nowhere does not exist"),
    "source-without-to": (["--model", JUNK_MODEL, "--source", "source"], "--source needs --to"),
    "source-without-target-for-fid": (["--model", JUNK_MODEL, "--source", "source", "--to", "b", "--fid"],
                                      "--source needs --target"),
    "target-without-source": (["--model", JUNK_MODEL, "--target", "target", "--to", "b"], "--target needs --source"),
    "classifier-missing": ([*MODEL_RUN, "--classifier", "nowhere.safetensors"], "--classifier: nowhere.safetensors"),
    "fake-missing": (["--fid", "--real", "target", "--fake", "nowhere"], "--fake: nowhere does not exist"),
    "real-stats-missing": (["--fid", "--real", "stats.npz", "--fake", "source"], "--real: stats.npz does not exist"),
    "saved-images-and-a-model": (["--real", "target", "--fake", "source", "--model", JUNK_MODEL],
                                 "--model translate with a model"),
    "classifier-with-real": (["--real", "target", "--fake", "source", "--classifier", JUNK_MODEL], "--classifier"),
    "fid-of-fake-alone": (["--fid", "--fake", "source", "--paired-target", "target"], "give both --real and --fake"),
    "save-stats-without-real": ([*MODEL_RUN, "--save-stats", "s.npz"], "--save-stats saves the statistics of --real"),
    "save-stats-under-a-file": (["--real", "target", "--save-stats", "notes.txt/s.npz"], "notes.txt is a file"),
    "batch-size-0": ([*MODEL_RUN, "--batch-size", "0"], "--batch-size 0"),
    "unknown-preset": ([*MODEL_RUN, "--preset", "tf"], "unknown metrics preset 'tf'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_eval_refuses_bad_options_before_loading_anything(case, w):
    args, text = CASES[case]
    line = one_error_line(args, w)
    assert text in line, line


def test_with_good_options_the_model_is_what_fails(w):
    """The control: the same run with a good --paired-target gets as far as the model (and no further)."""
    (w / "truth" / "other.png").rename(w / "truth" / "img000.png")
    line = one_error_line([*MODEL_RUN[:-2], "--paired-target", "truth"], w)
    assert JUNK_MODEL in line and "not a readable" in line, line
    line = one_error_line([*MODEL_RUN, "--paired-target", "truth"], w)  # with --fid, the Inception weights first
    assert "no-weights.pth" in line, line


def test_saved_images_score_the_same_against_their_saved_statistics(w):
    """The saved-images path end to end: --save-stats on the way, FID from the .npz equal to FID from the
    folder, paired metrics of a folder against itself."""
    metrics.write_random_inception_weights(w / "inception.pth", seed=0)
    weights = ["--inception-weights", "inception.pth", "--allow-unverified-weights", "--json"]
    r = CliRunner().invoke(app, ["eval", "--real", "target", "--fake", "source", "--save-stats", "t.npz", *weights])
    assert r.exit_code == 0, r.stdout + r.stderr
    from_folder = json.loads(r.stdout)
    assert "Saved statistics of 2 images" in r.stderr and (w / "t.npz").is_file()
    r = CliRunner().invoke(app, ["eval", "--real", "t.npz", "--fake", "source", *weights])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["fid"] == pytest.approx(from_folder["fid"], rel=1e-6)
    r = CliRunner().invoke(app, ["eval", "--fake", "source", "--paired-target", "source", "--json"])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert json.loads(r.stdout) == {"n": 2, "l1": 0.0, "ssim": pytest.approx(1.0), "top1": 1.0}
