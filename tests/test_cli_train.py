"""`imxlate train`'s options are TrainConfig's fields: their names, defaults, help and help panels come from
the dataclass, and the values typed reach the run (with the family options and `--domains a b c`). Its help
lists the common options first and the families in one line; `--family NAME --help` lists one family's
options from its config dataclass; `--preset quick` fills what the user left out. The progress is a bar in a
terminal and plain `step N/TOTAL` lines in a file, with an estimate line after the first steps. `imxlate runs`
and translate's Model: line keep names whole in 80 columns; a load size below the crop size is refused."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from imxlate import store
from imxlate.cli import app
from imxlate.config import PRESETS, TrainConfig, is_recorded
from imxlate.families import REGISTRY, family_class
from imxlate.train import resolve

from conftest import cli, write_images

TINY = ["--ngf", "4", "--ndf", "4", "--n-blocks", "1", "--crop-size", "32", "--load-size", "32", "--workers", "0",
        "--device", "cpu"]


def help_rows(*args) -> dict[str, str]:
    """`imxlate train ... --help` at 400 columns (one row per option) -> {first flag: its row}."""
    r = CliRunner().invoke(app, ["train", *args, "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output  # a flag takes no value
    return {line.split()[1].split(",")[0]: line for line in r.output.splitlines() if line.startswith("│ --")}


def test_help_shows_the_common_options_first_and_the_families_in_one_line():
    r = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert len(lines) < 150 and any("--domains" in x for x in lines[:40]) and any("--steps" in x for x in lines[:40])
    families = [x for x in lines if "Families" in x]
    assert families and all(name in r.output for name in REGISTRY)
    assert "--lambda-cycle " not in r.output and "--num-patches" not in r.output  # no family's own options
    assert "imxlate train --resume runs/photos2vangogh" in r.output  # the examples

    rows = help_rows()
    for f in dataclasses.fields(TrainConfig):
        row = rows[f.metadata.get("flags", [f"--{f.name.replace('_', '-')}"])[0]]
        assert f.metadata["help"] in row
        if f.default not in (None, False, dataclasses.MISSING):
            assert f"[default: {f.default}]" in row, row
    assert "--model" in rows["--family"] and {"--resume", "--quiet"} <= set(rows)
    assert "<bool>" not in CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).output


def test_each_family_help_lists_its_own_options_from_its_config():
    """Generated from the registry and each family's config: every option a user sets, recorded fields hidden."""
    for name in REGISTRY:
        rows = help_rows("--family", name)
        fields = dataclasses.fields(family_class(name).Config)
        shown = {f"--{f.name.replace('_', '-')}" for f in fields if not is_recorded(f)}
        assert shown | {"--help"} == set(rows), name
        assert "--domains" not in rows and "--steps" not in rows
    cyclegan = help_rows("--model", "cyclegan")  # the alias, before or after --help
    assert "--perceptual-net" in cyclegan and "--perceptual-sha256" not in cyclegan
    assert "--perceptual-kind" not in cyclegan and "--lambda-cycle" in cyclegan
    r = CliRunner().invoke(app, ["train", "--help", "--family=fastcut"], env={"COLUMNS": "400"})
    assert "--flip-equivariance false turns it off" in r.output and "--epochs 150" in r.output  # its defaults
    r = CliRunner().invoke(app, ["train", "--family", "nope", "--help"])
    assert r.exit_code == 2 and "nope" in r.output and "cyclegan" in r.output


def test_typed_values_reach_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(("a", "b", "c")):
        write_images(tmp_path / name, 2, sizes=((16, 16),), seed=i)
    r = CliRunner().invoke(app, ["train", "--family", "stargan", "--domains", "a", "b", "c", "--ngf", "4",
                                 "--steps", "1", "--crop-size", "16", "--load-size", "16", "--seed", "7",
                                 "--no-flip", "--ndf", "4", "--workers", "0", "--out", "run", "--quiet",
                                 "--n-blocks", "1"])
    assert r.exit_code == 0, r.output
    meta = store.read_metadata(tmp_path / "run" / "model.safetensors")
    cfg = meta["training"]["config"]
    assert meta["domains"] == ["a", "b", "c"] and meta["family"] == "stargan"
    assert (cfg["seed"], cfg["no_flip"], cfg["crop_size"], cfg["steps"], cfg["workers"]) == (7, True, 16, 1, 0)
    assert (meta["config"]["ngf"], meta["config"]["n_blocks"]) == (4, 1)
    r = CliRunner().invoke(app, ["train", "--domains", "a", "b", "--lambda-nce", "1"])
    assert r.exit_code == 2 and "--lambda-nce" in r.output and "--family cyclegan --help" in r.output


def test_preset_quick_fills_what_the_user_left_out(tmp_path, monkeypatch):
    """Small crop, ngf and ndf, and a step count; options given win; sizes never grow past a family's own."""
    quick = PRESETS["quick"]
    plan = resolve(TrainConfig(domains=["a", "b"], preset="quick"), {}, None)
    assert (plan.cfg.steps, plan.cfg.crop_size, plan.cfg.load_size) == (quick["steps"], 64, 72)  # 286 : 256 kept
    assert (plan.fam_cfg.ngf, plan.fam_cfg.ndf) == (quick["ngf"], quick["ndf"]) == (16, 16)
    assert resolve(TrainConfig(domains=["a", "b"], model="latent-mapping", preset="quick"), {}, None).cfg.crop_size == 32

    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        write_images(tmp_path / name, 3, sizes=((40, 40),), seed=len(name))
    r = CliRunner().invoke(app, ["train", "--domains", "a", "b", "--preset", "quick", "--steps", "2", "--ngf", "4",
                                 "--crop-size", "32", "--n-blocks", "1", "--workers", "0", "--out", "run", "--quiet"])
    assert r.exit_code == 0, r.output
    meta = store.read_metadata(tmp_path / "run" / "model.safetensors")
    cfg = meta["training"]["config"]
    assert (cfg["steps"], cfg["crop_size"], cfg["load_size"], cfg["preset"]) == (2, 32, 36, "quick")
    assert (meta["config"]["ngf"], meta["config"]["ndf"], meta["config"]["n_blocks"]) == (4, 16, 1)
    r = CliRunner().invoke(app, ["train", "--domains", "a", "b", "--preset", "slow"])
    assert r.exit_code == 2 and "--preset slow" in r.output and "quick" in r.output


