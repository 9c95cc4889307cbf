"""Normalisation choice, weight initialisation and spectral norm shared by all networks."""
from __future__ import annotations

import torch.nn as nn

NORMS = ("instance", "batch", "none")


def norm_layer(kind: str, channels: int, affine: bool = False) -> nn.Module:
    """Instance norm (no affine, no running stats by default), batch norm, or identity."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=affine, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose from {', '.join(NORMS)}")


def conv_bias(norm: str, affine: bool = False) -> bool:
    """Convolutions carry a bias only where the following norm has no shift of its own."""
    return norm == "none" or (norm == "instance" and not affine)


def resize_conv(in_ch: int, out_ch: int, bias: bool) -> list[nn.Module]:
    """x2 nearest resize, reflection pad, 3x3 convolution: upsampling without the checkerboard artefacts
    of transposed convolutions (Odena et al. 2016)."""
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3, bias=bias)]


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """Weights ~ N(0, gain), biases 0; batch-norm scales ~ N(1, gain) (CycleGAN/DCGAN init)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            # under spectral norm, `weight` is computed: initialise the stored original instead
            weight = m.parametrizations.weight.original if nn.utils.parametrize.is_parametrized(m, "weight") else m.weight
            nn.init.normal_(weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


def apply_spectral_norm(net: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every convolution and linear layer."""
    for name, m in list(net.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, (nn.Conv2d, nn.Linear)):
                setattr(m, child_name, nn.utils.parametrizations.spectral_norm(child))
    return net


def param_count(net: nn.Module) -> int:
    """Number of trainable parameters (running statistics are buffers, not counted)."""
    return sum(p.numel() for p in net.parameters())


def sequential_features(seq: nn.Sequential, x, layers: list[int]) -> list:
    """The outputs of the modules of `seq` at indices `layers` (in order), running only as far as the last."""
    feats, wanted = [], set(layers)
    for i, module in enumerate(seq):
        x = module(x)
        if i in wanted:
            feats.append(x)
        if i >= max(layers):
            break
    return feats
