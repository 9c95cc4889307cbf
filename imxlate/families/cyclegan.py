"""CycleGAN (Zhu et al. 2017): two ResNet generators, two PatchGAN discriminators, cycle consistency.
--generator unet swaps in the pix2pix U-Net, --generator deform the ResNet with DG-Font's deformable skip
connections (nets/deform.py), which can move strokes, not only retexture them; --warp affine puts the ResNet or
the U-Net behind a learned affine warp (nets/warp.py), which slants, stretches or shifts the whole picture."""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import losses
from ..errors import ImxlateError
from ..nets.common import init_weights
from ..nets.deform import DeformResnetGenerator, offset_loss
from ..nets.resnet import ResnetGenerator, default_blocks
from ..nets.warp import AffineWarp
from ..nets.unet import UnetGenerator, unet_levels
from ..perceptual import PerceptualOptions, perceptual_from_config, record_perceptual
from .base import Family, ImagePool, ResnetGANOptions, choice, critic_steps

GENERATORS = {"resnet": ResnetGenerator, "unet": UnetGenerator, "deform": DeformResnetGenerator}
WARPS = ("none", "affine")
OFFSET_WEIGHT = 0.5  # DG-Font's released training settings: w_off 0.5


@dataclass
class CycleGANConfig(PerceptualOptions, ResnetGANOptions):
    generator: str = field(default="resnet", metadata={
        "help": "resnet (CycleGAN) | unet (pix2pix U-Net: skip connections carry the input's edges) | deform "
                "(ResNet with DG-Font's deformable skip connections: moves strokes, for shape changes)"})
    warp: str = field(default="none", metadata={
        "help": "none | affine (a learned affine warp of the input before the generator, initialised to the "
                "identity: slant and proportions, for a global change of shape)"})
    n_downs: int | None = field(default=None, metadata={
        "help": "U-Net levels (default: all the halvings the crop size allows, 6 at 64 px)"})
    dropout: bool = field(default=False, metadata={
        "help": "dropout 0.5 in the residual blocks (U-Net: in its 8 ngf decoder levels)"})
    lambda_cycle: float = field(default=10.0, metadata={"help": "cycle loss weight each way"})
    lambda_identity: float = field(default=0.5, metadata={"help": "identity loss weight, times lambda_cycle"})
    lambda_offset: float | None = field(default=None, metadata={
        "help": "deform generator: weight of the mean absolute skip offset, each way (default 0.5, DG-Font's)"})
    lambda_gp: float = field(default=10.0, metadata={"help": "gradient penalty weight (wgan-gp)"})
    n_critic: int = field(default=1, metadata={"help": "discriminator steps per generator step (5 with wgan-gp)"})
    pool_size: int = field(default=50, metadata={"help": "history of generated images shown to D"})
    one_way: bool = field(default=False, metadata={
        "help": "G_ab only (first -> second domain): a single imported generator; not trainable"})


