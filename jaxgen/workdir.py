"""A run's workdir: which folders may be used, one owner at a time, and its launch history.

A workdir is a local folder or an object-store URL (``gs://bucket/folder``,
``s3://bucket/folder``); every file goes through :mod:`jaxgen.paths`.

* :func:`check_workdir` refuses, before anything is written, a path that is a file, ``/``
  or the home directory, a whole bucket (``gs://bucket``), a non-empty folder that is not a
  jaxgen workdir, and the workdir of another family.
* :class:`WorkdirLock` makes one training launch the owner of a workdir
  (``<workdir>/.jaxgen.lock``: host, pid and start time). A second launch on a busy
  workdir is refused; the lock of a process that died is taken over with a message. On an
  object store the lock is weaker (no exclusive create there): see :class:`WorkdirLock`.
* ``config.json`` is the config the run was first trained with and is never rewritten;
  ``launches.jsonl`` holds one line per launch (time, host, pid, mode, the keys it changed
  and its whole config). :func:`check_resume_config` compares a relaunch with the config
  the checkpoints were last trained with.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxgen import paths
from jaxgen.errors import UserError

log = logging.getLogger("jaxgen")

CONFIG_FILE = "config.json"
HISTORY_FILE = "launches.jsonl"
LOCK_FILE = ".jaxgen.lock"
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
HEARTBEAT_SECONDS = 30.0
DEFAULT_STALE_SECONDS = 600.0
DEFAULT_SETTLE_SECONDS = 2.0


def _env_seconds(name: str, default: float, allow_zero: bool) -> float:
    """A number of seconds from the environment variable ``name`` (``default`` when unset)."""
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "a positive number"
        raise UserError(f"{name}={text!r}: expected {'a number ' if allow_zero else ''}{bound}")
    return value


def stale_seconds() -> float:
    """How old the heartbeat of a lock held from another host may be before it counts as
    stale: ``$JAXGEN_LOCK_STALE_SECONDS``, default 600."""
    return _env_seconds("JAXGEN_LOCK_STALE_SECONDS", DEFAULT_STALE_SECONDS, allow_zero=False)


def settle_seconds() -> float:
    """How long a launch on an object-store workdir waits between writing its lock and
    reading it back (see :class:`WorkdirLock`): ``$JAXGEN_LOCK_SETTLE_SECONDS``, default 2."""
    return _env_seconds("JAXGEN_LOCK_SETTLE_SECONDS", DEFAULT_SETTLE_SECONDS, allow_zero=True)


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
        raise UserError(f"--workdir={workdir}: cannot read {path}: {e}") from None
    if not isinstance(config, dict):
        raise UserError(f"--workdir={workdir}: {path} does not hold a config")
    return config


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
        return
    if config.get("family") != family:
        raise UserError(
            f"--workdir={workdir} holds a {config.get('family')!r} run and this config is "
            f"{family!r}; use another workdir"
        )


# --- one owner ------------------------------------------------------------------------------
def _process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the process that wrote ``holder`` still runs (on this host)."""
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = holder.get("proc_start")
    return started is None or started == _process_start_time(pid)


def describe_holder(holder: dict) -> str:
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}, "
        f"mode {holder.get('mode')}"
    )


