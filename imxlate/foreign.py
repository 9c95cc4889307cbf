"""Importing generators trained with the reference code of other projects into imxlate model files.

Supported: ResNet generators of the CycleGAN/pix2pix reference repository (`latest_net_G_A.pth`,
`{epoch}_net_G.pth`, the released pretrained `.pth` files) and StarGAN generators (`{iter}-G.ckpt`).
imxlate's networks keep the reference module layout (`model.N...`, `main.N...`), so the weights map
key for key; the architecture (blocks, filters, norm, dropout, domains) is read from the keys and
shapes. Files are read with torch.load(weights_only=True) (as every torch.load in imxlate is): plain
tensors only, never pickled code. `import_checkpoint` is what `imxlate import` calls.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn as nn

from . import store
from .config import check_at_least
from .errors import ImxlateError
from .families import build_family

# Image sizes the reference models were trained at (CycleGAN: 256 px crops; StarGAN on CelebA: 128 px).
REFERENCE_IMAGE_SIZE = {"cyclegan": 256, "stargan": 128}
FOREIGN_FAMILIES = tuple(REFERENCE_IMAGE_SIZE)
RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


# ---- reading ---------------------------------------------------------------------------------------

def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat name -> tensor dict of a PyTorch weights file, read with torch.load(weights_only=True); weights
    that are not finite or not of a sane magnitude are refused (`store.check_weights`)."""
    path = Path(path)
    if not path.is_file():
        raise ImxlateError(f"{path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not PyTorch, or pickled objects: torch raises many different types
        obj = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))  # the weights-only unpickler's refusal
        if obj:
            raise ImxlateError(f"{path} holds pickled Python objects ({obj[1]}: e.g. a whole saved network), "
                               "which imxlate does not load; save the weights with "
                               "torch.save(net.state_dict(), FILE)") from None
        text = str(e).strip()
        # The weights-only refusal's text advises weights_only=False, which imxlate never does: not repeated.
        why = "its content is not plain tensors" if "Weights only load failed" in text else (
            text.splitlines()[0] if text else type(e).__name__)
        raise ImxlateError(f"{path} is not a readable PyTorch weights file ({why})") from None
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                     for k, v in sd.items()):
        raise ImxlateError(f"{path} is not a state dict of named tensors; imxlate imports generator weights "
                           "saved with torch.save(net.state_dict(), FILE)")
    store.check_weights(sd, path)  # a model of NaN or huge weights would be refused by every load: not written
    return dict(sd)


def detect_family(sd: dict[str, torch.Tensor], path: str | Path) -> str:
    """'cyclegan' for `model.N` keys, 'stargan' for `main.N` keys; an error naming the keys otherwise."""
    if all(k.startswith("model.") for k in sd):
        return "cyclegan"
    if all(k.startswith("main.") for k in sd):
        return "stargan"
    raise ImxlateError(f"{path}: not a CycleGAN/pix2pix or StarGAN generator; keys it could not place: "
                       f"{_some(k for k in sd if not k.startswith(('model.', 'main.')))}")


def _some(keys, n: int = 8) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" (and {len(keys) - n} more)" if len(keys) > n else "")


def _shape(sd: dict, key: str, dims: int, path) -> torch.Size:
    if key not in sd or sd[key].dim() != dims:
        raise ImxlateError(f"{path}: no {dims}-d tensor {key}, so this is not a generator imxlate can place; "
                           f"its keys: {_some(sd)}")
    return sd[key].shape


# ---- architecture detection ------------------------------------------------------------------------

