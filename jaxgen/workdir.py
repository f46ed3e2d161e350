"""A run's workdir: which folders may be used, and its launch history.

A workdir is a local folder or an object-store URL (``gs://bucket/folder``,
``s3://bucket/folder``); every file goes through :mod:`jaxgen.paths`.

* :func:`check_workdir` refuses, before anything is written, a path that is a file, ``/``
  or the home directory, a whole bucket (``gs://bucket``), a non-empty folder that is not a
  jaxgen workdir, and the workdir of another family.
* One launch at a time owns a workdir: :mod:`jaxgen.workdir_lock`.
* ``config.json`` is the config of the run's first training launch (written again only by
  a training launch while the workdir has no checkpoint: a launch that failed before its
  first one trained nothing); ``launches.jsonl`` holds one line per launch (time, host, pid,
  mode, the keys it changed, its whole config, and the code and devices it ran with).
  :func:`check_resume_config` compares a relaunch with the config the checkpoints were last
  trained with: the one saved with the newest checkpoint (:mod:`jaxgen.checkpoints`), else,
  for checkpoints from before it was saved, the newest training launch, else
  ``config.json``. Checkpoints with no config anywhere are not resumed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterable

import ml_collections

from jaxgen import paths, provenance
from jaxgen.checkpoints import forget_reported_damage, list_steps, newest_saved_item
from jaxgen.errors import UserError
from jaxgen.workdir_lock import LOCK_FILE

log = logging.getLogger("jaxgen")

CONFIG_FILE = "config.json"
HISTORY_FILE = "launches.jsonl"
# Entries a jaxgen run writes; a non-empty folder holding anything else is not a workdir.
RUN_ENTRIES = frozenset(
    {
        CONFIG_FILE,
        HISTORY_FILE,
        LOCK_FILE,
        "checkpoints",
        "metrics.jsonl",
        "samples",
        "eval",
        "tb",
        "tokenizer.json",
        "data.json",
        "stylized.png",
        "stylized.json",
        "logs",  # experiments/sweep.py: the launches' logs and the run's sweep record
        "sweep.json",
    }
)


# Keys a relaunch may change freely: how long to train and what to log, save, sample and
# evaluate, and memory knobs that leave the computed values as they are.
SAFE_KEYS = (
    "train.num_steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.sample_every",
    "train.eval_every",
    "train.keep_checkpoints",
    "train.async_checkpointing",
    "train.grad_accum_steps",
    "model.remat",
    "data.prefetch",
    "init_from",
    "sample.",
    "evals.",
)


def is_safe_key(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in SAFE_KEYS)


# --- which folders may be used ------------------------------------------------------------
def read_run_config(workdir: str) -> dict | None:
    """The ``config.json`` of ``workdir`` (a local path or URL) as a dict, or None when there
    is none."""
    path = paths.join(workdir, CONFIG_FILE)
    if not paths.exists(path):
        return None
    try:
        config = json.loads(paths.read_text(path))
    except (OSError, ValueError) as e:
        why = f"cannot read {path}: {e}"
        raise UserError(f"--workdir={workdir}: {why}{_way_out(workdir)}") from None
    if not isinstance(config, dict):
        raise UserError(f"--workdir={workdir}: {path} does not hold a config{_way_out(workdir)}")
    return config


def _way_out(workdir: str) -> str:
    """What to do about a damaged ``config.json``, when the checkpoints saved their config."""
    if newest_saved_item(workdir, "config") is None:
        return ""
    return "; move it away to use the config saved with the checkpoints"


def check_workdir(workdir: str, family: str) -> None:
    """Refuses a workdir a run of ``family`` must not write to (see module docstring).

    ``workdir`` is a local path or a ``gs://`` / ``s3://`` URL (as :func:`jaxgen.paths.normalize`
    gives it). A whole bucket is refused like ``/``: a run needs a folder of its own in it.
    """
    if paths.is_remote(workdir):
        real = paths.normalize(workdir)
        if paths.bucket_root(real):
            raise UserError(
                f"--workdir={workdir} is a whole bucket; give each run a folder of its own "
                f"in it, e.g. {real}/run1"
            )
        if paths.is_file(real):
            raise UserError(f"--workdir={workdir} is a file, not a folder")
    else:
        real = os.path.realpath(workdir)
        if real == os.path.sep or real == os.path.realpath(os.path.expanduser("~")):
            raise UserError(f"--workdir={workdir} is {real}; give each run a folder of its own")
        if os.path.exists(real) and not os.path.isdir(real):
            raise UserError(f"--workdir={workdir} is a file, not a folder")
    if not paths.is_dir(real):
        return
    config = read_run_config(real)
    if config is None:
        foreign = sorted(set(paths.listdir(real)) - RUN_ENTRIES)
        if foreign:
            raise UserError(
                f"--workdir={workdir} is not empty and is not a jaxgen workdir (no {CONFIG_FILE}; "
                f"it holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                "use an empty or new folder"
            )
        config = _launched_config(real) or newest_saved_item(real, "config")
        if config is None:
            return
    if config.get("family") != family:
        raise UserError(
            f"--workdir={workdir} holds a {config.get('family')!r} run and this config is "
            f"{family!r}; use another workdir"
        )


# --- one owner ------------------------------------------------------------------------------
# --- config of a relaunch ---------------------------------------------------------------------
def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and tuples compare as lists."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def config_dict(config: ml_collections.ConfigDict) -> dict:
    """The config as the plain JSON types ``config.json`` holds."""
    return json.loads(config.to_json_best_effort())


def read_history(workdir: str) -> list[dict]:
    """The complete lines of ``launches.jsonl`` (a torn or damaged line is skipped)."""
    path = paths.join(workdir, HISTORY_FILE)
    if not paths.exists(path):
        return []
    entries = []
    # Bytes that are not UTF-8 (a damaged disk block) spoil only the lines they are in.
    for line in paths.read_bytes(path).decode("utf-8", errors="replace").split("\n"):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):  # a line of other JSON is no launch
            entries.append(entry)
    return entries


def last_training_launch(workdir: str) -> dict | None:
    """The newest training launch of ``launches.jsonl`` that recorded its config (None:
    none)."""
    for entry in reversed(read_history(workdir)):
        if entry.get("mode") == "train" and isinstance(entry.get("config"), dict):
            return entry
    return None


def _launched_config(workdir: str) -> dict | None:
    """The config of the newest training launch in ``launches.jsonl`` (None: none)."""
    entry = last_training_launch(workdir)
    return None if entry is None else entry["config"]


_WARNED: set[str] = set()  # workdirs warned about by this launch or load


def start_warnings_afresh() -> None:
    """Lets :func:`trained_config` warn again: a launch (or ``jaxgen.load``) reads a workdir's
    config more than once and says each warning once."""
    _WARNED.clear()
    forget_reported_damage()


def trained_config(workdir: str) -> dict | None:
    """The config the checkpoints were last trained with: the one saved with the newest
    checkpoint, else (checkpoints from before it was saved) the newest training launch of
    ``launches.jsonl``, else ``config.json`` (workdirs from before the history).

    The newest training launch can ask for more than its checkpoints hold: it failed before
    its first checkpoint, or ``launches.jsonl`` lost the launch that changed a key. Where it
    differs from the checkpoint's config in a key a relaunch may not change freely, a warning
    names the keys; the checkpoint's config is the one returned.
    """
    saved = newest_saved_item(workdir, "config")
    if saved is None:
        return _launched_config(workdir) or read_run_config(workdir)
    recorded, source = _launched_config(workdir), HISTORY_FILE
    if recorded is None:
        try:
            recorded, source = read_run_config(workdir), CONFIG_FILE
        except UserError:  # a damaged config.json: the checkpoint's config stands alone
            recorded = None
    if recorded is not None and workdir not in _WARNED:
        differ = {k: v for k, v in config_changes(saved, recorded).items() if not is_safe_key(k)}
        if differ:
            _WARNED.add(workdir)
            log.warning(
                "--workdir=%s: its newest checkpoint was trained with other values than %s "
                "records (%s); using the checkpoint's",
                workdir, source,
                "; ".join(f"{k}: {_short(a)} in the checkpoint, {_short(b)} recorded"
                          for k, (a, b) in list(differ.items())[:5]),
            )  # fmt: skip
    return saved


def unrecorded_checkpoints_error(workdir: str, remedy: str) -> UserError:
    """The error for checkpoints whose training config is recorded nowhere (see
    :func:`trained_config`), ending with ``remedy``."""
    steps = list_steps(workdir)
    return UserError(
        f"--workdir={workdir} holds checkpoints (step {steps[-1]} the newest) but no record "
        f"of the config they were trained with ({CONFIG_FILE} and {HISTORY_FILE} are missing "
        f"and the checkpoints predate saving it); {remedy}"
    )


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """``key -> (old, new)`` for every dotted key whose value differs (missing: None)."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if _differ(a.get(k), b.get(k))}


