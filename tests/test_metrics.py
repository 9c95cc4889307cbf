"""FID/KID/IS: the FID Inception network, weights lookup and checks, distances, presets, inputs, statistics files."""
import hashlib
import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from imxlate import metrics as M
from imxlate.data import list_images, load_rgb
from imxlate.errors import ImxlateError
from imxlate.nets import inception as inc


# ---------------------------------------------------------------- helpers

def smooth_image(rng: np.random.Generator, size=(64, 48)) -> Image.Image:
    """A random smooth colour field plus noise, 8-bit RGB, `size` = (w, h)."""
    w, h = size
    coarse = torch.from_numpy(rng.random((1, 3, 6, 6), dtype=np.float32))
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")[0].permute(1, 2, 0).numpy()
    x = np.clip(x * 255 + rng.normal(0, 8, x.shape), 0, 255)
    return Image.fromarray(x.astype(np.uint8), "RGB")


def write_folder(folder, images, ext="png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img.save(folder / f"{i:03d}.{ext}")
    return folder


def fake_features(rng, n, shift=0.0, dims=32, preset="pytorch-fid", sha="ab" * 32, verified=True):
    """Features without the network: correlated, non-negative like Inception pool features."""
    mix = np.linspace(0.5, 1.5, dims)[None] * rng.standard_normal((n, dims)) + shift
    feats = np.maximum(mix @ (np.eye(dims) + 0.1 * rng.standard_normal((dims, dims))), 0)
    return M.Features(feats, rng.standard_normal((n, 10)), preset, M.WeightsInfo(None, sha, verified))


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = M.write_random_inception_weights(tmp_path_factory.mktemp("inception") / "random_inception.pth", seed=0)
    yield path
    path.unlink()  # 92 MB: gone with the module, not at the end of the session


@pytest.fixture(scope="module")
def inception(weights_file):
    return M.load_inception(weights_file, allow_unverified=True, device="cpu")


# ---------------------------------------------------------------- the network

def test_state_dict_matches_torchvision_inception_v3():
    ours = inc.FIDInceptionV3().weights_state_dict()
    ref = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    ref = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(ours) == 472
    assert list(ours) == list(ref)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}
    assert ours["fc.weight"].shape == (1008, 2048)
    assert "Conv2d_1a_3x3.conv.weight" in ours and "Mixed_7c.branch_pool.conv.weight" in ours


def test_tf_pooling_branches():
    net = inc.FIDInceptionV3()
    kinds = {name: type(getattr(net, name)) for name in inc._TRUNK if name.startswith("Mixed")}
    assert [n for n, k in kinds.items() if k is inc.TFInceptionA] == ["Mixed_5b", "Mixed_5c", "Mixed_5d"]
    assert [n for n, k in kinds.items() if k is inc.TFInceptionC] == ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]
    assert [n for n, k in kinds.items() if k is inc.TFInceptionE] == ["Mixed_7b"]
    assert kinds["Mixed_7c"] is inc.TFInceptionEMax
    # TF averages only real pixels: a constant map stays constant at the borders (zero-padded counting would not).
    ones = torch.ones(1, 2, 5, 5)
    for name in ("Mixed_5b", "Mixed_6b", "Mixed_7b"):
        assert torch.equal(getattr(net, name).pool(ones), ones)
    spike = torch.zeros(1, 1, 5, 5)
    spike[0, 0, 2, 2] = 1.0
    assert net.Mixed_7c.pool(spike)[0, 0, 1:4, 1:4].eq(1).all() and net.Mixed_7c.pool(spike).sum() == 9


def test_tf_block_differs_from_torchvision_only_in_pooling_branch():
    # Same weights in torchvision's blocks: outputs differ only through the pooling branches (last channels).
    torch.manual_seed(0)
    ours = inc.TFInceptionA(8, pool_features=4).eval()
    ref = torchvision.models.inception.InceptionA(8, pool_features=4).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 7, 7)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a.shape == b.shape == (2, 64 + 64 + 96 + 4, 7, 7)
    assert torch.allclose(a[:, :-4], b[:, :-4], atol=1e-6)
    assert not torch.allclose(a[:, -4:], b[:, -4:])


