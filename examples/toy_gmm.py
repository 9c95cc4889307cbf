"""The DiscoGAN toy experiment (Kim et al. 2017, section 4.1, Fig. 4) on 2-D Gaussian mixtures.

Trains a standard GAN, a GAN with a reconstruction loss and DiscoGAN to translate domain A (10 modes) to domain B
(10 modes) with the same budget and seeds, prints how many B modes the translations cover and how many distinct
B modes the 10 A modes are sent to (10 = a bijection), and draws the paper's figure.

Usage: python examples/toy_gmm.py [--seeds 5] [--steps 2000] [--batch 256] [--out examples/toy_gmm.png]
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time

import torch
from torch import nn

from imxlate.losses import d_loss, distance, g_loss

METHODS = ("standard GAN", "GAN + reconstruction", "DiscoGAN")
N_MODES = 10
SIGMA = 0.1  # standard deviation of every mixture component
GAN_LOSS = "vanilla"  # the paper's sigmoid discriminator: logits + BCE-with-logits, sigmoid only for plotting
RECON = "mse"  # the paper allows any distance (L1, L2, Huber) for the reconstruction loss
COVER_FRACTION = 0.02  # a B mode is covered when >= 2% of all translated samples lie within 3 sigma of it
MAP_FRACTION = 0.5  # an A mode maps to the B mode that holds at least half of its translated samples
EVAL_PER_MODE = 100


def ring(radius: float, offset: float) -> torch.Tensor:
    """(N_MODES, 2) centres evenly spaced on a circle, the first at angle `offset` (radians)."""
    angle = offset + 2 * math.pi * torch.arange(N_MODES, dtype=torch.float64) / N_MODES
    return (radius * torch.stack([angle.cos(), angle.sin()], 1)).float()


# Neighbouring centres are 2 r sin(18 deg) apart: 12 sigma on A's ring, 19 sigma on B's, so 3-sigma discs never
# overlap. B is a larger ring turned by half a step, so no mode of B sits where a mode of A is.
MODES_A = ring(2.0, 0.0)
MODES_B = ring(3.0, math.pi / N_MODES)


def sample(modes: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n points of the mixture with equal weights and std SIGMA: (points (n, 2), mode index (n,))."""
    idx = torch.randint(len(modes), (n,), generator=gen)
    return modes[idx] + SIGMA * torch.randn(n, 2, generator=gen), idx


def mlp(hidden_layers: int, out: int) -> nn.Sequential:
    """2 -> `hidden_layers` x 128 ReLU -> out."""
    layers, width = [], 2
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, 128), nn.ReLU()]
        width = 128
    return nn.Sequential(*layers, nn.Linear(width, out))


def build(method: str, seed: int) -> dict[str, nn.Module]:
    """The networks of one method; G_AB and D_B come first so every method starts from the same G_AB and D_B."""
    torch.manual_seed(seed)
    nets = {"G_AB": mlp(3, 2), "D_B": mlp(5, 1)}  # paper: 3-layer generator, 5-layer sigmoid discriminator
    if method != "standard GAN":
        nets["G_BA"] = mlp(3, 2)
    if method == "DiscoGAN":
        nets["D_A"] = mlp(5, 1)
    return nets