def _differ(a, b) -> bool:
    both_nan = isinstance(a, float) and isinstance(b, float) and a != a and b != b
    return a != b and not both_nan


def check_resume_config(
    workdir: str, config: ml_collections.ConfigDict, allowed: Iterable[str] = ()
) -> dict[str, tuple]:
    """Compares a training relaunch with the config its checkpoints were trained with.

    Returns the changed keys (``key -> (old, new)``). Keys outside :data:`SAFE_KEYS` are
    refused unless named in ``allowed`` (``--allow_config_change``); keys the old config
    lacks (added to jaxgen since) are accepted with a warning.
    """
    if not list_steps(workdir):
        return {}  # nothing was trained here: a launch that failed before its first checkpoint
    old = trained_config(workdir)
    if old is None:
        raise unrecorded_checkpoints_error(
            workdir,
            "put those files back, or train in a new workdir from these weights with "
            f"--config.init_from={workdir}",
        )
    changes = config_changes(old, config_dict(config))
    known = flatten(old)
    new_keys = [k for k in changes if k not in known]
    refused = [k for k in changes if not is_safe_key(k) and k not in allowed and k not in new_keys]
    if refused:
        listed = "; ".join(
            f"{k}: {_short(changes[k][0])} -> {_short(changes[k][1])}" for k in refused
        )
        raise UserError(
            f"--workdir={workdir} was trained with another config ({listed}); to change it "
            f"anyway pass --allow_config_change={','.join(refused)}, or use a new workdir"
        )
    for key in new_keys:
        log.warning("config key %s is new since this run started; using %s", key, changes[key][1])
    changed = [
        f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in changes.items() if k not in new_keys
    ]
    if changed:
        log.info("relaunched with changed config keys: %s", "; ".join(changed))
    return changes