# ---------------------------------------------------------------- weights: find -> check -> load

def test_random_weights_load_only_unverified(weights_file, monkeypatch):
    state = torch.load(weights_file, weights_only=True)
    assert isinstance(state, dict) and len(state) == 472  # shaped like the published file
    monkeypatch.setenv(M.WEIGHTS_ENV, str(weights_file))
    with pytest.raises(ImxlateError, match="not the standard FID Inception weights.*allow unverified"):
        M.load_inception()
    net, info = M.load_inception(allow_unverified=True, device="cpu")  # found through the env var
    assert info.path == weights_file and not info.verified
    assert info.sha256 == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    for k, v in net.weights_state_dict().items():
        assert torch.equal(v, state[k]), k


def test_recalibrated_features_do_not_vanish(inception):
    net, info = inception
    rng = np.random.default_rng(1)
    f = M.extract([smooth_image(rng) for _ in range(6)], net, info, progress=False)
    assert f.feats.shape == (6, 2048) and f.logits.shape == (6, 1008)
    assert f.feats.dtype == np.float64 and np.isfinite(f.feats).all()
    assert 0.1 < f.feats.mean() < 100
    assert (f.feats.std(axis=0) > 1e-3).mean() > 0.9  # nearly every dimension varies across images
    assert np.allclose(f.logits, f.feats @ net.fc.weight.double().numpy().T)  # IS logits: fc without bias


def test_weights_lookup_order(weights_file, tmp_path, monkeypatch):
    monkeypatch.delenv(M.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ImxlateError) as e:
        M.find_inception_weights()
    for part in (M.WEIGHTS_URL, M.WEIGHTS_ENV, "--inception-weights", str(tmp_path / "torch" / "hub" / "checkpoints")):
        assert part in str(e.value)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / M.WEIGHTS_NAMES[1]).symlink_to(weights_file)  # torch-fidelity's name
    assert M.find_inception_weights() == cache / M.WEIGHTS_NAMES[1]
    other = tmp_path / "other.pth"
    other.symlink_to(weights_file)
    monkeypatch.setenv(M.WEIGHTS_ENV, str(other))
    assert M.find_inception_weights() == other  # env beats the cache
    assert M.find_inception_weights(weights_file) == weights_file  # an explicit path beats both
    with pytest.raises(ImxlateError, match="does not exist"):
        M.find_inception_weights(tmp_path / "missing.pth")
    monkeypatch.setenv(M.WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(ImxlateError, match=M.WEIGHTS_ENV):
        M.find_inception_weights()


def test_wrong_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ImxlateError, match="cannot read"):
        M.load_inception(junk, allow_unverified=True)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(ImxlateError, match="does not hold FID Inception v3 weights"):
        M.load_inception(other, allow_unverified=True)


# ---------------------------------------------------------------- distances

def random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fd_equal_covariances_is_squared_mean_difference():
    rng = np.random.default_rng(0)
    s, mu1, mu2 = random_spd(rng, 20), rng.standard_normal(20), rng.standard_normal(20)
    assert M.frechet_distance(mu1, s, mu2, s) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-9, abs=1e-9)


def test_fd_diagonal_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.random(30) + 0.01, rng.random(30) + 0.01
    mu1, mu2 = rng.standard_normal(30), rng.standard_normal(30)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n1,n2,d", [(60, 45, 128), (300, 260, 64)])
