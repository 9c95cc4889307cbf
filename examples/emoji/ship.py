"""Copy a trained emoji model into weights/, recording its data folders relative to the prepared data.

    python examples/emoji/ship.py runs/twemoji2noto/model.safetensors --data data/emoji

The weights are stored in float16 (half the size; the loader restores float32, and the README's table
is measured on the shipped file itself); only paths of the training machine are replaced by paths relative to the
folder prepare.py made, so the shipped file names no machine's folders.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from imxlate.families import load_model
from imxlate import store

OUT = Path(__file__).resolve().parents[2] / "weights" / "emoji-twemoji-noto.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="the folder prepare.py made")
    args = ap.parse_args()
    family = load_model(args.model)
    meta = family.meta
    root = args.data.resolve()
    rel = lambda p: os.path.join("data/emoji", os.path.relpath(p, root))  # noqa: E731
    data = {k: rel(v) for k, v in meta["data"].items()}
    training = dict(meta["training"])
    training["config"] = {**training["config"], "data": "data/emoji", "out": "runs/twemoji2noto"}
    store.save_model(family, OUT, training=training, data=data, dtype=torch.float16)
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
