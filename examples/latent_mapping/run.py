"""The latent-mapping experiments on the digit benchmark (examples/digits), offline, on CPU.

--experiment classes (the default):
(a) handwritten 0-4 -> handwritten 5-9 with the map i -> i+5 (the paper's MNIST -> MNIST setting);
(b) handwritten -> printed digits with the identity map (the analogue of its SVHN -> MNIST), beside
    CycleGAN and shared-latent given the same CPU time per run.
A classifier trained on the target domain scores each model: the share of translated test images it
assigns to the mapped class, over 3 seeds. Writes a table (printed, and results.json) and picture grids.

--experiment diversity: several samples per input. Setting (a), and (c) the same digits with two allowed
targets per digit (i -> i+5 and i -> (i+1 mod 5)+5), each trained with the noise regulariser at 0.01 (the
family's default, chosen by --experiment sweep) and at 1 (the default for a while). For each held-out input, K
noise draws: their mean pairwise L1 distance, the share of the input's allowed target classes they reach, and
the share kept in an allowed class (a classifier of handwritten 5-9 judges), against K real held-out targets.
Writes the table between the diversity markers of --readme, diversity.json and figures/diversity.png.

--experiment sweep: chooses that weight without the test split. Holds out the last --val-per-class training
images of each handwritten 0-4 class as validation inputs, trains (c) without them at each weight of SWEEP,
scores the samples of the validation inputs as above and picks a weight by a rule fixed in advance
(choose_weight). Writes the table between the sweep markers of --readme and sweep.json.

Usage: python examples/latent_mapping/run.py --data data/digits [--experiment classes|diversity|sweep]
       [--work runs/latent_mapping_example] [--figures examples/latent_mapping/figures] [--seeds 0 1 2]
       [--jobs 2] [--quick]; diversity also [--settings a c] [--samples 8] [--readme FILE] [--tiny];
       sweep also [--samples 8] [--val-per-class 20] [--readme FILE] [--tiny]
Run with OMP_NUM_THREADS=1: each training is a separate `imxlate train` process, --jobs of them at once.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import save_image

from imxlate.data import list_images, load_rgb, to_tensor
from imxlate.families import REGISTRY, load_model
from imxlate.families.latent_mapping import LatentMappingConfig
from imxlate.classifier import load_classifier, train_classifier as train_judge
from imxlate.translate import Translator

HERE = Path(__file__).resolve().parent
COMMON = ["--crop-size", "32", "--load-size", "32", "--no-flip", "--workers", "0", "--quiet",
          "--sample-every", "1000000", "--save-every", "1000000"]
MAP_A = {str(i): str(i + 5) for i in range(5)}
MAP_B = {str(i): str(i) for i in range(10)}


def latent_mapping_args(steps, noise_reg: str = "0.01") -> list[str]:
    """The latent-mapping options of a run. The noise regulariser's weight is pinned (0.01, the family's
    default) so that the tables reproduce whatever the default becomes."""
    return ["--model", "latent-mapping", "--vae-steps", str(steps[0]), "--steps", str(steps[1]),
            "--noise-reg", noise_reg]


# Steps per run, chosen so each run of (b) spends about the same CPU time, ~150 s on one thread (measured:
# latent-mapping 0.21 s per VAE step and 0.10 s per mapping step at batch 64, CycleGAN and shared-latent
# 0.17 s per step at batch 4, ~6 s to start); the table prints the CPU seconds each run really took. The
# learning rate stays constant over the steps (--epochs-decay 0), and CycleGAN writes its last weights, not
# an average (--ema 0), as the tables were made.
MODELS = {
    "latent-mapping": latent_mapping_args,
    "cyclegan": lambda s: ["--model", "cyclegan", "--ngf", "16", "--ndf", "16", "--n-blocks", "3",
                           "--batch-size", "4", "--steps", str(s[0]), "--epochs-decay", "0", "--ema", "0"],
    "shared-latent": lambda s: ["--model", "shared-latent", "--ngf", "16", "--ndf", "16", "--n-blocks", "2",
                                "--batch-size", "4", "--steps", str(s[0]), "--epochs-decay", "0"],
}
STEPS = {"latent-mapping": (300, 850), "cyclegan": (850,), "shared-latent": (850,)}


# ---- data ----------------------------------------------------------------------------------------

def load_classes(root: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of root/<class>/ for each class -> ((N,3,32,32) in [-1,1], (N,) index into `classes`)."""
    xs, ys = [], []
    for i, c in enumerate(classes):
        paths = list_images(root / c)
        xs += [to_tensor(load_rgb(p).resize((32, 32))) for p in paths]
        ys += [i] * len(paths)
    return torch.stack(xs), torch.tensor(ys)


