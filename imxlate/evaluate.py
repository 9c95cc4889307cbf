"""`imxlate eval` as library functions: score folders, or translate with a model and score each direction."""
from __future__ import annotations

import sys
from pathlib import Path

from . import metrics
from .paired import match_by_name, paired_scores
from .data import MAX_PIXELS, find_test_folder, list_images, load_image, load_rgb, to_image, to_tensor
from .errors import ImxlateError


def translate_in_memory(tr, paths: list[Path], to: str, src: str | None, batch_size: int = 8):
    """Translate image files -> (PIL images quantised to 8 bits as saved files are, cycle L1 or None).

    The cycle L1 (mean absolute difference, [-1,1] scale) is measured when the model translates back.
    """
    back = src is not None and (to, src) in tr.family.directions()
    outs, l1s = [], []
    for path in paths:
        try:
            rgb, _ = load_image(path, MAX_PIXELS)
        except Exception as e:  # warnings go to stderr: stdout may be --json
            print(f"skipped {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
            continue
        x = to_tensor(rgb)[None]
        y = tr.translate_tensor(x, to, src)
        outs.append(to_image(y[0]))
        if back:
            l1s.append(float((tr.translate_tensor(to_tensor(outs[-1])[None], src, to).cpu() - x).abs().mean()))
    return outs, (sum(l1s) / len(l1s) if l1s else None)


def default_directions(tr) -> list[dict]:
    """For each direction of a model: the source and target folders of its run's data, held-out when present."""
    data = tr.meta.get("data") or {}
    if not data:
        raise ImxlateError(f"{tr.path} records no data folders (imported or shipped without them); "
                           "pass --source, --target and --to")
    plans = []
    for src, dst in tr.family.directions():
        folders, held_out = {}, True
        for role, name in (("source", src), ("target", dst)):
            train_folder = Path(data.get(name, ""))
            test = find_test_folder(train_folder, name, tr.domains.index(name))
            if test is None:
                held_out = False
                if not train_folder.is_dir():
                    raise ImxlateError(f"the data folder of domain '{name}' ({train_folder}) is gone; "
                                       "pass --source, --target and --to")
            folders[role] = test or train_folder
        plans.append({"direction": f"{src}->{dst}", "from": src, "to": dst, **folders, "held_out": held_out})
    return plans


def evaluate_model(tr, plans: list[dict], metric_names: list[str], inception, preset: str, batch_size: int,
                   progress: bool, classifier=None) -> list[dict]:
    """Translate each plan's source folder and score it against its target folder -> one dict per direction."""
    results = []
    for plan in plans:
        paths = list_images(plan["source"])
        fakes, cycle = translate_in_memory(tr, paths, plan["to"], plan["from"])
        row = {k: (str(v) if isinstance(v, Path) else v) for k, v in plan.items()}
        row.update(n_source=len(paths), n_target=len(list_images(plan["target"])))
        row["source_folder"], row["target_folder"] = row.pop("source"), row.pop("target")
        if metric_names:
            row.update(metrics.score(plan["target"], fakes, inception=inception, metrics=metric_names, preset=preset,
                                     batch_size=batch_size, progress=progress))
        if cycle is not None:
            row["cycle_l1"] = cycle
        if classifier is not None:
            row.update(label_preservation(classifier, paths, fakes, plan["source"], plan["target"], plan["to"]))
        results.append(row)
    return results


def class_labels(folder: Path, files: list[Path]) -> list[str]:
    """The class of each file: its first subfolder under `folder` (an error when a file has none)."""
    labels = [p.relative_to(folder).parts[0] if len(p.relative_to(folder).parts) > 1 else "" for p in files]
    if not all(labels):
        raise ImxlateError(f"--classifier needs class subfolders in {folder} (one per class, named as the classifier's)")
    return labels


def classified_accuracy(classifier, images: list, labels: list[str]) -> float:
    """Share of images (PIL or files) that the classifier assigns to their label."""
    from .nets.classifier import classify

    return sum(p == t for p, t in zip(classify(classifier, images), labels)) / max(1, len(labels))


def label_preservation(classifier, paths, fakes, source: Path, target: Path, to: str) -> dict:
    """Accuracy with which translations are classified as their source's class (class = first subfolder),
    beside the classifier's accuracy on the real target images."""
    tgt_paths = list_images(target)
    return {"label_preservation": classified_accuracy(classifier, fakes, class_labels(Path(source), paths)),
            "classifier_accuracy_on_target": classified_accuracy(classifier, tgt_paths,
                                                                 class_labels(Path(target), tgt_paths))}


def label_preservation_folder(classifier, folder) -> dict:
    """Label preservation of a folder of saved translations whose subfolders name their source classes."""
    files = list_images(folder)
    return {"n": len(files), "label_preservation": classified_accuracy(classifier, files, class_labels(Path(folder), files))}


def paired_for_folder(pred_dir, target_dir) -> dict:
    """Paired scores of a folder of translations against ground truth with the same file names."""
    pairs = match_by_name(Path(pred_dir), Path(target_dir))
    return paired_scores([load_rgb(p) for p, _ in pairs], [load_rgb(t) for _, t in pairs])


def paired_for_model(tr, source, target_dir, to: str, src: str | None) -> dict:
    """Translate `source` in memory and score against the same-named files of `target_dir`."""
    pairs = match_by_name(Path(source), Path(target_dir))
    preds, _ = translate_in_memory(tr, [p for p, _ in pairs], to, src)
    return paired_scores(preds, [load_rgb(t) for _, t in pairs])


def format_paired(p: dict, target_dir) -> str:
    return f"paired against {target_dir}: L1 {p['l1']:.4f}, SSIM {p['ssim']:.4f}, top-1 {p['top1']:.3f} (n {p['n']})"
