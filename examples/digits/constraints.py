"""What each constraint buys: CycleGAN, CycleGAN with a perceptual constraint, and the shared-latent
family with each of its constraints alone and all together, trained at one budget and scored.

    python examples/digits/constraints.py --digits DATA/digits --emoji DATA/emoji --seeds 3 --steps 100 \
        --emoji-seeds 1 --emoji-steps 60 --out-md examples/digits/README.md --grid examples/figures/digits_constraints.png

DATA/digits and DATA/emoji are the folders examples/digits/prepare.py and examples/emoji/prepare.py
write (either may be left out). Every method trains for the same number of steps, batch and image
size, once per seed; the tables give the mean and the standard deviation over seeds.

- digits: label preservation, the share of held-out test digits whose translation a classifier of
  the target domain (trained here on that domain's training images) calls the input's digit,
  handwritten -> printed and printed -> handwritten.
- emoji: L1, SSIM and top-1 retrieval of the held-out translations against the same code point drawn
  in the other style (imxlate.paired), both ways.

The perceptual constraint uses a classifier trained on the source domain, as Taigman et al. (2017)
did: on the handwritten digits; for emoji, which have no labels, on the Twemoji training images with
each image its own class (an exemplar classifier, Dosovitskiy et al. 2014). Runs are kept under
--work, named by a hash of their settings, and reused when the script is run again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

import imxlate
from imxlate import store
from imxlate.config import TrainConfig
from imxlate.data import list_images, load_rgb, to_image, to_tensor
from imxlate.evaluate import class_labels, classified_accuracy
from imxlate.classifier import load_classifier, train_classifier
from imxlate.paired import paired_scores
from imxlate.device import describe_machine
from imxlate.train import train

# Shared-latent base: within-domain reconstruction and the image GANs only (no shared weights, no KL,
# no cycle, no latent discriminator, no semantic consistency); each row below adds exactly one.
SL_BASE = {"shared_layers": "0", "kl_weight": "0", "cycle_weight": "0", "latent_adversarial": "0",
           "semantic_weight": "0"}
SL_CONSTRAINTS = {  # UNIT's settings (Liu et al. 2017) for the first three; weight 1 for the two extras
    "shared layers": {"shared_layers": "1"},
    "KL (VAE)": {"kl_weight": "0.01"},
    "cycle": {"cycle_weight": "10"},
    "latent adversarial": {"latent_adversarial": "1"},
    "semantic": {"semantic_weight": "1"},
}
PERCEPTUAL_WEIGHT = "1"
REUSED: list[Path] = []  # runs found finished under --work instead of trained by this invocation


def methods(perceptual_net: Path) -> dict[str, tuple[str, dict]]:
    """Row name -> (family, family options as on the command line, less the network sizes)."""
    rows = {"CycleGAN": ("cyclegan", {}),
            "CycleGAN + perceptual": ("cyclegan", {"perceptual_weight": PERCEPTUAL_WEIGHT,
                                                   "perceptual_net": str(perceptual_net)}),
            "shared-latent base": ("shared-latent", dict(SL_BASE))}
    for name, opts in SL_CONSTRAINTS.items():
        rows[f"base + {name}"] = ("shared-latent", {**SL_BASE, **opts})
    every = {k: v for opts in SL_CONSTRAINTS.values() for k, v in opts.items()}
    rows["base + all five together"] = ("shared-latent", {**SL_BASE, **every})
    return rows


# Small CPU networks. A CycleGAN a->b path has n_blocks residual blocks; a shared-latent one has the
# encoder's n_blocks plus the decoder's: 4 blocks either way.
SIZES = {"cyclegan": {"ngf": "16", "ndf": "32", "n_blocks": "4"},
         "shared-latent": {"ngf": "16", "ndf": "32", "n_blocks": "2"}}


def say(msg: str) -> None:
    print(msg, flush=True)


# ---- training (cached by a hash of the settings) -----------------------------------------------------

def run_model(work: Path, name: str, family: str, opts: dict, data: Path, domains: list[str], size: int,
              steps: int, batch: int, seed: int, flip: bool) -> tuple[Path, float]:
    """Train one method for one seed (or reuse the identical earlier run) -> (model file, training seconds).

    Reused runs are counted in REUSED, so the reported total wall time can say how many there were.
    """
    # epochs_decay=0 and ema=0: a constant learning rate over the steps and no averaged weights, as the tables
    # were made
    cfg = TrainConfig(domains=domains, data=str(data), model=family, steps=steps, epochs_decay=0, ema=0.0, batch_size=batch,
                      load_size=size, crop_size=size, no_flip=not flip, seed=seed, device="cpu", workers=0,
                      save_every=10**9, sample_every=10**9, log_every=max(steps // 10, 1))
    args = {**SIZES[family], **opts}
    key = json.dumps({"cfg": {k: v for k, v in vars(cfg).items() if k != "out"}, "args": args}, sort_keys=True)
    if "perceptual_net" in args:  # the same file name with other weights is another run
        key += store.sha256(args["perceptual_net"])
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    run_dir = work / f"{slug}-seed{seed}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    model = run_dir / "model.safetensors"
    if model.is_file():
        REUSED.append(run_dir)
    else:
        if run_dir.exists():  # an unfinished earlier attempt
            shutil.rmtree(run_dir)
        cfg.out = str(run_dir)
        train(cfg, family_args=args, quiet=True)
        (run_dir / "checkpoint.safetensors").unlink()  # only for resuming: 10x the model file, not needed here
    seconds = store.read_metadata(model)["training"]["wall_time_s"]
    return model, seconds


def load_stack(paths: list[Path]) -> torch.Tensor:
    """Image files -> one (N,3,H,W) tensor in [-1,1] (the test sets are read once, not once per model)."""
    return torch.stack([to_tensor(load_rgb(p)) for p in paths])


def translate_all(tr, x: torch.Tensor, to: str, src: str, batch: int = 64) -> list[Image.Image]:
    """Translate (N,3,H,W) in batches -> 8-bit PIL images, as saved translations would be."""
    return [to_image(y) for i in range(0, len(x), batch) for y in tr.translate_tensor(x[i:i + batch], to, src)]


def train_and_score(rows: dict, seeds: int, train_one, x: dict, directions, score, picks: dict, label: str, show):
    """Every method, every seed: train (or reuse) it, translate each direction's test inputs, score them.

    directions: (source, target, column) triples; train_one(name, family, opts, seed) -> (model, seconds);
    score(src, dst, translations) -> a figure; picks[src]: indices of the inputs the grid shows;
    show(figure) -> its text in the progress line.
    -> ({name: {column: [figure per seed], "s": [seconds per seed]}}, {(src, dst): {name: seed-0 pictures}}).
    """
    results = {name: {**{col: [] for _, _, col in directions}, "s": []} for name in rows}
    shown = {(src, dst): {} for src, dst, _ in directions}
    for name, (family, opts) in rows.items():
        for seed in range(seeds):
            model, seconds = train_one(name, family, opts, seed)
            tr = imxlate.load(model, device="cpu")
            for src, dst, col in directions:
                fakes = translate_all(tr, x[src], dst, src)
                results[name][col].append(score(src, dst, fakes))
                if seed == 0:
                    shown[(src, dst)][name] = [fakes[i] for i in picks[src]]
            results[name]["s"].append(seconds)
            say(f"{label} | {name} | seed {seed} | "
                + " | ".join(f"{src[0]}->{dst[0]} {show(results[name][col][-1])}" for src, dst, col in directions)
                + f" | {seconds:.0f} s")
    return results, shown


def summary(values: list[float], digits: int) -> str:
    """'mean ± standard deviation' over seeds (the value alone for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


# ---- digits ----------------------------------------------------------------------------------------

def digits_table(data: Path, work: Path, seeds: int, steps: int, batch: int, clf_steps: int):
    """Train every method on the digits and score label preservation both ways -> (markdown, grid panels)."""
    h, p = "handwritten", "printed"
    work.mkdir(parents=True, exist_ok=True)
    judges = {}
    # Judges: one classifier per target domain. The perceptual net is another classifier of the source
    # domain (handwritten), trained from another seed, so CycleGAN + perceptual is not fitted to a judge.
    for role, domain, seed in (("judge", p, 0), ("judge", h, 0), ("perceptual", h, 1)):
        out = work / f"classifier-{role}-{domain}-s{seed}-{clf_steps}.safetensors"
        if not out.is_file():
            t0 = time.perf_counter()
            s = train_classifier(data / "train" / domain, out, steps=clf_steps, image_size=32, width=16, seed=seed)
            say(f"classifier {out.name}: train accuracy {s['train_accuracy']:.3f} ({time.perf_counter() - t0:.0f} s)")
        if role == "judge":
            judges[domain] = load_classifier(out)
        else:
            perceptual = out
    rows = methods(perceptual)
    tests = {d: list_images(data / "test" / d) for d in (h, p)}
    x = {d: load_stack(tests[d]) for d in (h, p)}
    labels = {d: class_labels(data / "test" / d, tests[d]) for d in (h, p)}  # digit folders
    picks = {d: first_of_each_class(data / "test" / d, tests[d]) for d in (h, p)}  # indices into tests[d]
    directions = ((h, p, "hp"), (p, h, "ph"))
    results, shown = train_and_score(
        rows, seeds, lambda name, family, opts, seed: run_model(work, name, family, opts, data, [h, p], 32, steps,
                                                                batch, seed, flip=False),
        x, directions, lambda src, dst, fakes: classified_accuracy(judges[dst], fakes, labels[src]), picks,
        "digits", lambda v: f"{v:.3f}")
    # The input itself, judged by the target domain's classifier: what translating has to beat.
    identity = {col: classified_accuracy(judges[dst], tests[src], labels[src]) for src, dst, col in directions}
    ceiling = {d: classified_accuracy(judges[d], tests[d], labels[d]) for d in (h, p)}  # a judge on its own domain
    lines = ["| method | handwritten -> printed | printed -> handwritten | training loop s per run |",
             "|---|---:|---:|---:|",
             f"| no translation (the input itself) | {identity['hp']:.3f} | {identity['ph']:.3f} | - |"]
    for name, r in results.items():
        lines.append(f"| {name} | {summary(r['hp'], 3)} | {summary(r['ph'], 3)} | {summary(r['s'], 0)} |")
    lines.append("")
    lines.append(f"Judges' accuracy on the real test images of their own domain: printed {ceiling[p]:.3f} "
                 f"({len(tests[p])} images), handwritten {ceiling[h]:.3f} ({len(tests[h])} images); "
                 f"inputs: {len(tests[h])} handwritten, {len(tests[p])} printed test digits.")
    panels = [(f"digits {src} -> {dst} (seed 0)", [load_rgb(tests[src][i]) for i in picks[src]], None,
               shown[(src, dst)])
              for src, dst in ((h, p), (p, h))]
    return "\n".join(lines), panels


def first_of_each_class(folder: Path, paths: list[Path]) -> list[int]:
    """Index of the first image of each class subfolder (one per digit), in class order."""
    seen = {}
    for i, f in enumerate(paths):
        seen.setdefault(f.relative_to(folder).parts[0], i)
    return list(seen.values())


# ---- emoji -----------------------------------------------------------------------------------------

def exemplar_classifier(source: Path, work: Path, steps: int) -> Path:
    """A classifier of the source domain with each training image its own class (random shifts only)."""
    out = work / f"classifier-exemplar-{source.name}-{steps}.safetensors"
    if out.is_file():
        return out
    folders = work / f"exemplar-{source.name}"
    if folders.exists():
        shutil.rmtree(folders)
    for f in list_images(source):
        (folders / f.stem).mkdir(parents=True)
        shutil.copy(f, folders / f.stem / f.name)
    t0 = time.perf_counter()
    s = train_classifier(folders, out, steps=steps, batch_size=64, image_size=64, width=16, seed=1)
    say(f"classifier {out.name}: {len(s['classes'])} classes, train accuracy {s['train_accuracy']:.3f} "
        f"({time.perf_counter() - t0:.0f} s)")
    shutil.rmtree(folders)
    return out


def emoji_table(data: Path, work: Path, seeds: int, steps: int, batch: int, clf_steps: int):
    """Train every method on the emoji and score both directions against ground truth -> (markdown, panels)."""
    a, b = "twemoji", "noto"
    work.mkdir(parents=True, exist_ok=True)
    rows = methods(exemplar_classifier(data / a, work, clf_steps))
    inputs = {d: list_images(data / "test" / d) for d in (a, b)}
    x = {d: load_stack(inputs[d]) for d in (a, b)}
    truth = {(src, dst): [load_rgb(data / "test" / dst / f.name) for f in inputs[src]] for src, dst in ((a, b), (b, a))}
    spread = [len(inputs[a]) * k // 8 for k in range(8)]  # 8 test code points spread over the sorted list
    directions = ((a, b, "ab"), (b, a, "ba"))
    results, shown = train_and_score(
        rows, seeds, lambda name, family, opts, seed: run_model(work, name, family, opts, data, [a, b], 64, steps,
                                                                batch, seed, flip=True),
        x, directions, lambda src, dst, fakes: paired_scores(fakes, truth[(src, dst)]), {a: spread, b: spread},
        "emoji", lambda v: f"L1 {v['l1']:.4f} top-1 {v['top1']:.3f}")
    identity = {col: paired_scores([load_rgb(f) for f in inputs[src]], truth[(src, dst)])
                for src, dst, col in directions}
    lines = [f"| method | {a} -> {b} L1 | SSIM | top-1 | {b} -> {a} L1 | SSIM | top-1 | training loop s per run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|",
             "| no translation (the input itself) | " + " | ".join(
                 f"{identity[c]['l1']:.4f} | {identity[c]['ssim']:.4f} | {identity[c]['top1']:.3f}" for c in ("ab", "ba"))
             + " | - |"]
    for name, r in results.items():
        cells = [summary([s[k] for s in r[c]], 4 if k != "top1" else 3) for c in ("ab", "ba") for k in ("l1", "ssim", "top1")]
        lines.append(f"| {name} | {' | '.join(cells)} | {summary(r['s'], 0)} |")
    lines.append("")
    lines.append(f"{len(inputs[a])} held-out code points each way; L1 on a 0-1 scale (lower is better), "
                 "SSIM and top-1 retrieval higher is better.")
    panels = [(f"emoji {src} -> {dst} (seed 0)", [load_rgb(inputs[src][i]) for i in spread],
               [truth[(src, dst)][i] for i in spread], shown[(src, dst)]) for src, dst in ((a, b), (b, a))]
    return "\n".join(lines), panels


# ---- the picture grid and the README -----------------------------------------------------------------

def draw_panel(title: str, rows: list, cell: int, label_w: int, font) -> Image.Image:
    """One direction: a title, then one row of pictures per (name, images); names only when label_w > 0."""
    sheet = Image.new("RGB", (label_w + cell * len(rows[0][1]), 22 + cell * len(rows)), "white")
    d = ImageDraw.Draw(sheet)
    d.text((label_w + 4, 4), title, fill="black", font=font)
    for i, (name, images) in enumerate(rows):
        y = 22 + i * cell
        if label_w:
            d.text((4, y + cell // 2 - 7), name, fill="black", font=font)
        for j, im in enumerate(images):
            sheet.paste(im.convert("RGB").resize((cell, cell), Image.NEAREST), (label_w + j * cell, y))
    return sheet


def draw_grid(panels: list, path: Path, cell: int = 64, label_w: int = 170, gap: int = 12) -> None:
    """The two directions of each data set side by side (row names on the left), data sets one under the other."""
    font = ImageFont.load_default(13)
    lines = []
    for i in range(0, len(panels), 2):
        pair = []
        for k, (title, inputs, truth, by_method) in enumerate(panels[i:i + 2]):
            rows = [("input", inputs)] + ([("ground truth", truth)] if truth else []) + list(by_method.items())
            pair.append(draw_panel(title, rows, cell, label_w if k == 0 else 0, font))
        line = Image.new("RGB", (sum(p.width for p in pair) + gap * (len(pair) - 1), max(p.height for p in pair)),
                         "white")
        x = 0
        for p in pair:
            line.paste(p, (x, 0))
            x += p.width + gap
        lines.append(line)
    grid = Image.new("RGB", (max(li.width for li in lines), sum(li.height for li in lines) + gap * (len(lines) - 1)),
                     "white")
    y = 0
    for li in lines:
        grid.paste(li, (0, y))
        y += li.height + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours without dithering: a third of the bytes of full colour, no visible change at this size.
    grid.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def command_line(argv: list[str], path_options: set[str]) -> str:
    """The command as run from the current folder, path arguments made relative (no machine paths)."""
    out = ["python", os.path.relpath(sys.argv[0])]
    for i, arg in enumerate(argv):
        out.append(os.path.relpath(arg) if i and argv[i - 1] in path_options and os.path.isabs(arg) else arg)
    return " ".join(out)


def write_readme(readme: Path, block: str) -> None:
    """Replace what lies between the constraints markers of `readme` with `block`."""
    text = readme.read_text()
    start, end = "<!-- constraints:start -->", "<!-- constraints:end -->"
    if start not in text or end not in text:
        sys.exit(f"error: {readme} has no '{start}' ... '{end}' markers; add them where the tables belong")
    readme.write_text(re.sub(f"{start}.*{end}", lambda _: f"{start}\n{block}\n{end}", text, flags=re.S))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--digits", type=Path, help="the folder examples/digits/prepare.py wrote")
    ap.add_argument("--emoji", type=Path, help="the folder examples/emoji/prepare.py wrote")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per method (0, 1, ...)")
    ap.add_argument("--steps", type=int, default=100, help="training steps of every digits run")
    ap.add_argument("--emoji-seeds", type=int, help="seeds per method on emoji (default: --seeds)")
    ap.add_argument("--emoji-steps", type=int, help="training steps of every emoji run (default: --steps)")
    ap.add_argument("--batch", type=int, default=8, help="images per domain per step")
    ap.add_argument("--clf-steps", type=int, default=200, help="training steps of each classifier")
    ap.add_argument("--work", type=Path, default=Path("runs/constraints"), help="where runs and classifiers go")
    ap.add_argument("--out-md", type=Path, help="README whose constraints markers receive the tables")
    ap.add_argument("--grid", type=Path, help="PNG file for the picture grid")
    args = ap.parse_args()
    if not args.digits and not args.emoji:
        sys.exit("error: give --digits DATA/digits and/or --emoji DATA/emoji (the folders prepare.py wrote)")
    for name, folder, probe in (("digits", args.digits, "test/handwritten"), ("emoji", args.emoji, "test/twemoji")):
        if folder and not (folder / probe).is_dir():
            sys.exit(f"error: {folder} is not a prepared {name} folder (no {probe}); run examples/{name}/prepare.py")
    t0 = time.perf_counter()
    parts, panels = [], []
    if args.digits:
        table, p = digits_table(args.digits, args.work / "digits", args.seeds, args.steps, args.batch, args.clf_steps)
        parts.append(f"**Digits**: label preservation on the held-out test digits, {args.seeds} seed(s), "
                     f"{args.steps} steps of batch {args.batch} at 32 px per run "
                     f"({(time.perf_counter() - t0) / 60:.1f} min for this table).\n\n{table}")
        panels += p
    if args.emoji:
        t1 = time.perf_counter()
        seeds, steps = args.emoji_seeds or args.seeds, args.emoji_steps or args.steps
        table, p = emoji_table(args.emoji, args.work / "emoji", seeds, steps, args.batch, args.clf_steps)
        parts.append(f"**Emoji**: held-out translations against ground truth, {seeds} seed(s), "
                     f"{steps} steps of batch {args.batch} at 64 px per run "
                     f"({(time.perf_counter() - t1) / 60:.1f} min for this table).\n\n{table}")
        panels += p
    total = time.perf_counter() - t0
    cmd = command_line(sys.argv[1:], {"--digits", "--emoji", "--work", "--out-md", "--grid"})
    block = "\n\n".join(parts) + (f"\n\nMean ± standard deviation over seeds. Command: `{cmd}` "
                                  f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); "
                                  f"machine: {describe_machine()}; total wall time {total / 60:.1f} min "
                                  f"(classifiers, training and scoring; {len(REUSED)} run(s) reused from "
                                  "an earlier invocation).")
    say("\n" + block)
    if args.grid:
        draw_grid(panels, args.grid)
        say(f"wrote {args.grid}")
    if args.out_md:
        write_readme(args.out_md, block)
        say(f"wrote the tables into {args.out_md}")


if __name__ == "__main__":
    main()
