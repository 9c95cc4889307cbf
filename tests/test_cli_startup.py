"""The command line starts without torch: `imxlate --help`, `--version` and usage errors import only Typer, rich
and imxlate's torch-free modules (the commands import the library inside them), and `import imxlate` stays
light while `imxlate.load` and `imxlate.__version__` keep working."""
from __future__ import annotations

import os
import subprocess
import sys

import imxlate


def run(*args: str) -> subprocess.CompletedProcess:
    """`python -X importtime -m imxlate ARGS`: its output, with every module it imported listed on stderr."""
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "imxlate", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})


def imported(r: subprocess.CompletedProcess) -> set[str]:
    return {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}


def test_help_version_and_usage_errors_import_no_torch():
    cases = {("--help",): 0, ("--version",): 0, ("train", "--steps", "many"): 2, ("translate",): 2,
             ("translate", "x.png", "--to", "b", "--bogus"): 2, ("nosuchcommand",): 2}
    results = {args: run(*args) for args in cases}
    for args, status in cases.items():
        r = results[args]
        assert r.returncode == status, (args, r.stdout, r.stderr[-2000:])
        modules = imported(r)
        assert "imxlate.cli" in modules and not {m for m in modules if m.split(".")[0] == "torch"}, args
        if status:
            errors = [x for x in r.stderr.splitlines() if not x.startswith("import time:")]
            assert len(errors) == 1 and errors[0].startswith("error: "), (args, errors)
    assert results["--version",].stdout.strip() == f"imxlate {imxlate.__version__}"
    assert "train" in results["--help",].stdout and "--version" in results["--help",].stdout


def test_import_imxlate_is_light_and_load_still_works():
    """`import imxlate` loads no torch; `imxlate.load` (here of the shipped emoji model) brings it when called."""
    code = ("import sys, imxlate; light = 'torch' not in sys.modules; t = imxlate.load(to='noto', device='cpu'); "
            "print(light, imxlate.__version__, 'torch' in sys.modules, 'noto' in t.domains)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", imxlate.__version__, "True", "True"]
