"""Progress lines with rate and ETA for long loops (sampling, feature extraction, training)."""

from __future__ import annotations

import logging
import os
import time

import jax

log = logging.getLogger("jaxgen")

# Seconds between two progress lines of one loop; the first and last lines always print.
INTERVAL_ENV = "JAXGEN_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 10.0


def format_eta(seconds: float) -> str:
    """``1h02m03s`` or ``2m03s``."""
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """``<what>: done/total <unit> (rate <unit>/s, ETA ...)`` on process 0.

    Call :meth:`update` after each piece of work with the running count. A line is logged
    for the first piece, then at most every ``$JAXGEN_PROGRESS_SECONDS`` (default 10) seconds,
    and for the last piece. The rate counts from the end of the first piece, so compilation
    does not drag it down; until a second piece finishes no rate is shown.
    """

    def __init__(self, what: str, total: int, unit: str = "images"):
        self.what, self.total, self.unit = what, int(total), unit
        self.interval = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL))
        self.start = time.perf_counter()
        self._first: tuple[float, int] | None = None  # (time, count) after the first piece
        self._last_line = -float("inf")
        self.lines: list[str] = []

    def update(self, done: int) -> None:
        now = time.perf_counter()
        first = self._first is None
        if first:
            self._first = (now, done)
        finished = done >= self.total
        if not (first or finished or now - self._last_line >= self.interval):
            return
        self._last_line = now
        t0, n0 = self._first
        message = f"{self.what}: {done}/{self.total} {self.unit}"
        if done > n0 and now > t0:
            rate = (done - n0) / (now - t0)
            message += f" ({rate:.3g} {self.unit}/s"
            message += ")" if finished else f", ETA {format_eta((self.total - done) / rate)})"
        if finished:
            message += f" in {format_eta(now - self.start)}"
        self.lines.append(message)
        if jax.process_index() == 0:
            log.info("%s", message)
