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


def test_the_schedule_is_fitted_into_steps(tmp_path, monkeypatch):
    """Constant, then linear decay to zero, in the shares --epochs : --epochs-decay: over --steps when given
    (CycleGAN's 100 : 100 and FastCUT's 150 : 50), else over the epochs (5 images: 5 steps per epoch); a
    resume with more --steps fits it into the new length."""
    import json

    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        write_images(tmp_path / name, 5, sizes=((24, 24),), seed=len(name))

    def factors(out, *args):
        new = [] if "--resume" in args else ["--domains", "a", "b", "--ngf", "4", "--ndf", "4", "--n-blocks", "1",
                                             "--crop-size", "24", "--load-size", "24", "--log-every", "1", "--out", out]
        r = CliRunner().invoke(app, ["train", *new, "--workers", "0", "--quiet", *args])
        assert r.exit_code == 0, r.output
        lines = [json.loads(x) for x in (tmp_path / out / "log.jsonl").read_text().splitlines()]
        return [round(e["lr_factor"], 9) for e in lines if "lr_factor" in e]

    assert factors("cyclegan", "--steps", "8") == [1, 1, 1, 1, 1, 0.75, 0.5, 0.25]
    assert factors("fastcut", "--steps", "8", "--model", "fastcut", "--num-patches", "4") == [1] * 7 + [0.5]
    assert factors("epochs", "--epochs", "1", "--epochs-decay", "1") == [1] * 6 + [0.8, 0.6, 0.4, 0.2]
    assert factors("constant", "--steps", "4", "--epochs-decay", "0") == [1] * 4
    # a finished run resumed with more --steps re-fits the decay into the new length
    # (steps 9-12 of 12: decay from step 6, so 4/6 .. 1/6 left)
    assert factors("cyclegan", "--resume", "cyclegan", "--steps", "12") == [1, 1, 1, 1, 1, 0.75, 0.5, 0.25,
                                                                         *(round(k / 6, 9) for k in (4, 3, 2, 1))]
