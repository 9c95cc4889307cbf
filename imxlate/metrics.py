"""Evaluation metrics: FID, KID and IS with the FID Inception network, in float64 and without scipy.

Typical use::

    inception = load_inception()                      # finds and checks the standard weights
    result = score("real/", "fake/", inception=inception)   # JSON-able dict, see `score`
    print(format_scores(result))

Weights are never downloaded unless asked (`download=True`); a file that is not the standard one
loads only with `allow_unverified=True`, and every score from it says `comparable: False`.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .data import list_images, load_rgb
from .device import pick_device
from .errors import ImxlateError
from .nets.inception import FEATURE_DIM, FIDInceptionV3

WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth")
# pytorch-fid's and torch-fidelity's names for the same file (the hub cache names them by hash prefix).
WEIGHTS_NAMES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
WEIGHTS_SIZE = 95_628_359
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_ENV = "IMXLATE_INCEPTION_WEIGHTS"
METRICS = ("fid", "kid", "is")
INPUT_SIZE = 299


# ---------------------------------------------------------------- weights

@dataclass(frozen=True)
class WeightsInfo:
    """Where the Inception weights came from and whether they are the standard file."""

    path: Path
    sha256: str
    verified: bool


def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint folder: $TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_inception_weights(path: str | Path | None = None, *, download: bool = False) -> Path:
    """The weights file: `path`, else $IMXLATE_INCEPTION_WEIGHTS, else the torch hub cache, else a download if asked."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ImxlateError(f"Inception weights file {p} does not exist")
        return p
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise ImxlateError(f"${WEIGHTS_ENV} is {p}, which is not a file: fix or unset it")
        return p
    cache = hub_checkpoint_dir()
    for name in WEIGHTS_NAMES:
        if (cache / name).is_file():
            return cache / name
    if download:
        return _download_weights(cache / WEIGHTS_NAMES[0])
    raise ImxlateError(
        f"FID, KID and IS need the Inception weights file {WEIGHTS_NAMES[0]} ({WEIGHTS_SIZE:,} bytes) and found "
        f"none: add --download to fetch it, or get it from {WEIGHTS_URL} and pass its path (--inception-weights "
        f"PATH), set ${WEIGHTS_ENV} to it, or put it in {cache}/")


