"""eval --classifier: label preservation, checked against the classifier's own accuracy on real images."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from imxlate.cli import app
from imxlate.data import list_images
from imxlate.classifier import classify, load_classifier


def write_classes(root, n=6, seed=0):
    """Two classes that differ in colour and a little noise, so a classifier learns them imperfectly."""
    rng = np.random.default_rng(seed)
    for cls, base in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            a = np.clip(np.array(base) + rng.normal(0, 90, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / cls / f"{i}.png")


def test_eval_classifier_on_real_target_images_gives_its_accuracy(tmp_path):
    write_classes(tmp_path / "train", seed=0)
    write_classes(tmp_path / "test", seed=1)
    runner = CliRunner()
    clf_path = tmp_path / "clf.safetensors"
    r = runner.invoke(app, ["train-classifier", str(tmp_path / "train"), "--out", str(clf_path), "--steps", "5",
                            "--image-size", "16", "--width", "4", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    files = list_images(tmp_path / "test")
    clf = load_classifier(clf_path)
    expected = np.mean([p == f.parent.name for p, f in zip(classify(clf, files), files)])
    r = runner.invoke(app, ["eval", "--fake", str(tmp_path / "test"), "--classifier", str(clf_path), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["n"] == 12 and abs(result["label_preservation"] - expected) < 1e-12
    r = runner.invoke(app, ["info", str(clf_path)])  # info knows classifier files
    assert r.exit_code == 0 and "classifier of" in r.output and "16 px" in r.output, r.output
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (16, 16)).save(flat / "x.png")
    r = runner.invoke(app, ["eval", "--fake", str(flat), "--classifier", str(clf_path)])
    assert r.exit_code == 2 and "class subfolders" in r.output
