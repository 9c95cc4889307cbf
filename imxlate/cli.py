"""The `imxlate` command line: parsing and printing only; the work lives in library functions."""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import store
from .config import TrainConfig, options_help, parse_extra_args
from .errors import ImxlateError
from .families import REGISTRY, family_class

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="rich",
                  help="Unpaired image-to-image translation: train, translate, evaluate.\n\n"
                       "  imxlate train --domains photos vangogh\n\n"
                       "  imxlate translate input/ --to vangogh\n\n"
                       "  imxlate eval --fid")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def user_errors(fn):
    """Print an ImxlateError as one line and exit with status 2 (no traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ImxlateError as e:
            err.print(f"[red]error:[/] {e}", soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper


def _family_options_text() -> str:
    parts = []
    for name in REGISTRY:
        rows = options_help(family_class(name).Config)
        lines = "\n\n".join(f"  {opt} (default {default}) {help_}" for opt, default, help_ in rows)
        parts.append(f"[bold]--model {name}[/] options:\n\n{lines}")
    return "\n\n".join(parts)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             epilog="Examples:\n\n"
                    "  imxlate train --domains photos vangogh\n\n"
                    "  imxlate train --data horse2zebra --domains horse zebra --epochs 100 --epochs-decay 100\n\n"
                    "  imxlate train --domains a b --steps 200 --crop-size 64 --load-size 72 --ngf 16 --n-blocks 3\n\n"
                    "  imxlate train --resume runs/photos2vangogh\n\n"
                    "  torchrun --nproc_per_node 4 -m imxlate train --domains photos vangogh\n\n")
@user_errors
def train(
    ctx: typer.Context,
    domains: Optional[List[str]] = typer.Option(None, "--domains", help="domain folder names: --domains photos vangogh"),
    data: Path = typer.Option(Path("."), help="folder holding one sub-folder per domain (or trainA/trainB)"),
    model: str = typer.Option("cyclegan", "--model", help=f"family: {', '.join(REGISTRY)}"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="run folder (default runs/<a>2<b>, numbered if taken)"),
    resume: Optional[Path] = typer.Option(None, help="continue the run in this folder (or checkpoint file)"),
    steps: Optional[int] = typer.Option(None, help="stop after N iterations and finish as a full run does"),
    epochs: Optional[int] = typer.Option(None, help="epochs at the initial learning rate (CycleGAN: 100)"),
    epochs_decay: Optional[int] = typer.Option(None, help="epochs of linear decay to zero (CycleGAN: 100)"),
    batch_size: Optional[int] = typer.Option(None, help="images per domain per step, per rank"),
    load_size: Optional[int] = typer.Option(None, help="resize to this before cropping (CycleGAN: 286)"),
    crop_size: Optional[int] = typer.Option(None, help="training image size (CycleGAN: 256)"),
    preprocess: str = typer.Option("resize_and_crop", help="resize_and_crop | crop | scale_width | none"),
    no_flip: bool = typer.Option(False, help="no random horizontal flips"),
    max_images: Optional[int] = typer.Option(None, help="use at most N images per domain"),
    seed: int = typer.Option(0, help="random seed (runs are repeatable)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps"),
    workers: Optional[int] = typer.Option(None, help="data loading processes (default: cores - 1, at most 4)"),
    save_every: int = typer.Option(1000, help="checkpoint every N steps (also at the end and on Ctrl-C)"),
    sample_every: int = typer.Option(500, help="sample grid every N steps"),
    log_every: int = typer.Option(10, help="loss log line every N steps"),
    amp: str = typer.Option("none", help="mixed precision on CUDA: none | bf16 | fp16"),
    gradient_accumulation: int = typer.Option(1, help="average gradients over N steps before an update"),
    quiet: bool = typer.Option(False, help="no progress bar"),
):
    """Train a translation model on folders of unpaired images.

    Options of the chosen family (such as --ngf, --n-blocks, --gan-loss, --lambda-cycle) follow the
    family list below; every choice is saved in the model file.
    """
    from .train import train as run_training

    extra = list(ctx.args)
    while extra and not extra[0].startswith("--"):  # `--domains a b c`: the names after the first
        domains = [*(domains or []), extra.pop(0)]
    if not domains and not resume:
        raise ImxlateError("name the domains to translate between, e.g. --domains photos vangogh")
    cfg = TrainConfig(domains=list(domains or []), data=str(data), model=model, out=str(out_dir) if out_dir else None,
                      steps=steps, epochs=epochs, epochs_decay=epochs_decay, batch_size=batch_size,
                      load_size=load_size, crop_size=crop_size, preprocess=preprocess, no_flip=no_flip,
                      max_images=max_images, seed=seed, device=device, workers=workers, save_every=save_every,
                      sample_every=sample_every, log_every=log_every, amp=amp,
                      gradient_accumulation=gradient_accumulation)
    family_args = parse_extra_args(extra)
    if resume and family_args:
        raise ImxlateError("a resumed run keeps its recipe; drop the family options (only --steps, --device, --workers change)")
    run_training(cfg, family_args, str(resume) if resume else None, quiet=quiet)




@app.command(epilog="Examples:\n\n"
                    "  imxlate translate input/ --to vangogh\n\n"
                    "  imxlate translate photo.jpg 'more/*.png' --to vangogh --model runs/photos2vangogh --out styled/\n\n"
                    "  imxlate translate examples/emoji --to noto --out translated/")
@user_errors
def translate(
    inputs: List[str] = typer.Argument(..., help="image files, folders (recursive) and globs"),
    to: str = typer.Option(..., "--to", help="target domain"),
    model: Optional[str] = typer.Option(None, help="model file or run folder (default: newest in ./runs knowing --to, "
                                                   "then the shipped models)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (default: a new folder named after --to)"),
    source: Optional[str] = typer.Option(None, "--from", help="source domain (models with more than two domains)"),
    batch_size: int = typer.Option(8, help="images of equal size translated together"),
    size: Optional[int] = typer.Option(None, help="resize the short side to this first"),
    samples: int = typer.Option(1, help="variants per input (stochastic families): name_0.png, name_1.png, ..."),
    seed: Optional[int] = typer.Option(None, help="seed for stochastic families (repeatable outputs)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps"),
    overwrite: bool = typer.Option(False, help="replace existing files in --out (never inputs)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
):
    """Translate images into domain --to; outputs keep each input's size and alpha."""
    from .translate import Translator, find_model

    path, how = find_model(model, to)
    tr = Translator.open(path, device=device)
    err.print(f"Model: {path} ({how}; {', '.join(tr.domains)})")
    report = tr.translate_folder(inputs, to, out_dir, source, batch_size, size, samples, seed, overwrite, not quiet)
    if report.failed:
        err.print(f"[red]{len(report.failed)} file(s) failed:[/] " + ", ".join(str(p) for p, _ in report.failed))
    out.print(f"Wrote {len(report.written)} image(s) to {report.out}/")
    if report.failed:
        raise typer.Exit(1)


