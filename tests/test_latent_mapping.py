"""Latent mapping: both stages through the CLI on class folders, exact resume in each stage (the
stage-1 one after a real Ctrl-C), the model file alone, stochastic translation, the noise pairs,
frozen VAEs in stage 2, the class-map checks, the noise regulariser that makes samples differ, and the
example's diversity experiment in a tiny form."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from imxlate.families import load_model
from imxlate import store
from imxlate.cli import app
from imxlate.data import Domain
from imxlate.errors import ImxlateError
from imxlate.families.base import config_from
from imxlate.families.latent_mapping import LatentMapping, LatentMappingConfig, pair_matrix, parse_class_map
from imxlate.nets.vae import CodeMapper

from conftest import interrupt_at, write_images

runner = CliRunner()
TINY = ["--nf", "4", "--z-dim", "4", "--hidden", "8", "--layers", "1"]


def cli(*args, code: int = 0):
    """Run the imxlate CLI in-process; assert its exit status."""
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == code, f"{r.output}\n{r.exception!r}"
    return r


def train(data, out, vae_steps, steps, *extra, code: int = 0):
    """A tiny 32 px latent-mapping run between domains x and y with the map 0 -> 2, 1 -> 3."""
    return cli("train", "--model", "latent-mapping", "--data", data, "--domains", "x", "y", "--out", out,
               "--vae-steps", vae_steps, "--steps", steps, "--class-map", "0:2,1:3", "--batch-size", 4,
               "--workers", 0, "--quiet", "--no-flip", "--log-every", 1, *TINY, *extra, code=code)


def tensors(tree, path="") -> dict[str, torch.Tensor]:
    """Every tensor of a nested checkpoint state, by path."""
    if isinstance(tree, torch.Tensor):
        return {path: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else []
    return {k: v for key, sub in items for k, v in tensors(sub, f"{path}/{key}").items()}


def assert_same_checkpoints(p, q, step):
    a, b = store.load_checkpoint(p / "checkpoint.safetensors"), store.load_checkpoint(q / "checkpoint.safetensors")
    assert a["step"] == b["step"] == step
    ta, tb = tensors(a["family_state"]), tensors(b["family_state"])
    assert ta.keys() == tb.keys() and len(ta) > 20
    assert all(torch.equal(ta[k], tb[k]) for k in ta), [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


@pytest.fixture
def data(tmp_path):
    """Domain x with classes 0, 1 and domain y with classes 2, 3 (5 images each), 32x32, and inputs."""
    for domain, classes in (("x", "01"), ("y", "23")):
        for i, c in enumerate(classes):
            tint = [220 if j == int(c) % 3 else 40 for j in range(3)]
            write_images(tmp_path / domain / c, 5, sizes=((32, 32),), seed=int(c), tint=tint)
    write_images(tmp_path / "input", 2, sizes=((37, 29), (32, 32)), seed=9)
    return tmp_path


def test_two_stages_resume_exactly_in_each_and_translate(data, monkeypatch):
    # 10 images per domain, batch 4: 3 steps per epoch, so both resumes also cross an epoch boundary.
    full = data / "full"
    train(data, full, 3, 3)
    log = (full / "log.jsonl").read_text()
    lines = log.splitlines()  # stage 1 logs the VAE terms, stage 2 the mapping GANs'
    assert len(lines) == 6 and all('"kl_a"' in x for x in lines[:3]) and all('"D_b"' in x for x in lines[3:])

    # Stage 1: a real Ctrl-C after the first step; the checkpoint it writes resumes exactly.
    interrupt_at(monkeypatch, 1)
    stage1 = data / "stage1"
    r = train(data, stage1, 3, 3, code=130)
    assert "interrupted at step 1" in r.output
    cli("train", "--resume", stage1, "--steps", 3, "--workers", 0, "--quiet")
    assert_same_checkpoints(full, stage1, 6)

    # Stage 2: stop after one mapping step (step 4 of 6), resume with one worker process.
    stage2 = data / "stage2"
    train(data, stage2, 3, 1)
    assert store.load_checkpoint(stage2 / "checkpoint.safetensors")["step"] == 4
    cli("train", "--resume", stage2, "--steps", 3, "--workers", 1, "--quiet")
    assert_same_checkpoints(full, stage2, 6)

    model = stage2 / "model.safetensors"
    fam = load_model(model)  # the model file alone rebuilds both VAEs and both mappers
    assert fam.name == "latent-mapping" and fam.domains == ["x", "y"] and fam.cfg.class_map == "0:2,1:3"
    assert {k.split(".")[0] for k in store.read_file(model)[0]} == {"VAE_a", "VAE_b", "G_ab", "G_ba"}
    info = cli("info", model, "--json").output
    assert '"class_map": "0:2,1:3"' in info and '"vae_steps": 3' in info

    for dst in ("x", "y"):
        outs = [data / f"{dst}_{k}" for k in "abc"]
        for out, seed in zip(outs, (5, 5, 6)):
            cli("translate", data / "input", "--to", dst, "--model", model, "--out", out, "--samples", 3,
                "--seed", seed, "--quiet")
        names = sorted(p.name for p in outs[0].iterdir())
        assert names == [f"img{i:03d}_{k}{ext}" for i, ext in ((0, ".png"), (1, ".jpg")) for k in range(3)]
        pixels = lambda out, name: np.asarray(Image.open(out / name))  # noqa: E731
        assert Image.open(outs[0] / "img000_0.png").size == (37, 29)  # back to the input's size
        for name in names:  # --seed repeats exactly; another seed differs
            assert np.array_equal(pixels(outs[0], name), pixels(outs[1], name))
        assert any(not np.array_equal(pixels(outs[0], n), pixels(outs[2], n)) for n in names)
        variants = [pixels(outs[0], f"img000_{k}.png") for k in range(3)]  # three different samples
        assert all(not np.array_equal(variants[i], variants[j]) for i, j in ((0, 1), (0, 2), (1, 2)))


def test_class_map_naming_a_missing_class_fails_before_training(data):
    out = data / "bad"
    r = train(data, out, 1, 1, "--class-map", "0:2,1:7", code=2)
    assert r.output.strip().count("\n") == 0
    assert "class '7'" in r.output and "'y'" in r.output
    assert not out.exists()
    r = train(data, out, 1, 1, "--class-map", "0-2", code=2)  # syntax, also before training
    assert "SOURCE:TARGET" in r.output and not out.exists()


def test_class_maps_and_the_unsteered_warning(data, capsys):
    assert parse_class_map(" 0:5, 1:6 ,") == [("0", "5"), ("1", "6")]
    m = pair_matrix("0:a,1:a", ["x", "y"], [["0", "1"], ["a", "b"]])  # several to one
    assert m.tolist() == [[True, False], [True, False]]
    assert pair_matrix("", ["x", "y"], [["0", "1", "2"], ["2", "0"]]).tolist() == [[False, True], [False, False],
                                                                                  [True, False]]
    with pytest.raises(ImxlateError, match="share no class"):
        pair_matrix("", ["x", "y"], [["0"], ["1"]])
    with pytest.raises(ImxlateError, match="no class folders"):
        pair_matrix("0:1", ["x", "y"], [["0"], []])

    write_images(data / "plain", 3, sizes=((32, 32),))
    fam = LatentMapping(LatentMappingConfig(), ["x", "plain"], 32)
    fam.check_data([Domain("x", data / "x"), Domain("plain", data / "plain")])
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "'plain'" in err and "does not steer" in err
    assert pair_matrix("", ["x", "plain"], [["0", "1"], []]).all()


def test_noise_pairs_enter_d_and_stage_2_leaves_the_vaes_alone():
    torch.manual_seed(0)
    cfg = LatentMappingConfig(class_map="0:2,1:3", nf=4, z_dim=4, hidden=8, layers=1, vae_steps=2)
    fam = LatentMapping(cfg, ["x", "y"], 32, {"x": ["0", "1"], "y": ["2", "3"]})
    fam.setup_training()
    images = {"x": torch.rand(4, 3, 32, 32) * 2 - 1, "y": torch.rand(4, 3, 32, 32) * 2 - 1}
    batch = {"images": images, "labels": {"x": torch.tensor([0, 1, 0, 1]), "y": torch.tensor([1, 0, 0, 1])}}
    for step in range(2):
        assert "kl_a" in fam.train_step(batch, step)
    vaes = {f"{name}.{k}": v.clone() for name in ("VAE_a", "VAE_b") for k, v in fam.nets[name].state_dict().items()}
    gens = {k: v.clone() for k, v in fam.nets["G_ab"].state_dict().items()}

    # Same codes, noise and fakes: the discriminator's loss with and without the noise pairs.
    z, real, eps = torch.randn(4, 4), torch.randn(4, 4), torch.randn(4, 4)
    fake = fam.nets["G_ab"](z, eps)
    with_noise = fam.discriminator_loss(fam.nets["D_b"], z, real, fake, eps, noise_pairs=True)
    without = fam.discriminator_loss(fam.nets["D_b"], z, real, fake, eps, noise_pairs=False)
    assert not torch.isclose(with_noise, without)
    moved = fam.discriminator_loss(fam.nets["D_b"], z, real, fake, eps + 1, noise_pairs=True)
    assert not torch.isclose(with_noise, moved)  # the noise pairs' codes reach the loss

    for step in range(2, 5):
        losses = fam.train_step(batch, step)
        assert {"D_a", "D_b", "G_ab", "G_ba"} <= set(losses) and "kl_a" not in losses
    after = {f"{name}.{k}": v for name in ("VAE_a", "VAE_b") for k, v in fam.nets[name].state_dict().items()}
    assert len(vaes) == len(after) == 32 and all(torch.equal(vaes[k], after[k]) for k in vaes)
    assert not all(torch.equal(gens[k], v) for k, v in fam.nets["G_ab"].state_dict().items())


def test_the_noise_regulariser_makes_a_noise_blind_mapper_use_its_noise():
    """The default noise regulariser (0.01, chosen on validation inputs) pins and its mechanism: a mapper that
    ignores eps gets no push from the adversarial term (with antithetic draws eps, -eps its gradient on the noise
    weights cancels), so its draws stay identical; the regulariser makes them differ, the more the larger its
    weight."""
    assert LatentMappingConfig().noise_reg == 0.01
    assert config_from(LatentMappingConfig, {"noise_reg": 1.0}).noise_reg == 1.0  # other files keep theirs
    cfg = LatentMappingConfig(nf=4, z_dim=4, hidden=16, layers=1)
    fam = LatentMapping(cfg, ["x", "y"], 32, {"x": ["0"], "y": ["1"]})
    D = fam.nets["D_b"]

    def spread_after_training(weight: float) -> float:
        torch.manual_seed(0)
        G = CodeMapper(4, 16, 1)
        with torch.no_grad():
            G.net[0].weight[:, 4:] = 0  # blind to eps: G(z, eps1) == G(z, eps2)
        opt = torch.optim.SGD(G.parameters(), lr=0.05)
        for _ in range(20):
            z, eps = torch.randn(16, 4), torch.randn(16, 4)
            z, eps = torch.cat([z, z]), torch.cat([eps, -eps])
            adv, reg = fam.generator_loss(D, z, G(z, eps), eps)
            opt.zero_grad()
            (adv + weight * reg).backward()
            opt.step()
        with torch.no_grad():
            z = torch.randn(64, 4)
            return float((G(z, torch.randn(64, 4)) - G(z, torch.randn(64, 4))).abs().mean())

    assert spread_after_training(0.0) < 1e-5
    weak, strong = spread_after_training(cfg.noise_reg), spread_after_training(1.0)
    assert strong > 0.05 and strong > 20 * weak


def digits(tmp_path) -> Path:
    """A tiny digit benchmark: train (3 images a class) and test (2) of handwritten 0-9."""
    data = tmp_path / "digits"
    for split, n in (("train", 3), ("test", 2)):
        for d in range(10):
            write_images(data / split / "handwritten" / str(d), n, sizes=((32, 32),), seed=d,
                         tint=[(40 * d) % 256, 255 - 20 * d, 120])
    return data


def test_diversity_experiment_writes_its_table_and_figure(tmp_path):
    """examples/latent_mapping/run.py --experiment diversity in its tiny form: real training runs (two seeds,
    both objectives, the two-target setting), the table between the README's markers, the figure, the results."""
    data = digits(tmp_path)
    root = Path(__file__).resolve().parents[1]
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- diversity:start -->\nold\n<!-- diversity:end -->\nafter\n")
    work, figures = tmp_path / "work", tmp_path / "figures"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(root / "examples" / "latent_mapping" / "run.py"), "--experiment",
                        "diversity", "--tiny", "--settings", "c", "--data", str(data), "--work", str(work),
                        "--figures", str(figures), "--readme", str(readme), "--seeds", "0", "1", "--samples", "3"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    text = readme.read_text()
    assert text.startswith("before\n<!-- diversity:start -->\n| setting |")
    assert text.endswith("<!-- diversity:end -->\nafter\n") and "old" not in text and str(tmp_path) not in text
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| (c)")]
    assert [c[1].strip() for c in rows] == ["real held-out targets", "the same, through the VAE",
                                            "G, noise-reg 0.01 (the default)", "G, noise-reg 1"]
    assert all("±" in c[k] for c in rows[1:] for k in (2, 3, 4))  # two seeds: mean ± sd of each measure
    results = json.loads((work / "diversity.json").read_text())
    assert results["samples"] == 3 and len(results["rows"]) == 4
    assert all(0 <= v <= 1 for row in results["rows"] for m in ("pairwise", "reached", "kept") for v in row[m])
    assert {p.name for p in (work / "runs").iterdir() if p.is_dir()} == {
        f"c_latent-mapping{o}_seed{seed}" for o in ("", "-noise-reg-1") for seed in (0, 1)}
    fig = Image.open(figures / "diversity.png")
    assert fig.width > 7 * 64 and fig.height > 5 * 64  # 5 inputs: the input, then 3 + 3 samples a row


