"""Registry of model families: ``config.family`` -> :class:`Method` subclass.

Families register lazily so that importing one does not import them all.
"""

from __future__ import annotations

import importlib

from jaxgen.errors import UserError
from jaxgen.methods.base import Method

_FAMILIES = {
    "vae": "jaxgen.methods.vae:VAE",
    "ddpm": "jaxgen.methods.diffusion:Diffusion",
    "gan": "jaxgen.methods.gan:GAN",
    "pixelcnn": "jaxgen.methods.pixelcnn:PixelCNN",
    "classifier": "jaxgen.methods.classifier:Classifier",
    "clip": "jaxgen.text.clip:CLIP",
}

# Families that do not train through the generic loop: ``run(config, workdir, mode)``.
_RUNNERS = {
    "style_transfer": "jaxgen.style_transfer.runner:run",
}


def register(name: str, target: str | type[Method]) -> None:
    """Adds ``name`` -> ``"module:Class"`` (or the class itself) to the registry."""
    _FAMILIES[name] = target


def _load(target):
    if not isinstance(target, str):
        return target
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def get_method_class(name: str) -> type[Method]:
    if name not in _FAMILIES:
        raise UserError(
            f"config key family={name!r}: expected one of {sorted(_FAMILIES) + sorted(_RUNNERS)}"
        )
    return _load(_FAMILIES[name])


def get_runner(name: str):
    """The ``run(config, workdir, mode)`` of a family with its own loop, or None."""
    return _load(_RUNNERS[name]) if name in _RUNNERS else None
