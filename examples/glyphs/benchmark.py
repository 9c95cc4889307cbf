"""CycleGAN, CUT, FastCUT and CycleGAN with averaged weights at an equal CPU budget, scored against ground truth:
the glyph pairs and the digits.

    OMP_NUM_THREADS=1 python examples/glyphs/benchmark.py --glyphs DATA/glyphs --digits DATA/digits \\
        --minutes 5 --digits-minutes 3 --seeds 3 --jobs 2 --work runs/benchmark --write

DATA/glyphs is what examples/glyphs/prepare.py writes, DATA/digits what examples/digits/prepare.py writes.
Every method trains both directions (CUT and FastCUT with --bidirectional) with the same networks (ResNet
generators, ngf 32, 6 residual blocks, instance norm; PatchGANs with ndf 32), batch 1, no flips, the same
seeds. The budget is CPU time on one thread: each family's seconds per step are measured first, the three
interleaved in one process (medians), and each run gets budget / (seconds per step) steps at a constant
learning rate (--epochs-decay 0: the records were made so, before --steps fitted a decay into the run).
CycleGAN-EMA is CycleGAN writing a moving average of its generators' weights (--ema 0.999): it runs CycleGAN's
steps, and the average's update is all it adds to a step (measured: about 1% of a CycleGAN step at 64 px, 2%
at 32 px). Runs go as `imxlate train` subprocesses, --jobs at a time, one thread each, and are kept under
--work and reused when the settings match; --methods trains only the methods it names.

Runs are long (36 runs of 20 minutes are 12 hours of one thread), so the benchmark is built to be finished in
parts: the step counts of a budget are measured once and kept in RESULTS/budgets.json, each run is scored as
soon as it ends and its scores kept in RESULTS/<run>.json (no paths in them), and the tables are drawn from
those records, with the seeds each row has so far. Another day, or another machine, picks up the runs that
are missing; --no-train only scores the finished runs found in --work and draws the tables.

Scores, per direction:
- glyphs: L1 (0-1), SSIM and top-1 retrieval (is the translation nearer, in L1, to its own true drawing than
  to every other held-out character's?) on the held-out test characters, beside the input itself, the input
  blurred by 1 px and a blank white page (on white backgrounds L1 and SSIM reward a blank page, so retrieval
  is the content measure). The same scores on the validation characters choose the default: the method with
  the highest mean relative gain over the input itself on L1, SSIM and top-1 (shape retrieval on the pairs that
  change shape; over the pairs, both directions and the seeds); the test split never chooses. A method short of
  seeds is dropped early when on some pair its best seed is below the chosen method's worst.
- digits: the share of held-out digits whose translation a classifier of the target domain reads as the
  input's digit (examples/digits: classifiers trained on each domain's training images).

--write puts the tables into examples/glyphs/README.md and examples/digits/README.md (between markers) and
draws examples/figures/glyphs_grid-<minutes>min.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image, ImageFilter

import imxlate
from imxlate.config import TrainConfig
from imxlate.data import list_images, load_rgb, to_image, to_tensor
from imxlate.evaluate import class_labels, classified_accuracy
from imxlate.families import build_family, family_class
from imxlate.classifier import classify, load_classifier, train_classifier
from imxlate.paired import paired_scores, shape_top1
from imxlate.device import describe_machine
from imxlate.store import write_atomically

HERE = Path(__file__).parent
FIGURES = HERE.parent / "figures"
METHODS = {"CycleGAN": ("cyclegan", {"ema": 0.0}), "CUT": ("cut", {"bidirectional": True}),
           "FastCUT": ("fastcut", {"bidirectional": True}), "CycleGAN-EMA": ("cyclegan", {"ema": 0.999}),
           # generators that can move strokes (issue 31); U-GAT-IT's 4 blocks each side (the paper's n_res)
           "U-GAT-IT": ("ugatit", {"n_blocks": 4}), "U-GAT-IT-light": ("ugatit", {"n_blocks": 4, "light": True}),
           "CycleGAN-Deform": ("cyclegan", {"generator": "deform", "ema": 0.999}),
           # a learned affine warp before the generator (seed 0 of CycleGAN-Affine was spelled --generator affine)
           "CycleGAN-Affine": ("cyclegan", {"warp": "affine", "ema": 0.999}),
           "CycleGAN-UNet": ("cyclegan", {"generator": "unet", "ema": 0.999}),
           "CycleGAN-Affine-UNet": ("cyclegan", {"generator": "unet", "warp": "affine", "ema": 0.999})}
NETS = {"ngf": 32, "ndf": 32, "n_blocks": 6}
EASY_METHODS = ["CycleGAN", "CUT", "FastCUT", "CycleGAN-EMA"]  # the easy pairs' methods unless --methods adds one
SHAPE_PAIRS = ("z003", "kai")  # the pairs whose styles differ in shape; retrieval there is by shape
SHAPE_METHODS = ["CycleGAN-EMA", "CUT", "FastCUT", "U-GAT-IT", "U-GAT-IT-light", "CycleGAN-Deform", "CycleGAN-Affine",
                 "CycleGAN-UNet", "CycleGAN-Affine-UNet"]
PAIRS = {"cjk": ("sans", "serif"), "latin": ("sans", "serif"), "z003": ("sans", "script"), "kai": ("sans", "kai")}
DIGITS = ("handwritten", "printed")


def say(msg: str) -> None:
    print(msg, flush=True)


# ---- budget ------------------------------------------------------------------------------------------

def nets_for(opts: dict) -> dict:
    """NETS as a method with family options `opts` takes them: a U-Net has levels (all the crop allows), not blocks."""
    return {k: v for k, v in NETS.items() if not (k == "n_blocks" and opts.get("generator") == "unet")}


def family_of(name: str) -> tuple[str, dict]:
    """A method's family and family options, without the training loop's (such as --ema)."""
    family, opts = METHODS[name]
    loop = {f.name for f in dataclasses.fields(TrainConfig)}
    return family, {k: v for k, v in opts.items() if k not in loop}


def timed_as(name: str) -> str:
    """The method whose measured steps `name` runs: the first with its family and family options (a method
    that differs only in a training-loop option, such as --ema, runs the steps of the one it extends)."""
    return next(m for m in METHODS if family_of(m) == family_of(name))


def methods_for(pair: str, named: list[str] | None = None) -> list[str]:
    """The methods a pair's table compares: the shape pairs' set, or the easy pairs' plus any other --methods names."""
    if pair in SHAPE_PAIRS:
        return SHAPE_METHODS
    return EASY_METHODS + [m for m in named or [] if m not in EASY_METHODS]