def _download_weights(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(WEIGHTS_URL, str(dest), hash_prefix=WEIGHTS_SHA256[:8])
    except Exception as e:  # network errors, a wrong hash: the user can fetch the file by hand
        raise ImxlateError(f"downloading {WEIGHTS_URL} failed ({e}); fetch it by hand and save it as {dest}") from e
    return dest


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_weights(path: str | Path) -> WeightsInfo:
    """Size and SHA-256 of a weights file against the standard FID Inception file."""
    path = Path(path)
    sha = file_sha256(path)
    return WeightsInfo(path, sha, path.stat().st_size == WEIGHTS_SIZE and sha == WEIGHTS_SHA256)


def load_inception(path: str | Path | None = None, *, allow_unverified: bool = False, download: bool = False,
                   device: str | torch.device | None = None) -> tuple[FIDInceptionV3, WeightsInfo]:
    """Find, check and strictly load the FID Inception weights -> (network in eval mode on `device`, WeightsInfo)."""
    info = check_weights(find_inception_weights(path, download=download))
    if not info.verified and not allow_unverified:
        raise ImxlateError(
            f"{info.path} is not the standard FID Inception weights file (expected {WEIGHTS_SIZE:,} bytes with "
            f"SHA-256 {WEIGHTS_SHA256[:16]}..., got {info.path.stat().st_size:,} bytes with {info.sha256[:16]}...); "
            f"scores from it are not comparable with published ones. Use the file from {WEIGHTS_URL}, "
            f"or allow unverified weights to use it anyway")
    try:
        state = torch.load(info.path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ImxlateError(f"cannot read {info.path} as a torch weights file ({e})") from e
    if not isinstance(state, dict):
        raise ImxlateError(f"{info.path} holds a {type(state).__name__}, not a state dict of Inception v3 weights")
    net = FIDInceptionV3()
    expected = set(net.weights_state_dict())
    got = {k for k in state if not k.endswith("num_batches_tracked")}
    if got != expected:
        raise ImxlateError(f"{info.path} does not hold FID Inception v3 weights: {len(expected - got)} tensors "
                           f"missing (e.g. {sorted(expected - got)[:2]}), {len(got - expected)} unexpected "
                           f"(e.g. {sorted(got - expected)[:2]})")
    try:
        # A plain dict (no version metadata) lets BatchNorm fill in the batch counters the file lacks.
        net.load_state_dict(dict(state), strict=True)
    except RuntimeError as e:
        raise ImxlateError(f"{info.path}: tensor shapes differ from FID Inception v3 "
                           f"({str(e).splitlines()[-1].strip()})") from e
    net.eval().requires_grad_(False)
    return net.to(device or pick_device()), info


def write_random_inception_weights(path: str | Path, seed: int = 0, batches: int = 2, batch_size: int = 4) -> Path:
    """Write a seeded random FID Inception weights file shaped like the real one, for tests and custom pipelines.

    BatchNorm running statistics are recalibrated on random smooth 299 px images (train mode, cumulative
    averages), so features do not vanish. Scores from it are never comparable; it loads only unverified.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FIDInceptionV3()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over all calibration batches
        net.train()
        with torch.no_grad():
            for _ in range(batches):
                # Smooth colour fields plus mild noise: closer to images than white noise.
                x = F.interpolate(torch.rand(batch_size, 3, 8, 8) * 2 - 1, size=INPUT_SIZE, mode="bilinear")
                net(x + 0.1 * torch.randn_like(x))
    path = Path(path)
    torch.save(net.weights_state_dict(), path)
    return path


# ---------------------------------------------------------------- presets

def _uint8_chw(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def _prepare_pytorch_fid(img: Image.Image) -> torch.Tensor:
    # ToTensor to [0,1], bilinear without antialias (half-pixel centres), then to [-1,1].
    x = _uint8_chw(img).float().div(255)[None]
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=False)
    return (2 * x - 1)[0]


def _tf1_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF 1.x resize_bilinear (align_corners=False, no half-pixel centres) of (C,H,W) float32."""
    def taps(n_in: int):
        src = torch.arange(size, dtype=torch.float32) * torch.tensor(n_in / size, dtype=torch.float32)  # dst * in/out
        lo = src.floor().long()
        return lo, (lo + 1).clamp(max=n_in - 1), src - lo
    y0, y1, wy = taps(x.shape[1])
    x = x[:, y0] + (x[:, y1] - x[:, y0]) * wy[:, None]
    x0, x1, wx = taps(x.shape[2])
    return x[:, :, x0] + (x[:, :, x1] - x[:, :, x0]) * wx


def _prepare_torch_fidelity(img: Image.Image) -> torch.Tensor:
    return (_tf1_bilinear(_uint8_chw(img).float(), INPUT_SIZE) - 128) / 128


def _prepare_clean(img: Image.Image) -> torch.Tensor:
    # clean-fid: each channel as a float32 PIL image, antialiased bicubic resize, clipped to [0,255].
    a = np.asarray(img, dtype=np.uint8)
    chans = [np.asarray(Image.fromarray(a[..., c].astype(np.float32)).resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC))
             for c in range(3)]
    return (torch.from_numpy(np.stack(chans).clip(0, 255)) - 128) / 128


@dataclass(frozen=True)
class Preset:
    """How images become Inception inputs: one RGB PIL image -> float32 (3,299,299) in about [-1,1]."""

    name: str
    description: str
    prepare: Callable[[Image.Image], torch.Tensor]


PRESETS = {p.name: p for p in (
    Preset("pytorch-fid", "pytorch-fid protocol (published CycleGAN/CUT numbers): uint8 -> [0,1], "
           "bilinear resize to 299 without antialias, 2x-1", _prepare_pytorch_fid),
    Preset("torch-fidelity", "torch-fidelity protocol: uint8, TF1 bilinear resize to 299, (x-128)/128",
           _prepare_torch_fidelity),
    Preset("clean", "clean-fid protocol: PIL bicubic (antialiased) resize of float images to 299, (x-128)/128",
           _prepare_clean),
)}


def get_preset(name: str) -> Preset:
    """The preset called `name`; an unknown name is an ImxlateError listing the choices."""
    if name not in PRESETS:
        raise ImxlateError(f"unknown metrics preset '{name}': choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ---------------------------------------------------------------- feature extraction

@dataclass
class Stats:
    """Mean and covariance of Inception features, with their provenance (weights_sha256 None: unknown)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None
    preset: str
    weights_sha256: str | None
    weights_verified: bool

    @property
    def dims(self) -> int:
        return len(self.mu)


@dataclass
class Features:
    """Inception features of n images (float64 [n,2048]) and fc logits without bias (float64 [n,1008], for IS)."""

    feats: np.ndarray
    logits: np.ndarray
    preset: str
    weights: WeightsInfo

    @property
    def n(self) -> int:
        return len(self.feats)

    def stats(self) -> Stats:
        """Mean and unbiased covariance in float64."""
        mu, a = _centre(self.feats)
        return Stats(mu, a.T @ a / (self.n - 1), self.n, self.preset, self.weights.sha256, self.weights.verified)


ImageSource = str | Path | Sequence[str | Path] | Sequence[Image.Image]


class _Images(torch.utils.data.Dataset):
    """Image paths or in-memory PIL images -> (Inception input, "") or (zeros, why the file failed to decode).

    Errors come back as text so that a DataLoader worker's failure reaches the user as one clear line.
    """

    def __init__(self, items: list, prepare: Callable[[Image.Image], torch.Tensor]):
        self.items, self.prepare = items, prepare

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        item = self.items[i]
        if isinstance(item, Image.Image):
            return self.prepare(item.convert("RGB")), ""
        try:
            img = load_rgb(item)
        except Exception as e:  # a corrupt file changes n silently if skipped, so stop and name it
            return torch.zeros(3, INPUT_SIZE, INPUT_SIZE), f"cannot decode {item} ({e}): fix or remove it"
        return self.prepare(img), ""


def _items(source: ImageSource) -> list:
    if isinstance(source, (str, Path)):
        items = list_images(source)
        if not items:
            raise ImxlateError(f"no images in {source}")
        return items
    items = list(source)
    if not items:
        raise ImxlateError("no images to score")
    return items


@contextmanager
def _exact_fp32():
    """TF32 off during extraction (it moves FID in the third digit on Ampere+ GPUs); restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _progress_bar(enabled: bool) -> Progress:
    # stderr, so a JSON result on stdout stays clean.
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled)


def extract(source: ImageSource, net: FIDInceptionV3, weights: WeightsInfo, preset: str = "pytorch-fid", *,
            batch_size: int = 50, workers: int = 0, progress: bool = True,
            label: str = "Inception features") -> Features:
    """Inception features of a folder (recursive), a list of image paths or a list of PIL images, on net's device.

    Any mix of sizes and modes is fine (decoded with `load_rgb`). `workers` DataLoader processes decode files
    (ignored for in-memory images); `progress` shows a rich progress bar on stderr.
    """
    items = _items(source)
    loader = torch.utils.data.DataLoader(
        _Images(items, get_preset(preset).prepare), batch_size=batch_size,
        num_workers=0 if isinstance(items[0], Image.Image) else workers)
    device = next(net.parameters()).device
    feats = np.empty((len(items), FEATURE_DIM), dtype=np.float64)
    net.eval()
    with _exact_fp32(), torch.inference_mode(), _progress_bar(progress) as bar:
        task = bar.add_task(label, total=len(items))
        done = 0
        for batch, errors in loader:
            if any(errors):
                raise ImxlateError(next(e for e in errors if e))
            feats[done:done + len(batch)] = net.features(batch.to(device)).double().cpu().numpy()
            done += len(batch)
            bar.advance(task, len(batch))
    # IS uses the fc logits without the bias, as the original IS code on the TF graph does.
    logits = feats @ net.fc.weight.detach().double().cpu().numpy().T
    return Features(feats, logits, preset, weights)


# ---------------------------------------------------------------- statistics files

def save_stats(path: str | Path, data: Features | Stats) -> Path:
    """Save mean/covariance as .npz readable by pytorch-fid (`mu`, `sigma`) plus preset, dims, n and weights hash."""
    stats = data.stats() if isinstance(data, Features) else data
    path = Path(path)
    with open(path, "wb") as f:  # a file object keeps numpy from appending .npz to other names
        np.savez(f, mu=stats.mu, sigma=stats.sigma, preset=np.str_(stats.preset), dims=stats.dims,
                 n=-1 if stats.n is None else stats.n, weights_sha256=np.str_(stats.weights_sha256 or ""),
                 weights_verified=stats.weights_verified)
    return path


def load_stats(path: str | Path) -> Stats:
    """Read a statistics .npz (ours, or pytorch-fid's with only `mu`/`sigma`: taken as preset pytorch-fid)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise ImxlateError(f"cannot read statistics file {path} ({e})") from e
    if "mu" not in data or "sigma" not in data:
        raise ImxlateError(f"{path} has no 'mu' and 'sigma' arrays: it is not an FID statistics file")
    mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ImxlateError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not a mean and its covariance")
    if "preset" not in data:  # pytorch-fid's own files: its protocol, standard weights, no n
        return Stats(mu, sigma, None, "pytorch-fid", None, True)
    n = int(data["n"])
    return Stats(mu, sigma, None if n < 0 else n, str(data["preset"]), str(data["weights_sha256"]) or None,
                 bool(data["weights_verified"]))


# ---------------------------------------------------------------- distances and scores

def _centre(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = f.mean(axis=0)
    return mu, f - mu


def _as_features(f, name: str) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ImxlateError(f"{name}: need an [n, dims] array of features with n >= 2, got shape {f.shape}")
    return f


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr sqrt(S1 S2) for symmetric PSD S1, S2, by symmetric eigen-decompositions.

    With S1 = L L^T (L = V sqrt(W) from eigh), S1 S2 = L (L^T S2) has the eigenvalues of the symmetric
    PSD L^T S2 L, so the trace is the sum of their square roots; round-off negatives are clipped to 0.
    """
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    lo = v * np.sqrt(np.clip(w, 0, None))
    m = lo.T @ s2 @ lo
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1-mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)) in float64; tiny negative results are returned as they are."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ImxlateError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_product(s1, s2))


