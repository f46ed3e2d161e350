"""Stop requests: a signal stops the loop at a step, a second one aborts, processes agree."""

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from jaxgen.preemption import Preempted, StopRequest
from tests.conftest import REPO

ONE_PROCESS_LOOP = r"""
import logging, signal, sys, time
sys.path.insert(0, {repo!r})
logging.basicConfig(level=logging.INFO, format="%(message)s")
from jaxgen.preemption import StopRequest
# What this process started with (SIGINT is ignored in a child of a non-interactive shell's
# background job): the handlers the stop request must put back.
before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
with StopRequest() as stop:
    step = 0
    while True:
        time.sleep(0.05)
        step += 1
        print("step", step, flush=True)
        if stop.should_stop(step):
            print("stopped", step, stop.signal, flush=True)
            break
restored = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
print("restored", restored, flush=True)
"""

SLEEPER = r"""
import logging, sys, time
sys.path.insert(0, {repo!r})
logging.basicConfig(level=logging.INFO, format="%(message)s")
from jaxgen.preemption import StopRequest
with StopRequest():
    print("ready", flush=True)
    # Short sleeps, as a training loop runs Python between steps: the kernel may deliver a
    # signal to one of JAX's threads, and the main thread then runs the Python handler only
    # when it next runs bytecode, which one long sleep would put off for its whole length.
    for _ in range(6000):  # 600 s, far longer than the test: only a signal ends it
        time.sleep(0.1)
print("slept through", flush=True)
"""

# Jitted steps and a cross-process allgather of the step counter each step, so the two
# processes are never more than one step apart.
TWO_PROCESS_LOOP = r"""
import signal, sys, time
sys.path.insert(0, {repo!r})
if {case!r} == "early_handlers":  # a launcher handling signals before JAX is imported
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *args: sys.exit("early handler called"))
from jaxgen import runtime
runtime.initialize()
import jax, jax.numpy as jnp, numpy as np
from jax.experimental import multihost_utils
from jaxgen.preemption import StopRequest
step_fn = jax.jit(lambda x: x + 1)
first = 101 if {case!r} == "before_first_step" else 1  # as if resuming from step 100
x = jnp.asarray(first - 1, jnp.int32)
with StopRequest() as stop:
    print("ready", flush=True)
    if first > 1:
        time.sleep(1.0)
    for step in range(first, first + 300):
        x = step_fn(x)
        counters = multihost_utils.process_allgather(x)
        assert (np.asarray(counters) == step).all(), counters
        print("step", step, flush=True)
        if stop.should_stop(step):
            print("stopped", step, stop.signal, flush=True)
            break
        time.sleep({step_s})
    else:
        sys.exit("never stopped")
"""