def seconds_per_step(size: int, repeats: int = 3, steps: int = 4, names=None) -> dict[str, float]:
    """Median seconds of one training step of each timed method (of `names`, default all) at `size` px, batch 1,
    interleaved in this process."""
    torch.manual_seed(0)
    batch = {"images": {d: torch.rand(1, 3, size, size) * 2 - 1 for d in "ab"}, "labels": {}}
    fams = {}
    for name in names or METHODS:
        if timed_as(name) != name:
            continue
        family, opts = family_of(name)
        cls = family_class(family)
        cfg = cls.resolve_config(cls.Config(**{**nets_for(opts), **opts}),
                                 TrainConfig(crop_size=size, load_size=size)).__dict__
        fams[name] = build_family(family, cfg, ["a", "b"], size)
        fams[name].setup_training()
        fams[name].train_step(batch, 0)  # warm-up
    times = {name: [] for name in fams}
    for r in range(repeats):
        for name, fam in fams.items():
            t0 = time.perf_counter()
            for i in range(steps):
                fam.train_step(batch, 1 + r * steps + i)
            times[name].append((time.perf_counter() - t0) / steps)
    return {name: statistics.median(ts) for name, ts in times.items()}


# ---- runs --------------------------------------------------------------------------------------------

def run_name(label: str, name: str, steps: int, seed: int) -> str:
    return f"{label}-{name.lower()}-seed{seed}-{steps}"


