"""The DiscoGAN toy experiment (Kim et al. 2017, Fig. 4) on 2-D Gaussian mixtures.

Trains a standard GAN, a GAN with a reconstruction loss and DiscoGAN to translate domain A (10 modes; 5 in the
layout 'circle5-arc') to domain B (10 modes) with the same initial weights, data and budget for every seed; prints how
many B modes the translations cover and how many distinct B modes the A modes are sent to (10 of 10 = a bijection),
writes that table into a README and draws the paper's figure. The seeds of one method train together as one stacked
network (weights of shape (seeds, in, out), batched matmuls, the seeds' losses summed): Adam is element-wise, so every
seed follows exactly its own gradients, as if trained alone.

Usage: python examples/toy_gmm.py [--seeds 10] [--steps 40000] [--batch 32] [--layout circle-arc]
                                  [--out examples/toy_gmm.png] [--readme examples/README.md [--tag toy-gmm]]
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from imxlate.device import describe_machine
from imxlate.losses import d_loss, distance, g_loss
from imxlate.store import atomic_path, write_atomically

METHODS = ("standard GAN", "GAN + reconstruction", "DiscoGAN")
N_MODES = 10
SIGMA = 0.1  # standard deviation of every mixture component
HIDDEN = 64  # width of every hidden layer (the paper does not give it)
G_LAYERS = (2, HIDDEN, HIDDEN, 2)  # paper: 3 linear layers with ReLU between (a linear output can reach any point)
D_LAYERS = (2, HIDDEN, HIDDEN, HIDDEN, HIDDEN, 1)  # paper: 5 linear layers, ReLU after each but the last: a sigmoid
RECON = "mse"  # the paper allows any distance (L1, L2, Huber) for the reconstruction loss
BETAS = (0.5, 0.999)
COVER_FRACTION = 0.02  # a B mode is covered when >= 2% of all translated samples lie within 3 sigma of it
MAP_FRACTION = 0.5  # an A mode maps to the B mode that holds at least half of its translated samples
EVAL_PER_MODE = 100
CHUNK = 250  # steps of data drawn at once per seed (fixed, so a seed's data never depends on the other seeds)


def arc(radius: float, start: float, end: float, n: int = N_MODES) -> torch.Tensor:
    """(n, 2) centres evenly spaced on a circle from angle `start` to `end` (radians, both included)."""
    angle = torch.linspace(start, end, n, dtype=torch.float64)
    return (radius * torch.stack([angle.cos(), angle.sin()], 1)).float()


def ring(radius: float, offset: float, n: int = N_MODES) -> torch.Tensor:
    """(n, 2) centres evenly spaced around a whole circle, the first at angle `offset` (radians)."""
    return arc(radius, offset, offset + 2 * math.pi * (n - 1) / n, n)


# (A modes, B modes): this example's choice, the paper gives no coordinates. Fig. 4 plots only the B plane with its
# ten modes; here they lie along a half circle of radius 3, neighbours 2 * 3 * sin(10 deg) = 1.04 = 10 sigma apart,
# so 3-sigma discs never overlap. 'circle-arc' puts A's ten modes around a whole circle, so no order-keeping map onto
# the open arc exists and the generator has to tear the circle somewhere; 'rings' is this example's earlier layout
# (B a larger ring turned by half a step); 'circle5-arc' has five A modes on the circle, so that covering B's ten
# modes needs every A mode split in two.
LAYOUTS = {
    "circle-arc": (ring(2.0, 0.0), arc(3.0, 0.0, math.pi)),
    "rings": (ring(2.0, 0.0), ring(3.0, math.pi / N_MODES)),
    "circle5-arc": (ring(2.0, 0.0, 5), arc(3.0, 0.0, math.pi)),
}


def init_mlp(widths: tuple[int, ...], gens: list[torch.Generator]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stacked linear layers [(W (S, in, out), b (S, 1, out))], seed s drawn from gens[s] as nn.Linear draws them:
    weights and biases uniform in +-1/sqrt(in)."""
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        bound = 1 / math.sqrt(fan_in)
        w = torch.stack([(2 * torch.rand(fan_in, fan_out, generator=g) - 1) * bound for g in gens])
        b = torch.stack([(2 * torch.rand(1, fan_out, generator=g) - 1) * bound for g in gens])
        layers.append((w.requires_grad_(), b.requires_grad_()))
    return layers


