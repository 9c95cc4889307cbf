"""Safetensors model files and checkpoints: weights plus JSON metadata, written atomically.

A model file holds the networks a family keeps for translation, prefixed by network name
(`G_ab.model.1.weight`), and string metadata: format and version, family, the family config,
domains, directions, image size, normalisation, the training summary and the data folders.
A checkpoint holds every network, optimizer state, RNG state and image pool the same way:
tensors by path, everything else as JSON with tensor references. Nothing here reads pickle.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from . import __version__
from .errors import ImxlateError, from_os_error, missing_path_message

MODEL = "model.safetensors"  # a run folder's model file
CHECKPOINT = "checkpoint.safetensors"  # and its checkpoint
MODEL_FORMAT = "imxlate-model"
CHECKPOINT_FORMAT = "imxlate-checkpoint"
FORMAT_VERSION = 1
NORMALISATION = {"range": [-1, 1], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


DIGEST_KEY = "digest"  # metadata: "sha256:<hex>" over every tensor and every other metadata entry
MODEL_KEYS = {"family": str, "config": dict, "domains": list}  # what rebuilding a model needs


# ---- writing: a new file beside the target, then a rename -------------------------------------

def _sync(f) -> None:
    """Make the data of open file `f` durable (a full disk often shows here, not at write())."""
    f.flush()
    os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """A new temporary file beside `path` (never a link), renamed onto `path` when the block succeeds.

    The rename replaces `path` itself, so a symbolic link there is replaced, never written through,
    and readers see the old file or the complete new one. On any error the temporary file is removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            _sync(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_atomically(path: str | Path, write) -> None:
    """Call `write(binary file)` on a temporary file beside `path`, then rename it onto `path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)


def atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: str | Path) -> None:
    """Write a safetensors file with a digest of its content, atomically; a failed write (a full disk)
    is an ImxlateError and leaves the file as it was."""
    path = Path(path)
    tensors = _unshared(tensors)
    metadata = {k: v for k, v in metadata.items() if k != DIGEST_KEY}
    metadata[DIGEST_KEY] = json.dumps(digest(tensors, metadata))
    data = save(tensors, metadata=metadata)  # in memory, so that every write error reaches us
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda f: f.write(data))
    except OSError as e:
        raise from_os_error(e, f"writing {path}", f"{path} is as it was before") from None


def digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """"sha256:<hex>" over each tensor's name, dtype, shape and bytes and each metadata entry but the digest."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode() + b"\n")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    for k in sorted(metadata):
        if k != DIGEST_KEY:
            h.update(json.dumps([k, metadata[k]]).encode() + b"\n")
    return "sha256:" + h.hexdigest()


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies; safetensors refuses tensors that share memory (tied layers), so clone those."""
    seen, out = set(), {}
    for k, v in tensors.items():
        v = v.detach().contiguous().cpu()
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def prepare_folder(path: str | Path, option: str = "--out", create: bool = True) -> Path:
    """Make sure folder `path` can take new files, with a clear error naming `option` otherwise.

    create=True leaves it created (with missing parents); create=False only tries: folders it made
    for the check are removed again, so a run that stops before writing leaves nothing behind.
    """
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        what = missing_path_message(path) if path.is_symlink() and not path.exists() else f"{path} is a file"
        raise ImxlateError(f"{option} {path}: {what}; {option} names a folder (new or existing)")
    for parent in path.parents:
        if os.path.lexists(parent) and not parent.is_dir():
            raise ImxlateError(f"{option} {path}: {parent} is a file, not a folder; choose another {option}")
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    try:
        path.mkdir(parents=True, exist_ok=True)  # several ranks of one run may do this at once
        fd, probe = tempfile.mkstemp(prefix=".imxlate-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ImxlateError(f"cannot write to {option} {path} ({e.strerror or e}); "
                           "choose a folder you can write to") from None
    finally:
        if not create:
            for p in missing:  # deepest first
                with contextlib.suppress(OSError):
                    p.rmdir()
    return path


# ---- reading ------------------------------------------------------------------------------------

def read_file(path: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, with a clear error for anything else. With `verify`, a
    file that records a digest must match it (see `integrity`)."""
    path = Path(path)
    if not path.is_file():
        raise ImxlateError(missing_path_message(path))
    try:
        tensors = load_file(path)
        meta = _header(path).get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a table")
    except (SafetensorError, ValueError, OSError) as e:
        raise ImxlateError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else e!r}); "
                           "it is truncated, damaged or another kind of file: use an intact copy") from None
    if verify:
        integrity(tensors, meta, path)
    return tensors, meta


