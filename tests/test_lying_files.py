"""Files whose metadata lies while their digest was recomputed (the digest proves a file unchanged since it was
written, not that its metadata tells the truth): each is refused by the one reader before its weights load, as
one ImxlateError naming what does not hold (on the command line: exit 2, one line, no traceback).

Real files: a tiny CycleGAN trained two steps (its model file and checkpoint) and a tiny classifier, rewritten
with safetensors and their digest recomputed as store.py computes it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import imxlate
from imxlate import store
from imxlate.classifier import load_classifier, train_classifier
from imxlate.cli import app
from imxlate.errors import ImxlateError
from imxlate.families import describe_file, load_checkpoint
from imxlate.nets.resnet import ResnetGenerator

from conftest import write_images

TINY = ["--crop-size", "32", "--load-size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "1", "--workers", "0",
        "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Data folders, a tiny CycleGAN run (run/model.safetensors, run/checkpoint.safetensors) and a classifier."""
    root = tmp_path_factory.mktemp("lying")
    write_images(root / "photos", 4, seed=1, tint=(200, 60, 60))
    write_images(root / "vangogh", 4, seed=2, tint=(60, 60, 200))
    write_images(root / "input", 2, sizes=((24, 20),), seed=3)
    r = CliRunner().invoke(app, ["train", "--data", str(root), "--domains", "photos", "vangogh", "--steps", "2",
                                 "--out", str(root / "run"), *TINY])
    assert r.exit_code == 0, r.output
    write_images(root / "classes" / "red", 4, sizes=((16, 16),), seed=4, tint=(220, 30, 30))
    write_images(root / "classes" / "blue", 4, sizes=((16, 16),), seed=5, tint=(30, 30, 220))
    train_classifier(root / "classes", root / "clf.safetensors", steps=2, batch_size=4, image_size=16, width=4)
    return root


def lying(src: Path, dst: Path, meta=None, tensors=None) -> Path:
    """A copy of `src` with its metadata (`meta`: raw string table -> changed) or tensors changed, and its digest
    recomputed the way store.py computes it: a lie that the digest cannot catch."""
    t, m = store.read_file(src)
    t = tensors(dict(t)) if tensors else t
    m = {k: v for k, v in (meta(dict(m)) if meta else m).items() if k != store.DIGEST_KEY}
    m[store.DIGEST_KEY] = json.dumps(store.digest(t, m))
    save_file(t, str(dst), metadata=m)
    return dst


def with_json(field: str, **changes):
    """A `meta` change setting entries of the JSON table in metadata field `field`."""
    return lambda m: {**m, field: json.dumps({**json.loads(m[field]), **changes})}


def refused(*args) -> str:
    """Run the CLI, which must refuse with exit 2 and one `error:` line and no traceback -> that line."""
    r = CliRunner().invoke(app, [str(a) for a in args])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def translate(world: Path, model: Path) -> str:
    return refused("translate", world / "input", "--to", "vangogh", "--model", model, "--out", world / "out")


def test_lying_metadata_of_a_model_file_is_refused_naming_the_field(world, tmp_path):
    model = world / "run" / "model.safetensors"
    cases = {  # metadata change -> what the error line names
        "three-domains": (lambda m: {**m, "domains": json.dumps(["photos", "vangogh", "monet"])}, "'domains'"),
        "negative-size": (lambda m: {**m, "image_size": "-64"}, "'image_size' is -64"),
        "deep-json": (lambda m: {**m, "config": "[" * 100_000 + "]" * 100_000}, "nested"),
        "ngf-text": (with_json("config", ngf="wide"), "ngf 'wide'"),
        "other-family": (lambda m: {**m, "family": "cut"}, "G_ba"),  # CUT keeps G_ab only: G_ba is left over
    }
    for name, (change, named) in cases.items():
        line = translate(world, lying(model, tmp_path / f"{name}.safetensors", meta=change))
        assert named in line and f"{name}.safetensors" in line, (name, line)
    assert not (world / "out").exists()


def test_lying_weights_are_refused_integers_and_huge_values(world, tmp_path):
    model = world / "run" / "model.safetensors"
    as_int = lying(model, tmp_path / "int.safetensors", tensors=lambda t: {
        k: (v * 100).to(torch.int32) if v.is_floating_point() else v for k, v in t.items()})
    assert "int32 values in the file, float32 in the network" in translate(world, as_int)
    huge = lying(model, tmp_path / "huge.safetensors",
                 tensors=lambda t: {k: v * 1e30 if v.is_floating_point() else v for k, v in t.items()})
    assert "reaches" in translate(world, huge)
    with pytest.raises(ImxlateError, match="reaches"):
        imxlate.load(huge, device="cpu")