class WorkdirLock:
    """Exclusive ownership of a workdir by one launch (see module docstring).

    ``acquire`` creates the workdir if needed; ``release`` removes the lock and, if the
    launch created the workdir and left it empty, the workdir too. A daemon thread touches
    the lock every ``HEARTBEAT_SECONDS`` so that launches on other hosts can tell a live
    holder from a dead one.

    Local workdirs: the lock file is created with ``O_EXCL``, so of two launches exactly one
    gets it, and a dead holder's lock is taken over by a rename only one taker wins.

    Object-store workdirs (``gs://``, ``s3://``) have no exclusive create through ``etils.epath``
    (GCS generation preconditions are not reachable through it). There a launch reads the
    lock, refuses a live holder, writes its own record with a random token, waits
    :func:`settle_seconds` and reads the lock back: if another launch's token is there, the
    other launch wrote later and this one backs off (last writer wins; object stores give
    read-after-write consistency, so the read-back sees the latest write). Two launches
    can both win only if one of them stalls for longer than the settle time between reading
    the lock and writing its own record; the guarantee is therefore weaker than locally.
    The heartbeat rewrites the record while it still holds this launch's token, and
    ``release`` deletes the lock only if it does.
    """

    def __init__(self, workdir: str, mode: str):
        self.workdir = workdir
        self.path = paths.join(workdir, LOCK_FILE)
        self.mode = mode
        self.remote = paths.is_remote(workdir)
        self._token = uuid.uuid4().hex
        self._created_dir = False
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _holder_record(self) -> dict:
        pid = os.getpid()
        return {
            "host": socket.gethostname(),
            "pid": pid,
            "proc_start": _process_start_time(pid),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "mode": self.mode,
            "token": self._token,
        }

    def _read_holder(self) -> dict | None:
        try:
            holder = json.loads(paths.read_text(self.path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _ours(self, holder: dict | None) -> bool:
        return bool(holder) and holder.get("token") == self._token

    def _busy(self, holder: dict) -> UserError:
        return UserError(
            f"--workdir={self.workdir} is in use by {describe_holder(holder)} "
            f"({self.path}); wait for it or stop it first"
        )

    def _is_stale(self, holder: dict) -> bool:
        if holder.get("host") == socket.gethostname():
            return not _alive(holder)
        try:
            age = time.time() - paths.mtime(self.path)
        except FileNotFoundError:
            return True
        return age > stale_seconds()

    def acquire(self) -> None:
        """Takes the lock or raises UserError naming the holder."""
        if self.remote:
            self._acquire_remote()
            return
        if not os.path.isdir(self.workdir):
            os.makedirs(self.workdir)
            self._created_dir = True
        record = json.dumps(self._holder_record())
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                if holder is None:
                    continue  # released meanwhile
                if not self._is_stale(holder):
                    self._undo_dir()
                    raise self._busy(holder) from None
                aside = f"{self.path}.stale.{os.getpid()}"
                try:
                    os.rename(self.path, aside)  # only one taker wins the rename
                except FileNotFoundError:
                    continue
                os.remove(aside)
                log.warning(
                    "took over the lock of %s, which is no longer running", describe_holder(holder)
                )
                continue
            with os.fdopen(fd, "w") as f:
                f.write(record)
            self._held = True
            self._start_heartbeat()
            return
        raise UserError(f"--workdir={self.workdir}: cannot take the lock {self.path}")

    def _acquire_remote(self) -> None:
        """Write, settle, read back (see the class docstring)."""
        settle = settle_seconds()
        holder = self._read_holder()
        if holder is not None:
            if not self._is_stale(holder):
                raise self._busy(holder)
            log.warning(
                "taking over the lock of %s, which is no longer running", describe_holder(holder)
            )
        paths.write_text(self.path, json.dumps(self._holder_record()))
        time.sleep(settle)
        holder = self._read_holder()
        if not self._ours(holder):  # another launch wrote its lock after this one
            raise self._busy(holder or {})
        self._held = True
        self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            if not self.remote:
                try:
                    os.utime(self.path)
                except OSError:
                    return
                continue
            try:
                holder = self._read_holder()
                if holder == {}:
                    continue  # unreadable this time (the network): again at the next beat
                if not self._ours(holder):
                    log.error(
                        "the lock %s now names %s; another launch took over this workdir",
                        self.path, describe_holder(holder or {}),
                    )  # fmt: skip
                    return
                paths.write_text(self.path, json.dumps(holder))
            except Exception as e:  # the store's client raises more than OSError
                log.warning("cannot renew the lock %s: %s", self.path, e)

    def _undo_dir(self) -> None:
        if self._created_dir:
            try:
                os.rmdir(self.workdir)
            except OSError:
                pass
            self._created_dir = False

    def release(self) -> None:
        self._stop.set()
        if self._held:
            if not self.remote:
                paths.remove(self.path)
            elif self._ours(self._read_holder()):
                paths.remove(self.path)
            self._held = False
        if self._created_dir and not os.listdir(self.workdir):
            self._undo_dir()

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def owned_workdir(workdir: str, mode: str):
    """Holds the workdir's lock (process 0 takes it; every process learns the outcome)."""
    lock = WorkdirLock(workdir, mode)
    error = ""
    if jax.process_index() == 0:
        try:
            lock.acquire()
        except UserError as e:
            error = str(e)
    if jax.process_count() > 1:
        ok = multihost_utils.broadcast_one_to_all(np.int32(not error))
        if not error and not int(ok):
            error = f"--workdir={workdir}: process 0 could not take the workdir's lock"
    if error:
        raise UserError(error)
    try:
        yield lock
    finally:
        lock.release()


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
    """The complete lines of ``launches.jsonl`` (a torn last line is skipped)."""
    path = paths.join(workdir, HISTORY_FILE)
    if not paths.exists(path):
        return []
    entries = []
    for line in paths.read_text(path).split("\n"):
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def trained_config(workdir: str) -> dict | None:
    """The config the checkpoints were last trained with: the newest training launch of
    ``launches.jsonl``, else ``config.json`` (workdirs from before the history)."""
    for entry in reversed(read_history(workdir)):
        if entry.get("mode") == "train" and isinstance(entry.get("config"), dict):
            return entry["config"]
    return read_run_config(workdir)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """``key -> (old, new)`` for every dotted key whose value differs (missing: None)."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def check_resume_config(
    workdir: str, config: ml_collections.ConfigDict, allowed: Iterable[str] = ()
) -> dict[str, tuple]:
    """Compares a training relaunch with the config its checkpoints were trained with.

    Returns the changed keys (``key -> (old, new)``). Keys outside :data:`SAFE_KEYS` are
    refused unless named in ``allowed`` (``--allow_config_change``); keys the old config
    lacks (added to jaxgen since) are accepted with a warning.
    """
    old = trained_config(workdir)
    if old is None:
        return {}
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
    """Writes ``config.json`` (first launch only) and appends this launch to the history."""
    paths.makedirs(workdir)
    resolved = config_dict(config)
    config_path = paths.join(workdir, CONFIG_FILE)
    if not paths.exists(config_path):
        paths.write_text(config_path, json.dumps(resolved, indent=2, sort_keys=True))
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "mode": mode,
        "argv": list(argv),
        "changed": {k: list(v) for k, v in changes.items()},
        "config": resolved,
    }
    paths.append_text(paths.join(workdir, HISTORY_FILE), json.dumps(entry, sort_keys=True) + "\n")
