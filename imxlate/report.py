"""A run's report: one HTML page in the run folder (report.html) that opens from disk with no network.

It shows the recipe (from the checkpoint's and the model file's metadata), the loss curves from log.jsonl
(drawn with matplotlib, the optional `report` extra: one panel per loss group, raw and smoothed), the
sample grids over time, the collapse warnings the loop raised and the snapshots. Plots are embedded as
base64 PNGs; sample grids are referenced by their relative paths inside the run folder, so the page
reaches nothing outside it. `loss_group` also names the TensorBoard sections the training loop writes.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import re
from pathlib import Path

from . import store
from .errors import ImxlateError
from .optim import describe_schedule
from .store import CHECKPOINT, MODEL

REPORT = "report.html"
LOG = "log.jsonl"
NOT_LOSSES = {"step", "epoch", "time", "lr_factor", "warning"}  # the other numbers of a log line are losses
GROUPS = ("generator", "discriminator", "cycle", "identity", "nce", "other")  # the panels, in this order
MATPLOTLIB_NOTE = "loss curves need matplotlib: pip install 'imxlate[report]'"


def loss_group(name: str) -> str:
    """The panel (and TensorBoard section) of a logged loss: G_ab -> generator, D_a -> discriminator,
    cycle_a / rec_a / kl_cycle -> cycle, idt_a -> identity, nce_ab -> nce, anything else -> other."""
    if name.startswith("nce"):
        return "nce"
    if name.startswith("idt"):
        return "identity"
    if name.startswith(("cycle", "rec_")) or name == "kl_cycle":
        return "cycle"
    if name == "D" or name.startswith("D_"):
        return "discriminator"
    if name == "G" or name.startswith("G_"):
        return "generator"
    return "other"


def read_log(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(loss lines by step, warning lines) of a run's log.jsonl. A resume from an older checkpoint logs
    some steps again: the later line of a step wins. A torn or foreign line is skipped."""
    by_step, warnings = {}, []
    path = run_dir / LOG
    if not path.is_file():
        return [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            step = int(entry["step"])
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(entry, dict):
            continue
        if "warning" in entry:
            warnings.append(entry)
        else:
            by_step[step] = entry
    return [by_step[s] for s in sorted(by_step)], warnings


def losses_by_group(lines: list[dict]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{group: {loss: (steps, values)}} of the finite logged values, groups in GROUPS order."""
    out: dict[str, dict] = {}
    for e in lines:
        for k, v in e.items():
            if k in NOT_LOSSES or not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                continue
            steps, values = out.setdefault(loss_group(k), {}).setdefault(k, ([], []))
            steps.append(e["step"])
            values.append(float(v))
    return {g: out[g] for g in GROUPS if g in out}


def smooth(values: list[float]) -> list[float]:
    """Exponential moving average (debiased, as TensorBoard draws it) over about a twentieth of the curve."""
    alpha = 1.0 / max(1.0, len(values) / 20)
    out, avg, weight = [], 0.0, 0.0
    for v in values:
        avg = (1 - alpha) * avg + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(avg / weight)
    return out


def plot_groups(groups: dict) -> dict[str, str] | None:
    """{group: base64 PNG of its panel} (light theme, labelled axes, raw faint and smoothed bold), or
    None without matplotlib. Figures are made without pyplot: no global state, no display needed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    out = {}
    for group, curves in groups.items():
        fig = Figure(figsize=(6.4, 3.4), dpi=100, facecolor="white")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.set_facecolor("white")
        for i, (name, (steps, values)) in enumerate(sorted(curves.items())):
            color = f"C{i % 10}"
            ax.plot(steps, values, color=color, alpha=0.3, linewidth=1)
            ax.plot(steps, smooth(values), color=color, linewidth=2, label=name)
        ax.set_title(f"{group} losses")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.legend(loc="upper right", fontsize="small", frameon=False)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        out[group] = base64.b64encode(buf.getvalue()).decode("ascii")
    return out


def _step_of(path: Path) -> int | None:
    m = re.fullmatch(r"step_(\d+)\.(png|safetensors)", path.name)
    return int(m.group(1)) if m else None


def _files(folder: Path, pattern: str) -> list[tuple[int, Path]]:
    found = [(_step_of(p), p) for p in folder.glob(pattern) if p.is_file() and not p.is_symlink()]
    return sorted((s, p) for s, p in found if s is not None)


def _meta(path: Path, fmt: str) -> dict:
    """Decoded metadata of an intact-looking imxlate file of format `fmt`, else {}."""
    if not path.is_file():
        return {}
    try:
        meta = store.read_metadata(path)
    except ImxlateError:
        return {}
    return meta if meta.get("format") == fmt else {}


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _table(rows: list[tuple[str, object]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows
                               if v not in (None, "", {}, [])) + "</table>"


def _kv(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items()) if isinstance(d, dict) else ""


def _schedule(lr: dict | None, cfg: dict) -> str | None:
    """The learning-rate schedule as trained (recorded since --steps fits it), else as the options describe it."""
    if lr:
        return describe_schedule(lr)
    return f"{cfg.get('epochs')} epochs constant + {cfg.get('epochs_decay')} decaying" if cfg else None


def _options(cfg: dict) -> str:
    """The training options as the run used them: a --steps run shows steps=N, not the epochs (which only set
    the shares of its schedule, shown in the learning-rate row); an epochs run does not show steps=None."""
    unused = {"epochs", "epochs_decay"} if cfg.get("steps") else {"steps"}
    return _kv({k: v for k, v in cfg.items() if k not in unused})


def recipe(state: dict, model: dict) -> list[tuple[str, object]]:
    """The rows of the recipe table: what was trained, on what, how, where and how long."""
    cfg = state.get("train_config") or (model.get("training") or {}).get("config") or {}
    training = model.get("training") or {}
    data, images = state.get("data") or model.get("data") or {}, state.get("images") or {}
    nets = model.get("networks") or {}
    step, stop = state.get("step", training.get("steps")), state.get("stop", training.get("planned_steps"))
    elapsed = state.get("elapsed", training.get("wall_time_s"))
    rows = [("family", state.get("family") or model.get("family")),
            ("domains", ", ".join(state.get("domains") or model.get("domains") or [])),
            ("image size", f"crop {cfg.get('crop_size')} px, load {cfg.get('load_size')} px, "
                           f"preprocess {cfg.get('preprocess')}" if cfg else model.get("image_size")),
            ("steps", f"{step} of {stop}" if step is not None else None),
            ("batch", f"{cfg.get('batch_size')} x {state.get('world_size', 1)} rank(s)" if cfg else None),
            ("learning rate", _schedule(state.get("lr_schedule") or training.get("lr_schedule"), cfg)),
            ("seed", cfg.get("seed")),
            ("family options", _kv(state.get("family_config") or model.get("config") or {}))]
    for name, folder in data.items():
        count = f"{images[name]} images in " if name in images else ""
        rows.append((f"data: {name}", f"{count}{folder}"))
    rows += [(f"network {k}", f"{v.get('class')}, {v.get('parameters', 0):,} parameters")
             for k, v in nets.items() if isinstance(v, dict)]
    rows += [("device", state.get("device") or training.get("device")),
             ("time", f"{elapsed:.1f} s" if isinstance(elapsed, (int, float)) else None),
             ("model file", f"{MODEL} ({training.get('date', '')}, imxlate {training.get('imxlate_version', '?')})"
              if model else "not written yet"),
             ("training options", _options(cfg))]
    return rows


STYLE = """body{font-family:system-ui,sans-serif;background:#fff;color:#222;margin:2em auto;max-width:1100px;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}th,td{text-align:left;vertical-align:top;padding:.2em .8em .2em 0}
th{color:#555;font-weight:normal;white-space:nowrap}td{word-break:break-word}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots img{width:520px;max-width:100%;border:1px solid #eee}
.samples{display:flex;flex-wrap:wrap;gap:0 1.5em}.samples figure{margin:.5em 0}
.samples img{max-width:100%;image-rendering:pixelated;border:1px solid #eee}
.warning{background:#fff4e0;border-left:4px solid #e69500;padding:.5em 1em;margin:.5em 0}
.note{color:#666}code{background:#f4f4f4;padding:0 .3em}"""


def build(run_dir: Path) -> tuple[str, dict]:
    """The report page of `run_dir` -> (HTML, a summary: plotted groups, sample steps, warnings, snapshots)."""
    state = _meta(run_dir / CHECKPOINT, store.CHECKPOINT_FORMAT).get("state") or {}
    model = _meta(run_dir / MODEL, store.MODEL_FORMAT)
    lines, warnings = read_log(run_dir)
    groups = losses_by_group(lines)
    plots = plot_groups(groups) if groups else {}
    samples = _files(run_dir / "samples", "step_*.png")
    snapshots = _files(run_dir / "snapshots", "step_*.safetensors")
    title = f"{state.get('family') or model.get('family') or 'run'}: {run_dir.resolve().name}"
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>"
             f"<p class=note>Run folder {_e(run_dir)}; report written {now} by <code>imxlate report</code>. "
             "Losses, collapse warnings, sample grids, then the recipe.</p>"]
    parts += [f"<div class=warning>Collapse warning at step {_e(w['step'])}: {_e(w['warning'])}</div>"
              for w in warnings] or ["<p class=note>No collapse warning: the loop saw no sign of collapse.</p>"]
    parts.append("<h2>Losses</h2>")
    if not groups:
        parts.append("<p class=note>No losses logged yet.</p>")
    elif plots is None:
        parts.append(f"<p class=note>The {len(groups)} loss groups ({_e(', '.join(groups))}) are not drawn: "
                     f"{_e(MATPLOTLIB_NOTE)}.</p>")
    else:
        parts.append("<p class=note>Faint: every logged value; bold: smoothed.</p><div class=plots>"
                     + "".join(f"<img class=plot data-group='{_e(g)}' alt='{_e(g)} losses' "
                               f"src='data:image/png;base64,{b64}'>" for g, b64 in plots.items()) + "</div>")
    if lines:
        last = lines[-1]
        parts.append(f"<p class=note>Last logged step {_e(last['step'])}: learning-rate factor "
                     f"{_e(round(last.get('lr_factor', float('nan')), 4))}, "
                     f"{_e(round(last.get('time', float('nan')), 1))} s of training.</p>")
    parts.append("<h2>Sample grids</h2><p class=note>The same sample inputs each time; each row is labelled at its "
                 "left: the inputs of a domain, then what is made of them (a->b: translated).</p><div class=samples>")
    parts += ([f"<figure><figcaption>step {s}</figcaption><img loading=lazy alt='samples at step {s}' "
               f"src='{_e(p.relative_to(run_dir).as_posix())}'></figure>" for s, p in samples]
              or ["<p class=note>No sample grid yet.</p>"])
    parts += ["</div>", "<h2>Recipe</h2>", _table(recipe(state, model))]
    if snapshots:
        parts.append("<h2>Snapshots</h2><ul>" + "".join(
            f"<li>step {s}: <code>{_e(p.relative_to(run_dir).as_posix())}</code> "
            f"({p.stat().st_size / 1e6:.1f} MB)</li>" for s, p in snapshots) + "</ul>")
    parts.append("</body></html>\n")
    summary = {"groups": list(groups), "plotted": plots is not None, "samples": [s for s, _ in samples],
               "warnings": len(warnings), "snapshots": [s for s, _ in snapshots]}
    return "".join(parts), summary


def write_report(run_dir: str | Path) -> tuple[Path, dict]:
    """Write `run_dir`/report.html (atomically) -> (its path, the summary of `build`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ImxlateError(f"no run folder at {run_dir}; `imxlate runs` lists the runs")
    if not any((run_dir / name).is_file() for name in (CHECKPOINT, MODEL, LOG)):
        raise ImxlateError(f"{run_dir} is not a run folder (no {CHECKPOINT}, {MODEL} or {LOG} in it)")
    text, summary = build(run_dir)
    path = run_dir / REPORT
    store.write_atomically(path, lambda f: f.write(text.encode("utf-8")))
    return path, summary
