"""One path layer for every file a run reads or writes under its workdir.

A *path* here (a ``str`` or ``os.PathLike``) is either

* a local path: made absolute by :func:`normalize` and handled with the ``os`` module as
  before (atomic writes are a temporary file and ``os.replace``), or
* an object-store URL, ``gs://bucket/folder`` (Google Cloud Storage) or ``s3://bucket/folder``:
  kept as a URL and reached through ``etils.epath``, whose fsspec backend uses ``gcsfs`` (or
  ``s3fs``) when TensorFlow is not installed. Orbax writes the checkpoints' arrays there
  itself, through TensorStore's ``gcs``/``s3`` drivers (see :func:`as_path`).

``file:///abs/path`` is read as the local path ``/abs/path``; any other ``scheme://`` is
refused with a :class:`~jaxgen.errors.UserError` rather than becoming a local folder named
``scheme:``.

Object stores have no folders, no rename and no appends: :func:`makedirs` is a no-op there,
:func:`write_bytes` is one object write (which is atomic: readers see the old or the new
object, never a part), and :func:`append_text` reads the object and writes it back whole
(not safe against a second writer appending at the same time; jaxgen appends only to
``launches.jsonl`` this way).

Only the standard library is imported at module level (``jaxgen.cli`` imports this module
before the launcher's signal handling is in place); ``etils.epath`` is imported on the first
remote access.
"""

from __future__ import annotations

import fnmatch
import glob as _glob
import io
import os
import posixpath
import re

from jaxgen.errors import UserError

# URL schemes both etils.epath (files) and Orbax/TensorStore (checkpoint arrays) can reach.
SCHEMES = ("gs", "s3")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)

PathLike = str | os.PathLike


def url_scheme(path: PathLike) -> str | None:
    """``"gs"`` for ``gs://bucket/x``; None for a local path."""
    match = _URL.match(os.fspath(path))
    return match.group(1).lower() if match else None


def is_remote(path: PathLike) -> bool:
    """Whether ``path`` is a URL other than ``file://`` (an object store's; functions given
    one of another scheme than :data:`SCHEMES` raise UserError)."""
    return url_scheme(path) not in (None, "file")


