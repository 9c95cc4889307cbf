"""The tool's own image classifier: its file, its training and its use (the network is `nets.classifier`).

Uses: the feature network of the perceptual constraint (`--perceptual-net FILE`), and a judge of whether
translations keep their class (`imxlate eval --classifier`). A classifier file is a safetensors file whose
metadata has format "imxlate-classifier", the network's config, the class names, the input size and a training
summary. It is read by `store.read`, its metadata checked against its tensors before they load
(`classifier_tensors`); `imxlate.perceptual` recognises it by its format.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from . import store
from .data import list_images, load_rgb, to_tensor
from .errors import ImxlateError
from .nets.classifier import Classifier

CLASSIFIER_FORMAT = store.CLASSIFIER_FORMAT
CONFIG_KEYS = ("n_classes", "width", "blocks")  # the network's config, as its file records it


def save_classifier(net: Classifier, path: str | Path, classes: list[str], image_size: int,
                    training: dict | None = None) -> Path:
    """Write `net` with its class names, input size and training summary as a classifier file."""
    meta = {"format": CLASSIFIER_FORMAT, "format_version": json.dumps(store.FORMAT_VERSION),
            "config": json.dumps(net.config), "classes": json.dumps(list(classes)),
            "image_size": json.dumps(image_size), "training": json.dumps(training or {})}
    store.atomic_save(net.state_dict(), meta, path)
    return Path(path)


def is_classifier_file(path: str | Path) -> bool:
    """True when `path` is a safetensors file with the classifier format in its metadata (its header alone read)."""
    try:
        return store.read_header(path)[1].get("format") == CLASSIFIER_FORMAT
    except ImxlateError:
        return False


def classifier_tensors(path, meta: dict, specs: dict) -> dict:
    """`store.read`'s expectation of a classifier file: the tensors of the network its config describes (built on
    the meta device), once the config's sizes are in range and its class count is that of its class names."""
    config = meta["config"]
    for k in CONFIG_KEYS:
        if type(config.get(k)) is not int:
            raise store.lie(path, "config", f"has no whole number {k}")
        store.check_range(config[k], k, path, "config")
    if config["n_classes"] != len(meta["classes"]):
        raise store.lie(path, "classes", f"names {len(meta['classes'])} classes; its network has {config['n_classes']}")
    with torch.device("meta"):  # the default initialisation: no random fill that meta tensors find slow
        net = Classifier(**{k: config[k] for k in CONFIG_KEYS})
    return store.specs_of(net.state_dict())


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict]:
    """A classifier file -> (network in eval mode on `device`, decoded metadata: config, classes, image_size,
    training), read by `store.read` (everything checked before its weights load)."""
    tensors, meta, _ = store.read(path, (CLASSIFIER_FORMAT,), classifier_tensors)
    net = Classifier(**{k: meta["config"][k] for k in CONFIG_KEYS})
    net.load_state_dict(tensors, strict=True)
    return net.to(device).eval(), meta


@torch.inference_mode()
def classify(classifier: tuple[Classifier, dict], images: list, batch_size: int = 256) -> list[str]:
    """Class names predicted for PIL images or image files, by a `load_classifier` result."""
    net, meta = classifier
    size = meta["image_size"]
    device = next(net.parameters()).device
    names = []
    for i in range(0, len(images), batch_size):
        chunk = [im if isinstance(im, Image.Image) else load_rgb(im) for im in images[i:i + batch_size]]
        x = torch.stack([to_tensor(im.convert("RGB").resize((size, size), Image.BICUBIC)) for im in chunk])
        names += [meta["classes"][k] for k in net(x.to(device)).argmax(1).tolist()]
    return names


def _class_folders(data_dirs: list[Path], only: list[str] | None = None) -> dict[str, list[Path]]:
    """Class name -> image files, from the first-level subfolders of every data folder (merged by name), or
    only those named in `only`."""
    images: dict[str, list[Path]] = {}
    for root in data_dirs:
        if not root.is_dir():
            raise ImxlateError(f"{root} is not a folder; pass folders holding one subfolder per class")
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and (only is None or p.name in only)):
            files = list_images(sub)
            if files:
                images.setdefault(sub.name, []).extend(files)
    if len(images) < 2:
        raise ImxlateError(f"found {len(images)} class folder(s) with images in {', '.join(map(str, data_dirs))}; "
                           "a classifier needs at least two subfolders of images, one per class")
    return dict(sorted(images.items()))


def _load_set(files: dict[str, list[Path]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All images resized to size x size -> ((N,3,size,size) in [-1,1], (N,) class indices)."""
    xs, ys = [], []
    for label, paths in enumerate(files.values()):
        for p in paths:
            xs.append(to_tensor(load_rgb(p).resize((size, size), Image.BICUBIC)))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


def _shift(x: torch.Tensor, g: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random translations by up to `max_shift` pixels (edge pixels repeated): the only augmentation."""
    if max_shift == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, [max_shift] * 4, mode="replicate")
    dy, dx = (int(v) for v in torch.randint(0, 2 * max_shift + 1, (2,), generator=g))
    return padded[..., dy:dy + h, dx:dx + w]


@torch.no_grad()
def accuracy(net: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of images whose highest logit is their class (network put in eval mode)."""
    net.eval()
    device = next(net.parameters()).device
    right = sum(int((net(x[i:i + batch_size].to(device)).argmax(1).cpu() == y[i:i + batch_size]).sum())
                for i in range(0, len(x), batch_size))
    return right / len(x)


def train_classifier(data_dirs: str | Path | list, out: str | Path, steps: int = 2000, batch_size: int = 64,
                     image_size: int = 32, width: int = 32, lr: float = 1e-3, seed: int = 0,
                     device: str | torch.device = "cpu", classes: list[str] | None = None) -> dict:
    """Train a classifier on folders holding one subfolder per class (same names merge; only the subfolders in
    `classes` when given) and save it to `out`.

    Adam, random shifts of up to size/16 px; returns the summary also stored in the file
    (classes, images, steps, final training accuracy, path).
    """
    dirs = [Path(d) for d in (data_dirs if isinstance(data_dirs, (list, tuple)) else [data_dirs])]
    files = _class_folders(dirs, classes)
    x, y = _load_set(files, image_size)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Classifier(len(files), width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g)
        loss = F.cross_entropy(net(_shift(x[idx], g, image_size // 16).to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    summary = {"classes": list(files), "images": len(x), "steps": steps, "batch_size": batch_size, "lr": lr,
               "seed": seed, "train_accuracy": round(accuracy(net, x, y), 4),
               "data": [str(d.resolve()) for d in dirs]}
    save_classifier(net.cpu(), out, list(files), image_size, summary)
    return {**summary, "path": str(out)}
