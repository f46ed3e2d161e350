"""Writes training metrics to ``metrics.jsonl`` and TensorBoard (no TensorFlow needed).

Only the main process (``jax.process_index() == 0``) writes; on the others every
method is a no-op, so callers need no ``if``.

Crash safety: every ``metrics.jsonl`` row is one ``write`` of the whole line followed by a
flush, so a killed run leaves at most one torn (partial) last line. A run that resumes from
the checkpoint at step ``S`` passes ``resume_step=S``: the file is then rewritten atomically
without the torn line and without the rows past ``S`` (the resumed run logs those steps
again), and TensorBoard is told to hide its events past ``S``, so every step appears once.

Object-store workdirs (``gs://``, ``s3://``; see :mod:`jaxgen.paths`) cannot be appended to:
there ``metrics.jsonl`` and the TensorBoard event file are kept in memory and written whole,
as one object, at most every ``REMOTE_UPLOAD_SECONDS`` and on ``flush``/``close`` (GCS allows
about one write per second to one object). The store always holds complete rows; a killed
run loses the rows and events of its last seconds there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import numpy as np

from jaxgen import paths
from jaxgen.errors import UserError

log = logging.getLogger("jaxgen")

METRICS_FILE = "metrics.jsonl"
REMOTE_UPLOAD_SECONDS = 10.0


def _to_builtin(value):
    value = np.asarray(value)
    if value.dtype.kind in "iu":
        return int(value)
    if value.dtype.kind == "b":
        return bool(value)
    f = float(value)
    return f if math.isfinite(f) else str(f)


def _parse_row(line: bytes) -> dict | None:
    """One ``metrics.jsonl`` line -> its row, or None unless it is a JSON object with an
    integer ``step``."""
    try:
        row = json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(row, dict):
        return None
    step = row.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    return row


def _split(data: bytes) -> tuple[list[bytes], bytes]:
    """File contents -> (newline-terminated lines without the newline, unterminated tail)."""
    *lines, tail = data.split(b"\n")
    return lines, tail


def read_metrics(path: str) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (a local path or URL) in file order, without a torn
    last line.

    A torn last line is one without its newline or, newline-terminated, not a JSON row with a
    ``step``. Any other line that is not such a row is a :class:`UserError` naming the line.
    """
    lines, tail = _split(paths.read_bytes(path))
    rows = []
    for number, line in enumerate(lines, 1):
        row = _parse_row(line)
        if row is not None:
            rows.append(row)
        elif number < len(lines) or tail:
            raise UserError(f"{path}, line {number}: expected a JSON object with an integer step")
    return rows


def truncate_metrics(path: str, resume_step: int) -> None:
    """Rewrites ``path`` atomically with only its complete rows of ``step <= resume_step``.

    Dropped lines are reported as warnings on the ``jaxgen`` logger. The file is left
    untouched when nothing is to be dropped, and need not exist.
    """
    try:
        data = paths.read_bytes(path)
    except FileNotFoundError:
        return
    lines, tail = _split(data)
    rows = [_parse_row(line) for line in lines]
    torn = tail != b""
    if not torn and rows and rows[-1] is None:
        torn = True
        lines, rows = lines[:-1], rows[:-1]
    pairs = list(zip(lines, rows, strict=True))
    kept = [line for line, row in pairs if row is not None and row["step"] <= resume_step]
    past = sum(1 for row in rows if row is not None and row["step"] > resume_step)
    corrupt = sum(1 for row in rows if row is None)
    if not torn and not past and not corrupt:
        return
    if torn:
        log.warning("%s: dropped a torn last line left by an interrupted run", path)
    if corrupt:
        log.warning("%s: dropped %d lines that are not JSON rows with a step", path, corrupt)
    if past:
        log.warning(
            "%s: dropped %d rows past step %d, where training resumes", path, past, resume_step
        )
    try:  # locally a fsynced temporary file renamed over it; remotely one object write
        paths.write_bytes(path, b"".join(line + b"\n" for line in kept), durable=True)
    except OSError as e:
        raise UserError(f"cannot rewrite {path}: {e.strerror or e}; it is unchanged") from None


