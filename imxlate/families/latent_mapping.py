"""Latent mapping (Lu, "Cross Domain Image Generation through Latent Space Exploration with
Adversarial Loss", 2018): translation between the codes of two separately trained VAEs.

Stage 1 ("vae") trains a VAE per domain on the ELBO plus a pixel reconstruction term. Stage 2
("mapping") freezes them and trains, each way, a generator G_ab(z_a, eps) -> code of B, eps ~ N(0, I),
against a discriminator D_b of code pairs: real pairs (z_a of class i, z_b of a class mapped from i),
fake pairs (z_a, G_ab(z_a, eps)) and noise pairs (z_a, eps), the last also fake so that G cannot just
pass its noise through. Translation encodes (the code's mean), maps with fresh noise and decodes.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import torch

from .. import losses
from ..errors import ImxlateError
from ..nets.vae import CodeMapper, ConvVAE, PairDiscriminator, halvings
from .base import Family, choice, frozen, scalars


@dataclass
class LatentMappingConfig:
    class_map: str = field(default="", metadata={
        "help": "which class of A goes to which class of B, by folder name: '0:5,1:6' (several to one "
                "allowed; default: the classes both domains name alike)"})
    z_dim: int = field(default=32, metadata={"help": "code size of each VAE"})
    nf: int = field(default=32, metadata={"help": "VAE filters in the first convolution"})
    hidden: int = field(default=256, metadata={"help": "width of the mapping generators and pair discriminators"})
    layers: int = field(default=3, metadata={"help": "hidden layers of the mapping generators and discriminators"})
    vae_steps: int = field(default=5000, metadata={"help": "length of stage 1 (the VAEs); --steps is stage 2"})
    kl_weight: float = field(default=1e-3, metadata={
        "help": "KL weight of the ELBO (per image) against the per-pixel mean squared error"})
    pixel_weight: float = field(default=1.0, metadata={"help": "pixel (L1) reconstruction weight from the code's mean"})
    # Not given by the paper's notes. Chosen on validation inputs (examples/latent_mapping, "Choosing the
    # weight"): 1 and 3 spread the samples of one input 1.2 times as much as 0.01, but kept the class less often
    # (0.82 and 0.78 against 0.87), so the rule fixed in advance kept 0.01. At 0.01 G mostly ignores eps.
    noise_reg: float = field(default=0.01, metadata={
        "help": "weight of ||G(z, eps) - eps||^2 in the generator loss: keeps G's output near its noise, so "
                "that different noise gives different outputs"})
    noise_pairs: bool = field(default=True, metadata={"help": "show D the noise pairs (z_a, eps) as fakes (the paper)"})
    gan_loss: str = field(default="vanilla", metadata={"help": "vanilla (paper) | lsgan | wgan-gp | hinge"})
    spectral_norm: bool = field(default=False, metadata={"help": "spectral norm on the pair discriminators"})
    lambda_gp: float = field(default=10.0, metadata={"help": "gradient penalty weight (wgan-gp)"})
    vae_lr: float = field(default=1e-3, metadata={"help": "Adam learning rate of the VAEs"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate of the mapping GANs (small MLPs on codes)"})
    beta1: float = 0.5
    beta2: float = 0.999


def parse_class_map(text: str) -> list[tuple[str, str]]:
    """'0:5,1:6' -> [('0', '5'), ('1', '6')]: class folder names of A and B; '' -> []."""
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue
        src, sep, dst = (s.strip() for s in item.partition(":"))
        if not sep or not src or not dst:
            raise ImxlateError(f"--class-map: {item.strip()!r} is not SOURCE:TARGET; write e.g. --class-map 0:5,1:6")
        pairs.append((src, dst))
    return pairs


def pair_matrix(class_map: str, names: list[str], classes: list[list[str]]) -> torch.Tensor:
    """(classes of A, classes of B) bool matrix: True where an A class pairs with a B class.

    A domain without class folders is one class. No map: classes of the same name pair when both
    domains have classes, else everything pairs with everything (content is then not steered).
    """
    sizes = [max(1, len(c)) for c in classes]
    allowed = torch.zeros(sizes, dtype=torch.bool)
    pairs = parse_class_map(class_map)
    if pairs:
        for side in (0, 1):
            if not classes[side]:
                raise ImxlateError(f"--class-map names classes of domain '{names[side]}', which has no class "
                                   "folders; put its images in one sub-folder per class")
            missing = sorted({p[side] for p in pairs} - set(classes[side]))
            if missing:
                raise ImxlateError(f"--class-map names class '{missing[0]}' of domain '{names[side]}', which has "
                                   f"no such folder (its classes: {', '.join(classes[side])})")
        for src, dst in pairs:
            allowed[classes[0].index(src), classes[1].index(dst)] = True
    elif classes[0] and classes[1]:
        shared = [c for c in classes[0] if c in classes[1]]
        if not shared:
            raise ImxlateError(f"domains '{names[0]}' and '{names[1]}' share no class folder name; "
                               "say which class goes where with --class-map, e.g. --class-map 0:5,1:6")
        for c in shared:
            allowed[classes[0].index(c), classes[1].index(c)] = True
    else:
        allowed[:] = True
    return allowed


class LatentMapping(Family):
    name = "latent-mapping"
    Config = LatentMappingConfig
    keep = ("VAE_a", "VAE_b", "G_ab", "G_ba")
    # MNIST scale (the paper's experiments): 32x32 without crop jitter; stage 2 is cheap, so 100 epochs.
    train_defaults = dict(batch_size=64, epochs=100, epochs_decay=0, load_size=32, crop_size=32)
    fixed_size = True  # the VAEs' fully connected code layers fix the image size
    uses_labels = True

    @classmethod
    def resolve_config(cls, cfg, train_cfg):
        choice("gan_loss", cfg.gan_loss, losses.GAN_LOSSES)
        if cfg.vae_steps < 1:
            raise ImxlateError(f"--vae-steps {cfg.vae_steps}: stage 1 needs at least one step")
        if halvings(train_cfg.crop_size)[0] == 0:
            raise ImxlateError(f"--crop-size {train_cfg.crop_size}: the VAEs need an even size above 4 (e.g. 32)")
        parse_class_map(cfg.class_map)  # syntax errors before any data is read
        return cfg

    def build(self):
        c = self.cfg
        vae = lambda: ConvVAE(self.image_size, c.z_dim, c.nf)  # noqa: E731
        gen = lambda: CodeMapper(c.z_dim, c.hidden, c.layers)  # noqa: E731
        disc = lambda: PairDiscriminator(c.z_dim, c.hidden, c.layers, c.spectral_norm)  # noqa: E731
        return {"VAE_a": vae(), "VAE_b": vae(), "G_ab": gen(), "G_ba": gen(), "D_a": disc(), "D_b": disc()}

    def make_optimizers(self):
        c, n = self.cfg, self.nets
        adam = lambda params, lr: torch.optim.Adam(params, lr=lr, betas=(c.beta1, c.beta2))  # noqa: E731
        return {"VAE": adam([*n["VAE_a"].parameters(), *n["VAE_b"].parameters()], c.vae_lr),
                "G": adam([*n["G_ab"].parameters(), *n["G_ba"].parameters()], c.lr),
                "D": adam([*n["D_a"].parameters(), *n["D_b"].parameters()], c.lr)}

    def check_data(self, domains):
        super().check_data(domains)
        names = [d.name for d in domains]
        pair_matrix(self.cfg.class_map, names, [d.classes for d in domains])
        for d in domains:
            if not d.classes and os.environ.get("RANK", "0") == "0":
                print(f"warning: domain '{d.name}' has no class sub-folders, so it is one class: the mapping "
                      "changes the domain but does not steer the content (which class comes out)", file=sys.stderr)

    def stages(self, total_steps):
        return [("vae", self.cfg.vae_steps), ("mapping", total_steps)]

    def lr_factor(self, step, total, decay_start):
        """Stage 1 at a constant rate; the schedule (decay) counts stage 2's steps only."""
        return 1.0 if step < self.cfg.vae_steps else super().lr_factor(step - self.cfg.vae_steps, total, decay_start)

    def train_step(self, batch, step):
        if step < self.cfg.vae_steps:
            return self.vae_step(batch, step)
        return self.mapping_step(batch, step - self.cfg.vae_steps)

    def noise(self, shape) -> torch.Tensor:
        """N(0, I) from the family's generator (saved in checkpoints), on the training device."""
        return torch.randn(shape, generator=self.rng).to(self.device)

    # ---- stage 1: the VAEs ---------------------------------------------------------------------
    def vae_losses(self, vae, x) -> dict[str, torch.Tensor]:
        """ELBO terms (squared error of a sampled code's decoding, KL to N(0, I)) and the pixel term."""
        mean, logvar = vae.encode(x)
        z = mean + torch.exp(0.5 * logvar) * self.noise(mean.shape)  # reparameterisation
        kl = (-0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(1)).mean()  # per image, nats
        return {"recon": losses.distance("mse", vae.decode(z), x),
                "kl": kl,
                "pixel": losses.distance("l1", vae.decode(mean), x)}

    def vae_step(self, batch, step):
        c, out, total = self.cfg, {}, 0
        for k, domain in zip("ab", self.domains):
            with self.autocast():
                parts = self.vae_losses(self.nets[f"VAE_{k}"], batch["images"][domain].to(self.device))
            total = total + parts["recon"] + c.kl_weight * parts["kl"] + c.pixel_weight * parts["pixel"]
            out.update({f"{name}_{k}": v for name, v in parts.items()})
        self.update("VAE", total, step)
        return scalars(out)

    # ---- stage 2: the mapping GANs ---------------------------------------------------------------
    @property
    def pairing(self) -> torch.Tensor:
        """(classes of A, classes of B) matrix of allowed real pairs, from the class map."""
        if not hasattr(self, "_pairing"):
            self._pairing = pair_matrix(self.cfg.class_map, self.domains,
                                        [self.classes.get(d, []) for d in self.domains])
        return self._pairing

    def real_partners(self, labels_src, labels_dst, allowed) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Pair each source sample with a random class-matched target sample of the same batch.

        -> (source rows, target rows, weight). Sources whose mapped class is absent from this batch
        sit out; when no source has a partner every row is kept with weight 0, so that every rank
        runs the same updates (DDP) while this direction learns nothing from the batch.
        """
        ok = allowed[labels_src][:, labels_dst]  # (B_src, B_dst)
        score = torch.rand(ok.shape, generator=self.rng).masked_fill(~ok, -1.0)
        cols = score.argmax(1)
        rows = ok.any(1).nonzero().squeeze(1)
        if len(rows) == 0:
            return torch.arange(len(cols)), cols, 0.0
        return rows, cols[rows], 1.0

    def discriminator_loss(self, D, z_src, z_real, z_fake, eps, noise_pairs: bool) -> torch.Tensor:
        """Real pairs against fake pairs and (by default) noise pairs, pooled as one set of fakes."""
        real = torch.cat([z_src, z_real], 1)
        fakes = [torch.cat([z_src, z_fake.detach()], 1)]
        if noise_pairs:
            fakes.append(torch.cat([z_src, eps], 1))
        fake = torch.cat(fakes)
        loss = losses.d_loss(self.cfg.gan_loss, D(real), D(fake))
        if self.cfg.gan_loss == "wgan-gp":
            loss = loss + self.cfg.lambda_gp * losses.gradient_penalty(D, real.repeat(len(fakes), 1), fake)
        return loss

    def generator_loss(self, D, z_src, z_fake, eps) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (adversarial loss on fake pairs, ||G(z, eps) - eps||^2).

        The regulariser enters with a plus sign: the paper notes that a generator moving simple noise
        onto the mapped codes tends to maximise its output's distance to eps, and minimising this term
        keeps G(z, eps) from moving too far from eps. It is also what makes G use eps: the adversarial
        term judges one pair at a time, so it never rewards outputs that differ between noise draws.
        """
        adv = losses.g_loss(self.cfg.gan_loss, D(torch.cat([z_src, z_fake], 1)))
        return adv, losses.distance("mse", z_fake, eps)

    def mapping_step(self, batch, step):
        c, n = self.cfg, self.nets
        a, b = self.domains
        with torch.no_grad(), self.autocast():
            codes = {"a": n["VAE_a"].encode(batch["images"][a].to(self.device))[0].float(),
                     "b": n["VAE_b"].encode(batch["images"][b].to(self.device))[0].float()}
        labels = {"a": batch["labels"][a], "b": batch["labels"][b]}
        ways = []
        for s, t, allowed in (("a", "b", self.pairing), ("b", "a", self.pairing.T)):
            rows, cols, weight = self.real_partners(labels[s], labels[t], allowed)
            z_src = codes[s][rows.to(self.device)]
            eps = self.noise(z_src.shape)
            with self.autocast():
                z_fake = n[f"G_{s}{t}"](z_src, eps)
            ways.append((s, t, z_src, codes[t][cols.to(self.device)], z_fake, eps, weight))

        out, loss_d = {}, 0
        with self.autocast():
            for s, t, z_src, z_real, z_fake, eps, w in ways:
                part = self.discriminator_loss(n[f"D_{t}"], z_src, z_real, z_fake, eps, c.noise_pairs)
                loss_d, out[f"D_{t}"] = loss_d + w * part, part
        self.update("D", loss_d, step)

        loss_g = 0
        with frozen(n["D_a"], n["D_b"]), self.autocast():
            for s, t, z_src, _, z_fake, eps, w in ways:
                adv, reg = self.generator_loss(n[f"D_{t}"], z_src, z_fake, eps)
                loss_g = loss_g + w * (adv + c.noise_reg * reg)
                out[f"G_{s}{t}"], out[f"noise_dist_{s}{t}"] = adv, reg
        self.update("G", loss_g, step)
        return scalars(out)

    # ---- inference ----------------------------------------------------------------------------------
    def translate(self, x, dst, src=None, generator=None):
        """Encode (the code's mean), map with fresh noise from `generator` (None: torch's), decode."""
        ks, kt = ("a", "b") if dst == self.domains[1] else ("b", "a")
        z = self.nets[f"VAE_{ks}"].encode(x)[0]
        if generator is not None:
            eps = torch.randn(z.shape, generator=generator, device=generator.device).to(z.device)
        else:
            eps = torch.randn(z.shape, device=z.device)
        return self.nets[f"VAE_{kt}"].decode(self.nets[f"G_{ks}{kt}"](z, eps))

    def sample_rows(self, images):
        """Per direction: real, VAE reconstruction (from the mean), translated (fixed noise)."""
        g = torch.Generator().manual_seed(0)  # not the training generator: samples leave training unchanged
        rows = []
        for ks, kt, domain, target in (("a", "b", *self.domains), ("b", "a", *reversed(self.domains))):
            x = images[domain]
            z = self.nets[f"VAE_{ks}"].encode(x)[0]
            eps = torch.randn(z.shape, generator=g).to(z.device)
            mapped = self.nets[f"G_{ks}{kt}"](z, eps)
            rows += [(domain, x), (f"{domain} VAE", self.nets[f"VAE_{ks}"].decode(z)),
                     (f"{domain}->{target}", self.nets[f"VAE_{kt}"].decode(mapped))]
        return rows
