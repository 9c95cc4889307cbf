"""Training configuration (`TrainConfig`, whose fields are also the `imxlate train` options), the checks of
counts, sizes and seeds, and the typed `--key value` overrides that fill any config dataclass."""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field

from .errors import ImxlateError


@dataclass
class TrainConfig:
    """How a run is trained (the loop's settings); each family's own Config holds its architecture and losses.

    Fields left as None take the family's defaults (`Family.train_defaults`), then the generic ones in
    `resolved`. Each field is also the `imxlate train` option of its name (`batch_size`: --batch-size),
    with its default and the help in its metadata: the command line is built from these fields.
    """

    domains: list[str] = field(default_factory=list, metadata={"help": "domain folder names: --domains photos vangogh"})
    data: str = field(default=".", metadata={"help": "folder holding one sub-folder per domain (or trainA/trainB)"})
    model: str = field(default="cyclegan", metadata={
        "help": "family (each is listed above with its options). Default cyclegan, with --ema 0.999: at an equal "
                "CPU budget it beat CUT and FastCUT, and the average beat its last weights, on held-out glyph "
                "styles (examples/glyphs)"})
    out: str | None = field(default=None, metadata={"help": "run folder (default runs/<a>2<b>, numbered if taken)"})
    steps: int | None = field(default=None, metadata={
        "help": "train N iterations, the learning-rate schedule fitted into them (constant for the --epochs "
                "share, then linear decay to zero over the --epochs-decay share); without it the run lasts "
                "--epochs + --epochs-decay epochs"})
    epochs: int | None = field(default=None, metadata={
        "help": "epochs at the initial learning rate (CycleGAN: 100); with --steps, the constant share"})
    epochs_decay: int | None = field(default=None, metadata={
        "help": "epochs of linear decay to zero (CycleGAN: 100); with --steps, the decaying share"})
    batch_size: int | None = field(default=None, metadata={"help": "images per domain per step, per rank"})
    load_size: int | None = field(default=None, metadata={"help": "resize to this before cropping (CycleGAN: 286)"})
    crop_size: int | None = field(default=None, metadata={"help": "training image size (CycleGAN: 256)"})
    preprocess: str = field(default="resize_and_crop", metadata={"help": "resize_and_crop | crop | scale_width | none"})
    no_flip: bool = field(default=False, metadata={"help": "no random horizontal flips"})
    max_images: int | None = field(default=None, metadata={"help": "use at most N images per domain"})
    seed: int = field(default=0, metadata={"help": "random seed (runs are repeatable)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N | mps"})
    workers: int | None = field(default=None, metadata={"help": "data loading processes (default: cores - 1, at most 4)"})
    save_every: int = field(default=1000, metadata={"help": "checkpoint every N steps (also at the end and on Ctrl-C)"})
    sample_every: int = field(default=500, metadata={"help": "sample grid every N steps"})
    snapshot_every: int = field(default=0, metadata={
        "help": "also write a model file every N steps to snapshots/ (0: off), to pick one by a validation score"})
    log_every: int = field(default=10, metadata={"help": "loss log line every N steps"})
    amp: str = field(default="none", metadata={"help": "mixed precision on CUDA: none | bf16 | fp16"})
    gradient_accumulation: int = field(default=1, metadata={"help": "average gradients over N steps before an update"})
    ema: float | None = field(default=None, metadata={
        "help": "moving average of the translation networks' weights, e.g. 0.999 (0: off; default 0.999 for "
                "cyclegan, chosen on the glyph benchmark's validation characters, else 0); the model file and "
                "sample grids use the average"})

    def check(self) -> None:
        """Refuse values that cannot train (zero or negative counts and sizes, a domain named twice, ...)
        before anything runs; fields left as None are the family's defaults and are not checked."""
        check_at_least({k: getattr(self, k) for k in ("steps", "epochs", "batch_size", "load_size", "crop_size",
                                                      "max_images", "save_every", "sample_every", "log_every",
                                                      "gradient_accumulation")}, 1)
        check_at_least({k: getattr(self, k) for k in ("epochs_decay", "snapshot_every", "workers")}, 0)
        check_seed(self.seed)
        from .data import PREPROCESS_MODES

        if self.preprocess not in PREPROCESS_MODES:
            raise ImxlateError(f"--preprocess {self.preprocess}: use {', '.join(PREPROCESS_MODES)}")
        if self.amp not in AMP_MODES:
            raise ImxlateError(f"--amp {self.amp}: use {', '.join(AMP_MODES)}")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise ImxlateError(f"--ema {self.ema}: a decay in [0, 1), e.g. 0.999 (0 turns it off)")
        if any(not d.strip() for d in self.domains):
            raise ImxlateError("a domain name is empty; name each domain folder, e.g. --domains photos vangogh")
        twice = sorted({d for d in self.domains if self.domains.count(d) > 1})
        if twice:
            raise ImxlateError(f"--domains names {', '.join(twice)} more than once; name each domain once, "
                               "e.g. --domains photos vangogh")

    def resolved(self, family_defaults: dict) -> "TrainConfig":
        """Fill None fields from the family's defaults, then the generic ones."""
        generic = dict(epochs=100, epochs_decay=100, batch_size=1, load_size=286, crop_size=256, ema=0.0)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k, v in {**generic, **family_defaults}.items():
            if values.get(k) is None:
                values[k] = v
        if values["load_size"] < values["crop_size"]:
            values["load_size"] = values["crop_size"]
        return TrainConfig(**values)


