"""Training configuration (`TrainConfig`, whose fields are also the `imxlate train` options), the presets
(`--preset quick`), the checks of counts, sizes and seeds, and the typed `--key value` overrides that fill any
config dataclass. Imports no torch: the command line reads it to show its help."""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

from .errors import ImxlateError

# The largest image `imxlate serve` takes and `eval` reads (width x height); `translate` has no such cap (it
# tiles what its memory budget allows) unless --max-pixels sets one.
MAX_PIXELS = 4096 * 4096
# A preset fills options the user left out. Sizes and widths are upper bounds: a family whose own default is
# smaller keeps it, and ngf/ndf apply to the families that have them. Quick: a first result in minutes on a
# CPU (measured 0.25 s/step for CycleGAN on one core of an Intel Xeon: 2,000 steps in about 8 min).
PRESETS = {"quick": {"crop_size": 64, "ngf": 16, "ndf": 16, "steps": 2000}}
# Help text beginning with this marks a field the tool records (a file's digest), not an option a user sets.
RECORDED = "recorded:"
# The option groups of `imxlate train --help` after the common one (a field's metadata "panel").
SCHEDULE, OUTPUTS = "Schedule, data and precision", "Outputs and logging"
# What `--resume` may change: how long the run goes on (the schedule is fitted into a new --steps), how often it
# writes, where it runs and where the images are. Any other option would change the recipe: refused unless it
# equals the run's own.
RESUME_MAY_CHANGE = ("steps", "save_every", "sample_every", "snapshot_every", "log_every", "device", "workers", "data")


def describe_preset(name: str) -> str:
    """'crop 64 px, ngf 16, ndf 16, 2000 steps' for a preset's values."""
    values = PRESETS[name]
    return ", ".join(f"crop {v} px" if k == "crop_size" else f"{v} steps" if k == "steps" else f"{k} {v}"
                     for k, v in values.items())


