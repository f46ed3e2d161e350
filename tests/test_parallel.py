"""Data parallelism: 8 simulated CPU devices and 2 processes match one device."""

import os
import signal
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from tests.conftest import REPO, xla_flags_with_devices

ONE_STEP = r"""
import sys, jax, numpy as np
sys.path.insert(0, {repo!r})
from jaxgen.cli import load_config_file
from jaxgen.experiment import Experiment
from jaxgen.trainer import Trainer
config = load_config_file("configs/vae.py:preset=smoke")
config.train.batch_size = 16
config.train.param_sharding = {sharding!r}
exp = Experiment(config, {workdir!r})
trainer = Trainer(exp)
state = exp.init_state()
pipeline = exp.pipeline()
from jaxgen import parallel
state, metrics = trainer.step_fn(state, parallel.global_batch(next(pipeline), exp.mesh))
leaves = [np.asarray(x) for x in jax.tree.leaves(state.params)]
sharded = sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(state.params))
info = dict(loss=np.asarray(metrics["loss"]), devices=len(jax.devices()), sharded=sharded)
np.savez({out!r}, *leaves, **info)
"""


def _one_step(tmp_path, devices, sharding="replicated"):
    out = str(tmp_path / f"step_{devices}_{sharding}.npz")
    env = dict(os.environ, XLA_FLAGS=xla_flags_with_devices(devices))
    workdir = str(tmp_path / f"w{devices}{sharding}")
    code = ONE_STEP.format(repo=REPO, workdir=workdir, out=out, sharding=sharding)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out)


@pytest.fixture(scope="module")
def one_device_step(tmp_path_factory):
    return _one_step(tmp_path_factory.mktemp("one"), 1)


@pytest.mark.parametrize("sharding", ["replicated", "fsdp"])
def test_eight_devices_match_one(tmp_path, sharding, one_device_step):
    one, eight = one_device_step, _one_step(tmp_path, 8, sharding)
    assert int(one["devices"]) == 1 and int(eight["devices"]) == 8
    assert (int(eight["sharded"]) > 0) == (sharding == "fsdp")
    np.testing.assert_allclose(one["loss"], eight["loss"], atol=1e-5)
    names = [k for k in one.files if k.startswith("arr_")]
    assert names
    for name in names:
        np.testing.assert_allclose(one[name], eight[name], atol=1e-5, err_msg=name)


TWO_PROCESS = r"""
import os, sys, jax, numpy as np
sys.path.insert(0, {repo!r})
from jaxgen import runtime
runtime.initialize()
from jaxgen.cli import load_config_file
from jaxgen.preemption import Preempted
from jaxgen.run import run
config = load_config_file("configs/vae.py:preset=smoke")
config.train.num_steps = 10_000
config.train.log_every = 1
config.train.checkpoint_every = 0
config.train.sample_every = 0
try:
    run(config, {workdir!r}, "train")
    raise SystemExit("never stopped")
except Preempted:
    stopped = max(int(s) for s in os.listdir(os.path.join({workdir!r}, "checkpoints")))
print("stopped after step", stopped, flush=True)
config.train.num_steps = stopped + 2  # resume in the same processes, to the end
state = run(config, {workdir!r}, "train")
leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(state.params)]
np.savez({out!r}.format(jax.process_index()), processes=jax.process_count(), *leaves)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_stop_together_resume_and_only_process_0_writes(tmp_path):
    """SIGTERM to process 1 alone: both stop after the same step (JAX's preemption sync
    point), process 0 saves it, both resume from it; one writer, each step logged once."""
    workdir = str(tmp_path / "run")
    out = str(tmp_path / "params_{}.npz")
    code = TWO_PROCESS.format(repo=REPO, workdir=workdir, out=out)
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(
            os.environ,
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
            JAX_PLATFORMS="cpu",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            )
        )  # fmt: skip
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics)):
        assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    stopped = []
    for p in procs:
        out_text, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-3000:]
        stopped.append(out_text.split("stopped after step")[1].split()[0])
    assert stopped[0] == stopped[1], stopped
    last = int(stopped[0]) + 2
    p0, p1 = np.load(out.format(0)), np.load(out.format(1))
    assert int(p0["processes"]) == 2
    for name in (k for k in p0.files if k.startswith("arr_")):
        np.testing.assert_array_equal(p0[name], p1[name])
    from jaxgen.metric_writer import read_metrics

    steps = [row["step"] for row in read_metrics(metrics) if "loss" in row]
    assert steps == list(range(1, last + 1)), steps  # one writer, each step once
    assert len(os.listdir(os.path.join(workdir, "tb"))) == 2  # one events file per launch


def test_cpu_xla_flags_are_added_once_and_can_be_turned_off(monkeypatch):
    from jaxgen import runtime

    monkeypatch.delenv("JAXGEN_CPU_XLA_FLAGS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.setattr(runtime, "CPU_XLA_FLAGS", {"0.10": "--xla_a=1 --xla_b=2"})
    monkeypatch.setattr("jaxlib.__version__", "0.10.7")
    runtime.add_cpu_xla_flags()
    runtime.add_cpu_xla_flags()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2 --xla_a=1 --xla_b=2"
    monkeypatch.setenv("XLA_FLAGS", "--xla_b=5")  # the user's value wins
    runtime.add_cpu_xla_flags()
    assert os.environ["XLA_FLAGS"] == "--xla_b=5 --xla_a=1"
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr("jaxlib.__version__", "0.11.0")  # not measured there: nothing added
    runtime.add_cpu_xla_flags()
    assert os.environ["XLA_FLAGS"] == ""
    monkeypatch.setattr("jaxlib.__version__", "0.10.2")
    monkeypatch.setenv("JAXGEN_CPU_XLA_FLAGS", "")
    runtime.add_cpu_xla_flags()
    assert os.environ["XLA_FLAGS"] == ""


def test_keep_host_memory_sets_mallopt_only_for_a_one_core_cpu_process(monkeypatch):
    from jaxgen import runtime

    calls = []

    def mallopt(param, value):
        calls.append((param, value))
        return 1

    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: types.SimpleNamespace(mallopt=mallopt))
    monkeypatch.setattr(runtime.platform, "system", lambda: "Linux")
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.delenv("JAXGEN_KEEP_HOST_MEMORY", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert runtime.keep_host_memory()
    assert calls == [(-8, 1), (-4, 0), (-1, 2**31 - 1)]  # one arena, no mmap, no trimming
    calls.clear()
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1})  # two cores
    assert not runtime.keep_host_memory()
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")  # an accelerator process: left alone
    assert not runtime.keep_host_memory()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("JAXGEN_KEEP_HOST_MEMORY", "0")
    assert not runtime.keep_host_memory()
    monkeypatch.delenv("JAXGEN_KEEP_HOST_MEMORY")
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("", ""))  # musl, macOS
    assert not runtime.keep_host_memory()
    assert calls == []