def cyclegan_config(sd: dict[str, torch.Tensor], path) -> dict:
    """CycleGAN family config of a reference ResnetGenerator (ngf, blocks, norm, dropout) or UnetGenerator
    state dict."""
    unet = any(k.startswith("model.model.") for k in sd)
    ngf, in_ch = _shape(sd, "model.model.0.weight" if unet else "model.1.weight", 4, path)[:2]
    if in_ch != 3:
        raise ImxlateError(f"{path}: the generator takes {in_ch} input channels; imxlate translates RGB images (3)")
    if unet:
        return unet_config(sd, int(ngf), path)
    blocks = sorted({int(m[1]) for k in sd if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
    if not blocks:
        raise ImxlateError(f"{path}: no residual blocks (model.N.conv_block...); keys: {_some(sd)}")
    # Without dropout the block's second conv is conv_block.5; dropout 0.5 after the ReLU shifts it to .6
    # (where batch norm otherwise keeps a 1-d scale).
    second = sd.get(f"model.{blocks[0]}.conv_block.6.weight")
    dropout = second is not None and second.dim() == 4
    # Batch norm has an affine scale after the stem conv; instance norm (no affine) at most legacy buffers.
    norm = "batch" if "model.2.weight" in sd else "instance"
    return {"ngf": int(ngf), "n_blocks": len(blocks), "norm": norm, "dropout": dropout, "upsample": "transpose"}


def unet_config(sd: dict[str, torch.Tensor], ngf: int, path) -> dict:
    """CycleGAN family config of a reference (pix2pix) UnetGenerator state dict: levels and norm, with
    the `ngf` of its first convolution.

    Each inner level nests at `.model.3` of the one above it and has its down convolution at `.model.1`;
    dropout adds no weights (and is off at translation time), so it is not recorded.
    """
    levels = 1 + sum(bool(re.fullmatch(r"model\.model\.1(\.model\.3)*\.model\.1\.weight", k)) for k in sd)
    if levels < 5:
        raise ImxlateError(f"{path} looks like a U-Net generator of {levels} level(s); pix2pix's (and imxlate's) "
                           f"have at least 5; keys: {_some(sd)}")
    norm = "batch" if "model.model.1.model.2.weight" in sd else "instance"  # batch norm keeps an affine scale
    return {"generator": "unet", "ngf": ngf, "n_downs": levels, "norm": norm, "dropout": False,
            "upsample": "transpose"}


def stargan_config(sd: dict[str, torch.Tensor], path) -> tuple[dict, int]:
    """(StarGAN family config, number of domains) of a reference StarGAN generator state dict."""
    ngf, in_ch = _shape(sd, "main.0.weight", 4, path)[:2]
    if in_ch <= 3:
        raise ImxlateError(f"{path}: main.0 takes {in_ch} channels, so no domain code; not a StarGAN generator")
    blocks = {int(m[1]) for k in sd if (m := re.match(r"main\.(\d+)\.main\.", k))}
    return {"ngf": int(ngf), "n_blocks": len(blocks)}, int(in_ch) - 3


def within_ranges(cfg: dict, path) -> dict:
    """A detected config, refused when a size in it is beyond what a model file may state (`store.out_of_range`):
    every later load would refuse the model."""
    for k, v in cfg.items():
        why = type(v) is int and store.out_of_range(k, v)
        if why:
            raise ImxlateError(f"{path}: its generator has {k} {v}, and {why}; imxlate cannot import it")
    return cfg


# ---- mapping weights onto imxlate's networks -------------------------------------------------------

def place(sd: dict[str, torch.Tensor], net: nn.Module, path) -> dict[str, torch.Tensor]:
    """Fit a reference state dict onto `net` key for key, or refuse listing what does not fit.

    Running statistics of instance norms that keep none are dropped (old released CycleGAN files
    carry them from PyTorch 0.3); a missing `num_batches_tracked` (files from before PyTorch 0.4.1)
    is zero: it only steers training-time momentum.
    """
    expected = net.state_dict()
    untracked = {n for n, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d) and not m.track_running_stats}
    sd = {k: v for k, v in sd.items()
          if not (k.rsplit(".", 1)[0] in untracked and k.rsplit(".", 1)[-1] in RUNNING_STATS)}
    for k, v in expected.items():
        if k.endswith(".num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros_like(v)
    unplaced = [k for k in sd if k not in expected]
    missing = [k for k in expected if k not in sd]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in sd and sd[k].shape != v.shape]
    if unplaced or missing or shapes:
        parts = [f"keys it could not place: {_some(unplaced)}" if unplaced else "",
                 f"missing keys: {_some(missing)}" if missing else "",
                 f"shapes that differ (file vs detected architecture): {_some(shapes, 4)}" if shapes else ""]
        raise ImxlateError(f"{path} does not fit the architecture read from it; " + "; ".join(p for p in parts if p))
    return sd


def _source(path, reverse=None) -> dict:
    src = {"file": Path(path).name, "sha256": store.sha256(path)}
    if reverse is not None:
        src.update(reverse_file=Path(reverse).name, reverse_sha256=store.sha256(reverse))
    return src


# ---- importing -------------------------------------------------------------------------------------

def import_cyclegan(path: str | Path, src: str, dst: str, reverse: str | Path | None = None,
                    image_size: int = REFERENCE_IMAGE_SIZE["cyclegan"]):
    """A CycleGAN family holding the reference generator `path` (src -> dst) and optionally its
    opposite `reverse` (dst -> src); without `reverse` the model translates one way only."""
    if not src or not dst or src == dst:
        raise ImxlateError("name the generator's two domains with --from A --to B (A -> B is what it translates)")
    sd = read_state_dict(path)
    cfg = within_ranges(cyclegan_config(sd, path), path)
    back = read_state_dict(reverse) if reverse is not None else None
    if back is not None and (other := cyclegan_config(back, reverse)) != cfg:
        raise ImxlateError(f"{reverse} has another architecture than {path} ({other} vs {cfg}); "
                           "both directions of one model share it")
    family = build_family("cyclegan", {**cfg, "one_way": back is None}, [src, dst], image_size)
    family.nets["G_ab"].load_state_dict(place(sd, family.nets["G_ab"], path))
    if back is not None:
        family.nets["G_ba"].load_state_dict(place(back, family.nets["G_ba"], reverse))
    return family


def import_stargan(path: str | Path, domains: list[str], image_size: int = REFERENCE_IMAGE_SIZE["stargan"]):
    """A StarGAN family holding the reference generator `path`; `domains` name its label channels in order."""
    sd = read_state_dict(path)
    cfg, c_dim = stargan_config(sd, path)
    within_ranges(cfg, path)
    if len(domains) != c_dim or len(set(domains)) != len(domains):
        raise ImxlateError(f"{path} is conditioned on {c_dim} domains; name each once, in the label order of its "
                           f"training, with --domains (e.g. --domains {' '.join(f'd{i}' for i in range(c_dim))})")
    family = build_family("stargan", cfg, list(domains), image_size)
    family.nets["G"].load_state_dict(place(sd, family.nets["G"], path))
    return family


def import_checkpoint(path: str | Path, out: str | Path | None = None, family: str | None = None,
                      src: str | None = None, dst: str | None = None, reverse: str | Path | None = None,
                      domains: list[str] | None = None, image_size: int | None = None,
                      overwrite: bool = False) -> Path:
    """Import a reference generator checkpoint into an imxlate model file -> the path written.

    `family` (cyclegan | stargan) is read from the keys when None. CycleGAN needs `src` and `dst`
    (and takes `reverse`), StarGAN `domains`. Nothing is written unless everything fits.
    """
    path = Path(path)
    out = Path(out) if out else Path(f"{path.stem}.safetensors")
    for p in (path, reverse):
        if p is not None and out.exists() and out.resolve() == Path(p).resolve():
            raise ImxlateError(f"--out {out} is the checkpoint being imported; choose another output file")
    if out.is_dir():
        raise ImxlateError(f"--out {out} is a folder; --out names the model file to write")
    if os.path.lexists(out) and not overwrite:
        raise ImxlateError(f"{out} already exists; choose another --out or pass --overwrite")
    check_at_least({"image_size": image_size}, 1)
    if image_size is not None and store.out_of_range("image_size", image_size):
        raise ImxlateError(f"--image-size {image_size}: {store.out_of_range('image_size', image_size)} px")
    family = family or detect_family(read_state_dict(path), path)
    if family not in FOREIGN_FAMILIES:
        raise ImxlateError(f"--family {family}: imxlate imports {' and '.join(FOREIGN_FAMILIES)} checkpoints")
    size = image_size or REFERENCE_IMAGE_SIZE[family]
    if family == "cyclegan":
        if domains:
            raise ImxlateError("a CycleGAN generator translates between two domains: "
                               "use --from A --to B, not --domains")
        fam = import_cyclegan(path, src, dst, reverse, size)
    else:
        if src or dst or reverse:
            raise ImxlateError("a StarGAN generator translates into any of its domains: name them all with --domains, "
                               "in label order (no --from/--to/--reverse)")
        fam = import_stargan(path, list(domains or []), size)
    store.save_model(fam, out, training={"imported": True}, source=_source(path, reverse))
    return out
