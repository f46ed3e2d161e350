"""Registry of model families: ``config.family`` -> :class:`Method` subclass.

Families register lazily so that importing one does not import them all.
"""

from __future__ import annotations

import importlib

from jaxgen.errors import UserError
from jaxgen.methods.base import Method
from jaxgen.methods.description import FamilyDescription, config_value

_FAMILIES = {
    "vae": "jaxgen.methods.vae:VAE",
    "ddpm": "jaxgen.methods.diffusion:Diffusion",
    "flow": "jaxgen.methods.flow:FlowMatching",
    "gan": "jaxgen.methods.gan:GAN",
    "pixelcnn": "jaxgen.methods.pixelcnn:PixelCNN",
    "classifier": "jaxgen.methods.classifier:Classifier",
    "clip": "jaxgen.methods.clip:CLIP",
    "image_tokenizer": "jaxgen.methods.tokenizer:ImageTokenizer",
    "token_prior": "jaxgen.methods.token_prior:TokenPrior",
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
    """The :class:`Method` subclass of family ``name`` (``config.family``).

    ``name`` is a family of this registry (``vae``, ``ddpm``, ...) or a class named by its
    import path, ``"package.module:Class"`` (e.g. ``"tests.toy_family:ToyMethod"``), imported
    from ``sys.path`` (``launch.py`` puts the repository root there). A family defined that
    way needs its file and a config naming it, and no entry here. A name that is neither,
    a module that cannot be imported, or an attribute that is not a Method subclass is a
    UserError.
    """
    if name in _FAMILIES:
        return _load(_FAMILIES[name])
    if ":" not in name:
        raise UserError(
            f"config key family={name!r}: expected one of {sorted(_FAMILIES) + sorted(_RUNNERS)}"
        )
    module, _, attr = name.partition(":")
    try:
        imported = importlib.import_module(module)
    except UserError:
        raise
    except Exception as e:  # a missing or broken module: one line naming it
        text = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"config key family={name!r}: cannot import {module}: {text}") from None
    target = getattr(imported, attr, None)
    if target is None:
        raise UserError(f"config key family={name!r}: module {module} has no {attr!r}")
    if not (isinstance(target, type) and issubclass(target, Method)):
        raise UserError(f"config key family={name!r}: {attr} is not a jaxgen Method subclass")
    return target


def describe_family(config) -> FamilyDescription:
    """The comparison-table cells of a run from its saved config (dict or ConfigDict): the
    ``describe(config)`` of its family's class, or of its runner's module. UserError as
    :func:`get_method_class` for a family it cannot find."""
    name = str(config_value(config, "family", ""))
    if name in _RUNNERS:
        module = _RUNNERS[name].partition(":")[0]
        return importlib.import_module(module).describe(config)
    return get_method_class(name).describe(config)


def get_runner(name: str):
    """The ``run(config, workdir, mode)`` of a family with its own loop, or None."""
    return _load(_RUNNERS[name]) if name in _RUNNERS else None
