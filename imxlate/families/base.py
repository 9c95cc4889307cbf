"""What every model family provides, and the pieces they share: option checks, the ResNet/PatchGAN
options of the CycleGAN reference, translation by the generator named for a direction, the image pool,
freezing and the GAN alternation.

A family builds its networks from its config dataclass, names them the way the field does
(`G_ab`, `D_b`, `E_a`, ...), declares which of them a model file keeps (`keep`), says which parameters
each optimizer holds, runs one training step on a batch and returns its losses, and translates a tensor
into a target domain. The loop in train.py, the optimizer mechanics (optim.py: accumulation, precision,
gradient averaging, schedule), checkpoints, samples and model files are written once for all families
against this interface.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from ..config import from_dict, to_dict
from ..optim import Optimizers, adam, linear_decay
from ..errors import ImxlateError
from ..losses import GAN_LOSSES
from ..nets.common import NORMS, init_weights, param_count
from ..nets.patchgan import PatchDiscriminator


def choice(name: str, value, allowed) -> None:
    """Refuse a config value outside `allowed`, naming the option as the command line spells it."""
    if value not in allowed:
        raise ImxlateError(f"--{name.replace('_', '-')} {value}: choose from {', '.join(allowed)}")


def check_patch_size(crop_size: int, n_layers: int) -> None:
    """Refuse a crop smaller than the PatchGAN discriminator takes (it would fail inside its norm layer)."""
    least = PatchDiscriminator.smallest_input(n_layers)
    if crop_size < least:
        raise ImxlateError(f"--crop-size {crop_size}: the PatchGAN discriminator (--n-layers-d {n_layers}) needs "
                           f"{least} px or more; raise --crop-size (and --load-size) or lower --n-layers-d")


def critic_steps(cfg) -> None:
    """WGAN-GP paper: 5 critic steps per generator step, unless --n-critic says otherwise."""
    if cfg.gan_loss == "wgan-gp" and cfg.n_critic == 1:
        cfg.n_critic = 5


@dataclass
class ResnetGANOptions:
    """Networks and optimizer of the families built on the CycleGAN reference's ResNet generator and PatchGAN
    (CycleGAN, CUT, FastCUT), with its defaults."""
    ngf: int = field(default=64, metadata={"help": "generator filters in the first layer"})
    ndf: int = field(default=64, metadata={"help": "discriminator filters in the first layer"})
    n_blocks: int | None = field(default=None, metadata={"help": "residual blocks (default: 9 at >=256 px, else 6)"})
    n_layers_d: int = field(default=3, metadata={"help": "PatchGAN layers (3: 70x70 patches)"})
    norm: str = field(default="instance", metadata={"help": "instance | batch | none"})
    upsample: str = field(default="transpose", metadata={"help": "transpose (reference) | resize (no checkerboard)"})
    gan_loss: str = field(default="lsgan", metadata={"help": "lsgan | vanilla | wgan-gp | hinge"})
    spectral_norm: bool = field(default=False, metadata={"help": "spectral norm on the discriminators"})
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999

    def check_nets(self, crop_size: int, gan_losses=GAN_LOSSES) -> None:
        """Refuse unknown choices of the shared options and a crop too small for the discriminator."""
        choice("gan_loss", self.gan_loss, gan_losses)
        choice("norm", self.norm, NORMS)
        choice("upsample", self.upsample, ("transpose", "resize"))
        check_patch_size(crop_size, self.n_layers_d)

    def patch_discriminator(self) -> nn.Module:
        return init_weights(PatchDiscriminator(3, self.ndf, self.n_layers_d, self.norm, self.spectral_norm))


class ImagePool:
    """History of generated images (Shrivastava et al. 2017; CycleGAN: 50 images, swap with p=0.5)."""

    def __init__(self, size: int):
        self.size, self.images = size, []

    def query(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Return a batch mixing the new images with older ones, storing the new ones."""
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif torch.rand((), generator=g) < 0.5:
                i = int(torch.randint(0, self.size, (), generator=g))
                out.append(self.images[i].clone())
                self.images[i] = img
            else:
                out.append(img)
        return torch.cat(out)

    def state(self) -> dict:
        return {"images": [t.cpu() for t in self.images]}

    def load(self, state: dict, device) -> None:
        self.images = [t.to(device) for t in state["images"]]


