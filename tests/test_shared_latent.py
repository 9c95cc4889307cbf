"""The shared-latent family (UNIT): every constraint on through the CLI, exact resume, model files, both
directions, shared parameters, and the latent-discriminator and semantic losses reaching the encoders."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from imxlate.families import load_model
from imxlate import store
from imxlate.cli import app
from imxlate.config import TrainConfig
from imxlate.families.shared_latent import SharedLatent, SharedLatentConfig
from imxlate.classifier import train_classifier

from conftest import interrupt_at, write_images

runner = CliRunner()
TINY = ["--ngf", "4", "--ndf", "4", "--n-blocks", "2", "--crop-size", "32", "--load-size", "36",
        "--batch-size", "2", "--workers", "0", "--quiet"]


def cli(*args, code: int = 0):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == code, f"{r.output}\n{r.exception!r}"
    return r


def tensors(tree, path="") -> dict[str, torch.Tensor]:
    """Every tensor of a nested checkpoint state, by path."""
    if isinstance(tree, torch.Tensor):
        return {path: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else []
    return {k: v for key, sub in items for k, v in tensors(sub, f"{path}/{key}").items()}


@pytest.fixture
def data(tmp_path):
    """Domains a (red) and b (blue) of 4 images, an input folder of odd sizes, and a domain classifier."""
    write_images(tmp_path / "a", 4, seed=1, tint=(200, 40, 40))
    write_images(tmp_path / "b", 4, seed=2, tint=(40, 40, 200))
    write_images(tmp_path / "input", 3, sizes=((37, 29), (64, 48), (33, 51)), seed=3)
    train_classifier(tmp_path, tmp_path / "clf.safetensors", steps=2, batch_size=4, width=4)  # classes a, b, input
    return tmp_path


def tiny_family(**options) -> SharedLatent:
    cfg = SharedLatent.resolve_config(SharedLatentConfig(ngf=4, ndf=4, n_blocks=2, **options), TrainConfig(crop_size=32))
    return SharedLatent(cfg, ["a", "b"], 32)


def test_every_constraint_trains_resumes_exactly_loads_and_translates_both_ways(data, monkeypatch):
    every = ["--shared-layers", 1, "--kl-weight", 0.01, "--latent-adversarial", 1, "--cycle-weight", 10,
             "--semantic-weight", 1, "--perceptual-weight", 1, "--perceptual-net", data / "clf.safetensors"]
    train = ("train", "--model", "shared-latent", "--data", data, "--domains", "a", "b", *TINY, *every)
    # 2 steps per epoch: a Ctrl-C after 3 resumes mid-epoch.
    cli(*train, "--out", data / "full", "--steps", 5)
    interrupt_at(monkeypatch, 3)
    assert "interrupted at step 3" in cli(*train, "--out", data / "part", "--steps", 5, code=130).output
    cli("train", "--resume", data / "part", "--workers", 0, "--quiet")
    a = store.load_checkpoint(data / "full" / "checkpoint.safetensors")
    b = store.load_checkpoint(data / "part" / "checkpoint.safetensors")
    assert a["step"] == b["step"] == 5
    ta, tb = tensors(a["family_state"]), tensors(b["family_state"])
    assert ta.keys() == tb.keys() and any("/D_z/" in k for k in ta)
    assert all(torch.equal(ta[k], tb[k]) for k in ta), [k for k in ta if not torch.equal(ta[k], tb[k])]

    log = [json.loads(line) for line in (data / "part" / "log.jsonl").read_text().splitlines()]
    for name in ("latent", "semantic", "perceptual", "cycle_a", "kl_cycle", "D_z"):
        assert log[-1][name] > 0, name

    model = data / "part" / "model.safetensors"
    meta = store.read_metadata(model)
    c = meta["config"]
    assert (c["shared_layers"], c["kl_weight"], c["latent_adversarial"], c["cycle_weight"], c["semantic_weight"]) == (
        1, 0.01, 1.0, 10.0, 1.0)
    assert (c["perceptual_kind"], c["perceptual_sha256"]) == ("classifier", store.sha256(data / "clf.safetensors"))
    assert sorted(meta["networks"]) == ["E_a", "E_b", "G_a", "G_b"]

    fam = load_model(model)  # the model file alone rebuilds the family
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():  # the code's mean, no noise: translation is deterministic
        assert torch.equal(fam.translate(x, "b"), fam.translate(x, "b"))
    assert "shared-latent" in cli("info", model, "--json").output
    for dst in ("a", "b"):
        cli("translate", data / "input", "--to", dst, "--model", data / "part", "--out", data / f"out_{dst}", "--quiet")
        for src in sorted((data / "input").iterdir()):
            with Image.open(data / f"out_{dst}" / src.name) as out, Image.open(src) as img:
                assert out.size == img.size


def shared_pairs(fam: SharedLatent) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
    n = fam.nets
    return [*zip(n["E_a"].shared.parameters(), n["E_b"].shared.parameters()),
            *zip(n["G_a"].shared.parameters(), n["G_b"].shared.parameters())]


def test_shared_layers_are_one_set_of_parameters_also_after_loading(tmp_path):
    fam = tiny_family(shared_layers=1)
    pairs = shared_pairs(fam)
    assert len(pairs) == 8 and all(p is q for p, q in pairs)  # one block each: 2 convs x (weight, bias), twice
    private = [*fam.nets["E_a"].private.parameters(), *fam.nets["E_b"].private.parameters()]
    assert len({id(p) for p in private}) == len(private)
    with torch.no_grad():
        fam.nets["E_a"].shared[0].conv_block[1].weight.add_(1.0)
        fam.nets["G_b"].shared[0].conv_block[5].bias.fill_(0.25)
    assert torch.equal(fam.nets["E_b"].shared[0].conv_block[1].weight, fam.nets["E_a"].shared[0].conv_block[1].weight)
    assert float(fam.nets["G_a"].shared[0].conv_block[5].bias[0].detach()) == 0.25

    store.save_model(fam, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert all(p is q for p, q in shared_pairs(loaded))
    assert torch.equal(loaded.nets["E_b"].shared[0].conv_block[1].weight, fam.nets["E_a"].shared[0].conv_block[1].weight)
    with torch.no_grad():
        loaded.nets["E_b"].shared[0].conv_block[1].weight.zero_()
    assert float(loaded.nets["E_a"].shared[0].conv_block[1].weight.detach().abs().sum()) == 0.0
    # The optimiser sees each shared parameter once.
    fam.setup_training()
    g = [p for group in fam.opts["G"].param_groups for p in group["params"]]
    listed = sum(len(list(fam.nets[k].parameters())) for k in fam.keep)
    assert len(g) == len({id(p) for p in g}) == listed - len(pairs)

    none = tiny_family(shared_layers=0)
    assert not list(none.nets["E_a"].shared.parameters())
    assert all(p is q for p, q in shared_pairs(tiny_family(shared_layers=2)))


@pytest.mark.parametrize("loss", ["latent", "semantic"])
def test_latent_and_semantic_losses_reach_the_encoders(loss):
    torch.manual_seed(0)
    fam = tiny_family(latent_adversarial=1.0, semantic_weight=1.0)
    fam.setup_training()
    real_a, real_b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    _, parts, _ = fam.generator_losses(real_a, real_b)
    assert float(parts[loss].detach()) > 0
    fam.nets.zero_grad(set_to_none=True)
    parts[loss].backward()
    for enc in ("E_a", "E_b"):
        grads = [p.grad for p in fam.nets[enc].private.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0, enc

    off = tiny_family()
    off.setup_training()
    _, parts_off, _ = off.generator_losses(real_a, real_b)
    assert "D_z" not in off.nets and not {"latent", "semantic", "perceptual"} & set(parts_off)


def test_bad_options_stop_before_the_run_starts(data):
    base = ("train", "--model", "shared-latent", "--data", data, "--domains", "a", "b", *TINY, "--steps", 1)
    r = cli(*base, "--out", data / "r1", "--perceptual-weight", 1, "--perceptual-net", data / "missing.pth", code=2)
    assert "missing.pth does not exist" in r.output and not (data / "r1").exists()
    r = cli(*base, "--out", data / "r2", "--shared-layers", 3, code=2)
    assert "--shared-layers 3" in r.output and not (data / "r2").exists()
