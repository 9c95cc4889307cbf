"""U-GAT-IT (Kim et al., ICLR 2020): translation that may change shapes, not only texture.

Two generators (a -> b, b -> a) with CAM attention and AdaLIN decoders, and per domain a global and a local
discriminator with the same attention (nets/ugatit.py). Losses: LSGAN on both discriminators' patch logits
and CAM logits, cycle and identity L1, and the generators' own CAM loss: a generator's CAM must tell its
translation input (the source domain, 1) from its identity input (the target domain, 0). `--light` reads
gamma and beta off the attended map's channel means instead of the whole map: far fewer parameters, and
any image size at translation time; the full generator's MLP is sized for the training crop, so it
translates at that size (resized there and back, `fixed_size`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import losses
from ..errors import ImxlateError
from ..nets.ugatit import UGATITDiscriminator, UGATITGenerator, clip_rho
from .base import Family, frozen, scalars

PAPER_LAYERS = {"global": 7, "local": 5}  # the two discriminators of each domain, and their layers (n_dis 6)


@dataclass
class UGATITConfig:
    # The official settings (image size 256, ch 64, n_res 4, n_dis 6: 7 and 5 discriminator layers).
    ngf: int = field(default=64, metadata={"help": "generator filters in the first layer"})
    ndf: int = field(default=64, metadata={"help": "discriminator filters in the first layer"})
    n_blocks: int = field(default=4, metadata={"help": "residual blocks of the encoder (AdaLIN ones of the decoder)"})
    n_layers_global: int | None = field(default=None, metadata={
        "help": "global discriminator layers (default: 7, the paper's, or the most the crop size takes: 6 at 64 px)"})
    n_layers_local: int | None = field(default=None, metadata={
        "help": "local discriminator layers (default: 5, the paper's, or the most the crop size takes)"})
    light: bool = field(default=False, metadata={
        "help": "U-GAT-IT-light: gamma and beta from the attention map's channel means (far smaller; any size "
                "at translation)"})
    lambda_gan: float = field(default=1.0, metadata={"help": "adversarial loss weight"})
    lambda_cycle: float = field(default=10.0, metadata={"help": "cycle loss weight each way"})
    lambda_identity: float = field(default=10.0, metadata={
        "help": "identity loss weight each way (itself, not a share of --lambda-cycle as in CycleGAN)"})
    lambda_cam: float = field(default=1000.0, metadata={"help": "generator CAM loss weight"})
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate (generators and discriminators)"})
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1"})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2"})
    weight_decay: float = field(default=1e-4, metadata={"help": "Adam weight decay (L2, added to the gradients)"})


def discriminator_layers(option: str, n: int | None, paper: int, crop: int) -> int:
    """--n-layers-global/-local: `n`, or the paper's count reduced to the most that `crop` takes; refuses
    a count below 3 or one whose discriminator needs a larger crop."""
    if n is None:
        # Each stride-2 layer halves the image and the last two 4x4 convolutions need 3 positions left, so the
        # paper's global discriminator needs 96 px. Below that, the most layers that fit keep its view of the
        # image the widest the crop allows (at 32 px it is the local one's shape, with its own weights).
        return min(paper, UGATITDiscriminator.most_layers(crop))
    flag = f"--{option.replace('_', '-')}"
    if n < 3:
        raise ImxlateError(f"{flag} {n}: give 3 or more (a stride-2, a stride-1 and the logit convolution)")
    least = UGATITDiscriminator.smallest_input(n)
    if crop < least:
        raise ImxlateError(f"--crop-size {crop}: a discriminator of {flag} {n} needs {least} px or more; raise "
                           f"--crop-size (and --load-size) or lower {flag}")
    return n


class UGATIT(Family):
    name = "ugatit"
    Config = UGATITConfig
    keep = ("G_ab", "G_ba")
    # The official code: batch 1, resize to 286 and random 256 crops, 1,000,000 iterations at a constant rate
    # for the first half and linear decay to zero over the second. Halves in epochs: 1e6 iterations over
    # selfie2anime's 3,400 images per domain are 294 epochs, 147 + 147.
    train_defaults = dict(batch_size=1, epochs=147, epochs_decay=147, load_size=286, crop_size=256)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fixed_size = not self.cfg.light  # the full generator's MLP takes the training crop's feature map only

    @classmethod
    def resolve_config(cls, cfg, train_cfg):
        crop = train_cfg.crop_size
        if crop % 4 or crop < 8:
            raise ImxlateError(f"--crop-size {crop}: U-GAT-IT takes multiples of 4 from 8 px (its generator "
                               "halves the image twice and pads what is left)")
        if not cfg.light and train_cfg.preprocess == "none":
            raise ImxlateError("--preprocess none keeps each image's size, but the full U-GAT-IT's MLP is sized for "
                               "--crop-size: choose another --preprocess, or --light")
        for scale, paper in PAPER_LAYERS.items():
            option = f"n_layers_{scale}"
            setattr(cfg, option, discriminator_layers(option, getattr(cfg, option), paper, crop))
        return cfg

    def build(self):
        c = self.cfg
        nets = {f"G_{s}{d}": UGATITGenerator(c.ngf, c.n_blocks, self.image_size, c.light) for s, d in ("ab", "ba")}
        for s in "ab":
            for scale, paper in PAPER_LAYERS.items():
                nets[f"D_{s}_{scale}"] = UGATITDiscriminator(c.ndf, getattr(c, f"n_layers_{scale}") or paper)
        return nets

    def make_optimizers(self):
        n = self.nets
        return {"G": self.adam([p for k in self.keep for p in n[k].parameters()]),
                "D": self.adam([p for k, v in n.items() if k.startswith("D_") for p in v.parameters()])}

    def discriminators(self, side: str):
        """The global and the local discriminator of domain `side` ('a' or 'b')."""
        return [self.nets[f"D_{side}_{scale}"] for scale in PAPER_LAYERS]

    def discriminator_loss(self, side: str, real, fake):
        """LSGAN on patch and CAM logits of both discriminators of `side`: real -> 1, fake -> 0 (real and fake
        go through each discriminator as one batch)."""
        B, total = len(real), 0.0
        for D in self.discriminators(side):
            for out in D(torch.cat([real, fake]))[:2]:
                total = total + 2 * losses.d_loss("lsgan", out[:B], out[B:])  # the official loss is not halved
        return total

    def generator_losses(self, real: dict, out: dict) -> dict:
        """Adversarial, cycle, identity and CAM losses of both generators. real[s]: domain s's images;
        out[s + d]: G_sd's (images, CAM logits) on real[s] then real[d] (translation and identity, one batch)."""
        c, n = self.cfg, self.nets
        parts = {}
        for s, d in ("ab", "ba"):
            (y, cam), B = out[s + d], len(real[s])
            fake = y[:B]
            parts[f"G_{s}{d}"] = c.lambda_gan * sum(losses.g_loss("lsgan", logits) for D in self.discriminators(d)
                                                    for logits in D(fake)[:2])
            parts[f"cycle_{s}"] = c.lambda_cycle * F.l1_loss(n[f"G_{d}{s}"](fake)[0], real[s])
            parts[f"idt_{d}"] = c.lambda_identity * F.l1_loss(y[B:], real[d])
            # G_sd's CAM: its translation input (domain s) -> 1, its identity input (domain d) -> 0
            parts[f"cam_{s}{d}"] = c.lambda_cam * (
                F.binary_cross_entropy_with_logits(cam[:B], torch.ones_like(cam[:B]))
                + F.binary_cross_entropy_with_logits(cam[B:], torch.zeros_like(cam[B:])))
        return parts

    def train_step(self, batch, step):
        a, b = self.domains
        real = {"a": batch["images"][a].to(self.device), "b": batch["images"][b].to(self.device)}
        B = len(real["a"])
        with self.autocast():
            out = {s + d: self.nets[f"G_{s}{d}"](torch.cat([real[s], real[d]]))[:2] for s, d in ("ab", "ba")}
            # The discriminators first, on this step's translations (the official order; no image pool).
            parts_d = {f"D_{d}": self.discriminator_loss(d, real[d], out[s + d][0][:B].detach())
                       for s, d in ("ab", "ba")}
        self.update("D", sum(parts_d.values()), step)
        with frozen(*self.discriminators("a"), *self.discriminators("b")), self.autocast():
            parts = self.generator_losses(real, out)
        self.update("G", sum(parts.values()), step)
        for k in self.keep:
            clip_rho(self.nets[k])
        return {**scalars(parts), **scalars(parts_d)}

    def translate(self, x, dst, src=None, generator=None):
        """(B,3,H,W) images -> the translations alone (the generator's CAM logits and heatmap are for training)."""
        return super().translate(x, dst, src, generator)[0]

    def sample_rows(self, images):
        """Per direction: the inputs, their translations and the generator's attention (heatmap, upsampled)."""
        rows = []
        for src, dst in self.directions():
            x = images[src]
            y, _, heatmap = self.nets[f"G_{self.side(src)}{self.side(dst)}"](x)
            rows += [(src, x), (f"{src}->{dst}", y),
                     (f"{src}->{dst} attention", attention_image(heatmap, x.shape[-2:]))]
        return rows


def attention_image(heatmap: torch.Tensor, size) -> torch.Tensor:
    """(N, 1, h, w) heatmaps -> (N, 3, H, W) grey images in [-1, 1], each stretched to its own range."""
    lo = heatmap.amin((1, 2, 3), keepdim=True)
    hi = heatmap.amax((1, 2, 3), keepdim=True)
    grey = (heatmap - lo) / (hi - lo).clamp_min(1e-8) * 2 - 1
    return F.interpolate(grey, size=tuple(size), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