def fid_from_features(f1, f2, method: str = "auto") -> float:
    """Fréchet distance between two feature sets [n1,d], [n2,d]; `method` auto|nuclear|eigh.

    nuclear (auto when min(n1,n2) < d): with centred A, B, tr sqrt(S1 S2) = ||A B^T||_* / sqrt((n1-1)(n2-1)),
    an SVD of an n1 x n2 matrix instead of d x d eigen-decompositions. eigh: `frechet_distance` on covariances.
    """
    f1, f2 = _as_features(f1, "first set"), _as_features(f2, "second set")
    if f1.shape[1] != f2.shape[1]:
        raise ImxlateError(f"feature sizes differ: {f1.shape[1]} vs {f2.shape[1]}")
    (mu1, a), (mu2, b) = _centre(f1), _centre(f2)
    c1, c2 = len(f1) - 1, len(f2) - 1
    if method == "auto":
        method = "nuclear" if min(len(f1), len(f2)) < f1.shape[1] else "eigh"
    if method == "eigh":
        return frechet_distance(mu1, a.T @ a / c1, mu2, b.T @ b / c2)
    if method != "nuclear":
        raise ValueError(f"method must be auto, nuclear or eigh, not {method!r}")
    d = mu1 - mu2
    tr_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(c1 * c2)
    return float(d @ d + (a * a).sum() / c1 + (b * b).sum() / c2 - 2 * tr_sqrt)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3  # KID's cubic kernel: gamma = 1/d, coef0 = 1


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m = len(x)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    off_diag = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(off_diag - 2 * kxy.mean())


