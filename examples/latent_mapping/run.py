"""The latent-mapping experiment on the digit benchmark (examples/digits), offline, on CPU.

(a) handwritten 0-4 -> handwritten 5-9 with the map i -> i+5 (the paper's MNIST -> MNIST setting);
(b) handwritten -> printed digits with the identity map (the analogue of its SVHN -> MNIST), beside
    CycleGAN and shared-latent given the same CPU time per run.
A classifier trained on the target domain scores each model: the share of translated test images it
assigns to the mapped class, over 3 seeds. Writes a table (printed, and results.json) and picture grids.

Usage: python examples/latent_mapping/run.py --data data/digits [--work runs/latent_mapping_example]
       [--figures examples/latent_mapping/figures] [--seeds 0 1 2] [--jobs 2] [--quick]
Run with OMP_NUM_THREADS=1: each training is a separate `imxlate train` process, --jobs of them at once.
"""
from __future__ import annotations

import argparse
import json
import os
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
from torchvision.utils import save_image

from imxlate.data import list_images, load_rgb, to_tensor
from imxlate.families import REGISTRY
from imxlate.translate import Translator

HERE = Path(__file__).resolve().parent
COMMON = ["--crop-size", "32", "--load-size", "32", "--no-flip", "--workers", "0", "--quiet",
          "--sample-every", "1000000", "--save-every", "1000000"]
MAP_A = {str(i): str(i + 5) for i in range(5)}
MAP_B = {str(i): str(i) for i in range(10)}
# Steps per run, chosen so each run of (b) spends about the same CPU time, ~150 s on one thread (measured:
# latent-mapping 0.21 s per VAE step and 0.10 s per mapping step at batch 64, CycleGAN and shared-latent
# 0.17 s per step at batch 4, ~6 s to start); the table prints the CPU seconds each run really took.
MODELS = {
    "latent-mapping": lambda s: ["--model", "latent-mapping", "--vae-steps", str(s[0]), "--steps", str(s[1])],
    "cyclegan": lambda s: ["--model", "cyclegan", "--ngf", "16", "--ndf", "16", "--n-blocks", "3",
                           "--batch-size", "4", "--steps", str(s[0])],
    "shared-latent": lambda s: ["--model", "shared-latent", "--ngf", "16", "--ndf", "16", "--n-blocks", "2",
                                "--batch-size", "4", "--steps", str(s[0])],
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/digits"), help="output of examples/digits/prepare.py")
    ap.add_argument("--work", type=Path, default=Path("runs/latent_mapping_example"), help="runs and results")
    ap.add_argument("--figures", type=Path, default=HERE / "figures", help="where the picture grids go")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="training processes at once")
    ap.add_argument("--quick", action="store_true", help="a tenth of the steps (a smoke test, not the result)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    if not (a.data / "train" / "handwritten").is_dir():
        raise SystemExit(f"no digit benchmark at {a.data}; make it with examples/digits/prepare.py {a.data}")
    models = [m for m in ("latent-mapping", "cyclegan", "shared-latent") if m in REGISTRY]
    missing = [m for m in ("cyclegan", "shared-latent") if m not in models]
    data_a = setting_a_data(a.data, a.work)

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