def test_fd_from_features_paths_symmetry_and_scaling(n1, n2, d):
    rng = np.random.default_rng(2)
    x = np.maximum(rng.standard_normal((n1, d)) @ rng.standard_normal((d, d)), 0)
    y = np.maximum(rng.standard_normal((n2, d)) @ rng.standard_normal((d, d)) + 0.3, 0)
    nuclear, eig = M.fid_from_features(x, y, "nuclear"), M.fid_from_features(x, y, "eigh")
    assert nuclear == pytest.approx(eig, rel=1e-6)
    assert M.fid_from_features(x, y) == (nuclear if min(n1, n2) < d else eig)
    assert M.fid_from_features(y, x) == pytest.approx(nuclear, rel=1e-10)
    assert M.fid_from_features(3 * x, 3 * y) == pytest.approx(9 * nuclear, rel=1e-10)
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(eig, rel=1e-8)


def test_fd_of_a_set_with_itself_is_zero_unclipped():
    x = np.random.default_rng(3).standard_normal((40, 16))
    for method in ("nuclear", "eigh"):
        assert abs(M.fid_from_features(x, x, method)) < 1e-10


def test_fd_agrees_with_scipy_sqrtm_on_full_rank_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(4)
    s1, s2 = random_spd(rng, 50), random_spd(rng, 50)
    mu1, mu2 = rng.standard_normal(50), rng.standard_normal(50)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)


def test_kid_matches_a_direct_computation_on_the_same_subsets():
    rng = np.random.default_rng(5)
    f1, f2 = rng.standard_normal((30, 8)), rng.standard_normal((25, 8)) + 0.5
    mean, std, m = M.kid(f1, f2, subsets=5, subset_size=20, seed=7)
    draw = np.random.default_rng(7)
    vals = []
    for _ in range(5):
        x, y = f1[draw.choice(30, 20, replace=False)], f2[draw.choice(25, 20, replace=False)]
        k = lambda a, b: (np.dot(a, b) / 8 + 1) ** 3  # noqa: E731
        pairs = [(i, j) for i in range(20) for j in range(20)]
        xx = sum(k(x[i], x[j]) for i, j in pairs if i != j) / (20 * 19)
        yy = sum(k(y[i], y[j]) for i, j in pairs if i != j) / (20 * 19)
        xy = sum(k(x[i], y[j]) for i, j in pairs) / 400
        vals.append(xx + yy - 2 * xy)
    assert m == 20
    assert mean == pytest.approx(np.mean(vals), rel=1e-10)
    assert std == pytest.approx(np.std(vals), rel=1e-8)
    assert mean > 0.01  # shifted distributions
    with pytest.warns(UserWarning, match="shrink from 1000 to 25"):
        assert M.kid(f1, f2, subsets=2)[2] == 25


def test_inception_score_known_answers():
    assert M.inception_score(np.zeros((40, 1008)), splits=4) == pytest.approx((1.0, 0.0), abs=1e-12)
    # Confident and spread evenly over 5 classes in every split: IS = 5.
    logits = np.full((50, 1008), -60.0)
    logits[np.arange(50), np.arange(50) % 5] = 60.0
    mean, std = M.inception_score(logits, splits=5)
    assert mean == pytest.approx(5.0, rel=1e-9) and std < 1e-9
    with pytest.raises(ImxlateError, match="at least 10 images"):
        M.inception_score(np.zeros((9, 1008)))


# ---------------------------------------------------------------- presets and inputs

def test_preset_inputs():
    rng = np.random.default_rng(6)
    img = smooth_image(rng, (299, 299))
    x = M.PRESETS["pytorch-fid"].prepare(img)
    assert x.shape == (3, 299, 299) and x.dtype == torch.float32
    u8 = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()
    assert torch.allclose(x, 2 * (u8 / 255) - 1, atol=1e-6)  # 299 in: the resize is the identity
    grey = Image.new("RGB", (50, 70), (128, 128, 128))
    for name in ("torch-fidelity", "clean"):
        y = M.PRESETS[name].prepare(grey)
        assert y.shape == (3, 299, 299) and torch.allclose(y, torch.zeros_like(y), atol=1e-6)  # (128-128)/128
    small = smooth_image(rng, (40, 30))
    outs = [M.PRESETS[n].prepare(small) for n in M.PRESETS]
    assert all(o.abs().max() <= 1.0 + 1e-6 for o in outs)
    assert not torch.allclose(outs[0], outs[1], atol=1e-3) and not torch.allclose(outs[1], outs[2], atol=1e-3)
    with pytest.raises(ImxlateError, match="unknown metrics preset 'tf'.*pytorch-fid"):
        M.get_preset("tf")