def record_launch(
    workdir: str, config: ml_collections.ConfigDict, mode: str, changes: dict, argv: list[str]
) -> None:
    """Writes ``config.json`` (a training launch on a workdir without checkpoints) and appends
    this launch to the history, with the code and devices it ran on
    (:mod:`jaxgen.provenance`). A training launch whose code differs from the previous
    training launch's (another commit or library version) says so in a warning: the run goes
    on, its numbers may not continue exactly."""
    code = provenance.software()
    previous = last_training_launch(workdir) if mode == "train" else None
    changed_code = provenance.software_changes((previous or {}).get("software"), code)
    if changed_code:
        log.warning(
            "resuming under other code than the previous training launch: %s",
            "; ".join(changed_code),
        )
    paths.makedirs(workdir)
    resolved = config_dict(config)
    config_path = paths.join(workdir, CONFIG_FILE)
    if mode == "train" and not (paths.exists(config_path) and list_steps(workdir)):
        paths.write_text(config_path, json.dumps(resolved, indent=2, sort_keys=True))
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "mode": mode,
        "argv": list(argv),
        "changed": {k: list(v) for k, v in changes.items()},
        "config": resolved,
        "software": code,
        "devices": provenance.devices(),
    }
    paths.append_text(paths.join(workdir, HISTORY_FILE), json.dumps(entry, sort_keys=True) + "\n")
