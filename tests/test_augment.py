"""DiffAugment: the augmentations themselves, and CycleGAN training behind them."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from imxlate import store
from imxlate.augment import check_policy, cutout, diff_augment, translation
from imxlate.cli import app


def seeded(s=0):
    return torch.Generator().manual_seed(s)


def test_translation_shifts_whole_images_within_an_eighth():
    x = torch.rand(16, 3, 16, 16) + 1  # no zeros of its own
    t = translation(x, seeded())
    for src, out in zip(x, t):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(out, torch.roll(src, (dy, dx), (1, 2)) * (out != 0))]
        assert len(found) == 1  # each image is one shift of at most 2 px (16 / 8), zeros where it came in
    assert not torch.equal(t, x) and torch.equal(t, translation(x, seeded()))


def test_cutout_zeroes_one_square_of_half_the_side():
    x = torch.ones(32, 3, 16, 16)
    c = cutout(x, seeded())
    holes = (c == 0).all(1)  # (B, H, W): the same hole in every channel
    assert torch.equal(holes, (c == 0).any(1))
    for h in holes:
        rows, cols = h.any(1).nonzero().flatten(), h.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8 and h.sum() == len(rows) * len(cols)
    assert (holes.flatten(1).sum(1) == 64).any()  # a hole away from the border is 8 x 8


def test_gradients_reach_the_images_and_bad_policies_are_refused():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    diff_augment(x, ["translation", "cutout"], seeded()).sum().backward()
    assert 0 < x.grad.sum() < x.numel() and set(x.grad.unique().tolist()) <= {0.0, 1.0}
    assert check_policy("") == [] and check_policy("cutout,translation") == ["cutout", "translation"]
    with pytest.raises(ValueError, match="colour"):
        check_policy("translation,colour")


def test_cyclegan_trains_behind_diffaugment_and_resumes_exactly(tmp_path, monkeypatch, two_domains):
    monkeypatch.chdir(two_domains)
    tiny = ["--domains", "photos", "vangogh", "--crop-size", "32", "--load-size", "36", "--ngf", "8", "--ndf", "8",
            "--n-blocks", "1", "--quiet", "--workers", "0"]
    run = lambda *a: CliRunner().invoke(app, [*map(str, a)])  # noqa: E731
    r = run("train", *tiny, "--diff-augment", "translation,flip")
    assert r.exit_code == 2 and "--diff-augment translation,flip" in r.output
    for out, steps in (("plain", 3), ("straight", 3), ("split", 1)):
        extra = [] if out == "plain" else ["--diff-augment", "translation,cutout"]
        assert run("train", *tiny, *extra, "--steps", steps, "--out", out).exit_code == 0
    assert run("train", "--resume", "split", "--steps", "3", "--quiet").exit_code == 0
    assert store.read_metadata("straight/model.safetensors")["config"]["diff_augment"] == "translation,cutout"
    plain, straight, split = (store.load_checkpoint(f"{d}/checkpoint.safetensors")["family_state"]["nets"]
                              for d in ("plain", "straight", "split"))
    for net in ("G_ab", "D_b"):
        for k, v in straight[net].items():
            assert torch.equal(v, split[net][k]), (net, k)
    assert any(not torch.equal(v, plain["D_b"][k]) for k, v in straight["D_b"].items())  # it changed training
