"""Seeing what a run does: TensorBoard event files (read back with tensorboard's own reader) that continue
across a resume without duplicated steps, the run's report.html, self-contained inside the run folder, whose
recipe gives a --steps run's steps, and sample grids whose rows are labelled."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imxlate.report import loss_group
from imxlate.train import labelled_grid, named_rows

from conftest import cli

TINY = ["--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8", "--n-blocks", "1", "--workers", "0",
        "--log-every", "1", "--sample-every", "2", "--quiet"]


def logged(run: Path) -> dict[int, dict]:
    """The loss lines of log.jsonl by step (the later line of a step wins, as after a resume)."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {e["step"]: e for e in lines if "warning" not in e}


def test_event_files_continue_across_resumes_without_duplicates(two_domains, monkeypatch):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install 'imxlate[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(two_domains)
    cli("train", "--domains", "photos", "vangogh", *TINY, "--steps", 2, "--out", "run")
    shutil.copy("run/checkpoint.safetensors", "step2.safetensors")
    cli("train", "--resume", "run", "--steps", 4, "--quiet")
    # as if that process had died at step 4 before its checkpoint: steps 3 and 4 are trained and logged again
    shutil.copy("step2.safetensors", "run/checkpoint.safetensors")
    cli("train", "--resume", "run", "--steps", 5, "--quiet")

    events = EventAccumulator("run", size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    log = logged(Path("run"))
    losses = [k for k in log[5] if k not in ("step", "epoch", "time", "lr_factor")]
    assert {"G_ab", "D_a", "cycle_a", "idt_a"} <= set(losses)
    expected = {f"{loss_group(k)}/{k}" for k in losses} | {"train/lr_factor", "train/images_per_s"}
    assert set(events.Tags()["scalars"]) == expected
    for tag in expected:
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4, 5], tag
    for k in losses:  # the curves hold the values of the run that went on (the last line of each step)
        values = {e.step: e.value for e in events.Scalars(f"{loss_group(k)}/{k}")}
        assert all(values[s] == pytest.approx(log[s][k], rel=1e-5) for s in range(1, 6)), k
    assert [e.step for e in events.Images("samples")] == [2, 4, 5]
    grid = events.Images("samples")[-1]
    assert (grid.width, grid.height) > (32, 32)


def test_report_is_one_page_inside_the_run_folder(two_domains, monkeypatch):
    monkeypatch.chdir(two_domains)
    cli("train", "--domains", "photos", "vangogh", *TINY, "--steps", 3, "--snapshot-every", 2, "--out", "runs/a")
    run = Path("runs/a")
    page = (run / "report.html").read_text()  # written at the end of training
    samples = sorted(p.name for p in (run / "samples").iterdir())
    assert samples == ["step_0000002.png", "step_0000003.png"]

    # a collapse warning, as the loop writes it, shows on the page (escaped)
    with open(run / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "warning": "G_ab <collapsed> into one image"}) + "\n")
    r = cli("report", run)
    assert "report.html" in r.output and "2 sample grid(s)" in r.output and "1 warning(s)" in r.output
    page = (run / "report.html").read_text()

    # everything it shows is embedded or a file inside the run folder; nothing is fetched
    refs = re.findall(r"""(?:src|href)=['"]?([^'" >]+)""", page)
    assert refs and not re.search(r"https?://", page)
    for ref in refs:
        if ref.startswith("data:image/png;base64,"):
            continue
        target = (run / ref).resolve()
        assert target.is_file() and target.is_relative_to(run.resolve()), ref
    for name in samples:
        assert f"samples/{name}" in refs
    assert "step 2" in page and "step 3" in page
    assert "G_ab &lt;collapsed&gt; into one image" in page
    assert "snapshots/step_0000002.safetensors" in page
    for fact in ("cyclegan", "photos, vangogh", "crop 32 px", "3 of 3", "5 images in", "device", "cpu"):
        assert fact in page, fact

    # one plot per loss group, when matplotlib is there
    groups = {loss_group(k) for k in logged(run)[3] if k not in ("step", "epoch", "time", "lr_factor")}
    assert groups == {"generator", "discriminator", "cycle", "identity"}
    plotted = re.findall(r"data-group='(\w+)'[^>]*src='data:image/png;base64,", page)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert plotted == [] and "pip install" in page
    else:
        assert sorted(plotted) == sorted(groups)

    listing = cli("runs", "runs").output.splitlines()
    assert listing[listing.index(str(run)) + 1].endswith("; model file; report.html")


