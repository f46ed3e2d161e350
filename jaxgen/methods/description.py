"""What the comparison tables say about a run's family, read from its saved config alone.

A family's ``describe(config)`` (:meth:`jaxgen.methods.base.Method.describe`, or a runner
module's ``describe``) returns a :class:`FamilyDescription`; ``experiments/tables.py`` prints
it without building or loading a model. ``config`` is the run's ``config.json`` as a plain
dict (tuples are lists there) or a ConfigDict. Standard library only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxgen.dotted import MISSING, lookup


@dataclasses.dataclass(frozen=True)
class FamilyDescription:
    """Text cells of one run; None is a missing cell (``—``).

    Attributes:
      architecture: the network, e.g. ``conv VAE (32, 64), latent 32``.
      training: the family's objective and switches, e.g. ``ELBO, beta=1.0``; the tables
        append what every family shares (``cond=...``, ``fine-tuned from ...``).
      sampler: ``sample.sampler``, with ``temperature T`` and ``top-k K`` appended where the
        config draws at a temperature other than 1 or truncates to the ``K`` likeliest values.
      sampler_steps: ``sample.steps`` as text, ``default`` when a sampler is named without
        steps.
      likelihood_bound: how ``bits_per_dim`` is obtained (``exact``, ``IWAE, k=64``, ...);
        shown only for runs that report ``bits_per_dim``.
      is_generator: whether the family draws images (the domains table lists generators only).
    """

    architecture: str | None = None
    training: str | None = None
    sampler: str | None = None
    sampler_steps: str | None = None
    likelihood_bound: str | None = None
    is_generator: bool = True

    def replace(self, **changes: Any) -> FamilyDescription:
        """A copy with ``changes`` (field name -> value)."""
        return dataclasses.replace(self, **changes)


def config_value(config: Any, dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``"a.b"`` in a dict or ConfigDict, or ``default`` when absent."""
    value = lookup(config, dotted)
    return default if value is MISSING else value


def tuple_text(value: Any) -> str:
    """``[32, 64]`` or ``(32, 64)`` -> ``"(32, 64)"``; anything else as ``str``."""
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def generic_architecture(config: Any) -> str | None:
    """The first of ``model.arch``, ``model.variant``, ``model.network``, ``model.name`` set."""
    model = config_value(config, "model", {}) or {}
    for key in ("arch", "variant", "network", "name"):
        if model.get(key):
            return str(model[key])
    return None


def describe_config(config: Any, is_generator: bool = True) -> FamilyDescription:
    """The description any family gets: the generic architecture, the configured sampler and
    its steps, no training text and no likelihood bound."""
    sampler = config_value(config, "sample.sampler")
    steps = config_value(config, "sample.steps")
    temperature = config_value(config, "sample.temperature", 1.0)
    top_k = config_value(config, "sample.top_k", 0)
    if sampler not in (None, "") and temperature != 1:
        sampler = f"{sampler}, temperature {temperature:g}"
    if sampler not in (None, "") and top_k:
        sampler = f"{sampler}, top-k {top_k}"
    return FamilyDescription(
        architecture=generic_architecture(config),
        sampler=None if sampler in (None, "") else sampler,
        sampler_steps=str(steps) if steps else ("default" if sampler else None),
        is_generator=is_generator,
    )