def test_tf1_bilinear_samples_at_dst_times_scale():
    # TF1 (no half-pixel centres): source x = dst * in/out; the last samples clamp to the edge.
    row = torch.arange(4, dtype=torch.float32).view(1, 1, 4).expand(1, 2, 4)
    out = M._tf1_bilinear(row, 8)
    assert torch.equal(out[0, 0], torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]))
    assert torch.equal(M._tf1_bilinear(torch.arange(8.0).view(1, 1, 8).expand(1, 8, 8), 4)[0, 0],
                       torch.tensor([0.0, 2, 4, 6]))


def test_folder_with_mixed_sizes_and_modes(inception, tmp_path):
    net, info = inception
    rng = np.random.default_rng(8)
    rgb = smooth_image(rng, (80, 60))
    (tmp_path / "sub").mkdir()
    rgb.convert("L").save(tmp_path / "a_grey.png")
    rgba = smooth_image(rng, (33, 47)).convert("RGBA")
    rgba.putalpha(Image.fromarray((rng.random((47, 33)) * 255).astype(np.uint8)))
    rgba.save(tmp_path / "b_rgba.png")
    rgb.convert("P", palette=Image.ADAPTIVE, colors=16).save(tmp_path / "c_palette.png")
    smooth_image(rng, (120, 90)).save(tmp_path / "sub" / "d.jpg", quality=90)
    (tmp_path / "notes.txt").write_text("not an image")
    folder = M.extract(tmp_path, net, info, workers=2, batch_size=3, progress=False)
    paths = list_images(tmp_path)
    assert folder.n == len(paths) == 4
    from_pil = M.extract([load_rgb(p) for p in paths], net, info, batch_size=4, progress=False)
    assert np.allclose(folder.feats, from_pil.feats, rtol=1e-5, atol=1e-6)
    assert np.isfinite(folder.feats).all() and len({f.tobytes() for f in folder.feats}) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImxlateError, match="no images"):
        M.extract(tmp_path / "empty", net, info)
    (tmp_path / "sub" / "broken.png").write_bytes(b"\x89PNG broken")
    for workers in (0, 2):
        with pytest.raises(ImxlateError, match=r"^cannot decode .*broken.png .*: fix or remove it$"):
            M.extract(tmp_path, net, info, workers=workers, batch_size=8, progress=False)


# ---------------------------------------------------------------- statistics files and score

