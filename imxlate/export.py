"""Exporting one translation direction of a model file to ONNX or TorchScript, for other runtimes.

The exported graph takes float32 RGB images with values in [0, 1], shaped (batch, 3, height,
width), any batch size, height and width (4 px or more), and returns the translated images in the
same range, shape and dtype. Everything imxlate does around the networks is inside the graph:
scaling to the networks' [-1, 1], mirror padding to the family's size multiple (translate's own), cropping back
and clamping. With fp16 the weights and arithmetic are float16 (for GPU runtimes) while inputs and
outputs stay float32. The file records the model, its direction and this convention: ONNX in its
metadata_props, TorchScript in an extra file `imxlate.json`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from . import store
from .errors import ImxlateError, from_os_error
from .families import load_model
from .models import find_model
from .tiling import pad_to_multiple  # translate's own padding, so exported outputs agree exactly

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
CONVENTION = ("input: float32 RGB (batch, 3, height, width) in [0, 1]; "
              "output: the translated images, float32 RGB (batch, 3, height, width) in [0, 1]")


class ExportedTranslator(nn.Module):
    """(B, 3, H, W) float in [0, 1] -> (B, 3, H, W) float in [0, 1] translated into domain `to`."""

    def __init__(self, family, to: str, src: str | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.family, self.target, self.src, self.dtype = family, to, src, dtype
        # Only the translation networks become part of the graph (not the discriminators).
        self.nets = nn.ModuleDict({name: family.nets[name] for name in family.keep}).to(dtype)

    def forward(self, x):
        h, w = x.shape[-2], x.shape[-1]
        x, (top, left) = pad_to_multiple(x.to(self.dtype) * 2 - 1, self.family.size_multiple)
        y = self.family.translate(x, self.target, self.src)
        y = y[:, :, top:top + h, left:left + w]
        return ((y.float() + 1) / 2).clamp(0, 1)


def exportable(family, to: str, src: str | None = None, fp16: bool = False) -> ExportedTranslator:
    """The module that `export_model` writes, for a loaded family; refuses directions it lacks."""
    if to not in family.domains:
        raise ImxlateError(f"this model translates between {', '.join(family.domains)}; it does not know '{to}'")
    if src is not None and src not in family.domains:
        raise ImxlateError(f"this model does not know source domain '{src}' ({', '.join(family.domains)})")
    if not any(b == to and src in (None, a) for a, b in family.directions()):
        raise ImxlateError(f"this model translates {', '.join(f'{a} -> {b}' for a, b in family.directions())}; "
                           f"it has no direction into '{to}'{f' from {src!r}' if src else ''}")
    if family.fixed_size:
        raise ImxlateError(f"the {family.name} family translates at a fixed size ({family.image_size} px) and "
                           "resizes around it, which export does not include; export needs a size-free family")
    family.eval()
    return ExportedTranslator(family, to, src, torch.float16 if fp16 else torch.float32).eval()


def export_model(model: str | Path, to: str, out: str | Path | None = None, fmt: str = "onnx",
                 src: str | None = None, fp16: bool = False, device: str = "cpu", overwrite: bool = False,
                 verify: bool = True) -> Path:
    """Write the direction into domain `to` of model file (or run folder) `model` as ONNX or
    TorchScript (`fmt`) -> the path written. See the module docstring for the graph's inputs and outputs."""
    if fmt not in FORMATS:
        raise ImxlateError(f"--format {fmt}: choose {' or '.join(FORMATS)}")
    if fmt == "onnx" and importlib.util.find_spec("onnxscript") is None:
        raise ImxlateError("ONNX export needs the export extra: pip install 'imxlate[export]'")
    path, _ = find_model(str(model), to)
    out = Path(out) if out else Path(f"{path.stem}-to-{to}{FORMATS[fmt]}")
    if out.is_dir():
        raise ImxlateError(f"--out {out} is a folder; --out names the file to write")
    if os.path.lexists(out) and not overwrite:
        raise ImxlateError(f"{out} already exists; choose another --out or pass --overwrite")
    if out.resolve() == path.resolve():
        raise ImxlateError(f"--out {out} is the model file being exported; choose another output file")
    store.prepare_folder(out.parent, "--out folder")
    module = exportable(load_model(path, device, verify), to, src, fp16)
    meta = store.read_metadata(path)
    info = {"imxlate_model": path.name, "model_sha256": store.sha256(path), "family": meta["family"],
            "to": to, "from": src or ", ".join(a for a, b in module.family.directions() if b == to),
            "convention": CONVENTION, "fp16": fp16, "size_multiple": module.family.size_multiple}
    # A batch of two, sizes off the size multiple: nothing in the trace can specialise to 1 or to "no padding".
    example = torch.rand(2, 3, 37, 45, device=device)
    try:
        with store.atomic_path(out) as tmp:
            (_onnx if fmt == "onnx" else _torchscript)(module, example, tmp, info)
    except OSError as e:
        raise from_os_error(e, f"writing {out}", "nothing was written") from None
    return out


def _onnx(module: nn.Module, example: torch.Tensor, path: str, info: dict) -> None:
    dims = {0: "batch", 2: "height", 3: "width"}  # named dims: torch.export treats them as dynamic
    program = torch.onnx.export(module, (example,), dynamo=True, input_names=["image"], output_names=["translated"],
                                dynamic_shapes={"x": dims}, verbose=False)
    graph = program.model.graph
    # The exporter writes the crop's size as a long formula of the padded size; it is the input's.
    graph.outputs[0].shape = graph.inputs[0].shape
    program.model.metadata_props.update({f"imxlate.{k}": str(v) for k, v in info.items()})
    program.save(path, external_data=False)


def _torchscript(module: nn.Module, example: torch.Tensor, path: str, info: dict) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; asked for explicitly here
        # Instance norm's input-size checks become constants in the trace: harmless, so not shown. Warnings
        # from imxlate's own code (a shape read as a Python int) stay visible.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.nn\.")
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, path, _extra_files={"imxlate.json": json.dumps(info)})


# ---- command line (the lead registers this as `imxlate export`) -------------------------------------
