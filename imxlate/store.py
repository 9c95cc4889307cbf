"""Safetensors model files and checkpoints: weights plus JSON metadata, written atomically.

A model file holds the networks a family keeps for translation, prefixed by network name
(`G_ab.model.1.weight`), and string metadata: format and version, family, the family config,
domains, directions, image size, normalisation, the training summary and the data folders.
A checkpoint holds every network, optimizer state, RNG state and image pool the same way:
tensors by path, everything else as JSON with tensor references. Nothing here reads pickle.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import ImxlateError

MODEL_FORMAT = "imxlate-model"
CHECKPOINT_FORMAT = "imxlate-checkpoint"
FORMAT_VERSION = 1
NORMALISATION = {"range": [-1, 1], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: str | Path) -> None:
    """Write a safetensors file through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(_unshared(tensors), tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model file gets the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies; safetensors refuses tensors that share memory (tied layers), so clone those."""
    seen, out = set(), {}
    for k, v in tensors.items():
        v = v.detach().contiguous().cpu()
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def read_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ImxlateError(f"{path} does not exist")
    try:
        tensors = load_file(path)
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
    except (SafetensorError, ValueError, OSError, json.JSONDecodeError) as e:
        raise ImxlateError(f"{path} is not a readable safetensors file ({e})") from None
    return tensors, header.get("__metadata__", {})


def read_metadata(path: str | Path) -> dict:
    """The decoded metadata of a model file or checkpoint, without loading tensors."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100_000_000:
                raise ValueError("bad header length")
            meta = json.loads(f.read(n)).get("__metadata__", {})
    except (OSError, ValueError) as e:
        raise ImxlateError(f"{path} is not a readable imxlate file ({e})") from None
    return _decode_metadata(meta, path)


def _decode_metadata(meta: dict[str, str], path) -> dict:
    fmt = meta.get("format")
    if fmt not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
        raise ImxlateError(f"{path} is not an imxlate model file (no imxlate metadata); "
                           "use `imxlate import` for checkpoints from other tools")
    version = int(meta.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise ImxlateError(f"{path} has format version {version}; this imxlate ({__version__}) reads "
                           f"up to {FORMAT_VERSION}: upgrade imxlate")
    return {k: (v if k in ("format", "family") else json.loads(v)) for k, v in meta.items()}


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- model files -------------------------------------------------------------------------------

def save_model(family, path: str | Path, training: dict | None = None, data: dict | None = None,
               source: dict | None = None, dtype: torch.dtype | None = None) -> None:
    """Write the family's translation networks and everything needed to rebuild them."""
    tensors = {}
    for name in family.keep:
        for k, v in family.nets[name].state_dict().items():
            tensors[f"{name}.{k}"] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    meta = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "family": family.name,
        "config": family.config_dict(),
        "domains": family.domains,
        "classes": family.classes,
        "directions": [f"{a}->{b}" for a, b in family.directions()],
        "networks": {name: family.describe_net(name) for name in family.keep},
        "image_size": family.image_size,
        "normalization": NORMALISATION,
        "training": {"imxlate_version": __version__,
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     **(training or {})},
        "data": data or {},
        "source": source or {},
    }
    atomic_save(tensors, {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}, path)


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a family from a model file alone; networks in eval mode, float32, on `device`."""
    from .families import build_family

    tensors, raw = read_file(path)
    meta = _decode_metadata(raw, path)
    if meta["format"] != MODEL_FORMAT:
        raise ImxlateError(f"{path} is a training checkpoint; use the run's model.safetensors, "
                           "or `imxlate train --resume RUN` to continue training")
    family = build_family(meta["family"], meta["config"], meta["domains"], meta["image_size"], meta.get("classes"))
    for name in family.keep:
        prefix = f"{name}."
        sd = {k[len(prefix):]: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            family.nets[name].load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ImxlateError(f"{path}: weights of {name} do not fit its recorded architecture ({str(e).splitlines()[0]})") from None
    family.meta = meta
    family.to(device)
    family.eval()
    return family


# ---- checkpoints: any nested state as tensors + JSON --------------------------------------------

def pack(obj, tensors: dict, prefix: str = "t"):
    """Replace every tensor in a nested structure by a reference, collecting tensors by path."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: pack(v, tensors, f"{prefix}/{k}") for k, v in obj.items()}
        return {"__items__": [[k, pack(v, tensors, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [pack(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
    return obj


def unpack(obj, tensors: dict):
    """Inverse of `pack`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: unpack(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(unpack(v, tensors) for v in obj["__tuple__"])
        return {k: unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    return obj


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Atomically write a nested training state (tensors, numbers, strings, lists, dicts)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = pack(state, tensors)
    meta = {"format": CHECKPOINT_FORMAT, "format_version": json.dumps(FORMAT_VERSION), "state": json.dumps(tree)}
    atomic_save(tensors, meta, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by `save_checkpoint`."""
    tensors, raw = read_file(path)
    meta = _decode_metadata(raw, path)
    if meta["format"] != CHECKPOINT_FORMAT:
        raise ImxlateError(f"{path} is a model file, not a training checkpoint")
    return unpack(meta["state"], tensors)