def normalize(path: PathLike, what: str = "--workdir") -> str:
    """The canonical form of a workdir or file path, as a string.

    Local paths become absolute (``os.path.abspath``); ``file:///x`` becomes ``/x``; ``gs://``
    and ``s3://`` URLs stay URLs with their duplicate and trailing slashes removed. Any other
    scheme, a URL without a bucket, and a URL that climbs out of its bucket with ``..`` are
    refused (``what`` names the flag or config key in the message).
    """
    text = os.fspath(path)
    match = _URL.match(text)
    if match is None:
        return os.path.abspath(text)
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme == "file":
        if not rest.startswith("/"):
            raise UserError(f"{what}={text}: expected file:///absolute/path")
        return os.path.abspath(rest)
    if scheme not in SCHEMES:
        supported = ", ".join(f"{s}://" for s in SCHEMES)
        raise UserError(
            f"{what}={text}: the URL scheme {scheme}:// is not supported; use a local path or "
            f"one of {supported}"
        )
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UserError(f"{what}={text}: no bucket in the URL; expected {scheme}://bucket/folder")
    parts = [part for part in key.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UserError(f"{what}={text}: '..' is not allowed in a URL")
    return f"{scheme}://{bucket}" + "".join(f"/{part}" for part in parts)


def bucket_root(path: PathLike) -> bool:
    """Whether ``path`` is a whole bucket (``gs://bucket``) rather than a folder in one."""
    path = normalize(path)
    return is_remote(path) and "/" not in path.split("://", 1)[1]


def as_path(path: PathLike):
    """``path`` as an ``etils.epath.Path`` (what Orbax takes): a URL stays a URL, a local path
    is absolute."""
    from etils import epath

    return epath.Path(normalize(path))


def _fresh(path: PathLike):
    """``as_path(path)`` after dropping fsspec's cached listings of it and its parents.

    gcsfs keeps every listing it made for the life of the process and answers later
    ``exists``/``info``/``open`` from it: without this, an object another process wrote
    after the listing (a lock, a checkpoint, a metrics row) would stay invisible.
    """
    p = as_path(path)
    try:
        from etils.epath import backend

        backend.fsspec_backend.fs(str(p)).invalidate_cache(str(p))
    except Exception:  # no fsspec file system for the scheme: nothing is cached either
        pass
    return p


def join(base: PathLike, *parts: str) -> str:
    """``base/part/...`` as a string; URLs stay URLs (``os.path.join`` is not used so that
    this holds on every OS)."""
    base = os.fspath(base)
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def dirname(path: PathLike) -> str:
    path = os.fspath(path)
    return posixpath.dirname(path) if is_remote(path) else os.path.dirname(path)


def basename(path: PathLike) -> str:
    path = os.fspath(path)
    return posixpath.basename(path) if is_remote(path) else os.path.basename(path)


# --- queries ------------------------------------------------------------------------------
def exists(path: PathLike) -> bool:
    """Whether a file or a folder (on object stores: any object under the prefix) is there."""
    if is_remote(path):
        return _fresh(path).exists()
    return os.path.exists(path)


def is_dir(path: PathLike) -> bool:
    if is_remote(path):
        return _fresh(path).is_dir()
    return os.path.isdir(path)


def is_file(path: PathLike) -> bool:
    if is_remote(path):
        return _fresh(path).is_file()
    return os.path.isfile(path)


def listdir(path: PathLike) -> list[str]:
    """The names in folder ``path``, sorted; ``[]`` when it does not exist."""
    if is_remote(path):
        p = _fresh(path)
        if not p.is_dir():
            return []
        return sorted(child.name for child in p.iterdir())
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def glob(folder: PathLike, pattern: str) -> list[str]:
    """The paths of the entries of ``folder`` whose names match ``pattern`` (``fnmatch``
    rules, one level), sorted."""
    if is_remote(folder):
        return [join(folder, n) for n in listdir(folder) if fnmatch.fnmatch(n, pattern)]
    return sorted(_glob.glob(os.path.join(_glob.escape(os.fspath(folder)), pattern)))


def mtime(path: PathLike) -> float:
    """Seconds since the epoch of the last write (on object stores: the object's update
    time, whole seconds). Raises FileNotFoundError."""
    if is_remote(path):
        return float(_fresh(path).stat().mtime)
    return os.path.getmtime(path)


def disk_free(path: PathLike) -> int | None:
    """Free bytes on the disk holding ``path`` (or its nearest existing parent); None for
    object stores and when it cannot be told."""
    if is_remote(path):
        return None
    import shutil

    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


# --- reading and writing ------------------------------------------------------------------
def read_bytes(path: PathLike) -> bytes:
    """The whole file; FileNotFoundError when it is missing."""
    if is_remote(path):
        return _fresh(path).read_bytes()
    with open(path, "rb") as f:
        return f.read()


def read_text(path: PathLike) -> str:
    return read_bytes(path).decode("utf-8")


def makedirs(path: PathLike) -> None:
    """Creates local folder ``path`` and its parents; a no-op for URLs (object stores have no
    folders: an object's name holds its whole path)."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def write_bytes(path: PathLike, data: bytes, durable: bool = False) -> None:
    """Writes ``path`` whole or not at all, creating its folder.

    Local: a temporary file ``<path>.tmp`` then ``os.replace`` (with ``durable``, both the
    file and the rename are fsynced). Object stores: one object write, atomic by itself.
    """
    if is_remote(path):
        as_path(path).write_bytes(data)
        return
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    if durable:
        _fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_text(path: PathLike, text: str, durable: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), durable=durable)


def append_text(path: PathLike, text: str) -> None:
    """Appends ``text`` to ``path`` (created if missing). Local: one ``write`` in append mode.
    Object stores: the object is read and written back whole (see module docstring)."""
    if is_remote(path):
        try:
            old = read_bytes(path)
        except FileNotFoundError:
            old = b""
        write_bytes(path, old + text.encode("utf-8"))
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(text)


def remove(path: PathLike, missing_ok: bool = True) -> None:
    """Deletes file ``path``."""
    try:
        if is_remote(path):
            as_path(path).unlink()
        else:
            os.remove(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def remove_empty_dir(path: PathLike) -> None:
    """Removes local folder ``path`` if it is empty; a no-op for URLs (an object store's
    "folder" disappears with its last object)."""
    if is_remote(path):
        return
    try:
        os.rmdir(path)
    except OSError:
        pass


def binary_reader(path: PathLike) -> io.BytesIO:
    """The file's bytes as a seekable file object (for ``np.load``, PIL)."""
    return io.BytesIO(read_bytes(path))


def _fsync_dir(path: str) -> None:
    """Makes a rename inside local folder ``path`` durable (POSIX; a no-op where folders
    cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- TensorBoard --------------------------------------------------------------------------
class _RemoteEventFile:
    """A tensorboardX record writer for an object-store event file: the events are kept in
    memory and each flush (tensorboardX flushes every ``flush_secs`` and on close) writes
    the whole file as one object, so the store always holds a readable prefix of it."""

    def __init__(self, path: str):
        self.path = path
        self._buffer = io.BytesIO()
        self._flushed = -1

    def write(self, data: bytes) -> None:
        self._buffer.write(data)

    def flush(self) -> None:
        size = self._buffer.tell()
        if size != self._flushed:
            write_bytes(self.path, self._buffer.getvalue())
            self._flushed = size

    def close(self) -> None:
        self.flush()


class _RemoteEventFiles:
    def open(self, path: str) -> _RemoteEventFile:
        return _RemoteEventFile(path)

    def directory_check(self, path: str) -> None:
        del path  # no folders to create on an object store


def register_tensorboard_writers() -> None:
    """Makes tensorboardX write ``gs://`` and ``s3://`` event files through this module
    (instead of its own writers, which need google-cloud-storage or boto3 and their own
    credentials setup)."""
    from tensorboardX import record_writer

    for scheme in SCHEMES:
        if not isinstance(record_writer.REGISTERED_FACTORIES.get(scheme), _RemoteEventFiles):
            record_writer.register_writer_factory(scheme, _RemoteEventFiles())
