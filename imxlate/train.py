"""The training loop, written once for every family: devices, DDP, checkpoints, exact resume,
progress, sample grids, the loss log and the final model file."""
from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torchvision.utils import save_image

from . import store
from .config import TrainConfig, apply_overrides, from_dict, to_dict
from .device import pick_device
from .distributed import dist_broadcast, dist_setup, param_digest
from .data import (Domain, Transform, UnpairedDataset, collate, find_domain_folder, load_rgb, to_tensor, upscale_note,
                   worker_count)
from .errors import ImxlateError
from .families import family_class
from .health import CHECK_EVERY, CollapseWatch, look
from .nets.common import param_count

console = Console(highlight=False)
warnings_console = Console(highlight=False, stderr=True)
CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"


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
          quiet: bool = False) -> Path:
    """Train a model as `cfg` says (or continue the run in `resume`) -> the run folder.

    `family_args` are `--key value` overrides of the family's config (strings, converted here).
    """
    cfg.check()  # counts, sizes, domains: refused before anything runs (the CLI calls it too)
    rank, world, local = dist_setup()
    try:
        run_dir = _train(cfg, family_args or {}, resume, quiet, rank, world, local)
        if dist.is_initialized():
            dist.barrier()
        return run_dir
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _say(rank: int, quiet: bool, msg: str) -> None:
    if rank == 0 and not quiet:
        console.print(msg)


