"""What a failed Orbax restore leaves behind: its cause in one line, and no stray tracebacks.

Orbax reads a checkpoint's arrays as concurrent TensorStore reads inside an event loop of its
own (``orbax.checkpoint._src.asyncio_utils.run_sync``). When one read fails (a damaged data
file, a chunk rotated away by another launch), the loop is closed while the other reads are
still pending; as each finishes, TensorStore's callback meets the closed loop, and the reads'
coroutines are garbage-collected unfinished. Python reports each of these through
``sys.unraisablehook``, and a finished task or future whose read error nobody retrieved
through the ``asyncio`` logger: hundreds of tracebacks around the one-line error the
launcher prints, sometimes splicing into it. :func:`quiet_abandoned_reads` drops exactly
those reports.
"""

from __future__ import annotations

import logging
import re
import sys

# The coroutine Orbax runs for every array shard it reads (orbax-checkpoint 0.11 and later).
_READ_COROUTINE = "_read_array_index_and_device_put"
_ORBAX_READ_ERROR = "Encountered error while reading array index"
# TensorStore's failed read: its status code, then what it was reading.
_TENSORSTORE_READ_ERROR = re.compile(r"[A-Z_]+: Error reading ")

_installed = False


def _is_read_failure(error: BaseException | None) -> bool:
    """Whether ``error`` is a callback meeting the closed event loop, Orbax's read error, or
    TensorStore's own (``OUT_OF_RANGE: Error reading "<array>" ...``), which a read's future
    holds when nobody awaited it."""
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return True
    if isinstance(error, ValueError) and _TENSORSTORE_READ_ERROR.match(str(error)):
        return True
    return error is not None and str(error).startswith(_ORBAX_READ_ERROR)


def _is_abandoned_read(report) -> bool:
    """Whether an unraisable-exception ``report`` comes from a read abandoned by a failed
    restore: a callback meeting the closed event loop, or an unfinished read coroutine."""
    return _is_read_failure(report.exc_value) or _READ_COROUTINE in repr(report.object)


class _UnretrievedReadErrors(logging.Filter):
    """Drops the ``asyncio`` logger's "Task exception was never retrieved" records of
    abandoned reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_read_failure(record.exc_info[1]))


def quiet_abandoned_reads() -> None:
    """Installs (once per process) an ``unraisablehook`` that drops the reports of
    :func:`_is_abandoned_read` and passes every other one to the hook it replaces, and a
    filter on the ``asyncio`` logger that drops its records of abandoned reads."""
    global _installed
    if _installed:
        return
    previous = sys.unraisablehook

    def hook(report) -> None:
        if not _is_abandoned_read(report):
            previous(report)

    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_UnretrievedReadErrors())
    _installed = True


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (at most 300 characters), or its type's name.

    Orbax wraps a failed array read in an exception whose message ends in an unprintable
    TensorStore spec; there the message of its cause (TensorStore's, which names the damaged
    array and file) is used instead.
    """
    if str(error).startswith(_ORBAX_READ_ERROR) and error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
