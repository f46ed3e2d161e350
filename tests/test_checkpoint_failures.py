"""Checkpoint failures that must end promptly and cleanly.

* A checkpoint that cannot be written while async checkpointing is on (the default) is one
  ``error:`` line and exit status 2 within seconds, the earlier checkpoints intact: Orbax
  used to create the step's folder in a background thread whose failure left its item
  writers waiting 300 s for a "created" signal.
* Sampling beside a training launch that rotates its checkpoints reads the newest one: a
  step removed (or superseded) between listing and reading is looked for again, not
  reported as corrupt.
* A checkpoint whose array files are damaged is one ``error:`` line naming the damaged array,
  without the hundreds of tracebacks of the reads Orbax abandons with the failed one.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import checkpoints as checkpoints_module
from jaxgen import restore_failures
from jaxgen.checkpoints import MAX_RELISTS, Checkpoints, list_steps
from jaxgen.errors import UserError
from tests.conftest import REPO, launch, tree_digest

VAE = f"--config={REPO}/configs/vae.py:preset=smoke"
# What lets root write into a folder whose mode forbids it; dropped from the bounding set,
# root is refused like any other user.
DAC_CAPS = "-dac_override,-dac_read_search,-fowner"


# --- a failed asynchronous write ---------------------------------------------------------------
def _unprivileged_prefix() -> list[str]:
    """The command prefix under which a read-only folder refuses this user's writes."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: root writes anywhere")
    prefix = [setpriv, f"--bounding-set={DAC_CAPS}"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root and cannot drop capabilities: {probe.stderr.strip()}")
    return prefix


def test_failed_async_checkpoint_write_ends_promptly(tmp_path):
    prefix = _unprivileged_prefix()
    workdir = str(tmp_path / "run")
    trained = launch(VAE, f"--workdir={workdir}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt_dir = os.path.join(workdir, "checkpoints")
    assert list_steps(workdir) == [2, 4]
    before = {step: tree_digest(os.path.join(ckpt_dir, str(step))) for step in (2, 4)}
    os.chmod(ckpt_dir, 0o555)
    try:
        result = subprocess.run(
            [*prefix, sys.executable, os.path.join(REPO, "launch.py"),
             f"--workdir={workdir}", "--config.train.num_steps=6"],
            cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
            capture_output=True, text=True, timeout=400,
        )  # fmt: skip
    finally:
        os.chmod(ckpt_dir, 0o755)
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("INFO:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: cannot write checkpoint"), lines
    assert "step 4 is the newest intact one" in lines[0], lines
    # The hang ended, 300 s later, in Orbax's "Timeout waiting for key ..." tracebacks.
    assert "Traceback" not in result.stderr
    assert list_steps(workdir) == [2, 4]
    assert {step: tree_digest(os.path.join(ckpt_dir, str(step))) for step in (2, 4)} == before
    assert not os.path.exists(os.path.join(workdir, ".jaxgen.lock"))


# --- steps rotated away while they are read ---------------------------------------------------
def _state(value: float):
    return {"w": jnp.full((64, 8), value, jnp.float32), "step": jnp.asarray(int(value))}


ABSTRACT = jax.eval_shape(lambda: _state(0.0))


@pytest.fixture
def two_steps(tmp_path) -> str:
    """A workdir with checkpoints 2 and 4."""
    workdir = str(tmp_path / "run")
    writer = Checkpoints(workdir, keep=3)
    for step in (2, 4):
        writer.save(step, _state(float(step)), {"epoch": step})
    writer.close()
    assert list_steps(workdir) == [2, 4]
    return workdir


def _before_reading(monkeypatch, action) -> list[int]:
    """Runs ``action(step)`` when a reader is about to read a step's files (between its
    listing and its restore); returns the steps read, in order."""
    read = []
    check_fits = Checkpoints.check_fits

    def hooked(self, step, abstract_state):
        read.append(step)
        action(step)
        return check_fits(self, step, abstract_state)

    monkeypatch.setattr(Checkpoints, "check_fits", hooked)
    return read


def test_sampling_reads_the_step_a_training_launch_saved_meanwhile(two_steps, monkeypatch, caplog):
    """Step 4 is listed, then a training launch (keep_checkpoints=1) saves 6 and rotates 2 and
    4 away before 4 is read: the reader restores 6, without calling anything corrupt."""
    reader = Checkpoints(two_steps, read_only=True)
    trainer = Checkpoints(two_steps, keep=1)

    def train_a_step(step):
        if step == 4:
            trainer.save(6, _state(6.0), {"epoch": 6})
            trainer.close()
            assert list_steps(two_steps) == [6]

    read = _before_reading(monkeypatch, train_a_step)
    with caplog.at_level(logging.INFO, logger="jaxgen"):
        step, state, data = reader.restore_latest(ABSTRACT, fall_back=True)
    reader.close()
    assert (step, int(state["step"]), data) == (6, 6, {"epoch": 6})
    assert read == [4, 6]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "checkpoint 4 was removed while it was read" in caplog.text


def test_a_step_removed_meanwhile_is_not_reported_corrupt(two_steps, monkeypatch, caplog):
    """Step 4 disappears between listing and reading (no newer one): step 2 is restored,
    without a warning that 4 is corrupt."""
    reader = Checkpoints(two_steps, read_only=True)

    def remove(step):
        if step == 4:
            shutil.rmtree(os.path.join(two_steps, "checkpoints", "4"))

    read = _before_reading(monkeypatch, remove)
    with caplog.at_level(logging.INFO, logger="jaxgen"):
        step, state, _ = reader.restore_latest(ABSTRACT, fall_back=True)
    reader.close()
    assert (step, int(state["step"])) == (2, 2)
    assert read == [4, 2]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_corrupt_step_is_still_reported_and_skipped(two_steps, caplog):
    state_dir = os.path.join(two_steps, "checkpoints", "4", "state")
    for root, _, files in os.walk(state_dir):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    reader = Checkpoints(two_steps, read_only=True)
    with caplog.at_level(logging.INFO, logger="jaxgen"):
        step, _, _ = reader.restore_latest(ABSTRACT, fall_back=True)
    reader.close()
    assert step == 2
    assert "checkpoints/4 cannot be restored" in caplog.text
    assert "falling back" in caplog.text
    assert "looking again" not in caplog.text


def test_the_steps_are_listed_again_a_bounded_number_of_times(two_steps, monkeypatch, caplog):
    """Every step read is superseded by a newer one at once: the reader gives up after
    MAX_RELISTS listings with the usual error rather than chasing the writer forever."""
    reader = Checkpoints(two_steps, read_only=True)
    directory = os.path.join(two_steps, "checkpoints")

    def supersede(step):
        newest = max(list_steps(two_steps))
        os.rename(os.path.join(directory, str(step)), os.path.join(directory, str(newest + 2)))

    read = _before_reading(monkeypatch, supersede)
    with pytest.raises(UserError, match="can be restored"):
        reader.restore_latest(ABSTRACT, fall_back=True)
    reader.close()
    assert len(read) == MAX_RELISTS + 2, read  # each newest in turn, then the last fall-back
    assert checkpoints_module.MAX_RELISTS == MAX_RELISTS


# --- a damaged array file ------------------------------------------------------------------------
def test_a_damaged_array_file_is_one_line_naming_the_array(tmp_path):
    """Resuming from a checkpoint whose array data files are overwritten is one ``error:``
    line that names TensorStore's cause (the array and the file), not Orbax's unprintable
    TensorStore spec, without the tracebacks of the reads abandoned with the failed one."""
    workdir = str(tmp_path / "run")
    trained = launch(VAE, f"--workdir={workdir}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    data_dir = os.path.join(workdir, "checkpoints", "4", "state", "ocdbt.process_0", "d")
    rng = np.random.default_rng(0)
    for name in os.listdir(data_dir):
        with open(os.path.join(data_dir, name), "wb") as f:
            f.write(rng.integers(0, 256, 100, dtype=np.uint8).tobytes())
    result = launch(VAE, f"--workdir={workdir}", "--config.train.num_steps=6")
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("INFO:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: checkpoint "), lines[0]
    assert "checkpoints/4 cannot be restored" in lines[0], lines[0]
    assert "in OCDBT database" in lines[0] and "bound method" not in lines[0], lines[0]
    assert list_steps(workdir) == [2, 4]


async def _read_array_index_and_device_put():  # named as Orbax's read coroutine
    return None


def test_only_the_reports_of_abandoned_reads_are_dropped(monkeypatch, caplog):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    monkeypatch.setattr(restore_failures, "_installed", False)
    asyncio_log = logging.getLogger("asyncio")
    monkeypatch.setattr(asyncio_log, "filters", [])
    restore_failures.quiet_abandoned_reads()
    restore_failures.quiet_abandoned_reads()  # a second call installs nothing more

    def report(error, obj=None):
        return types.SimpleNamespace(exc_type=type(error), exc_value=error, object=obj)

    coroutine = _read_array_index_and_device_put()
    closed_loop = report(RuntimeError("Event loop is closed"))
    abandoned = report(Exception("Encountered error while reading array index"), coroutine)
    others = [report(RuntimeError("another error")), report(ValueError("x"), object())]
    for each in [closed_loop, abandoned, *others]:
        sys.unraisablehook(each)
    coroutine.close()
    assert seen == others

    # A finished task or future whose read error nobody retrieved: asyncio logs it as an error.
    tensorstore_error = ValueError(
        'OUT_OF_RANGE: Error reading "params.encoder.Conv_4.kernel/0.0.0.0" in OCDBT database'
    )
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for error in (Exception("Encountered error while reading array index: (0,)"),
                      tensorstore_error, ValueError("another task's error"),
                      ValueError("Error reading a config file")):  # fmt: skip
            asyncio_log.error("Future exception was never retrieved", exc_info=error)
    assert [str(r.exc_info[1]) for r in caplog.records] == [
        "another task's error",
        "Error reading a config file",
    ]
