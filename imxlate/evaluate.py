"""Evaluation, the library behind `imxlate eval`: `evaluate` checks a request and scores saved images
(FID / KID / IS against real images, paired metrics against ground truth, label preservation) or
translates with a model and scores each direction; the helpers below do each part."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import metrics, store
from .classifier import classify, load_classifier
from .paired import match_by_name, paired_scores
from .data import find_test_folder, list_images, load_image, load_rgb, to_image, to_tensor
from .config import MAX_PIXELS, check_at_least
from .device import pick_device
from .errors import ImxlateError, missing_path_message


@dataclass
class Evaluation:
    """What `evaluate` found: `report`, JSON-able (None when statistics were only saved), and `text`, the
    same for people (with rich markup)."""
    report: dict | None
    text: str


def evaluate(metric_names: Sequence[str] = (), *, real=None, fake=None, model: str | None = None, source=None,
             target=None, to: str | None = None, paired_target=None, classifier=None, save_stats=None,
             preset: str = "pytorch-fid", inception_weights=None, download: bool = False,
             allow_unverified_weights: bool = False, batch_size: int = 50, device: str = "auto", verify: bool = True,
             progress: bool = True) -> Evaluation:
    """Score translations as `imxlate eval` does. `metric_names`: any of fid, kid, is.

    Saved images: `fake` against `real`, each a folder or a statistics .npz (FID when no metric is
    named; with `paired_target` too), or `fake` alone with `classifier` (label preservation) or
    `paired_target`; `save_stats` saves the statistics of the images in `real`. A model (`model`,
    else the newest in ./runs knowing `to`, else a shipped one): translate `source` into `to` and
    score against `target` (and `paired_target`), or without `source` translate the data it was
    trained on (held-out split when there is one) in every direction. `classifier` adds label
    preservation.

    Everything that can be checked cheaply is checked first (options that go together, paths that
    exist, ground truth with namesakes, the Inception weights and the model file found), before any
    network is loaded or any image translated. Notes (the model used, statistics saved) go to stderr.
    """
    names = list(metric_names)
    check_at_least({"batch_size": batch_size}, 1)
    metrics.get_preset(preset)
    if set(names) - set(metrics.METRICS):
        raise ImxlateError(f"unknown metrics {sorted(set(names) - set(metrics.METRICS))}: "
                           f"choose from {', '.join(metrics.METRICS)}")
    saved_images = bool(real or fake)
    _check_options(names, saved_images, real, fake, model, source, target, to, paired_target, classifier, save_stats)
    _check_paths(real, fake, source, target, paired_target, classifier, save_stats)
    pairs = match_by_name(fake if saved_images else source, paired_target) if paired_target else None
    if not saved_images:
        from .models import find_model

        path, how = find_model(model, to)
    if real and fake:
        names = names or ["fid"]
    stats_only = bool(real and fake and _kind(real) == _kind(fake) == "file")  # no images: no Inception network
    weights = (metrics.find_inception_weights(inception_weights, download=download)
               if save_stats or (names and not stats_only) else None)
    inception = (metrics.load_inception(weights, allow_unverified=allow_unverified_weights, device=pick_device(device))
                 if weights else None)
    real_side = _save_stats(real, save_stats, inception, preset, batch_size, progress) if save_stats else real
    if save_stats and not fake:
        return Evaluation(None, "")
    clf = load_classifier(classifier) if classifier else None
    if saved_images:
        return _score_saved(names, real, real_side, fake, pairs, paired_target, clf, inception, preset, batch_size,
                            progress)
    return _score_model(path, how, names, source, target, to, pairs, paired_target, clf, inception, preset,
                        batch_size, device, verify, progress)


def _check_paths(real, fake, source, target, paired_target, classifier, save_stats) -> None:
    """Refuse a given path that does not exist or is of the wrong kind, and a --save-stats that cannot be written."""
    for option, path, kind in (("--real", real, _kind(real)), ("--fake", fake, _kind(fake)),
                               ("--source", source, "folder"), ("--target", target, "folder"),
                               ("--paired-target", paired_target, "folder"), ("--classifier", classifier, "file")):
        if path:
            _check_path(option, path, kind)
    if save_stats:
        if Path(save_stats).is_dir():
            raise ImxlateError(f"--save-stats {save_stats} is a folder; --save-stats names the .npz file to write")
        store.prepare_folder(Path(save_stats).parent, "--save-stats folder", create=False)


def _save_stats(real, save_stats, inception, preset: str, batch_size: int, progress: bool):
    """The statistics of the images in `real`, saved to `save_stats` (said on stderr) -> those statistics."""
    stats = metrics.extract(real, *inception, preset, batch_size=batch_size, progress=progress)
    metrics.save_stats(save_stats, stats)
    print(f"Saved statistics of {stats.n} images ({preset}) to {save_stats}", file=sys.stderr)
    return stats


def _check_options(names, saved_images, real, fake, model, source, target, to, paired_target, classifier,
                   save_stats) -> None:
    """Refuse options that do not go together, or that need another."""
    if saved_images and (given := [o for o, v in (("--model", model), ("--source", source), ("--target", target),
                                                   ("--to", to)) if v]):
        raise ImxlateError(f"{'/'.join(given)} translate with a model, --real/--fake score saved images: "
                           "use one or the other")
    if save_stats and (not real or _kind(real) != "folder"):
        raise ImxlateError("--save-stats saves the statistics of --real: give --real FOLDER")
    if (real and not fake and not save_stats) or (fake and not real and (names or not (classifier or paired_target))):
        raise ImxlateError("give both --real and --fake (or --model to translate and score)")
    if saved_images and classifier and (real or paired_target):
        raise ImxlateError("--classifier scores --fake alone (label preservation): leave out --real and "
                           "--paired-target, or translate with --model and --source")
    if source and not to:
        raise ImxlateError("--source needs --to (the target domain)")
    if target and not source:
        raise ImxlateError("--target needs --source (the images to translate) and --to")
    if source and names and not target:
        raise ImxlateError("--source needs --target (real images of the target domain) for FID/KID")
    if paired_target and not (source or fake):
        raise ImxlateError("--paired-target needs the images whose ground truth it holds: --fake (saved "
                           "translations), or --source and --to (to translate them)")


def _kind(path) -> str:
    """--real and --fake take a folder, or a statistics .npz file."""
    return "file" if path and str(path).lower().endswith(".npz") else "folder"


def _check_path(option: str, path, kind: str) -> None:
    """Refuse an option naming a folder (or file) that is not there."""
    p = Path(path)
    if p.is_dir() if kind == "folder" else p.is_file():
        return
    why = f"{p} is not a {kind}" if p.exists() else missing_path_message(p)
    raise ImxlateError(f"{option}: {why}; {option} takes a {kind}")


def _score_saved(names, real, real_side, fake, pairs, paired_target, clf, inception, preset, batch_size,
                 progress) -> Evaluation:
    if clf is not None:
        r = label_preservation_folder(clf, fake)
        return Evaluation(r, f"label preservation of {r['n']} images in {fake}: {r['label_preservation']:.4f}")
    if not real:
        p = paired_for_pairs(pairs)
        return Evaluation(p, format_paired(p, paired_target))
    result = {"real": str(real), "fake": str(fake),
              **metrics.score(real_side, fake, inception=inception, metrics=names, preset=preset,
                              batch_size=batch_size, progress=progress)}
    text = f"{fake} against {real}\n" + metrics.format_scores(result)
    if pairs:
        result["paired"] = paired_for_pairs(pairs)
        text += "\n" + format_paired(result["paired"], paired_target)
    return Evaluation(result, text)


def _score_model(path, how, names, source, target, to, pairs, paired_target, clf, inception, preset, batch_size,
                 device, verify, progress) -> Evaluation:
    from .translate import Translator

    tr = Translator.open(path, device=device, verify=verify)
    print(f"Model: {path} ({how}; {', '.join(tr.domains)})", file=sys.stderr)
    if source:
        tr.check_domain(to)
        src = next((d for d in tr.domains if d != to), None) if len(tr.domains) == 2 else None
        plans = [{"direction": f"{src or '?'}->{to}", "from": src, "to": to, "source": Path(source),
                  "target": Path(target) if target else Path(source), "held_out": True}]
    else:
        plans = default_directions(tr)
    rows = evaluate_model(tr, plans, names, inception, preset, batch_size, progress, clf)
    if pairs:
        rows[0]["paired"] = paired_for_model(tr, pairs, to, plans[0]["from"])
    report = {"model": str(path), "family": tr.meta["family"], "directions": rows,
              "comparable": all(r.get("comparable", True) for r in rows)}
    lines = []
    for r in rows:
        split = "held-out split" if r["held_out"] else "training images (no test split found)"
        lines.append(f"[bold]{r['direction']}[/]: {r['n_source']} images from {r['source_folder']} ({split}), "
                     f"scored against {r['n_target']} images in {r['target_folder']}")
        if names:
            lines.append(metrics.format_scores(r))
        if "cycle_l1" in r:
            lines.append(f"cycle reconstruction L1 {r['cycle_l1']:.4f} ([-1, 1] scale)")
        if "label_preservation" in r:
            lines.append(f"label preservation {r['label_preservation']:.3f} (classifier on real target images: "
                         f"{r['classifier_accuracy_on_target']:.3f})")
        if "paired" in r:
            lines.append(format_paired(r["paired"], paired_target))
    return Evaluation(report, "\n".join(lines))


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
    if classifier is not None:  # class subfolders are checked before anything is translated
        for plan in plans:
            for folder in (plan["source"], plan["target"]):
                class_labels(Path(folder), list_images(folder))
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


def paired_for_pairs(pairs: list[tuple[Path, Path]]) -> dict:
    """Paired scores of saved translations against their ground truth (pairs from `match_by_name`)."""
    return paired_scores([load_rgb(p) for p, _ in pairs], [load_rgb(t) for _, t in pairs])


def paired_for_model(tr, pairs: list[tuple[Path, Path]], to: str, src: str | None) -> dict:
    """Translate the inputs of `pairs` (from `match_by_name`) in memory and score them against their ground truth."""
    preds, _ = translate_in_memory(tr, [p for p, _ in pairs], to, src)
    return paired_scores(preds, [load_rgb(t) for _, t in pairs])


def format_paired(p: dict, target_dir) -> str:
    return f"paired against {target_dir}: L1 {p['l1']:.4f}, SSIM {p['ssim']:.4f}, top-1 {p['top1']:.3f} (n {p['n']})"
