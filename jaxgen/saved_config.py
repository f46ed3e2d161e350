"""A workdir's own config: what ``--mode=sample``/``eval`` and :func:`jaxgen.load` run with
when no ``--config`` is given.

The config is the one the checkpoints were last trained with (the newest training launch of
``launches.jsonl``, else ``config.json``, else the one saved with the newest checkpoint),
rebuilt as a ConfigDict. JSON keeps no tuples, so every list becomes a tuple again, as the
config files write them.
"""

from __future__ import annotations

import ml_collections

from jaxgen.errors import UserError
from jaxgen.workdir import CONFIG_FILE, trained_config


def _tuples(value):
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def workdir_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The config ``workdir``'s checkpoints were trained with; None when it has none."""
    config = trained_config(workdir)
    if config is None:
        return None
    if not config.get("family"):
        raise UserError(f"--workdir={workdir}: {CONFIG_FILE} names no family")
    return ml_collections.ConfigDict(_tuples(config))


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The config ``workdir``'s checkpoints were trained with; UserError when it has none."""
    config = workdir_config(workdir)
    if config is None:
        raise UserError(
            f"--workdir={workdir} has no {CONFIG_FILE} (no run was trained there); "
            "pass --config=configs/<family>.py[:args]"
        )
    return config
