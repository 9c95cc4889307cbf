"""Every file imxlate reads or writes: safetensors model files, checkpoints and classifier files (weights plus
JSON metadata, written atomically with a digest of their content), and the one reader for all of them.

A model file holds the networks a family keeps for translation, prefixed by network name
(`G_ab.model.1.weight`), and string metadata: format and version, family, the family config,
domains, directions, image size, normalisation, the training summary and the data folders.
A checkpoint holds every network, optimizer state, RNG state and image pool the same way:
tensors by path, everything else as JSON with tensor references. Nothing here reads pickle.

The reader (`read`) trusts nothing a file states: a digest proves a file unchanged since it was written, not that
its metadata tells the truth. Before any tensor loads it bounds the header's length and JSON nesting, checks the
metadata's fields and sizes, and compares the tensors the header states with those of the networks the metadata
describes (the caller builds them on the meta device: `imxlate.families`); then the weights must be finite and
of a sane magnitude. This module never builds a model.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import tempfile
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from . import __version__
from .errors import ImxlateError, from_os_error, missing_path_message

MODEL = "model.safetensors"  # a run folder's model file
CHECKPOINT = "checkpoint.safetensors"  # and its checkpoint
MODEL_FORMAT = "imxlate-model"
CHECKPOINT_FORMAT = "imxlate-checkpoint"
CLASSIFIER_FORMAT = "imxlate-classifier"  # imxlate.classifier's files
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
    def data(t: torch.Tensor):
        yield t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()

    return _digest(((k, tensors[k].dtype, tensors[k].shape, data(tensors[k])) for k in sorted(tensors)), metadata)


def _digest(entries, metadata: dict[str, str]) -> str:
    """`digest` of (name, dtype, shape, chunks of its bytes) entries in name order, from memory or from a file."""
    h = hashlib.sha256()
    for name, dtype, shape, chunks in entries:
        h.update(json.dumps([name, str(dtype), list(shape)]).encode() + b"\n")
        for chunk in chunks:
            h.update(chunk)
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


# ---- reading: one reader for every file, its metadata checked against its tensors before they load ------

FORMATS = (MODEL_FORMAT, CHECKPOINT_FORMAT, CLASSIFIER_FORMAT)
NAMES = {MODEL_FORMAT: "an imxlate model file", CHECKPOINT_FORMAT: "an imxlate training checkpoint",
         CLASSIFIER_FORMAT: "an imxlate classifier file"}
# What a file of each format is for, said when another format was wanted.
USES = {MODEL_FORMAT: "a model file (for translate, eval, export and info)",
        CHECKPOINT_FORMAT: "a training checkpoint (continue it with `imxlate train --resume RUN`; translate with the "
                           "run's model.safetensors)",
        CLASSIFIER_FORMAT: "a classifier file (for eval --classifier and --perceptual-net)"}
HOW_TO_MAKE = {MODEL_FORMAT: "use `imxlate import` for checkpoints from other tools",
               CHECKPOINT_FORMAT: "--resume takes a run folder or its checkpoint.safetensors",
               CLASSIFIER_FORMAT: "make one with `imxlate train-classifier`"}
# The metadata fields that describe a file's networks, for messages.
DESCRIBING = {MODEL_FORMAT: "'family', 'config', 'domains' and 'image_size'",
              CHECKPOINT_FORMAT: "'state.family', 'state.family_config', 'state.domains' and 'state.image_size'",
              CLASSIFIER_FORMAT: "'config'"}
# The fields each format's metadata must hold, with their types (the rest describes the file and may be absent).
REQUIRED = {MODEL_FORMAT: {"family": str, "config": dict, "domains": list, "image_size": int},
            CHECKPOINT_FORMAT: {"state": dict},
            CLASSIFIER_FORMAT: {"config": dict, "classes": list, "image_size": int}}
MAX_HEADER = 16 * 2**20  # bytes of a safetensors header; imxlate's largest (checkpoints with image pools) are ~1 MB
MAX_JSON_DEPTH = 64  # nesting of any JSON imxlate reads; its own files nest 12 levels at most
# |w| that no weight or running statistic of a trained network comes near (3.2 at most in imxlate's shipped and
# benchmark models and classifiers): beyond it, a file was scaled. Optimizer moments are not weights: unchecked.
MAX_WEIGHT = 1e4
MAX_IMAGE_SIZE = 4096  # image sizes a file may state (config.MAX_PIXELS is 4096 x 4096 pixels)
MAX_DOMAINS = 256
COUNT_LIMIT = 2**32  # whole numbers of a config without a range below (steps, pool sizes, seeds) are 0 to this
# Ranges of the whole numbers a file's configs may state, by field name; checked before any network is built,
# so that a file stating 20,000 residual blocks is refused at once, not after minutes of building. Each is 4x
# and more the papers' settings.
SIZE_RANGES = {**dict.fromkeys(("ngf", "ndf", "nf", "width"), range(1, 257)),
               **dict.fromkeys(("hidden", "z_dim", "nce_units"), range(1, 4097)),
               **dict.fromkeys(("n_blocks", "layers", "shared_layers"), range(0, 65)),
               **dict.fromkeys(("n_downs", "n_layers_d", "n_layers_global", "n_layers_local", "blocks"), range(0, 13)),
               **dict.fromkeys(("image_size", "crop_size"), range(1, MAX_IMAGE_SIZE + 1)),
               "load_size": range(1, 2 * MAX_IMAGE_SIZE + 1), "batch_size": range(1, 4097),
               "n_classes": range(2, 100_001)}
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as a file's header states it (with where its bytes lie after the header), or as a network built
    on the meta device holds it: no data."""
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offsets: tuple[int, int] = (0, 0)