def test_the_schedule_is_fitted_into_steps(tmp_path, monkeypatch):
    """Constant, then linear decay to zero, in the shares --epochs : --epochs-decay: over --steps when given
    (CycleGAN's 100 : 100 and FastCUT's 150 : 50), else over the epochs (5 images: 5 steps per epoch); a
    resume with more --steps fits it into the new length."""
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


def imxlate(cwd: Path, *args, **popen):
    """The installed command as a user runs it, at 80 columns."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    return subprocess.Popen([sys.executable, "-m", "imxlate", *args], cwd=cwd, env=env, **popen)


def in_terminal(cwd: Path, *args) -> list[str]:
    """`imxlate ARGS` in an 80-column terminal (a pty), which it must finish -> the lines on its screen."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = imxlate(cwd, *args, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    return [x for x in re.split(r"[\r\n]+", screen) if x.strip()]


def test_progress_bar_in_an_80_column_terminal(tmp_path):
    """In a terminal: the step count, rate, ETA and bar on one line and the losses below, none past 80 columns."""
    for name in ("a", "b"):
        write_images(tmp_path / name, 4, sizes=((32, 32),), seed=len(name))
    lines = in_terminal(tmp_path, "train", "--domains", "a", "b", "--steps", "20", *TINY)
    assert all(len(x) <= 80 for x in lines), max(lines, key=len)
    bar = [x for x in lines if re.match(r"step\s+20/20 \S+ (step/s|s/step) ETA .* ━+ epoch \d+$", x.strip())]
    assert bar, lines
    assert any(x.startswith("G ab ") and " D a " in x for x in lines), lines


def test_without_a_terminal_plain_lines_an_estimate_and_a_hint(tmp_path):
    """Output to a file or pipe (nohup, CI): a plain `step N/TOTAL` line every --log-every steps, with rate, ETA
    and losses; after the first steps the measured time per step and the plan's length; on a CPU, over an hour,
    a hint with --preset quick. Ctrl-C then stops the run with its checkpoint."""
    for name in ("a", "b"):
        write_images(tmp_path / name, 4, sizes=((32, 32),), seed=len(name))
    proc = imxlate(tmp_path, "train", "--domains", "a", "b", "--steps", "10000000", "--log-every", "3", "--out", "run",
                   *TINY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("Hint:"):
                proc.send_signal(signal.SIGINT)
                break
    finally:
        _, err = proc.communicate(timeout=300)
    text = "".join(seen)
    steps = re.findall(r"^step (\d+)/10000000  \S+ (?:step/s|s/step)  ETA \d+ h \d\d min  epoch \d+  "
                       r"G ab \S+ ba \S+  D a \S+ b \S+  cycle a ", text, re.M)
    assert steps == ["3", "6"], text + err
    assert re.search(r"^Measured \S+ s/step: 10,000,000 steps take about \d+ h \d\d min \(.+ left\)$", text, re.M)
    assert "--preset quick (crop 64 px, ngf 16, ndf 16, 2000 steps)" in seen[-1]
    assert "━" not in text and "\x1b" not in text  # no bar, no terminal codes
    step = store.load_checkpoint(tmp_path / "run" / store.CHECKPOINT)["step"]
    assert proc.returncode == 130 and err.splitlines() == [
        f"interrupted at step {step}; checkpoint kept in run; resume with: imxlate train --resume run"]


def test_runs_and_the_model_line_keep_names_whole_in_80_columns(tmp_path, monkeypatch):
    """`imxlate runs` puts each run folder on a line of its own and wraps what it says of it; translate's Model:
    line wraps before what follows the path: nothing past 80 columns, no name cut."""
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        write_images(tmp_path / name, 2, sizes=((32, 32),), seed=len(name))
    run = "runs/photos_to_vangogh_with_a_rather_long_name_42"
    cli("train", "--domains", "a", "b", "--steps", "1", "--out", run, "--quiet", *TINY)
    lines = in_terminal(tmp_path, "runs")
    assert all(len(x) <= 80 for x in lines), max(lines, key=len)
    assert lines[0] == run and lines[1].startswith("  cyclegan: a, b; step 1 of 1;"), lines
    lines = in_terminal(tmp_path, "translate", "a", "--to", "b", "--model", run, "--out", "out", "--quiet")
    assert all(len(x) <= 80 for x in lines), max(lines, key=len)
    assert lines[:2] == [f"Model: {run}/model.safetensors", "  (given; a, b)"], lines


def test_a_load_size_below_the_crop_size_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("train", "--domains", "a", "b", "--crop-size", "64", "--load-size", "48", ok=False)
    assert r.exit_code == 2 and r.output.splitlines() == [
        "error: --load-size 48 is below --crop-size 64; give --load-size 64 or more, or a smaller --crop-size"]
    assert not Path("runs").exists()
    # left out, the load size follows a larger crop (the family's 286 : 256 would be below it)
    assert resolve(TrainConfig(domains=["a", "b"], crop_size=512), {}, None).cfg.load_size == 512
