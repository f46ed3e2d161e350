"""What a failed Orbax restore leaves behind: its cause in one line, and no stray tracebacks.

Orbax reads a checkpoint's arrays as concurrent TensorStore reads inside an event loop of its
own (``orbax.checkpoint._src.asyncio_utils.run_sync``). When one read fails (a damaged data
file, a chunk rotated away by another launch), the loop is closed while the other reads are
still pending; as each finishes, TensorStore's callback meets the closed loop, and the reads'
coroutines are garbage-collected unfinished. Python reports each of these through
``sys.unraisablehook``, hundreds of tracebacks around the one-line error the launcher prints,
sometimes splicing into it. :func:`quiet_abandoned_reads` drops exactly those reports.
"""

from __future__ import annotations

import sys

# The coroutine Orbax runs for every array shard it reads (orbax-checkpoint 0.11 and later).
_READ_COROUTINE = "_read_array_index_and_device_put"
_ORBAX_READ_ERROR = "Encountered error while reading array index"

_installed = False


def _is_abandoned_read(report) -> bool:
    """Whether an unraisable-exception ``report`` comes from a read abandoned by a failed
    restore: a callback meeting the closed event loop, or an unfinished read coroutine."""
    if report.exc_type is RuntimeError and str(report.exc_value) == "Event loop is closed":
        return True
    return _READ_COROUTINE in repr(report.object)


def quiet_abandoned_reads() -> None:
    """Installs (once per process) an ``unraisablehook`` that drops the reports of
    :func:`_is_abandoned_read` and passes every other one to the hook it replaces."""
    global _installed
    if _installed:
        return
    previous = sys.unraisablehook

    def hook(report) -> None:
        if not _is_abandoned_read(report):
            previous(report)

    sys.unraisablehook = hook
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
