"""The registry of model families (a name on the command line -> the class in its own file), and building a
family from what a model file or checkpoint records."""
from __future__ import annotations

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


def load_model(path, device="cpu", verify: bool = True):
    """Rebuild a family from a model file alone (the file is read and checked by `store.read_model`);
    networks in eval mode, float32, on `device`. With `verify` (the default) a file that records a digest
    must match it; NaN or infinite weights are always refused."""
    from .. import store

    tensors, meta = store.read_model(path, verify)
    try:
        family = build_family(meta["family"], meta["config"], meta["domains"], meta.get("image_size"),
                              meta.get("classes"))
    except ImxlateError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
        raise ImxlateError(f"{path}: the architecture its metadata records cannot be built ({e}); the file was "
                           "damaged or edited, or comes from another imxlate: use an intact copy") from None
    for name in family.keep:
        prefix = f"{name}."
        sd = {k[len(prefix):]: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            family.nets[name].load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ImxlateError(f"{path}: weights of {name} do not fit its recorded architecture "
                               f"({str(e).splitlines()[0]})") from None
    family.meta = meta
    family.to(device)
    family.eval()
    return family