# What resuming a run reads from a checkpoint's training state (tensors as TensorSpecs): a type, or the table
# of keys it must hold.
RESUME_STATE = {"family": str, "family_config": dict, "train_config": dict, "domains": list, "image_size": int,
                "step": int, "stop": int, "elapsed": float,
                "family_state": {"nets": dict, "opts": dict, "extra": dict},
                "rng": {"torch": TensorSpec, "cuda": list, "python": tuple, "numpy": list}}


def specs_of(tensors: dict[str, torch.Tensor]) -> dict[str, TensorSpec]:
    """The TensorSpecs of named tensors (a state dict of networks built on the meta device)."""
    return {k: TensorSpec(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()}


def lie(path, field: str, why: str) -> ImxlateError:
    """The one-line error for a metadata field that does not hold: `why` says what it states."""
    return ImxlateError(f"{path}: metadata field '{field}' {why}, so the file was damaged or edited; "
                        "use an intact copy")


def unreadable(path, e: Exception) -> ImxlateError:
    """The one-line error for a file that is not safetensors at all (or is cut short)."""
    why = str(e).splitlines()[0] if str(e) else repr(e)
    return ImxlateError(f"{path} is not a readable safetensors file ({why}); it is truncated, damaged or another "
                        "kind of file: use an intact copy")


def parse_json(text: str | bytes):
    """Decoded JSON `text`; a ValueError when it nests deeper than MAX_JSON_DEPTH (counted without recursion,
    before decoding, so that no depth reaches Python's recursion limit)."""
    text = text.decode("utf-8") if isinstance(text, bytes) else text
    skeleton = np.frombuffer(_STRING.sub("", text).encode(), np.uint8)
    depth = np.cumsum(np.isin(skeleton, _OPEN).astype(np.int64) - np.isin(skeleton, _CLOSE))
    if depth.size and depth.max() > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested {int(depth.max())} levels deep; imxlate reads {MAX_JSON_DEPTH} at most")
    return json.loads(text)


def read_header(path: str | Path) -> tuple[dict[str, TensorSpec], dict[str, str]]:
    """(the tensors a safetensors file states, by name; its string metadata), from its header alone: at most
    MAX_HEADER bytes, nested at most MAX_JSON_DEPTH deep. No tensor data is read."""
    path = Path(path)
    if not path.is_file():
        raise ImxlateError(missing_path_message(path))
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= MAX_HEADER:
                raise ValueError(f"a header of {n} bytes; imxlate reads headers of 1 to {MAX_HEADER} bytes")
            header = parse_json(f.read(n))
            data_bytes = os.fstat(f.fileno()).st_size - 8 - n
        if not isinstance(header, dict):
            raise ValueError("its header is not a table")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("its metadata is not a table of strings")
        specs = {k: _spec(k, v) for k, v in header.items()}
        _check_layout(specs, data_bytes)
        return specs, meta
    except (OSError, ValueError) as e:
        raise unreadable(path, e) from None


def _spec(name: str, entry) -> TensorSpec:
    entry = entry if isinstance(entry, dict) else {}
    dtype, shape, offsets = _DTYPES.get(entry.get("dtype")), entry.get("shape"), entry.get("data_offsets")
    if dtype is None or not _whole_numbers(shape) or not _whole_numbers(offsets) or len(offsets) != 2:
        raise ValueError(f"tensor {name} has no dtype, shape and data offsets that imxlate reads")
    return TensorSpec(name, dtype, tuple(shape), tuple(offsets))


def _check_layout(specs: dict[str, TensorSpec], data_bytes: int) -> None:
    """Refuse tensors whose data do not lie back to back, each as long as its shape and dtype say, filling the
    `data_bytes` after the header exactly (as safetensors requires; a truncated file fails here)."""
    end = 0
    for spec in sorted(specs.values(), key=lambda s: s.offsets):
        start, stop = spec.offsets
        if start != end or stop - start != math.prod(spec.shape) * spec.dtype.itemsize:
            raise ValueError(f"the data offsets of tensor {spec.name} do not fit its shape and dtype")
        end = stop
    if end != data_bytes:
        raise ValueError(f"its tensors hold {end} bytes of data, and the file {data_bytes}")


def _whole_numbers(values) -> bool:
    return isinstance(values, list) and all(type(v) is int and v >= 0 for v in values)


def _load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, ValueError, OSError) as e:
        raise unreadable(path, e) from None


