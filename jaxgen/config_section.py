"""A frozen dataclass filled from one config section, with one-line errors for bad keys."""

from __future__ import annotations

import dataclasses

from jaxgen.errors import UserError

_CONVERTERS = {"str": str, "int": int, "float": float}


def section_values(cls, cfg, section: str) -> dict:
    """The fields of dataclass ``cls`` (annotated ``str``, ``int`` or ``float``) present in
    ``cfg`` (a ConfigDict or dict), converted to their types.

    A key that is not a field, or a value that does not convert, is a
    :class:`~jaxgen.errors.UserError` naming ``config key <section>.<key>``.
    """
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = set(cfg.keys()) - set(fields)
    if unknown:
        raise UserError(
            f"config key {section}.{sorted(unknown)[0]}: unknown; expected one of {sorted(fields)}"
        )
    values = {}
    for name, kind in fields.items():
        if name in cfg:
            try:
                values[name] = _CONVERTERS[kind](cfg[name])
            except (TypeError, ValueError):
                raise UserError(
                    f"config key {section}.{name}={cfg[name]!r}: expected {kind}"
                ) from None
    return values