def _train(cfg, family_args, resume, quiet, rank, world, local) -> Path:
    state = None
    if resume:
        ckpt = checkpoint_path(resume)
        state = store.load_checkpoint(ckpt)
        run_dir = ckpt.parent
        saved = from_dict(TrainConfig, state["train_config"])
        # A resumed run keeps its recipe; only where and how long it runs may change.
        cfg = replace(saved, steps=cfg.steps if cfg.steps is not None else saved.steps,
                      device=cfg.device, workers=cfg.workers)
        fam_cls = family_class(state["family"])
        fam_cfg = from_dict(fam_cls.Config, state["family_config"])
    else:
        fam_cls = family_class(cfg.model)
        cfg = cfg.resolved(fam_cls.train_defaults)
        fam_cfg, used = apply_overrides(fam_cls.Config(), family_args)
        unknown = set(family_args) - used
        if unknown:
            names = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(unknown))
            raise ImxlateError(f"{names}: not an option of the {cfg.model} family; see `imxlate train --help`")
        fam_cfg = fam_cls.resolve_config(fam_cfg, cfg)
        run_dir = None
    if len(cfg.domains) < 2:
        raise ImxlateError("name at least two domains, e.g. --domains photos vangogh")

    device = pick_device(cfg.device, local if world > 1 else None)
    data_root = Path(cfg.data)
    domains = [Domain(name, find_domain_folder(data_root, name, i), cfg.max_images) for i, name in enumerate(cfg.domains)]
    classes = {d.name: d.classes for d in domains}
    if state and classes != state.get("classes", classes):
        raise ImxlateError("the class folders of the data changed since the checkpoint was written")

    seed_everything(cfg.seed)  # networks start from the seed (a resume then loads its state)
    family = fam_cls(fam_cfg, cfg.domains, cfg.crop_size, classes)
    family.check_data(domains)
    if not resume:
        run_dir = Path(dist_broadcast(str(new_run_dir(cfg.out, cfg.domains)) if rank == 0 else None))
    if world > 1 and device.type == "cuda":  # batch norm statistics over the global batch (keys unchanged)
        family.nets = torch.nn.SyncBatchNorm.convert_sync_batchnorm(family.nets)
    family.to(device)
    family.rng.manual_seed(cfg.seed + 7919 * rank)
    family.setup_training(cfg.amp, cfg.gradient_accumulation)
    family.start_ema(cfg.ema)
    if dist.is_initialized():  # one starting point on every rank
        for p in [*family.nets.parameters(), *family.nets.buffers()]:
            dist.broadcast(p.data, 0)

    dataset = UnpairedDataset(domains, Transform(cfg.load_size, cfg.crop_size, cfg.preprocess, not cfg.no_flip), cfg.seed)
    steps_per_epoch = math.ceil(len(dataset) / (cfg.batch_size * world))
    schedule_total = (cfg.epochs + cfg.epochs_decay) * steps_per_epoch
    decay_start = cfg.epochs * steps_per_epoch
    main_steps = min(cfg.steps, schedule_total) if cfg.steps else schedule_total
    stages = family.stages(main_steps)
    stop = sum(n for _, n in stages)

    step, elapsed = 0, 0.0
    watch = CollapseWatch()
    watched_from = stop - stages[-1][1]  # earlier stages (e.g. pre-trained autoencoders) translate nothing yet
    if state:
        watch.load(state.get("health", {}))
        family.load_state(state["family_state"])
        set_rng_state(state["rng"])
        step, elapsed = state["step"], state["elapsed"]
        _say(rank, quiet, f"Resuming {run_dir} at step {step}")
    else:
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
        for d in domains:
            _say(rank, quiet, f"Domain [bold]{d.name}[/]: {len(d)} images in {d.root}"
                 + (f" ({len(d.classes)} classes)" if d.classes else ""))
        sizes = ", ".join(f"{k} {param_count(v):,}" for k, v in family.nets.items())
        _say(rank, quiet, f"Run folder: {run_dir}")
        _say(rank, quiet, f"Device: {device}" + (f" x {world} ranks (global batch {cfg.batch_size * world})" if world > 1 else ""))
        _say(rank, quiet, f"Family: {fam_cls.name}; networks: {sizes} parameters")
    _say(rank, quiet, f"Training {stop} steps ({steps_per_epoch} per epoch, batch {cfg.batch_size}, "
         f"{cfg.crop_size}px); stages: {', '.join(f'{n} {s}' for n, s in stages)}"
         + ("" if state else upscale_note(domains, cfg.crop_size, cfg.preprocess)))

    meta = {"family": fam_cls.name, "family_config": to_dict(fam_cfg), "train_config": to_dict(cfg),
            "domains": cfg.domains, "classes": classes, "image_size": cfg.crop_size, "world_size": world,
            "data": {d.name: str(d.root.resolve()) for d in domains}, "stop": stop}

    def save_checkpoint():
        if rank == 0:
            store.save_checkpoint({**meta, "step": step, "elapsed": elapsed, "family_state": family.state(),
                                   "rng": rng_state(), "health": watch.state()}, run_dir / CHECKPOINT)

    fixed = {d.name: torch.stack([to_tensor(load_rgb(p).resize((cfg.crop_size, cfg.crop_size)))
                                  for p in d.paths[:4]]) for d in domains}
    fixed_n = min(len(v) for v in fixed.values())
    fixed = {k: v[:fixed_n].to(device) for k, v in fixed.items()}

    def write_samples():
        if rank != 0:
            return
        family.eval()
        with torch.no_grad(), family.averaged():
            rows = family.sample_rows(fixed)
        family.train()
        (run_dir / "samples").mkdir(exist_ok=True)
        save_image(torch.cat(rows).float().cpu(), run_dir / "samples" / f"step_{step:07d}.png",
                   nrow=fixed_n, normalize=True, value_range=(-1, 1))

    def write_model(path: Path):
        with family.averaged():
            store.save_model(family, path,
                             training={"steps": step, "planned_steps": stop,
                                       "epochs": round(step / steps_per_epoch, 3),
                                       "batch_size": cfg.batch_size, "global_batch": cfg.batch_size * world,
                                       "seed": cfg.seed, "wall_time_s": round(elapsed, 1), "device": str(device),
                                       "config": to_dict(cfg)},
                             data=meta["data"])

    alarm = ""  # shown on the progress line once a collapse sign has been seen
    interrupted = []
    previous_handler = None
    if hasattr(signal, "SIGINT"):
        def on_sigint(signum, frame):
            if interrupted:
                raise KeyboardInterrupt
            interrupted.append(True)
        try:
            previous_handler = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread
            previous_handler = None

    family.train()
    log = open(run_dir / "log.jsonl", "a") if rank == 0 else None
    trace_dir = os.environ.get("IMXLATE_TRACE_PARAMS")  # tests: a parameter digest per step and rank
    trace = open(Path(trace_dir) / f"rank{rank}.txt", "a") if trace_dir else None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[speed]}"), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
                        console=console, disable=quiet or rank != 0, transient=False)
    images_per_step = cfg.batch_size * world * len(domains)
    try:
        with progress:
            task = progress.add_task("", total=stop, completed=step, speed="", losses="")
            while step < stop:
                epoch, start = divmod(step, steps_per_epoch)
                dataset.set_epoch(epoch)
                loader = torch.utils.data.DataLoader(
                    dataset, batch_sampler=BatchPlan(len(dataset), cfg.batch_size, world, rank, start),
                    num_workers=worker_count(cfg.workers), collate_fn=lambda items: collate(items, cfg.domains),
                    generator=torch.Generator())  # its own seed draw, so the global RNG stays exactly resumable
                t0 = time.perf_counter()
                for batch in loader:
                    family.set_lr_factor(family.lr_factor(step, schedule_total, decay_start))
                    losses = family.train_step(batch, step)
                    family.update_ema(step)
                    bad = [k for k, v in losses.items() if not math.isfinite(v)]
                    if bad:
                        raise Stop(f"loss {bad[0]} became {losses[bad[0]]} at step {step + 1}")
                    step += 1
                    news = watch.losses(step, losses)
                    if rank == 0 and step % CHECK_EVERY == 0 and step > watched_from:
                        news += look(family, watch, step, fixed)
                    if rank == 0 and news:
                        alarm = "[bold red]collapse?[/] "
                        for msg in news:
                            (warnings_console if quiet else progress.console).print(
                                f"[yellow]warning[/] at step {step}: {msg}", soft_wrap=True)
                            log.write(json.dumps({"step": step, "warning": msg}) + "\n")
                    now = time.perf_counter()
                    elapsed += now - t0
                    speed = images_per_step / max(now - t0, 1e-9)
                    t0 = now
                    if rank == 0:
                        progress.update(task, completed=step, description=f"{alarm}epoch {epoch + 1}",
                                        speed=f"{speed:.1f} img/s",
                                        losses=" ".join(f"{k} {v:.3f}" for k, v in losses.items()))
                        if step % cfg.log_every == 0 or step == stop:
                            log.write(json.dumps({"step": step, "epoch": epoch, "time": round(elapsed, 3),
                                                  "lr_factor": family.lr_factor(step - 1, schedule_total, decay_start),
                                                  **losses}) + "\n")
                            log.flush()
                    if step % cfg.sample_every == 0:
                        write_samples()
                    if step % cfg.save_every == 0:
                        save_checkpoint()
                    if cfg.snapshot_every and step % cfg.snapshot_every == 0 and rank == 0:
                        write_model(run_dir / "snapshots" / f"step_{step:07d}.safetensors")
                    if trace:
                        trace.write(f"{step} {param_digest(family)}\n")
                        trace.flush()
                    if world > 1:  # every rank stops together when any was interrupted
                        flag = torch.tensor([float(bool(interrupted))], device=device)
                        dist.all_reduce(flag)
                        if flag.item() > 0 and not interrupted:
                            interrupted.append(True)
                    if interrupted or step >= stop:
                        break
                if interrupted:
                    save_checkpoint()
                    raise ImxlateError(f"interrupted at step {step}; checkpoint saved. "
                                       f"Continue with: imxlate train --resume {run_dir}")
    except Stop as e:
        last = run_dir / CHECKPOINT
        raise ImxlateError(f"{e}; training stopped. The last good checkpoint is {last if last.exists() else 'not written yet'}; "
                           "try a lower learning rate (--lr) or another --gan-loss") from None
    finally:
        for f in (log, trace):
            if f:
                f.close()
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)

    save_checkpoint()
    write_samples()
    if rank == 0:
        write_model(run_dir / MODEL)
        _say(rank, quiet, f"Done: {step} steps in {elapsed:.0f}s. Model: {run_dir / MODEL}")
    return run_dir