def read_file(path: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, string metadata) of any safetensors file, header bounded as in `read_header`. With `verify`, a
    file that records a digest must match it (see `integrity`). Files of imxlate's formats are read by `read`."""
    specs, meta = read_header(path)
    if verify:
        integrity(path, specs, meta)
    return _load(Path(path)), meta


def read(path: str | Path, formats=FORMATS, expect=None, verify: bool = True):
    """The one reader of imxlate's files -> (tensors, decoded metadata, integrity status: see `integrity`).

    Before any tensor loads: the header (bounded), the digest (with `verify`, hashed from the file; otherwise the
    status is "not checked"), the metadata's format (one of `formats`), version and fields (`decode_metadata`), a
    checkpoint's training state (`check_state`) and the tensors against `expect(path, meta, specs)`: the
    TensorSpecs of the networks the metadata describes (`check_tensors`; for a checkpoint, those of its
    networks). Then the tensors load, and the expected float tensors (without `expect`: those of a model or
    classifier file) must be finite and below MAX_WEIGHT.
    """
    specs, raw = read_header(path)
    status = integrity(path, specs, raw) if verify else "not checked"
    meta = decode_metadata(raw, path, formats)
    checkpoint = meta["format"] == CHECKPOINT_FORMAT
    if checkpoint:
        check_state(meta["state"], specs, path)
    if expect is not None:
        expected = expect(path, meta, specs)
        check_tensors(expected, specs, path, meta["format"])
    else:  # every tensor of a model or classifier file is a weight; a checkpoint's are checked by its expectation
        expected = {} if checkpoint else specs
    tensors = _load(Path(path))
    check_weights({k: tensors[k] for k in expected}, path)
    return tensors, meta, status


