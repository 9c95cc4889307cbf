"""The registry of model families (a name on the command line -> the class in its own file), and building a
family from what a model file or checkpoint records.

A file's metadata is checked against its tensors before any of them loads: the family it describes is built on
the meta device (shapes and dtypes, no memory) and its state dicts are compared with the file's header
(`store.read`), so any family, new ones included, is checked by what building it makes.
"""
from __future__ import annotations

import contextlib
import importlib

from ..errors import ImxlateError

# name -> "module:Class"; a new family is one new file plus one line here.
REGISTRY = {
    "cyclegan": "cyclegan:CycleGAN",
    "discogan": "discogan:DiscoGAN",
    "gan": "discogan:GAN",
    "recongan": "discogan:ReconGAN",
    "stargan": "stargan:StarGAN",
    "shared-latent": "shared_latent:SharedLatent",
    "latent-mapping": "latent_mapping:LatentMapping",
    "cut": "cut:CUT",
    "fastcut": "cut:FastCUT",
    "ugatit": "ugatit:UGATIT",
}


def family_class(name: str):
    """The Family subclass registered under `name`."""
    if name not in REGISTRY:
        raise ImxlateError(f"unknown model family '{name}'; choose from {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def build_family(name: str, config: dict, domains: list[str], image_size: int, classes: dict | None = None):
    """Rebuild a family from what a model file or checkpoint records."""
    from .base import config_from

    cls = family_class(name)
    return cls(config_from(cls.Config, config), domains, image_size, classes)


# Tensors a meta build may create before it stops: 20x a default CycleGAN's. Only a size that store.SIZE_RANGES
# does not bound yet reaches it, and the build then stops at once instead of running for minutes.
MAX_META_TENSORS = 20_000


@contextlib.contextmanager
def on_meta_device(limit: int = MAX_META_TENSORS):
    """Inside the block, networks build on the meta device: shapes and dtypes without memory, and a RuntimeError
    once more than `limit` tensors are made. Steps that only compute values are skipped (meta tensors hold none):
    initialisation, and spectral norm's power iteration at registration (15 rounds of `mv` and `normalize` per
    layer), which torch runs on meta through Python reference kernels: 0.5 s for a U-GAT-IT, against 0.1 s."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    def first(*args, **kwargs):  # in-place fills and normalize: a tensor of the shape they return
        return args[0] if args else next(iter(kwargs.values()))

    skipped = {torch.Tensor.normal_: first, torch.Tensor.uniform_: first, F.normalize: first,
               torch.mv: lambda matrix, vector, **kwargs: matrix.new_empty(matrix.shape[:1])}

    class Skeleton(TorchFunctionMode):
        made = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if getattr(func, "__module__", None) == "torch.nn.init":
                return first(*args, **kwargs)
            if func in skipped:
                return skipped[func](*args, **kwargs)
            if func is torch.empty:
                self.made += 1
                if self.made > limit:
                    raise RuntimeError(f"more than {limit:,} tensors")
            return func(*args, **kwargs)

    with torch.device("meta"), Skeleton():
        yield


def described_family(path, family: str, config: dict, domains: list[str], image_size: int, classes: dict | None,
                     fields: tuple[str, str, str] = ("family", "config", "domains")):
    """The family a file's metadata describes, built on the meta device once its family name, domain count and
    config values are checked; `fields` name the metadata fields of the family, config and domains in messages."""
    from .. import store

    if family not in REGISTRY:
        raise store.lie(path, fields[0], f"is '{family}', not a family of this imxlate ({', '.join(REGISTRY)})")
    cls = family_class(family)
    if cls.two_domains and len(domains) != 2:
        raise store.lie(path, fields[2], f"names {len(domains)} domains; a {family} model translates between two")
    store.check_fields(config, cls.Config, fields[1], path)
    try:
        with on_meta_device():
            return build_family(family, config, domains, image_size, classes)
    except (ImxlateError, TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
        raise store.lie(path, fields[1], f"describes networks that cannot be built ({e})") from None


def model_tensors(path, meta: dict, specs: dict) -> dict:
    """`store.read`'s expectation of a model file: the tensors of the kept networks of the family it describes."""
    from .. import store

    family = described_family(path, meta["family"], meta["config"], meta["domains"], meta["image_size"],
                              meta.get("classes"))
    return store.specs_of({f"{n}.{k}": v for n in family.keep for k, v in family.nets[n].state_dict().items()})


def checkpoint_tensors(path, meta: dict, specs: dict) -> dict:
    """`store.read`'s expectation of a checkpoint (its state checked by `store.check_state`): the tensors of every
    network of the family it trains, built as resuming builds it, and of the moving average of the kept ones."""
    from .. import store
    from ..config import TrainConfig

    state = store.unpack(meta["state"], specs)
    train = state["train_config"]
    store.check_fields(train, TrainConfig, "state.train_config", path)
    if train.get("domains", state["domains"]) != state["domains"] or train.get("crop_size") != state["image_size"]:
        raise store.lie(path, "state.train_config", "names other domains or another crop size than the state's")
    family = described_family(path, state["family"], state["family_config"], state["domains"], state["image_size"],
                              state.get("classes"), ("state.family", "state.family_config", "state.domains"))
    nets = state["family_state"]["nets"]
    if set(nets) != set(family.nets):
        raise store.lie(path, "state.family_state.nets", f"holds networks {', '.join(sorted(nets))}; a "
                        f"{family.name} of its config has {', '.join(sorted(family.nets))}")
    expected = {}
    for name, net in family.nets.items():
        expected.update(_matched(path, f"state.family_state.nets.{name}", net.state_dict(), nets[name]))
    kept = dict(p for p in [*family.nets.named_parameters(), *family.nets.named_buffers()]
                if p[0].split(".")[0] in family.keep)
    return {**expected, **_matched(path, "state.ema", kept, state.get("ema") or {}, subset=True)}


def _matched(path, field: str, network: dict, saved, subset: bool = False) -> dict:
    """The expected TensorSpecs of a saved table of tensors (TensorSpecs by name) that has the names of `network`'s
    tensors (with `subset`: some of them), under the file's tensor names."""
    from .. import store

    if not isinstance(saved, dict) or not all(isinstance(v, store.TensorSpec) for v in saved.values()):
        raise store.lie(path, field, "is not a table of tensors")
    missing = [] if subset else [k for k in network if k not in saved]
    extra = [k for k in saved if k not in network]
    if missing or extra:
        raise store.lie(path, field, f"lacks {missing[0]}" if missing else f"holds {extra[0]}, which the network lacks")
    return {v.name: store.TensorSpec(v.name, network[k].dtype, tuple(network[k].shape)) for k, v in saved.items()}


def load_model(path, device="cpu", verify: bool = True):
    """Rebuild a family from a model file alone, read and checked by `store.read` against the family its metadata
    describes; networks in eval mode, float32, on `device`. With `verify` (the default) a file that records a
    digest must match it; NaN, infinite or huge weights are always refused."""
    from .. import store

    tensors, meta, _ = store.read(path, (store.MODEL_FORMAT,), model_tensors, verify)
    family = build_family(meta["family"], meta["config"], meta["domains"], meta["image_size"], meta.get("classes"))
    for name in family.keep:
        prefix = f"{name}."
        family.nets[name].load_state_dict({k[len(prefix):]: v.float() if v.is_floating_point() else v
                                           for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
    family.meta = meta
    family.to(device)
    family.eval()
    return family


def load_checkpoint(path) -> dict:
    """A run's checkpoint -> its training state, its networks checked against the family it states before any
    tensor loads (`store.load_checkpoint` with `checkpoint_tensors`): what `imxlate train --resume` reads."""
    from .. import store

    return store.load_checkpoint(path, checkpoint_tensors)


def describe_file(path) -> tuple[dict, str]:
    """(decoded metadata, "intact" or "no digest recorded") of a model file, checkpoint or classifier file, after
    every check that loading it makes: what `imxlate info` shows."""
    from .. import store
    from ..classifier import classifier_tensors

    expects = {store.MODEL_FORMAT: model_tensors, store.CHECKPOINT_FORMAT: checkpoint_tensors,
               store.CLASSIFIER_FORMAT: classifier_tensors}
    return store.inspect(path, expects, store.FORMATS)
