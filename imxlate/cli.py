"""The `imxlate` command line, the only module that uses Typer: each command parses its options, calls
one library function (training in train.py, translation in translate.py, evaluation in evaluate.py,
import in foreign.py, export in export.py, run reports in report.py, the try-a-model page in serve.py) and
prints the result. Besides the commands: `fail` and `user_errors` (every error a user can cause as one
`error:` line, status 2; Ctrl-C, SIGTERM and SIGHUP as one line, status 130), `fitted` (lines that never break
a name), `OneLineErrors` (usage errors the same way), `names_and_options` (`--domains a b c`),
`config_options` (a config dataclass's fields as options: `train` takes TrainConfig's) and `family_help`
(`imxlate train --family NAME --help`: that family's options, from its config dataclass).

Torch and the library modules are imported inside the commands that use them, so `imxlate --help`,
`--version` and usage errors answer at once."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import signal
import sys
import threading
import typing
from pathlib import Path
from typing import List, Optional

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

try:  # typer 0.2x carries its own click
    from typer._click import exceptions as click_exceptions
except ImportError:  # older typer uses click itself
    from click import exceptions as click_exceptions

from . import __version__
from .config import TrainConfig, check_at_least, is_recorded, parse_extra_args
from .errors import ImxlateError, os_error_message
from .families import REGISTRY, family_class


def fail(message: str, status: int = 2):
    """Print `message` as one `error:` line on stderr and exit with `status`: the one place errors are shown."""
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise SystemExit(status)


class PlainFlags:
    """Help pages show a flag (an option that takes no value, such as --fid) without a type after it."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False):
                p.metavar = ""
        return params


class Command(PlainFlags, TyperCommand):
    """Every imxlate command."""


class OneLineErrors(PlainFlags, TyperGroup):
    """Usage errors (an unknown option, a missing argument, a bad number) as one line, like every other error."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except getattr(click_exceptions, "NoArgsIsHelpError", ()) as e:
            e.show()
            raise SystemExit(e.exit_code) from None
        except click_exceptions.ClickException as e:
            ctx = getattr(e, "ctx", None)
            msg = e.format_message().replace("\n", " ").rstrip(".")
            if ctx is not None:
                msg += f"{' ' if msg.endswith('?') else '; '}see `{ctx.command_path} --help`"
            fail(msg, e.exit_code)
        except typer.Abort:
            fail("aborted", 1)
        raise SystemExit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="rich",
                  help="Unpaired image-to-image translation: train, translate, evaluate.\n\n"
                       "  imxlate train --domains photos vangogh\n\n"
                       "  imxlate translate input/ --to vangogh\n\n"
                       "  imxlate eval --fid")
# Piped or captured output keeps whole lines (rich would otherwise wrap tables at 80 columns).
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)


def command(*args, **kwargs):
    """`app.command` with imxlate's Command class (or a subclass of it)."""
    return app.command(*args, cls=kwargs.pop("cls", Command), **kwargs)


def show_version(value: bool) -> None:
    """`imxlate --version`: print the version and stop before any command runs."""
    if value:
        out.print(f"imxlate {__version__}")
        raise typer.Exit()


@app.callback()
def options(version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                         help="print the version and exit")):
    """The options before a command (--version); the page's help is the app's (typer.Typer above)."""


# Where translate, eval, info and serve find a model when none is given (imxlate.models.find_model).
DEFAULT_MODEL = ("the newest finished run under ./runs (knowing --to, where given), else the newest unfinished one, "
                 "then a shipped model")


# Status 130 (128 + SIGINT) for a command stopped by Ctrl-C, SIGTERM or SIGHUP, as shells report an interrupt.
INTERRUPTED = 130