class _Lines:
    """A child's stdout, line by line, with a timeout (a reader thread feeds a queue)."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self._queue.put(line.strip())
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float = 60) -> str:
        deadline = time.time() + timeout
        while True:
            line = self._queue.get(timeout=max(deadline - time.time(), 0.01))
            assert line is not None, f"stdout ended before {prefix!r}: {self.lines}"
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def rest(self, timeout: float = 60) -> list[str]:
        deadline = time.time() + timeout
        while (line := self._queue.get(timeout=max(deadline - time.time(), 0.01))) is not None:
            self.lines.append(line)
        return self.lines


def _start(code: str, env: dict | None = None, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=dict(os.environ, **(env or {})),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def test_sigterm_stops_one_process_at_the_next_step_and_restores_the_handlers():
    proc = _start(ONE_PROCESS_LOOP.format(repo=REPO))
    lines = _Lines(proc)
    signalled_after = int(lines.wait_for("step 5").split()[1])
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)  # stderr holds a line or two: its pipe cannot fill up
    out, err = lines.rest(), proc.stderr.read()
    assert proc.returncode == 0, err
    stopped = [line.split() for line in out if line.startswith("stopped")]
    assert len(stopped) == 1, out
    step, signum = int(stopped[0][1]), int(stopped[0][2])
    assert signum == signal.SIGTERM
    assert signalled_after <= step <= signalled_after + 10, (signalled_after, out)
    assert out[-1] == "restored True"
    assert err.count("stop requested by SIGTERM; saving at the next step") == 1, err


def test_a_second_sigint_aborts_at_once_with_status_130():
    proc = _start(SLEEPER.format(repo=REPO))
    try:
        lines = _Lines(proc)
        lines.wait_for("ready")
        proc.send_signal(signal.SIGINT)
        # The second signal must come after the first was handled: Python runs one handler
        # call for signals that arrive together.
        while "stop requested by SIGINT" not in (line := proc.stderr.readline()):
            assert line, "stderr ended before the first signal was logged"
        time.sleep(0.3)
        assert proc.poll() is None, "the first signal must not end the process"
        start = time.time()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        elapsed = time.time() - start
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert elapsed < 1.0, elapsed
    assert "second signal: aborting without saving" in proc.stderr.read()
    assert "slept through" not in lines.rest()


def test_check_raises_preempted_after_a_signal_and_handlers_come_back():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with StopRequest() as stop:
        stop.check()
        assert not stop.should_stop(1)
        with pytest.raises(RuntimeError, match="already active"):
            StopRequest().__enter__()
        signal.raise_signal(signal.SIGTERM)
        assert stop.signal == signal.SIGTERM
        with pytest.raises(Preempted, match="SIGTERM"):
            stop.check()
        assert stop.should_stop(2) and stop.should_stop(3)
    assert {sig: signal.getsignal(sig) for sig in before} == before
    with StopRequest() as again:  # usable again once the first has exited
        assert again.signal is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "service, signum, target, case",
    [
        ("true", signal.SIGTERM, 1, "loop"),  # JAX's preemption notifier; to a non-coordinator
        # SIGINT goes to the notifier as SIGTERM; Python handlers installed before
        # jax.distributed.initialize were replaced natively by its C++ handler of SIGTERM
        ("true", signal.SIGINT, 0, "early_handlers"),
        ("true", signal.SIGTERM, 0, "before_first_step"),
        ("false", signal.SIGTERM, 1, "loop"),  # service off: an allgather of the flags every step
    ],
)
def test_two_processes_stop_at_the_same_step(tmp_path, service, signum, target, case):
    step_s = 0.2
    port = _free_port()
    procs, outputs, errs = [], [], []
    for pid in range(2):
        errs.append(open(tmp_path / f"err{pid}.txt", "w+"))
        env = dict(
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
            JAX_PLATFORMS="cpu",
            JAX_ENABLE_PREEMPTION_SERVICE=service,
        )
        code = TWO_PROCESS_LOOP.format(repo=REPO, step_s=step_s, case=case)
        procs.append(_start(code, env, errs[-1]))
        outputs.append(_Lines(procs[-1]))
    try:
        if case == "before_first_step":
            outputs[target].wait_for("ready", timeout=120)
            signalled_after = 101
        else:
            signalled_after = int(outputs[target].wait_for("step 3", timeout=120).split()[1])
        procs[target].send_signal(signum)
        stopped = []
        for proc, out, err in zip(procs, outputs, errs, strict=True):
            proc.wait(timeout=60)
            err.seek(0)
            log = err.read()
            assert proc.returncode == 0, log[-3000:]
            # Without the fallback, only JAX's sync point can have stopped the other process.
            assert ("comparing them across processes every step" in log) == (service == "false")
            stopped.append([line.split() for line in out.rest() if line.startswith("stopped")])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for err in errs:
            err.close()
    assert [len(s) for s in stopped] == [1, 1], stopped
    steps = [int(s[0][1]) for s in stopped]
    assert steps[0] == steps[1], steps
    # The notifier polls its flag once a second; the allgather sees it at the next step.
    most = int(1.5 / step_s) + 2 if service == "true" else 2
    assert signalled_after <= steps[0] <= signalled_after + most, (signalled_after, steps)
    assert stopped[target][0][2] == str(int(signum))
    assert stopped[1 - target][0][2] == "None"
