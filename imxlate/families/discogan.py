"""DiscoGAN (Kim et al. 2017) and the paper's two baselines.

discogan: G_ab and G_ba trained together, each with a GAN loss against D_b / D_a and a
reconstruction loss through the other generator (x_a -> G_ab -> G_ba ~ x_a, and back).
recongan ("GAN with reconstruction loss"): a->b only; G_ba exists only to reconstruct x_a; one D_b.
gan ("standard GAN"): a->b only; G_ab against D_b, no reconstruction.
The paper's comparison of the three is the argument for the method, so all three train here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import losses
from ..errors import ImxlateError
from ..nets.common import NORMS
from ..nets.discogan import DiscoDiscriminator, EncoderDecoderGenerator
from .base import Family, choice, critic_steps

VARIANTS = ("discogan", "recongan", "gan")
DISTANCES = ("mse", "l1", "cosine")


@dataclass
class DiscoGANConfig:
    variant: str = field(default="discogan", metadata={
        "help": "discogan (both directions) | recongan (a->b with reconstruction) | gan (a->b only)"})
    ngf: int = field(default=64, metadata={"help": "generator filters in the first layer"})
    ndf: int = field(default=64, metadata={"help": "discriminator filters in the first layer"})
    norm: str = field(default="batch", metadata={"help": "generator norm: batch (paper) | instance | none"})
    norm_d: str | None = field(default=None, metadata={
        "help": "discriminator norm (default: batch; none with wgan-gp, whose penalty needs per-image scores)"})
    gan_loss: str = field(default="vanilla", metadata={"help": "vanilla (paper) | lsgan | wgan-gp | hinge"})
    spectral_norm: bool = field(default=False, metadata={"help": "spectral norm on the discriminators"})
    recon_loss: str = field(default="mse", metadata={"help": "reconstruction distance: mse (paper) | l1 | cosine"})
    lambda_recon: float = field(default=1.0, metadata={"help": "reconstruction loss weight"})
    lambda_fm: float = field(default=0.0, metadata={
        "help": "feature-matching weight on D's layers 2-4 (0: off; the reference code uses it)"})
    lambda_gp: float = field(default=10.0, metadata={"help": "gradient penalty weight (wgan-gp)"})
    n_critic: int = field(default=1, metadata={"help": "discriminator steps per generator step (5 with wgan-gp)"})
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999


def feature_matching(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the squared distance between batch-mean features of real and fake images."""
    return sum(F.mse_loss(f.mean(0), r.detach().mean(0)) for r, f in zip(real, fake))


