"""Preemption soak: signals the smoke VAE at random moments, relaunches it, and checks that
the interrupted training ends where an uninterrupted one does, bit for bit.

    python benchmarks/preemption.py --signal=TERM             # 100 SIGTERMs
    python benchmarks/preemption.py --signal=KILL             # 50 SIGKILLs
    python benchmarks/preemption.py --signal=TERM --quick     # 3, to try the script

Not part of the test suite: on a CPU one launch takes about half a minute, so 100 signals take
about an hour. Every launch is ``python launch.py --config=configs/vae.py:preset=smoke`` with
``train.num_steps``, ``train.checkpoint_every``, ``train.sample_every`` from the flags,
``train.log_every=1`` and ``sample.timing_repeats=0``.

1. Reference: one uninterrupted training launch in ``<root>/reference_<settings>/run`` (reused
   when its samples exist), then ``--mode=sample``. Its training wall time is ``T``.
2. Rounds, each in a fresh ``<root>/<signal>_<time>/round_<i>/run``: launch ``--mode=train``; send
   the signal either after a delay drawn uniformly from ``[0, T]`` or at once when a new
   ``checkpoints/<step>`` directory appears (half of the signals each, at random); wait for the
   exit and relaunch, until training reaches ``num_steps``. A finished round is followed by a
   new one while signals remain; after the last signal the round runs to completion unsignalled.
3. Each finished round: ``--mode=sample``; ``samples/samples_<num_steps>.npz`` and every array of
   the final checkpoint are compared with the reference's (``np.array_equal``).

Before each launch the newest complete checkpoint (a ``checkpoints/<digits>`` directory: Orbax
writes into a temporary name and renames it when complete) is noted and compared with the
launch's own "resumed from checkpoint at step N" log line. ``metrics.jsonl`` of each round is
read with :func:`jaxgen.metric_writer.read_metrics`: each step ``1..num_steps`` should carry one
training row (a row with ``loss``).

Prints one line per launch, then the summary: ``N/<signals> exit 0`` (TERM; exit codes for
KILL), ``bit-for-bit: yes|no``, ``resumed from last complete checkpoint: M/<relaunches>``,
``metrics.jsonl: K missing, R repeated``, and one JSON record (appended to ``--out`` if given).
Launch logs are kept beside each ``run`` (the launcher takes no foreign files in a workdir).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jaxgen.errors import UserError  # noqa: E402
from jaxgen.metric_writer import read_metrics  # noqa: E402

SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL}
DEFAULT_TIMES = {"TERM": 100, "KILL": 50}
RESUMED = re.compile(r"resumed from checkpoint at step (\d+)")
LOGGED_STEP = re.compile(r"step (\d+)/\d+")
POLL_S = 0.005  # checkpoint-directory polling period
FAILURES_IN_A_ROW = 2  # unsignalled launches that fail before a round is given up


@dataclasses.dataclass
class Launch:
    """One training launch of a round."""

    round: int
    index: int
    log: str
    plan: str  # "uniform" | "after_checkpoint" | "none"
    newest_before: int | None  # newest complete checkpoint step when it was launched
    signal_after_s: float | None = None  # None: no signal sent (the launch ended first)
    new_checkpoint: int | None = None  # the step whose appearance triggered the signal
    exit_code: int | None = None
    hung: bool = False  # did not exit within the grace period and was killed
    resumed_from: int | None = None  # from its log line
    first_logged_step: int | None = None

    @property
    def signalled(self) -> bool:
        return self.signal_after_s is not None

    def resumed_right(self) -> bool | None:
        """Whether it restored the newest complete checkpoint (or started fresh when there was
        none); None when it exited before restoring anything."""
        if self.resumed_from is not None:
            return self.resumed_from == self.newest_before
        if self.first_logged_step is None:
            return None
        return self.newest_before is None and self.first_logged_step == 1


@dataclasses.dataclass
class Round:
    index: int
    dir: str  # the launch logs; the run itself is in ``<dir>/run``
    launches: list[Launch] = dataclasses.field(default_factory=list)
    finished: bool = False
    samples_equal: bool | None = None
    checkpoint_equal: bool | None = None
    missing: list[int] = dataclasses.field(default_factory=list)
    repeated: dict[int, int] = dataclasses.field(default_factory=dict)
    metrics_error: str = ""

    @property
    def workdir(self) -> str:
        return os.path.join(self.dir, "run")


# --- launches ----------------------------------------------------------------------------------
def complete_steps(workdir: str) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def launcher_argv(args, workdir: str, mode: str) -> list[str]:
    return [
        sys.executable,
        "launch.py",
        "--config=configs/vae.py:preset=smoke",
        f"--workdir={workdir}",
        f"--mode={mode}",
        f"--config.train.num_steps={args.num_steps}",
        f"--config.train.checkpoint_every={args.checkpoint_every}",
        "--config.train.log_every=1",
        f"--config.train.sample_every={args.sample_every}",
        "--config.sample.timing_repeats=0",
    ]


def _popen(argv: list[str], log):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


def run_to_end(argv: list[str], log_path: str, timeout_s: float) -> tuple[int, float]:
    """(exit code, seconds) of one unsignalled launch; -9 when it ran past ``timeout_s``."""
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = _popen(argv, log)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        except BaseException:  # e.g. Ctrl-C: leave no launch behind
            proc.kill()
            proc.wait()
            raise
    return code, time.monotonic() - start


def _wait_for_new_checkpoint(proc, workdir: str, before: list[int]) -> int | None:
    """Polls until a checkpoint step not in ``before`` is complete; None if ``proc`` ends."""
    while proc.poll() is None:
        new = sorted(set(complete_steps(workdir)) - set(before))
        if new:
            return new[-1]
        time.sleep(POLL_S)
    return None


def _signal_and_wait(proc, launch: Launch, before: list[int], workdir: str, sig, delay, timeout_s):
    """Sends ``sig`` to ``proc`` per ``launch.plan``, then waits for its exit (``timeout_s`` at
    most, then SIGKILL) and fills in what happened. ``before``: the complete checkpoint steps
    when it was launched."""
    start = time.monotonic()
    send = False
    if launch.plan == "uniform":
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            send = True
    elif launch.plan == "after_checkpoint":
        launch.new_checkpoint = _wait_for_new_checkpoint(proc, workdir, before)
        send = launch.new_checkpoint is not None
    if send and proc.poll() is None:
        os.kill(proc.pid, sig)
        launch.signal_after_s = time.monotonic() - start
    try:
        launch.exit_code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        launch.exit_code = proc.wait()
        launch.hung = True


def run_launch(argv, launch: Launch, workdir: str, sig, delay: float, timeout_s: float):
    """Runs ``launch`` (see :func:`_signal_and_wait`) and reads its log."""
    before = complete_steps(workdir)
    with open(launch.log, "w") as log:
        proc = _popen(argv, log)
        try:
            _signal_and_wait(proc, launch, before, workdir, sig, delay, timeout_s)
        except BaseException:  # e.g. Ctrl-C: leave no launch behind
            proc.kill()
            proc.wait()
            raise
    with open(launch.log, errors="replace") as f:
        text = f.read()
    resumed = RESUMED.search(text)
    launch.resumed_from = int(resumed.group(1)) if resumed else None
    logged = LOGGED_STEP.search(text)
    launch.first_logged_step = int(logged.group(1)) if logged else None


def _last_line(path: str) -> str:
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1][:200] if lines else "(empty log)"


def describe(launch: Launch, sig_name: str) -> str:
    head = f"[round {launch.round} launch {launch.index}]"
    if launch.signalled:
        trigger = (
            f"new checkpoint {launch.new_checkpoint}"
            if launch.plan == "after_checkpoint"
            else "random moment"
        )
        what = f"SIG{sig_name} at {launch.signal_after_s:.1f} s ({trigger})"
    else:
        what = "no signal" + (" (it ended first)" if launch.plan != "none" else "")
    text = f"{head} {what} -> exit {launch.exit_code}" + (" (hung, killed)" if launch.hung else "")
    before = "none" if launch.newest_before is None else launch.newest_before
    if launch.resumed_from is not None:
        text += f"; resumed from {launch.resumed_from} (newest complete: {before})"
    elif launch.first_logged_step is not None:
        text += f"; started at step {launch.first_logged_step} (newest complete: {before})"
    return text


# --- comparison --------------------------------------------------------------------------------
def samples_equal(a: str, b: str) -> bool:
    import numpy as np

    if not (os.path.isfile(a) and os.path.isfile(b)):
        return False
    with np.load(a) as x, np.load(b) as y:
        return sorted(x.files) == sorted(y.files) and all(
            np.array_equal(x[k], y[k]) for k in x.files
        )


def checkpoint_arrays(workdir: str, step: int) -> dict:
    """``path -> numpy array`` of the ``state`` item of checkpoint ``step``."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    tree = ocp.StandardCheckpointer().restore(
        os.path.join(workdir, "checkpoints", str(step), "state")
    )
    return {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def arrays_equal(a: dict, b: dict) -> bool:
    import numpy as np

    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def check_metrics(rnd: Round, num_steps: int) -> None:
    path = os.path.join(rnd.workdir, "metrics.jsonl")
    try:
        rows = read_metrics(path)
    except (OSError, UserError) as e:
        rnd.metrics_error = str(e)
        return
    counts = collections.Counter(row["step"] for row in rows if "loss" in row)
    rnd.missing = [s for s in range(1, num_steps + 1) if s not in counts]
    rnd.repeated = {s: c for s, c in sorted(counts.items()) if c > 1}


# --- the soak ----------------------------------------------------------------------------------
def reference(args, root: str) -> tuple[str, float]:
    """The uninterrupted run's workdir and its training launch's wall time."""
    name = f"reference_n{args.num_steps}_c{args.checkpoint_every}_s{args.sample_every}"
    ref_dir = os.path.join(root, name)
    workdir = os.path.join(ref_dir, "run")
    timing = os.path.join(ref_dir, "soak_reference.json")
    samples = os.path.join(workdir, "samples", f"samples_{args.num_steps}.npz")
    if os.path.isfile(timing) and os.path.isfile(samples):
        with open(timing) as f:
            seconds = json.load(f)["train_seconds"]
        print(f"reference: reusing {workdir} (training took {seconds:.1f} s)", flush=True)
        return workdir, seconds
    if os.path.exists(workdir):
        raise SystemExit(f"{workdir} holds an unfinished reference run; remove it")
    os.makedirs(ref_dir, exist_ok=True)
    print(f"reference: training in {workdir}", flush=True)
    code, seconds = run_to_end(
        launcher_argv(args, workdir, "train"), os.path.join(ref_dir, "train.log"), args.timeout
    )
    if code != 0 or complete_steps(workdir)[-1:] != [args.num_steps]:
        raise SystemExit(f"the reference training failed (exit {code}); see {ref_dir}/train.log")
    code, _ = run_to_end(
        launcher_argv(args, workdir, "sample"), os.path.join(ref_dir, "sample.log"), args.timeout
    )
    if code != 0:
        raise SystemExit(f"the reference sampling failed (exit {code}); see {ref_dir}/sample.log")
    with open(timing, "w") as f:
        json.dump({"train_seconds": seconds}, f)
    print(f"reference: training took {seconds:.1f} s", flush=True)
    return workdir, seconds


def soak(args, run_dir: str, duration: float) -> list[Round]:
    """Rounds of signalled launches until ``args.times`` signals are sent and the last round
    has finished (or was given up)."""
    rng = random.Random(args.seed)
    sig = SIGNALS[args.signal]
    grace = max(120.0, 3 * duration)
    rounds: list[Round] = []
    sent = 0
    while True:
        rnd = Round(len(rounds), os.path.join(run_dir, f"round_{len(rounds)}"))
        os.makedirs(rnd.dir)
        rounds.append(rnd)
        failures = 0
        while complete_steps(rnd.workdir)[-1:] != [args.num_steps]:
            plan = rng.choice(("uniform", "after_checkpoint")) if sent < args.times else "none"
            delay = rng.uniform(0.0, duration)
            steps = complete_steps(rnd.workdir)
            launch = Launch(
                round=rnd.index,
                index=len(rnd.launches),
                log=os.path.join(rnd.dir, f"launch_{len(rnd.launches):03d}.log"),
                plan=plan,
                newest_before=steps[-1] if steps else None,
            )
            run_launch(
                launcher_argv(args, rnd.workdir, "train"), launch, rnd.workdir, sig, delay, grace
            )
            rnd.launches.append(launch)
            sent += launch.signalled
            print(describe(launch, args.signal), flush=True)
            failures = 0 if launch.signalled or launch.exit_code == 0 else failures + 1
            if failures >= FAILURES_IN_A_ROW:
                print(f"round {rnd.index}: {failures} unsignalled launches failed; given up")
                print(f"  {launch.log}: {_last_line(launch.log)}", flush=True)
                return rounds
        rnd.finished = True
        if sent >= args.times:
            return rounds
        if not any(launch.signalled for launch in rnd.launches):
            print(f"round {rnd.index} finished before any signal could be sent; stopping")
            return rounds


def compare(args, rounds: list[Round], ref_dir: str) -> None:
    ref_samples = os.path.join(ref_dir, "samples", f"samples_{args.num_steps}.npz")
    ref_arrays = checkpoint_arrays(ref_dir, args.num_steps)
    for rnd in rounds:
        check_metrics(rnd, args.num_steps)
        if not rnd.finished:
            continue
        code, _ = run_to_end(
            launcher_argv(args, rnd.workdir, "sample"),
            os.path.join(rnd.dir, "sample.log"),
            args.timeout,
        )
        samples = os.path.join(rnd.workdir, "samples", f"samples_{args.num_steps}.npz")
        rnd.samples_equal = code == 0 and samples_equal(samples, ref_samples)
        rnd.checkpoint_equal = arrays_equal(
            checkpoint_arrays(rnd.workdir, args.num_steps), ref_arrays
        )


def summarize(args, rounds: list[Round]) -> dict:
    launches = [launch for rnd in rounds for launch in rnd.launches]
    signalled = [launch for launch in launches if launch.signalled]
    codes = collections.Counter(launch.exit_code for launch in signalled)
    relaunches = [launch for launch in launches if launch.index > 0]
    right = sum(launch.resumed_right() is True for launch in relaunches)
    early = sum(launch.resumed_right() is None for launch in relaunches)
    finished = [rnd for rnd in rounds if rnd.finished]
    bit_for_bit = bool(rounds) and all(
        rnd.finished and rnd.samples_equal and rnd.checkpoint_equal for rnd in rounds
    )
    missing = sum(len(rnd.missing) for rnd in rounds)
    repeated = sum(c - 1 for rnd in rounds for c in rnd.repeated.values())
    plans = collections.Counter(launch.plan for launch in signalled)
    print()
    print(
        f"signals sent: {len(signalled)} ({plans['after_checkpoint']} right after a checkpoint, "
        f"{plans['uniform']} at a random moment) over {len(launches)} launches in "
        f"{len(rounds)} rounds ({len(finished)} finished)"
    )
    if args.signal == "TERM":
        print(f"{codes[0]}/{len(signalled)} exit 0")
        for plan in ("after_checkpoint", "uniform"):
            group = [launch for launch in signalled if launch.plan == plan]
            ok = sum(launch.exit_code == 0 for launch in group)
            print(f"  {plan}: {ok}/{len(group)} exit 0")
    print(f"exit codes after the signal: {dict(sorted(codes.items(), key=str))}")
    unsignalled_failures = [
        launch for launch in launches if not launch.signalled and launch.exit_code != 0
    ]
    failed = [launch for launch in signalled if launch.exit_code != 0 and args.signal == "TERM"]
    for launch in (failed + unsignalled_failures)[:5]:
        print(f"  exit {launch.exit_code}: {launch.log}: {_last_line(launch.log)}")
    print(f"bit-for-bit: {'yes' if bit_for_bit else 'no'}")
    for rnd in rounds:
        if not (rnd.finished and rnd.samples_equal and rnd.checkpoint_equal):
            print(
                f"  round {rnd.index}: finished={rnd.finished} samples equal={rnd.samples_equal} "
                f"final checkpoint equal={rnd.checkpoint_equal}"
            )
    print(
        f"resumed from last complete checkpoint: {right}/{len(relaunches)}"
        + (f" ({early} exited before restoring)" if early else "")
    )
    for launch in relaunches:
        if launch.resumed_right() is False:
            print(f"  {describe(launch, args.signal)}")
    print(f"metrics.jsonl: {missing} missing, {repeated} repeated")
    for rnd in rounds:
        if rnd.metrics_error:
            print(f"  round {rnd.index}: {rnd.metrics_error}")
        elif rnd.missing or rnd.repeated:
            print(f"  round {rnd.index}: missing {rnd.missing[:10]}, repeated {rnd.repeated}")
    return {
        "benchmark": "preemption",
        "signal": args.signal,
        "signals": len(signalled),
        "exit_codes": {str(k): v for k, v in codes.items()},
        "exit_0": codes[0],
        "launches": len(launches),
        "rounds": len(rounds),
        "rounds_finished": len(finished),
        "bit_for_bit": bit_for_bit,
        "relaunches": len(relaunches),
        "resumed_from_last_complete": right,
        "exited_before_restoring": early,
        "metrics_missing": missing,
        "metrics_repeated": repeated,
        "metrics_unreadable": sum(bool(rnd.metrics_error) for rnd in rounds),
        "num_steps": args.num_steps,
        "checkpoint_every": args.checkpoint_every,
        "seed": args.seed,
    }


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--signal", choices=sorted(SIGNALS), default="TERM")
    p.add_argument("--times", type=int, help="signals to send (default: 100 TERM, 50 KILL)")
    p.add_argument("--quick", action="store_true", help="3 signals, to try the script")
    p.add_argument("--workdir_root", help="where the runs go (default: a new temporary folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the signal plans and delays")
    p.add_argument("--num_steps", type=int, default=60)
    p.add_argument("--checkpoint_every", type=int, default=5)
    p.add_argument("--sample_every", type=int, default=20, help="sample grids while training")
    p.add_argument("--timeout", type=float, default=1800, help="seconds for one launch at most")
    p.add_argument("--out", help="append the JSON record to this JSON-lines file")
    args = p.parse_args(argv)
    args.times = 3 if args.quick else args.times or DEFAULT_TIMES[args.signal]
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    root = os.path.abspath(args.workdir_root or tempfile.mkdtemp(prefix="jaxgen_preemption_"))
    run_dir = os.path.join(root, f"{args.signal.lower()}_{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(run_dir)
    print(f"SIG{args.signal} x {args.times}; runs in {root}", flush=True)
    ref_dir, duration = reference(args, root)
    rounds = soak(args, run_dir, duration)
    compare(args, rounds, ref_dir)
    record = summarize(args, rounds)

    from benchmarks.common import write_record
    from jaxgen.hardware import hardware

    write_record({**hardware(), **record}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
