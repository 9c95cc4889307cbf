"""Model files record a digest of their content when written; loading verifies it.

A file with one changed value is refused (the documented --no-verify loads it anyway), NaN weights
are refused always, `imxlate info` says whether a file is intact, and files written before digests
(the shipped model among them) still load strictly.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from imxlate.families import load_model
from imxlate import store
from imxlate.cli import app
from imxlate.errors import ImxlateError
from imxlate.families import build_family
from imxlate.models import shipped_models

from conftest import write_images

runner = CliRunner()


@pytest.fixture
def model(tmp_path) -> Path:
    """A real model file of a small CycleGAN (untrained weights are as good as any for integrity)."""
    torch.manual_seed(0)
    family = build_family("cyclegan", {"ngf": 8, "ndf": 8, "n_blocks": 1}, ["a", "b"], 32)
    path = tmp_path / "model.safetensors"
    store.save_model(family, path)
    write_images(tmp_path / "in", 2, sizes=((20, 16),))
    return path


def rewrite(src: Path, dst: Path, change_tensors=None, change_meta=None) -> Path:
    """Copy a model file, changing tensors or metadata but not the digest it recorded."""
    tensors, meta = store.read_file(src)
    tensors = change_tensors(dict(tensors)) if change_tensors else tensors
    meta = change_meta(dict(meta)) if change_meta else meta
    save_file(tensors, str(dst), metadata=meta)
    return dst


def one_value_changed(tensors):
    key = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    t = tensors[key].clone()
    t.view(-1)[0] += 1e-3
    tensors[key] = t
    return tensors


def cli(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.stdout + r.stderr
    return r


def test_written_files_record_a_digest_and_load_verified(model):
    meta = store.read_metadata(model)
    assert meta[store.DIGEST_KEY].startswith("sha256:")
    assert store.inspect(model)[1] == "intact"
    load_model(model)  # verified


def test_one_changed_value_is_refused_and_loads_with_no_verify(model, tmp_path):
    bad = rewrite(model, tmp_path / "bad.safetensors", change_tensors=one_value_changed)
    with pytest.raises(ImxlateError, match="not intact"):
        load_model(bad)
    r = cli("translate", tmp_path / "in", "--to", "b", "--model", bad, "--out", tmp_path / "out", "--quiet")
    assert r.exit_code == 2 and "not intact" in r.stderr and "--no-verify" in r.stderr
    assert not (tmp_path / "out").exists()
    load_model(bad, verify=False)
    r = cli("translate", tmp_path / "in", "--to", "b", "--model", bad, "--out", tmp_path / "out", "--quiet",
            "--no-verify")
    assert r.exit_code == 0, r.stderr
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_changed_metadata_is_refused(model, tmp_path):
    bad = rewrite(model, tmp_path / "bad.safetensors",
                  change_meta=lambda m: {**m, "domains": json.dumps(["horse", "zebra"])})
    with pytest.raises(ImxlateError, match="not intact"):
        load_model(bad)


def test_nan_weights_are_refused_even_with_no_verify(model, tmp_path):
    family = load_model(model)
    with torch.no_grad():
        next(family.nets["G_ab"].parameters()).view(-1)[3] = float("nan")
    nan = tmp_path / "nan.safetensors"
    store.save_model(family, nan)  # a correct digest of broken weights
    for verify in (True, False):
        with pytest.raises(ImxlateError, match="NaN"):
            load_model(nan, verify=verify)
    r = cli("translate", tmp_path / "in", "--to", "b", "--model", nan, "--out", tmp_path / "out", "--no-verify")
    assert r.exit_code == 2 and "NaN" in r.stderr


def test_info_reports_intact_and_not_intact(model, tmp_path):
    r = cli("info", model)
    assert r.exit_code == 0 and "intact" in r.stdout and "not intact" not in r.stdout
    assert json.loads(cli("info", model, "--json").stdout)["integrity"] == "intact"
    bad = rewrite(model, tmp_path / "bad.safetensors", change_tensors=one_value_changed)
    r = cli("info", bad)
    assert r.exit_code == 2 and r.stdout == "" and "not intact" in r.stderr


def test_files_without_a_digest_still_load(model, tmp_path):
    old = rewrite(model, tmp_path / "old.safetensors",
                  change_meta=lambda m: {k: v for k, v in m.items() if k != store.DIGEST_KEY})
    load_model(old)
    assert store.inspect(old)[1] == "no digest recorded"
    r = cli("info", old)
    assert r.exit_code == 0 and "no digest recorded" in r.stdout


def test_checkpoints_are_verified_too(tmp_path):
    write_images(tmp_path / "photos", 2, seed=1)
    write_images(tmp_path / "vangogh", 2, seed=2)
    r = cli("train", "--data", tmp_path, "--domains", "photos", "vangogh", "--steps", "1", "--out", tmp_path / "run",
            "--crop-size", "32", "--load-size", "32", "--ngf", "4", "--ndf", "4", "--n-blocks", "1", "--workers", "0",
            "--quiet")
    assert r.exit_code == 0, r.output
    path = tmp_path / "run" / "checkpoint.safetensors"
    assert store.load_checkpoint(path)["step"] == 1
    tensors, meta = store.read_file(path)
    save_file({k: v * 2 if v.is_floating_point() else v for k, v in tensors.items()}, str(path), metadata=meta)
    with pytest.raises(ImxlateError, match="not intact"):
        store.load_checkpoint(path)


def test_shipped_model_loads_strictly_without_a_digest(tmp_path):
    shipped = shipped_models()[0]
    assert store.DIGEST_KEY not in store.read_metadata(shipped)
    before = store.sha256(shipped)
    family = load_model(shipped)  # verify on: no digest recorded is not an error
    assert store.inspect(shipped)[1] == "no digest recorded"
    r = cli("info", shipped)
    assert r.exit_code == 0 and "no digest recorded" in r.stdout
    x = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    from imxlate.translate import Translator

    y = Translator(family, shipped).translate_tensor(x, to="noto")
    y2 = Translator(load_model(shipped, verify=False), shipped).translate_tensor(x, to="noto")
    assert torch.equal(y, y2)
    assert store.sha256(shipped) == before  # never rewritten