class DiscoGAN(Family):
    name = "discogan"
    Config = DiscoGANConfig
    # Paper: 64x64 images, batch 200 (a GPU batch). Default here 64: a third of the time and memory
    # per step on a CPU, still a real batch for batch norm. The paper gives no epoch count and no
    # learning-rate decay: 20 epochs at a constant rate.
    train_defaults = dict(batch_size=64, epochs=20, epochs_decay=0, load_size=64, crop_size=64)
    size_multiple = 16  # four stride-2 layers
    one_way_hint = "it is a paper baseline (--variant gan or recongan); use --to {b}, or train --variant discogan"

    @classmethod
    def resolve_config(cls, cfg, train_cfg):
        choice("variant", cfg.variant, VARIANTS)
        choice("gan_loss", cfg.gan_loss, losses.GAN_LOSSES)
        choice("recon_loss", cfg.recon_loss, DISTANCES)
        choice("norm", cfg.norm, NORMS)
        if cfg.norm_d is not None:
            choice("norm_d", cfg.norm_d, NORMS)
        if train_cfg.crop_size % 16 or train_cfg.crop_size < 16:
            raise ImxlateError(f"--crop-size {train_cfg.crop_size}: DiscoGAN halves images four times, "
                               "so use a multiple of 16 (the paper: 64)")
        critic_steps(cfg)
        return cfg

    # ---- which networks the variant has ----
    @property
    def two_way(self) -> bool:
        """Both directions translate (DiscoGAN); the baselines only translate a -> b."""
        return self.cfg.variant == "discogan"

    @property
    def keep(self):
        """Networks in the model file: the translating generators of the variant."""
        return ("G_ab", "G_ba") if self.two_way else ("G_ab",)

    def build(self):
        c = self.cfg
        # WGAN-GP's penalty is per image, which batch norm in the critic would break.
        norm_d = c.norm_d or ("none" if c.gan_loss == "wgan-gp" else "batch")
        gen = lambda: EncoderDecoderGenerator(3, 3, c.ngf, c.norm)  # noqa: E731
        disc = lambda: DiscoDiscriminator(3, c.ndf, self.image_size, norm_d, c.spectral_norm)  # noqa: E731
        nets = {"G_ab": gen(), "D_b": disc()}
        if c.variant != "gan":
            nets["G_ba"] = gen()
        if self.two_way:
            nets["D_a"] = disc()
        return nets

    def directions(self):
        a, b = self.domains
        return [(a, b), (b, a)] if self.two_way else [(a, b)]

    def make_optimizers(self):
        n = self.nets
        return {"G": self.adam([p for k in n if k.startswith("G") for p in n[k].parameters()]),
                "D": self.adam([p for k in n if k.startswith("D") for p in n[k].parameters()])}

    # ---- losses ----
    def _direction_losses(self, real_src, real_dst, G, D, back, tag):
        """GAN (+ feature matching) loss of G's fakes against D, and the reconstruction through `back`."""
        c = self.cfg
        fake = G(real_src)
        logits, feats = D(fake)
        parts = {f"G_{tag}": losses.g_loss(c.gan_loss, logits)}
        if c.lambda_fm > 0:
            parts[f"fm_{tag}"] = c.lambda_fm * feature_matching(D(real_dst)[1], feats)
        if back is not None:
            parts[f"rec_{tag}"] = c.lambda_recon * losses.distance(c.recon_loss, back(fake), real_src)
        return parts, fake

    def generator_losses(self, real_a, real_b):
        """All generator losses of the variant -> (total, parts, {"b": fake b images[, "a": fake a images]})."""
        n = self.nets
        back = n["G_ba"] if "G_ba" in n else None  # the gan baseline has no reconstruction
        parts, fake_b = self._direction_losses(real_a, real_b, n["G_ab"], n["D_b"], back, "ab")
        fakes = {"b": fake_b}
        if self.two_way:
            parts_ba, fakes["a"] = self._direction_losses(real_b, real_a, n["G_ba"], n["D_a"], n["G_ab"], "ba")
            parts.update(parts_ba)
        return sum(parts.values()), parts, fakes

    def fakes(self, real_a, real_b):
        """{"b": G_ab(real_a)[, "a": G_ba(real_b)]} without the losses (critic-only steps)."""
        out = {"b": self.nets["G_ab"](real_a)}
        if self.two_way:
            out["a"] = self.nets["G_ba"](real_b)
        return out

    def discriminator_loss(self, D, real, fake):
        """GAN loss of D on real vs generated images, plus the gradient penalty with wgan-gp."""
        c = self.cfg
        loss = losses.d_loss(c.gan_loss, D(real)[0], D(fake.detach())[0])
        if c.gan_loss == "wgan-gp":
            loss = loss + c.lambda_gp * losses.gradient_penalty(D, real, fake)
        return loss

    def train_step(self, batch, step):
        real = {k: batch["images"][d].to(self.device) for k, d in zip("ab", self.domains)}
        return self.alternate(
            step, [self.nets[k] for k in self.nets if k.startswith("D")],
            lambda: self.generator_losses(real["a"], real["b"]), lambda: self.fakes(real["a"], real["b"]),
            lambda fakes: {f"D_{k}": self.discriminator_loss(self.nets[f"D_{k}"], real[k], fake)
                           for k, fake in fakes.items()})

    # ---- inference ----
    def sample_rows(self, images):
        """Per direction: real, translated, reconstructed (baselines: a -> b only; gan: no reconstruction)."""
        a, b = self.domains
        n = self.nets
        ways = [(a, b, "G_ab", "G_ba"), (b, a, "G_ba", "G_ab")] if self.two_way else [(a, b, "G_ab", "G_ba")]
        rows = []
        for src, dst, g, back in ways:
            fake = n[g](images[src])
            rows += [(src, images[src]), (f"{src}->{dst}", fake)]
            rows += [(f"{src}->{dst}->{src}", n[back](fake))] if back in n else []
        return rows


@dataclass
class GANConfig(DiscoGANConfig):
    variant: str = field(default="gan", metadata={"help": "gan: the paper's one-direction baseline (a->b)"})


@dataclass
class ReconGANConfig(DiscoGANConfig):
    variant: str = field(default="recongan", metadata={
        "help": "recongan: the paper's a->b baseline with reconstruction loss"})


class GAN(DiscoGAN):
    """The DiscoGAN paper's standard-GAN baseline: G_ab against D_b only."""
    name = "gan"
    Config = GANConfig


class ReconGAN(DiscoGAN):
    """The DiscoGAN paper's GAN-with-reconstruction baseline: a->b, reconstruction through G_ba."""
    name = "recongan"
    Config = ReconGANConfig