def user_errors(fn):
    """Print an ImxlateError (or a file error no code path foresaw: a full disk, no permission) as one
    line and exit with status 2, never a traceback; an interrupt (Ctrl-C, SIGTERM, SIGHUP) as one line that
    says what was kept (the KeyboardInterrupt's message, from training) and status 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with stop_signals_as_ctrl_c():
                return fn(*args, **kwargs)
        except KeyboardInterrupt as e:
            # Plainly, not through rich: an interrupt inside one of its prints leaves that line in its buffer.
            print(str(e) or "interrupted before it finished; run the command again to complete it", file=sys.stderr)
            raise SystemExit(INTERRUPTED) from None
        except ImxlateError as e:
            fail(str(e))
        except OSError as e:
            fail(os_error_message(e))
    return wrapper


@contextlib.contextmanager
def stop_signals_as_ctrl_c():
    """Inside the block SIGTERM (`kill`, a job scheduler) and SIGHUP (a closed terminal) do what Ctrl-C does:
    training saves its checkpoint and stops, other commands stop with status 130. A signal set to be ignored
    (nohup) stays ignored; outside the main thread nothing changes."""
    def as_ctrl_c(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):  # Ctrl-C ignored (a background job) or default: stop all the same
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            number = getattr(signal, name, None)  # Windows has no SIGHUP
            if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
                previous[number] = signal.signal(number, as_ctrl_c)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def fitted(console: Console, *parts: str) -> str:
    """`parts` joined by spaces, with a new indented line before a part that would pass the terminal's width, so
    no name or path is ever cut (print it with soft_wrap=True); to a file or pipe, one line."""
    lines = [parts[0]]
    for part in parts[1:]:
        if console.is_terminal and cell_len(lines[-1]) + 1 + cell_len(part) > console.width:
            lines.append("  " + part)
        else:
            lines[-1] += " " + part
    return "\n".join(lines)


def names_and_options(names: list[str] | None, args: list[str]) -> tuple[list[str], list[str]]:
    """`--domains a b c` reaches a command as `--domains a` plus stray names among its extra arguments
    (click takes one value per option): -> (every name, the other extra arguments: `--key [value]` tokens)."""
    names, options, args = list(names or []), [], list(args)
    while args:
        token = args.pop(0)
        if not token.startswith("--"):
            names.append(token)
            continue
        options.append(token)
        if "=" not in token and args and not args[0].startswith("--"):
            options.append(args.pop(0))
    return names, options


def config_options(cls):
    """Decorator: the fields of config dataclass `cls` become options of the command, received in its
    `**config`: --field-name (or the flags in the field's metadata), with the field's default (a list starts
    empty: None), the help and the help panel in its metadata; recorded fields are hidden. They go into the
    signature Typer reads, after the command's positional parameters."""
    hints = typing.get_type_hints(cls)
    fields = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name], default=typer.Option(
                  None if f.default is dataclasses.MISSING else f.default,
                  *f.metadata.get("flags", [f"--{f.name.replace('_', '-')}"]), help=_field_help(f, hints[f.name]),
                  hidden=is_recorded(f), rich_help_panel=f.metadata.get("panel"), show_default=f.default is not True))
              for f in dataclasses.fields(cls)]

    def add(fn):
        params = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
        positional = [p for p in params if p.kind is not p.KEYWORD_ONLY]
        fn.__signature__ = inspect.Signature([*positional, *fields, *params[len(positional):]])
        return fn
    return add


def _field_help(f: dataclasses.Field, tp) -> str:
    """A field's help; a switch that is on by default says how to turn it off (`--name false`)."""
    text = f.metadata.get("help", "")
    if tp is bool and f.default is True:
        return f"{text} (on by default; --{f.name.replace('_', '-')} false turns it off)"
    return text


def _named_family(args: list[str]) -> str | None:
    """The family named among `imxlate train`'s arguments (--family NAME, --family=NAME or --model ...)."""
    flags = next(f.metadata["flags"] for f in dataclasses.fields(TrainConfig) if f.name == "model")
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        if key in flags:
            return value if eq else (args[i + 1] if i + 1 < len(args) else None)
    return None


class TrainCommand(Command):
    """`imxlate train`: its help lists the common options and the families; with --family NAME it lists that
    family's options instead."""

    def parse_args(self, ctx, args):
        ctx.meta["imxlate.family"] = _named_family(args)
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter):
        name = ctx.meta.get("imxlate.family")
        if name is None:
            return super().format_help(ctx, formatter)
        if name not in REGISTRY:
            ctx.fail(f"unknown model family '{name}'; choose from {', '.join(REGISTRY)}")
        return family_help(name).format_help(ctx, formatter)


