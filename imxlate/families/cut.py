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
from ..errors import ImxlateError
from ..nets.common import NORMS, init_weights, sequential_features
from ..nets.patchgan import PatchDiscriminator
from ..nets.projection import PatchProjection
from ..nets.resnet import ResnetGenerator, default_blocks
from .base import Family, choice, frozen, scalars


@dataclass
class CUTConfig:
    ngf: int = field(default=64, metadata={"help": "generator filters in the first layer"})
    ndf: int = field(default=64, metadata={"help": "discriminator filters in the first layer"})
    n_blocks: int | None = field(default=None, metadata={"help": "residual blocks (default: 9 at >=256 px, else 6)"})
    n_layers_d: int = field(default=3, metadata={"help": "PatchGAN layers (3: 70x70 patches)"})
    norm: str = field(default="instance", metadata={"help": "instance | batch | none"})
    upsample: str = field(default="transpose", metadata={"help": "transpose (reference) | resize (no checkerboard)"})
    gan_loss: str = field(default="lsgan", metadata={"help": "lsgan | vanilla | hinge"})
    spectral_norm: bool = field(default=False, metadata={"help": "spectral norm on the discriminators"})
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
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999


def default_nce_layers(n_blocks: int) -> list[int]:
    """The paper's five layers in ResnetGenerator's `model` indices: 0 the padded input, 4 and 7 the two
    stride-2 convolutions, 10 the first residual block, 14 the fifth (the last one when there are fewer)."""
    return [0, 4, 7, 10, 10 + min(4, n_blocks - 1)]


class CUT(Family):
    name = "cut"
    Config = CUTConfig
    keep = ("G_ab",)
    # CUT's reference: batch 1, 286 -> 256 crops, 200 epochs constant then 200 of linear decay.
    train_defaults = dict(batch_size=1, epochs=200, epochs_decay=200, load_size=286, crop_size=256)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.cfg.bidirectional:
            self.keep = ("G_ab", "G_ba")

    @classmethod
    def resolve_config(cls, cfg, train_cfg):
        choice("gan_loss", cfg.gan_loss, ("lsgan", "vanilla", "hinge"))
        choice("norm", cfg.norm, NORMS)
        choice("upsample", cfg.upsample, ("transpose", "resize"))
        if cfg.n_blocks is None:
            cfg.n_blocks = default_blocks(train_cfg.crop_size)
        if not cfg.nce_layers:
            cfg.nce_layers = ",".join(map(str, default_nce_layers(cfg.n_blocks)))
        layers = nce_layer_list(cfg)
        last = 9 + cfg.n_blocks  # the encoder: stem 0-3, downsampling 4-9, residual blocks 10 ..
        if not layers or min(layers) < 0 or max(layers) > last:
            choice("nce_layers", cfg.nce_layers, [f"indices 0-{last} (encoder layers)"])
        return cfg

    def build(self):
        c = self.cfg
        blocks = c.n_blocks or 9
        self.nce_layers = layers = nce_layer_list(c) if c.nce_layers else default_nce_layers(blocks)
        nets = {}
        for src, dst in self.directions():
            s, d = self.side(src), self.side(dst)
            gen = init_weights(ResnetGenerator(3, 3, c.ngf, blocks, c.norm, False, c.upsample))
            with torch.no_grad():  # channel counts of the chosen layers, for the heads
                channels = [f.shape[1] for f in sequential_features(gen.model, torch.zeros(1, 3, 16, 16), layers)]
            nets[f"G_{s}{d}"] = gen
            nets[f"D_{d}"] = init_weights(PatchDiscriminator(3, c.ndf, c.n_layers_d, c.norm, c.spectral_norm))
            nets[f"F_{s}{d}"] = init_weights(PatchProjection(channels, c.nce_units))
        return nets

    def side(self, domain: str) -> str:
        return "ab"[self.domains.index(domain)]

    def directions(self):
        a, b = self.domains
        return [(a, b), (b, a)] if self.cfg.bidirectional else [(a, b)]

    def make_optimizers(self):
        c, n = self.cfg, self.nets
        adam = lambda params: torch.optim.Adam(params, lr=c.lr, betas=(c.beta1, c.beta2))  # noqa: E731
        return {"G": adam([p for k, v in n.items() if k[0] in "GF" for p in v.parameters()]),
                "D": adam([p for k, v in n.items() if k[0] == "D" for p in v.parameters()])}

    def nce(self, G, F, src, out, flipped):
        """PatchNCE between `src` and its translation `out` (which saw `src` flipped when `flipped`),
        averaged over the layers."""
        layers = self.nce_layers
        q = sequential_features(G.model, out, layers)
        if flipped:  # features of G(flip(x)), flipped back, must match those of x
            q = [torch.flip(f, [3]) for f in q]
        k = sequential_features(G.model, src, layers)
        where = F.locations(k, self.cfg.num_patches, self.rng)
        pairs = zip(F(q, where), F(k, where))
        return sum(losses.patch_nce(fq, fk, self.cfg.nce_temperature) for fq, fk in pairs) / len(layers)

    def train_step(self, batch, step):
        c, n = self.cfg, self.nets
        real = {d: batch["images"][d].to(self.device) for d in self.domains}
        runs = []
        for src, dst in self.directions():
            s, d = self.side(src), self.side(dst)
            G, F = n[f"G_{s}{d}"], n[f"F_{s}{d}"]
            x = torch.cat([real[src], real[dst]]) if c.nce_idt else real[src]
            flipped = c.flip_equivariance and bool(torch.rand((), generator=self.rng) < 0.5)
            with self.autocast():
                out = G(torch.flip(x, [3]) if flipped else x)
            runs.append((src, dst, s, d, G, F, out, flipped))
        parts = {}
        with self.autocast():  # discriminators first, on this step's translations (no image pool)
            for src, dst, s, d, G, F, out, flipped in runs:
                fake = out[:len(real[src])]
                parts[f"D_{d}"] = losses.critic_loss(c.gan_loss, n[f"D_{d}"], real[dst], fake.detach())
        self.update("D", sum(parts.values()), step)
        out_parts = scalars(parts)
        parts = {}
        w = c.lambda_nce * (0.5 if c.nce_idt else 1.0)  # with identity NCE: the mean of the two terms, as in the paper
        with frozen(*(n[f"D_{r[3]}"] for r in runs)), self.autocast():
            for src, dst, s, d, G, F, out, flipped in runs:
                B = len(real[src])
                parts[f"G_{s}{d}"] = c.lambda_gan * losses.g_loss(c.gan_loss, n[f"D_{d}"](out[:B]))
                parts[f"nce_{s}{d}"] = w * self.nce(G, F, real[src], out[:B], flipped)
                if c.nce_idt:
                    parts[f"nce_idt_{d}"] = w * self.nce(G, F, real[dst], out[B:], flipped)
        self.update("G", sum(parts.values()), step)
        return {**scalars(parts), **out_parts}

    def translate(self, x, dst, src=None, generator=None):
        a, b = self.domains
        if dst == a and not self.cfg.bidirectional:
            raise ImxlateError(f"this {self.name} model only translates {a} -> {b}; train with --bidirectional "
                               f"for {b} -> {a} too")
        return self.nets["G_ab" if dst == b else "G_ba"](x)

    def sample_rows(self, images):
        rows = []
        for src, dst in self.directions():
            rows += [images[src], self.translate(images[src], dst)]
        return rows


def nce_layer_list(cfg) -> list[int]:
    try:
        return [int(i) for i in str(cfg.nce_layers).split(",") if i.strip()]
    except ValueError:
        return []


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