def test_stats_round_trip_and_preset_mixing(tmp_path):
    rng = np.random.default_rng(9)
    real, fake = fake_features(rng, 50), fake_features(rng, 40, shift=0.2)
    path = M.save_stats(tmp_path / "real_stats.npz", real)
    st = M.load_stats(path)
    ref = real.stats()
    assert np.array_equal(st.mu, ref.mu) and np.array_equal(st.sigma, ref.sigma)
    assert np.allclose(st.sigma, np.cov(real.feats, rowvar=False), rtol=1e-12)
    assert (st.n, st.preset, st.weights_sha256, st.weights_verified) == (50, "pytorch-fid", "ab" * 32, True)
    assert st.dims == 32
    with np.load(path) as z:  # what pytorch-fid reads
        assert z["mu"].shape == (32,) and z["sigma"].shape == (32, 32)
    from_npz = M.score(path, fake, metrics=["fid"])
    assert from_npz["fid"] == pytest.approx(M.fid_from_features(real.feats, fake.feats), rel=1e-8)
    assert from_npz["n_real"] == 50 and from_npz["comparable"]
    with pytest.raises(ImxlateError, match="preset 'pytorch-fid' but this score uses 'clean'"):
        M.score(path, fake_features(rng, 40, preset="clean"), metrics=["fid"], preset="clean")
    with pytest.raises(ImxlateError, match="KID needs the real images"):
        M.score(path, fake, metrics=["fid", "kid"])
    with pytest.raises(ImxlateError, match="KID and IS need the fake images"):
        M.score(fake, path, metrics=["fid", "is"])
    with pytest.raises(ImxlateError, match="different Inception weights"):
        M.score(path, fake_features(rng, 40, sha="cd" * 32), metrics=["fid"])
    foreign = tmp_path / "pytorch_fid_stats.npz"
    np.savez(foreign, mu=ref.mu, sigma=ref.sigma)
    res = M.score(foreign, fake, metrics=["fid"])
    assert res["fid"] == pytest.approx(from_npz["fid"], rel=1e-12) and res["n_real"] is None
    assert any("no provenance" in n for n in res["notes"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=ref.mu)
    with pytest.raises(ImxlateError, match="no 'mu' and 'sigma'"):
        M.load_stats(bad)


def test_score_images_end_to_end(inception):
    rng = np.random.default_rng(10)
    real = [smooth_image(rng) for _ in range(5)]
    fake = [smooth_image(rng, (50, 50)).convert("P", palette=Image.ADAPTIVE, colors=8) for _ in range(4)]
    res = M.score(real, fake, inception=inception, is_splits=2, progress=False)
    json.dumps(res)
    net, info = inception
    fr, ff = (M.extract(s, net, info, progress=False) for s in (real, fake))
    assert res["fid"] == pytest.approx(M.fid_from_features(fr.feats, ff.feats), rel=1e-9)
    assert (res["n_real"], res["n_fake"], res["preset"], res["dims"]) == (5, 4, "pytorch-fid", 2048)
    assert res["weights_sha256"] == info.sha256 and res["comparable"] is False
    assert res["kid_subset_size"] == 4 and any("shrink" in n for n in res["notes"])
    assert res["is_mean"] >= 1.0 and res["fid"] > 0
    text = M.format_scores(res)
    assert "preset pytorch-fid" in text and "NOT COMPARABLE" in text and "FID" in text and "IS" in text


# ---------------------------------------------------------------- against pytorch-fid (optional)

def test_matches_pytorch_fid(weights_file, tmp_path, monkeypatch):
    pytest.importorskip("pytorch_fid")
    from pytorch_fid.fid_score import get_activations
    from pytorch_fid.inception import InceptionV3

    # pytorch-fid loads its weights through torch hub, which uses a file already in the cache.
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / M.WEIGHTS_NAMES[0]).symlink_to(weights_file)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    theirs = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()

    rng = np.random.default_rng(11)
    a = write_folder(tmp_path / "a", [smooth_image(rng, (64, 64)) for _ in range(6)])
    b = write_folder(tmp_path / "b", [smooth_image(rng, (64, 64)) for _ in range(5)])
    act = [get_activations(list_images(f), theirs, batch_size=4, num_workers=0) for f in (a, b)]

    inception = M.load_inception(weights_file, allow_unverified=True, device="cpu")
    ours = [M.extract(f, *inception, progress=False) for f in (a, b)]
    for o, t in zip(ours, act):
        np.testing.assert_allclose(o.feats, t, rtol=1e-5, atol=1e-6 * np.abs(t).max())
    fid = M.score(a, b, inception=inception, metrics=["fid"], progress=False)["fid"]
    # Their activations; the distance is ours (checked on its own above): pytorch-fid's scipy sqrtm takes
    # minutes at 2048-d on 2 cores, and SciPy 1.18 dropped the `disp` argument it passes.
    assert fid == pytest.approx(M.fid_from_features(act[0], act[1]), rel=1e-5)