@functools.cache
def family_help(name: str) -> TyperCommand:
    """The help page of `imxlate train --family NAME --help`: the family's options from its config dataclass
    (recorded fields hidden), what it is, and its training defaults."""
    cls = family_class(name)
    about = " ".join((cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").split("\n\n")[0].split())
    defaults = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in cls.train_defaults.items())

    def family_options(**config):
        """Only its help page is shown: `train` reads these options."""

    family_options.__doc__ = (f"Options of the {escape(name)} family, for `imxlate train --family {escape(name)} "
                              f"...`. {escape(about)}\n\nEvery choice is saved in the model file; `imxlate train "
                              "--help` lists the options every family takes.")
    page = typer.Typer(rich_markup_mode="rich", add_completion=False)
    page.command(cls=Command, epilog=f"Training defaults of {escape(name)}: {escape(defaults)}." if defaults else None)(
        config_options(cls.Config)(family_options))
    return typer.main.get_command(page)


@command(cls=TrainCommand, context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
         epilog=f"[bold]Families[/]: {', '.join(REGISTRY)}. Each has options of its own (such as --ngf, --ndf, "
                "--n-blocks, --lambda-cycle): `imxlate train --family NAME --help` lists them.\n\n"
                "Examples:\n\n"
                "  imxlate train --domains photos vangogh --preset quick\n\n"
                "  imxlate train --data horse2zebra --domains horse zebra --epochs 100 --epochs-decay 100\n\n"
                "  imxlate train --domains a b --family cut --steps 2000 --crop-size 64 --ngf 16 --ndf 16\n\n"
                "  imxlate train --domains sans script --generator unet --warp affine   (where the target draws "
                "shapes differently: slant, proportions)\n\n"
                "  imxlate train --resume runs/photos2vangogh\n\n"
                "  torchrun --nproc_per_node 4 -m imxlate train --domains photos vangogh\n\n")
@user_errors
@config_options(TrainConfig)
def train(
    ctx: typer.Context,
    *,
    resume: Optional[Path] = typer.Option(None, help="continue the run in this folder (or checkpoint file)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
    **config,
):
    """Train a translation model on folders of unpaired images; every choice is saved in the model file.

    The common options come first; a family's own options: `imxlate train --family NAME --help`.
    """
    from .train import train as run_training

    domains, family_options = names_and_options(config.pop("domains"), ctx.args)
    cfg = TrainConfig(domains=domains, **config)
    given = {name for name in (*config, "domains")  # typed, so a resume can tell `--seed 0` from no --seed
             if ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")}
    run_training(cfg, parse_extra_args(family_options), str(resume) if resume else None, quiet=quiet, given=given)


@command(epilog="Examples:\n\n"
                "  imxlate translate input/ --to vangogh\n\n"
                "  imxlate translate photo.jpg 'more/*.png' --to vangogh --model runs/photos2vangogh --out styled/\n\n"
                "  imxlate translate examples/emoji --to noto --out translated/\n\n"
                "  imxlate translate frame_8k.png --to vangogh --max-memory 4GB")
@user_errors
def translate(
    inputs: List[str] = typer.Argument(..., help="image files, folders (recursive), globs and video files "
                                       "(mp4, mov, mkv, ...; needs pip install 'imxlate[video]')"),
    to: str = typer.Option(..., "--to", help="target domain"),
    model: Optional[str] = typer.Option(None, help="model file or run folder (default: " + DEFAULT_MODEL + ")"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (default: <to>-translated/; an existing "
                                           "file there is replaced only with --overwrite)"),
    ext: Optional[str] = typer.Option(None, "--ext", help="write every image in this format: png | jpg | webp | "
                                      "tiff | bmp (default: each input's own; alpha and other formats give png)"),
    source: Optional[str] = typer.Option(None, "--from", help="source domain (models with more than two domains)"),
    batch_size: Optional[int] = typer.Option(None, help="images of equal size translated together (default: 8 on "
                                             "a GPU; 1 on the CPU, where batches cost time per image)"),
    size: Optional[int] = typer.Option(None, help="resize the short side to this first"),
    samples: int = typer.Option(1, help="variants per input (stochastic families): name_0.jpg, name_1.jpg, ... for name.jpg"),
    seed: Optional[int] = typer.Option(None, help="seed for stochastic families (repeatable outputs)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace existing files in the output folder (never inputs; "
                                   "a link there is replaced, never written through)"),
    max_pixels: Optional[int] = typer.Option(None, help="skip images with more pixels than this (width x height, "
                                             "after --size; default: no cap, images are tiled to fit --max-memory, "
                                             "and only decompression bombs are skipped)"),
    no_verify: bool = typer.Option(False, "--no-verify", help="load a model file whose recorded digest does not "
                                   "match (changed bytes) anyway"),
    tile: Optional[int] = typer.Option(None, "--tile", help="translate in tiles of N x N pixels plus margins; the "
                                       "result equals the untiled one (default: tiles only when an image needs more "
                                       "than --max-memory)"),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="memory the whole run may use, e.g. 4GB "
                                             "(default: half the available RAM, or 80% of free GPU memory); larger "
                                             "images are streamed in tiles, with the same result"),
    steady: Optional[str] = typer.Option(None, "--steady", help="frames of a video (or a folder of frames) share "
                                         "normalisation statistics, less flicker: first (the first frame's) | "
                                         "running (a moving average)"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16 | fp16 (autocast; fp16 on CUDA only)"),
    compile_net: bool = typer.Option(False, "--compile", help="torch.compile the generator (faster on GPUs for "
                                     "many images of one size; compiling takes a while)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
):
    """Translate images or videos into domain --to; outputs keep each input's name, format, size and alpha,
    videos their frame rate and audio.

    An image that cannot be read or is too large is skipped and reported (exit status 1); the others
    are translated. Outputs are written as new files and renamed into place; an existing one is refused
    unless --overwrite.
    """
    from .models import find_model
    from .tiling import budget
    from .translate import Translator, check_ext, check_options, default_out, make_steady
    from .video import is_video, output_paths, translate_video

    # oneDNN and ideep keep a compiled kernel per layer and input shape, up to 1,024 each: over a folder of many
    # image sizes that held ~100 MiB more (benchmarks/RESULTS.md). 128 keep a generator's for a dozen sizes.
    # Set here, not in the library: training uses more kernels than that and would keep recompiling them.
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(name, "128")
    check_options(batch_size, size, samples, seed, max_pixels)
    check_ext(ext)
    videos = [Path(i) for i in inputs if is_video(i) and not Path(i).is_dir()]
    images = [i for i in inputs if not (is_video(i) and not Path(i).is_dir())]
    if videos and samples > 1:
        fail("--samples works on images; a video is translated once")
    path, how = find_model(model, to)
    tr = Translator.open(path, device=device, verify=not no_verify, precision=precision, compile=compile_net)
    say_model(path, how, tr.domains)
    make_steady(tr, steady, to, source, tile, samples)  # refuses what cannot go with --steady before anything runs
    limits = budget(max_memory, tr.family.device, tile)  # parsed once, for every video and image of the run
    out_dir = out_dir if out_dir is not None or not videos else default_out(to)
    targets = output_paths(videos, out_dir, overwrite) if videos else []
    for video, target in zip(videos, targets):
        n = translate_video(tr, video, to, target, source, batch_size, size, seed, steady, max_memory=limits)
        out.print(f"Wrote {target} ({n} frames)")
    if not images:
        return
    report = tr.translate_folder(images, to, out_dir, source, batch_size, size, samples, seed, overwrite, not quiet,
                                 max_pixels, max_memory=limits, steady=steady, ext=ext)
    out.print(f"Wrote {len(report.written)} image(s) to {report.out}/")
    if report.failed:
        fail(f"{len(report.failed)} file(s) skipped (reasons above): " + ", ".join(str(p) for p, _ in report.failed), 1)


@command(name="eval", epilog="Examples:\n\n"
                             "  imxlate eval --fid\n\n"
                             "  imxlate eval --fid --kid --real testB/ --fake results/fake_B/\n\n"
                             "  imxlate eval --model model.safetensors --source testA/ --target testB/ --to zebra --fid --kid\n\n"
                             "  imxlate eval --fid --real testB/ --save-stats zebra_test.npz")
@user_errors
def evaluate(
    fid: bool = typer.Option(False, "--fid", help="Fréchet Inception Distance"),
    kid: bool = typer.Option(False, "--kid", help="Kernel Inception Distance (better for small test sets)"),
    inception_score: bool = typer.Option(False, "--is", help="Inception Score of the translated images"),
    real: Optional[str] = typer.Option(None, help="real images: a folder or a statistics .npz"),
    fake: Optional[str] = typer.Option(None, help="generated images: a folder"),
    model: Optional[str] = typer.Option(None, help="model file or run folder (default: " + DEFAULT_MODEL + ")"),
    source: Optional[Path] = typer.Option(None, help="images to translate (with --model)"),
    target: Optional[str] = typer.Option(None, help="real images of the target domain (with --model)"),
    to: Optional[str] = typer.Option(None, "--to", help="target domain (with --source)"),
    paired_target: Optional[Path] = typer.Option(None, help="ground-truth folder: L1, SSIM, top-1 by file name"),
    classifier: Optional[Path] = typer.Option(None, help="classifier file: label preservation of translations"),
    save_stats: Optional[Path] = typer.Option(None, help="save the --real statistics to this .npz"),
    preset: str = typer.Option("pytorch-fid", help="pytorch-fid | torch-fidelity | clean"),
    inception_weights: Optional[Path] = typer.Option(None, help="FID Inception weights file (else "
                                                     "$IMXLATE_INCEPTION_WEIGHTS, then the torch hub cache)"),
    download: bool = typer.Option(False, "--download", help="download the standard Inception weights if missing"),
    allow_unverified_weights: bool = typer.Option(False, "--allow-unverified-weights", help="accept a weights file that fails the checksum "
                                                  "(scores are then marked not comparable)"),
    batch_size: int = typer.Option(50, help="images per Inception batch"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps"),
    no_verify: bool = typer.Option(False, "--no-verify", help="load a model file whose recorded digest does not "
                                   "match (changed bytes) anyway"),
    as_json: bool = typer.Option(False, "--json", help="print results as JSON"),
):
    """Score translations: FID / KID / IS against real images, label preservation, paired metrics.

    With no paths it evaluates the default model (the newest finished run in ./runs, as translate
    chooses) on the data it was trained on (held-out split when there is one) in every direction the
    model has. Options are checked before any
    network is loaded or any image translated.
    """
    from .evaluate import evaluate as run_evaluation

    result = run_evaluation([m for m, on in (("fid", fid), ("kid", kid), ("is", inception_score)) if on],
                            real=real, fake=fake, model=model, source=source, target=target, to=to,
                            paired_target=paired_target, classifier=classifier, save_stats=save_stats, preset=preset,
                            inception_weights=inception_weights, download=download,
                            allow_unverified_weights=allow_unverified_weights, batch_size=batch_size, device=device,
                            verify=not no_verify, progress=not as_json)
    if result.report is not None:
        out.print_json(json.dumps(result.report)) if as_json else out.print(result.text)


@command(epilog="Examples:\n\n  imxlate info runs/photos2vangogh/model.safetensors\n\n  imxlate info")
@user_errors
def info(model: Optional[str] = typer.Argument(None, help="model file or run folder (default: " + DEFAULT_MODEL + ")"),
         as_json: bool = typer.Option(False, "--json", help="print the metadata as JSON")):
    """Describe a model file (family, domains, directions, architecture, sizes, training), a checkpoint or a
    classifier file."""
    from . import store
    from .families import describe_file
    from .models import find_model

    path, how = find_model(model)
    meta, status = describe_file(path)  # a file that is not intact or whose metadata lies is an error, not a table
    if how != "given":
        say_model(path, how, meta["domains"])
    integrity = ("intact (its recorded digest matches)" if status == "intact"
                 else "no digest recorded (written before imxlate recorded one; not checked)")
    if as_json:
        out.print_json(json.dumps({**meta, "integrity": status}))
        return
    if meta["format"] == store.CLASSIFIER_FORMAT:
        out.print(f"{path}: classifier of {len(meta['classes'])} classes ({', '.join(meta['classes'])}), "
                  f"{meta['image_size']} px; integrity: {integrity}")
        return
    if meta["format"] != store.MODEL_FORMAT:
        state = meta["state"]
        out.print(f"{path}: training checkpoint of {state.get('family')} ({', '.join(state.get('domains', []))}), "
                  f"step {state.get('step')} of {state.get('stop')}; integrity: {integrity}")
        return
    t = Table(title=str(path), show_header=False)
    t.add_row("family", meta["family"])
    t.add_row("domains", ", ".join(meta["domains"]))
    t.add_row("directions", ", ".join(map(str, meta.get("directions", []))))
    t.add_row("image size", str(meta.get("image_size")))
    t.add_row("format", f"{meta['format']} v{meta.get('format_version')}")
    t.add_row("integrity", integrity)
    for name, d in (meta.get("networks") or {}).items():
        d = d if isinstance(d, dict) else {}
        t.add_row(f"network {name}", f"{d.get('class')}, {d.get('parameters', 0):,} parameters")
    t.add_row("architecture", ", ".join(f"{k}={v}" for k, v in meta["config"].items()))
    classes = meta.get("classes") if isinstance(meta.get("classes"), dict) else {}
    if any(classes.values()):
        t.add_row("classes", "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in classes.items()))
    tr = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    t.add_row("training", ", ".join(f"{k}={v}" for k, v in tr.items() if k != "config"))
    if isinstance(meta.get("source"), dict) and meta["source"]:
        t.add_row("imported from", ", ".join(f"{k}={v}" for k, v in meta["source"].items()))
    out.print(t)


def say_model(path: Path, how: str, domains: list[str]) -> None:
    """The one line (on stderr) that says which model a command uses, why, and the domains it knows."""
    err.print(escape(fitted(err, f"Model: {path}", f"({how}; {', '.join(domains)})")), soft_wrap=True)


@command(epilog="Example:\n\n  imxlate runs")
@user_errors
def runs(folder: Path = typer.Argument(Path("runs"), help="the runs folder")):
    """List training runs: each run folder on its own line, then its family, domains, progress, last checkpoint,
    model file and report page."""
    from .report import LOG
    from .store import CHECKPOINT

    if not folder.is_dir():
        raise ImxlateError(f"no runs folder at {folder}; start one with `imxlate train --domains A B`")
    # A run folder holds a checkpoint from its start; one with only a loss log was stopped before its first save
    # by an older imxlate (or killed as its folder appeared).
    found = sorted({p.parent for name in (CHECKPOINT, LOG) for p in folder.rglob(name)})
    for run in found:
        out.print(escape(str(run)), soft_wrap=True)
        first, *rest = _run_facts(run)
        out.print(escape(fitted(out, "  " + first, *rest)), soft_wrap=True)
    end = (f"{len(found)} run(s) in {folder}. Open a run's report.html in a browser; `imxlate report RUN` writes or "
           "updates it (also mid-run).")
    out.print(escape(fitted(out, *end.split(" "))), soft_wrap=True)


def _run_facts(run: Path) -> list[str]:
    """What `imxlate runs` says of a run folder, in short parts: 'cyclegan: photos, vangogh;', 'step 40 of 2000;',
    'saved 2024-05-01 12:00;', 'model file;', 'report.html' (or what is missing)."""
    import datetime

    from .models import checkpoint_state
    from .report import REPORT
    from .store import CHECKPOINT, MODEL

    ckpt = run / CHECKPOINT
    outputs = ["model file;" if (run / MODEL).exists() else "no model file yet;",
               REPORT if (run / REPORT).is_file() else "no report yet"]
    if not ckpt.is_file():
        return ["no checkpoint (stopped before its first save);", *outputs]
    when = datetime.datetime.fromtimestamp(ckpt.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    try:
        state = checkpoint_state(ckpt)
        about = [f"{state['family']}: {', '.join(state['domains'])};", f"step {state['step']} of {state['stop']};"]
    except (ImxlateError, KeyError, TypeError):
        about = ["unreadable checkpoint;"]
    return [*about, f"saved {when};", *outputs]


@command(epilog="Examples:\n\n  imxlate report runs/photos2vangogh\n\n"
                "  tensorboard --logdir runs   (event files, with the tensorboard extra)")
@user_errors
def report(run: Path = typer.Argument(..., help="the run folder")):
    """Write RUN/report.html: recipe, loss curves, sample grids, collapse warnings and snapshots on one page
    that opens from disk (training writes it at the end; run this for a run in progress)."""
    from .report import MATPLOTLIB_NOTE, write_report

    path, summary = write_report(run)
    out.print(f"Wrote {path}: {len(summary['groups'])} loss group(s), {len(summary['samples'])} sample grid(s), "
              f"{summary['warnings']} warning(s), {len(summary['snapshots'])} snapshot(s)")
    if summary["groups"] and not summary["plotted"]:
        err.print(f"Note: {escape(MATPLOTLIB_NOTE)}")


@command(epilog="Examples:\n\n  imxlate serve runs/photos2vangogh\n\n  imxlate serve model.safetensors --port 0")
@user_errors
def serve(
    model: Optional[str] = typer.Argument(None, help="model file or run folder (default: " + DEFAULT_MODEL + ")"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (another than 127.0.0.1 lets other "
                                               "machines use the page)"),
    port: int = typer.Option(8000, help="port to listen on; 0 picks a free one"),
    max_upload_mb: float = typer.Option(20.0, help="refuse uploads larger than this many megabytes"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps"),
    no_verify: bool = typer.Option(False, "--no-verify", help="load a model file whose recorded digest does not "
                                   "match (changed bytes) anyway"),
    threads: int = typer.Option(16, help="serve at most this many connections at once; more wait for a free one"),
):
    """A local web page to try a model: pick an image and a target domain, see and download the translation.

    Nothing is written to disk. Ctrl-C stops it.
    """
    from .serve import serve as run_server
    from .models import find_model
    from .translate import Translator

    path, how = find_model(model)
    tr = Translator.open(path, device=device, verify=not no_verify)
    if how != "given":
        say_model(path, how, tr.domains)
    run_server(tr, host, port, max_upload_mb, say=lambda msg: out.print(msg, soft_wrap=True), threads=threads)


@command("train-classifier", epilog="Example:\n\n  imxlate train-classifier digits/train/printed --out digits_printed.safetensors")
@user_errors
def train_classifier(
    data: List[Path] = typer.Argument(..., help="folders holding one subfolder of images per class (same names merge)"),
    out_file: Path = typer.Option(..., "--out", help="classifier file to write (.safetensors)"),
    steps: int = typer.Option(2000, help="training iterations"),
    batch_size: int = typer.Option(64, help="images per step"),
    image_size: int = typer.Option(32, help="images are resized to this square size"),
    width: int = typer.Option(32, help="channels of the first convolution"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    seed: int = typer.Option(0, help="random seed"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps"),
):
    """Train a small classifier on class folders (to judge translations with eval --classifier, or as --perceptual-net)."""
    from . import store
    from .config import check_seed
    from .device import pick_device
    from .classifier import train_classifier as run

    check_at_least({"steps": steps, "batch_size": batch_size, "image_size": image_size, "width": width}, 1)
    check_at_least({"lr": lr}, 0)
    check_seed(seed)
    if out_file.is_dir():
        raise ImxlateError(f"--out {out_file} is a folder; --out names the classifier file to write")
    store.prepare_folder(out_file.parent, "--out folder")
    s = run(list(data), out_file, steps, batch_size, image_size, width, lr, seed, pick_device(device))
    out.print(f"Wrote {s['path']}: {len(s['classes'])} classes, {s['images']} images, "
              f"training accuracy {s['train_accuracy']:.1%}")


@command("import", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
         epilog="Examples:\n\n"
                "  imxlate import horse2zebra.pth --from horse --to zebra --reverse zebra2horse.pth "
                "--out horse2zebra.safetensors\n\n"
                "  imxlate import latest_net_G_A.pth --from photo --to monet\n\n"
                "  imxlate import facades_label2photo.pth --from labels --to facade   (a pix2pix U-Net)\n\n"
                "  imxlate import 200000-G.ckpt --family stargan --domains black_hair blond_hair brown_hair male young")
@user_errors
def import_(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., help="generator weights: a CycleGAN/pix2pix .pth or a StarGAN -G.ckpt"),
    src: Optional[str] = typer.Option(None, "--from", help="CycleGAN: the domain the generator translates from"),
    dst: Optional[str] = typer.Option(None, "--to", help="CycleGAN: the domain it translates into"),
    reverse: Optional[Path] = typer.Option(None, help="CycleGAN: the opposite generator (--to -> --from), "
                                                      "so one model file translates both ways"),
    family: Optional[str] = typer.Option(None, help="cyclegan | stargan (default: read from the keys)"),
    domains: Optional[List[str]] = typer.Option(None, "--domains", help="StarGAN: the label names, in label order"),
    out_file: Optional[Path] = typer.Option(None, "--out",
                                            help="model file to write (default: <checkpoint>.safetensors)"),
    image_size: Optional[int] = typer.Option(None, help="training image size to record (default: 256 CycleGAN, "
                                                        "128 StarGAN)"),
    overwrite: bool = typer.Option(False, help="replace an existing --out file"),
):
    """Import a generator trained with the CycleGAN/pix2pix or StarGAN reference code into a model file.

    Files are read as plain tensors (torch.load with weights_only=True); the architecture is read
    from their keys and shapes.
    """
    from . import store
    from .foreign import import_checkpoint

    domains, extra = names_and_options(domains, ctx.args)
    if extra:
        raise ImxlateError(f"unexpected argument(s): {' '.join(extra)}; see `imxlate import --help`")
    written = import_checkpoint(checkpoint, out_file, family=family, src=src, dst=dst, reverse=reverse, domains=domains,
                                image_size=image_size, overwrite=overwrite)
    meta = store.read_metadata(written)
    arch = ", ".join(f"{k}={meta['config'][k]}" for k in ("generator", "ngf", "n_blocks", "n_downs", "norm", "dropout")
                     if meta["config"].get(k) is not None)
    out.print(f"Wrote {written}: {meta['family']} ({arch}), {', '.join(meta['directions'])}")


@command(epilog="Examples:\n\n"
                "  imxlate export horse2zebra.safetensors --to zebra --format onnx\n\n"
                "  imxlate export runs/photos2vangogh --to vangogh --format torchscript --out vangogh.pt\n\n"
                "  imxlate export model.safetensors --to zebra --fp16 --device cuda")
@user_errors
def export(
    model: str = typer.Argument(..., help="model file or run folder"),
    to: str = typer.Option(..., "--to", help="target domain: the one direction that is exported"),
    fmt: str = typer.Option("onnx", "--format", help="onnx | torchscript"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="file to write (default: <model>-to-<to>.onnx / .pt)"),
    src: Optional[str] = typer.Option(None, "--from", help="source domain (models with more than two domains)"),
    fp16: bool = typer.Option(False, help="float16 weights and arithmetic, for GPU runtimes (I/O stays float32)"),
    device: str = typer.Option("cpu", help="device to trace on (cpu | cuda | cuda:N)"),
    overwrite: bool = typer.Option(False, help="replace an existing --out file"),
    no_verify: bool = typer.Option(False, "--no-verify", help="load a model file whose recorded digest does not "
                                   "match (changed bytes) anyway"),
):
    """Export one direction of a model as ONNX or TorchScript, with dynamic batch, height and width.

    The graph takes float32 RGB images (batch, 3, height, width) with values in [0, 1] and returns
    the translations in the same layout and range; scaling, padding and cropping are inside it.
    """
    from .export import export_model

    written = export_model(model, to, out_file, fmt=fmt, src=src, fp16=fp16, device=device, overwrite=overwrite,
                           verify=not no_verify)
    out.print(f"Wrote {written} ({fmt}{', fp16' if fp16 else ''}): images in [0, 1] -> '{to}'")


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