class CycleGAN(Family):
    name = "cyclegan"
    Config = CycleGANConfig
    keep = ("G_ab", "G_ba")
    # The paper's, and a moving average of the generators (not the paper's: it won on the glyph benchmark's
    # validation characters, examples/glyphs).
    train_defaults = dict(batch_size=1, epochs=100, epochs_decay=100, load_size=286, crop_size=256, ema=0.999)
    one_way_hint = "import it with --reverse FILE (a {b} -> {a} generator) to translate into {a}"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.cfg.one_way:  # an imported single generator: the model file holds G_ab alone
            self.keep = ("G_ab",)

    def recipe_hint(self) -> str:
        if self.cfg.generator == "resnet" and self.cfg.warp == "none":  # the glyph benchmark's shape pairs
            return ("Shapes: this generator keeps each input's layout and restyles it; where the target draws things "
                    "differently (slant, proportions: print to script), try --generator unet --warp affine")
        return ""

    @classmethod
    def resolve_config(cls, cfg, train_cfg):
        if cfg.one_way:
            raise ImxlateError("--one-way marks a single imported generator; CycleGAN training needs both directions")
        choice("generator", cfg.generator, tuple(GENERATORS))
        choice("warp", cfg.warp, WARPS)
        if cfg.warp != "none" and cfg.generator == "deform":
            raise ImxlateError("--warp moves the input of a ResNet or U-Net generator; --generator deform moves "
                               "strokes its own way: give one of them")
        cfg.check_nets(train_cfg.crop_size)
        if (cfg.generator == "unet" and cfg.n_blocks is not None) or (cfg.generator != "unet" and cfg.n_downs):
            raise ImxlateError("--n-blocks sets a ResNet generator, --n-downs a U-Net; give the one that "
                               "matches --generator")
        if cfg.generator != "deform" and cfg.lambda_offset is not None:
            raise ImxlateError("--lambda-offset weighs the offsets of --generator deform; leave it out or add "
                               "--generator deform")
        if cfg.generator == "unet":
            crop = train_cfg.crop_size
            if cfg.n_downs is None:
                cfg.n_downs = unet_levels(crop)
            if cfg.n_downs < 5 or crop % 2**cfg.n_downs:
                raise ImxlateError(f"a U-Net of {cfg.n_downs} levels at --crop-size {crop}: it needs at least 5 "
                                   "levels and a crop size divisible by 2**levels; change --n-downs or --crop-size")
        if cfg.n_blocks is None and cfg.generator != "unet":
            cfg.n_blocks = default_blocks(train_cfg.crop_size)
        if cfg.lambda_offset is None and cfg.generator == "deform":
            cfg.lambda_offset = OFFSET_WEIGHT
        critic_steps(cfg)
        record_perceptual(cfg)  # a missing or unknown file stops here, before the run folder exists
        return cfg

    def build(self):
        c = self.cfg
        choice("generator", c.generator, tuple(GENERATORS))  # a model file's config, too
        choice("warp", c.warp, WARPS)
        n_blocks = c.n_blocks if c.n_blocks is not None else 9
        downs = (c.n_downs or unet_levels(self.image_size)) if c.generator == "unet" else None

        def gen():
            if c.generator == "unet":
                net = UnetGenerator(3, 3, c.ngf, downs, c.norm, c.dropout, c.upsample)
            else:
                net = GENERATORS[c.generator](3, 3, c.ngf, n_blocks, c.norm, c.dropout, c.upsample)
            return init_weights(AffineWarp(net, 3, c.ngf) if c.warp == "affine" else net)

        if c.generator == "unet":
            self.size_multiple = 2**downs  # translate pads to it: every level halves the image
        if c.one_way:
            return {"G_ab": gen()}
        return {"G_ab": gen(), "G_ba": gen(), "D_a": c.patch_discriminator(), "D_b": c.patch_discriminator()}

    def setup_training(self, amp="none", accumulate=1):
        super().setup_training(amp, accumulate)
        self.pools = {"a": ImagePool(self.cfg.pool_size), "b": ImagePool(self.cfg.pool_size)}
        self.perceptual = perceptual_from_config(self.cfg, self.device)  # None when --perceptual-weight is 0

    def make_optimizers(self):
        n = self.nets
        return {"G": self.adam([*n["G_ab"].parameters(), *n["G_ba"].parameters()]),
                "D": self.adam([*n["D_a"].parameters(), *n["D_b"].parameters()])}

    def generator_losses(self, real_a, real_b):
        """Adversarial, cycle and identity losses of both generators -> (total, parts, fakes)."""
        c, n = self.cfg, self.nets
        (fake_b, offset_ab), (fake_a, offset_ba) = self.generate("G_ab", real_a), self.generate("G_ba", real_b)
        rec_a, rec_b = n["G_ba"](fake_b), n["G_ab"](fake_a)
        parts = {
            "G_ab": losses.g_loss(c.gan_loss, n["D_b"](fake_b)),
            "G_ba": losses.g_loss(c.gan_loss, n["D_a"](fake_a)),
            "cycle_a": losses.distance("l1", rec_a, real_a) * c.lambda_cycle,
            "cycle_b": losses.distance("l1", rec_b, real_b) * c.lambda_cycle,
        }
        if c.lambda_identity > 0:  # CycleGAN paper: identity weight 0.5 x lambda
            w = c.lambda_identity * c.lambda_cycle
            parts["idt_a"] = losses.distance("l1", n["G_ba"](real_a), real_a) * w
            parts["idt_b"] = losses.distance("l1", n["G_ab"](real_b), real_b) * w
        if offset_ab is not None:  # DG-Font: the offsets of the translation (not of the reconstruction)
            w = OFFSET_WEIGHT if c.lambda_offset is None else c.lambda_offset  # None: a config built unresolved
            parts["offset_ab"] = offset_ab * w
            parts["offset_ba"] = offset_ba * w
        if self.perceptual is not None:  # features of each translation against its input's (Taigman et al.)
            parts["perceptual"] = c.perceptual_weight * (self.perceptual(fake_b, real_a) + self.perceptual(fake_a, real_b))
        return sum(parts.values()), parts, (fake_a, fake_b)

    def generate(self, name: str, x):
        """Generator `name` on `x` -> (its output, the offset loss of its deformable skips; None without)."""
        net = self.nets[name]
        if isinstance(net, DeformResnetGenerator):
            y, offsets = net.deformed(x)
            return y, offset_loss(offsets)
        return net(x), None

    def discriminator_loss(self, D, real, fake):
        return losses.critic_loss(self.cfg.gan_loss, D, real, fake, self.cfg.lambda_gp)

    def train_step(self, batch, step):
        a, b = self.domains
        real_a = batch["images"][a].to(self.device)
        real_b = batch["images"][b].to(self.device)
        n = self.nets

        def discriminator_losses(fake):
            fake_a, fake_b = fake
            return {"D_a": self.discriminator_loss(n["D_a"], real_a, self.pools["a"].query(fake_a, self.rng)),
                    "D_b": self.discriminator_loss(n["D_b"], real_b, self.pools["b"].query(fake_b, self.rng))}

        return self.alternate(step, (n["D_a"], n["D_b"]), lambda: self.generator_losses(real_a, real_b),
                              lambda: (n["G_ba"](real_b), n["G_ab"](real_a)), discriminator_losses)

    def directions(self):
        a, b = self.domains
        return [(a, b)] if self.cfg.one_way else [(a, b), (b, a)]

    def sample_rows(self, images):
        a, b = self.domains
        n = self.nets
        rows = []
        for src, dst, g, back in ((a, b, n["G_ab"], n["G_ba"]), (b, a, n["G_ba"], n["G_ab"])):
            fake = g(images[src])
            rows += [(src, images[src]), (f"{src}->{dst}", fake), (f"{src}->{dst}->{src}", back(fake))]
        return rows

    def extra_state(self):
        return {**super().extra_state(), "pools": {k: p.state() for k, p in self.pools.items()}}

    def load_extra_state(self, state):
        super().load_extra_state(state)
        for k, p in self.pools.items():
            p.load(state["pools"][k], self.device)
