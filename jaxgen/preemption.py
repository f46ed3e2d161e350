"""Stop requests: SIGTERM/SIGINT end a run at a safe point; a second signal aborts.

One process: a Python handler sets a flag that :meth:`StopRequest.should_stop` and
:meth:`StopRequest.check` read (no device sync, no collective).

Several processes (``jax.process_count() > 1``) must all stop after the same step.
``jax.distributed.initialize`` starts JAX's preemption sync manager
(``jax_enable_preemption_service``, on by default): a C++ ``SIGTERM`` handler sets
a flag that a listener thread polls once a second; the notice goes through the
coordination service to every process, which then agree on the next call counter
of the fastest one as the sync point
(:func:`jax.experimental.multihost_utils.reached_preemption_sync_point`).
Installing a Python ``SIGTERM`` handler replaces that C++ handler, so
:class:`StopRequest` saves it (``sigaction`` through ctypes), and on the first
SIGTERM or SIGINT re-raises SIGTERM to its own process with the C++ handler back
in place for that moment. Where that is not possible (the service turned off, no
``sigaction``, no C++ handler installed) every process compares flags with one
``process_allgather`` per step instead.

JAX is imported on entering, so that importing this module stays quick.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import logging
import os
import signal as signal_lib
import sys
import threading

import numpy as np

log = logging.getLogger("jaxgen")

_SIGNALS = (signal_lib.SIGTERM, signal_lib.SIGINT)
# More than ``struct sigaction`` takes on any libc; the bytes are only handed back to libc.
_SIGACTION_BYTES = 1024
# JAX's sync point counter starts at 0 in every process whatever step a run resumes
# from, and a notice is honoured only at a counter above every process's current one:
# counting calls from 1 (not passing the training step) keeps that true after a resume.
_CALLS = itertools.count(1)
_active: StopRequest | None = None


class Preempted(Exception):
    """A stop was requested (SIGTERM/SIGINT); the current work was abandoned at a safe point."""


def _libc():
    if sys.platform == "win32":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    if not hasattr(libc, "sigaction"):
        return None
    libc.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    return libc


def _get_action(libc, signum: int):
    """The process's current ``struct sigaction`` for ``signum`` as raw bytes (None: unknown)."""
    if libc is None:
        return None
    action = ctypes.create_string_buffer(_SIGACTION_BYTES)
    return action if libc.sigaction(signum, None, action) == 0 else None


def _set_action(libc, signum: int, action) -> None:
    libc.sigaction(signum, action, None)


def _handler_address(action) -> int:
    """``sa_handler``, the first field of ``struct sigaction`` (0: SIG_DFL, 1: SIG_IGN)."""
    return ctypes.c_void_p.from_buffer(action).value or 0


