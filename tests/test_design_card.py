"""The design card's three commands, exactly as a user types them, in a folder with photos/, vangogh/, input/."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from imxlate import metrics

TRAIN = ["imxlate", "train", "--domains", "photos", "vangogh", "--steps", "3", "--crop-size", "32",
         "--load-size", "32", "--ngf", "8", "--n-blocks", "1"]


def run(args, cwd, env=None, ok=True):
    """Run the installed console script the way a user does."""
    exe = Path(sys.executable).parent / args[0]
    cmd = [str(exe), *args[1:]] if exe.exists() else [sys.executable, "-m", "imxlate", *args[1:]]
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if ok:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def test_train_translate_eval_as_typed(two_domains, tmp_path):
    weights = tmp_path / "random_inception.pth"
    metrics.write_random_inception_weights(weights, seed=0)
    cwd = two_domains
    r = run(TRAIN, cwd)
    first_lines = r.stdout.splitlines()[:6]
    assert any("photos" in x and "5 images" in x for x in first_lines)
    assert any("runs/photos2vangogh" in x for x in first_lines) and any("cyclegan" in x for x in first_lines)
    assert (cwd / "runs/photos2vangogh/model.safetensors").is_file()

    r = run(["imxlate", "translate", "input/", "--to", "vangogh"], cwd)
    assert "runs/photos2vangogh/model.safetensors" in r.stderr  # says which model it used
    out = cwd / "vangogh-translated"
    assert str(out.name) in r.stdout.splitlines()[-1]
    inputs = sorted((cwd / "input").iterdir())
    outputs = sorted(out.iterdir())
    assert len(outputs) == len(inputs) == 4
    for src in inputs:
        assert Image.open(out / src.name).size == Image.open(src).size  # same name, so same format
    assert all(p.suffix in (".png", ".jpg") and p.name.startswith("img") for p in inputs)  # nothing added to input/

    env = {"IMXLATE_INCEPTION_WEIGHTS": str(weights)}
    r = run(["imxlate", "eval", "--fid", "--allow-unverified-weights", "--json"], cwd, env=env)
    report = json.loads(r.stdout)
    directions = {d["direction"]: d for d in report["directions"]}
    assert set(directions) == {"photos->vangogh", "vangogh->photos"}
    for d in directions.values():
        assert math.isfinite(d["fid"]) and d["source_folder"] and d["target_folder"]
    assert report["comparable"] is False
    r = run(["imxlate", "eval", "--fid", "--allow-unverified-weights"], cwd, env=env)
    assert "photos->vangogh" in r.stdout and "photos" in r.stdout and "FID" in r.stdout


def test_a_second_run_gets_its_own_folder(two_domains):
    run(TRAIN, two_domains)
    first = two_domains / "runs/photos2vangogh"
    before = tree_digest(first)
    r = run(TRAIN, two_domains)
    assert "runs/photos2vangogh-2" in r.stdout
    assert (two_domains / "runs/photos2vangogh-2/model.safetensors").is_file()
    assert tree_digest(first) == before
    listing = run(["imxlate", "runs"], two_domains).stdout
    assert "photos2vangogh-2" in listing and "3 of 3" in listing


def test_unknown_target_domain_is_one_clear_line(two_domains):
    run(TRAIN, two_domains)
    before = sorted(p.name for p in two_domains.iterdir())
    r = run(["imxlate", "translate", "input/", "--to", "nowhere"], two_domains, ok=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "nowhere" in r.stderr and "photos, vangogh" in r.stderr
    assert sorted(p.name for p in two_domains.iterdir()) == before