class MetricWriter:
    """``metrics.jsonl`` lines ``{"step": int, ...}`` plus TensorBoard scalars and images.

    Args:
      workdir: the run directory, a local path or a ``gs://`` / ``s3://`` URL; files go to
        ``<workdir>/metrics.jsonl`` and ``<workdir>/tb/``.
      is_main: whether this process writes (process 0 of a multi-process run).
      resume_step: for training, the step it starts from (the restored checkpoint's step, 0
        without one). ``metrics.jsonl`` is then cut back to the rows up to that step (see
        :func:`truncate_metrics`), and the new TensorBoard event file starts with a restart
        marker (``purge_step``) at ``resume_step + 1``: TensorBoard hides the events of later
        steps written before it. None (eval and sample modes): existing files are left as they
        are, and ``metrics.jsonl`` is opened only when a row is written to it.

    TensorBoard events reach the disk every 10 s, so a killed run may lose its last ones.
    """

    def __init__(self, workdir: str, is_main: bool = True, resume_step: int | None = None):
        self.is_main = is_main
        self._jsonl = None
        self._tb = None
        self._remote = paths.is_remote(workdir)
        self._remote_jsonl: bytearray | None = None  # object store: the whole file, in memory
        self._remote_dirty = False
        self._remote_uploaded = -math.inf
        self._jsonl_path = paths.join(workdir, METRICS_FILE)
        self._tb_dir = paths.join(workdir, "tb")
        self._purge_step = None if resume_step is None else int(resume_step) + 1
        if is_main and resume_step is not None:
            paths.makedirs(workdir)
            truncate_metrics(self._jsonl_path, int(resume_step))

    def _tensorboard(self):
        if self._tb is None:
            from tensorboardX import SummaryWriter

            if self._remote:
                paths.register_tensorboard_writers()

            # tensorboardX names event files by the second and opens them with "wb": without
            # a finer suffix a relaunch within the same second would overwrite the last file.
            self._tb = SummaryWriter(
                self._tb_dir,
                flush_secs=10,
                purge_step=self._purge_step,
                filename_suffix=f".{time.time_ns()}",
            )
        return self._tb

    def write_scalars(self, step: int, scalars: dict, jsonl: bool = True) -> None:
        """TensorBoard scalars, and (with ``jsonl``) one ``metrics.jsonl`` line."""
        if not self.is_main:
            return
        row = {"step": int(step)}
        row.update({k: _to_builtin(v) for k, v in scalars.items()})
        if jsonl and self._remote:
            self._append_remote(json.dumps(row) + "\n")
        elif jsonl:
            if self._jsonl is None:
                os.makedirs(os.path.dirname(self._jsonl_path), exist_ok=True)
                self._jsonl = open(self._jsonl_path, "a")
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        tb = self._tensorboard()
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                tb.add_scalar(k, v, int(step))

    def _append_remote(self, line: str) -> None:
        if self._remote_jsonl is None:
            try:
                self._remote_jsonl = bytearray(paths.read_bytes(self._jsonl_path))
            except FileNotFoundError:
                self._remote_jsonl = bytearray()
        self._remote_jsonl += line.encode("utf-8")
        self._remote_dirty = True
        if time.monotonic() - self._remote_uploaded >= REMOTE_UPLOAD_SECONDS:
            self._upload_jsonl()

    def _upload_jsonl(self) -> None:
        if self._remote_dirty:
            paths.write_bytes(self._jsonl_path, bytes(self._remote_jsonl))
            self._remote_dirty = False
            self._remote_uploaded = time.monotonic()

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        """One uint8 image ``[H, W, C]`` (e.g. a sample grid) to TensorBoard."""
        if not self.is_main:
            return
        image = np.asarray(image)
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        self._tensorboard().add_image(name, image, int(step), dataformats="HWC")

    def flush(self) -> None:
        self._upload_jsonl()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._upload_jsonl()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
