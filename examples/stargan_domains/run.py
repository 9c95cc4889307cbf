"""One StarGAN for N digit styles against N(N-1)/2 pairwise CycleGANs, at an equal CPU budget.

    python examples/stargan_domains/prepare.py DATA/stargan_domains
    OMP_NUM_THREADS=1 nice -n 5 python examples/stargan_domains/run.py --data DATA/stargan_domains \\
        --minutes 1.5 --seeds 3 --jobs 2 --work runs/stargan_domains

DATA is what prepare.py writes (every style found under DATA/train is a domain). Budget, per seed: StarGAN gets
--minutes of one thread; each of the N(N-1)/2 CycleGANs (one per unordered pair of domains, both directions)
gets --minutes / (N(N-1)/2), so both methods spend the same CPU time. The CPU seconds per step of the two
families are measured first, interleaved in this process (medians of process time, so the load of other jobs
does not change the budget), and each run trains budget / (seconds per step) steps at a constant learning
rate. Both families use the same generator and discriminator sizes (ResNet generators with two down- and
up-samplings and 4 residual blocks; PatchGAN / StarGAN critics), one image per domain per step, no flips.
Runs go as `imxlate train` subprocesses, --jobs at a time, one thread each, and are kept under --work and
reused when the settings match.

Scores, for every ordered pair of domains (src -> dst), on the held-out test digits of src translated into dst:
- class kept: the share that a digit classifier (trained on the training digits of every domain) reads as the
  input's digit;
- target style: the share that a domain classifier (trained on the training images) reads as dst;
- both: the share that passes both;
beside the input itself (no translation). Mean +- std over seeds. Both judges' accuracy on the real val and
test images is printed with the table.

Writes the table between markers in --readme (default examples/stargan_domains/README.md) and draws --figure
(default examples/figures/stargan_domains.png). --quick is the test's form: tiny networks, one seed, a few steps,
under --work.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import itertools
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import imxlate
from imxlate.config import TrainConfig
from imxlate.data import list_images, load_rgb
from imxlate.device import describe_machine
from imxlate.evaluate import class_labels
from imxlate.families import build_family, family_class
from imxlate.classifier import classify, load_classifier, train_classifier

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
README = HERE / "README.md"
FIGURE = HERE.parent / "figures" / "stargan_domains.png"
TAG = "stargan-domains"
SIZE = 32
FULL = {"nets": {"ngf": 32, "ndf": 32, "n_blocks": 4}, "clf_steps": 300}
QUICK = {"nets": {"ngf": 4, "ndf": 4, "n_blocks": 1}, "clf_steps": 20}
FAMILIES = {"StarGAN": "stargan", "CycleGAN": "cyclegan"}
SHOWN_DIGITS = ("2", "4", "7", "9")  # the figure's inputs: the first test drawing of each, in every domain


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load("glyphs_benchmark", HERE.parent / "glyphs" / "benchmark.py")  # runs, tables, translation helpers
STYLES = _load("stargan_domains_prepare", HERE / "prepare.py").STYLES
say = bench.say


# ---- budget ------------------------------------------------------------------------------------------

def seconds_per_step(domains: list[str], nets: dict, repeats: int = 3, steps: int = 5) -> dict[str, float]:
    """Median CPU seconds (this process, one thread) of one training step, batch 1 per domain, of StarGAN over
    all `domains` and of a CycleGAN over two, interleaved. CPU time, not wall time, so that other jobs on the
    machine do not shrink the budget. `steps` is a multiple of StarGAN's 5 critic steps per generator step."""
    torch.manual_seed(0)
    fams, batches = {}, {}
    for name, family in FAMILIES.items():
        doms = domains if family == "stargan" else domains[:2]
        cls = family_class(family)
        cfg = cls.resolve_config(cls.Config(**nets), TrainConfig(crop_size=SIZE, load_size=SIZE)).__dict__
        fams[name] = build_family(family, cfg, doms, SIZE)
        fams[name].setup_training()
        batches[name] = {"images": {d: torch.rand(1, 3, SIZE, SIZE) * 2 - 1 for d in doms}, "labels": {}}
        fams[name].train_step(batches[name], 0)  # warm-up
    times = {name: [] for name in fams}
    for r in range(repeats):
        for name, fam in fams.items():
            t0 = time.process_time()
            for i in range(steps):
                fam.train_step(batches[name], 1 + r * steps + i)
            times[name].append((time.process_time() - t0) / steps)
    return {name: statistics.median(ts) for name, ts in times.items()}