def read_metadata(path: str | Path, formats=(MODEL_FORMAT, CHECKPOINT_FORMAT)) -> dict:
    """The decoded and checked metadata of an imxlate file of one of `formats`, from its header alone."""
    return decode_metadata(read_header(path)[1], path, formats)


def decode_metadata(raw: dict[str, str], path, formats=FORMATS) -> dict:
    """A file's string metadata decoded from JSON, refusing a format other than `formats`, a newer version and
    fields that do not hold: missing or of another type, an image size outside 1 to MAX_IMAGE_SIZE, domains that
    are not 2 to MAX_DOMAINS distinct names, class lists that are not names."""
    fmt = raw.get("format")
    if fmt not in FORMATS:
        raise ImxlateError(f"{path} is not {NAMES[formats[0]]} (no imxlate metadata); {HOW_TO_MAKE[formats[0]]}")
    if fmt not in formats:
        raise ImxlateError(f"{path} is {USES[fmt]}, not {NAMES[formats[0]]}")
    out = {"format": fmt}
    for k, v in raw.items():
        try:
            out[k] = v if k in ("format", "family") else parse_json(v)
        except ValueError as e:
            raise lie(path, k, f"is not valid JSON ({e})") from None
    version = out.get("format_version", 0)
    if not _fits(version, int):
        raise lie(path, "format_version", "is not a whole number")
    if version > FORMAT_VERSION:
        raise ImxlateError(f"{path} has format version {version}; this imxlate ({__version__}) reads "
                           f"up to {FORMAT_VERSION}: upgrade imxlate")
    for k, tp in REQUIRED[fmt].items():
        if not _fits(out.get(k), tp):
            raise lie(path, k, "is missing or malformed")
    if "image_size" in REQUIRED[fmt]:
        check_range(out["image_size"], "image_size", path, "image_size")
    if fmt == MODEL_FORMAT:
        check_domains(out["domains"], "domains", path)
        check_classes(out.get("classes"), out["domains"], "classes", path)
    elif fmt == CLASSIFIER_FORMAT and not _names(out["classes"]):
        raise lie(path, "classes", "is not a list of distinct class names")
    return out


def _names(values) -> bool:
    """Whether `values` is a list of distinct, non-empty strings."""
    names = isinstance(values, list) and all(isinstance(v, str) and v for v in values)
    return names and len(set(values)) == len(values)


def check_domains(domains, field: str, path) -> None:
    """Refuse domains that are not 2 to MAX_DOMAINS distinct, non-empty names (`field` names them in messages)."""
    if not _names(domains) or not 2 <= len(domains) <= MAX_DOMAINS:
        raise lie(path, field, f"is not 2 to {MAX_DOMAINS} distinct domain names")


def check_classes(classes, domains: list[str], field: str, path) -> None:
    """Refuse class lists that are not a table from some of `domains` to lists of distinct names (None: none)."""
    if classes is not None and not (isinstance(classes, dict) and set(classes) <= set(domains)
                                    and all(v == [] or _names(v) for v in classes.values())):
        raise lie(path, field, "is not a table of each domain's class names")


def out_of_range(name: str, value: int) -> str | None:
    """'imxlate reads 0 to 64' when whole number `value` of config entry `name` is outside its SIZE_RANGES range
    (0 to COUNT_LIMIT for others); None within it."""
    allowed = SIZE_RANGES.get(name, range(COUNT_LIMIT + 1))
    return None if value in allowed else f"imxlate reads {allowed.start} to {allowed.stop - 1}"


def check_range(value: int, name: str, path, field: str) -> None:
    """Refuse whole number `value` of config entry `name` (in metadata `field`) outside its range (`out_of_range`)."""
    why = out_of_range(name, value)
    if why:
        raise lie(path, field, f"{'is' if name == field else f'states {name}'} {value}; {why}")


