"""CUT and FastCUT (Park et al. 2020, "Contrastive Learning for Unpaired Image-to-Image Translation").

One generator per direction and no cycle: a PatchNCE loss ties each patch of the translation to the input
patch at the same place. The generator's own encoder (ResNet layers: the input, both downsampling
convolutions, the first and fifth residual blocks) gives features of input and output; `F_ab` projects 256
shared locations per layer through an MLP, and each output patch must pick out its input patch among the
image's other patches. CUT adds the same loss on target images passed through the generator (identity NCE);
FastCUT drops it, weights NCE by 10 and asks for flip equivariance. `--bidirectional` trains b -> a too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import losses
from ..nets.common import init_weights, sequential_features
from ..nets.projection import PatchProjection
from ..nets.resnet import ResnetGenerator, default_blocks, nce_layers
from .base import Family, ResnetGANOptions, choice, frozen, scalars


@dataclass
class CUTConfig(ResnetGANOptions):
    gan_loss: str = field(default="lsgan", metadata={"help": "lsgan | vanilla | hinge"})
    lambda_gan: float = field(default=1.0, metadata={"help": "adversarial loss weight"})
    lambda_nce: float = field(default=1.0, metadata={"help": "PatchNCE weight (FastCUT: 10)"})
    nce_idt: bool = field(default=True, metadata={"help": "PatchNCE on target images too (CUT: on; FastCUT: off)"})
    nce_layers: str = field(default="", metadata={
        "help": "generator layers whose features PatchNCE compares (default: input, both downsampling convs, "
                "residual blocks 1 and 5)"})
    num_patches: int = field(default=256, metadata={"help": "locations sampled per layer and image"})
    nce_units: int = field(default=256, metadata={"help": "width of each projection head"})
    nce_temperature: float = field(default=0.07, metadata={"help": "PatchNCE temperature"})
    flip_equivariance: bool = field(default=False, metadata={"help": "FastCUT: translate flipped inputs half the time"})
    bidirectional: bool = field(default=False, metadata={"help": "also train b -> a (its own G, D and heads)"})

    def layers(self) -> list[int]:
        """--nce-layers as indices (default: the paper's five; [] when it does not parse)."""
        if not self.nce_layers:
            return nce_layers(self.n_blocks or 9)
        try:
            return [int(i) for i in self.nce_layers.split(",") if i.strip()]
        except ValueError:
            return []


class CUT(Family):
    name = "cut"
    Config = CUTConfig
    keep = ("G_ab",)
    # CUT's reference: batch 1, 286 -> 256 crops, 200 epochs constant then 200 of linear decay.
    train_defaults = dict(batch_size=1, epochs=200, epochs_decay=200, load_size=286, crop_size=256)
    one_way_hint = "train with --bidirectional for {b} -> {a} too"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.cfg.bidirectional:
            self.keep = ("G_ab", "G_ba")

    @classmethod
    def resolve_config(cls, cfg, train_cfg):
        cfg.check_nets(train_cfg.crop_size, ("lsgan", "vanilla", "hinge"))
        if cfg.n_blocks is None:
            cfg.n_blocks = default_blocks(train_cfg.crop_size)
        layers, last = cfg.layers(), 9 + cfg.n_blocks  # the encoder: stem 0-3, downsampling 4-9, residual blocks 10 ..
        if not layers or min(layers) < 0 or max(layers) > last:
            choice("nce_layers", cfg.nce_layers, [f"indices 0-{last} (encoder layers)"])
        cfg.nce_layers = ",".join(map(str, layers))
        return cfg

    def build(self):
        c = self.cfg
        nets = {}
        for src, dst in self.directions():
            s, d = self.side(src), self.side(dst)
            gen = init_weights(ResnetGenerator(3, 3, c.ngf, c.n_blocks or 9, c.norm, False, c.upsample))
            with torch.no_grad():  # channel counts of the chosen layers, for the heads
                channels = [f.shape[1] for f in sequential_features(gen.model, torch.zeros(1, 3, 16, 16), c.layers())]
            nets[f"G_{s}{d}"] = gen
            nets[f"D_{d}"] = c.patch_discriminator()
            nets[f"F_{s}{d}"] = init_weights(PatchProjection(channels, c.nce_units))
        return nets

    def directions(self):
        a, b = self.domains
        return [(a, b), (b, a)] if self.cfg.bidirectional else [(a, b)]

    def make_optimizers(self):
        n = self.nets
        return {"G": self.adam([p for k, v in n.items() if k[0] in "GF" for p in v.parameters()]),
                "D": self.adam([p for k, v in n.items() if k[0] == "D" for p in v.parameters()])}

    def nce(self, G, F, src, out, flipped):
        c = self.cfg
        return F.nce(G.model, c.layers(), src, out, c.num_patches, c.nce_temperature, self.rng, flipped)

    def train_step(self, batch, step):
        c, n = self.cfg, self.nets
        real = {d: batch["images"][d].to(self.device) for d in self.domains}
        runs = []
        for src, dst in self.directions():
            s, d = self.side(src), self.side(dst)
            x = torch.cat([real[src], real[dst]]) if c.nce_idt else real[src]
            flipped = c.flip_equivariance and bool(torch.rand((), generator=self.rng) < 0.5)
            with self.autocast():
                out = n[f"G_{s}{d}"](torch.flip(x, [3]) if flipped else x)
            runs.append((src, dst, s, d, out, flipped))
        parts = {}
        with self.autocast():  # discriminators first, on this step's translations (no image pool)
            for src, dst, s, d, out, flipped in runs:
                fake = out[:len(real[src])].detach()
                parts[f"D_{d}"] = losses.critic_loss(c.gan_loss, n[f"D_{d}"], real[dst], fake)
        self.update("D", sum(parts.values()), step)
        out_parts = scalars(parts)
        parts = {}
        w = c.lambda_nce * (0.5 if c.nce_idt else 1.0)  # with identity NCE: the mean of the two terms, as in the paper
        with frozen(*(n[f"D_{r[3]}"] for r in runs)), self.autocast():
            for src, dst, s, d, out, flipped in runs:
                B, G, F = len(real[src]), n[f"G_{s}{d}"], n[f"F_{s}{d}"]
                parts[f"G_{s}{d}"] = c.lambda_gan * losses.g_loss(c.gan_loss, n[f"D_{d}"](out[:B]))
                parts[f"nce_{s}{d}"] = w * self.nce(G, F, real[src], out[:B], flipped)
                if c.nce_idt:
                    parts[f"nce_idt_{d}"] = w * self.nce(G, F, real[dst], out[B:], flipped)
        self.update("G", sum(parts.values()), step)
        return {**scalars(parts), **out_parts}


@dataclass
class FastCUTConfig(CUTConfig):
    lambda_nce: float = field(default=10.0, metadata={"help": "PatchNCE weight (FastCUT: 10)"})
    nce_idt: bool = field(default=False, metadata={"help": "PatchNCE on target images too (CUT: on; FastCUT: off)"})
    flip_equivariance: bool = field(default=True, metadata={"help": "FastCUT: translate flipped inputs half the time"})


class FastCUT(CUT):
    name = "fastcut"
    Config = FastCUTConfig
    # FastCUT's reference: 150 epochs constant then 50 of decay.
    train_defaults = {**CUT.train_defaults, "epochs": 150, "epochs_decay": 50}
