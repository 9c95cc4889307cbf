"""Why the emoji README's U-Net recipe collapses on black-on-white glyphs: the generator's normalisation.

    OMP_NUM_THREADS=1 python examples/glyphs/collapse.py DATA/glyphs/cjk [--steps 60]

Trains the recipe (U-Net, ngf 16, ndf 32, resize upsampling, spectral norm, cycle 20, identity 1.0,
batch 4) directly through the family for --steps steps, four ways: generator norm none / instance
crossed with discriminator norm none / instance, seed 0, the same batches. Every 5 steps it prints, for
G_ab on 8 fixed characters: the mean and minimum of the values going into the final tanh, the share of
them beyond +-3 (where tanh passes less than 1% of the gradient back), and the spread of the translations
across the 8 inputs (0: one image whatever the input). The last lines give each combination's end state.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn

from imxlate.config import TrainConfig
from imxlate.data import list_images, load_rgb, to_tensor
from imxlate.families.cyclegan import CycleGAN, CycleGANConfig

RECIPE = dict(generator="unet", ngf=16, ndf=32, upsample="resize", spectral_norm=True, lambda_cycle=20,
              lambda_identity=1.0)


def family(norm_g: str, norm_d: str) -> CycleGAN:
    """The recipe with the generators' norm `norm_g` and the discriminators' `norm_d` (seed 0)."""
    def build(norm):
        torch.manual_seed(0)
        cfg = CycleGAN.resolve_config(CycleGANConfig(norm=norm, **RECIPE), TrainConfig(crop_size=64))
        return CycleGAN(cfg, ["sans", "serif"], 64)
    fam, other = build(norm_g), build(norm_d)
    fam.nets["D_a"], fam.nets["D_b"] = other.nets["D_a"], other.nets["D_b"]
    fam.setup_training()
    return fam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a glyph pair folder of examples/glyphs/prepare.py (e.g. DATA/glyphs/cjk)")
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = 4 * args.steps
    a = torch.stack([to_tensor(load_rgb(p)) for p in list_images(args.data / "sans")[:n]])
    b = torch.stack([to_tensor(load_rgb(p)) for p in list_images(args.data / "serif")[:n]])
    probe = a[:8]
    ends = []
    for norm_g in ("none", "instance"):
        for norm_d in ("none", "instance"):
            fam = family(norm_g, norm_d)
            pre = {}
            tanh = [m for m in fam.nets["G_ab"].modules() if isinstance(m, nn.Tanh)][-1]
            tanh.register_forward_hook(lambda m, i, o: pre.__setitem__("x", i[0].detach()))
            print(f"generator norm {norm_g}, discriminator norm {norm_d}")
            for step in range(args.steps):
                i = 4 * step
                losses = fam.train_step({"images": {"sans": a[i:i + 4], "serif": b[i:i + 4]}, "labels": {}}, step)
                if (step + 1) % 5 == 0 or step + 1 == args.steps:
                    with torch.no_grad():
                        out_ab = fam.nets["G_ab"](probe)
                        out_ba = fam.nets["G_ba"](b[:8])
                    x = pre["x"]
                    print(f"  step {step + 1:3d}: pre-tanh mean {x.mean():6.2f} min {x.min():6.2f}, "
                          f"beyond +-3 {(x.abs() > 3).float().mean():.3f}; spread of G_ab's translations "
                          f"{out_ab.std(0).mean():.4f}, G_ba's {out_ba.std(0).mean():.4f}")
            ends.append(f"| {norm_g} | {norm_d} | {out_ab.std(0).mean():.4f} | {out_ba.std(0).mean():.4f} | "
                        f"{losses['cycle_a']:.3f} | {losses['idt_a']:.3f} |")
    print("\n| generator norm | discriminator norm | spread G_ab | spread G_ba | cycle_a | idt_a |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(ends))


if __name__ == "__main__":
    main()