def test_sweep_holds_out_validation_inputs_and_picks_by_its_rule(tmp_path):
    """--experiment sweep in its tiny form: the validation images are out of every run's training data, one
    run per weight, the table between the sweep markers marks the weight its rule picks; the rule itself."""
    data = digits(tmp_path)
    root = Path(__file__).resolve().parents[1]
    readme = tmp_path / "README.md"
    readme.write_text("<!-- diversity:start -->\nkept\n<!-- diversity:end -->\n"
                      "<!-- sweep:start -->\n<!-- sweep:end -->\n")
    work = tmp_path / "work"
    r = subprocess.run([sys.executable, str(root / "examples" / "latent_mapping" / "run.py"), "--experiment", "sweep",
                        "--tiny", "--data", str(data), "--work", str(work), "--readme", str(readme), "--seeds", "0",
                        "--samples", "2", "--val-per-class", "1"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = json.loads((work / "sweep.json").read_text())
    weights = [row["weight"] for row in results["rows"]]
    assert len(weights) == 4 and results["picked"] in weights
    for d in "01234":  # the last image of each class is held out, the others train
        names = sorted(p.name for p in (data / "train" / "handwritten" / d).iterdir())
        assert sorted(p.name for p in (work / "data_val1" / "digits0to4" / d).iterdir()) == names[:-1]
    ckpts = [store.load_checkpoint(p / "checkpoint.safetensors") for p in (work / "runs").iterdir() if p.is_dir()]
    assert sorted(c["family_config"]["noise_reg"] for c in ckpts) == sorted(float(w) for w in weights)
    assert all(c["train_config"]["data"] == str(work / "data_val1") and c["images"]["digits0to4"] == 10
               for c in ckpts)
    text = readme.read_text()
    assert "kept" in text and f"| **{results['picked']}** (picked) |" in text and str(tmp_path) not in text

    sys.path.insert(0, str(root / "examples" / "latent_mapping"))
    try:
        from run import choose_weight
    finally:
        sys.path.pop(0)
    rows = [{"weight": "a", "kept": [0.90, 0.92], "pairwise": [0.05, 0.05]},
            {"weight": "b", "kept": [0.89, 0.90], "pairwise": [0.07, 0.07]},  # within 0.02 of the best: spreads most
            {"weight": "c", "kept": [0.80, 0.80], "pairwise": [0.09, 0.09]}]  # spreads more, loses the class
    assert choose_weight(rows) == "b"
    assert choose_weight(rows[:1] + rows[2:]) == "a"
