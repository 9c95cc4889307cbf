"""StarGAN (Choi et al. 2018): one generator for any number of domains, conditioned on the target.

Each step concatenates every domain's batch, labelled by domain index, and picks a random other
domain as each image's target. D (a critic with a domain-classification head) learns real vs
fake and the domain of real images; G learns to fool it, to be classified as the target and to
reconstruct its input when translated back through the original label (cycle, L1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import losses
from ..errors import ImxlateError
from ..nets.stargan import StarDiscriminator, StarGenerator, discriminator_layers
from .base import Family, choice, frozen, scalars

CLS_LOSSES = ("ce", "bce")


@dataclass
class StarGANConfig:
    ngf: int = field(default=64, metadata={"help": "generator filters in the first layer (conv_dim)"})
    ndf: int = field(default=64, metadata={"help": "discriminator filters in the first layer"})
    n_blocks: int = field(default=6, metadata={"help": "residual blocks in the generator"})
    n_layers_d: int | None = field(default=None, metadata={
        "help": "discriminator stride-2 layers (default: log2(size) - 1, at most 6: 6 at 128 px)"})
    gan_loss: str = field(default="wgan-gp", metadata={"help": "wgan-gp (paper) | lsgan | vanilla | hinge"})
    spectral_norm: bool = field(default=False, metadata={"help": "spectral norm on the discriminator"})
    cls_loss: str = field(default="ce", metadata={
        "help": "domain classification: ce (one domain per image) | bce (BCE on the one-hot codes)"})
    lambda_cls: float = field(default=1.0, metadata={"help": "domain classification loss weight"})
    lambda_rec: float = field(default=10.0, metadata={"help": "reconstruction (L1) loss weight"})
    lambda_gp: float = field(default=10.0, metadata={"help": "gradient penalty weight (wgan-gp)"})
    n_critic: int = field(default=5, metadata={"help": "discriminator steps per generator step"})
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999


class StarGAN(Family):
    name = "stargan"
    Config = StarGANConfig
    keep = ("G",)
    two_domains = False
    # Paper: 128 px, batch 16, 200k iterations with linear decay over the last 100k. Here the batch
    # is per domain; 32 + 32 epochs give ~200k iterations when the largest domain holds ~50k
    # images (CelebA's black-hair folder: 48k -> 3030 steps per epoch -> 194k steps).
    train_defaults = dict(batch_size=16, epochs=32, epochs_decay=32, load_size=128, crop_size=128)
    size_multiple = 4  # two stride-2 layers

    @classmethod
    def resolve_config(cls, cfg, train_cfg):
        choice("gan_loss", cfg.gan_loss, losses.GAN_LOSSES)
        choice("cls_loss", cfg.cls_loss, CLS_LOSSES)
        if train_cfg.crop_size % 4:
            raise ImxlateError(f"--crop-size {train_cfg.crop_size}: StarGAN needs a multiple of 4 (the paper: 128)")
        if cfg.n_layers_d is None:
            cfg.n_layers_d = discriminator_layers(train_cfg.crop_size)
        elif train_cfg.crop_size >> cfg.n_layers_d < 1:
            raise ImxlateError(f"--n-layers-d {cfg.n_layers_d} halves {train_cfg.crop_size}px images to nothing; "
                               f"use at most {discriminator_layers(train_cfg.crop_size)}")
        return cfg

    def build(self):
        c, k = self.cfg, len(self.domains)
        return {"G": StarGenerator(k, c.ngf, c.n_blocks),
                "D": StarDiscriminator(self.image_size, k, c.ndf, c.n_layers_d, c.spectral_norm)}

    def make_optimizers(self):
        return {name: self.adam(self.nets[name].parameters()) for name in ("G", "D")}

    # ---- labels ----
    def encode_labels(self, index: torch.Tensor) -> torch.Tensor:
        """Domain indices (B,) -> conditioning vectors (B, c_dim): one-hot over the domains.

        The one place the label encoding lives (multi-label attributes would plug in here)."""
        return F.one_hot(index, len(self.domains)).float()

    def classification_loss(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Domain classification of D's logits (B, c_dim) against the domains `index` (B,)."""
        if self.cfg.cls_loss == "bce":  # reference (CelebA): summed over attributes, averaged over images
            return F.binary_cross_entropy_with_logits(logits, self.encode_labels(index), reduction="sum") / len(index)
        return F.cross_entropy(logits, index)

    def random_targets(self, index: torch.Tensor) -> torch.Tensor:
        """A uniformly random domain other than each image's own (from the family's RNG)."""
        k = len(self.domains)
        shift = torch.randint(1, k, index.shape, generator=self.rng)
        return (index.cpu() + shift).remainder(k).to(index.device)

    # ---- losses ----
    def discriminator_losses(self, real, index, fake):
        """Critic loss on real vs fake, domain classification of real images, gradient penalty -> (total, parts)."""
        c, D = self.cfg, self.nets["D"]
        src_real, cls_real = D(real)
        src_fake, _ = D(fake.detach())
        parts = {"D_adv": losses.d_loss(c.gan_loss, src_real, src_fake),
                 "D_cls": c.lambda_cls * self.classification_loss(cls_real, index)}
        if c.gan_loss == "wgan-gp":
            parts["D_gp"] = c.lambda_gp * losses.gradient_penalty(D, real, fake)
        return sum(parts.values()), parts

    def generator_losses(self, real, index, target):
        """Adversarial, target-classification and reconstruction losses of G -> (total, parts)."""
        c, G, D = self.cfg, self.nets["G"], self.nets["D"]
        fake = G(real, self.encode_labels(target))
        src, cls = D(fake)
        parts = {"G_adv": losses.g_loss(c.gan_loss, src),
                 "G_cls": c.lambda_cls * self.classification_loss(cls, target),
                 "G_rec": c.lambda_rec * losses.distance("l1", G(fake, self.encode_labels(index)), real)}
        return sum(parts.values()), parts

    def train_step(self, batch, step):
        real = torch.cat([batch["images"][d] for d in self.domains]).to(self.device)
        index = torch.cat([torch.full((len(batch["images"][d]),), k, dtype=torch.long)
                           for k, d in enumerate(self.domains)]).to(self.device)
        target = self.random_targets(index)
        with torch.no_grad(), self.autocast():
            fake = self.nets["G"](real, self.encode_labels(target))
        with self.autocast():
            loss_d, parts = self.discriminator_losses(real, index, fake)
        self.update("D", loss_d, step)
        out = scalars(parts)
        # The reference updates G after every n_critic-th critic step; here after the first of each
        # group, so short runs train G too (same ratio).
        if step % self.cfg.n_critic == 0:
            with frozen(self.nets["D"]), self.autocast():
                loss_g, parts = self.generator_losses(real, index, target)
            self.update("G", loss_g, step // self.cfg.n_critic)
            out.update(scalars(parts))
        return out

    # ---- inference ----
    def translate(self, x, dst, src=None, generator=None):
        """Images of any domain (`src` is not needed) -> domain `dst`."""
        index = torch.full((x.shape[0],), self.domains.index(dst), dtype=torch.long, device=x.device)
        return self.nets["G"](x, self.encode_labels(index))

    def sample_rows(self, images):
        """For each domain's inputs: the inputs, then their translations into every domain."""
        rows = []
        for d in self.domains:
            rows.append((d, images[d]))
            rows += [(f"{d}->{dst}", self.translate(images[d], dst)) for dst in self.domains]
        return rows
