"""The perceptual constraint: a distance between frozen-network features of an input and its translation.

The user names the feature network by file (`--perceptual-net FILE`); nothing is downloaded. Three
kinds of file are recognised, by content rather than by name:

- a torchvision VGG16 or VGG19 state dict (`torch.save(vgg16(...).state_dict())`, read with
  weights_only=True): keys `features.N.weight/bias`, told apart by their number of convolutions;
  features up to relu3_3 by default (Johnson et al. 2016 use relu3_3 for content);
- the FID Inception v3 weights (the file `imxlate eval` uses): features up to Mixed_5d by default
  (35x35 at 299 px; works from 32 px inputs, unlike the full network);
- a classifier saved by the tool (`imxlate.classifier`): a safetensors file whose metadata
  format is "imxlate-classifier"; features of its last conv block by default.

A family records the file's path, kind, layer and SHA-256 in its config (`record_perceptual` in
`resolve_config`), and builds the loss when training starts (`perceptual_from_config`), refusing a
file whose SHA-256 changed since the run began.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import store
from .classifier import is_classifier_file, load_classifier
from .errors import ImxlateError

KINDS = ("vgg16", "vgg19", "inception", "classifier")
# torchvision's VGG feature layouts: output channels of each 3x3 conv, "M" for a 2x2 max pool.
VGG_LAYOUTS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
# The FID Inception's layers from the input, by torchvision's attribute names (through Mixed_7c).
INCEPTION_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
DEFAULT_LAYER = {"vgg16": "relu3_3", "vgg19": "relu3_3", "inception": "Mixed_5d"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)  # mean = std = 0.5 leaves [-1, 1] images as they are
_KNOWN = ("--perceptual-net takes a torchvision VGG16/VGG19 state dict, the FID Inception weights, "
          "or a classifier from `imxlate train-classifier`")


@dataclass
class PerceptualOptions:
    """The perceptual constraint's options, shared by the config of every family that offers it."""

    perceptual_weight: float = field(default=0.0, metadata={
        "help": "weight of the feature distance between input and translation (needs --perceptual-net)"})
    perceptual_net: str | None = field(default=None, metadata={
        "help": "feature network file: torchvision VGG16/19 state dict, FID Inception weights or an imxlate classifier"})
    perceptual_layer: str | None = field(default=None, metadata={
        "help": "last feature layer (default relu3_3 for VGG, Mixed_5d for Inception, the last block of a classifier)"})
    perceptual_kind: str | None = field(default=None, metadata={"help": "recorded: the kind of --perceptual-net"})
    perceptual_sha256: str | None = field(default=None, metadata={"help": "recorded: the SHA-256 of --perceptual-net"})


class FeatureNet(nn.Module):
    """Images in [-1,1] -> a feature map: the network's own input normalisation, then its layers up to `layer`."""

    def __init__(self, body: nn.Module, kind: str, layer: str, mean=HALF, std=HALF):
        super().__init__()
        self.body, self.kind, self.layer = body, kind, layer
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return self.body(((x + 1) / 2 - self.mean) / self.std)


class PerceptualLoss(nn.Module):
    """Mean squared difference of the features of two image batches (Johnson et al. 2016's feature loss).

    The feature network is frozen: no gradients for its weights and always in eval mode, so its
    batch-norm statistics never change; gradients still flow to the images.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.net(x), self.net(y))


# ---- recognising and loading files ----------------------------------------------------------------

def _torch_state(path: Path) -> dict:
    """A torch.save'd state dict (weights_only, memory-mapped when the format allows), or a clear error."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ImxlateError(f"{path} is neither an imxlate classifier nor a readable torch weights file ({e}); "
                           f"{_KNOWN}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ImxlateError(f"{path} does not hold a state dict of tensors; {_KNOWN}")
    return state



def _state_kind(state: dict) -> str | None:
    """'vgg16' | 'vgg19' | 'inception' from the keys of a state dict, else None."""
    if "Conv2d_1a_3x3.conv.weight" in state and "Mixed_7c.branch_pool.conv.weight" in state:
        return "inception"
    if any("running_mean" in k for k in state):
        return None  # the batch-norm VGG variants have another layout
    convs = sum(1 for k, v in state.items() if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4)
    for kind, layout in VGG_LAYOUTS.items():
        if convs == sum(1 for v in layout if v != "M"):
            return kind
    return None


def _vgg_features(layout: list, layer: str) -> nn.Sequential:
    """torchvision's `features` Sequential (same indices, so its keys load as they are), cut after `layer`.

    Layers are named as in the VGG paper: conv3_3 / relu3_3 is the third conv of block 3, pool3 its pool.
    """
    layers, names, c_in, block, i = [], [], 3, 1, 1
    for v in layout:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            names.append(f"pool{block}")
            block, i = block + 1, 1
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(True)]
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
            c_in, i = v, i + 1
    if layer not in names:
        raise ImxlateError(f"--perceptual-layer {layer}: a VGG layer is one of {', '.join(names)}")
    return nn.Sequential(*layers[:names.index(layer) + 1])


