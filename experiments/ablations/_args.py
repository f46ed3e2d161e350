"""Parsing helpers shared by the sweep files."""

from __future__ import annotations

from jaxgen.errors import UserError


def plus_list(key: str, text: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    """``"a+b+c"`` -> ``["a", "b", "c"]``; each item must be in ``allowed`` when given."""
    items = [t.strip() for t in text.split("+") if t.strip()]
    if not items:
        raise UserError(f"sweep argument {key}={text!r}: expected a '+'-separated list")
    for item in items:
        if allowed is not None and item not in allowed:
            raise UserError(f"sweep argument {key}={item!r}: expected one of {allowed}")
    return items


def plus_numbers(key: str, text: str, kind=float) -> list:
    out = []
    for item in plus_list(key, text):
        try:
            out.append(kind(item))
        except ValueError:
            raise UserError(
                f"sweep argument {key}={item!r}: expected {kind.__name__} values"
            ) from None
    return out


def dir_name(data: str) -> str:
    """A data source name as part of a run name (``tfds:mnist`` -> ``tfds-mnist``)."""
    return data.replace(":", "-").replace("/", "-")