def integrity(tensors: dict[str, torch.Tensor], meta: dict[str, str], path) -> str:
    """"intact" when the recorded digest matches, "no digest recorded" for files written before imxlate
    recorded one; an ImxlateError when it does not match."""
    recorded = meta.get(DIGEST_KEY)
    if recorded is None:
        return "no digest recorded"
    try:
        recorded = json.loads(recorded)
    except (TypeError, ValueError):
        pass
    if recorded != digest(tensors, meta):
        raise ImxlateError(f"{path} is not intact: its weights or metadata differ from the digest recorded when it "
                           "was written (changed or corrupted bytes); use an intact copy, or pass --no-verify "
                           "to load it anyway")
    return "intact"


def check_finite(tensors: dict[str, torch.Tensor], path) -> None:
    """Refuse weights holding NaN or infinity (a diverged or damaged model translates to black)."""
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ImxlateError(f"{path} is not intact: weight {k} holds NaN or infinite values (training diverged "
                               "or the file was damaged); use an earlier snapshot or checkpoint, or retrain")


def _header(path: Path) -> dict:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n <= 0 or n > 100_000_000:
            raise ValueError("bad header length")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("its header is not a table")
    return header


def read_metadata(path: str | Path) -> dict:
    """The decoded metadata of a model file or checkpoint, without loading tensors."""
    path = Path(path)
    try:
        meta = _header(path).get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a table")
    except (OSError, ValueError) as e:
        raise ImxlateError(f"{path} is not a readable imxlate file ({e})") from None
    return _decode_metadata(meta, path)


def _decode_metadata(meta: dict[str, str], path) -> dict:
    fmt = meta.get("format")
    if fmt not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
        raise ImxlateError(f"{path} is not an imxlate model file (no imxlate metadata); "
                           "use `imxlate import` for checkpoints from other tools")
    out = {}
    for k, v in meta.items():
        if k in ("format", "family"):
            out[k] = v
            continue
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            raise ImxlateError(f"{path}: metadata field '{k}' is not valid JSON, so the file was damaged or edited; "
                               "use an intact copy") from None
    version = out.get("format_version", 0)
    if not isinstance(version, int):
        raise ImxlateError(f"{path}: metadata field 'format_version' is not a number; use an intact copy")
    if version > FORMAT_VERSION:
        raise ImxlateError(f"{path} has format version {version}; this imxlate ({__version__}) reads "
                           f"up to {FORMAT_VERSION}: upgrade imxlate")
    needed = MODEL_KEYS if fmt == MODEL_FORMAT else {"state": dict}
    bad = [k for k, tp in needed.items() if not isinstance(out.get(k), tp)]
    if fmt == MODEL_FORMAT and not bad and not all(isinstance(d, str) for d in out["domains"]):
        bad = ["domains"]
    if bad:
        raise ImxlateError(f"{path}: metadata field '{bad[0]}' is missing or malformed, so the file was damaged or "
                           "edited; use an intact copy")
    return out


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


def read_model(path: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, decoded metadata) of a model file, checked: its digest (with `verify`), its format and finite
    weights. Building the networks from it is the families' side (`imxlate.families.load_model`)."""
    tensors, raw = read_file(path, verify)
    meta = _decode_metadata(raw, path)
    if meta["format"] != MODEL_FORMAT:
        raise ImxlateError(f"{path} is a training checkpoint; use the run's model.safetensors, "
                           "or `imxlate train --resume RUN` to continue training")
    check_finite(tensors, path)
    return tensors, meta


def inspect(path: str | Path) -> tuple[dict, str]:
    """(decoded metadata, "intact" or "no digest recorded") of a model file or checkpoint, every check
    that loading makes included; an ImxlateError saying what is wrong otherwise."""
    tensors, raw = read_file(path, verify=False)
    meta = _decode_metadata(raw, path)
    status = integrity(tensors, raw, path)
    if meta["format"] == MODEL_FORMAT:
        check_finite(tensors, path)
    return meta, status


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
    try:
        return unpack(meta["state"], tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise ImxlateError(f"{path}: its training state is incomplete ({e!r}); the file was damaged or edited") from None