def test_the_recipe_of_a_steps_run_shows_its_steps(two_domains, monkeypatch):
    """A --steps run's length is its steps: the recipe says steps=3, and its epochs (which only set the shares of
    the schedule) are not shown as if they had been trained; an epochs run shows no steps=None."""
    monkeypatch.chdir(two_domains)
    cli("train", "--domains", "photos", "vangogh", *TINY, "--steps", 3, "--out", "steps")
    cli("train", "--domains", "photos", "vangogh", *TINY, "--epochs", 1, "--epochs-decay", 0, "--out", "epochs")
    options = {}
    for run in ("steps", "epochs"):
        page = Path(run, "report.html").read_text()
        options[run] = re.search(r"<th>training options</th><td>([^<]*)</td>", page).group(1).split(", ")
    assert "steps=3" in options["steps"] and not any(o.startswith("epochs") for o in options["steps"])
    assert {"epochs=1", "epochs_decay=0"} <= set(options["epochs"]) and "steps=None" not in options["epochs"]


def test_sample_grids_label_their_rows(two_domains, monkeypatch):
    """Each row of a grid has its label at its left: the input rows their domain's name, in white on the margin;
    a family that names its rows ((label, images) pairs) has each name drawn."""
    monkeypatch.chdir(two_domains)
    cli("train", "--domains", "photos", "vangogh", *TINY, "--steps", 2, "--out", "run")
    grid = np.asarray(Image.open("run/samples/step_0000002.png").convert("L"), dtype=np.float32)
    row = 32 + 2  # 32 px images and make_grid's margin
    assert grid.shape[0] == 2 + 6 * row and grid.shape[1] > 2 + 4 * row  # CycleGAN: 3 rows per direction
    label = grid[:, :grid.shape[1] - (2 + 4 * row)]  # the column left of the images
    assert [label[2 + i * row:(i + 1) * row].max() > 200 for i in (0, 3)] == [True, True]  # photos, vangogh

    inputs = {"a": torch.zeros(2, 3, 8, 8), "b": torch.ones(2, 3, 8, 8)}
    labels, rows = named_rows([inputs["a"], ("a->b", inputs["b"]), inputs["a"] * 1], inputs)
    assert labels == ["a", "a->b", ""] and rows[1] is inputs["b"]
    drawn = labelled_grid(rows, ["", "a->b->a", ""], 2)
    column = drawn[:, :, :drawn.shape[2] - (2 + 2 * (8 + 2))]  # left of two 8 px images and their margins
    assert column.shape[2] > 10 and column[:, 2:10].max() == 0 and column[:, 12:20].max() > 0.8


def test_report_of_no_run_is_one_error_line(tmp_path):
    r = cli("report", tmp_path / "missing", ok=False)
    assert r.exit_code == 2 and r.output.startswith("error: no run folder") and "Traceback" not in r.output
    (tmp_path / "empty").mkdir()
    r = cli("report", tmp_path / "empty", ok=False)
    assert r.exit_code == 2 and "is not a run folder" in r.output


def test_loss_groups():
    names = {"G_ab": "generator", "G": "generator", "D_b": "discriminator", "D_gp": "discriminator",
             "cycle_a": "cycle", "rec_ab": "cycle", "kl_cycle": "cycle", "idt_b": "identity",
             "nce_ab": "nce", "nce_idt_b": "nce", "kl": "other", "perceptual": "other", "fm_ab": "other"}
    assert {k: loss_group(k) for k in names} == names