@dataclass
class TrainConfig:
    """How a run is trained (the loop's settings); each family's own Config holds its architecture and losses.

    Fields left as None take the preset's values (`apply_preset`), then the family's defaults
    (`Family.train_defaults`), then the generic ones in `resolved`. Each field is also the `imxlate train`
    option of its name (`batch_size`: --batch-size; or the "flags" in its metadata: `model` is --family, alias
    --model), with its default, its help and its help panel ("panel"; none: the common options) in its
    metadata: the command line is built from these fields.
    """

    domains: list[str] = field(default_factory=list, metadata={"help": "domain folder names: --domains photos vangogh"})
    data: str = field(default=".", metadata={"help": "folder holding one sub-folder per domain (or trainA/trainB)"})
    model: str = field(default="cyclegan", metadata={
        "flags": ("--family", "--model"),
        "help": "model family (listed below; `imxlate train --family NAME --help` shows its options). Default "
                "cyclegan with --ema 0.999: it beat CUT and FastCUT on held-out glyph styles (examples/glyphs)"})
    preset: str | None = field(default=None, metadata={
        "help": "quick: a first try in minutes (" + describe_preset("quick") + "); options you give win"})
    out: str | None = field(default=None, metadata={"help": "run folder (default runs/<a>2<b>, numbered if taken)"})
    steps: int | None = field(default=None, metadata={
        "help": "train N iterations, the learning-rate schedule fitted into them (default: --epochs + "
                "--epochs-decay epochs)"})
    crop_size: int | None = field(default=None, metadata={"help": "training image size (CycleGAN: 256)"})
    batch_size: int | None = field(default=None, metadata={"help": "images per domain per step, per rank"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N | mps"})
    epochs: int | None = field(default=None, metadata={
        "panel": SCHEDULE, "help": "epochs at the initial learning rate (CycleGAN: 100); with --steps, the constant "
                                   "share"})
    epochs_decay: int | None = field(default=None, metadata={
        "panel": SCHEDULE, "help": "epochs of linear decay to zero (CycleGAN: 100); with --steps, the decaying share"})
    load_size: int | None = field(default=None, metadata={
        "panel": SCHEDULE, "help": "resize to this before cropping (CycleGAN: 286)"})
    preprocess: str = field(default="resize_and_crop", metadata={
        "panel": SCHEDULE, "help": "resize_and_crop | crop | scale_width | none"})
    no_flip: bool = field(default=False, metadata={"panel": SCHEDULE, "help": "no random horizontal flips"})
    max_images: int | None = field(default=None, metadata={
        "panel": SCHEDULE, "help": "use at most N images per domain"})
    seed: int = field(default=0, metadata={"panel": SCHEDULE, "help": "random seed (runs are repeatable)"})
    workers: int | None = field(default=None, metadata={
        "panel": SCHEDULE, "help": "data loading processes (default: cores - 1, at most 4)"})
    amp: str = field(default="none", metadata={
        "panel": SCHEDULE, "help": "mixed precision on CUDA: none | bf16 | fp16"})
    gradient_accumulation: int = field(default=1, metadata={
        "panel": SCHEDULE, "help": "average gradients over N steps before an update"})
    ema: float | None = field(default=None, metadata={
        "panel": SCHEDULE, "help": "moving average of the translation networks' weights, e.g. 0.999 (0: off; default "
                                   "0.999 for cyclegan, else 0); the model file and sample grids use the average"})
    save_every: int = field(default=1000, metadata={
        "panel": OUTPUTS, "help": "checkpoint every N steps (also at the end and on Ctrl-C)"})
    sample_every: int = field(default=500, metadata={"panel": OUTPUTS, "help": "sample grid every N steps"})
    snapshot_every: int = field(default=0, metadata={
        "panel": OUTPUTS, "help": "also write a model file every N steps to snapshots/ (0: off)"})
    log_every: int = field(default=10, metadata={
        "panel": OUTPUTS, "help": "log.jsonl line every N steps; when the output is not a terminal, also a progress "
                                  "line (and at least one every 30 s)"})

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
        if self.preset is not None and self.preset not in PRESETS:
            raise ImxlateError(f"--preset {self.preset}: use {', '.join(PRESETS)}")
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
        if self.load_size is None and values["load_size"] < values["crop_size"]:
            values["load_size"] = values["crop_size"]  # a larger --crop-size alone takes the load size with it
        return TrainConfig(**values)

    def check_load_size(self) -> None:
        """Refuse a load size below the crop size (a resolved config): a crop cannot be larger than the image."""
        if self.load_size < self.crop_size:
            raise ImxlateError(f"--load-size {self.load_size} is below --crop-size {self.crop_size}; give "
                               f"--load-size {self.crop_size} or more, or a smaller --crop-size")

    def given(self) -> set[str]:
        """The fields whose values differ from the defaults: the options a caller set."""
        default = TrainConfig()
        return {f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(default, f.name)}


def apply_preset(cfg: TrainConfig, family_args: dict, family_config: type, family_defaults: dict):
    """Fill the options the user left out from `cfg.preset` -> (TrainConfig, family options as strings). A number
    whose default is a number is an upper bound (a smaller default stays); a load size left out keeps the family's
    load : crop ratio to the crop size; family options apply where the family's config has them."""
    if cfg.preset is None:
        return cfg, family_args
    values, defaults = PRESETS[cfg.preset], TrainConfig().resolved(family_defaults)
    own = {f.name: f.default for f in dataclasses.fields(family_config)}
    args = {**{k: str(_bounded(v, own[k])) for k, v in values.items() if k in own}, **family_args}
    changes = {k: _bounded(v, getattr(defaults, k)) for k, v in values.items()
               if hasattr(cfg, k) and getattr(cfg, k) is None}
    if cfg.load_size is None:
        crop = changes.get("crop_size", cfg.crop_size or defaults.crop_size)
        changes["load_size"] = round(crop * defaults.load_size / defaults.crop_size)
    return dataclasses.replace(cfg, **changes), args


def _bounded(value, default):
    return min(value, default) if isinstance(default, (int, float)) and not isinstance(default, bool) else value


AMP_MODES = ("none", "bf16", "fp16")
# Whole-number family options for which 0 means "none" (every other one counts or sizes something: 1 or more).
ZERO_ALLOWED = {"pool_size", "vae_steps", "shared_layers"}
SEED_LIMIT = 2**32


def option(name: str, value) -> str:
    """Option `name` (a field of TrainConfig or of a family's config) set to `value`, as the command line spells
    it: '--crop-size 64', '--family cut', '--domains a b', '--no-flip'; unset or off: 'no --preset'."""
    flags = {f.name: f.metadata.get("flags", ()) for f in dataclasses.fields(TrainConfig)}.get(name)
    flag = flags[0] if flags else f"--{name.replace('_', '-')}"
    if value is None or value is False:
        return f"no {flag}"
    if value is True:
        return flag
    return f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}"


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
    """Dataclass `cfg` with the fields named in `overrides` set (strings converted to the field types); names
    that are not fields are left for the caller to refuse."""
    hints = typing.get_type_hints(type(cfg))
    changes = {}
    for f in dataclasses.fields(cfg):
        if f.name not in overrides:
            continue
        raw, tp, option = overrides[f.name], hints[f.name], f.name.replace("_", "-")
        if raw is None and tp is not bool:
            raise ImxlateError(f"--{option} needs a value")
        value = True if raw is None else _convert(raw, tp, option)
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # counts, sizes, weights, rates: >= 0
            check_at_least({f.name: value}, 0 if isinstance(value, float) or f.name in ZERO_ALLOWED else 1)
        changes[f.name] = value
    return dataclasses.replace(cfg, **changes)


def is_recorded(f: dataclasses.Field) -> bool:
    """Whether a config field is a value the tool records (such as a file's digest), not an option to set."""
    return f.metadata.get("help", "").startswith(RECORDED)
