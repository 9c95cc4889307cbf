"""The glyph benchmark's scripts: prepare.py's split is disjoint and paired where it must be, and
benchmark.py trains every method, scores it beside the baselines and chooses on validation alone."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imxlate.data import list_images, load_rgb
from imxlate.paired import paired_scores

ROOT = Path(__file__).parents[1]
FONTS = [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"), Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")]
pytestmark = pytest.mark.skipif(not all(f.is_file() for f in FONTS), reason="needs fonts-dejavu-core")


@pytest.fixture(scope="module")
def latin(tmp_path_factory):
    out = tmp_path_factory.mktemp("glyphs")
    r = subprocess.run([sys.executable, ROOT / "examples/glyphs/prepare.py", out, "--pairs", "latin", "--size", "32"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_split_is_disjoint_and_paired(latin):
    root = latin / "latin"
    train_a, train_b = names(root / "sans"), names(root / "serif")
    test, val = names(root / "test" / "sans"), names(root / "val" / "sans")
    assert names(root / "test" / "serif") == test and names(root / "val" / "serif") == val  # exact targets
    assert len(test) == 200 and len(val) == 100 and abs(len(train_a) - len(train_b)) <= 1 and len(train_a) > 300
    parts = [train_a, train_b, test, val]
    assert all(not (x & y) for i, x in enumerate(parts) for y in parts[i + 1:])  # no character in two parts
    a = load_rgb(root / "test" / "sans" / sorted(test)[0])
    assert a.size == (32, 32) and a.getextrema()[0] == (0, 255)  # black ink on white


@pytest.mark.skipif(not Path("/usr/share/fonts/opentype/urw-base35/Z003-MediumItalic.otf").is_file(),
                    reason="needs fonts-urw-base35")
def test_shape_pair_is_split_the_same_way(tmp_path):
    """The shape-changing pair (DejaVu Sans -> URW Z003) is cut like the others: disjoint, exact targets held out."""
    r = subprocess.run([sys.executable, ROOT / "examples/glyphs/prepare.py", tmp_path, "--pairs", "z003", "--size", "32"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "z003"
    test, val = names(root / "test" / "sans"), names(root / "val" / "sans")
    assert names(root / "test" / "script") == test and names(root / "val" / "script") == val
    assert (len(test), len(val)) == (150, 75)
    parts = [names(root / "sans"), names(root / "script"), test, val]
    assert all(not (x & y) for i, x in enumerate(parts) for y in parts[i + 1:])


def benchmark_script():
    sys.path.insert(0, str(ROOT / "examples" / "glyphs"))
    try:
        import benchmark
    finally:
        sys.path.pop(0)
    return benchmark


def test_budget_times_each_family_once():
    """The step counts come from one timing per family; a method that differs only in a training-loop option
    (CycleGAN-EMA: --ema) runs the steps of the one it extends."""
    benchmark = benchmark_script()
    assert {m: benchmark.timed_as(m) for m in benchmark.METHODS} == {
        "CycleGAN": "CycleGAN", "CUT": "CUT", "FastCUT": "FastCUT", "CycleGAN-EMA": "CycleGAN",
        "U-GAT-IT": "U-GAT-IT", "U-GAT-IT-light": "U-GAT-IT-light", "CycleGAN-Deform": "CycleGAN-Deform",
        "CycleGAN-Affine": "CycleGAN-Affine", "CycleGAN-UNet": "CycleGAN-UNet",
        "CycleGAN-Affine-UNet": "CycleGAN-Affine-UNet"}
    times = benchmark.seconds_per_step(32, repeats=1, steps=1)
    assert set(times) == {"CycleGAN", "CUT", "FastCUT", "U-GAT-IT", "U-GAT-IT-light", "CycleGAN-Deform",
                          "CycleGAN-Affine", "CycleGAN-UNet", "CycleGAN-Affine-UNet"}
    assert all(t > 0 for t in times.values())


def test_the_choice_drops_a_method_short_of_seeds_only_below_the_chosen_ones_worst_seed():
    """Validation gains per seed: A has every seed on both pairs and the best mean; B's one seed is below A's
    worst on z003 (dropped early), C's is above it (waited for), D has none; E is complete and never dropped."""
    choice = {"z003": {"A": [0.4, 0.3, 0.5], "B": [0.1], "C": [0.35], "E": [0.0, 0.1, 0.2]},
              "kai": {"A": [0.1, 0.0, 0.2], "E": [0.3, 0.3, 0.3]}}
    line = benchmark_script().choose(["z003", "kai"], choice, ["A", "B", "C", "D", "E"], 3)
    assert line.endswith("A 0.250, E 0.200; chosen: **A** (among the methods with every seed; dropped early, their "
                         "best seed below A's worst on a pair: B; not yet: C, D).")
    assert benchmark_script().choose(["z003"], choice, ["B", "C"], 3).startswith("Not chosen yet")