def generator_loss(nets: dict[str, nn.Module], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GAN loss on B, plus reconstruction of A when there is a G_BA, plus the mirrored terms when there is a D_A."""
    ab = nets["G_AB"](a)
    loss = g_loss(GAN_LOSS, nets["D_B"](ab))
    if "G_BA" in nets:
        loss = loss + distance(RECON, nets["G_BA"](ab), a)
    if "D_A" in nets:  # DiscoGAN: the same two terms from B to A
        ba = nets["G_BA"](b)
        loss = loss + g_loss(GAN_LOSS, nets["D_A"](ba)) + distance(RECON, nets["G_AB"](ba), b)
    return loss


def discriminator_loss(nets: dict[str, nn.Module], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """D_B (and D_A for DiscoGAN) on real samples against detached translations."""
    with torch.no_grad():
        ab = nets["G_AB"](a)
        ba = nets["G_BA"](b) if "D_A" in nets else None
    loss = d_loss(GAN_LOSS, nets["D_B"](b), nets["D_B"](ab))
    if ba is not None:
        loss = loss + d_loss(GAN_LOSS, nets["D_A"](a), nets["D_A"](ba))
    return loss


def train(method: str, seed: int, steps: int, batch: int) -> dict[str, nn.Module]:
    """Alternate one discriminator and one generator Adam step (lr 2e-4, betas 0.5/0.999) for `steps` steps."""
    nets = build(method, seed)
    gens = [p for k, n in nets.items() if k.startswith("G") for p in n.parameters()]
    discs = [p for k, n in nets.items() if k.startswith("D") for p in n.parameters()]
    opt_g = torch.optim.Adam(gens, lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discs, lr=2e-4, betas=(0.5, 0.999))
    data = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        a, _ = sample(MODES_A, batch, data)
        b, _ = sample(MODES_B, batch, data)
        opt_d.zero_grad()
        discriminator_loss(nets, a, b).backward()
        opt_d.step()
        opt_g.zero_grad()
        generator_loss(nets, a, b).backward()
        opt_g.step()
    return nets


def eval_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """EVAL_PER_MODE fresh samples of every A mode: (points, source mode index)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    idx = torch.arange(N_MODES).repeat_interleave(EVAL_PER_MODE)
    return MODES_A[idx] + SIGMA * torch.randn(len(idx), 2, generator=gen), idx


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


def evaluate(nets: dict[str, nn.Module], seed: int) -> dict[str, float]:
    """Covered target modes, distinct targets of the 10 source modes, and the share of samples on any mode."""
    points, source = eval_batch(seed)
    with torch.no_grad():
        out = nets["G_AB"](points)
    return {"covered": modes_covered(out, MODES_B), "distinct": distinct_targets(out, source, MODES_B),
            "on_mode": float((landed_mode(out, MODES_B) >= 0).float().mean())}


def mean_std(values: list[float]) -> str:
    """'mean +- std' (population std) of a list."""
    t = torch.tensor(values, dtype=torch.float64)
    return f"{t.mean():.1f} +- {t.std(unbiased=False):.1f}"


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """The markdown table: mean +- std over seeds and the per-seed values."""
    lines = ["| method | B modes covered (of 10) | distinct B modes of the 10 A modes | samples on a mode (%) "
             "| covered per seed | distinct per seed |", "|---|---|---|---|---|---|"]
    for method, runs in results.items():
        cov, dis = [r["covered"] for r in runs], [r["distinct"] for r in runs]
        lines.append(f"| {method} | {mean_std(cov)} | {mean_std(dis)} | {mean_std([100 * r['on_mode'] for r in runs])} "
                     f"| {' '.join(map(str, cov))} | {' '.join(map(str, dis))} |")
    return "\n".join(lines)


def draw(models: dict[str, dict[str, nn.Module]], initial: dict[str, nn.Module], seed: int, path: str) -> None:
    """Fig. 4: D_B's output as background, translated A samples coloured by A mode, B modes as black x."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, source = eval_batch(seed)
    lim = 4.5
    axis = torch.linspace(-lim, lim, 200)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    panels = [("(a) before training", initial)] + [(f"({c}) {m}", models[m]) for c, m in zip("bcd", METHODS)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), constrained_layout=True)
    for ax, (title, nets) in zip(axes, panels):
        with torch.no_grad():
            heat = torch.sigmoid(nets["D_B"](grid)).reshape(len(axis), len(axis))
            out = nets["G_AB"](points)
        image = ax.imshow(heat.numpy(), extent=(-lim, lim, -lim, lim), origin="lower", vmin=0, vmax=1, cmap="viridis")
        ax.scatter(out[:, 0], out[:, 1], c=source.numpy(), cmap="tab10", vmin=-0.5, vmax=9.5, s=4, alpha=0.8)
        ax.scatter(MODES_B[:, 0], MODES_B[:, 1], marker="x", c="black", s=60, linewidths=2)
        ax.set(title=title, xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[], aspect="equal")
    fig.colorbar(image, ax=axes, shrink=0.8, label="D_B(x) (sigmoid)")
    fig.suptitle(f"A -> B translations, colour = A mode, x = B modes (seed {seed})")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Train every method on every seed, print the markdown table and save the figure for the first seed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 for every method")
    parser.add_argument("--steps", type=int, default=2000, help="training steps per run")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default="examples/toy_gmm.png", help="where to save the figure")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 0:
        parser.error("--seeds must be at least 1 and --steps at least 0")
    if importlib.util.find_spec("matplotlib") is None:  # checked now rather than after the training
        sys.exit("error: the figure needs matplotlib: pip install matplotlib")
    # The nets are tiny: one thread is as fast as two, and two stall badly when the cores are shared (measured).
    torch.set_num_threads(1)

    start, cpu_start = time.perf_counter(), time.process_time()
    results, figure_models = {m: [] for m in METHODS}, {}
    for method in METHODS:
        for seed in range(args.seeds):
            nets = train(method, seed, args.steps, args.batch)
            results[method].append(evaluate(nets, seed))
            if seed == 0:
                figure_models[method] = nets
            print(f"{method}, seed {seed}: {results[method][-1]} ({time.perf_counter() - start:.0f}s)", file=sys.stderr)
    draw(figure_models, build("DiscoGAN", 0), 0, args.out)
    print(f"{args.seeds} seeds x {args.steps} steps, batch {args.batch}, Adam 2e-4 (0.5, 0.999), {GAN_LOSS} GAN loss, "
          f"{RECON} reconstruction; covered = >= {COVER_FRACTION:.0%} of {N_MODES * EVAL_PER_MODE} translated samples "
          f"within 3 sigma of the mode; an A mode maps to the B mode within 3 sigma of >= {MAP_FRACTION:.0%} of its "
          f"{EVAL_PER_MODE} samples; mean +- population std over seeds\n")
    print(table(results))
    print(f"\nwall time {time.perf_counter() - start:.0f}s, CPU time {time.process_time() - cpu_start:.0f}s; "
          f"figure: {args.out}")


if __name__ == "__main__":
    main()
