"""Config overrides (``--config.<key>=<value>``): the one path from a key and a value to a config.

The launcher's command line (:mod:`jaxgen.cli`), the sweep (its config check and the config of
a sampling-only run) and the benchmarks' ``--set key=value`` all apply overrides here, through
ml_collections' config flags: a value given as text is parsed by the type of the value it
replaces (``int``, ``float``, ``bool`` as ``true``/``false``/``1``/``0``, a tuple as
``(a, b)``, ``str`` as is); a Python value is first written as the text a command line would
carry (:func:`override_text`). Every problem is a one-line UserError:

  unknown config key 'train.bogus' (--config.train.bogus)
  config key train.num_steps='many': invalid literal for int() with base 10: 'many'

Only the standard library is imported at module level (``launch.py`` imports this early).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from jaxgen.dotted import MISSING, lookup
from jaxgen.errors import UserError

# An override word as ml_collections recognises it: --config.<key>[=<value>], also with one
# dash, and --noconfig.<key> (a boolean set to false).
_OVERRIDE = re.compile(r"^-{1,2}(?:no)?config\.([^=]+)(?:=.*)?$", re.DOTALL)
_BAD_VALUE = re.compile(r"flag --config\.([^=]+)=(.*?): (.*)", re.DOTALL)


def one_line(e: BaseException) -> str:
    """``e``'s message on one line (runs of white space become one blank)."""
    return " ".join(str(e).split()) or type(e).__name__


def override_key(word: str) -> str | None:
    """The dotted key of an override word (``--config.train.seed=3`` -> ``train.seed``), or None
    for any other word."""
    match = _OVERRIDE.match(word)
    return match.group(1) if match else None


def override_text(value: Any) -> str:
    """A value as command-line text: ``true``/``false``, ``(a, b)`` (``(a,)`` for one item),
    anything else as ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        items = ", ".join(override_text(v) for v in value)
        return "(" + items + ("," if len(value) == 1 else "") + ")"
    return str(value)


def check_keys(config: Any, keys: Sequence[str]) -> None:
    """UserError naming the first of ``keys`` that ``config`` lacks."""
    for key in keys:
        if lookup(config, key) is MISSING:
            raise UserError(f"unknown config key {key!r} (--config.{key})")


def apply_override_args(config: Any, args: Sequence[str]) -> list[str]:
    """Applies the override words of ``args`` to the ConfigDict ``config``, in place and in
    order, with absl's flag syntax (``--config.k=v``, ``--config.k v``, ``--config.flag`` and
    ``--noconfig.flag`` for a boolean, a repeated flag to build a tuple). Returns the other
    words of ``args``, in order. ``config`` is left unlocked as it was."""
    keys = [k for k in map(override_key, args) if k is not None]
    if not keys:
        return list(args)
    check_keys(config, keys)
    from absl import flags
    from ml_collections import config_flags

    argv = ["overrides", *args]
    values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict(
            "config", config, flag_values=values, sys_argv=argv, lock_config=False
        )
        rest = values(argv, known_only=True)
    except flags.Error as e:
        text = one_line(e)
        bad = _BAD_VALUE.match(text)
        if bad:
            raise UserError(f"config key {bad.group(1)}={bad.group(2)!r}: {bad.group(3)}") from None
        raise UserError(text) from None
    return rest[1:]


def apply_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """``config`` with ``overrides`` (dotted key -> value or text) applied in order.

    ``config`` is a ConfigDict, changed in place and returned, or a plain dict as read from a
    run's ``config.json`` (lists stand for tuples there), for which a new dict is returned.
    """
    args = [f"--config.{key}={override_text(value)}" for key, value in overrides.items()]
    if isinstance(config, dict):
        import ml_collections

        tree = ml_collections.ConfigDict(_tuples(config))
        apply_override_args(tree, args)
        return tree.to_dict()
    apply_override_args(config, args)
    return config


def _tuples(value: Any) -> Any:
    """JSON's lists back to the tuples the config files write."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