AMP_MODES = ("none", "bf16", "fp16")
# Whole-number family options for which 0 means "none" (every other one counts or sizes something: 1 or more).
ZERO_ALLOWED = {"pool_size", "vae_steps", "shared_layers"}
SEED_LIMIT = 2**32


def check_at_least(values: dict, minimum: int) -> None:
    """Refuse any option in {name: value} below `minimum` (None: unset, not checked) or not a finite number."""
    for name, v in values.items():
        if v is None or isinstance(v, bool):
            continue
        if not math.isfinite(v) or v < minimum:
            raise ImxlateError(f"--{name.replace('_', '-')} {v}: give {minimum} or more")


def check_seed(seed: int | None) -> None:
    """A seed is a whole number from 0 to 2**32 - 1."""
    if seed is not None and not 0 <= seed < SEED_LIMIT:
        raise ImxlateError(f"--seed {seed}: give a whole number from 0 to {SEED_LIMIT - 1}")


def to_dict(cfg) -> dict:
    """A config dataclass -> a JSON-able dict."""
    return dataclasses.asdict(cfg)


def from_dict(cls, d: dict):
    """Rebuild a config dataclass from `to_dict` output, ignoring keys it does not know."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def _convert(value: str, tp, name: str):
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value.lower() == "none":
            return None
        return _convert(value, args[0], name)
    if tp is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ImxlateError(f"--{name} takes true or false, not {value!r}")
    if origin is list:
        return [_convert(v, args[0], name) for v in value.split(",") if v]
    try:
        return tp(value)
    except ValueError:
        kind = {int: "whole number", float: "number"}.get(tp, tp.__name__)
        raise ImxlateError(f"--{name} takes a {kind}, not {value!r}") from None


def parse_extra_args(args: list[str]) -> dict[str, str | None]:
    """['--ngf', '8', '--dropout'] -> {'ngf': '8', 'dropout': None} (a bare flag means true)."""
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ImxlateError(f"unexpected argument {a!r}; options look like --name value")
        key, _, val = a[2:].partition("=")
        if not val and i + 1 < len(args) and not args[i + 1].startswith("--"):
            val, i = args[i + 1], i + 1
        out[key.replace("-", "_")] = val or None
        i += 1
    return out


def apply_overrides(cfg, overrides: dict[str, str | None]):
    """Set the fields of dataclass `cfg` named in `overrides` (strings converted to the field types).

    Returns (new config, keys that were used).
    """
    hints = typing.get_type_hints(type(cfg))
    changes, used = {}, set()
    for f in dataclasses.fields(cfg):
        if f.name in overrides:
            raw = overrides[f.name]
            tp = hints[f.name]
            if raw is None:
                if tp is not bool:
                    raise ImxlateError(f"--{f.name.replace('_', '-')} needs a value")
                changes[f.name] = True
            else:
                changes[f.name] = _convert(raw, tp, f.name.replace("_", "-"))
                value = changes[f.name]
                if isinstance(value, (int, float)):  # counts, sizes, weights and rates are never negative
                    check_at_least({f.name: value}, 0 if isinstance(value, float) or f.name in ZERO_ALLOWED else 1)
            used.add(f.name)
    return dataclasses.replace(cfg, **changes), used


def options_help(cls) -> list[tuple[str, str, str]]:
    """(--option, default, help) rows for a config dataclass, for --help text."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((f"--{f.name.replace('_', '-')}", json.dumps(default), f.metadata.get("help", "")))
    return rows
