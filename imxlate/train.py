"""The training loop, written once for every family: devices, DDP, checkpoints, exact resume,
progress, sample grids, the loss log, TensorBoard event files, the final model file and the run's report."""
from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import random
import shlex
import signal
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text
from torchvision.utils import make_grid, save_image

from . import store
from .store import CHECKPOINT, MODEL
from .config import (RESUME_MAY_CHANGE, TrainConfig, apply_overrides, apply_preset, describe_preset, from_dict,
                     option, to_dict)
from .device import pick_device
from .distributed import dist_broadcast, dist_setup, param_digest
from .data import (Domain, Transform, UnpairedDataset, collate, find_domain_folder, load_rgb, to_tensor, upscale_note,
                   worker_count)
from .errors import ImxlateError
from .families import family_class, load_checkpoint
from .averaging import MovingAverage
from .health import CHECK_EVERY, CollapseWatch, look
from .optim import describe_schedule
from .report import GROUPS, loss_group, write_report
from .nets.common import param_count

console = Console(highlight=False)
warnings_console = Console(highlight=False, stderr=True)


# ---- RNG state ----------------------------------------------------------------------------------

def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- run folders --------------------------------------------------------------------------------

def new_run_dir(out: str | None, domains: list[str]) -> Path:
    """`out` when new or empty (else an error: nothing is written outside it), or runs/<a>2<b>; when that is
    taken, the next free runs/<a>2<b>-2, -3, ... (never reused)."""
    base = Path(out) if out else Path("runs") / "2".join(domains)
    if not base.exists() or (base.is_dir() and not any(base.iterdir())):
        return base
    if out:
        raise ImxlateError(f"--out {out} already holds files; name a new or empty folder, or continue the run "
                           f"there with --resume {out}")
    i = 2
    while Path(f"{base}-{i}").exists():
        i += 1
    return Path(f"{base}-{i}")


def checkpoint_path(resume: str) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    p = Path(resume)
    ckpt = p / CHECKPOINT if p.is_dir() else p
    if not ckpt.is_file():
        raise ImxlateError(f"no checkpoint at {ckpt}; --resume takes a run folder or its {CHECKPOINT}")
    return ckpt


def fingerprint(domain: Domain) -> str:
    """A short digest of the names of the images a domain trains on (relative to its folder): a resume compares
    it to tell added, removed or renamed files, without keeping every name in the checkpoint."""
    names = "\n".join(p.relative_to(domain.root).as_posix() for p in domain.paths)
    return hashlib.sha256(names.encode()).hexdigest()[:16]


# ---- sample grids -------------------------------------------------------------------------------

def named_rows(rows: list, inputs: dict[str, torch.Tensor]) -> tuple[list[str], list[torch.Tensor]]:
    """A family's sample rows -> (labels, rows). A row given as a (label, images) pair keeps its label
    ('photos->vangogh'); a bare row of input images gets its domain's name, any other bare row no label."""
    pairs = [row if isinstance(row, tuple) else
             (next((name for name, x in inputs.items() if row is x), ""), row) for row in rows]
    return [label for label, _ in pairs], [row for _, row in pairs]