def setting_a_data(data: Path, work: Path) -> Path:
    """A data root with domains digits0to4 and digits5to9: copies of the handwritten class folders."""
    root = work / "data_a"
    for domain, digits in (("digits0to4", "01234"), ("digits5to9", "56789")):
        for d in digits:
            if not (root / domain / d).is_dir():
                shutil.copytree(data / "train" / "handwritten" / d, root / domain / d)
    return root


# ---- the judge: a small CNN trained on the target domain (swappable for `imxlate train-classifier`) ----

class SmallCNN(nn.Module):
    """(B,3,32,32) -> (B, n) logits: three conv-BN-ReLU-maxpool blocks (32, 64, 128) and a linear layer."""

    def __init__(self, n: int):
        super().__init__()
        blocks, c_in = [], 3
        for c in (32, 64, 128):
            blocks += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(True), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.head = nn.Linear(128 * 4 * 4, n)

    def forward(self, x):
        return self.head(self.features(x))


def shift(x: torch.Tensor, g: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Random translations of up to `pixels` (white padding), for a judge that does not need exact centring."""
    padded = F.pad(x, [pixels] * 4, value=1.0)
    out = torch.empty_like(x)
    for i in range(len(x)):
        dx, dy = (int(v) for v in torch.randint(0, 2 * pixels + 1, (2,), generator=g))
        out[i] = padded[i, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]
    return out


def train_classifier(x: torch.Tensor, y: torch.Tensor, n: int, epochs: int = 15, seed: int = 0) -> SmallCNN:
    """Adam 1e-3, batch 64, shifted copies; returns the network in eval mode."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = SmallCNN(n)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(net(shift(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([net(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])


# ---- training runs -----------------------------------------------------------------------------------

def train_run(args: list[str], out: Path) -> float:
    """Run `imxlate train ... --out out` as its own process -> its CPU seconds (user + system)."""
    if (out / "model.safetensors").exists():
        return json.loads((out / "cpu_seconds.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "imxlate", "train", *args, "--out", str(out)],
                                stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({out}.log):\n{Path(f'{out}.log').read_text()[-2000:]}")
    cpu = round(usage.ru_utime + usage.ru_stime, 1)
    (out / "cpu_seconds.json").write_text(json.dumps(cpu))
    return cpu


def plan_runs(data: Path, data_a: Path, work: Path, seeds: list[int], models: list[str], scale: float) -> list[dict]:
    """Every training run of the experiment: setting, model, seed, command arguments, output folder."""
    runs = []
    for seed in seeds:
        specs = [("a", "latent-mapping", data_a, ["digits0to4", "digits5to9"], MAP_A)]
        specs += [("b", m, data, ["handwritten", "printed"], MAP_B) for m in models]
        for setting, model, root, domains, cmap in specs:
            steps = [max(1, round(s * scale)) for s in STEPS[model]]
            args = ["--domains", *domains, "--data", str(root), "--seed", str(seed), *COMMON, *MODELS[model](steps)]
            if model == "latent-mapping":
                args += ["--class-map", ",".join(f"{k}:{v}" for k, v in cmap.items())]
            runs.append({"setting": setting, "model": model, "seed": seed, "steps": "+".join(map(str, steps)),
                         "args": args, "out": work / "runs" / f"{setting}_{model}_seed{seed}"})
    return runs


# ---- scoring, table, figures ----------------------------------------------------------------------------

def translate_all(model: Path, x: torch.Tensor, to: str, seed: int) -> torch.Tensor:
    """Translate a batch of test images with a model file (noise seeded for stochastic families)."""
    tr = Translator.open(model, device="cpu")
    return torch.cat([tr.translate(x[i:i + 256], to=to, seed=seed + i) for i in range(0, len(x), 256)])


def score(judge: nn.Module, images: torch.Tensor, target: torch.Tensor) -> float:
    """Share of `images` the judge assigns to their mapped class."""
    return round(float((predict(judge, images) == target).float().mean()), 3)


def table(rows: list[dict], seeds: list[int], judges: dict) -> str:
    """The results as fixed-width text: one row per (setting, model), a column per seed, mean and sd."""
    lines = [f"{'setting':<28}{'model':<16}{'steps':>9}{'CPU s/run':>11}"
             + "".join(f"{'seed ' + str(s):>9}" for s in seeds) + f"{'mean':>9}{'sd':>7}"]
    for r in rows:
        start = f"{r['label']:<28}{r['model']:<16}{r['steps']:>9}"
        if r.get("note"):
            lines.append(f"{start}   {r['note']}")
            continue
        vals = r["scores"]
        cpu = f"{statistics.mean(r['cpu']):.0f}" if r["cpu"] else "-"
        per_seed = "".join(f"{v:>9.3f}" for v in vals) if r["cpu"] else " " * 9 * len(seeds)  # model rows
        sd = f"{statistics.stdev(vals):>7.3f}" if len(vals) > 1 else f"{'-':>7}"
        lines.append(f"{start}{cpu:>11}{per_seed}{statistics.mean(vals):>9.3f}{sd}")
    lines.append("judges (accuracy on the target test split): " + ", ".join(f"{k} {v:.3f}" for k, v in judges.items()))
    return "\n".join(lines)


def grid(path: Path, columns: list[torch.Tensor]) -> None:
    """One row per input: the input, then each column's image; upscaled x2 for viewing."""
    tiles = torch.stack(columns, 1).flatten(0, 1)  # (rows*cols, 3, 32, 32), row-major
    tiles = F.interpolate(tiles, scale_factor=2, mode="nearest")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(tiles, path, nrow=len(columns), normalize=True, value_range=(-1, 1), pad_value=1.0)


# ---- several samples per input (--experiment diversity) -------------------------------------------------

MAP_TWO = {str(i): [str(i + 5), str((i + 1) % 5 + 5)] for i in range(5)}  # 0 -> 5 or 6, ..., 4 -> 9 or 5
DIV_SETTINGS = {"a": ("(a) 0-4 -> 5-9, one target", {k: [v] for k, v in MAP_A.items()}),
                "c": ("(c) 0-4 -> 5-9, two targets", MAP_TWO)}
# The objectives compared: run-name suffix -> (--noise-reg, label). The first one's (a) runs are the classes
# experiment's (a) runs (same arguments and folder), so running both experiments trains them once. The label
# says which is the family's default (chosen on validation inputs by --experiment sweep).
NOW = f"{LatentMappingConfig().noise_reg:g}"
OBJECTIVES = {suffix: (w, f"G, noise-reg {w}" + (" (the default)" if w == NOW else ""))
              for suffix, w in (("", "0.01"), ("-noise-reg-1", "1"))}
TINY = ["--nf", "4", "--z-dim", "4", "--hidden", "8", "--layers", "1", "--batch-size", "4"]  # the test's form


def plan_diversity_runs(data_a: Path, work: Path, seeds: list[int], settings: list[str], scale: float,
                        tiny: bool) -> list[dict]:
    """Every training run of the diversity experiment: setting, objective, seed, arguments, output folder."""
    steps = [max(1, round(s * scale)) for s in STEPS["latent-mapping"]]
    runs = []
    for seed, setting, (suffix, (reg, label)) in itertools.product(seeds, settings, OBJECTIVES.items()):
        cmap = DIV_SETTINGS[setting][1]
        args = ["--domains", "digits0to4", "digits5to9", "--data", str(data_a), "--seed", str(seed), *COMMON,
                *latent_mapping_args(steps, reg),
                "--class-map", ",".join(f"{k}:{v}" for k, vs in cmap.items() for v in vs), *(TINY if tiny else [])]
        runs.append({"setting": setting, "objective": label, "seed": seed, "args": args,
                     "out": work / "runs" / f"{setting}_latent-mapping{suffix}_seed{seed}"})
    return runs


def pairwise_l1(s: torch.Tensor) -> torch.Tensor:
    """(N,K,3,H,W) in [-1,1] -> (N,): mean absolute difference (0-1 units) over the K(K-1)/2 pairs of each row."""
    k = s.shape[1]
    return torch.stack([(s[:, i] - s[:, j]).abs().mean((1, 2, 3)) / 2
                        for i, j in itertools.combinations(range(k), 2)], 1).mean(1)


def diversity_scores(images: torch.Tensor, allowed: list[set[int]], judge: nn.Module) -> dict[str, float]:
    """K images per input (N,K,3,H,W) and each input's allowed target classes -> mean pairwise L1, the share of
    allowed classes reached (distinct judged classes among the K, over min(K, allowed)) and the share kept."""
    n, k = images.shape[:2]
    pred = predict(judge, images.flatten(0, 1)).view(n, k).tolist()
    kept = sum(p in allowed[i] for i in range(n) for p in pred[i]) / (n * k)
    reached = sum(len(set(pred[i]) & allowed[i]) / min(k, len(allowed[i])) for i in range(n)) / n
    return {"pairwise": float(pairwise_l1(images).mean()), "reached": reached, "kept": kept}


def real_draws(y_target: torch.Tensor, allowed: list[set[int]], k: int, seed: int = 0) -> torch.Tensor:
    """(N,k) indices of held-out target images: k different ones per input from its allowed classes (with
    replacement only where there are fewer than k)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for classes in allowed:
        pool = torch.cat([(y_target == c).nonzero()[:, 0] for c in sorted(classes)])
        if len(pool) >= k:
            rows.append(pool[torch.randperm(len(pool), generator=g)[:k]])
        else:
            rows.append(pool[torch.randint(len(pool), (k,), generator=g)])
    return torch.stack(rows)


def noise_samples(model: Path, x: torch.Tensor, k: int) -> torch.Tensor:
    """(N,3,H,W) -> (N,k,3,H,W): k translations to digits5to9 with noise seeds 1000, 2000, ..."""
    return torch.stack([translate_all(model, x, "digits5to9", 1000 * (j + 1)) for j in range(k)], 1)


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def diversity_table(rows: list[dict], k: int) -> str:
    """Markdown: one row per (setting, source of the K samples); mean ± sd over seeds."""
    lines = [f"| setting | {k} samples per input from | pairwise L1 | allowed classes reached | class kept "
             "| CPU s/run |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        reached = mean_sd(r["reached"]) if r["several"] else "-"
        cpu = f"{statistics.mean(r['cpu']):.0f}" if r.get("cpu") else "-"
        lines.append(f"| {r['label']} | {r['source']} | {mean_sd(r['pairwise'])} | {reached} | {mean_sd(r['kept'])} "
                     f"| {cpu} |")
    return "\n".join(lines)


def tiles(images: torch.Tensor, size: int = 64) -> Image.Image:
    """(n,3,H,W) in [-1,1] -> one row of n tiles of size x size, white between them."""
    row = Image.new("RGB", (len(images) * (size + 2), size), "white")
    for i, t in enumerate(images):
        arr = ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        row.paste(Image.fromarray(arr).resize((size, size), Image.NEAREST), (i * (size + 2), 0))
    return row


def diversity_figure(path: Path, panels: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]],
                     labels: list[str]) -> None:
    """Per panel (title, inputs (n,3,H,W), before (n,K,...), after (n,K,...)): rows of input | K | K."""
    size, gap, head = 64, 24, 20
    k = panels[0][2].shape[1]
    width = size + 2 + 2 * gap + 2 * k * (size + 2)
    height = sum(head * 2 + len(p[1]) * (size + 2) + gap for p in panels)
    fig = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(fig)
    y = 0
    for title, x, before, after in panels:
        draw.text((0, y + 2), title, fill="black")
        x0 = [0, size + 2 + gap, size + 2 + 2 * gap + k * (size + 2)]
        for col, text in zip(x0, ["input", *labels]):
            draw.text((col, y + head + 2), text, fill="black")
        y += 2 * head
        for i in range(len(x)):
            fig.paste(tiles(x[i:i + 1]), (x0[0], y))
            fig.paste(tiles(before[i]), (x0[1], y))
            fig.paste(tiles(after[i]), (x0[2], y))
            y += size + 2
        y += gap
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.convert("L").save(path, optimize=True)  # digits are grey: a third of the bytes


def write_readme(readme: Path, block: str, name: str = "diversity") -> None:
    """Replace what lies between the `name` markers of `readme` with `block`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no '{start}' ... '{end}' markers; add them where the table belongs")
    tmp = readme.with_name(readme.name + ".tmp")
    tmp.write_text(re.sub(f"{start}.*{end}", lambda _: f"{start}\n{block}\n{end}", text, flags=re.S))
    tmp.replace(readme)


def diversity_judge(work: Path, data_a: Path, scale: float) -> nn.Module:
    """The judge: a classifier of handwritten 5-9 (imxlate's own), trained on the training split."""
    steps = max(1, round(400 * scale))
    judge_file = work / f"judge-digits5to9-{steps}.safetensors"
    if not judge_file.exists():
        train_judge(data_a / "digits5to9", judge_file, steps=steps, image_size=32, width=16, seed=0)
    return load_classifier(judge_file)[0]


def train_all(runs: list[dict], jobs: int) -> None:
    """Train every run (--jobs at once, each its own process; finished ones are reused) and note its CPU s."""
    print(f"{len(runs)} training runs, {jobs} at a time ...", flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        for run, cpu in zip(runs, pool.map(lambda r: train_run(r["args"], r["out"]), runs)):
            run["cpu"] = cpu
            print(f"  {run['out'].name}: {cpu:.0f} CPU s", flush=True)


# ---- choosing the noise regulariser's weight on validation inputs (--experiment sweep) ------------------

SWEEP = ("0.01", "0.1", "1", "3")  # the weights tried
KEPT_SLACK = 0.02  # the rule, fixed before the sweep ran: see choose_weight


def validation_split(data: Path, work: Path, per_class: int) -> tuple[Path, dict[str, list[Path]]]:
    """Hold out the last `per_class` training images (in name order) of each handwritten 0-4 class ->
    (a data root like setting_a_data's without them, {class: the held-out images})."""
    root, held = work / f"data_val{per_class}", {}
    for d in "01234":
        paths = list_images(data / "train" / "handwritten" / d)
        if len(paths) <= per_class:
            raise SystemExit(f"--val-per-class {per_class}: class {d} has only {len(paths)} training images")
        held[d] = paths[-per_class:]
        folder = root / "digits0to4" / d
        if not folder.is_dir():
            tmp = folder.with_name(d + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for p in paths[:-per_class]:
                shutil.copy2(p, tmp / p.name)
            tmp.replace(folder)
    for d in "56789":
        if not (root / "digits5to9" / d).is_dir():
            shutil.copytree(data / "train" / "handwritten" / d, root / "digits5to9" / d)
    return root, held


def choose_weight(rows: list[dict]) -> str:
    """The rule: among the weights whose class kept (mean over seeds) is within KEPT_SLACK of the best one's,
    the one whose samples spread most (largest mean pairwise L1)."""
    kept = {r["weight"]: statistics.mean(r["kept"]) for r in rows}
    fair = [r for r in rows if kept[r["weight"]] >= max(kept.values()) - KEPT_SLACK]
    return max(fair, key=lambda r: statistics.mean(r["pairwise"]))["weight"]


def sweep(a: argparse.Namespace, data_a: Path, scale: float) -> None:
    """Train setting (c) at each weight of SWEEP without the validation images, score the K samples of each
    validation input, pick a weight by choose_weight; the table goes between the README's sweep markers."""
    root, held = validation_split(a.data, a.work, a.val_per_class)
    steps = [max(1, round(s * scale)) for s in STEPS["latent-mapping"]]
    cmap = DIV_SETTINGS["c"][1]
    runs = []
    for weight, seed in itertools.product(SWEEP, a.seeds):
        args = ["--domains", "digits0to4", "digits5to9", "--data", str(root), "--seed", str(seed), *COMMON,
                *latent_mapping_args(steps, weight),
                "--class-map", ",".join(f"{k}:{v}" for k, vs in cmap.items() for v in vs), *(TINY if a.tiny else [])]
        runs.append({"weight": weight, "seed": seed, "args": args,
                     "out": a.work / "runs" / f"sweep{a.val_per_class}_c_noise-reg-{weight}_seed{seed}"})
    train_all(runs, a.jobs)

    judge = diversity_judge(a.work, data_a, scale)
    x = torch.stack([to_tensor(load_rgb(p).resize((32, 32))) for d in "01234" for p in held[d]])
    allowed = [{int(t) - 5 for t in cmap[d]} for d in "01234" for _ in held[d]]
    rows, k = [], a.samples
    for weight in SWEEP:
        mine = [r for r in runs if r["weight"] == weight]
        row = {"weight": weight, "cpu": [r["cpu"] for r in mine]}
        for r in mine:
            samples = noise_samples(r["out"] / "model.safetensors", x, k)
            for m, v in diversity_scores(samples, allowed, judge).items():
                row.setdefault(m, []).append(v)
        rows.append(row)
    pick = choose_weight(rows)

    lines = ["| --noise-reg | pairwise L1 | allowed classes reached | class kept | CPU s/run |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        w = f"**{r['weight']}** (picked)" if r["weight"] == pick else r["weight"]
        lines.append(f"| {w} | {mean_sd(r['pairwise'])} | {mean_sd(r['reached'])} | {mean_sd(r['kept'])} "
                     f"| {statistics.mean(r['cpu']):.0f} |")
    smoke = f" (--{'tiny' if a.tiny else 'quick'}: a smoke test, not a result)" if a.tiny or a.quick else ""
    seeds = f"seeds {', '.join(map(str, a.seeds))} (mean ± sd)" if len(a.seeds) > 1 else f"seed {a.seeds[0]}"
    table_text = "\n".join(lines)
    block = (f"{table_text}\n\n*Setting (c); {len(x)} validation inputs ({a.val_per_class} per class, held "
             f"out of the training split), K = {k} noise draws each; {seeds}; {'+'.join(map(str, steps))} steps "
             f"per run{smoke}. The rule picks {pick}; the family's default is {NOW}.*")
    print(block)
    (a.work / "sweep.json").write_text(json.dumps({"rows": rows, "picked": pick, "seeds": a.seeds, "samples": k,
                                                   "val_per_class": a.val_per_class}, indent=1, default=str))
    write_readme(a.readme, block, "sweep")
    print(f"table written into {a.readme}")


def diversity(a: argparse.Namespace, data_a: Path, scale: float) -> None:
    """Train, measure and write the several-samples experiment (see the module docstring)."""
    runs = plan_diversity_runs(data_a, a.work, a.seeds, a.settings, scale, a.tiny)
    train_all(runs, a.jobs)

    judge = diversity_judge(a.work, data_a, scale)
    x, y = load_classes(a.data / "test" / "handwritten", list("01234"))
    xt, yt = load_classes(a.data / "test" / "handwritten", list("56789"))
    judge_acc = float((predict(judge, xt) == yt).float().mean())

    rows, panels, k = [], [], a.samples
    for setting in a.settings:
        label, cmap = DIV_SETTINGS[setting]
        allowed = [{int(d) - 5 for d in cmap[str(int(c))]} for c in y]  # judge indices of each input's targets
        several = any(len(s) > 1 for s in allowed)
        draws = real_draws(yt, allowed, k)
        real = diversity_scores(xt[draws], allowed, judge)
        rows.append({"label": label, "source": "real held-out targets", "several": several,
                     **{m: [v] for m, v in real.items()}})
        through = {"label": label, "source": "the same, through the VAE", "several": several}
        for suffix, (_, source) in OBJECTIVES.items():
            mine = [r for r in runs if r["setting"] == setting and r["objective"] == source]
            row = {"label": label, "source": source, "several": several, "cpu": [r["cpu"] for r in mine]}
            for r in mine:
                model = r["out"] / "model.safetensors"
                samples = noise_samples(model, x, k)
                for m, v in diversity_scores(samples, allowed, judge).items():
                    row.setdefault(m, []).append(v)
                if suffix == "":  # the VAEs are the same for both objectives of a seed (stage 1 ignores the map)
                    vae = load_model(model).nets["VAE_b"]
                    with torch.inference_mode():
                        recon = vae.decode(vae.encode(xt)[0])
                    for m, v in diversity_scores(recon[draws], allowed, judge).items():
                        through.setdefault(m, []).append(v)
                if r["seed"] == a.seeds[0]:
                    pick = torch.cat([(y == c).nonzero()[:1, 0] for c in y.unique()])
                    if suffix == "":
                        title = f"{label}: " + ", ".join(f"{c} -> {' or '.join(ts)}" for c, ts in cmap.items())
                        panels.append([title, x[pick], samples[pick]])
                    else:
                        panels[-1].append(samples[pick])
            rows.append(row)
        rows.insert(-2, through)

    table = diversity_table(rows, k)
    steps_run = "+".join(str(max(1, round(s * scale))) for s in STEPS["latent-mapping"])
    smoke = f" (--{'tiny' if a.tiny else 'quick'}: a smoke test, not a result)" if a.tiny or a.quick else ""
    seeds = f"seeds {', '.join(map(str, a.seeds))} (mean ± sd)" if len(a.seeds) > 1 else f"seed {a.seeds[0]}"
    block = (f"{table}\n\n*{len(x)} held-out handwritten 0-4, K = {k} noise draws each; {seeds}; "
             f"{steps_run} steps per run{smoke}. "
             f"Judge: imxlate's classifier of handwritten 5-9, accuracy {judge_acc:.3f} on the test split.*")
    print(block)
    (a.work / "diversity.json").write_text(json.dumps({"rows": rows, "judge_accuracy": judge_acc, "seeds": a.seeds,
                                                       "samples": k, "steps": steps_run}, indent=1))
    write_readme(a.readme, block)
    diversity_figure(a.figures / "diversity.png", panels,
                     [f"{label[3:]}: {k} samples" for _, label in OBJECTIVES.values()])
    print(f"table written into {a.readme}; figure {a.figures / 'diversity.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/digits"), help="output of examples/digits/prepare.py")
    ap.add_argument("--work", type=Path, default=Path("runs/latent_mapping_example"), help="runs and results")
    ap.add_argument("--figures", type=Path, default=HERE / "figures", help="where the picture grids go")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="training processes at once")
    ap.add_argument("--quick", action="store_true", help="a tenth of the steps (a smoke test, not the result)")
    ap.add_argument("--experiment", choices=("classes", "diversity", "sweep"), default="classes",
                    help="classes: (a) and (b) scored by class; diversity: several samples per input; "
                         "sweep: the noise regulariser's weight chosen on validation inputs")
    ap.add_argument("--val-per-class", type=int, default=20,
                    help="sweep: training images per class of handwritten 0-4 held out as validation inputs")
    ap.add_argument("--samples", type=int, default=8, help="diversity: noise draws per input (K)")
    ap.add_argument("--settings", nargs="+", choices=sorted(DIV_SETTINGS), default=sorted(DIV_SETTINGS),
                    help="diversity: (a) one target per digit, (c) two")
    ap.add_argument("--readme", type=Path, default=HERE / "README.md",
                    help="diversity: the README whose markers get the table")
    ap.add_argument("--tiny", action="store_true", help="diversity: tiny networks and a few steps (the test's form)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    if not (a.data / "train" / "handwritten").is_dir():
        raise SystemExit(f"no digit benchmark at {a.data}; make it with examples/digits/prepare.py {a.data}")
    models = [m for m in ("latent-mapping", "cyclegan", "shared-latent") if m in REGISTRY]
    missing = [m for m in ("cyclegan", "shared-latent") if m not in models]
    data_a = setting_a_data(a.data, a.work)
    if a.experiment in ("diversity", "sweep"):
        (diversity if a.experiment == "diversity" else sweep)(a, data_a, 0.007 if a.tiny else 0.1 if a.quick else 1.0)
        print(f"total {time.perf_counter() - t0:.0f} s wall")
        return

    runs = plan_runs(a.data, data_a, a.work, a.seeds, models, 0.1 if a.quick else 1.0)
    print(f"{len(runs)} training runs, {a.jobs} at a time ...", flush=True)
    with ThreadPoolExecutor(a.jobs) as pool:
        for run, cpu in zip(runs, pool.map(lambda r: train_run(r["args"], r["out"]), runs)):
            run["cpu"] = cpu
            print(f"  {run['out'].name}: {cpu:.0f} CPU s", flush=True)

    # Judges: trained on each target domain's training split, checked on its test split.
    judges, acc, inputs = {}, {}, {}
    digits = list("0123456789")
    for setting, domain, classes, src_classes, cmap in (("a", "handwritten", digits[5:], digits[:5], MAP_A),
                                                        ("b", "printed", digits, digits, MAP_B)):
        judges[setting] = train_classifier(*load_classes(a.data / "train" / domain, classes), len(classes))
        acc[f"({setting}) {domain} {classes[0]}-{classes[-1]}"] = score(
            judges[setting], *load_classes(a.data / "test" / domain, classes))
        x, y = load_classes(a.data / "test" / "handwritten", src_classes)  # the source is handwritten in both
        target = torch.tensor([classes.index(cmap[src_classes[i]]) for i in y])
        inputs[setting] = (x, y, target)

    labels = {"a": "(a) handwritten 0-4 -> 5-9", "b": "(b) handwritten -> printed"}
    targets = {"a": "digits5to9", "b": "printed"}
    rows = []
    for setting in "ab":
        x, _, target = inputs[setting]
        rows.append({"label": labels[setting], "model": "no translation", "steps": "-", "cpu": [],
                     "scores": [score(judges[setting], x, target)]})
        for model in ["latent-mapping"] if setting == "a" else models:
            mine = [r for r in runs if r["setting"] == setting and r["model"] == model]
            scores = [score(judges[setting], translate_all(r["out"] / "model.safetensors", x, targets[setting],
                                                           r["seed"]), target) for r in mine]
            rows.append({"label": labels[setting], "model": model, "steps": mine[0]["steps"],
                         "cpu": [r["cpu"] for r in mine], "scores": scores})
    rows += [{"label": labels["b"], "model": m, "steps": "-", "note": "not run: family not registered in this imxlate"}
             for m in missing]

    print(table(rows, a.seeds, acc))
    (a.work / "results.json").write_text(json.dumps({"rows": rows, "judges": acc, "seeds": a.seeds, "quick": a.quick},
                                                    indent=1))

    # Picture grids from the first seed: two test inputs per source class, then 4 samples (noise seeds 0-3),
    # and for (b) the single output of each baseline.
    seed = a.seeds[0]
    for setting in "ab":
        x, y, _ = inputs[setting]
        pick = torch.cat([(y == c).nonzero()[:2, 0] for c in y.unique()])
        model = a.work / "runs" / f"{setting}_latent-mapping_seed{seed}" / "model.safetensors"
        columns = [x[pick]] + [translate_all(model, x[pick], targets[setting], k) for k in range(4)]
        if setting == "b":
            columns += [translate_all(a.work / "runs" / f"b_{m}_seed{seed}" / "model.safetensors", x[pick],
                                      "printed", 0) for m in models if m != "latent-mapping"]
        grid(a.figures / f"grid_{setting}.png", columns)
    print(f"figures in {a.figures}; total {time.perf_counter() - t0:.0f} s wall")


if __name__ == "__main__":
    main()
