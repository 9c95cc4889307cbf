"""DiscoGAN (with the paper's gan / recongan baselines) and StarGAN: real tiny runs through the CLI,
exact resume, model files, translation, the objectives' gradient penalty and spectral norm."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from imxlate.families import load_model
from imxlate import store
from imxlate.cli import app
from imxlate.config import TrainConfig
from imxlate.families.cyclegan import CycleGAN, CycleGANConfig
from imxlate.families.discogan import DiscoGAN, DiscoGANConfig
from imxlate.families.stargan import StarGAN, StarGANConfig
from imxlate.nets.common import param_count
from imxlate.nets.discogan import EncoderDecoderGenerator
from imxlate.nets.stargan import StarGenerator

from conftest import interrupt_at, write_images

runner = CliRunner()
TINY = {"discogan": ["--ngf", "4", "--ndf", "4"], "gan": ["--ngf", "4", "--ndf", "4"],
        "recongan": ["--ngf", "4", "--ndf", "4"], "stargan": ["--ngf", "4", "--ndf", "4", "--n-blocks", "1"]}


def cli(*args, code: int = 0):
    """Run the imxlate CLI in-process; assert its exit status."""
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == code, f"{r.output}\n{r.exception!r}"
    return r


def train(data, model, domains, out, steps, *extra, code: int = 0):
    """A tiny 32 px training run of `model` on `domains` (letters of a string) into `out`."""
    return cli("train", "--model", model, "--data", data, "--domains", *domains, "--out", out, "--steps", steps,
               "--crop-size", 32, "--load-size", 36, "--batch-size", 2, "--workers", 0, "--quiet",
               *TINY[model], *extra, code=code)


def tensors(tree, path="") -> dict[str, torch.Tensor]:
    """Every tensor of a nested checkpoint state, by path."""
    if isinstance(tree, torch.Tensor):
        return {path: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else []
    return {k: v for key, sub in items for k, v in tensors(sub, f"{path}/{key}").items()}


@pytest.fixture
def data(tmp_path):
    """Three tinted domains of 4 images each and an input folder of odd sizes."""
    for i, name in enumerate("abc"):
        write_images(tmp_path / name, 4, seed=i, tint=[200 if j == i else 40 for j in range(3)])
    write_images(tmp_path / "input", 3, sizes=((37, 29), (64, 48), (33, 51)), seed=9)
    return tmp_path


@pytest.mark.parametrize("model,domains,steps", [("discogan", "ab", 5), ("stargan", "abc", 6)])
def test_train_resume_exactly_load_and_translate(data, model, domains, steps, monkeypatch):
    # 2 steps per epoch: a Ctrl-C after 3 resumes mid-epoch. StarGAN: 5 critic steps per G step
    # (wgan-gp), so 6 steps hold two G updates, the second after the resume.
    full, part = data / "full", data / "part"
    train(data, model, domains, full, steps)
    interrupt_at(monkeypatch, 3)
    assert "interrupted at step 3" in train(data, model, domains, part, steps, code=130).output
    cli("train", "--resume", part, "--workers", 0, "--quiet")
    a = store.load_checkpoint(full / "checkpoint.safetensors")
    b = store.load_checkpoint(part / "checkpoint.safetensors")
    assert a["step"] == b["step"] == steps
    ta, tb = tensors(a["family_state"]), tensors(b["family_state"])
    assert ta.keys() == tb.keys() and len(ta) > 10
    assert all(torch.equal(ta[k], tb[k]) for k in ta), [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])

    fam = load_model(part / "model.safetensors")  # the model file alone rebuilds the family
    assert fam.name == model and fam.domains == list(domains)
    assert sorted(fam.directions()) == sorted((s, t) for s in domains for t in domains if s != t)
    info = cli("info", part / "model.safetensors", "--json").output
    assert f'"family": "{model}"' in info
    for dst in domains:  # StarGAN: into each of its domains from one model
        cli("translate", data / "input", "--to", dst, "--model", part, "--out", data / f"out_{dst}", "--quiet")
        outs = sorted((data / f"out_{dst}").iterdir())
        assert [Image.open(p).size for p in outs] == [(37, 29), (64, 48), (33, 51)]

    k = len(domains)  # sample grid rows: DiscoGAN real/fake/rec per direction; StarGAN input + k translations
    rows = 6 if model == "discogan" else k * (k + 1)
    grid = Image.open(next((part / "samples").glob("*.png")))
    assert grid.size[1] == rows * 34 + 2 and grid.size[0] > 4 * 34 + 2  # a label column at the left


@pytest.mark.parametrize("model,nets", [("gan", ["G_ab", "D_b"]), ("recongan", ["G_ab", "G_ba", "D_b"])])
def test_paper_baselines_train_and_translate_a_to_b_only(data, model, nets):
    run = data / model
    train(data, model, "ab", run, 2, "--spectral-norm")
    state = store.load_checkpoint(run / "checkpoint.safetensors")["family_state"]
    assert sorted(state["nets"]) == sorted(nets)
    assert any("parametrizations.weight.original" in k for k in state["nets"]["D_b"])  # --spectral-norm
    assert ("rec_ab" in (run / "log.jsonl").read_text()) == (model == "recongan")
    meta = store.read_metadata(run / "model.safetensors")
    assert meta["family"] == model and meta["directions"] == ["a->b"] and list(meta["networks"]) == ["G_ab"]
    cli("translate", data / "input", "--to", "b", "--model", run, "--out", data / "out_b", "--quiet")
    assert len(list((data / "out_b").iterdir())) == 3
    r = cli("translate", data / "input", "--to", "a", "--model", run, "--out", data / "out_a", "--quiet", code=2)
    assert "only translates a -> b" in r.output


def test_user_errors(data):
    r = train(data, "discogan", "ab", data / "r", 1, "--crop-size", 40, code=2)
    assert "multiple of 16" in r.output
    r = train(data, "discogan", "abc", data / "r", 1, code=2)
    assert "exactly two domains" in r.output
    r = train(data, "stargan", "abc", data / "r", 1, "--gan-loss", "wasserstein", code=2)
    assert "choose from" in r.output


def test_parameter_counts_match_the_papers():
    assert param_count(EncoderDecoderGenerator(ngf=64, norm="batch")) == 5_513_856  # DiscoGAN at 64x64
    g = StarGenerator(c_dim=5, ngf=64, n_blocks=6)
    assert param_count(g) == 8_430_528  # affine instance norm; running statistics are buffers
    assert any("running_mean" in k for k in g.state_dict())


def _batch(domains, n=2, size=32):
    g = torch.Generator().manual_seed(3)
    return {"images": {d: torch.rand(n, 3, size, size, generator=g) * 2 - 1 for d in domains},
            "labels": {d: torch.zeros(n, dtype=torch.long) for d in domains}}


def _family(cls, cfg, domains):
    torch.manual_seed(0)
    fam = cls(cls.resolve_config(cfg, TrainConfig(crop_size=32)), list(domains), 32)
    fam.setup_training()
    return fam


FAMILIES = {
    "stargan": (StarGAN, lambda **kw: StarGANConfig(ngf=4, ndf=4, n_blocks=1, **kw), "abc", "D"),
    "cyclegan": (CycleGAN, lambda **kw: CycleGANConfig(ngf=4, ndf=4, n_blocks=1, gan_loss="wgan-gp", **kw),
                 "ab", "D_a"),
    "discogan": (DiscoGAN, lambda **kw: DiscoGANConfig(ngf=4, ndf=4, gan_loss="wgan-gp", **kw), "ab", "D_a"),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_wgan_gp_penalty_changes_critic_gradients_and_n_critic_holds(name):
    cls, config, domains, critic = FAMILIES[name]
    batch = _batch(domains)
    grads, logged = {}, {}
    for gp in (0.0, 10.0):
        fam = _family(cls, config(lambda_gp=gp), domains)
        assert fam.cfg.n_critic == 5  # WGAN-GP's 5 critic steps per generator step
        torch.manual_seed(1)  # same interpolation points in both runs
        logged[gp] = fam.train_step(batch, 0)
        grads[gp] = [p.grad.clone() for p in fam.nets[critic].parameters()]
    assert any(not torch.allclose(g0, g1) for g0, g1 in zip(grads[0.0], grads[10.0]))
    if name == "stargan":
        assert logged[10.0]["D_gp"] > 0 and logged[0.0]["D_gp"] == 0
    else:
        assert logged[10.0][critic] != logged[0.0][critic]
    # step 1 is a critic-only step: generators unchanged, critics updated
    gens = [p.detach().clone() for k in fam.nets if k.startswith("G") for p in fam.nets[k].parameters()]
    crit = [p.detach().clone() for p in fam.nets[critic].parameters()]
    out = fam.train_step(batch, 1)
    assert not any(k.startswith("G") for k in out)
    assert all(torch.equal(a, p) for a, p in zip(gens, (p for k in fam.nets if k.startswith("G")
                                                         for p in fam.nets[k].parameters())))
    assert not all(torch.equal(a, p) for a, p in zip(crit, fam.nets[critic].parameters()))


@pytest.mark.parametrize("name", FAMILIES)
def test_spectral_norm_on_discriminators_only_when_asked(name):
    cls, config, domains, _ = FAMILIES[name]
    for on in (False, True):
        fam = cls(config(spectral_norm=on), list(domains), 32)
        for key, net in fam.nets.items():
            convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
            wrapped = [torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs]
            assert all(wrapped) if on and key.startswith("D") else not any(wrapped), (key, on)


def test_stargan_targets_conditioning_and_translation():
    fam = _family(StarGAN, StarGANConfig(ngf=4, ndf=4, n_blocks=1), "abc")
    index = torch.tensor([0, 1, 2] * 20)
    target = fam.random_targets(index)
    assert (target != index).all() and set(target.tolist()) == {0, 1, 2}
    assert torch.equal(fam.encode_labels(torch.tensor([2, 0])), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    fam.eval()
    x = torch.rand(2, 3, 36, 20) * 2 - 1  # any multiple of 4; each image normalised by its own statistics
    with torch.no_grad():
        y = [fam.translate(x, d) for d in "abc"]
        alone = fam.translate(x[:1], "b")
    assert y[0].shape == x.shape and not torch.equal(y[0], y[1])
    assert torch.allclose(alone, y[1][:1], atol=1e-6)