def labelled_grid(rows: list[torch.Tensor], labels: list[str], n: int) -> torch.Tensor:
    """Rows of n images each ((n,3,H,W) in [-1, 1]) -> one (3, H', W') grid in [0, 1], each row's label in small
    white text on the black margin at its left."""
    grid = make_grid(torch.cat(rows).float().cpu(), nrow=n, normalize=True, value_range=(-1, 1))
    pad, height = 2, rows[0].shape[-2]  # make_grid's padding, one row's images
    font = ImageFont.load_default(size=max(8, min(14, height // 4)))
    width = max([int(font.getlength(text)) for text in labels] + [0]) + 2 * pad
    column = Image.new("RGB", (width, grid.shape[1]))
    draw = ImageDraw.Draw(column)
    for i, text in enumerate(labels):
        draw.text((pad, pad + i * (height + pad) + height // 2), text, fill="white", font=font, anchor="lm")
    column = torch.from_numpy(np.array(column)).permute(2, 0, 1).float() / 255
    return torch.cat([column, grid], dim=2)


class BatchPlan(torch.utils.data.Sampler):
    """Batches of dataset positions for one epoch, from batch `start`, this rank's share only.

    Batch i covers positions i*B*W .. (i+1)*B*W - 1 (wrapping at the end so every batch is full);
    rank r takes its B consecutive positions of each batch.
    """

    def __init__(self, length: int, batch: int, world: int, rank: int, start: int):
        self.length, self.batch, self.world, self.rank, self.start = length, batch, world, rank, start
        self.n = math.ceil(length / (batch * world))

    def __iter__(self):
        for i in range(self.start, self.n):
            first = i * self.batch * self.world + self.rank * self.batch
            yield [(first + j) % self.length for j in range(self.batch)]

    def __len__(self):
        return self.n - self.start


# ---- the loop -------------------------------------------------------------------------------------

class Stop(Exception):
    """Raised inside the loop to end training early (a NaN loss)."""


def train(cfg: TrainConfig, family_args: dict | None = None, resume: str | None = None,
          quiet: bool = False, given: set[str] | None = None) -> Path:
    """Train a model as `cfg` says (or continue the run in `resume`) -> the run folder.

    `family_args` are `--key value` overrides of the family's config (strings, converted here). `given`: the
    fields of `cfg` the user set (default: those that differ from the defaults), which a resume applies or refuses.
    Ctrl-C ends it with a KeyboardInterrupt whose message says where it stopped and what was kept.
    """
    family_args = family_args or {}
    if not resume and not cfg.domains:
        raise ImxlateError("name the domains to translate between, e.g. --domains photos vangogh")
    cfg.check()  # counts, sizes, domains: refused before anything runs
    if cfg.out is not None and not resume:  # tried now, so nothing is left behind by a refusal
        store.prepare_folder(cfg.out, create=int(os.environ.get("WORLD_SIZE", "1")) > 1)
    rank, world, local = dist_setup()
    try:
        plan = resolve(cfg, family_args, resume, cfg.given() if given is None else given)
        run_dir = _train(plan, quiet, rank, world, local)
        if dist.is_initialized():
            dist.barrier()
        return run_dir
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(plan: Plan, quiet, rank, world, local) -> Path:
    """The stages of a run: set up family and data, run the loop, write the model. From the run folder's
    creation on, a first Ctrl-C (or SIGTERM, SIGHUP: the command line makes them Ctrl-C) lets the step end."""
    run = Run(plan, quiet, rank, world, local)
    with Interrupts() as interrupted:
        try:
            run.announce()
            with run.board:
                run.loop(interrupted)
                return run.finish()
        except KeyboardInterrupt as e:
            if e.args:  # the loop's own, after its checkpoint
                raise
            raise KeyboardInterrupt(run.stopped()) from None  # a second Ctrl-C: at once


# ---- stage 1: resolve what to train ------------------------------------------------------------------

@dataclass
class Plan:
    """What a run trains: the loop's settings, the family and its config, and the checkpoint it resumes."""
    cfg: TrainConfig
    fam_cls: type
    fam_cfg: object
    state: dict | None = None
    run_dir: Path | None = None  # a resumed run's folder; a new run's is chosen once its family is built
    applied: list[str] = field(default_factory=list)  # what a resume changes: ['--steps 12 (was 8)']


def resolve(cfg: TrainConfig, family_args: dict, resume: str | None, given: set[str] = frozenset()) -> Plan:
    """A new run's recipe from `cfg` and the family options, or a resumed run's from its checkpoint
    (which keeps its recipe: `resumed`)."""
    if resume:
        return resumed(cfg, family_args, resume, given)
    fam_cls = family_class(cfg.model)
    check_family_options(family_args, fam_cls)
    cfg, family_args = apply_preset(cfg, family_args, fam_cls.Config, fam_cls.train_defaults)
    cfg = cfg.resolved(fam_cls.train_defaults)
    fam_cfg = apply_overrides(fam_cls.Config(), family_args)
    if len(cfg.domains) < 2:
        raise ImxlateError("name at least two domains, e.g. --domains photos vangogh")
    fam_cfg = fam_cls.resolve_config(fam_cfg, cfg)  # the family's checks of the sizes first
    cfg.check_load_size()
    return Plan(cfg, fam_cls, fam_cfg)


def check_family_options(family_args: dict, fam_cls: type) -> None:
    """Refuse `--key value` options the family's config does not have."""
    unknown = set(family_args) - {f.name for f in fields(fam_cls.Config)}
    if unknown:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(unknown))
        raise ImxlateError(f"{names}: not an option of the {fam_cls.name} family; see "
                           f"`imxlate train --family {fam_cls.name} --help`")


def resumed(cfg: TrainConfig, family_args: dict, resume: str, given: set[str]) -> Plan:
    """A resumed run's recipe: its checkpoint's, with the options in `given` that RESUME_MAY_CHANGE applied
    (and listed in the plan); any other option or family option that differs from the run's is refused."""
    ckpt = checkpoint_path(resume)
    state = load_checkpoint(ckpt)  # its networks checked against the family it states
    saved = from_dict(TrainConfig, state["train_config"])
    fam_cls = family_class(state["family"])
    fam_cfg = from_dict(fam_cls.Config, state["family_config"])
    if "out" in given and Path(cfg.out).resolve() != ckpt.parent.resolve():
        raise ImxlateError(f"--out {cfg.out}: --resume goes on in the run's own folder {ckpt.parent}; leave --out "
                           "out, or drop --resume to start a new run there")
    check_family_options(family_args, fam_cls)
    asked = apply_overrides(fam_cfg, family_args)
    changes = [(k, getattr(asked, k), getattr(fam_cfg, k)) for k in sorted(family_args)]
    changes += [(f.name, getattr(cfg, f.name), getattr(saved, f.name)) for f in fields(TrainConfig)
                if f.name in given and f.name != "out"]
    applied = {}
    for name, new, old in changes:
        if new == old:
            continue
        if name not in RESUME_MAY_CHANGE or name in family_args:
            raise ImxlateError(f"{option(name, new)}: this run was trained with {option(name, old)}; a resume keeps "
                               "the run's recipe: leave it out, or start a new run with --out")
        applied[name] = new
    notes = [f"{option(k, v)} (was {getattr(saved, k) if getattr(saved, k) is not None else 'not set'})"
             for k, v in applied.items()]
    return Plan(replace(saved, **applied), fam_cls, fam_cfg, state, ckpt.parent, notes)


# ---- stages 2-4: set up, run, write ---------------------------------------------------------------------

class Run:
    """One training run: its family on its device, its data and schedule, its position (step, elapsed
    time, collapse watch) and its outputs (checkpoint, samples, log, model files)."""

    def __init__(self, plan: Plan, quiet: bool, rank: int, world: int, local: int):
        cfg, self.state = plan.cfg, plan.state
        self.cfg, self.quiet, self.rank, self.world = cfg, quiet, rank, world
        self.device = pick_device(cfg.device, local if world > 1 else None)
        self.domains = [Domain(name, find_domain_folder(Path(cfg.data), name, i), cfg.max_images)
                        for i, name in enumerate(cfg.domains)]
        classes = {d.name: d.classes for d in self.domains}
        if self.state and classes != self.state.get("classes", classes):
            raise ImxlateError("the class folders of the data changed since the checkpoint was written")
        self.family = self._family(plan, classes)
        self.ema = MovingAverage(self.family, cfg.ema)
        self.run_dir = plan.run_dir or Path(dist_broadcast(str(new_run_dir(cfg.out, cfg.domains)) if rank == 0 else None))
        self.dataset = UnpairedDataset(self.domains, Transform(cfg.load_size, cfg.crop_size, cfg.preprocess,
                                                               not cfg.no_flip), cfg.seed)
        self.steps_per_epoch = math.ceil(len(self.dataset) / (cfg.batch_size * world))
        # The schedule: constant, then linear decay to zero, in the shares --epochs : --epochs-decay, over
        # --steps iterations when given (any budget ends its schedule), else over those epochs.
        self.schedule_total = cfg.steps or (cfg.epochs + cfg.epochs_decay) * self.steps_per_epoch
        self.decay_start = self.schedule_total * cfg.epochs // (cfg.epochs + cfg.epochs_decay)
        self.stages = self.family.stages(self.schedule_total)
        self.stop = sum(n for _, n in self.stages)
        if self.state and self.state["step"] > self.stop:
            raise ImxlateError(f"this run is at step {self.state['step']} already, past the {self.stop} steps it "
                               "would now train; give a larger --steps to go on")
        self.step, self.elapsed = 0, 0.0
        self.saved_step, self.applied = self.state["step"] if self.state else None, plan.applied
        self.watch = CollapseWatch()
        self.watched_from = self.stop - self.stages[-1][1]  # earlier stages (pre-trained autoencoders) translate nothing yet
        self.meta = {"family": plan.fam_cls.name, "family_config": to_dict(plan.fam_cfg), "train_config": to_dict(cfg),
                     "domains": cfg.domains, "classes": classes, "image_size": cfg.crop_size, "world_size": world,
                     "data": {d.name: str(d.root.resolve()) for d in self.domains}, "stop": self.stop,
                     "lr_schedule": {"constant_steps": self.decay_start, "zero_at_step": self.schedule_total},
                     "images": {d.name: len(d) for d in self.domains}, "device": str(self.device),
                     "fingerprint": {d.name: fingerprint(d) for d in self.domains}}

    def _family(self, plan: Plan, classes: dict):
        """The family built from the seed (a resume then loads its state), on the device, ready to train,
        with the same starting point on every rank."""
        cfg = self.cfg
        seed_everything(cfg.seed)
        family = plan.fam_cls(plan.fam_cfg, cfg.domains, cfg.crop_size, classes)
        family.check_data(self.domains)
        if self.world > 1 and self.device.type == "cuda":  # batch norm statistics over the global batch (keys unchanged)
            family.nets = torch.nn.SyncBatchNorm.convert_sync_batchnorm(family.nets)
        family.to(self.device)
        family.rng.manual_seed(cfg.seed + 7919 * self.rank)
        family.setup_training(cfg.amp, cfg.gradient_accumulation)
        if dist.is_initialized():
            for p in [*family.nets.parameters(), *family.nets.buffers()]:
                dist.broadcast(p.data, 0)
        return family

    def say(self, msg: str) -> None:
        """Print a line on rank 0 unless quiet; to a file or pipe unwrapped, so each message stays one line."""
        if self.rank == 0 and not self.quiet:
            console.print(msg, soft_wrap=not console.is_terminal)

    def notice(self, msg: str) -> None:
        """Print a line on rank 0 that --quiet does not hide (it goes to stderr then), as warnings do."""
        if self.rank == 0:
            (warnings_console if self.quiet else console).print(msg, soft_wrap=True)

    def announce(self) -> None:
        """Load the resumed state (saying what the resume changed), or create the run folder with its first
        checkpoint; then say in a few lines what runs."""
        cfg, family = self.cfg, self.family
        if self.state:
            self.watch.load(self.state.get("health", {}))
            family.load_state(self.state["family_state"])
            self.ema.load(self.state.get("ema", self.state["family_state"].get("ema", {})))  # older: in the family's
            set_rng_state(self.state["rng"])
            self.step, self.elapsed = self.state["step"], self.state["elapsed"]
            self.say(f"Resuming {self.run_dir} at step {self.step}")
            if self.applied:
                self.notice(f"Resume applies {', '.join(self.applied)}")
            if change := self.data_change():
                self.notice(change)
        else:
            for d in self.domains:
                self.say(f"Domain [bold]{d.name}[/]: {len(d)} images in {d.root}"
                         + (f" ({len(d.classes)} classes)" if d.classes else ""))
            sizes = ", ".join(f"{k} {param_count(v):,}" for k, v in family.nets.items())
            self.say(f"Run folder: {self.run_dir}")
            self.say(f"Device: {self.device}" + (f" x {self.world} ranks (global batch {cfg.batch_size * self.world})"
                                                 if self.world > 1 else ""))
            self.say(f"Family: {family.name}; networks: {sizes} parameters")
            if hint := family.recipe_hint():
                self.say(f"[dim]{hint}[/]")
        self.say(f"Training {self.stop} steps ({self.steps_per_epoch} per epoch, batch {cfg.batch_size}, "
                 f"{cfg.crop_size}px); stages: {', '.join(f'{n} {s}' for n, s in self.stages)}; "
                 f"learning rate {describe_schedule(self.meta['lr_schedule'])}"
                 + ("" if self.state else upscale_note(self.domains, cfg.crop_size, cfg.preprocess)))
        self.fixed = {d.name: torch.stack([to_tensor(load_rgb(p).resize((cfg.crop_size, cfg.crop_size)))
                                           for p in d.paths[:4]]) for d in self.domains}
        self.fixed_n = min(len(v) for v in self.fixed.values())
        self.fixed = {k: v[:self.fixed_n].to(self.device) for k, v in self.fixed.items()}
        if not self.state:
            # The folder appears with its step-0 checkpoint (store writes both): a run stopped at any time after
            # can be resumed, and no folder without a checkpoint takes the next run's name.
            self.save_checkpoint()
        self.board = Board(self.run_dir if self.rank == 0 else None, self.step, self.say)

    def data_change(self) -> str | None:
        """One line on the images added, removed or renamed in the domain folders since the checkpoint (a
        checkpoint from before fingerprints were recorded: counts only), or None."""
        counts, prints = self.state.get("images", {}), self.state.get("fingerprint", {})
        changes = []
        for d in self.domains:
            before = counts.get(d.name, len(d))
            if len(d) != before:
                changes.append(f"{d.name} has {len(d)} images, {before} at the stop")
            elif prints.get(d.name, self.meta["fingerprint"][d.name]) != self.meta["fingerprint"][d.name]:
                changes.append(f"{d.name} has other files ({len(d)} images, as at the stop)")
        return (f"Note: the data changed since the stop: {'; '.join(changes)}. Training goes on with the images "
                "there now (not an exact continuation)") if changes else None

    # ---- outputs ----
    def save_checkpoint(self) -> None:
        if self.rank == 0:
            store.save_checkpoint({**self.meta, "step": self.step, "elapsed": self.elapsed,
                                   "family_state": self.family.state(), "ema": self.ema.state(), "rng": rng_state(),
                                   "health": self.watch.state()}, self.run_dir / CHECKPOINT)
        self.saved_step = self.step

    def stopped(self) -> str:
        """The line an interrupted run ends with: the step it stopped at, what was kept and how to go on."""
        if self.saved_step is None:
            return f"interrupted at step {self.step}, before the run's first checkpoint; nothing was kept"
        which = "checkpoint" if self.saved_step == self.step else f"checkpoint of step {self.saved_step}"
        return (f"interrupted at step {self.step}; {which} kept in {self.run_dir}; resume with: imxlate train "
                f"--resume {shlex.quote(str(self.run_dir))}")

    def write_samples(self) -> None:
        if self.rank != 0:
            return
        family = self.family
        family.eval()
        with torch.no_grad(), self.ema.applied():
            labels, rows = named_rows(family.sample_rows(self.fixed), self.fixed)
        family.train()
        grid = labelled_grid(rows, labels, self.fixed_n)
        (self.run_dir / "samples").mkdir(exist_ok=True)
        store.write_atomically(self.run_dir / "samples" / f"step_{self.step:07d}.png",
                               lambda f: save_image(grid, f, format="png"))
        self.board.image(self.step, grid)

    def write_model(self, path: Path) -> None:
        cfg = self.cfg
        with self.ema.applied():
            store.save_model(self.family, path,
                             training={"steps": self.step, "planned_steps": self.stop,
                                       "epochs": round(self.step / self.steps_per_epoch, 3),
                                       "batch_size": cfg.batch_size, "global_batch": cfg.batch_size * self.world,
                                       "lr_schedule": self.meta["lr_schedule"],
                                       "seed": cfg.seed, "wall_time_s": round(self.elapsed, 1),
                                       "device": str(self.device), "config": to_dict(cfg)},
                             data=self.meta["data"])

    # ---- the loop ----
    def iterate(self, batch) -> dict[str, float]:
        """One training iteration on `batch` -> its losses (a non-finite loss stops the run)."""
        family = self.family
        family.opts.set_lr_factor(family.lr_factor(self.step, self.schedule_total, self.decay_start))
        losses = family.train_step(batch, self.step)
        self.ema.update(self.step)
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise Stop(f"loss {bad[0]} became {losses[bad[0]]} at step {self.step + 1}")
        self.step += 1
        return losses

    def warnings(self, losses: dict) -> list[str]:
        """New collapse signs: from the losses every step, from the sample translations every CHECK_EVERY steps."""
        news = self.watch.losses(self.step, losses)
        if self.rank == 0 and self.step % CHECK_EVERY == 0 and self.step > self.watched_from:
            news += look(self.family, self.watch, self.step, self.fixed)
        return news if self.rank == 0 else []

    def periodic(self) -> None:
        """Samples, checkpoints and snapshots when their step comes."""
        cfg, step = self.cfg, self.step
        if step % cfg.sample_every == 0:
            self.write_samples()
        if step % cfg.save_every == 0:
            self.save_checkpoint()
        if cfg.snapshot_every and step % cfg.snapshot_every == 0 and self.rank == 0:
            self.write_model(self.run_dir / "snapshots" / f"step_{step:07d}.safetensors")

    def loader(self, epoch: int, start: int):
        self.dataset.set_epoch(epoch)
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=BatchPlan(len(self.dataset), self.cfg.batch_size, self.world, self.rank, start),
            num_workers=worker_count(self.cfg.workers), collate_fn=lambda items: collate(items, self.cfg.domains),
            generator=torch.Generator())  # its own seed draw, so the global RNG stays exactly resumable

    def loop(self, interrupted: Interrupts) -> None:
        """Iterate until the last stage ends, with progress, log, warnings and periodic outputs; when `interrupted`
        (on any rank), save the checkpoint and raise KeyboardInterrupt with the line that says so."""
        with RunLog(self) as log:
            try:
                while self.step < self.stop and not interrupted.agreed(self.world, self.device):
                    epoch, start = divmod(self.step, self.steps_per_epoch)
                    t0 = time.perf_counter()
                    for batch in self.loader(epoch, start):
                        losses = self.iterate(batch)
                        now = time.perf_counter()
                        self.elapsed += now - t0
                        log.step(epoch, losses, self.warnings(losses), now - t0)
                        t0 = now
                        self.periodic()
                        if interrupted.agreed(self.world, self.device) or self.step >= self.stop:
                            break
            except Stop as e:
                raise ImxlateError(f"{e}; training stopped. The last good checkpoint (step {self.saved_step}) is "
                                   f"{self.run_dir / CHECKPOINT}; try a lower learning rate (--lr) or another "
                                   "--gan-loss") from None
        if self.step < self.stop:
            self.save_checkpoint()
            raise KeyboardInterrupt(self.stopped())

    def finish(self) -> Path:
        self.save_checkpoint()
        self.write_samples()
        if self.rank == 0:
            self.write_model(self.run_dir / MODEL)
            report, summary = write_report(self.run_dir)
            self.say(f"Done: {self.step} steps in {self.elapsed:.0f}s.")
            self.say(f"Model: {self.run_dir / MODEL}")  # a line of its own: a narrow terminal wraps before the path
            self.say(f"Report: {report}" + ("" if summary["plotted"] or not summary["groups"]
                                             else r" (no loss curves: pip install 'imxlate\[report]')"))
        return self.run_dir


class Interrupts(list):
    """Inside the block a first Ctrl-C is noted (the loop saves and stops at the end of the step), a second
    one interrupts at once. Truthy once noted. (The command line turns SIGTERM and SIGHUP into Ctrl-C.)"""

    def __enter__(self):
        self.previous = None
        if hasattr(signal, "SIGINT"):
            def on_sigint(signum, frame):
                if self:
                    raise KeyboardInterrupt
                self.append(True)
            try:
                self.previous = signal.signal(signal.SIGINT, on_sigint)
            except ValueError:  # not the main thread
                self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def agreed(self, world: int, device) -> bool:
        """Whether any rank was interrupted (every rank stops together)."""
        if world > 1:
            flag = torch.tensor([float(bool(self))], device=device)
            dist.all_reduce(flag)
            if flag.item() > 0 and not self:
                self.append(True)
        return bool(self)


# Progress: in a terminal a bar (step/total, rate, time left, bar, epoch) with the losses on a line below it, all
# within the terminal's width; to a file or pipe (nohup, CI, a cluster job) one plain line every --log-every steps,
# or after PLAIN_EVERY_S seconds without one, whichever comes first.
PLAIN_EVERY_S = 30
ESTIMATE_AFTER = 5  # steps timed after the first (which also starts the data loader) for the estimate line
LONG_ON_CPU_S = 3600  # a CPU plan longer than this gets a hint with the quick preset
GROUP_LABELS = {"generator": "G", "discriminator": "D", "cycle": "cycle", "identity": "idt", "nce": "nce"}


def duration(seconds: float) -> str:
    """Seconds -> '2 h 05 min', '14 min 03 s' or '42 s'."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def losses_line(losses: dict[str, float]) -> str:
    """{'G_ab': 1.03, 'G_ba': 0.98, 'D_a': 0.25, ...} -> 'G ab 1.03 ba 0.98  D a 0.25 ...': grouped as the report
    groups them (report.loss_group, in its order), each group under a short label, each loss by what its name adds
    (cycle_a -> 'cycle a'; kl_a, kl_b outside the groups -> 'kl a .. b ..')."""
    groups: dict[str, list[str]] = {}
    for name, value in sorted(losses.items(), key=lambda item: GROUPS.index(loss_group(item[0]))):
        label = GROUP_LABELS.get(loss_group(name)) or name.split("_")[0]
        rest = name[len(label):].lstrip("_") if name.startswith(label) else name
        groups.setdefault(label, []).append(f"{rest} {value:.3g}".strip())
    return "  ".join(f"{label} {' '.join(values)}" for label, values in groups.items())


class Pace:
    """The recent steps' times -> seconds per step, the rate and the time left, for both progress displays."""

    def __init__(self, window: int = 20):
        self.recent = collections.deque(maxlen=window)

    def add(self, seconds: float) -> None:
        self.recent.append(seconds)

    def rate(self) -> str:
        per_step = sum(self.recent) / len(self.recent)
        return f"{1 / per_step:.1f} step/s" if per_step < 1 else f"{per_step:.1f} s/step"

    def left(self, steps: int) -> str:
        return duration(steps * sum(self.recent) / len(self.recent))


class StepProgress(Progress):
    """A rich progress bar whose first columns are step/total, rate and time left, with the losses on a line of
    their own below it (cut to the terminal's width, never wrapped)."""

    def __init__(self, **kwargs):
        self.losses = Text()
        super().__init__(TextColumn("step"), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                         TextColumn("ETA {task.fields[eta]}"), BarColumn(bar_width=None),
                         TextColumn("epoch {task.fields[epoch]}"), expand=True, **kwargs)

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        yield self.losses


class RunLog:
    """What a run shows and records each step: the progress (a bar in a terminal, plain lines otherwise), the
    estimate line after the first steps, log.jsonl, collapse warnings and (for tests, with IMXLATE_TRACE_PARAMS)
    a parameter digest per step and rank."""

    def __init__(self, run: Run):
        self.run, self.alarm = run, ""  # the alarm marks the progress once a collapse sign was seen
        self.images, self.seconds = 0, 0.0  # since the last logged step: for the logged images/s
        self.pace, self.timed = Pace(), []  # timed: the first steps' seconds, until the estimate line
        shown = not run.quiet and run.rank == 0
        self.plain, self.last_line = shown and not console.is_terminal, time.monotonic()
        self.progress = StepProgress(console=console, disable=not shown or self.plain)

    def __enter__(self):
        run = self.run
        run.family.train()
        self.file = open(run.run_dir / "log.jsonl", "a") if run.rank == 0 else None
        trace_dir = os.environ.get("IMXLATE_TRACE_PARAMS")
        self.trace = open(Path(trace_dir) / f"rank{run.rank}.txt", "a") if trace_dir else None
        self.progress.__enter__()
        self.task = self.progress.add_task("", total=run.stop, completed=run.step, rate="", eta="", epoch="")
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)
        for f in (self.file, self.trace):
            if f:
                f.close()

    def step(self, epoch: int, losses: dict, warnings: list[str], seconds: float) -> None:
        run = self.run
        for msg in warnings:
            self.alarm = "[bold red]collapse?[/] "
            (warnings_console if run.quiet else console).print(f"[yellow]warning[/] at step {run.step}: {msg}",
                                                                soft_wrap=True)
            self.file.write(json.dumps({"step": run.step, "warning": msg}) + "\n")
        if run.rank == 0:
            self.pace.add(seconds)
            self.show(epoch + 1, losses)
            self.estimate(seconds)
            self.record(epoch, losses, seconds)
        if self.trace:
            self.trace.write(f"{run.step} {param_digest(run.family)}\n")
            self.trace.flush()

    def show(self, epoch: int, losses: dict) -> None:
        """The progress bar and losses line, or (without a terminal) a plain line when its step or time comes."""
        run, rate, eta = self.run, self.pace.rate(), self.pace.left(self.run.stop - self.run.step)
        if not self.plain:
            self.progress.losses = Text.from_markup(self.alarm + escape(losses_line(losses)), overflow="ellipsis")
            self.progress.losses.no_wrap = True
            self.progress.update(self.task, completed=run.step, rate=rate, eta=eta, epoch=epoch)
            return
        now = time.monotonic()
        if run.step % run.cfg.log_every == 0 or run.step == run.stop or now - self.last_line >= PLAIN_EVERY_S:
            self.last_line = now
            console.print(f"{self.alarm}step {run.step}/{run.stop}  {rate}  ETA {eta}  epoch {epoch}  "
                          f"{escape(losses_line(losses))}", soft_wrap=True)

    def estimate(self, seconds: float) -> None:
        """Once, after the first few steps: the measured time per step and the plan's length; on a CPU a plan
        over an hour also gets a hint with the quick preset."""
        if self.timed is None:
            return
        self.timed.append(seconds)
        run, left = self.run, self.run.stop - self.run.step
        if len(self.timed) <= ESTIMATE_AFTER or not left:
            return
        per_step, self.timed = sum(self.timed[1:]) / ESTIMATE_AFTER, None
        run.say(f"Measured {per_step:.3g} s/step: {run.stop:,} steps take about {duration(per_step * run.stop)} "
                f"({duration(per_step * left)} left)")
        if run.device.type == "cpu" and per_step * left > LONG_ON_CPU_S and run.cfg.preset is None:
            run.say(f"Hint: that is hours on a CPU. For a first result in minutes add --preset quick "
                    f"({describe_preset('quick')}), or train on a GPU")

    def record(self, epoch: int, losses: dict, seconds: float) -> None:
        """Every --log-every steps (and at the end): a log.jsonl line and the TensorBoard scalars."""
        run = self.run
        self.images += run.cfg.batch_size * run.world * len(run.domains)
        self.seconds += seconds
        if run.step % run.cfg.log_every and run.step != run.stop:
            return
        lr = run.family.lr_factor(run.step - 1, run.schedule_total, run.decay_start)
        self.file.write(json.dumps({"step": run.step, "epoch": epoch, "time": round(run.elapsed, 3),
                                    "lr_factor": lr, **losses}) + "\n")
        self.file.flush()
        run.board.scalars(run.step, {**{f"{loss_group(k)}/{k}": v for k, v in losses.items()},
                                     "train/lr_factor": lr, "train/images_per_s": self.images / max(self.seconds, 1e-9)})
        self.images, self.seconds = 0, 0.0


class Board:
    """TensorBoard event files in the run folder, when the tensorboard package is installed (else a one-line
    note, and log.jsonl alone): each logged step's losses (in sections by loss group), the learning-rate
    factor and images/s, and the sample grids at their steps. A resumed run continues the same curves: it
    purges what an earlier process wrote past the checkpoint and writes only steps beyond it. A context
    manager: leaving it closes the files. `run_dir` None (ranks other than 0): writes nothing."""

    def __init__(self, run_dir: Path | None, step: int, say):
        self.writer, self.start, self.last_image = None, step, step
        if run_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            say(r"Note: no TensorBoard event files (pip install 'imxlate\[tensorboard]'); log.jsonl is written")
            return
        self.writer = SummaryWriter(str(run_dir), purge_step=step + 1 if step else None)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None and step > self.start:
            for tag, v in values.items():
                self.writer.add_scalar(tag, v, step)

    def image(self, step: int, grid: torch.Tensor) -> None:
        if self.writer is not None and step > self.last_image:  # the end of a run may write its last grid again
            self.last_image = step
            self.writer.add_image("samples", grid, step)
            self.writer.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.writer is not None:
            self.writer.close()