def budget(work: Path, domains: list[str], nets: dict, minutes: float, quick: bool) -> dict[str, tuple[int, float]]:
    """family name -> (steps per run, seconds per step); measured once and kept in --work, so a rerun finds its runs."""
    saved = work / "budget.json"
    known = json.loads(saved.read_text()) if saved.is_file() else {}
    key = json.dumps([len(domains), nets, minutes])
    if key not in known:
        t = seconds_per_step(domains, nets, *((1, 5) if quick else (3, 5)))
        pairs = len(domains) * (len(domains) - 1) // 2
        known[key] = {"StarGAN": (max(1, round(minutes * 60 / t["StarGAN"])), t["StarGAN"]),
                      "CycleGAN": (max(1, round(minutes * 60 / pairs / t["CycleGAN"])), t["CycleGAN"])}
        saved.write_text(json.dumps(known, indent=1))
    return {name: tuple(v) for name, v in known[key].items()}


# ---- runs --------------------------------------------------------------------------------------------

def train_command(data: Path, domains, family: str, nets: dict, steps: int, seed: int, out: Path) -> list[str]:
    """`imxlate train` of one run: batch 1 per domain, 32 px, no flips, steps at a constant learning rate, the
    last weights written rather than an average (as the tables were made)."""
    return bench.budget_command(data / "train", domains, family, {**nets, "ema": 0}, SIZE, steps, seed, out)


def run_dir(work: Path, data: Path, family: str, domains, nets: dict, steps: int, seed: int) -> Path:
    key = json.dumps([str(data.resolve()), family, list(domains), nets, steps, seed])
    return work / f"{family}-{'-'.join(d.split('-')[0] for d in domains)}-seed{seed}-{steps}-" \
                  f"{hashlib.sha256(key.encode()).hexdigest()[:8]}"


# ---- judges ------------------------------------------------------------------------------------------

def judges(data: Path, domains: list[str], work: Path, steps: int) -> dict:
    """{"digit": classifier of the ten digits over all domains, "domain": classifier of the domains}, trained on
    the training images only (kept in --work)."""
    out = {}
    for kind, dirs in (("digit", [data / "train" / d for d in domains]), ("domain", [data / "train"])):
        key = json.dumps([str(data.resolve()), domains, steps])
        path = work / f"classifier-{kind}-{steps}-{hashlib.sha256(key.encode()).hexdigest()[:8]}.safetensors"
        if not path.is_file():
            train_classifier(dirs, path, steps=steps, image_size=SIZE, width=16, seed=0)
        out[kind] = load_classifier(path)
    return out


def real_accuracy(judge: dict, data: Path, split: str, domains: list[str]) -> dict[str, float]:
    """Accuracy of both judges on the real images of a split: digit over all domains, domain over all domains."""
    right, total = {"digit": 0, "domain": 0}, 0
    for d in domains:
        paths = list_images(data / split / d)
        images = [load_rgb(p) for p in paths]
        digits = class_labels(data / split / d, paths)
        right["digit"] += sum(p == t for p, t in zip(classify(judge["digit"], images), digits))
        right["domain"] += sum(p == d for p in classify(judge["domain"], images))
        total += len(paths)
    return {k: v / total for k, v in right.items()} | {"n": total}


def scores(judge: dict, images: list[Image.Image], digits: list[str], dst: str) -> dict[str, float]:
    """Shares (in %) of `images` read as their `digits`, as domain `dst`, and both."""
    kept = [p == t for p, t in zip(classify(judge["digit"], images), digits)]
    hit = [p == dst for p in classify(judge["domain"], images)]
    n = len(images)
    return {"class": 100 * sum(kept) / n, "style": 100 * sum(hit) / n,
            "both": 100 * sum(k and h for k, h in zip(kept, hit)) / n}


# ---- table and figure --------------------------------------------------------------------------------

def table(results: dict, baseline: dict, order: list) -> str:
    """Markdown: per ordered pair and their mean, class kept / target style / both for StarGAN, the pairwise
    CycleGANs (mean ± std over seeds) and the input itself."""
    head = ("| source -> target | class kept: StarGAN | CycleGANs | input | target style: StarGAN | CycleGANs | "
            "input | both: StarGAN | CycleGANs |")
    lines = [head, "|---|" + "---:|" * 8]
    seeds = len(results["StarGAN"])
    mean = {m: [{k: statistics.mean(r[p][k] for p in order) for k in ("class", "style", "both")} for r in results[m]]
            for m in results}
    base_mean = {k: statistics.mean(baseline[p][k] for p in order) for k in ("class", "style")}
    for label, per, base in [(f"{s} -> {d}", {m: [r[(s, d)] for r in results[m]] for m in results}, baseline[(s, d)])
                             for s, d in order] + [("**mean over pairs**", mean, base_mean)]:
        cells = []
        for k in ("class", "style", "both"):
            cells += [bench.summary([x[k] for x in per[m]], 1) for m in ("StarGAN", "CycleGAN")]
            if k != "both":
                cells.append(f"{base[k]:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Percent of the held-out test digits; mean ± std over {seeds} seed(s).")
    return "\n".join(lines)