def test_benchmark_trains_scores_and_chooses_on_validation(latin, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, ROOT / "examples/glyphs/benchmark.py", "--glyphs", latin, "--pairs", "latin",
            "--steps", "2", "--jobs", "2", "--clf-steps", "20", "--results", tmp_path / "results"]
    r = subprocess.run(args + ["--seeds", "1", "--work", tmp_path / "work"], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {line.split("|")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("| ")}
    assert {"CycleGAN", "CUT", "FastCUT", "CycleGAN-EMA", "input itself", "input blurred 1 px", "blank white page"} <= set(rows)
    assert "| sans -> serif L1 | SSIM | top-1 | shape | style |" in r.stdout  # shape retrieval and the style judge
    # the identity row is the paired scores of the inputs against their true drawings
    root = latin / "latin" / "test"
    paths = list_images(root / "sans")
    direct = paired_scores([load_rgb(p) for p in paths], [load_rgb(root / "serif" / p.name) for p in paths])
    cells = [c.strip() for c in rows["input itself"].split("|")[3:6]]
    assert cells == [f"{direct['l1']:.4f}", f"{direct['ssim']:.4f}", f"{direct['top1']:.3f}"]
    assert re.search(r"chosen: \*\*(CycleGAN|CUT|FastCUT|CycleGAN-EMA)\*\*", r.stdout)
    assert re.search(r"the input on top-1: CycleGAN [0-2] of 2, CUT [0-2] of 2, FastCUT [0-2] of 2, CycleGAN-EMA [0-2] of 2\.",
                     r.stdout)
    assert len(list((tmp_path / "work").glob("*/model.safetensors"))) == 4
    # each run's scores are kept, with no path of the machine in them
    records = sorted((tmp_path / "results").glob("latin-*.json"))
    assert [f.name for f in records] == sorted(f"latin-{m}-seed0-2.json" for m in ("cut", "cyclegan", "cyclegan-ema", "fastcut"))
    assert str(tmp_path) not in "".join(f.read_text() for f in records)

    # misses.py: the characters lost minus those gained is the input's top-1 minus the model's, in characters
    model = next((tmp_path / "work").glob("latin-cyclegan-seed0-*/model.safetensors"))
    m = subprocess.run([sys.executable, ROOT / "examples/glyphs/misses.py", model, "--glyphs", latin, "--split", "test",
                        "--figure", tmp_path / "misses.png"], capture_output=True, text=True, timeout=300, env=env)
    assert m.returncode == 0, m.stdout + m.stderr
    record = json.loads((tmp_path / "results" / "latin-cyclegan-seed0-2.json").read_text())["scores"]["test"]
    counts = re.search(r"sans -> serif \(200 characters\): (\d+) lost, (\d+) gained", m.stdout)
    lost, gained = int(counts[1]), int(counts[2])
    assert lost - gained == round(200 * (direct["top1"] - record["sans->serif"]["top1"]))
    assert m.stdout.count("  lost: ") >= lost and (tmp_path / "misses.png").is_file() == (lost > 0)

    # finished in parts: a later call with an empty work folder and --no-train draws the same rows from the
    # records alone, and a seed never run shows as missing and holds back the choice
    again = subprocess.run(args + ["--seeds", "2", "--work", tmp_path / "later", "--no-train"], capture_output=True,
                           text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not list((tmp_path / "later").glob("*/model.safetensors"))
    later = {line.split("|")[1].strip(): line for line in again.stdout.splitlines() if line.startswith("| ")}
    assert later["CycleGAN (1 of 2 seeds)"].split("|")[2:] == rows["CycleGAN"].split("|")[2:]
    assert "Not chosen yet" in again.stdout

    # --methods trains only the methods named; the others' rows still come from their records
    only = subprocess.run(args + ["--seeds", "2", "--work", tmp_path / "work", "--methods", "CycleGAN-EMA"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert only.returncode == 0, only.stdout + only.stderr
    assert sorted(f.name for f in (tmp_path / "results").glob("latin-*seed1*.json")) == ["latin-cyclegan-ema-seed1-2.json"]
    assert "CycleGAN (1 of 2 seeds)" in only.stdout and "| CycleGAN-EMA |" in only.stdout
    # the choice is among the methods with every seed, and says which still wait or were dropped early
    said = re.search(r"chosen: \*\*CycleGAN-EMA\*\* \(among the methods with every seed; (.*)\)\.", only.stdout)
    assert said and sorted(re.findall(r"CycleGAN|CUT|FastCUT", said[1].replace("CycleGAN-EMA", ""))) == ["CUT", "CycleGAN", "FastCUT"]