@app.command(epilog="Examples:\n\n  imxlate info runs/photos2vangogh/model.safetensors\n\n  imxlate info")
@user_errors
def info(model: Optional[str] = typer.Argument(None, help="model file or run folder (default: the shipped model)"),
         as_json: bool = typer.Option(False, "--json", help="print the metadata as JSON")):
    """Describe a model file: family, domains, directions, architecture, sizes, training."""
    from .translate import find_model

    path, _ = find_model(model, None) if model else _shipped_or_newest()
    meta = store.read_metadata(path)
    if as_json:
        out.print_json(json.dumps(meta))
        return
    t = Table(title=str(path), show_header=False)
    t.add_row("family", meta["family"])
    t.add_row("domains", ", ".join(meta["domains"]))
    t.add_row("directions", ", ".join(meta.get("directions", [])))
    t.add_row("image size", str(meta.get("image_size")))
    t.add_row("format", f"{meta['format']} v{meta['format_version']}")
    for name, d in meta.get("networks", {}).items():
        t.add_row(f"network {name}", f"{d['class']}, {d['parameters']:,} parameters")
    t.add_row("architecture", ", ".join(f"{k}={v}" for k, v in meta["config"].items()))
    if any(meta.get("classes", {}).values()):
        t.add_row("classes", "; ".join(f"{k}: {', '.join(v)}" for k, v in meta["classes"].items()))
    tr = meta.get("training", {})
    t.add_row("training", ", ".join(f"{k}={v}" for k, v in tr.items() if k != "config"))
    if meta.get("source"):
        t.add_row("imported from", ", ".join(f"{k}={v}" for k, v in meta["source"].items()))
    out.print(t)


def _shipped_or_newest():
    from .translate import find_model, shipped_models

    shipped = shipped_models()
    return (shipped[0], "shipped") if shipped else find_model(None, None)


@app.command(epilog="Example:\n\n  imxlate runs")
@user_errors
def runs(folder: Path = typer.Argument(Path("runs"), help="the runs folder")):
    """List training runs: family, domains, progress, last checkpoint, model file."""
    import datetime

    from .train import CHECKPOINT, MODEL

    if not folder.is_dir():
        raise ImxlateError(f"no runs folder at {folder}; start one with `imxlate train --domains A B`")
    t = Table("run", "family", "domains", "steps", "last checkpoint", "model")
    for ckpt in sorted(folder.rglob(CHECKPOINT)):
        meta = store.read_metadata(ckpt)["state"]
        when = datetime.datetime.fromtimestamp(ckpt.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        t.add_row(str(ckpt.parent), meta["family"], ", ".join(meta["domains"]), f"{meta['step']} of {meta['stop']}",
                  when, "yes" if (ckpt.parent / MODEL).exists() else "no")
    out.print(t)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        app(args=argv, prog_name="imxlate")
        return
    # Under torchrun, gloo can abort at interpreter exit after a finished run; end each rank
    # explicitly with its status instead (measured: 8 of 8 clean exits, against 2 of 3 without).
    status = 0
    try:
        app(args=argv, prog_name="imxlate")
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        status = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


train.__doc__ += "\n\n" + _family_options_text()
