"""Finding a model file: the one given, the newest run that knows the target domain, or a shipped one."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from . import store
from .errors import ImxlateError, missing_path_message


def shipped_models() -> list[Path]:
    """Model files that ship inside the package (imxlate.weights)."""
    try:
        root = resources.files("imxlate.weights")
    except ModuleNotFoundError:
        return []
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".safetensors"))


def run_models(runs: Path = Path("runs")) -> list[Path]:
    """Model files under a runs folder, newest first."""
    if not runs.is_dir():
        return []
    return sorted(runs.rglob(store.MODEL), key=lambda p: p.stat().st_mtime, reverse=True)


def find_model(model: str | None, to: str | None) -> tuple[Path, str]:
    """-> (model file, how it was chosen). Order: --model (file or run folder); the newest model
    under ./runs that translates into `to`; a shipped model that does; else a clear error. (A one-sided
    model, e.g. CUT, knows its source domain but does not translate into it.)"""
    if model:
        p = Path(model)
        if p.is_dir():
            p = p / store.MODEL
        if not p.is_file():
            why = missing_path_message(p) if os.path.lexists(p) else f"no model file at {p}"
            raise ImxlateError(f"{why}; --model takes a .safetensors file or a run folder")
        return p, "given"
    seen = []
    for where, paths in (("./runs", run_models()), ("the models shipped with imxlate", shipped_models())):
        for p in paths:
            try:
                meta = store.read_metadata(p)
            except ImxlateError:
                continue
            domains = meta.get("domains", [])
            targets = [d.split("->")[-1] for d in meta.get("directions", [])] or domains
            seen.append((p, domains))
            if to is None or to in targets:
                return p, f"newest in {where}" if where == "./runs" else "shipped"
    known = "; ".join(f"{p} ({', '.join(d)})" for p, d in seen) or "none"
    raise ImxlateError(f"no model knows domain '{to}'. Looked in ./runs and the shipped models; "
                       f"found: {known}. Train one with `imxlate train --domains A {to}` or pass --model")
