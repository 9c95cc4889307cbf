"""The perceptual constraint: recognising VGG, FID Inception and classifier files, frozen features, errors;
and the classifier the tool trains and saves."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torchvision

from imxlate import store
from imxlate.errors import ImxlateError
from imxlate.classifier import is_classifier_file, load_classifier, train_classifier
from imxlate.nets.inception import FIDInceptionV3
from imxlate.perceptual import PerceptualLoss, load_perceptual, perceptual_from_config, record_perceptual

from conftest import write_images

IMAGENET = (torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))


def images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def imagenet_input(x):
    mean, std = IMAGENET
    return ((x + 1) / 2 - mean) / std


@dataclass
class Options:
    """The perceptual fields a family config carries."""
    perceptual_weight: float = 0.0
    perceptual_net: str | None = None
    perceptual_layer: str | None = None
    perceptual_kind: str | None = None
    perceptual_sha256: str | None = None


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """torchvision's VGG16 with random weights, saved as users save state dicts -> (path, the network)."""
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(vgg.state_dict(), path)
    yield path, vgg
    path.unlink()  # 528 MB: gone with the module, not at the end of the session


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    write_images(root / "data" / "red", 6, sizes=((32, 32),), seed=1, tint=(220, 30, 30))
    write_images(root / "data" / "blue", 6, sizes=((32, 32),), seed=2, tint=(30, 30, 220))
    summary = train_classifier(root / "data", root / "clf.safetensors", steps=30, batch_size=8, width=8)
    return root / "clf.safetensors", summary


def test_vgg16_state_dict_loads_as_torchvision_computes_it(vgg16_file):
    path, vgg = vgg16_file
    net, kind, sha = load_perceptual(path)
    assert (kind, net.layer, sha) == ("vgg16", "relu3_3", store.sha256(path))
    x = images()
    with torch.no_grad():  # relu3_3 is torchvision's features[:16], on ImageNet-normalised [0, 1] input
        assert torch.equal(net(x), vgg.features[:16](imagenet_input(x)))
    net2, _, _ = load_perceptual(path, "relu2_2")
    assert net2(x).shape == (2, 128, 16, 16)


def test_vgg19_is_told_apart_and_layers_are_named_as_in_the_paper(tmp_path):
    torch.manual_seed(1)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])  # torchvision's VGG19 layout
    path = tmp_path / "vgg19_features.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    net, kind, _ = load_perceptual(path, "relu4_4")
    assert kind == "vgg19"
    x = images()
    with torch.no_grad():
        assert torch.equal(net(x), features[:27](imagenet_input(x)))


def test_fid_inception_weights_give_mid_level_features(tmp_path):
    torch.manual_seed(2)
    inc = FIDInceptionV3().eval()
    path = tmp_path / "inception.pth"
    torch.save(inc.weights_state_dict(), path)
    net, kind, _ = load_perceptual(path)
    assert (kind, net.layer) == ("inception", "Mixed_5d")
    x = images()
    with torch.no_grad():
        y = x
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d"):
            y = getattr(inc, name)(y)
        assert torch.allclose(net(x), y)  # the FID network takes [-1, 1] input as it is
    assert y.shape[1] == 288


def test_classifier_trains_saves_and_is_recognised(classifier_file):
    path, summary = classifier_file
    assert is_classifier_file(path) and summary["classes"] == ["blue", "red"] and summary["images"] == 12
    assert summary["train_accuracy"] >= 0.9  # two strongly tinted classes
    clf, meta = load_classifier(path)
    assert meta["classes"] == ["blue", "red"] and meta["image_size"] == 32
    assert meta["training"]["steps"] == 30
    net, kind, sha = load_perceptual(path)
    assert (kind, net.layer, sha) == ("classifier", "block3", store.sha256(path))
    assert net(images()).shape == (2, 32, 4, 4)
    assert load_perceptual(path, "block1")[0](images()).shape == (2, 8, 16, 16)


@pytest.mark.parametrize("which", ["vgg16", "classifier"])
def test_loss_is_zero_for_identical_images_and_leaves_the_network_unchanged(which, vgg16_file, classifier_file):
    path = vgg16_file[0] if which == "vgg16" else classifier_file[0]
    loss_fn = PerceptualLoss(load_perceptual(path)[0])
    before = {k: v.clone() for k, v in loss_fn.state_dict().items()}  # weights and batch-norm statistics
    x = images()
    assert float(loss_fn(x, x)) == 0.0
    # One optimiser step of a tiny generator against the loss: gradients reach the images, not the network.
    gen = torch.nn.Conv2d(3, 3, 3, padding=1)
    opt = torch.optim.Adam([*gen.parameters(), *loss_fn.parameters()], lr=0.1)
    loss_fn.train()  # stays in eval mode: batch-norm statistics must not follow the generator's images
    loss = loss_fn(torch.tanh(gen(x)), x)
    assert float(loss.detach()) > 0
    loss.backward()
    opt.step()
    assert all(p.grad is None and not p.requires_grad for p in loss_fn.parameters())
    assert gen.weight.grad.abs().sum() > 0
    after = loss_fn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not loss_fn.training and not loss_fn.net.training


def test_unusable_files_are_one_clear_error(tmp_path, vgg16_file):
    with pytest.raises(ImxlateError, match="does not exist"):
        load_perceptual(tmp_path / "missing.pth")
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(ImxlateError, match="neither an imxlate classifier nor a readable torch weights file"):
        load_perceptual(tmp_path / "notes.txt")
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ImxlateError, match="unknown network"):
        load_perceptual(tmp_path / "other.pth")
    torch.save(torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=True).state_dict(),
               tmp_path / "vgg16_bn.pth")
    with pytest.raises(ImxlateError, match="unknown network"):
        load_perceptual(tmp_path / "vgg16_bn.pth")
    with pytest.raises(ImxlateError, match="relu3_3"):
        load_perceptual(vgg16_file[0], "relu9_9")


def test_family_options_are_checked_recorded_and_verified(tmp_path, classifier_file):
    path = classifier_file[0]
    with pytest.raises(ImxlateError, match="needs --perceptual-net"):
        record_perceptual(Options(perceptual_weight=1.0))
    with pytest.raises(ImxlateError, match="--perceptual-weight is 0"):
        record_perceptual(Options(perceptual_net=str(path)))
    off = Options()
    record_perceptual(off)
    assert off == Options() and perceptual_from_config(off) is None

    opts = Options(perceptual_weight=1.0, perceptual_net=str(path))
    record_perceptual(opts)
    assert (opts.perceptual_kind, opts.perceptual_layer, opts.perceptual_sha256) == (
        "classifier", "block3", store.sha256(path))
    assert isinstance(perceptual_from_config(opts), PerceptualLoss)
    changed = Options(**{**opts.__dict__, "perceptual_sha256": "0" * 64})
    with pytest.raises(ImxlateError, match="changed since the run began"):
        perceptual_from_config(changed)
