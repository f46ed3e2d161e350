"""Exact resume: a run stopped by SIGTERM and relaunched equals an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from tests.conftest import REPO, launch

NUM_STEPS = 60
ARGS = [
    "--config=configs/vae.py:preset=smoke",
    f"--config.train.num_steps={NUM_STEPS}",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=1000",
    "--config.train.sample_every=0",
]


def _metrics(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _interrupted_run(workdir):
    process = subprocess.Popen(
        [sys.executable, "launch.py", *ARGS, f"--workdir={workdir}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not _metrics(workdir) and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-2000:]
    return stderr


def test_sigterm_then_relaunch_matches_uninterrupted_run(tmp_path):
    straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
    assert launch(*ARGS, f"--workdir={straight}").returncode == 0

    stderr = _interrupted_run(stopped)
    assert "stopped by signal" in stderr
    stop_step = max(int(s) for s in os.listdir(os.path.join(stopped, "checkpoints")))
    assert 0 < stop_step < NUM_STEPS
    relaunched = launch(*ARGS, f"--workdir={stopped}")
    assert relaunched.returncode == 0, relaunched.stderr[-2000:]
    assert "resumed from checkpoint" in relaunched.stderr

    for workdir in (straight, stopped):
        assert launch(*ARGS, "--mode=sample", f"--workdir={workdir}").returncode == 0
    a = np.load(os.path.join(straight, "samples", f"samples_{NUM_STEPS}.npz"))["images"]
    b = np.load(os.path.join(stopped, "samples", f"samples_{NUM_STEPS}.npz"))["images"]
    np.testing.assert_array_equal(a, b)
    last = {m["step"]: m["loss"] for m in _metrics(straight)}
    for m in _metrics(stopped):
        assert m["loss"] == last[m["step"]], m["step"]
