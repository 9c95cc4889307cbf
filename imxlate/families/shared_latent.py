"""Shared latent space (UNIT, Liu et al. 2017): per-domain encoders E_a, E_b into one code space and
decoders G_a, G_b out of it; a -> b is G_b(E_a(x)).

Constraints, each with its own option and recorded in the model file:
- shared layers: the last K blocks of both encoders and the first K of both decoders are one module;
- VAE: the code is the mean of a unit-variance Gaussian; training decodes mean + N(0, 1) noise, the
  KL term reduces to the mean's squared norm (weight --kl-weight), within-domain reconstruction 10;
- latent domain discriminator D_z: tells codes of a from codes of b, the encoders learn to fool it;
- cycle consistency through the common space: a -> code -> b -> code -> a (with the KL of the
  second code, as UNIT);
- semantic consistency: the code of the translation equals the code of the input;
- perceptual: frozen-network features of the translation equal those of the input (imxlate.perceptual).
The image discriminators D_a, D_b are PatchGANs (UNIT uses multi-scale ones) with --gan-loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .. import losses
from ..errors import ImxlateError
from ..nets.common import NORMS, init_weights
from ..nets.patchgan import PatchDiscriminator
from ..nets.unit import Decoder, Encoder, LatentDiscriminator, code_channels, residual_blocks
from ..perceptual import PerceptualOptions, perceptual_from_config, record_perceptual
from .base import Family, check_patch_size, choice, critic_steps


@dataclass
class SharedLatentConfig(PerceptualOptions):
    ngf: int = field(default=64, metadata={"help": "encoder/decoder filters in the first layer (codes: 4x ngf channels)"})
    ndf: int = field(default=64, metadata={"help": "discriminator filters in the first layer"})
    n_blocks: int = field(default=4, metadata={"help": "residual blocks in each encoder and each decoder (UNIT: 4)"})
    shared_layers: int = field(default=1, metadata={
        "help": "last blocks of the encoders and first blocks of the decoders shared between domains"})
    n_layers_d: int = field(default=3, metadata={"help": "PatchGAN layers of the image discriminators"})
    norm: str = field(default="instance", metadata={"help": "instance | batch | none (encoders and decoders)"})
    upsample: str = field(default="transpose", metadata={"help": "transpose | resize (no checkerboard)"})
    gan_loss: str = field(default="lsgan", metadata={"help": "lsgan (UNIT) | vanilla | wgan-gp | hinge"})
    spectral_norm: bool = field(default=False, metadata={"help": "spectral norm on the discriminators"})
    gan_weight: float = field(default=1.0, metadata={"help": "image GAN loss weight each way"})
    recon_weight: float = field(default=10.0, metadata={"help": "within-domain reconstruction weight (UNIT: 10)"})
    kl_weight: float = field(default=0.01, metadata={"help": "KL weight of each code (UNIT: 0.01)"})
    cycle_weight: float = field(default=10.0, metadata={"help": "cycle a->b->a through the codes (UNIT: 10; 0: off)"})
    latent_adversarial: float = field(default=0.0, metadata={
        "help": "weight of fooling a discriminator that tells the domains' codes apart (0: off)"})
    semantic_weight: float = field(default=0.0, metadata={
        "help": "weight of code(translation) = code(input), L1 (0: off)"})
    lambda_gp: float = field(default=10.0, metadata={"help": "gradient penalty weight (wgan-gp)"})
    n_critic: int = field(default=1, metadata={"help": "discriminator steps per generator step (5 with wgan-gp)"})
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = field(default=1e-4, metadata={"help": "Adam L2 weight decay (UNIT: 1e-4)"})


def _unique(params) -> list[nn.Parameter]:
    """Parameters without repeats (shared blocks appear in both encoders or both decoders)."""
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class SharedLatent(Family):
    name = "shared-latent"
    Config = SharedLatentConfig
    keep = ("E_a", "E_b", "G_a", "G_b")
    # UNIT: batch 1, 256 px crops; load size, epochs and the linear decay as CycleGAN in this tool.
    train_defaults = dict(batch_size=1, epochs=100, epochs_decay=100, load_size=286, crop_size=256)
    size_multiple = 4  # two stride-2 layers
    perceptual = None  # the frozen PerceptualLoss, made by setup_training when --perceptual-weight > 0

    @classmethod
    def resolve_config(cls, cfg, train_cfg):
        choice("gan_loss", cfg.gan_loss, losses.GAN_LOSSES)
        choice("norm", cfg.norm, NORMS)
        choice("upsample", cfg.upsample, ("transpose", "resize"))
        if not 0 <= cfg.shared_layers <= cfg.n_blocks:
            raise ImxlateError(f"--shared-layers {cfg.shared_layers}: use 0 to --n-blocks ({cfg.n_blocks})")
        for name in ("gan_weight", "recon_weight", "kl_weight", "cycle_weight", "latent_adversarial", "semantic_weight"):
            if getattr(cfg, name) < 0:
                raise ImxlateError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: weights are 0 (off) or positive")
        if train_cfg.crop_size % cls.size_multiple:
            raise ImxlateError(f"--crop-size {train_cfg.crop_size}: use a multiple of {cls.size_multiple}")
        check_patch_size(train_cfg.crop_size, cfg.n_layers_d)
        critic_steps(cfg)
        record_perceptual(cfg)  # a missing or unknown file stops here, before the run folder exists
        return cfg

    def build(self):
        c = self.cfg
        dim = code_channels(c.ngf)
        # One module object each, handed to both domains' networks: the weights are shared, not copied.
        enc_shared = residual_blocks(dim, c.shared_layers, c.norm)
        dec_shared = residual_blocks(dim, c.shared_layers, c.norm)
        enc = lambda: init_weights(Encoder(enc_shared, c.ngf, c.n_blocks, c.norm))  # noqa: E731
        dec = lambda: init_weights(Decoder(dec_shared, c.ngf, c.n_blocks, c.norm, c.upsample))  # noqa: E731
        disc = lambda: init_weights(PatchDiscriminator(3, c.ndf, c.n_layers_d, "instance", c.spectral_norm))  # noqa: E731
        nets = {"E_a": enc(), "E_b": enc(), "G_a": dec(), "G_b": dec(), "D_a": disc(), "D_b": disc()}
        if c.latent_adversarial > 0:
            nets["D_z"] = init_weights(LatentDiscriminator(dim, c.ndf, c.spectral_norm))
        return nets

    def setup_training(self, amp="none", accumulate=1):
        super().setup_training(amp, accumulate)
        self.perceptual = perceptual_from_config(self.cfg, self.device)

    def make_optimizers(self):
        n = self.nets
        discs = [k for k in n if k.startswith("D")]
        return {"G": self.adam(_unique(p for k in self.keep for p in n[k].parameters())),
                "D": self.adam(_unique(p for k in discs for p in n[k].parameters()))}

    # ---- losses ----
    def sample(self, code: torch.Tensor) -> torch.Tensor:
        """mean + N(0, 1) noise from the family's generator (the VAE's reparameterised sample)."""
        noise = torch.randn(code.shape, generator=self.rng).to(code.device, code.dtype)
        return code + noise

    def translations(self, real_a, real_b):
        """Codes and images of one training pass: {h_a, h_b, rec_a, rec_b, fake_a, fake_b[, h_ab, h_ba]}.

        h_ab is E_b's code of the a->b translation (the way back of a's cycle); h_ba likewise.
        """
        c, n = self.cfg, self.nets
        h_a, h_b = n["E_a"](real_a), n["E_b"](real_b)
        z_a, z_b = self.sample(h_a), self.sample(h_b)
        out = {"h_a": h_a, "h_b": h_b, "rec_a": n["G_a"](z_a), "rec_b": n["G_b"](z_b),
               "fake_b": n["G_b"](z_a), "fake_a": n["G_a"](z_b)}
        if c.cycle_weight > 0 or c.semantic_weight > 0:
            out["h_ab"], out["h_ba"] = n["E_b"](out["fake_b"]), n["E_a"](out["fake_a"])
        return out

    def generator_losses(self, real_a, real_b):
        """Every loss of the encoders and decoders -> (total, parts, translations)."""
        c, n = self.cfg, self.nets
        t = self.translations(real_a, real_b)
        kl = lambda h: h.float().pow(2).mean()  # noqa: E731  KL(N(h, I) || N(0, I)) up to constants, per element
        parts = {
            "G_a": c.gan_weight * losses.g_loss(c.gan_loss, n["D_a"](t["fake_a"])),
            "G_b": c.gan_weight * losses.g_loss(c.gan_loss, n["D_b"](t["fake_b"])),
            "rec_a": c.recon_weight * losses.distance("l1", t["rec_a"], real_a),
            "rec_b": c.recon_weight * losses.distance("l1", t["rec_b"], real_b),
            "kl": c.kl_weight * (kl(t["h_a"]) + kl(t["h_b"])),
        }
        if c.cycle_weight > 0:
            cyc_a, cyc_b = n["G_a"](self.sample(t["h_ab"])), n["G_b"](self.sample(t["h_ba"]))
            parts["cycle_a"] = c.cycle_weight * losses.distance("l1", cyc_a, real_a)
            parts["cycle_b"] = c.cycle_weight * losses.distance("l1", cyc_b, real_b)
            parts["kl_cycle"] = c.kl_weight * (kl(t["h_ab"]) + kl(t["h_ba"]))
        if c.semantic_weight > 0:
            parts["semantic"] = c.semantic_weight * (losses.distance("l1", t["h_ab"], t["h_a"])
                                                     + losses.distance("l1", t["h_ba"], t["h_b"]))
        if c.latent_adversarial > 0:  # the encoders want D_z to call a's codes b and b's codes a
            parts["latent"] = c.latent_adversarial * self.latent_loss(t["h_b"], t["h_a"])
        if self.perceptual is not None:
            parts["perceptual"] = c.perceptual_weight * (self.perceptual(t["fake_b"], real_a)
                                                         + self.perceptual(t["fake_a"], real_b))
        return sum(parts.values()), parts, t

    def latent_loss(self, codes_a, codes_b):
        """D_z's cross-entropy for "codes_a are domain a, codes_b are domain b" (swap them to fool it)."""
        D = self.nets["D_z"]
        return losses.d_loss("vanilla", D(codes_a), D(codes_b))

    def discriminator_loss(self, D, real, fake):
        return losses.critic_loss(self.cfg.gan_loss, D, real, fake, self.cfg.lambda_gp)

    def train_step(self, batch, step):
        a, b = self.domains
        real_a = batch["images"][a].to(self.device)
        real_b = batch["images"][b].to(self.device)
        n = self.nets

        def discriminator_losses(t):
            parts_d = {"D_a": self.discriminator_loss(n["D_a"], real_a, t["fake_a"]),
                       "D_b": self.discriminator_loss(n["D_b"], real_b, t["fake_b"])}
            if "D_z" in n:
                parts_d["D_z"] = self.latent_loss(t["h_a"].detach(), t["h_b"].detach())
            return parts_d

        return self.alternate(step, [n[k] for k in n if k.startswith("D")],
                              lambda: self.generator_losses(real_a, real_b),
                              lambda: self.translations(real_a, real_b), discriminator_losses)

    # ---- inference: the code's mean, no noise (UNIT at test time) ----
    def translate(self, x, dst, src=None, generator=None):
        a, b = self.domains
        if dst == b:
            return self.nets["G_b"](self.nets["E_a"](x))
        return self.nets["G_a"](self.nets["E_b"](x))

    def sample_rows(self, images):
        """Per direction: real, translated, and back through the common space."""
        a, b = self.domains
        n = self.nets
        rows = []
        for src, dst, enc, dec, enc_back, dec_back in ((a, b, "E_a", "G_b", "E_b", "G_a"),
                                                       (b, a, "E_b", "G_a", "E_a", "G_b")):
            fake = n[dec](n[enc](images[src]))
            rows += [(src, images[src]), (f"{src}->{dst}", fake),
                     (f"{src}->{dst}->{src}", n[dec_back](n[enc_back](fake)))]
        return rows