def _load_vgg(state: dict, kind: str, layer: str, path: Path) -> FeatureNet:
    body = _vgg_features(VGG_LAYOUTS[kind], layer)
    wanted = {f"features.{k}": v for k, v in body.state_dict().items()}
    missing = [k for k in wanted if k not in state or state[k].shape != wanted[k].shape]
    if missing:
        raise ImxlateError(f"{path}: {missing[0]} is missing or has the wrong shape for torchvision's {kind}; {_KNOWN}")
    body.load_state_dict({k[len("features."):]: state[k] for k in wanted})
    return FeatureNet(body, kind, layer, IMAGENET_MEAN, IMAGENET_STD)


def _load_inception(state: dict, layer: str, path: Path) -> FeatureNet:
    from .nets.inception import FIDInceptionV3

    if layer not in INCEPTION_LAYERS:
        raise ImxlateError(f"--perceptual-layer {layer}: an Inception layer is one of {', '.join(INCEPTION_LAYERS)}")
    net = FIDInceptionV3()
    try:
        # A plain dict (no version metadata) lets batch norm fill in the batch counters the file lacks.
        net.load_state_dict(dict(state), strict=True)
    except RuntimeError as e:
        raise ImxlateError(f"{path}: not the FID Inception v3 layout ({str(e).splitlines()[-1].strip()})") from None
    body = nn.Sequential(*[getattr(net, n) for n in INCEPTION_LAYERS[:INCEPTION_LAYERS.index(layer) + 1]])
    return FeatureNet(body, "inception", layer)  # the FID network takes [-1, 1] images


def _load_classifier_features(path: Path, layer: str | None) -> FeatureNet:
    net, _ = load_classifier(path)
    names = [f"block{i + 1}" for i in range(len(net.features))]
    layer = layer or names[-1]
    if layer not in names:
        raise ImxlateError(f"--perceptual-layer {layer}: this classifier's layers are {', '.join(names)}")
    return FeatureNet(net.features[:names.index(layer) + 1], "classifier", layer)  # trained on [-1, 1] images


def load_perceptual(path: str | Path, layer: str | None = None) -> tuple[FeatureNet, str, str]:
    """A feature network file -> (frozen FeatureNet in eval mode on the CPU, kind, the file's SHA-256).

    `layer` (None: the kind's default) names the last layer used. Any unusable file is one ImxlateError.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ImxlateError(f"perceptual network file {path} does not exist; {_KNOWN} (nothing is downloaded)")
    sha = store.sha256(path)
    if is_classifier_file(path):
        net = _load_classifier_features(path, layer)
    else:
        state = _torch_state(path)
        kind = _state_kind(state)
        if kind is None:
            raise ImxlateError(f"{path}: unknown network ({len(state)} tensors, e.g. {next(iter(state), 'none')}); "
                               f"{_KNOWN}")
        layer = layer or DEFAULT_LAYER[kind]
        net = _load_inception(state, layer, path) if kind == "inception" else _load_vgg(state, kind, layer, path)
    return net.eval().requires_grad_(False), net.kind, sha


# ---- what a family calls ----------------------------------------------------------------------------

def record_perceptual(cfg) -> None:
    """Check the perceptual options of a family config and record the file's path, kind, layer and SHA-256 in it.

    For `resolve_config`: runs before training starts, so a bad file stops the run before anything is written.
    """
    if cfg.perceptual_weight < 0:
        raise ImxlateError(f"--perceptual-weight {cfg.perceptual_weight}: use 0 (off) or a positive weight")
    if cfg.perceptual_weight == 0:
        if cfg.perceptual_net:
            raise ImxlateError("--perceptual-net is set but --perceptual-weight is 0; give a weight (e.g. 1) "
                               "or drop --perceptual-net")
        return
    if not cfg.perceptual_net:
        raise ImxlateError(f"--perceptual-weight needs --perceptual-net FILE; {_KNOWN}")
    net, kind, sha = load_perceptual(cfg.perceptual_net, cfg.perceptual_layer)
    cfg.perceptual_net = str(Path(cfg.perceptual_net).expanduser().resolve())
    cfg.perceptual_kind, cfg.perceptual_layer, cfg.perceptual_sha256 = kind, net.layer, sha


def perceptual_from_config(cfg, device: str | torch.device = "cpu") -> PerceptualLoss | None:
    """The frozen loss a family config names (None when the weight is 0), on `device`.

    Refuses a file whose SHA-256 differs from the recorded one: a resumed run must see the same network.
    """
    if cfg.perceptual_weight <= 0:
        return None
    net, _, sha = load_perceptual(cfg.perceptual_net, cfg.perceptual_layer)
    if cfg.perceptual_sha256 and sha != cfg.perceptual_sha256:
        raise ImxlateError(f"{cfg.perceptual_net} changed since the run began (SHA-256 {sha[:16]}..., recorded "
                           f"{cfg.perceptual_sha256[:16]}...); put the original file back to continue")
    return PerceptualLoss(net).to(device)
