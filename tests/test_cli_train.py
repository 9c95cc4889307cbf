"""`imxlate train`'s options are TrainConfig's fields: their names, defaults and help come from the
dataclass, and the values typed reach the run (with the family options and `--domains a b c`)."""
from __future__ import annotations

import dataclasses

from typer.testing import CliRunner

from imxlate import store
from imxlate.cli import app
from imxlate.config import TrainConfig

from conftest import write_images


def test_help_lists_every_field_with_its_default_and_help():
    r = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    rows = {line.split()[1]: line for line in r.output.splitlines() if line.startswith("│ --")}
    for f in dataclasses.fields(TrainConfig):
        row = rows[f"--{f.name.replace('_', '-')}"]
        assert f.metadata["help"] in row
        if f.default not in (None, False, dataclasses.MISSING):
            assert f"[default: {f.default}]" in row, row
    assert {"--resume", "--quiet"} <= set(rows)
    assert "imxlate train --resume runs/photos2vangogh" in r.output  # the examples
    assert "--model cyclegan options:" in r.output and "--lambda-cycle" in r.output  # the family options


def test_typed_values_reach_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(("a", "b", "c")):
        write_images(tmp_path / name, 2, sizes=((16, 16),), seed=i)
    r = CliRunner().invoke(app, ["train", "--model", "stargan", "--domains", "a", "b", "c", "--ngf", "4",
                                 "--steps", "1", "--crop-size", "16", "--load-size", "16", "--seed", "7",
                                 "--no-flip", "--ndf", "4", "--workers", "0", "--out", "run", "--quiet",
                                 "--n-blocks", "1"])
    assert r.exit_code == 0, r.output
    meta = store.read_metadata(tmp_path / "run" / "model.safetensors")
    cfg = meta["training"]["config"]
    assert meta["domains"] == ["a", "b", "c"] and meta["family"] == "stargan"
    assert (cfg["seed"], cfg["no_flip"], cfg["crop_size"], cfg["steps"], cfg["workers"]) == (7, True, 16, 1, 0)
    assert (meta["config"]["ngf"], meta["config"]["n_blocks"]) == (4, 1)
