"""One owner at a time: the lock that makes a launch the owner of its workdir.

:class:`WorkdirLock` (``<workdir>/.jaxgen.lock``: host, pid and start time) makes one training
launch the owner of a workdir. A second launch on a busy workdir is refused; the lock of a
process that died is taken over with a message. On an object store the lock is weaker (no
exclusive create there): see :class:`WorkdirLock`. :func:`owned_workdir` takes it for all
the processes of a multi-process run.
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

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxgen import paths
from jaxgen.errors import UserError

log = logging.getLogger("jaxgen")

LOCK_FILE = ".jaxgen.lock"
HEARTBEAT_SECONDS = 30.0
DEFAULT_STALE_SECONDS = 600.0
DEFAULT_SETTLE_SECONDS = 2.0
# An empty, unreadable or malformed lock (a power loss between creating the file and writing
# its record) names no holder: it counts as stale once its file is this old, long after any
# launch that was writing it would have finished.
UNREADABLE_GRACE_SECONDS = 20.0


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


def _unreadable_grace() -> float:
    """How old an empty or unreadable lock may be before it counts as stale."""
    return min(UNREADABLE_GRACE_SECONDS, stale_seconds())


def _process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _well_formed(holder) -> bool:
    """Whether ``holder`` is a lock record that names its holder: a dict with an int ``pid``
    and a str ``host`` (besides those, only read for messages)."""
    if not isinstance(holder, dict):
        return False
    pid = holder.get("pid")
    started = holder.get("proc_start")
    return (
        isinstance(pid, int)
        and not isinstance(pid, bool)
        and isinstance(holder.get("host"), str)
        and (started is None or isinstance(started, str))
    )


def _alive(holder: dict) -> bool:
    """Whether the process that wrote ``holder`` still runs (on this host)."""
    pid = holder["pid"]
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
    if not holder:
        return "an unknown launch (its lock file is empty or unreadable)"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}, "
        f"mode {holder.get('mode')}"
    )


def _stale_lock(holder: dict, path: str) -> str:
    """The stale lock being taken over, for the log."""
    if not holder:
        return f"the lock {path}, which was empty or unreadable"
    return f"the lock of {describe_holder(holder)}, which is no longer running"


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
        return holder if _well_formed(holder) else {}  # a malformed record: as unreadable

    def _ours(self, holder: dict | None) -> bool:
        return bool(holder) and holder.get("token") == self._token

    def _busy(self, holder: dict) -> UserError:
        if not holder:
            return UserError(
                f"--workdir={self.workdir}: its lock {self.path} is empty or unreadable "
                f"(another launch may be writing it right now); if no launch is, it is taken "
                f"over {_unreadable_grace():g} s after it was last written: launch again then"
            )
        return UserError(
            f"--workdir={self.workdir} is in use by {describe_holder(holder)} "
            f"({self.path}); wait for it or stop it first"
        )

    def _is_stale(self, holder: dict) -> bool:
        """A holder on this host: whether its process is gone; another host's: whether the
        heartbeat stopped; an empty or unreadable record: whether it is older than
        :data:`UNREADABLE_GRACE_SECONDS` (or the stale time, if shorter)."""
        if holder and holder.get("host") == socket.gethostname():
            return not _alive(holder)
        try:
            age = time.time() - paths.mtime(self.path)
        except FileNotFoundError:
            return True
        if not holder:
            return age > _unreadable_grace()
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
                log.warning("took over %s", _stale_lock(holder, self.path))
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
            log.warning("taking over %s", _stale_lock(holder, self.path))
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
