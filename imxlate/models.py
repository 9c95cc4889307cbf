"""Finding a model file. One rule for every command (translate, eval, info, serve): the one given; else, among
the runs under ./runs whose model knows the target domain, the newest finished one (its training reached its
planned last step), else the newest unfinished one; else a shipped model. `find_model` says which and why."""
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


def checkpoint_state(ckpt: Path) -> dict:
    """The training state a checkpoint file records (family, domains, step, stop, ...) from its header alone;
    an ImxlateError when the file is not a readable checkpoint."""
    meta = store.read_metadata(ckpt)
    state = meta.get("state")
    if meta["format"] != store.CHECKPOINT_FORMAT or not isinstance(state, dict):
        raise ImxlateError(f"{ckpt} is not a training checkpoint")
    return state


def run_progress(run: Path, meta: dict | None = None) -> tuple[int, int] | None:
    """(steps done, steps planned) of a run folder: from its checkpoint, else from its model file's training
    record (`meta`, the model file's metadata, when already read); None when neither says."""
    try:
        state = checkpoint_state(run / store.CHECKPOINT)
        return int(state["step"]), int(state["stop"])
    except (ImxlateError, OSError, KeyError, TypeError, ValueError):
        pass
    training = (meta or {}).get("training")
    if isinstance(training, dict) and isinstance(training.get("steps"), int) \
            and isinstance(training.get("planned_steps"), int):
        return training["steps"], training["planned_steps"]
    return None


def _knowing(paths: list[Path], to: str | None, seen: list) -> list[tuple[Path, dict]]:
    """(model file, metadata) of the readable files among `paths` that translate into `to` (any when None), in
    order; every readable one is added to `seen` as (path, domains). A one-sided model, e.g. CUT, knows its
    source domain but does not translate into it."""
    found = []
    for p in paths:
        try:
            meta = store.read_metadata(p, (store.MODEL_FORMAT,))
        except (ImxlateError, OSError):
            continue
        domains = meta.get("domains", [])
        seen.append((p, domains))
        targets = [d.split("->")[-1] for d in meta.get("directions", [])] or domains
        if to is None or to in targets:
            found.append((p, meta))
    return found


def _newest_run(runs: list[tuple[Path, dict]]) -> tuple[Path, str] | None:
    """The newest finished run's model file, else the newest unfinished one's, with why it was chosen."""
    unfinished = None
    for p, meta in runs:
        progress = run_progress(p.parent, meta)
        if progress and progress[0] >= progress[1]:
            return p, "newest finished run under ./runs"
        if unfinished is None:
            said = f"at step {progress[0]} of {progress[1]}" if progress else "its progress unrecorded"
            unfinished = p, f"newest run under ./runs, unfinished ({said}): none has finished"
    return unfinished


def find_model(model: str | None, to: str | None = None) -> tuple[Path, str]:
    """-> (model file, why it was chosen, for the one line that says so). `model` (a file or run folder) is
    used as given; without it, the runs under ./runs whose model translates into `to` (any, when None): the
    newest finished, else the newest unfinished; then the models shipped with imxlate; else a clear error."""
    if model:
        p = Path(model)
        if p.is_dir():
            p = p / store.MODEL
        if not p.is_file():
            why = missing_path_message(p) if os.path.lexists(p) else f"no model file at {p}"
            raise ImxlateError(f"{why}; --model takes a .safetensors file or a run folder")
        return p, "given"
    seen: list = []
    chosen = _newest_run(_knowing(run_models(), to, seen))
    if chosen:
        return chosen
    shipped = _knowing(shipped_models(), to, seen)
    if shipped:
        return shipped[0][0], "shipped with imxlate: no run under ./runs knows " + (f"'{to}'" if to else "a domain")
    known = "; ".join(f"{p} ({', '.join(d)})" for p, d in seen) or "none"
    wanted = f"domain '{to}'" if to else "any domain"
    raise ImxlateError(f"no model knows {wanted}. Looked in ./runs and the shipped models; found: {known}. "
                       f"Train one with `imxlate train --domains A {to or 'B'}` or pass --model")
