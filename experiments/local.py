"""Runs a sweep on this machine: each pending stage of each run, one after the other.

A stage is a launcher command (:func:`experiments.commands.command`) run through a
:data:`Runner`; its output goes to ``<root>/<run>/logs/<stage>.log``. A stage already done
(:func:`experiments.run_state.pending_stages`) is skipped, so running a sweep again resumes it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable

from experiments import rundir
from experiments.commands import REPO, STAGES, command, workdir
from experiments.run_state import (
    check_record,
    is_finished,
    pending_stages,
    prepare_shared,
    record,
    training_dir,
    write_json,
)
from experiments.spec import Sweep

# runner(argv, log_path) -> exit status; argv is command(): [*prefix, "python", "launch.py", ...]
Runner = Callable[[list[str], str], int]


def _with_interpreter(argv: list[str]) -> list[str]:
    """``argv`` with the ``python`` before ``launch.py`` replaced by this interpreter."""
    i = argv.index("launch.py") - 1
    return [*argv[:i], sys.executable, *argv[i + 1 :]]


def subprocess_runner(argv: list[str], log_path: str) -> int:
    """Runs a launcher command from the repository root, appending its output to ``log_path``."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.run(
            _with_interpreter(argv), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    return proc.returncode


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def run_sweep(
    sweep: Sweep,
    root: str,
    preset: str,
    only: list[str] | None = None,
    runner: Runner = subprocess_runner,
    out=None,
    prefix=(),
) -> dict[str, str]:
    """Runs the pending stages of every run (of ``only``, when given) in dependency order.

    Returns run name -> ``finished`` (now), ``skipped`` (finished before), ``failed`` (a
    launcher command failed, or exited 0 without finishing its stage, e.g. training stopped by
    a signal: run the sweep again to resume) or ``blocked`` (a run it depends on is not
    finished).
    """
    selected = set(only or sweep.names())
    runs = [r for r in sweep.runs if r.name in selected]  # dependency order
    records = {r.name: record(sweep, r, root, preset) for r in runs}
    for r in runs:
        check_record(r, root, records[r.name])
    outcome: dict[str, str] = {}

    def say(text: str) -> None:
        print(text, file=out or sys.stdout, flush=True)

    for i, run in enumerate(runs, 1):
        head = f"[{i}/{len(runs)}] {run.name}"
        blocked = [
            d
            for d in run.dependencies()
            if outcome.get(d) in ("failed", "blocked") or not is_finished(sweep, root, sweep.run(d))
        ]
        if blocked:
            outcome[run.name] = "blocked"
            say(f"{head}: blocked, {', '.join(blocked)} has not finished")
            continue
        if not pending_stages(sweep, root, run):
            outcome[run.name] = "skipped"
            say(f"{head}: finished before, skipped")
            continue
        write_json(os.path.join(workdir(root, run), "sweep.json"), records[run.name])
        if run.shares_training_with:
            prepare_shared(sweep, root, run)
        outcome[run.name] = "finished"
        for stage in STAGES:
            if stage not in pending_stages(sweep, root, run):
                continue
            log_path = os.path.join(workdir(root, run), "logs", f"{stage}.log")
            say(f"{head}: {stage} (log: {log_path})")
            start = time.time()
            status = runner(command(run, root, preset, stage, prefix), log_path)
            if status != 0:
                outcome[run.name] = "failed"
                say(f"{head}: {stage} FAILED (exit status {status}); end of {log_path}:")
                say(_tail(log_path))
                break
            if stage in pending_stages(sweep, root, run):
                outcome[run.name] = "failed"
                step = rundir.latest_checkpoint_step(training_dir(sweep, root, run))
                say(
                    f"{head}: {stage} exited 0 but did not finish (latest checkpoint step: "
                    f"{step}); run the sweep again to resume"
                )
                break
            say(f"{head}: {stage} done in {time.time() - start:.1f} s")
    return outcome


def dry_run(sweep: Sweep, root: str, preset: str, only=None, out=None, prefix=()):
    """Prints the commands a local sweep would run now (one ``# <run>: ...`` header per run)."""
    out = out or sys.stdout
    names = set(only or sweep.names())
    for run in sweep.runs:
        if run.name not in names:
            continue
        pending = pending_stages(sweep, root, run)
        if not pending:
            print(f"# {run.name}: finished, skipped", file=out)
            continue
        print(f"# {run.name}: {', '.join(pending)}", file=out)
        if run.shares_training_with:
            link = os.path.join(workdir(root, run), "checkpoints")
            target = f"../{run.shares_training_with}/checkpoints"
            print(shlex.join(["ln", "-sfn", target, link]), file=out)
        for stage in pending:
            print(shlex.join(command(run, root, preset, stage, prefix)), file=out)