def run_dir(work: Path, data: Path, name: str, steps: int, seed: int) -> Path:
    key = json.dumps([str(data.resolve()), METHODS[name], NETS, steps, seed], sort_keys=True)
    return work / f"{data.name}-{name.lower()}-seed{seed}-{steps}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def budget_command(data: Path, domains, family: str, options: dict, size: int, steps: int, seed: int, out: Path,
                   device: str = "cpu") -> list[str]:
    """`imxlate train` of one budgeted run, as every example table is made: `steps` at a constant learning rate,
    one image per domain per step, no flips, samples four times, no checkpoints on the way; `options` are the
    family's and the loop's further options, such as --ema (`True` is a bare flag)."""
    cmd = [sys.executable, "-m", "imxlate", "train", "--data", str(data), "--domains", *domains, "--model", family,
           "--steps", str(steps), "--epochs-decay", "0", "--batch-size", "1", "--load-size", str(size),
           "--crop-size", str(size), "--no-flip", "--seed", str(seed), "--device", device, "--workers", "0",
           "--save-every", "100000", "--sample-every", str(max(steps // 4, 1)), "--log-every", "50",
           "--out", str(out), "--quiet"]
    for k, v in options.items():
        cmd += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return cmd


def train_command(data: Path, domains, size: int, name: str, steps: int, seed: int, out: Path,
                  device: str = "cpu") -> list[str]:
    family, opts = METHODS[name]
    return budget_command(data, domains, family, {**nets_for(opts), **opts}, size, steps, seed, out, device)


def run(cmd: list[str], out: Path) -> Path:
    model = out / "model.safetensors"
    if model.is_file():
        return model
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    (out / "checkpoint.safetensors").unlink(missing_ok=True)  # only for resuming
    if r.stderr.strip():
        say(f"  {out.name}: {r.stderr.strip().splitlines()[-1][:300]}")
    return model


# ---- scores ------------------------------------------------------------------------------------------

def stack(paths: list[Path]) -> torch.Tensor:
    return torch.stack([to_tensor(load_rgb(p)) for p in paths])


def translate_all(tr, x: torch.Tensor, to: str, src: str, batch: int = 64) -> list[Image.Image]:
    return [to_image(y) for i in range(0, len(x), batch) for y in tr.translate_tensor(x[i:i + batch], to, src)]


def write_record(path: Path, record: dict) -> None:
    write_atomically(path, lambda f: f.write((json.dumps(record, indent=1) + "\n").encode()))


def scored(preds: list[Image.Image], targets: list[Image.Image], judge=None, dst: str | None = None) -> dict:
    """L1, SSIM and top-1 against the true drawings, shape retrieval, and with a style `judge` the share of
    `preds` it calls `dst`."""
    out = {**paired_scores(preds, targets), "shape": shape_top1(preds, targets)}
    if judge is not None:
        out["style"] = classify(judge, preds).count(dst) / len(preds)
    return out


def train_judge(data: Path, domains, out: Path, steps: int) -> tuple:
    """The style judge of a pair: a small CNN told the two training sets apart (kept in `out`), loaded."""
    if not out.is_file():
        size = Image.open(list_images(data / domains[0])[0]).width
        train_classifier(data, out, steps=steps, image_size=size, width=16, seed=0, classes=list(domains))
    return load_classifier(out)


def glyph_scores(model: Path, sets: dict[str, dict], judge=None) -> tuple[dict, dict]:
    """{split: {"src->dst": scores}} of one model, and its test translations (for the grid)."""
    tr = imxlate.load(model, device="cpu")
    scores, shown = {}, {}
    for split, pairs in sets.items():
        fakes = {k: translate_all(tr, x, k[1], k[0]) for k, (_, x, _) in pairs.items()}
        scores[split] = {f"{s}->{d}": scored(fakes[(s, d)], pairs[(s, d)][2], judge, d) for s, d in pairs}
        if split == "test":
            shown = fakes
    return scores, shown


def glyph_sets(root: Path, split: str, domains) -> dict:
    """{(src, dst): (input images, tensor of inputs, target images)} for both directions of a split."""
    out = {}
    for src, dst in (domains, domains[::-1]):
        paths = list_images(root / split / src)
        out[(src, dst)] = ([load_rgb(p) for p in paths], stack(paths), [load_rgb(root / split / dst / p.name) for p in paths])
    return out


# A global geometric change made by hand for z003 (chosen on its validation characters, not learned): the
# sans drawing slanted (x += 0.3 y), narrowed to 0.8 of its width and its strokes thinned by a 3x3 max filter
# (the script's strokes are thinner), and the inverse the other way. It shows what a warp alone can earn.
HAND_WARP = {"z003": {"script": (0.3, 0.8, ImageFilter.MaxFilter), "sans": (-0.3, 1 / 0.8, ImageFilter.MinFilter)}}


def hand_warped(im: Image.Image, shear: float, width: float, stroke) -> Image.Image:
    """`im` slanted by `shear` (x += shear * y about the centre), scaled to `width` in x, `stroke`-filtered once."""
    w, h = im.size
    warped = im.transform((w, h), Image.AFFINE, (1 / width, shear, -shear * h / 2 + w / 2 * (1 - 1 / width), 0, 1, 0),
                          resample=Image.BICUBIC, fillcolor="white")
    return warped.filter(stroke(3))


def baselines(sets: dict, judge=None, pair: str | None = None) -> dict:
    blank = lambda im: Image.new("RGB", im.size, "white")  # noqa: E731
    rows = {}
    for name, f in (("input itself", lambda im: im), ("input blurred 1 px", lambda im: im.filter(ImageFilter.GaussianBlur(1))),
                    ("blank white page", blank)):
        rows[name] = {k: scored([f(im) for im in inputs], targets, judge, k[1]) for k, (inputs, _, targets) in sets.items()}
    if pair in HAND_WARP:
        rows["input slanted by hand"] = {k: scored([hand_warped(im, *HAND_WARP[pair][k[1]]) for im in inputs], targets,
                                                   judge, k[1]) for k, (inputs, _, targets) in sets.items()}
    return rows


def gain(s: dict, base: dict, content: str = "top1") -> float:
    """Mean relative gain of scores `s` over the input's `base` on L1 (lower is better), SSIM and the content
    retrieval (`content`: pixel top-1 on the easy pairs, shape retrieval where the styles differ in shape)."""
    return ((base["l1"] - s["l1"]) / base["l1"] + (s["ssim"] - base["ssim"]) / base["ssim"]
            + (s[content] - base[content]) / base[content]) / 3


def content_of(pair: str) -> str:
    """The retrieval a pair is judged by: shape retrieval where the two styles place and size things differently."""
    return "shape" if pair in SHAPE_PAIRS else "top1"


def summary(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


COLUMNS = (("l1", "L1", 4), ("ssim", "SSIM", 4), ("top1", "top-1", 3), ("shape", "shape", 3), ("style", "style", 2))


def cell(values: list, digits: int) -> str:
    """mean ± std of the values a column has (records from before a measure existed lack it: '-')."""
    values = [v for v in values if v is not None]
    return summary(values, digits) if values else "-"


def glyph_table(pair: str, directions, scores: dict, base: dict, steps: dict) -> str:
    """Markdown: per method (mean ± std over seeds) and baseline, per direction L1 / SSIM / top-1 / shape / style."""
    head = " | ".join(f"{s} -> {d} " + " | ".join(h for _, h, _ in COLUMNS) for s, d in directions)
    lines = [f"| method | steps | {head} |", "|---|---:|" + "---:|" * len(COLUMNS) * len(directions)]
    for name, per_seed in scores.items():
        cells = [cell([s[k].get(m) for s in per_seed], d) if per_seed else "not run yet"
                 for k in directions for m, _, d in COLUMNS]
        lines.append(f"| {name} | {steps[name]} | " + " | ".join(cells) + " |")
    for name, s in base.items():
        cells = [cell([s[k].get(m)], d) for k in directions for m, _, d in COLUMNS]
        lines.append(f"| {name} | - | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def beats_line(pair: str, directions, scores: dict, base: dict) -> str:
    """How many (seed, direction) runs of each method clear the benchmark's bar, counted run by run. Easy pairs:
    L1 and SSIM better than the input and a blank page, top-1 above the input's. Shape pairs (issue 31): shape
    retrieval above the input's, the style judge at 0.9 or more, L1 below the blank page's."""
    inp, blank = base["input itself"], base["blank white page"]

    def beats(s: dict, k) -> bool:
        if pair in SHAPE_PAIRS:
            return s["shape"] > inp[k]["shape"] and s["style"] >= 0.9 and s["l1"] < blank[k]["l1"]
        return (s["l1"] < min(inp[k]["l1"], blank[k]["l1"]) and s["ssim"] > max(inp[k]["ssim"], blank[k]["ssim"])
                and s["top1"] > inp[k]["top1"])
    counts = [f"{name} {sum(beats(s[k], k) for s in per_seed for k in directions)} of {len(per_seed) * len(directions)}"
              for name, per_seed in scores.items() if per_seed]
    bar = ("have shape retrieval above the input's, the style judge at 0.9 or more and L1 below the blank page's"
           if pair in SHAPE_PAIRS else "beat the input and a blank page on L1 and SSIM and the input on top-1")
    return f"Runs (seed and direction) that {bar}: " + (", ".join(counts) or "none run yet") + "."


def write_between(readme: Path, tag: str, block: str) -> None:
    text = readme.read_text() if readme.exists() else ""
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    new = f"{start}\n{block}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*" + re.escape(end), lambda _: new, text, flags=re.S)
    else:
        text += f"\n{new}\n"
    readme.write_text(text)


def draw_grid(rows: list[tuple[str, list[Image.Image]]], path: Path, scale: int = 2) -> None:
    """One row per label (input, each method's translation, the true drawing)."""
    from PIL import ImageDraw
    label_w, cell = 110, rows[0][1][0].width
    sheet = Image.new("RGB", (label_w + cell * len(rows[0][1]), cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, images) in enumerate(rows):
        draw.text((4, i * cell + cell // 2), label, fill="black", anchor="lm")
        for j, im in enumerate(images):
            sheet.paste(im.convert("RGB"), (label_w + j * cell, i * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST).save(path)


def choose(pairs: list[str], choice: dict, methods: list[str], seeds: int) -> str:
    """The validation choice over `pairs` (one kind: easy or shape) as a line ('' without pairs). `choice`:
    {pair: {method: [validation gain of each seed run]}}. Chosen: the best mean among the methods with all
    `seeds` on every pair. A method short of seeds is dropped early when, on some pair, its best seed is below
    the chosen one's worst (its other seeds are not worth their hours); until then the choice waits for it."""
    if not pairs:
        return ""
    gains = {m: {p: choice.get(p, {}).get(m, []) for p in pairs} for m in methods}
    done = [m for m in methods if all(len(g) == seeds for g in gains[m].values())]
    if not done:
        return f"Not chosen yet on {', '.join(pairs)}: a choice waits for every method's seeds on every pair."
    means = {m: statistics.mean(statistics.mean(g) for g in gains[m].values()) for m in done}
    best = max(means, key=means.get)
    dropped = [m for m in methods if m not in done and any(g and max(g) < min(gains[best][p]) for p, g in gains[m].items())]
    waiting = [m for m in methods if m not in done and m not in dropped]
    content = " and ".join(sorted({{"top1": "top-1", "shape": "shape retrieval"}[content_of(p)] for p in pairs}))
    others = ([f"dropped early, their best seed below {best}'s worst on a pair: {', '.join(dropped)}"] if dropped else []) + \
             ([f"not yet: {', '.join(waiting)}"] if waiting else [])
    return (f"Validation score on {', '.join(pairs)}, the mean relative gain over the input itself on L1, SSIM and "
            f"{content} (over pairs, directions and seeds; above 0 beats the input): "
            + ", ".join(f"{m} {v:.3f}" for m, v in means.items()) + f"; chosen: **{best}** (among the methods with "
            + "; ".join(["every seed"] + others) + ").")


# ---- main --------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glyphs", type=Path, help="examples/glyphs/prepare.py output")
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--digits", type=Path, help="examples/digits/prepare.py output")
    ap.add_argument("--minutes", type=float, default=5.0, help="CPU budget per glyph run (one thread)")
    ap.add_argument("--digits-minutes", type=float, default=3.0, help="CPU budget per digits run")
    ap.add_argument("--steps", type=int, default=None,
                    help="the same number of steps for every method instead of a CPU budget (tests)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--clf-steps", type=int, default=300, help="training steps of the digit classifiers and the glyph "
                    "pairs' style judges")
    ap.add_argument("--work", type=Path, default=Path("runs/benchmark"), help="run folders (large; not kept)")
    ap.add_argument("--results", type=Path, default=HERE / "results",
                    help="the budgets and one record of scores per finished run (small; kept in the repository)")
    ap.add_argument("--device", default="cpu",
                    help="where the runs train (cuda: the same step counts, many runs at once; the records say so)")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS),
                    help="the methods to train (default: each pair's; a method named here joins the easy pairs' "
                    "tables; the tables show the records of every method)")
    ap.add_argument("--no-train", action="store_true",
                    help="start no training: score the finished runs found in --work and draw the tables")
    ap.add_argument("--write", action="store_true", help="write the tables into the READMEs and draw the grid")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    machine = describe_machine(torch.device(args.device))
    say(f"machine: {machine}")

    jobs = []  # (data set, method, seed, data, domains, size, steps)
    budgets = {}

    saved = args.results / "budgets.json"  # measured once, so every part of the benchmark runs the same steps
    known = json.loads(saved.read_text()) if saved.is_file() else {}

    def budget(size: int, minutes: float) -> dict[str, tuple[int, float]]:
        """method -> (steps, seconds per step): equal CPU time, or --steps for all."""
        if args.steps:
            return {m: (args.steps, float("nan")) for m in METHODS}
        key = f"{size}px {minutes:g} min"
        if key not in known:
            known[key] = {"machine": describe_machine(),
                          **{m: (round(minutes * 60 / t), t) for m, t in seconds_per_step(size).items()}}
            write_record(saved, known)
        missing = [m for m in METHODS if timed_as(m) not in known[key]]
        if missing:  # methods added later: timed beside CycleGAN, in CycleGAN's recorded seconds
            t = seconds_per_step(size, names=["CycleGAN", *missing])
            scale = known[key]["CycleGAN"][1] / t.pop("CycleGAN")
            known[key].setdefault("added", []).append({"machine": describe_machine(), "methods": list(t),
                                                      "scaled by": scale})
            known[key].update({m: (round(minutes * 60 / (v * scale)), v * scale) for m, v in t.items()})
            write_record(saved, known)
        return {m: tuple(known[key][timed_as(m)]) for m in METHODS}

    if args.glyphs:
        size = Image.open(list_images(args.glyphs / args.pairs[0] / "test" / "sans")[0]).width
        budgets["glyphs"] = budget(size, args.minutes)
        for pair in args.pairs:
            for seed in range(args.seeds):  # seed-major: a benchmark cut short has every method's first seeds
                for name in methods_for(pair, args.methods):
                    jobs.append((pair, name, seed, args.glyphs / pair, PAIRS[pair], size, budgets["glyphs"][name][0]))
    if args.digits:
        budgets["digits"] = budget(32, args.digits_minutes)
        for seed in range(args.seeds):
            for name in methods_for("digits", args.methods):
                jobs.append(("digits", name, seed, args.digits / "train", DIGITS, 32, budgets["digits"][name][0]))
    for kind, b in budgets.items():
        say(f"{kind}: " + ", ".join(f"{m} {t:.3f} s/step -> {n} steps" for m, (n, t) in b.items()))

    sets = {pair: {split: glyph_sets(args.glyphs / pair, split, PAIRS[pair]) for split in ("test", "val")}
            for pair in (args.pairs if args.glyphs else [])}
    styles = {pair: train_judge(args.glyphs / pair, PAIRS[pair], args.work / f"judge-{pair}-{args.clf_steps}.safetensors",
                                args.clf_steps) for pair in sets}
    if args.digits:
        h, p = DIGITS
        judges = {}
        for d in DIGITS:
            out = args.work / f"classifier-{d}-{args.clf_steps}.safetensors"
            if not out.is_file():
                train_classifier(args.digits / "train" / d, out, steps=args.clf_steps, image_size=32, width=16, seed=0)
            judges[d] = load_classifier(out)
        tests = {d: list_images(args.digits / "test" / d) for d in DIGITS}
        x = {d: stack(tests[d]) for d in DIGITS}
        labels = {d: class_labels(args.digits / "test" / d, tests[d]) for d in DIGITS}
        ident = {f"{s}->{d}": classified_accuracy(judges[d], tests[s], labels[s]) for s, d in ((h, p), (p, h))}

    def score(label: str, model: Path) -> tuple[dict, dict]:
        if label != "digits":
            return glyph_scores(model, sets[label], styles[label])
        tr = imxlate.load(model, device="cpu")
        return {"test": {f"{s}->{d}": classified_accuracy(judges[d], translate_all(tr, x[s], d, s), labels[s])
                         for s, d in ((h, p), (p, h))}}, {}

    records, shown = {}, {}  # (label, method, seed) -> record; pair -> method -> seed-0 test translations

    def one(job):
        label, name, seed, data, domains, size, steps = job
        path = args.results / f"{run_name(label, name, steps, seed)}.json"
        out = run_dir(args.work, data if label != "digits" else args.digits, name, steps, seed)
        model = out / "model.safetensors"
        if path.is_file() and not (seed == 0 and model.is_file() and label in sets and args.write):
            records[job[:3]] = json.loads(path.read_text())
            return
        if not model.is_file():
            if args.no_train or (args.methods and name not in args.methods):
                return
            t0 = time.perf_counter()
            run(train_command(data, domains, size, name, steps, seed, out, args.device), out)
            say(f"{label} {name} seed {seed}: {steps} steps, {time.perf_counter() - t0:.0f} s wall")
        scores, fakes = score(label, model)
        if seed == 0:
            shown.setdefault(label, {})[name] = fakes
        if path.is_file():  # scored again for the grid only: the table keeps the record (a model trained again
            records[job[:3]] = json.loads(path.read_text())  # on another CPU scores otherwise)
            return
        records[job[:3]] = {"data": label, "method": name, "seed": seed, "steps": steps, "size": size,
                            "nets": nets_for(METHODS[name][1]), "options": METHODS[name][1], "machine": machine,
                            "imxlate": imxlate.__version__, "scores": scores}
        write_record(path, records[job[:3]])

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, jobs))
    say(f"{len(records)} of {len(jobs)} runs recorded in {args.results}")

    def seeds_of(label: str, name: str) -> list[dict]:
        return [records[(label, name, s)]["scores"] for s in range(args.seeds) if (label, name, s) in records]

    def shown_name(label: str, name: str) -> str:
        n = len(seeds_of(label, name))
        return name if n == args.seeds else f"{name} ({n} of {args.seeds} seeds)"

    def table_methods(label: str) -> list[str]:
        """The methods a table shows: the data set's own, then any other with records."""
        own = methods_for(label, args.methods)
        return own + [m for m in METHODS if m not in own and seeds_of(label, m)]

    blocks, choice = {}, {}
    budget_tag = f"{args.minutes:g}min"  # names this budget's README markers and grids
    for pair, split in sets.items():
        domains, methods = PAIRS[pair], table_methods(pair)
        directions = [domains, domains[::-1]]
        val_base = baselines(split["val"])["input itself"]
        scores = {shown_name(pair, m): [{tuple(k.split("->")): v for k, v in r["test"].items()} for r in seeds_of(pair, m)]
                  for m in methods}
        choice[pair] = {m: [statistics.mean(gain(r["val"][f"{s}->{d}"], val_base[(s, d)], content_of(pair))
                                            for s, d in directions) for r in seeds_of(pair, m)] for m in methods}
        steps = {shown_name(pair, m): budgets["glyphs"][m][0] for m in methods}
        base = baselines(split["test"], styles[pair], pair)
        blocks[pair] = glyph_table(pair, directions, scores, base, steps) + "\n\n" + beats_line(pair, directions, scores, base)
        drawn = [m for m in methods if m in shown.get(pair, {})]  # the methods whose seed-0 model is in --work
        if args.write and drawn:
            n = 10
            rows = []
            for a, b in (domains, domains[::-1]):
                inputs, _, targets = split["test"][(a, b)]
                rows += [(f"{a} (input)", inputs[:n])] + [(m, shown[pair][m][(a, b)][:n]) for m in drawn]
                rows += [(f"{b} (truth)", targets[:n])]
            draw_grid(rows, FIGURES / (f"glyphs_grid-{budget_tag}.png" if pair == "cjk" else
                                       f"glyphs_grid-{pair}-{budget_tag}.png"))
            if len(drawn) < len(methods):
                say(f"{pair} grid drawn with {len(drawn)} of {len(methods)} methods (the seed-0 models in {args.work})")

    if args.digits:
        lines = ["| method | steps | handwritten -> printed | printed -> handwritten |", "|---|---:|---:|---:|"]
        for name in table_methods("digits"):
            acc = seeds_of("digits", name)
            cells = [summary([r["test"][k] for r in acc], 3) if acc else "not run yet" for k in ident]
            lines.append(f"| {shown_name('digits', name)} | {budgets['digits'][name][0]} | " + " | ".join(cells) + " |")
        lines.append(f"| no translation (the input itself) | - | " + " | ".join(f"{v:.3f}" for v in ident.values()) + " |")
        blocks["digits"] = "\n".join(lines)

    note = (f"Budget per run: " + "; ".join(
        f"{kind} {args.minutes if kind == 'glyphs' else args.digits_minutes:g} min of one thread ("
        + ", ".join(f"{m} {t:.3f} s/step" for m, (n, t) in b.items()) + ")" for kind, b in budgets.items())
        + f"; {args.seeds} seeds (mean ± std). Machines: "
        + "; ".join(sorted({r["machine"] for r in records.values()})) + ".")
    for tag, block in blocks.items():
        say(f"\n{tag}\n{block}")
    kinds = {"easy": [p for p in sets if p not in SHAPE_PAIRS], "shape": [p for p in sets if p in SHAPE_PAIRS]}
    chosen = {kind: choose(pairs, choice, list(dict.fromkeys(m for p in pairs for m in methods_for(p, args.methods))),
                           args.seeds)
              for kind, pairs in kinds.items()}
    for kind, line in chosen.items():
        if line:
            say(line)
    say(note)
    if args.write:
        readme = HERE / "README.md"
        for pair in sets:
            write_between(readme, f"bench-{pair}-{budget_tag}", blocks[pair])
        for kind, line in chosen.items():
            if line:
                write_between(readme, f"bench-choice-{'shape-' if kind == 'shape' else ''}{budget_tag}", line + "\n\n" + note)
        if args.digits:
            write_between(HERE.parent / "digits" / "README.md", f"bench-contrastive-{args.digits_minutes:g}min",
                          blocks["digits"] + "\n\n" + note)


if __name__ == "__main__":
    main()