def verdict(results: dict, order: list) -> str:
    """One sentence per measure: which method has the higher mean over pairs and seeds, and by how much."""
    words = {"class": ("keeps the digit", "keep the digit"),
             "style": ("reaches the target style", "reach the target style"), "both": ("does both", "do both")}
    parts = []
    for k, (what, plural) in words.items():
        m = {name: statistics.mean(r[p][k] for r in results[name] for p in order) for name in results}
        win, lose = sorted(m, key=m.get, reverse=True)
        if round(m[win], 1) == round(m[lose], 1):
            parts.append(f"both {plural} equally often ({m[win]:.1f}%)")
        else:
            parts.append(f"{'StarGAN ' + what if win == 'StarGAN' else 'the pairwise CycleGANs ' + plural} more often "
                         f"({m[win]:.1f}% against {m[lose]:.1f}%)")
    return "On average over the ordered pairs: " + "; ".join(parts) + "."


def figure(rows: list[tuple[str, list[Image.Image | None]]], header: list[str], path: Path, scale: int = 2) -> None:
    """A labelled grid: a header row of column names, then one row per label whose cells are strips of digits
    (None: an empty cell)."""
    label_w, head_h, gap = 150, 14, 6
    cell_w, cell_h = next(c for _, cells in rows for c in cells if c is not None).size
    sheet = Image.new("RGB", (label_w + len(header) * (cell_w + gap), head_h + len(rows) * (cell_h + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(header):
        draw.text((label_w + j * (cell_w + gap) + cell_w // 2, head_h // 2), name, fill="black", anchor="mm")
    for i, (label, cells) in enumerate(rows):
        y = head_h + i * (cell_h + 2)
        draw.text((4, y + cell_h // 2), label, fill="black", anchor="lm")
        for j, cell in enumerate(cells):
            if cell is not None:
                sheet.paste(cell, (label_w + j * (cell_w + gap), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST).save(tmp, format="PNG")
    tmp.replace(path)


def strip(images: list[Image.Image]) -> Image.Image:
    out = Image.new("RGB", (SIZE * len(images), SIZE), "white")
    for k, im in enumerate(images):
        out.paste(im, (k * SIZE, 0))
    return out


# ---- main --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="examples/stargan_domains/prepare.py output")
    ap.add_argument("--minutes", type=float, default=1.5,
                    help="CPU budget per seed and method (one thread): StarGAN's run, or all CycleGANs together")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--work", type=Path, default=Path("runs/stargan_domains"))
    ap.add_argument("--readme", type=Path, help=f"where the table goes (default {README.relative_to(ROOT)}; "
                                                "with --quick WORK/README.md)")
    ap.add_argument("--figure", type=Path, help=f"the grid (default {FIGURE.relative_to(ROOT)}; with --quick "
                                                "WORK/stargan_domains.png)")
    ap.add_argument("--quick", action="store_true", help="the test's form: tiny networks, 1 seed, a few steps")
    args = ap.parse_args(argv)
    preset = QUICK if args.quick else FULL
    if args.quick:
        args.seeds, args.minutes = 1, min(args.minutes, 0.01)
    readme = args.readme or (args.work / "README.md" if args.quick else README)
    grid = args.figure or (args.work / "stargan_domains.png" if args.quick else FIGURE)
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    domains = [d for d in STYLES if (args.data / "train" / d).is_dir()]
    if len(domains) < 3:
        sys.exit(f"error: {args.data / 'train'} holds {len(domains)} of the styles ({', '.join(STYLES)}); "
                 "a comparison across domains needs at least 3: run prepare.py")
    pairs = list(itertools.combinations(domains, 2))
    order = [(s, d) for s in domains for d in domains if s != d]
    nets = preset["nets"]
    say(f"machine: {describe_machine()}; domains: {', '.join(domains)}")

    steps = budget(args.work, domains, nets, args.minutes, args.quick)
    say(", ".join(f"{m} {t:.3f} CPU s/step -> {n} steps" for m, (n, t) in steps.items())
        + f" ({args.minutes:g} min per seed each; {len(pairs)} CycleGANs)")
    # Two StarGANs, then their seeds' CycleGANs, and so on: with two jobs at a time the workers stay balanced and
    # the first seeds finish first.
    jobs = []
    for first in range(0, args.seeds, 2):
        seeds = range(first, min(first + 2, args.seeds))
        jobs += [("StarGAN", tuple(domains), seed) for seed in seeds]
        jobs += [("CycleGAN", pair, seed) for seed in seeds for pair in pairs]

    def one(job):
        name, doms, seed = job
        n = steps[name][0]
        out = run_dir(args.work, args.data, FAMILIES[name], doms, nets, n, seed)
        t0, reused = time.perf_counter(), (out / "model.safetensors").is_file()
        model = bench.run(train_command(args.data, doms, FAMILIES[name], nets, n, seed, out), out)
        say(f"{name} {' '.join(doms)} seed {seed}: {n} steps, {time.perf_counter() - t0:.0f} s wall"
            + (" (reused)" if reused else ""))
        return job, model, reused

    with ThreadPoolExecutor(args.jobs) as pool:
        running = pool.map(one, jobs)
        judge = judges(args.data, domains, args.work, preset["clf_steps"])  # while the runs train
        accuracy = {split: real_accuracy(judge, args.data, split, domains) for split in ("val", "test")}
        say("judges on real images: " + "; ".join(f"{split} digit {a['digit']:.3f}, domain {a['domain']:.3f} "
                                                  f"({a['n']} images)" for split, a in accuracy.items()))
        if min(accuracy["val"]["digit"], accuracy["val"]["domain"]) < 0.95:
            say("warning: a judge reads under 95% of the real validation images correctly; the scores mean little")
        done = list(running)
    models = {job: model for job, model, _ in done}

    paths = {d: list_images(args.data / "test" / d) for d in domains}
    inputs = {d: [load_rgb(p) for p in paths[d]] for d in domains}
    x = {d: bench.stack(paths[d]) for d in domains}
    labels = {d: class_labels(args.data / "test" / d, paths[d]) for d in domains}
    baseline = {(s, d): scores(judge, inputs[s], labels[s], d) for s, d in order}
    results = {"StarGAN": [], "CycleGAN": []}
    shown = {}  # (method, src, dst) -> seed-0 translations of the figure's inputs
    pick = {d: [labels[d].index(c) for c in SHOWN_DIGITS if c in labels[d]] for d in domains}
    for seed in range(args.seeds):
        star = imxlate.load(models[("StarGAN", tuple(domains), seed)], device="cpu")
        cycles = {pair: imxlate.load(models[("CycleGAN", pair, seed)], device="cpu") for pair in pairs}
        for name in results:
            per_pair = {}
            for s, d in order:
                tr = star if name == "StarGAN" else cycles[tuple(p for p in domains if p in (s, d))]
                fakes = bench.translate_all(tr, x[s], d, s)
                per_pair[(s, d)] = scores(judge, fakes, labels[s], d)
                if seed == 0:
                    shown[(name, s, d)] = [fakes[i] for i in pick[s]]
            results[name].append(per_pair)
        if seed == 0:
            for s in domains:
                shown[("StarGAN", s, s)] = bench.translate_all(star, x[s][pick[s]], s, None)
        say(f"seed {seed}: " + "; ".join(
            f"{name} class kept {statistics.mean(r[-1][p]['class'] for p in order):.1f}%, "
            f"target style {statistics.mean(r[-1][p]['style'] for p in order):.1f}%" for name, r in results.items()))

    block = "\n\n".join([
        table(results, baseline, order),
        verdict(results, order),
        "Judges' accuracy on real images (trained on the training images only; digit judge over all domains, "
        "domain judge over the domains): " + "; ".join(
            f"{split} digits {100 * a['digit']:.1f}%, domains {100 * a['domain']:.1f}% ({a['n']} images)"
            for split, a in accuracy.items()) + ".",
        f"Budget per seed and method: {args.minutes:g} min of CPU time on one thread. "
        f"StarGAN: {steps['StarGAN'][0]} steps "
        f"({steps['StarGAN'][1]:.3f} CPU s/step); each of the {len(pairs)} CycleGANs: {steps['CycleGAN'][0]} steps "
        f"({steps['CycleGAN'][1]:.3f} CPU s/step). Networks: {json.dumps(nets)}; batch 1 per domain; {args.seeds} "
        f"seed(s). Machine: {describe_machine()}. "
        f"Wall time of this invocation {(time.perf_counter() - start) / 60:.1f} "
        f"min with {args.jobs} job(s) at a time; {sum(r for *_, r in done)} of {len(done)} runs reused from an "
        "earlier one."])
    say("\n" + block)
    bench.write_between(readme, TAG, block)

    rows = []
    for s in domains:
        src = strip([inputs[s][i] for i in pick[s]])
        for name, label in (("StarGAN", "StarGAN"), ("CycleGAN", "CycleGANs")):
            rows.append((f"{s}: {label}", [src] + [strip(shown[(name, s, d)]) if (name, s, d) in shown else None
                                                    for d in domains]))
    figure(rows, ["input"] + [f"-> {d}" for d in domains], grid)
    say(f"wrote {readme} and {grid}")


if __name__ == "__main__":
    main()