def test_huge_stated_sizes_are_refused_before_any_network_is_built(world, tmp_path):
    model = world / "run" / "model.safetensors"
    built = []  # every parameter any module registers while the lying files are read
    hook = torch.nn.modules.module.register_module_parameter_registration_hook(
        lambda module, name, p: built.append(p.numel()))
    try:
        for name, change, named in (("blocks", with_json("config", n_blocks=20_000), "n_blocks 20000"),
                                    ("ngf", with_json("config", ngf=512), "ngf 512")):
            path = lying(model, tmp_path / f"{name}.safetensors", meta=change)
            with pytest.raises(ImxlateError, match=named):
                imxlate.load(path, device="cpu")
    finally:
        hook.remove()
    assert built == []  # refused from the metadata: not a module of either network was made
    assert "n_blocks 20000" in translate(world, tmp_path / "blocks.safetensors")


def test_checkpoint_missing_a_key_or_at_an_impossible_step_is_refused_on_resume(world, tmp_path):
    ckpt = world / "run" / "checkpoint.safetensors"

    def state(**changes):
        def change(m):
            tree = json.loads(m["state"])
            tree.update(changes)
            return {**m, "state": json.dumps({k: v for k, v in tree.items() if v is not None})}
        return change

    recorded = store.read_metadata(ckpt)["state"]
    stop = recorded["stop"]
    cases = {"no-train-config": (state(train_config=None), "'state.train_config' is missing"),
             "negative-step": (state(step=-3), "'state.step' is -3"),
             "step-past-the-end": (state(step=stop + 1), f"'state.step' is {stop + 1}")}
    for name, (change, named) in cases.items():
        path = lying(ckpt, tmp_path / f"{name}.safetensors", meta=change)
        line = refused("train", "--resume", path)
        assert named in line, (name, line)
    wider = state(family_config={**recorded["family_config"], "ngf": 16})
    family = lying(ckpt, tmp_path / "wide.safetensors", meta=wider)
    with pytest.raises(ImxlateError, match="do not fit"):  # its networks are checked against the family it states
        load_checkpoint(family)
    assert load_checkpoint(ckpt)["step"] == stop


def test_import_refuses_to_write_a_model_that_loading_would_refuse(tmp_path):
    net = ResnetGenerator(3, 3, 8, 1, "instance", False, "transpose")
    sd = net.state_dict()
    sd["model.1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(sd, tmp_path / "g.pth")
    line = refused("import", tmp_path / "g.pth", "--from", "a", "--to", "b", "--out", tmp_path / "m.safetensors")
    assert "NaN" in line and "g.pth" in line
    sd["model.1.weight"][0, 0, 0, 0] = 0.0
    torch.save(sd, tmp_path / "g.pth")
    line = refused("import", tmp_path / "g.pth", "--from", "a", "--to", "b", "--out", tmp_path / "m.safetensors",
                   "--image-size", "5000")  # a size no load would take
    assert "--image-size 5000" in line
    assert not (tmp_path / "m.safetensors").exists()


def test_a_classifier_file_with_lying_metadata_is_refused(world, tmp_path):
    clf = world / "clf.safetensors"
    meta, status = describe_file(clf)
    assert meta["format"] == store.CLASSIFIER_FORMAT and status == "intact"
    cases = {"three-classes": (lambda m: {**m, "classes": json.dumps(["red", "blue", "green"])}, "'classes'"),
             "wide": (with_json("config", width=512), "width 512"),
             "deeper": (with_json("config", blocks=4), "do not fit"),
             "deep-json": (lambda m: {**m, "training": "{\"a\":" * 1000 + "0" + "}" * 1000}, "nested")}
    for name, (change, named) in cases.items():
        path = lying(clf, tmp_path / f"{name}.safetensors", meta=change)
        with pytest.raises(ImxlateError, match=named):
            load_classifier(path)
        line = refused("eval", "--fake", world / "classes", "--classifier", path)
        assert named.strip("'") in line, (name, line)
    load_classifier(clf)
