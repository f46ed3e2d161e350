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
