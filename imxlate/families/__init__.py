"""The registry of model families: a name on the command line -> the class in its own file."""
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