@contextlib.contextmanager
def _signals_blocked():
    """SIGTERM and SIGINT wait while handlers are swapped (POSIX), then reach the new ones."""
    if not hasattr(signal_lib, "pthread_sigmask"):
        yield
        return
    old_mask = signal_lib.pthread_sigmask(signal_lib.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal_lib.pthread_sigmask(signal_lib.SIG_SETMASK, old_mask)


class StopRequest:
    """Context manager: installs SIGTERM/SIGINT handling on enter, restores the previous on exit.

    Enter it on the main thread, after ``jax.distributed.initialize`` (``runtime.initialize``),
    and only one at a time.

    Attributes:
      signal: the first signal this process received (None: none). With several
        processes :meth:`should_stop` may be True on a process that got none.
    """

    def __init__(self):
        self.signal: int | None = None
        self._mode = "local"
        self._stopping = False
        self._libc = None
        self._previous: dict[int, object] = {}
        self._actions: dict[int, object] = {}
        self._arrivals = 0  # signals seen by the watcher thread (see _watch)
        self._wakeup: tuple[int, int] | None = None
        self._previous_wakeup = -1

    def __enter__(self) -> StopRequest:
        global _active
        if _active is not None:
            raise RuntimeError("a StopRequest is already active in this process")
        import jax

        several = jax.process_count() > 1
        self._libc = _libc()
        with _signals_blocked():
            self._actions = {sig: _get_action(self._libc, sig) for sig in _SIGNALS}
            self._previous = {sig: signal_lib.getsignal(sig) for sig in _SIGNALS}
            for sig in _SIGNALS:
                signal_lib.signal(sig, self._handle)
            if several:
                self._mode = self._multi_process_mode()
        self._start_watch()
        _active = self
        return self

    def __exit__(self, *exc_info) -> None:
        global _active
        self._stop_watch()
        try:
            with _signals_blocked():
                for sig in _SIGNALS:
                    previous = self._previous[sig]
                    # None: a handler not installed from Python (restored below from its bytes).
                    signal_lib.signal(sig, signal_lib.SIG_DFL if previous is None else previous)
                    if self._actions[sig] is not None:
                        _set_action(self._libc, sig, self._actions[sig])
        finally:
            _active = None

    def _multi_process_mode(self) -> str:
        """``"notifier"`` when SIGTERM had JAX's C++ handler before ours, else ``"allgather"``."""
        from jax._src import distributed

        term = signal_lib.SIGTERM
        before = self._actions[term]
        if distributed.global_state.preemption_sync_manager is None:
            why = "jax_enable_preemption_service is off"
        elif before is None:
            why = "sigaction is not available"
        # Python's table may name a handler that the C++ one replaced natively: compare
        # the native handler with the one Python installs (ours, now).
        elif _handler_address(before) in (0, 1, _handler_address(_get_action(self._libc, term))):
            why = "SIGTERM was not handled by JAX's notifier"
        else:
            return "notifier"
        log.warning("stop requests: %s; comparing them across processes every step", why)
        return "allgather"

    def _start_watch(self) -> None:
        """A thread that counts SIGTERM/SIGINT as they arrive and aborts on the second.

        Python runs signal handlers on the main thread between bytecodes, so during a long
        compiled computation both signals would wait for it, and the second would merge with
        the first. CPython's own C handler also writes each signal's number to the wakeup
        fd at once; this thread reads it, so a second signal aborts even then.
        """
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            self._previous_wakeup = signal_lib.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: the Python handler alone counts signals
            os.close(read_fd)
            os.close(write_fd)
            return
        self._wakeup = (read_fd, write_fd)
        threading.Thread(target=self._watch, args=(read_fd,), daemon=True).start()

    def _watch(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while data := pipe.read(64):  # empty at end-of-file: the stop request has exited
                for signum in data:
                    if signum in _SIGNALS:
                        self._arrivals += 1
                        if self._arrivals >= 2:
                            _abort(signum)

    def _stop_watch(self) -> None:
        if self._wakeup is None:
            return
        signal_lib.set_wakeup_fd(self._previous_wakeup)
        os.close(self._wakeup[1])  # the watcher reads end-of-file, closes its end, returns
        self._wakeup = None

    def request(self, signum: int) -> None:
        """Takes over a signal that arrived before this stop request was entered (the
        launcher's start-up), as if it had arrived now."""
        self._arrivals += 1
        self._handle(signum, None)

    def _handle(self, signum: int, frame) -> None:
        del frame
        if self.signal is not None:
            _abort(signum)
        self.signal = signum
        log.info("stop requested by %s; saving at the next step", signal_lib.Signals(signum).name)
        if self._mode == "notifier":
            self._notify_jax()

    def _notify_jax(self) -> None:
        """Hands a SIGTERM to JAX's C++ handler, which tells the other processes."""
        term = signal_lib.SIGTERM
        _set_action(self._libc, term, self._actions[term])
        try:
            signal_lib.raise_signal(term)  # the handler has run when this returns
        finally:
            signal_lib.signal(term, self._handle)

    def should_stop(self, step: int) -> bool:
        """Called after every training step (cheap: no device sync, no collective per call in the
        single-process case). True when the loop must checkpoint ``step`` and exit.

        With several processes every process returns True after the same number of calls
        (so at the same step if they all call it once per step, as they must): about a
        second after the first signal reaches any of them (JAX's notifier polls once a
        second), plus a step. Once True it stays True.
        """
        del step  # agreement counts calls; see _CALLS
        if self._stopping:
            return True
        if self._mode == "local":
            self._stopping = self.signal is not None
        elif self._mode == "notifier":
            from jax.experimental import multihost_utils

            self._stopping = multihost_utils.reached_preemption_sync_point(next(_CALLS))
        else:
            from jax.experimental import multihost_utils

            flags = multihost_utils.process_allgather(np.array(self.signal is not None))
            self._stopping = bool(np.any(flags))
        return self._stopping

    def check(self) -> None:
        """Polling point inside long non-training work (sampling chunks, evaluators).

        Raises :class:`Preempted` if this process got a stop signal and it is the only
        process. With several processes it does nothing: the work runs collectives that
        every process must finish, so the stop is honoured at the next
        :meth:`should_stop` or when the work ends and the program exits.
        """
        if self._mode == "local" and self.signal is not None:
            name = signal_lib.Signals(self.signal).name
            raise Preempted(f"stop requested by {name}")


def _abort(signum: int) -> None:
    os.write(2, b"second signal: aborting without saving\n")
    os._exit(128 + signum)


def check_active() -> None:
    """A polling point for long work outside the training loop (sampling chunks, evaluators):
    :meth:`StopRequest.check` of the active stop request; nothing when there is none."""
    if _active is not None:
        _active.check()