def scalars(losses: dict) -> dict[str, float]:
    """Loss tensors -> plain floats for logging."""
    return {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in losses.items()}


@contextlib.contextmanager
def frozen(*nets: nn.Module):
    """Turn off gradients of `nets` inside the block (the discriminators during a generator step)."""
    flags = [[p.requires_grad for p in n.parameters()] for n in nets]
    for n in nets:
        n.requires_grad_(False)
    try:
        yield
    finally:
        for n, fl in zip(nets, flags):
            for p, f in zip(n.parameters(), fl):
                p.requires_grad_(f)


class Family:
    """Base class of model families. Subclasses set the class attributes and implement build/step/translate."""

    name: ClassVar[str]
    Config: ClassVar[type]
    keep: ClassVar[tuple[str, ...]]          # networks stored in the model file
    train_defaults: ClassVar[dict] = {}     # TrainConfig defaults: the paper's (batch size, epochs, sizes), --ema
    size_multiple: ClassVar[int] = 4        # translate pads inputs to a multiple of this
    fixed_size: ClassVar[bool] = False      # translate resizes inputs to the training size and back
    uses_labels: ClassVar[bool] = False     # needs class subfolders in each domain
    two_domains: ClassVar[bool] = True      # translates between exactly two domains (StarGAN: any number)

    def __init__(self, cfg, domains: list[str], image_size: int, classes: dict | None = None):
        self.cfg, self.domains, self.image_size = cfg, list(domains), image_size
        self.classes = classes or {d: [] for d in domains}
        self.nets = nn.ModuleDict(self.build())
        self.opts = Optimizers({})  # made by setup_training
        self.rng = torch.Generator().manual_seed(0)  # the family's own randomness (pools, noise)
        self.device = torch.device("cpu")
        self.meta: dict = {}

    # ---- to implement ----------------------------------------------------------------------
    def build(self) -> dict[str, nn.Module]:
        """Create the networks from self.cfg."""
        raise NotImplementedError

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Create the optimizers, named (e.g. {'G': ..., 'D': ...})."""
        raise NotImplementedError

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        """One iteration on `batch` ({'images': {domain: (B,3,H,W)}, 'labels': {domain: (B,)}}) -> losses."""
        raise NotImplementedError

    # ---- shared behaviour ------------------------------------------------------------------
    one_way_hint: ClassVar[str] = ""  # how to get the missing direction of a one-sided model ({a}, {b}: domains)

    def recipe_hint(self) -> str:
        """A line said before a new run trains: where another recipe of the family may serve better ('': none)."""
        return ""

    def translate(self, x: torch.Tensor, dst: str, src: str | None = None, generator=None) -> torch.Tensor:
        """(B,3,H,W) images of domain `src` (None: the other one) -> images of domain `dst`, by the
        generator G_<src><dst> (G_ab, G_ba); a one-sided model refuses the direction it lacks."""
        src = src or self.other(dst)
        if (src, dst) not in self.directions():
            ways = ", ".join(f"{s} -> {d}" for s, d in self.directions())
            a, b = self.domains
            raise ImxlateError(f"this {self.name} model only translates {ways}; " + self.one_way_hint.format(a=a, b=b))
        return self.nets[f"G_{self.side(src)}{self.side(dst)}"](x)

    def sample_rows(self, images: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """Rows of a sample grid as (label, images (N,3,H,W)), the label shown at the row's left: per
        direction, the inputs ('photos') and their translations ('photos->vangogh')."""
        rows = []
        for src, dst in self.directions():
            rows += [(src, images[src]), (f"{src}->{dst}", self.translate(images[src], dst, src))]
        return rows

    def side(self, domain: str) -> str:
        """'a' or 'b': the letter of `domain` in the networks' names (G_ab, D_b, ...)."""
        return "ab"[self.domains.index(domain)]

    def check_data(self, domains: list) -> None:
        """Refuse data the family cannot train on (e.g. missing class folders), before training starts."""
        if self.two_domains and len(domains) != 2:
            raise ImxlateError(f"{self.name} translates between exactly two domains, not {len(domains)}; "
                               "use --model stargan for more")

    def directions(self) -> list[tuple[str, str]]:
        """(source, target) domain pairs this model translates."""
        return [(a, b) for a in self.domains for b in self.domains if a != b]

    def stages(self, total_steps: int) -> list[tuple[str, int]]:
        """(name, steps) of each training stage; one stage unless a family trains in phases."""
        return [("train", total_steps)]

    @classmethod
    def resolve_config(cls, cfg, train_cfg):
        """Fill config values that depend on the training setup (e.g. blocks from the crop size)."""
        return cfg

    def other(self, domain: str) -> str:
        """The other domain of a two-domain family."""
        a, b = self.domains
        return b if domain == a else a

    def config_dict(self) -> dict:
        return to_dict(self.cfg)

    def describe_net(self, name: str) -> dict:
        net = self.nets[name]
        return {"class": type(net).__name__, "parameters": param_count(net)}

    def to(self, device) -> "Family":
        self.device = torch.device(device)
        self.nets.to(self.device)
        return self

    def train(self) -> None:
        self.nets.train()

    def eval(self) -> None:
        self.nets.eval()

    def setup_training(self, amp: str = "none", accumulate: int = 1) -> None:
        """Create the optimizers (with --amp's scaler and --gradient-accumulation) before the first step or a resume."""
        self.opts = Optimizers(self.make_optimizers(), amp, self.device, accumulate)

    def autocast(self):
        """Mixed-precision context for forward passes when --amp is on (CUDA only)."""
        return self.opts.precision.autocast()

    def update(self, opt_name: str, loss: torch.Tensor, step: int | None = None) -> None:
        """Backward `loss` and step optimizer `opt_name` (see optim.Optimizers.update)."""
        self.opts.update(opt_name, loss, step)

    def adam(self, params) -> torch.optim.Optimizer:
        return adam(params, self.cfg)

    def alternate(self, step: int, discriminators, generator_losses, fakes, discriminator_losses) -> dict:
        """One GAN iteration: a generator update every cfg.n_critic steps (discriminators frozen), then a
        discriminator update -> the losses of both.

        generator_losses() -> (total, parts, fake); fakes() -> the same `fake` without gradients, for the
        steps where only the discriminators train; discriminator_losses(fake) -> named losses, summed.
        """
        out = {}
        if step % self.cfg.n_critic == 0:
            with frozen(*discriminators), self.autocast():
                loss_g, parts, fake = generator_losses()
            self.update("G", loss_g, step // self.cfg.n_critic)
            out.update(scalars(parts))
        else:
            with torch.no_grad(), self.autocast():
                fake = fakes()
        with self.autocast():
            parts_d = discriminator_losses(fake)
        self.update("D", sum(parts_d.values()), step)
        out.update(scalars(parts_d))
        return out

    def lr_factor(self, step: int, total: int, decay_start: int) -> float:
        """The learning-rate schedule (a family that trains in stages shifts it)."""
        return linear_decay(step, total, decay_start)

    def extra_state(self) -> dict:
        """Training state beyond networks and optimizers (pools, the family's RNG)."""
        return {"rng": self.rng.get_state()}

    def load_extra_state(self, state: dict) -> None:
        self.rng.set_state(state["rng"])

    def state(self) -> dict:
        """Everything a checkpoint needs from the family."""
        return {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            **self.opts.state(),
            "extra": self.extra_state(),
        }

    def load_state(self, state: dict) -> None:
        for k, v in self.nets.items():
            v.load_state_dict(state["nets"][k])
        self.opts.load(state)
        self.load_extra_state(state["extra"])


def config_from(cls: type, d: dict):
    """A family config from a (possibly older) dict; unknown keys are ignored, new fields take defaults."""
    return from_dict(cls, d) if dataclasses.is_dataclass(cls) else cls(**d)