def mlp(layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """(S, N, in) -> (S, N, out): ReLU between the layers, none after the last."""
    for i, (w, b) in enumerate(layers):
        x = torch.baddbmm(b, x, w)
        if i < len(layers) - 1:
            x = torch.relu(x)
    return x


def build(method: str, seeds: list[int]) -> dict[str, list]:
    """The networks of one method for every seed. G_AB and D_B are drawn first, so the three methods start from the
    same G_AB and D_B for a seed."""
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    nets = {"G_AB": init_mlp(G_LAYERS, gens), "D_B": init_mlp(D_LAYERS, gens)}
    if method != "standard GAN":
        nets["G_BA"] = init_mlp(G_LAYERS, gens)
    if method == "DiscoGAN":
        nets["D_A"] = init_mlp(D_LAYERS, gens)
    return nets


def params(nets: dict[str, list], prefix: str) -> list[torch.Tensor]:
    """Every weight and bias of the networks whose names start with `prefix` ('G' or 'D')."""
    return [t for name, layers in nets.items() if name.startswith(prefix) for layer in layers for t in layer]


def sample(modes: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Points of the equal-weight mixture with std SIGMA, of shape (*shape, 2)."""
    idx = torch.randint(len(modes), shape, generator=gen)
    return modes[idx] + SIGMA * torch.randn(*shape, 2, generator=gen)


def batches(seeds: list[int], batch: int, layout: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (a, b) training batches of shape (S, batch, 2); seed s's stream depends on s alone."""
    modes_a, modes_b = LAYOUTS[layout]
    gens = [torch.Generator().manual_seed(1_000 + seed) for seed in seeds]
    while True:
        a = torch.stack([sample(modes_a, (CHUNK, batch), g) for g in gens], 1)  # (CHUNK, S, batch, 2)
        b = torch.stack([sample(modes_b, (CHUNK, batch), g) for g in gens], 1)
        yield from zip(a, b)


def generator_loss(nets: dict[str, list], gan: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GAN loss on B, plus reconstruction of A when there is a G_BA, plus the mirrored terms when there is a D_A.
    imxlate's losses average over all seeds' samples; times S, that is the sum of the seeds' own losses."""
    ab = mlp(nets["G_AB"], a)
    loss = g_loss(gan, mlp(nets["D_B"], ab))
    if "G_BA" in nets:
        loss = loss + distance(RECON, mlp(nets["G_BA"], ab), a)
    if "D_A" in nets:  # DiscoGAN: the same two terms from B to A
        ba = mlp(nets["G_BA"], b)
        loss = loss + g_loss(gan, mlp(nets["D_A"], ba)) + distance(RECON, mlp(nets["G_AB"], ba), b)
    return len(a) * loss


def discriminator_loss(nets: dict[str, list], gan: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """D_B (and D_A for DiscoGAN) on real samples against detached translations, summed over seeds."""
    with torch.no_grad():
        ab = mlp(nets["G_AB"], a)
        ba = mlp(nets["G_BA"], b) if "D_A" in nets else None
    loss = d_loss(gan, mlp(nets["D_B"], b), mlp(nets["D_B"], ab))
    if ba is not None:
        loss = loss + d_loss(gan, mlp(nets["D_A"], a), mlp(nets["D_A"], ba))
    return len(a) * loss


def train(method: str, seeds: list[int], steps: int, batch: int, layout: str = "circle-arc", gan: str = "vanilla",
          lr: float = 2e-4, log=None) -> dict[str, list]:
    """Alternate one discriminator and one generator Adam step for `steps` steps, all seeds at once.
    `log(step)` is called every 1000 steps when given."""
    nets = build(method, seeds)
    g_params, d_params = params(nets, "G"), params(nets, "D")
    opt_g = torch.optim.Adam(g_params, lr=lr, betas=BETAS)
    opt_d = torch.optim.Adam(d_params, lr=lr, betas=BETAS)
    data = batches(seeds, batch, layout)
    for step in range(steps):
        a, b = next(data)
        opt_d.zero_grad()
        discriminator_loss(nets, gan, a, b).backward()
        opt_d.step()
        for p in d_params:  # the generator step needs no gradients of the discriminators' weights
            p.requires_grad_(False)
        opt_g.zero_grad()
        generator_loss(nets, gan, a, b).backward()
        opt_g.step()
        for p in d_params:
            p.requires_grad_(True)
        if log is not None and (step + 1) % 1000 == 0:
            log(step + 1)
    return nets


def eval_batch(seed: int, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """EVAL_PER_MODE fresh samples of every A mode: (points (A modes * EVAL_PER_MODE, 2), source mode index)."""
    modes_a = LAYOUTS[layout][0]
    gen = torch.Generator().manual_seed(10_000 + seed)
    idx = torch.arange(len(modes_a)).repeat_interleave(EVAL_PER_MODE)
    return modes_a[idx] + SIGMA * torch.randn(len(idx), 2, generator=gen), idx


def landed_mode(points: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
    """Index of the mode each point lies within 3 sigma of, or -1 when it is off every mode."""
    dist, nearest = torch.cdist(points, modes).min(1)
    return torch.where(dist <= 3 * SIGMA, nearest, torch.full_like(nearest, -1))


def modes_covered(points: torch.Tensor, modes: torch.Tensor) -> int:
    """How many modes hold at least COVER_FRACTION of the points within 3 sigma."""
    landed = landed_mode(points, modes)
    counts = torch.bincount(landed[landed >= 0], minlength=len(modes))
    return int((counts >= COVER_FRACTION * len(points)).sum())


def distinct_targets(points: torch.Tensor, source: torch.Tensor, modes: torch.Tensor) -> int:
    """Map each source mode to the target mode that holds at least half of its points; count distinct targets."""
    landed = landed_mode(points, modes)
    targets = set()
    for s in source.unique():
        own = landed[source == s]
        counts = torch.bincount(own[own >= 0], minlength=len(modes))
        if counts.max() >= MAP_FRACTION * len(own):  # a source mode with no such majority maps nowhere
            targets.add(int(counts.argmax()))
    return len(targets)


def translate(nets: dict[str, list], index: int, points: torch.Tensor) -> torch.Tensor:
    """G_AB of the `index`-th stacked seed applied to (N, 2) points."""
    with torch.no_grad():
        return mlp([(w[index:index + 1], b[index:index + 1]) for w, b in nets["G_AB"]], points[None])[0]


def evaluate(nets: dict[str, list], seeds: list[int], layout: str) -> list[dict[str, float]]:
    """Per seed: covered B modes, distinct targets of the A modes, and the share of samples on any B mode."""
    modes_b, results = LAYOUTS[layout][1], []
    for i, seed in enumerate(seeds):
        points, source = eval_batch(seed, layout)
        out = translate(nets, i, points)
        results.append({"covered": modes_covered(out, modes_b), "distinct": distinct_targets(out, source, modes_b),
                        "on_mode": float((landed_mode(out, modes_b) >= 0).float().mean())})
    return results


def mean_std(values: list[float]) -> str:
    """'mean +- std' (population std) of a list."""
    t = torch.tensor(values, dtype=torch.float64)
    return f"{t.mean():.1f} +- {t.std(unbiased=False):.1f}"


def table(results: dict[str, list[dict[str, float]]], layout: str) -> str:
    """The markdown table: mean +- std over seeds and the per-seed values."""
    n_a, n_b = (len(modes) for modes in LAYOUTS[layout])
    lines = [f"| method | B modes covered (of {n_b}) | distinct B modes of the {n_a} A modes | samples on a mode (%) "
             "| covered per seed | distinct per seed |", "|---|---|---|---|---|---|"]
    for method, runs in results.items():
        cov, dis = [r["covered"] for r in runs], [r["distinct"] for r in runs]
        lines.append(f"| {method} | {mean_std(cov)} | {mean_std(dis)} | {mean_std([100 * r['on_mode'] for r in runs])} "
                     f"| {' '.join(map(str, cov))} | {' '.join(map(str, dis))} |")
    return "\n".join(lines)


def draw(models: dict[str, dict[str, list]], initial: dict[str, list], index: int, seed: int, layout: str,
         path: str) -> None:
    """Fig. 4: D_B's output as background, translated A samples coloured by A mode, B modes as black x."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, source = eval_batch(seed, layout)
    modes_b = LAYOUTS[layout][1]
    lim = 4.0
    axis = torch.linspace(-lim, lim, 200)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    panels = [("(a) before training", initial)] + [(f"({c}) {m}", models[m]) for c, m in zip("bcd", METHODS)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), constrained_layout=True)
    for ax, (title, nets) in zip(axes, panels):
        with torch.no_grad():
            d_b = [(w[index:index + 1], b[index:index + 1]) for w, b in nets["D_B"]]
            heat = torch.sigmoid(mlp(d_b, grid[None])[0]).reshape(len(axis), len(axis))
        out = translate(nets, index, points)
        image = ax.imshow(heat.numpy(), extent=(-lim, lim, -lim, lim), origin="lower", vmin=0, vmax=1, cmap="viridis")
        ax.scatter(out[:, 0], out[:, 1], c=source.numpy(), cmap="tab10", vmin=-0.5, vmax=9.5, s=4, alpha=0.8)
        ax.scatter(modes_b[:, 0], modes_b[:, 1], marker="x", c="black", s=60, linewidths=2)
        ax.set(title=title, xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[], aspect="equal")
    fig.colorbar(image, ax=axes, shrink=0.8, label="D_B(x) (sigmoid)")
    fig.suptitle(f"A -> B translations, colour = A mode, x = B modes (seed {seed})")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def write_readme(readme: Path, tag: str, block: str) -> None:
    """Replace what lies between the `tag` markers of `readme` with `block`, atomically."""
    text = readme.read_text()
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    if start not in text or end not in text:
        sys.exit(f"error: {readme} has no '{start}' ... '{end}' markers; add them where the table belongs")
    text = re.sub(re.escape(start) + ".*" + re.escape(end), lambda _: f"{start}\n{block}\n{end}", text, flags=re.S)
    write_atomically(readme, lambda f: f.write(text.encode("utf-8")))


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, float]]]:
    """Train every method on every seed, print the table (and write it into --readme), draw the figure for the
    first seed; returns {method: [per-seed metrics]}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 for every method")
    parser.add_argument("--steps", type=int, default=40_000, help="training iterations (paper: 40,000)")
    parser.add_argument("--batch", type=int, default=32, help="samples per domain per iteration and seed")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="circle-arc", help="where the modes lie")
    parser.add_argument("--gan-loss", default="vanilla", choices=("vanilla", "lsgan"),
                        help="vanilla: the paper's sigmoid discriminator with cross-entropy (non-saturating)")
    parser.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (paper: 2e-4, betas 0.5/0.999)")
    parser.add_argument("--out", default="examples/toy_gmm.png", help="where to save the figure")
    parser.add_argument("--no-figure", action="store_true", help="skip the figure (needs matplotlib)")
    parser.add_argument("--readme", type=Path, help="a README whose --tag markers receive the table")
    parser.add_argument("--tag", default="toy-gmm", help="the README markers: <!-- TAG:start --> ... <!-- TAG:end -->")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 0 or args.batch < 1:
        parser.error("--seeds and --batch must be at least 1, --steps at least 0")
    if not args.no_figure and importlib.util.find_spec("matplotlib") is None:  # checked before the training
        sys.exit("error: the figure needs matplotlib: pip install matplotlib (or pass --no-figure)")
    # The nets are tiny: one thread is as fast as two, and two stall badly when the cores are shared (measured).
    torch.set_num_threads(1)

    seeds = list(range(args.seeds))
    start, cpu_start = time.perf_counter(), time.process_time()
    results, models = {}, {}
    for method in METHODS:
        t0 = time.process_time()

        def log(step: int) -> None:
            ms = 1000 * (time.process_time() - t0) / step
            print(f"{method}: step {step}, {ms:.1f} ms CPU per iteration", file=sys.stderr, flush=True)

        models[method] = train(method, seeds, args.steps, args.batch, args.layout, args.gan_loss, args.lr, log)
        results[method] = evaluate(models[method], seeds, args.layout)
        print(f"{method}: covered {[r['covered'] for r in results[method]]}, distinct "
              f"{[r['distinct'] for r in results[method]]} ({time.process_time() - cpu_start:.0f} s CPU)",
              file=sys.stderr, flush=True)
    if not args.no_figure:
        draw(models, build("DiscoGAN", seeds[:1]), 0, seeds[0], args.layout, args.out)
    cpu = time.process_time() - cpu_start
    command = " ".join(["python examples/toy_gmm.py", *(argv if argv is not None else sys.argv[1:])])
    block = (f"`{command}`: {args.seeds} seeds x {args.steps} iterations, batch {args.batch} per domain, layout "
             f"'{args.layout}', Adam {args.lr:g} {BETAS}, {args.gan_loss} GAN loss, {RECON} reconstruction; "
             f"mean +- population std over seeds\n\n{table(results, args.layout)}\n\n"
             f"{cpu / 60:.1f} min CPU time on {describe_machine()}")
    print(f"\n{block}\nwall time {time.perf_counter() - start:.0f} s")
    if args.readme is not None:
        write_readme(args.readme, args.tag, block)
    return results


if __name__ == "__main__":
    main()