def check_fields(values: dict, cls: type, field: str, path) -> None:
    """Refuse a config table (metadata `field`) whose entries named like dataclass `cls`'s fields are not of their
    types, whose whole numbers are outside their ranges (`check_range`) or whose numbers are not finite."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue  # an older file: the field's default
        value, tp = values[f.name], hints[f.name]
        if not _fits(value, tp):
            raise lie(path, field, f"states {f.name} {value!r}, which is not {_type_name(tp)}")
        if type(value) is int:
            check_range(value, f.name, path, field)


def _fits(value, tp) -> bool:
    """Whether decoded JSON `value` is of annotation `tp` (int: not bool; float: a finite number; X | None)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(tp))
    if tp is int:
        return type(value) is int
    if tp is float:
        return type(value) is int or (type(value) is float and math.isfinite(value))
    if tp is type(None):
        return value is None
    return isinstance(value, typing.get_origin(tp) or tp)


def _type_name(tp) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp)


def check_state(tree: dict, specs: dict[str, TensorSpec], path) -> None:
    """Refuse a checkpoint's training state (JSON with tensor references) that refers to a tensor the file
    lacks or leaves one unreferenced, lacks a key that resuming reads (RESUME_STATE), or whose step is not
    within its run (0 to its last step)."""
    try:
        state = unpack(tree, specs)
        refs = _refs(tree)
    except (KeyError, TypeError, ValueError) as e:
        raise lie(path, "state", f"refers to a tensor the file does not hold, or malformed ({e})") from None
    if set(specs) - refs:
        raise lie(path, "state", f"does not refer to tensor {sorted(set(specs) - refs)[0]}, which the file holds")
    _check_keys(state, RESUME_STATE, "state", path)
    check_domains(state["domains"], "state.domains", path)
    check_range(state["image_size"], "image_size", path, "state.image_size")
    check_classes(state.get("classes"), state["domains"], "state.classes", path)
    if not 0 <= state["stop"] <= COUNT_LIMIT or not 0 <= state["step"] <= state["stop"]:
        raise lie(path, "state.step", f"is {state['step']} of a run of {state['stop']} steps")
    if state["elapsed"] < 0:
        raise lie(path, "state.elapsed", f"is {state['elapsed']} s")


def _check_keys(tree: dict, schema: dict, field: str, path) -> None:
    for k, want in schema.items():
        if isinstance(want, dict):
            if not isinstance(tree.get(k), dict):
                raise lie(path, f"{field}.{k}", "is missing or not a table")
            _check_keys(tree[k], want, f"{field}.{k}", path)
        elif k not in tree or not _fits(tree[k], want):
            raise lie(path, f"{field}.{k}", "is missing or malformed")


