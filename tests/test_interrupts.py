"""Stopping a command: Ctrl-C, SIGTERM (`kill`, a job scheduler) and SIGHUP (a closed terminal) end `imxlate
train` with status 130, its checkpoint written, no temporary file left and one line that says where it stopped
and how to resume; a run folder appears with its first checkpoint, so no folder without one takes a run's name.
The other commands stop with status 130 and one line as well; `serve`, whose way to end is Ctrl-C, says Stopped."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from imxlate import store

from conftest import cli, write_images

TINY = ["--ngf", "4", "--ndf", "4", "--n-blocks", "1", "--crop-size", "32", "--load-size", "32", "--workers", "0",
        "--device", "cpu"]


def start(cwd: Path, *args: str) -> subprocess.Popen:
    """`imxlate ARGS` as a user runs it in a terminal, its output read line by line. SIGHUP is at its default
    in the child even when the tests run under nohup (which sets it ignored, and imxlate keeps it so)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # what the child inherits at exec
    try:
        return subprocess.Popen([sys.executable, "-m", "imxlate", *args], cwd=cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGHUP, hangup)


def signal_after(proc: subprocess.Popen, prefix: str, signum: int, stream: str = "stdout") -> tuple[str, str]:
    """Send `signum` once a line starting with `prefix` is printed -> (stdout, stderr) of the finished process."""
    seen = []
    for line in getattr(proc, stream):
        seen.append(line)
        if line.startswith(prefix):
            proc.send_signal(signum)
            break
    out, err = proc.communicate(timeout=300)
    return ("".join(seen) + out, err) if stream == "stdout" else (out, "".join(seen) + err)


def temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_sigterm_keeps_the_checkpoint_and_the_run_resumes(two_domains, monkeypatch):
    proc = start(two_domains, "train", "--domains", "photos", "vangogh", "--steps", "100000", "--log-every", "1",
                 "--out", "run", *TINY)
    out, err = signal_after(proc, "step ", signal.SIGTERM)
    assert proc.returncode == 130, out + err
    step = store.load_checkpoint(two_domains / "run" / store.CHECKPOINT)["step"]
    assert step >= 1
    assert err.splitlines() == [f"interrupted at step {step}; checkpoint kept in run; resume with: imxlate train "
                                "--resume run"]
    assert temporary_files(two_domains / "run") == []

    monkeypatch.chdir(two_domains)
    cli("train", "--resume", "run", "--steps", step + 1, "--quiet")
    assert store.read_metadata(two_domains / "run" / store.MODEL)["training"]["steps"] == step + 1


def test_a_run_folder_appears_with_its_first_checkpoint(two_domains, monkeypatch):
    """Stopped as it starts (SIGHUP as the run folder is named, before any step), the folder holds a checkpoint
    that `imxlate runs` lists and that resumes; a folder an older imxlate left without one is listed as such."""
    proc = start(two_domains, "train", "--domains", "photos", "vangogh", "--steps", "100000", "--out", "runs/early",
                 *TINY)
    out, err = signal_after(proc, "Run folder:", signal.SIGHUP)
    assert proc.returncode == 130, out + err
    step = store.load_checkpoint(two_domains / "runs/early" / store.CHECKPOINT)["step"]
    assert err.startswith(f"interrupted at step {step}; checkpoint kept in runs/early;")
    assert temporary_files(two_domains / "runs") == []

    monkeypatch.chdir(two_domains)
    (two_domains / "runs/old").mkdir()
    (two_domains / "runs/old/log.jsonl").write_text('{"step": 10, "G_ab": 1.0}\n')
    listing = cli("runs").output.splitlines()
    assert listing[listing.index("runs/early") + 1].startswith(f"  cyclegan: photos, vangogh; step {step} of 100000;")
    assert listing[listing.index("runs/old") + 1].startswith("  no checkpoint (stopped before its first save);")
    cli("train", "--resume", "runs/early", "--steps", step + 2, "--quiet")
    assert store.read_metadata(two_domains / "runs/early" / store.MODEL)["training"]["steps"] == step + 2


def test_other_commands_stop_with_status_130_and_one_line(two_domains, monkeypatch):
    """translate (through its command-line wrapper) stops between images; serve ends as its page says."""
    monkeypatch.chdir(two_domains)
    cli("train", "--domains", "photos", "vangogh", "--steps", "1", "--out", "run", "--quiet", *TINY)
    write_images(two_domains / "many", 40, sizes=((64, 64),), seed=4)
    proc = start(two_domains, "translate", "many", "--to", "vangogh", "--model", "run", "--size", "1024",
                 "--out", "translated", "--quiet", "--device", "cpu")
    out, err = signal_after(proc, "Model:", signal.SIGTERM, stream="stderr")
    assert proc.returncode == 130, out + err
    assert err.splitlines()[-1] == "interrupted before it finished; run the command again to complete it"
    assert len(err.splitlines()) == 2 and "Traceback" not in err  # the Model: line, then that one
    assert temporary_files(two_domains / "translated") == []

    proc = start(two_domains, "serve", "run", "--port", "0", "--device", "cpu")
    serving = proc.stdout.readline()
    with urllib.request.urlopen(re.search(r"http://\S+/", serving).group(), timeout=60) as page:
        assert page.status == 200  # the page is served: the server runs
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == "Stopped.\n" and err == "", serving + out + err
