"""Choose a snapshot of a glyph run on the validation characters, ship it, and score the shipped file on test.

    python examples/glyphs/ship.py RUN --data data/glyphs/cjk [--write]

RUN is an `imxlate train --snapshot-every N` run on a pair made by prepare.py. Every snapshot and the final
model are scored on the validation split, both directions, by the criterion fixed in benchmark.py (the mean
relative gain over the input itself on L1, SSIM and top-1); the best is written in float16 to
weights/glyphs-sans-serif.safetensors with its data folders relative to the prepared data. The shipped file is
then scored on the test split beside the baselines. --write puts that table into this folder's README and
the top-level one and draws examples/figures/glyphs_demo.png.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch

import imxlate
from imxlate import store
from imxlate.families import load_model

sys.path.insert(0, str(Path(__file__).parent))
from benchmark import baselines, draw_grid, gain, glyph_sets, translate_all  # noqa: E402

from imxlate.paired import paired_scores  # noqa: E402

HERE = Path(__file__).parent
OUT = HERE.parents[1] / "weights" / "glyphs-sans-serif.safetensors"
GRID = HERE.parent / "figures" / "glyphs_demo.png"
DOMAINS = ("sans", "serif")


def scores(model: Path, sets: dict) -> dict:
    tr = imxlate.load(model, device="cpu")
    return {k: paired_scores(translate_all(tr, x, k[1], k[0]), targets) for k, (_, x, targets) in sets.items()}


def table(model_scores: dict, base: dict) -> str:
    lines = ["| direction | method | n | L1 (lower is better) | SSIM (higher) | top-1 retrieval |", "|---|---|---:|---:|---:|---:|"]
    for k in model_scores:
        for name, s in [("imxlate model", model_scores[k]), *((n, b[k]) for n, b in base.items())]:
            lines.append(f"| {k[0]} -> {k[1]} | {name} | {s['n']} | {s['l1']:.4f} | {s['ssim']:.4f} | {s['top1']:.3f} |")
    return "\n".join(lines)


def grid(sets: dict, model: Path, path: Path, n: int = 12) -> None:
    """Per direction three labelled rows: input, translation, true drawing."""
    tr = imxlate.load(model, device="cpu")
    rows = []
    for (src, dst), (inputs, x, targets) in sets.items():
        rows += [(f"{src} (input)", inputs[:n]), ("imxlate", translate_all(tr, x[:n], dst, src)),
                 (f"{dst} (truth)", targets[:n])]
    draw_grid(rows, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="a pair folder made by prepare.py (e.g. data/glyphs/cjk)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    val = glyph_sets(args.data, "val", DOMAINS)
    val_base = baselines(val)["input itself"]
    candidates = sorted((args.run / "snapshots").glob("*.safetensors")) + [args.run / "model.safetensors"]
    ranked = []
    for m in candidates:
        s = scores(m, val)
        g = sum(gain(s[k], val_base[k]) for k in s) / len(s)
        ranked.append((g, m))
        print(f"{m.name}: validation gain {g:+.4f} ("
              + "; ".join(f"{k[0]}->{k[1]} L1 {v['l1']:.4f} SSIM {v['ssim']:.4f} top-1 {v['top1']:.3f}" for k, v in s.items()) + ")")
    best = max(ranked)[1]
    print(f"chosen: {best}")

    family = load_model(best)
    meta = family.meta
    root = args.data.resolve()
    label = f"data/glyphs/{root.name}"
    data = {k: os.path.join(label, os.path.relpath(v, root)) for k, v in meta["data"].items()}
    training = dict(meta["training"])
    training["config"] = {**training["config"], "data": label, "out": f"runs/glyphs-{root.name}"}
    store.save_model(family, OUT, training=training, data=data, dtype=torch.float16)
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes) from {best.name}")

    test = glyph_sets(args.data, "test", DOMAINS)
    block = table(scores(OUT, test), baselines(test))
    print(block)
    if args.write:
        grid(test, OUT, GRID)
        for readme in (HERE / "README.md", HERE.parents[1] / "README.md"):
            text = readme.read_text()
            new = f"<!-- glyph-demo:start -->\n{block}\n<!-- glyph-demo:end -->"
            text = re.sub(r"<!-- glyph-demo:start -->.*<!-- glyph-demo:end -->", lambda _: new, text, flags=re.S)
            readme.write_text(text)
        print(f"wrote the table into both READMEs and the grid to {GRID}")


if __name__ == "__main__":
    main()
