"""`imxlate train --resume` never ignores an option: one that would change the run's recipe is refused with one
line naming it (its own value is accepted); how long the run goes on, how often it writes, where it runs and
where its images are may change, and the resume says in one line what it applied. Images added, removed or
renamed in the data folders since the stop are noted in one line."""
from __future__ import annotations

import shutil

import pytest

from imxlate import store

from conftest import cli

TINY = ["--ngf", "4", "--ndf", "4", "--n-blocks", "1", "--crop-size", "32", "--load-size", "32", "--workers", "0",
        "--device", "cpu", "--sample-every", "100"]


@pytest.fixture
def stopped(two_domains, monkeypatch):
    """A run of 2 steps in two_domains/run (the working folder), photos and vangogh of 5 images each."""
    monkeypatch.chdir(two_domains)
    cli("train", "--domains", "photos", "vangogh", *TINY, "--steps", 2, "--out", "run", "--quiet")
    return two_domains / "run"


def errors(r) -> list[str]:
    return [line for line in r.output.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("args, said", [
    (["--crop-size", "64"], "--crop-size 64: this run was trained with --crop-size 32;"),
    (["--family", "cut"], "--family cut: this run was trained with --family cyclegan;"),
    (["--batch-size", "2"], "--batch-size 2: this run was trained with --batch-size 1;"),
    (["--ngf", "8"], "--ngf 8: this run was trained with --ngf 4;"),
    (["--no-flip"], "--no-flip: this run was trained with no --no-flip;"),
])
def test_an_option_that_would_change_the_run_is_refused_naming_it(stopped, args, said):
    before = (stopped / store.CHECKPOINT).read_bytes()
    r = cli("train", "--resume", "run", *args, ok=False)
    assert r.exit_code == 2 and errors(r) == [f"error: {said} a resume keeps the run's recipe: leave it out, or "
                                              "start a new run with --out"], r.output
    assert (stopped / store.CHECKPOINT).read_bytes() == before


def test_out_elsewhere_is_refused_and_the_runs_own_values_are_accepted(stopped):
    r = cli("train", "--resume", "run", "--out", "other", ok=False)
    assert r.exit_code == 2 and errors(r) == ["error: --out other: --resume goes on in the run's own folder run; "
                                              "leave --out out, or drop --resume to start a new run there"]
    r = cli("train", "--resume", "run", "--out", "run", "--crop-size", 32, "--ngf", 4, "--seed", 0, "--family",
            "cyclegan", "--domains", "photos", "vangogh")
    assert "Resume applies" not in r.output and "Resuming run at step 2" in r.output


def test_new_steps_and_output_settings_are_applied_and_said(stopped):
    r = cli("train", "--resume", "run", "--steps", 4, "--log-every", 1, "--sample-every", 3)
    assert [x for x in r.output.splitlines() if x.startswith("Resume")] == [
        "Resume applies --steps 4 (was 2), --sample-every 3 (was 100), --log-every 1 (was 10)"]
    state = store.load_checkpoint(stopped / store.CHECKPOINT)
    assert state["step"] == 4 and state["train_config"]["steps"] == 4 and state["train_config"]["log_every"] == 1
    assert sorted(p.name for p in (stopped / "samples").iterdir()) == [f"step_000000{s}.png" for s in (2, 3, 4)]
    r = cli("train", "--resume", "run", "--steps", 3, ok=False)  # fewer steps than done would be ignored
    assert r.exit_code == 2 and errors(r) == ["error: this run is at step 4 already, past the 3 steps it would now "
                                              "train; give a larger --steps to go on"]


def test_data_changed_since_the_stop_is_noted(stopped):
    photos, vangogh = stopped.parent / "photos", stopped.parent / "vangogh"
    for name in ("extra1.png", "extra2.png"):
        shutil.copy(photos / "img000.png", photos / name)
    (vangogh / "img001.jpg").rename(vangogh / "renamed.jpg")
    r = cli("train", "--resume", "run", "--steps", 3, "--quiet")  # said even with --quiet (on stderr)
    assert [x for x in r.output.splitlines() if x.startswith("Note")] == [
        "Note: the data changed since the stop: photos has 7 images, 5 at the stop; vangogh has other files "
        "(5 images, as at the stop). Training goes on with the images there now (not an exact continuation)"]
    r = cli("train", "--resume", "run", "--steps", 4, "--quiet")  # the checkpoint now records the data as it is
    assert "Note" not in r.output