def kid(f1, f2, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float, int]:
    """Kernel Inception Distance -> (mean, std, subset size used) of the unbiased MMD^2 over random subsets.

    Each subset draws `rng.choice(n1, m, replace=False)` then `rng.choice(n2, m, replace=False)` with
    `rng = np.random.default_rng(seed)` and m = min(subset_size, n1, n2); a smaller m is warned about.
    """
    f1, f2 = _as_features(f1, "first set"), _as_features(f2, "second set")
    m = min(subset_size, len(f1), len(f2))
    if m < subset_size:
        warnings.warn(f"KID subsets shrink from {subset_size} to {m} images (fewer images than that): "
                      f"noisier, and not comparable with KIDs on {subset_size}-image subsets", stacklevel=2)
    rng = np.random.default_rng(seed)
    vals = np.array([_mmd2_unbiased(f1[rng.choice(len(f1), m, replace=False)],
                                    f2[rng.choice(len(f2), m, replace=False)]) for _ in range(subsets)])
    return float(vals.mean()), float(vals.std()), m


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """Inception Score -> (mean, std) over `splits` consecutive equal parts (remainder left out, as in the original)."""
    logits = np.asarray(logits, dtype=np.float64)
    part = len(logits) // splits
    if part < 1:
        raise ImxlateError(f"the Inception Score needs at least {splits} images ({splits} splits), got {len(logits)}")
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    scores = []
    for k in range(splits):
        lp = logp[k * part:(k + 1) * part]
        p = np.exp(lp)
        kl = (p * (lp - np.log(p.mean(axis=0)))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------- one call

def _is_stats(source) -> bool:
    return isinstance(source, Stats) or (isinstance(source, (str, Path)) and Path(source).suffix.lower() == ".npz")


def _side(source, name: str, preset: str, inception, opts: dict) -> Features | Stats:
    """A score side as Features (images) or Stats (an .npz), checked against the preset."""
    if isinstance(source, (Features, Stats)):
        data = source
    elif _is_stats(source):
        data = load_stats(source)
    else:
        data = extract(source, *inception, preset, label=f"Inception features ({name})", **opts)
    if data.preset != preset:
        raise ImxlateError(f"the {name} side was computed with preset '{data.preset}' but this score uses "
                           f"'{preset}': recompute it, or score with preset '{data.preset}'")
    return data


def _provenance(real_d, fake_d, notes: list[str]) -> dict:
    """The Inception weights both sides were computed with -> {weights_sha256, comparable}; refuses two different
    weights, and adds to `notes` what makes the scores not comparable with published ones."""
    sides = [d.weights.sha256 if isinstance(d, Features) else d.weights_sha256 for d in (real_d, fake_d)]
    if None not in sides and sides[0] != sides[1]:
        raise ImxlateError("the two sides were computed with different Inception weights: recompute one of them")
    verified = [d.weights.verified if isinstance(d, Features) else d.weights_verified for d in (real_d, fake_d)]
    if not all(verified):
        notes.append("unverified Inception weights: not comparable with published scores")
    for d, name in ((real_d, "real"), (fake_d, "fake")):
        if isinstance(d, Stats) and d.weights_sha256 is None:
            notes.append(f"{name} statistics carry no provenance; taken as pytorch-fid with the standard weights")
    return {"weights_sha256": next((s for s in sides if s), None), "comparable": all(verified)}


def score(real, fake, *, inception: tuple[FIDInceptionV3, WeightsInfo] | None = None,
          metrics: Sequence[str] = METRICS, preset: str = "pytorch-fid", batch_size: int = 50, workers: int = 0,
          progress: bool = True, kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10,
          seed: int = 0) -> dict:
    """FID, KID and/or IS of `fake` against `real` -> JSON-able dict with preset, n per side, weights and `comparable`.

    Each side is a folder, a list of image paths or PIL images, Features, Stats, or (for FID only) an .npz
    statistics file. `inception` is what `load_inception` returns; None loads the standard weights when
    images need features. IS is computed on the fake side only.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown or not metrics:
        raise ImxlateError(f"unknown metrics {sorted(unknown)}: choose from {', '.join(METRICS)}")
    get_preset(preset)
    if _is_stats(fake) and set(metrics) != {"fid"}:
        raise ImxlateError("KID and IS need the fake images, not a statistics file: give a folder, or score FID only")
    if _is_stats(real) and "kid" in metrics:
        raise ImxlateError("KID needs the real images, not a statistics file: give a folder, or leave KID out")
    if inception is None and not all(_is_stats(s) or isinstance(s, Features) for s in (real, fake)):
        inception = load_inception()
    opts = dict(batch_size=batch_size, workers=workers, progress=progress)
    real_d, fake_d = (_side(s, name, preset, inception, opts) for s, name in ((real, "real"), (fake, "fake")))
    notes = []
    result = {"preset": preset, "preset_description": PRESETS[preset].description,
              "n_real": real_d.n, "n_fake": fake_d.n, "dims": FEATURE_DIM, **_provenance(real_d, fake_d, notes),
              "notes": notes}
    if "fid" in metrics:
        if isinstance(real_d, Features) and isinstance(fake_d, Features):
            result["fid"] = fid_from_features(real_d.feats, fake_d.feats)
        else:
            r, f = (d.stats() if isinstance(d, Features) else d for d in (real_d, fake_d))
            result["fid"] = frechet_distance(r.mu, r.sigma, f.mu, f.sigma)
    if "kid" in metrics:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mean, std, m = kid(real_d.feats, fake_d.feats, kid_subsets, kid_subset_size, seed)
        notes += [str(w.message) for w in caught]
        result.update(kid_mean=mean, kid_std=std, kid_subset_size=m, kid_subsets=kid_subsets)
    if "is" in metrics:
        mean, std = inception_score(fake_d.logits, is_splits)
        result.update(is_mean=mean, is_std=std, is_splits=is_splits)
    return result


def format_scores(result: dict) -> str:
    """Human-readable lines for a `score` result: the metrics, then the preset, sizes and comparability."""
    lines = []
    if "fid" in result:
        lines.append(f"FID {result['fid']:.4f}")
    if "kid_mean" in result:
        lines.append(f"KID {result['kid_mean']:.6f} ± {result['kid_std']:.6f} "
                     f"({result['kid_subsets']} subsets of {result['kid_subset_size']})")
    if "is_mean" in result:
        lines.append(f"IS {result['is_mean']:.4f} ± {result['is_std']:.4f} ({result['is_splits']} splits)")
    sizes = f"n real {result['n_real'] if result['n_real'] is not None else '?'}, n fake {result['n_fake']}"
    lines.append(f"preset {result['preset']} ({result['preset_description']}); {sizes}")
    if not result["comparable"]:
        lines.append("NOT COMPARABLE with published scores")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)