def _refs(obj) -> set[str]:
    """The names of the tensors a packed state refers to."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return {obj["__tensor__"]}
        return set().union(*map(_refs, obj.values()))
    if isinstance(obj, list):
        return set().union(*map(_refs, obj))
    return set()


def check_tensors(expected: dict[str, TensorSpec], found: dict[str, TensorSpec], path, fmt: str = MODEL_FORMAT) -> None:
    """Refuse a file of format `fmt` whose tensors (`found`, from its header) are not those `expected` of the networks
    its metadata describes: one missing, one more (but in a checkpoint), another shape, or integers for floats."""
    detail = _misfit(expected, found, exact=fmt != CHECKPOINT_FORMAT)
    if detail:
        raise ImxlateError(f"{path}: its weights do not fit the networks that metadata fields {DESCRIBING[fmt]} "
                           f"describe: {detail}; the file was damaged or edited: use an intact copy")


def _misfit(expected: dict[str, TensorSpec], found: dict[str, TensorSpec], exact: bool) -> str | None:
    """The first difference between `expected` and `found` tensors, in words; None when they fit."""
    missing = [k for k in expected if k not in found]
    if missing:
        return f"the networks it describes have {missing[0]}, which the file lacks ({len(missing)} such tensors)"
    extra = [k for k in found if k not in expected] if exact else []
    if extra:
        return f"the file holds {extra[0]}, which the networks it describes lack ({len(extra)} such tensors)"
    for k, want in expected.items():
        got = found[k]
        if got.shape != want.shape:
            return f"{k} has shape {list(got.shape)} in the file, {list(want.shape)} in the network"
        if got.dtype != want.dtype and not (got.dtype.is_floating_point and want.dtype.is_floating_point):
            return f"{k} holds {str(got.dtype)[6:]} values in the file, {str(want.dtype)[6:]} in the network"
    return None


def check_weights(tensors: dict[str, torch.Tensor], path) -> None:
    """Refuse float weights holding NaN or infinity (a diverged or damaged model translates to black) or reaching
    MAX_WEIGHT (a scaled file)."""
    for k, t in tensors.items():
        if not t.is_floating_point() or not t.numel():
            continue
        if not bool(torch.isfinite(t).all()):
            raise ImxlateError(f"{path}: weight {k} holds NaN or infinite values (training diverged or the file was "
                               "damaged), which translate to black; use an earlier snapshot or checkpoint, or retrain")
        top = float(t.abs().max())
        if top >= MAX_WEIGHT:
            raise ImxlateError(f"{path}: weight {k} reaches {top:.3g}, and no trained network comes near "
                               f"{MAX_WEIGHT:g}: the file was scaled, damaged or edited; use an intact copy")


def integrity(path: str | Path, specs: dict[str, TensorSpec], meta: dict[str, str]) -> str:
    """"intact" when the digest a file records matches its content, "no digest recorded" for files written before
    imxlate recorded one; an ImxlateError when it does not match. The tensors' bytes are hashed from the file a
    megabyte at a time (safetensors stores them little-endian, as they are in memory), before any tensor loads."""
    recorded = meta.get(DIGEST_KEY)
    if recorded is None:
        return "no digest recorded"
    try:
        recorded = json.loads(recorded)
    except (TypeError, ValueError):
        pass
    with open(path, "rb") as f:
        start = 8 + int.from_bytes(f.read(8), "little")

        def data(spec: TensorSpec):
            f.seek(start + spec.offsets[0])
            left = spec.offsets[1] - spec.offsets[0]
            while left > 0 and (chunk := f.read(min(left, 1 << 20))):
                left -= len(chunk)
                yield chunk

        found = _digest(((k, specs[k].dtype, specs[k].shape, data(specs[k])) for k in sorted(specs)), meta)
    if recorded != found:
        raise ImxlateError(f"{path} is not intact: its weights or metadata differ from the digest recorded when it "
                           "was written (changed or corrupted bytes); use an intact copy, or pass --no-verify "
                           "to load it anyway")
    return "intact"


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


def inspect(path: str | Path, expects: dict | None = None,
            formats=(MODEL_FORMAT, CHECKPOINT_FORMAT)) -> tuple[dict, str]:
    """(decoded metadata, "intact" or "no digest recorded") of an imxlate file of one of `formats`, after every
    check `read` makes, with the `expect` that `expects` maps its format to; an ImxlateError saying what is wrong
    otherwise."""
    fmt = read_metadata(path, formats)["format"]
    _, meta, status = read(path, (fmt,), (expects or {}).get(fmt))
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


def load_checkpoint(path: str | Path, expect=None) -> dict:
    """The training state of a checkpoint written by `save_checkpoint`, read by `read` (its state checked by
    `check_state`; with `expect`, its networks against the family it states: `imxlate.families.load_checkpoint`)."""
    tensors, meta, _ = read(path, (CHECKPOINT_FORMAT,), expect)
    return unpack(meta["state"], tensors)
