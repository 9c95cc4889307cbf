"""The emoji example's scripts: the data split prepare.py makes, and choose.py's pick of a snapshot."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from imxlate.cli import app

from conftest import write_images

EMOJI = Path(__file__).resolve().parents[1] / "examples" / "emoji"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, EMOJI / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_keeps_the_test_set_whatever_the_validation_size():
    split = script("prepare").split
    points = list(range(0x1F300, 0x1F300 + 1377))
    tests = set()
    for n_val in (0, 60, 120):
        a, b, val, test = split(points, 0, 240, n_val)
        assert (len(test), len(val)) == (240, n_val) and abs(len(a) - len(b)) <= 1
        parts = [set(a), set(b), set(val), set(test)]
        assert sum(map(len, parts)) == len(points) and set().union(*parts) == set(points)  # disjoint, complete
        tests.add(tuple(test))
    assert len(tests) == 1  # the same 240 test code points, in the same order
    assert split(points, 0, 240, 120) == split(points, 0, 240, 120) != split(points, 1, 240, 120)


def test_emoji_choose_takes_the_best_snapshot_on_validation(tmp_path, monkeypatch):
    """examples/emoji/choose.py on a tiny real run: every snapshot and the model are scored, the best named."""
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "twemoji", 4, seed=1, tint=(200, 60, 60))
    write_images(tmp_path / "noto", 4, seed=2, tint=(60, 60, 200))
    for style, tint in (("twemoji", (200, 60, 60)), ("noto", (60, 60, 200))):  # same names: exact pairs
        write_images(tmp_path / "val" / style, 3, seed=3, tint=tint, exts=(".png",))
    r = CliRunner().invoke(app, ["train", "--domains", "twemoji", "noto", "--steps", "4", "--snapshot-every", "2",
                                 "--crop-size", "32", "--load-size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "1",
                                 "--quiet", "--out", "run"])
    assert r.exit_code == 0, r.output
    path = EMOJI / "choose.py"
    out = subprocess.run([sys.executable, str(path), "run", "--data", "."], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = re.findall(r"^\| (\S+\.safetensors) \| (\d+) \|.*\| ([+-]\d\.\d{4}) \|$", out.stdout, re.M)
    assert [(name, step) for name, step, _ in rows] == [("step_0000002.safetensors", "2"),
                                                        ("step_0000004.safetensors", "4"), ("model.safetensors", "4")]
    choose = script("choose")
    val = choose.validation_set(tmp_path)
    scores = {name: choose.score(tmp_path / "run" / ("" if name == "model.safetensors" else "snapshots") / name, val)[0]
              for name, _, _ in rows}
    assert [f"{scores[n]:+.4f}" for n, _, _ in rows] == [s for _, _, s in rows]
    best = max(rows, key=lambda row: scores[row[0]])[0]
    assert re.search(rf"^chosen: \S*{best} ", out.stdout, re.M)
    bad = subprocess.run([sys.executable, str(path), "run", "--data", "run"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no val/ split" in bad.stderr and "Traceback" not in bad.stderr
