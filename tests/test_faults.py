"""The fault matrix: the ways a long run gets hurt, and what the launcher does about each.

Every case asserts the exit status; where the launch is refused, that standard error stays
within three lines besides progress (``INFO``) lines, the last naming the problem; and, by
hash, that the files it must not touch did not change. The README's "What happens when
..." table lists the same cases.

Most launches run in this process (``conftest.run_cli``: the same ``main`` as
``launch.py``, with its compiled functions kept warm); the ones that need a signal, a
second process or 8 devices run ``launch.py`` as a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest

from tests.conftest import (
    REPO,
    assert_refused,
    launch,
    run_cli,
    state_digest,
    tree_digest,
    xla_flags_with_devices,
)

VAE = f"--config={REPO}/configs/vae.py:preset=smoke"
VAE_CLASS = f"--config={REPO}/configs/vae.py:preset=smoke,cond=class"
VAE_TEXT = f"--config={REPO}/configs/vae.py:preset=smoke,cond=text"
DDPM = f"--config={REPO}/configs/ddpm.py:preset=smoke"
DDPM_PUBLISHED = f"--config={REPO}/configs/ddpm.py:data=fashion_mnist"
PIXELCNN = f"--config={REPO}/configs/pixelcnn.py:preset=smoke"
STYLE = f"--config={REPO}/configs/style_transfer.py:preset=smoke"
GAN = f"--config={REPO}/configs/gan.py:preset=smoke"
SMOKE_STEPS = 4  # train.num_steps of the smoke presets


def train_in_process(workdir: str, *args: str) -> None:
    from jaxgen.cli import main

    assert main(["launch.py", VAE, f"--workdir={workdir}", *args]) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
    """A finished smoke VAE run (checkpoints 2 and 4, metrics, samples, eval)."""
    workdir = str(tmp_path_factory.mktemp("faults") / "vae")
    train_in_process(workdir)
    return workdir


@pytest.fixture
def run_copy(trained, tmp_path) -> str:
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    return workdir


def metric_steps(workdir: str) -> list[int]:
    from jaxgen.metric_writer import read_metrics

    rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    return [row["step"] for row in rows if "loss" in row]


# --- 4. bad input on a fresh workdir: refused before anything is written ---------------------
def _write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _safetensors_without_offsets(path) -> str:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1]}}).encode()
    return _write(path, struct.pack("<Q", len(header)) + header + b"\0" * 4)


BAD_INPUT = {
    "unknown key": ([VAE, "--config.train.bogus=3"], "unknown config key 'train.bogus'"),
    "wrong type": ([VAE, "--config.train.num_steps=many"], "train.num_steps='many'"),
    "unknown config argument": ([f"{VAE},colour=red"], "'colour'"),
    "negative gan.clusters": ([GAN, "--config.gan.clusters=-1"], "gan.clusters=-1: expected >= 0"),
    "clusters with labels": (
        [f"{GAN},cond=class", "--config.gan.clusters=4"],
        "gan.clusters=4: for GANs trained without labels or text",
    ),
    "negative gan.info_weight": (
        [GAN, "--config.gan.info_codes=2", "--config.gan.info_weight=-1"],
        "gan.info_weight=-1.0: expected >= 0",
    ),
    "config argument twice": (
        [f"{VAE},cond=class,cond=none"],
        "config argument 'cond' given twice (cond='class' and cond='none'); give it once",
    ),
    "unknown mode": ([VAE, "--mode=dance"], "--mode='dance'"),
    "missing dataset": ([VAE, "--config.data.name=tfds:no_such_dataset"], "no_such_dataset"),
    "mistyped data.dir": ([VAE, "--config.data.dir=/no/such/fashion"], "data.dir"),
    "num_steps < 0": ([VAE, "--config.train.num_steps=-1"], "train.num_steps=-1"),
    "log_every 0": ([VAE, "--config.train.log_every=0"], "train.log_every=0"),
    "checkpoint_every < 0": ([VAE, "--config.train.checkpoint_every=-5"], "checkpoint_every"),
    "keep_checkpoints 0": ([VAE, "--config.train.keep_checkpoints=0"], "keep_checkpoints"),
    "sample.num 0": ([VAE, "--config.sample.num=0"], "sample.num=0"),
    "batch larger than the data": (
        [f"{VAE},data=digits", "--config.train.batch_size=4096"],
        "train.batch_size=4096",
    ),
    "label out of range": ([VAE_CLASS, "--config.sample.label=10"], "sample.label=10"),
    "unknown diffusion sampler": ([DDPM, "--config.sample.sampler=rk45"], "sample.sampler"),
    "negative sampler steps": ([DDPM, "--config.sample.steps=-3"], "sample.steps"),
    "negative guidance": ([DDPM, "--config.sample.guidance=-1"], "sample.guidance"),
    "unknown PixelCNN sampler": ([PIXELCNN, "--config.sample.sampler=turbo"], "sample.sampler"),
    "missing prompts file": (
        [VAE_TEXT, "--config.sample.prompts_file=/no/such/prompts.txt"],
        "sample.prompts_file",
    ),
    "missing init_from": ([VAE, "--config.init_from=/no/such/run"], "init_from"),
    "Inception weights not given": ([DDPM_PUBLISHED], "evals.quality"),
    "Inception weights missing": (
        [DDPM_PUBLISHED, "--config.evals.quality.inception_weights=/no/such/inception.npz"],
        "/no/such/inception.npz",
    ),
    "unknown --allow_config_change key": ([VAE, "--allow_config_change=model.bogus"], "bogus"),
    "no --config for a new workdir": (["--mode=sample"], "--config is required for a new workdir"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_refused_before_the_first_write(case, tmp_path, capfd):
    args, expected = BAD_INPUT[case]
    workdir = tmp_path / "new"
    assert_refused(run_cli(capfd, *args, f"--workdir={workdir}"), expected)
    assert not workdir.exists()


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("prompts.txt", b"\xff\xfe bad bytes\n", "UTF-8"),
        ("prompts.txt", b"\n  \n", "prompts"),
    ],
)
def test_bad_prompts_file_is_refused(name, content, expected, tmp_path, capfd):
    path = _write(tmp_path / name, content)
    workdir = tmp_path / "new"
    result = run_cli(
        capfd, VAE_TEXT, f"--config.sample.prompts_file={path}", f"--workdir={workdir}"
    )
    assert_refused(result, "sample.prompts_file", expected)
    assert not workdir.exists()


@pytest.mark.parametrize("kind", ["truncated npz", "safetensors without data_offsets"])
def test_broken_weight_file_is_one_line_naming_it(kind, tmp_path, capfd):
    if kind == "truncated npz":
        weights = _write(tmp_path / "inception.npz", b"PK\x03\x04 truncated")
    else:
        weights = _safetensors_without_offsets(tmp_path / "inception.safetensors")
    workdir = tmp_path / "new"
    result = run_cli(
        capfd,
        DDPM_PUBLISHED,
        f"--config.evals.quality.inception_weights={weights}",
        f"--workdir={workdir}",
    )
    assert_refused(result, weights)
    assert not workdir.exists()


def test_init_from_with_other_shapes_is_refused(trained, tmp_path, capfd):
    workdir = tmp_path / "new"
    result = run_cli(
        capfd,
        VAE,
        f"--config.init_from={trained}",
        "--config.model.hidden_dim=48",
        f"--workdir={workdir}",
    )
    assert_refused(result, "init_from")
    assert not workdir.exists()


def test_batch_not_divisible_by_8_devices_is_refused(tmp_path):
    workdir = tmp_path / "new"
    result = launch(
        VAE,
        "--config.train.batch_size=12",
        f"--workdir={workdir}",
        env={"XLA_FLAGS": xla_flags_with_devices(8)},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 3 and "train.batch_size=12" in lines[-1] and "8 devices" in lines[-1]
    assert not workdir.exists()


def test_sampling_without_a_checkpoint_is_refused(tmp_path, capfd):
    workdir = tmp_path / "empty"
    assert_refused(run_cli(capfd, VAE, "--mode=sample", f"--workdir={workdir}"), "no checkpoint")
    assert not workdir.exists()


def test_evaluator_the_model_cannot_serve_is_refused(tmp_path, capfd):
    # The DDPM smoke config evaluates the variational bound, which the EDM process lacks.
    workdir = tmp_path / "edm"
    result = run_cli(capfd, DDPM, "--config.model.diffusion.process=edm", f"--workdir={workdir}")
    assert_refused(result, "evals.likelihood", "no likelihood")
    assert not workdir.exists()


def test_corrupt_newest_checkpoint(run_copy, capfd):
    """Sampling falls back to the previous checkpoint; training refuses to resume past it."""
    state_dir = os.path.join(run_copy, "checkpoints", str(SMOKE_STEPS), "state")
    for root, _, files in os.walk(state_dir):
        for name in files:
            if name != "commit_success.txt":
                _write(os.path.join(root, name), b"garbage")
    shutil.rmtree(os.path.join(run_copy, "samples"))
    checkpoints = tree_digest(os.path.join(run_copy, "checkpoints"))

    sampled = run_cli(capfd, VAE, "--mode=sample", f"--workdir={run_copy}")
    assert sampled.code == 0, sampled.stderr[-3000:]
    assert f"checkpoints/{SMOKE_STEPS} cannot be restored" in sampled.stderr
    assert "falling back" in sampled.stderr
    assert os.path.exists(os.path.join(run_copy, "samples", "samples_2.npz"))

    resumed = run_cli(capfd, VAE, "--config.train.num_steps=6", f"--workdir={run_copy}")
    assert_refused(resumed, f"checkpoints/{SMOKE_STEPS} cannot be restored")
    assert tree_digest(os.path.join(run_copy, "checkpoints")) == checkpoints


# --- 3. which folders may be used ---------------------------------------------------------
def test_workdir_that_is_a_file_root_or_home_is_refused(tmp_path, capfd, monkeypatch):
    a_file = _write(tmp_path / "notes.txt", b"keep me")
    assert_refused(run_cli(capfd, VAE, f"--workdir={a_file}"), "is a file")
    assert open(a_file, "rb").read() == b"keep me"
    assert_refused(run_cli(capfd, VAE, "--workdir=/"), "give each run a folder")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert_refused(run_cli(capfd, VAE, f"--workdir={home}"), "give each run a folder")
    assert os.listdir(home) == []


def test_foreign_folder_is_refused_and_untouched(tmp_path, capfd):
    folder = tmp_path / "thesis"
    folder.mkdir()
    _write(folder / "chapter1.tex", b"\\chapter{One}")
    before = tree_digest(str(folder))
    assert_refused(run_cli(capfd, VAE, f"--workdir={folder}"), "not a jaxgen workdir")
    assert tree_digest(str(folder)) == before


def test_workdir_of_another_family_is_refused(run_copy, capfd):
    before = tree_digest(run_copy)
    assert_refused(run_cli(capfd, STYLE, f"--workdir={run_copy}"), "'vae' run", "style_transfer")
    assert_refused(run_cli(capfd, DDPM, f"--workdir={run_copy}"), "'vae' run", "'ddpm'")
    assert_refused(run_cli(capfd, DDPM, "--mode=sample", f"--workdir={run_copy}"), "'vae' run")
    assert tree_digest(run_copy) == before


# --- 2. a relaunch with another config ------------------------------------------------------
@pytest.mark.parametrize(
    "override,key",
    [
        ("--config.optimizer.learning_rate=0.01", "optimizer.learning_rate: 0.001 -> 0.01"),
        ("--config.seed=7", "seed: 0 -> 7"),
        ("--config.model.beta=4.0", "model.beta: 1.0 -> 4.0"),
        ("--config.model.hidden_dim=64", "model.hidden_dim: 32 -> 64"),
    ],
)
def test_resume_with_a_changed_key_is_refused(override, key, run_copy, capfd):
    before = tree_digest(run_copy)
    result = run_cli(capfd, VAE, override, "--config.train.num_steps=6", f"--workdir={run_copy}")
    assert_refused(result, key, "--allow_config_change=")
    assert tree_digest(run_copy) == before


def test_allowed_change_resumes_and_keeps_the_original_config(run_copy, capfd):
    with open(os.path.join(run_copy, "config.json"), "rb") as f:
        original = f.read()
    result = run_cli(
        capfd,
        VAE,
        "--config.optimizer.learning_rate=0.0005",
        "--config.train.num_steps=6",
        "--allow_config_change=optimizer.learning_rate",
        f"--workdir={run_copy}",
    )
    assert result.code == 0, result.stderr[-3000:]
    with open(os.path.join(run_copy, "config.json"), "rb") as f:
        assert f.read() == original
    from jaxgen.workdir import read_history

    last = read_history(run_copy)[-1]
    assert last["mode"] == "train" and last["config"]["optimizer"]["learning_rate"] == 0.0005
    assert last["changed"]["optimizer.learning_rate"] == [0.001, 0.0005]
    assert metric_steps(run_copy) == [2, 4, 6]
    # The next relaunch is compared with what the checkpoints were last trained with.
    again = run_cli(
        capfd,
        VAE,
        "--config.optimizer.learning_rate=0.0005",
        "--config.train.num_steps=8",
        f"--workdir={run_copy}",
    )
    assert again.code == 0, again.stderr[-3000:]


def test_allowed_width_change_says_the_checkpoint_does_not_fit(run_copy, capfd):
    before = tree_digest(run_copy)
    result = run_cli(
        capfd,
        VAE,
        "--config.model.hidden_dim=64",
        "--config.train.num_steps=6",
        "--allow_config_change=model.hidden_dim",
        f"--workdir={run_copy}",
    )
    assert_refused(result, "does not fit", "(32,) there, (64,) here")
    assert tree_digest(run_copy) == before


def test_sampling_with_another_model_names_the_values_the_run_was_trained_with(run_copy, capfd):
    """A run trained with overrides, sampled with its config file but without them: the
    refusal names the model values the run was trained with, and writes nothing."""
    before = tree_digest(run_copy)
    result = run_cli(
        capfd, VAE, "--config.model.hidden_dim=64", "--mode=sample", f"--workdir={run_copy}"
    )
    assert_refused(
        result,
        "(32,) there, (64,) here",
        "the run was trained with model.hidden_dim=32:",
        "launch.py with --workdir alone",
    )
    assert tree_digest(run_copy) == before


def test_finished_run_relaunched_does_nothing(run_copy, capfd):
    before = tree_digest(os.path.join(run_copy, "checkpoints"))
    result = run_cli(capfd, VAE, f"--workdir={run_copy}")
    assert result.code == 0 and "nothing to do" in result.stderr
    assert tree_digest(os.path.join(run_copy, "checkpoints")) == before


def test_launches_record_the_code_and_devices_and_a_resume_under_other_code_says_so(
    run_copy, capfd
):
    import jax

    from jaxgen.workdir import read_history

    first = read_history(run_copy)[-1]
    assert first["software"]["packages"]["jax"] == jax.__version__
    assert first["devices"] == {
        "platform": "cpu", "device_kind": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(), "num_processes": 1,
    }  # fmt: skip
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                          text=True)  # fmt: skip
    if head.returncode == 0:  # a checkout (CI clones one): the launch names its commit
        assert first["software"]["code"]["commit"] == head.stdout.strip()
    history = os.path.join(run_copy, "launches.jsonl")
    with open(history) as f:
        launches = [json.loads(line) for line in f]
    launches[-1]["software"]["packages"]["jax"] = "0.0.1"
    with open(history, "w") as f:
        f.writelines(json.dumps(launch) + "\n" for launch in launches)
    resumed = run_cli(capfd, VAE, "--config.train.num_steps=6", f"--workdir={run_copy}")
    assert resumed.code == 0, resumed.stderr[-3000:]
    assert f"other code than the previous training launch: jax: 0.0.1 -> {jax.__version__}" in (
        resumed.stderr
    )
    assert read_history(run_copy)[-1]["software"]["packages"]["jax"] == jax.__version__


def test_resume_on_changed_training_data_is_refused(run_copy, capfd):
    path = os.path.join(run_copy, "data.json")
    with open(path) as f:
        record = json.load(f)
    assert record["train_examples"] == 60_000 and len(record["train_fingerprint"]) == 16
    # As if the run had trained on another version or copy of the data.
    changes = [("train_examples", 59_000), ("train_fingerprint", "0123456789abcdef"),
               ("train_spread_fingerprint", "fedcba9876543210")]  # fmt: skip
    for key, value in changes:
        with open(path, "w") as f:
            json.dump({**record, key: value}, f)
        before = tree_digest(run_copy)
        result = run_cli(capfd, VAE, "--config.train.num_steps=6", f"--workdir={run_copy}")
        assert_refused(result, "training data changed", f"{key} {value} -> ", "init_from")
        assert tree_digest(run_copy) == before
    # A data.json from before the identity (or its spread hash) was recorded resumes, and
    # records it.
    identity = {k: v for k, v in record.items() if k.startswith("train_")}
    assert set(identity) == {"train_examples", "train_fingerprint", "train_spread_fingerprint"}
    for kept in ((), ("train_examples", "train_fingerprint")):
        older = {k: v for k, v in record.items() if not k.startswith("train_") or k in kept}
        with open(path, "w") as f:
            json.dump(older, f)
        steps = 6 if not kept else 8
        resumed = run_cli(capfd, VAE, f"--config.train.num_steps={steps}", f"--workdir={run_copy}")
        assert resumed.code == 0, resumed.stderr[-3000:]
        with open(path) as f:
            assert {k: v for k, v in json.load(f).items() if k.startswith("train_")} == identity


def _lose_config_records(workdir: str) -> None:
    for name in ("config.json", "launches.jsonl"):
        os.remove(os.path.join(workdir, name))


def test_lost_config_records_are_replaced_by_the_config_saved_with_the_checkpoint(run_copy, capfd):
    _lose_config_records(run_copy)
    before = tree_digest(run_copy)
    changed = run_cli(
        capfd, VAE, "--config.model.beta=4.0", "--config.train.num_steps=6", f"--workdir={run_copy}"
    )
    assert_refused(changed, "model.beta: 1.0 -> 4.0", "--allow_config_change=")
    other_family = run_cli(capfd, DDPM, f"--workdir={run_copy}")
    assert_refused(other_family, "'vae' run", "'ddpm'")
    assert tree_digest(run_copy) == before
    sampled = run_cli(capfd, "--mode=sample", "--config.seed=7", f"--workdir={run_copy}")
    assert sampled.code == 0, sampled.stderr[-3000:]
    assert not os.path.exists(os.path.join(run_copy, "config.json"))  # a training launch's
    import jaxgen

    assert jaxgen.load(run_copy).config.model.beta == 1.0
    resumed = run_cli(capfd, "--config.train.num_steps=6", f"--workdir={run_copy}")
    assert resumed.code == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint at step 4" in resumed.stderr
    assert metric_steps(run_copy) == [2, 4, 6]
    assert last_launch(run_copy)["config"]["seed"] == 0  # the checkpoint's, not the sample's 7
    with open(os.path.join(run_copy, "config.json")) as f:
        assert json.load(f)["seed"] == 0


def last_launch(workdir: str) -> dict:
    with open(os.path.join(workdir, "launches.jsonl")) as f:
        return json.loads(f.read().splitlines()[-1])


def test_a_lost_history_does_not_undo_an_allowed_change(run_copy, capfd):
    """The checkpoints' own config, not config.json's older one, is what a relaunch keeps."""
    changed = run_cli(capfd, VAE, "--allow_config_change=optimizer.learning_rate",
                      "--config.optimizer.learning_rate=0.002", "--config.train.num_steps=6",
                      f"--workdir={run_copy}")  # fmt: skip
    assert changed.code == 0, changed.stderr[-3000:]
    os.remove(os.path.join(run_copy, "launches.jsonl"))
    before = tree_digest(run_copy)
    assert_refused(run_cli(capfd, VAE, "--config.train.num_steps=8", f"--workdir={run_copy}"),
                   "optimizer.learning_rate: 0.002 -> 0.001")  # fmt: skip
    assert tree_digest(run_copy) == before
    resumed = run_cli(capfd, "--config.train.num_steps=8", f"--workdir={run_copy}")
    assert resumed.code == 0, resumed.stderr[-3000:]
    assert "optimizer.learning_rate: 0.002 in the checkpoint, 0.001 recorded" in resumed.stderr
    assert last_launch(run_copy)["config"]["optimizer"]["learning_rate"] == 0.002
    assert metric_steps(run_copy) == [2, 4, 6, 8]


def test_a_launch_that_failed_before_its_first_checkpoint_binds_no_relaunch(
    run_copy, tmp_path, capfd
):
    """Its config is recorded but trained nothing: relaunching as before (or, in a new
    workdir, with the mistake fixed) is not refused, and config.json ends up the good one."""
    blow_up = "--config.optimizer.learning_rate=1e30"  # the loss is not finite by step 2
    failed = run_cli(capfd, VAE, "--allow_config_change=optimizer.learning_rate", blow_up,
                     "--config.train.num_steps=6", f"--workdir={run_copy}")  # fmt: skip
    assert failed.code == 2 and "non-finite" in failed.lines[-1], failed.stderr[-3000:]
    resumed = run_cli(capfd, VAE, "--config.train.num_steps=6", f"--workdir={run_copy}")
    assert resumed.code == 0, resumed.stderr[-3000:]
    assert metric_steps(run_copy) == [2, 4, 6]
    fresh = str(tmp_path / "fresh")
    assert run_cli(capfd, VAE, blow_up, f"--workdir={fresh}").code == 2
    assert run_cli(capfd, VAE, f"--workdir={fresh}").code == 0
    with open(os.path.join(fresh, "config.json")) as f:
        assert json.load(f)["optimizer"]["learning_rate"] == 0.001


def test_a_smaller_draw_replaces_the_png_folder_of_a_larger_one(run_copy, capfd):
    for num in (6, 3):
        result = run_cli(capfd, "--mode=sample", f"--config.sample.num={num}",
                         f"--workdir={run_copy}")  # fmt: skip
        assert result.code == 0, result.stderr[-3000:]
    folder = os.path.join(run_copy, "samples", f"samples_{SMOKE_STEPS}")
    assert sorted(os.listdir(folder)) == ["00000.png", "00001.png", "00002.png"]


def test_checkpoints_with_no_config_anywhere_are_not_resumed(tmp_path, capfd):
    """Checkpoints from before the config was saved with them, both records lost: training
    and sampling without ``--config`` are refused, and nothing is written."""
    workdir = str(tmp_path / "old")
    shutil.copytree(os.path.join(REPO, "tests", "data", "old_checkpoints", "vae"), workdir)
    _lose_config_records(workdir)
    before = tree_digest(workdir)
    assert_refused(run_cli(capfd, VAE, f"--workdir={workdir}"), "no record of the config",
                   f"--config.init_from={workdir}")  # fmt: skip
    assert_refused(run_cli(capfd, "--mode=sample", f"--workdir={workdir}"),
                   "no record of the config", "--config=")  # fmt: skip
    assert tree_digest(workdir) == before


# --- 1. one owner per workdir ------------------------------------------------------------------
def test_stale_lock_of_a_dead_process_is_taken_over(run_copy, capfd):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True).stdout.strip()  # fmt: skip
    lock = {"host": socket.gethostname(), "pid": int(dead), "started": "earlier", "mode": "train"}
    _write(os.path.join(run_copy, ".jaxgen.lock"), json.dumps(lock).encode())
    result = run_cli(capfd, VAE, "--config.train.num_steps=6", f"--workdir={run_copy}")
    assert result.code == 0, result.stderr[-3000:]
    assert f"took over the lock of pid {dead}" in result.stderr
    assert not os.path.exists(os.path.join(run_copy, ".jaxgen.lock"))


def test_lock_of_a_live_process_refuses_training(run_copy, capfd):
    import socket

    lock = {"host": socket.gethostname(), "pid": os.getpid(), "started": "now", "mode": "train"}
    _write(os.path.join(run_copy, ".jaxgen.lock"), json.dumps(lock).encode())
    before = tree_digest(run_copy)
    result = run_cli(capfd, VAE, "--config.train.num_steps=6", f"--workdir={run_copy}")
    assert_refused(result, "is in use by", f"pid {os.getpid()}")
    assert tree_digest(run_copy) == before


# --- 6. crash-safe logs -------------------------------------------------------------------------
def test_torn_metrics_line_and_rows_past_the_checkpoint_are_dropped(run_copy, capfd):
    shutil.rmtree(os.path.join(run_copy, "checkpoints", str(SMOKE_STEPS)))  # resume from 2
    with open(os.path.join(run_copy, "metrics.jsonl"), "a") as f:
        f.write('{"step": 5, "loss": 1.0}\n{"step": 6, "lo')  # a row past it, then a torn one
    result = run_cli(capfd, VAE, "--config.train.num_steps=6", f"--workdir={run_copy}")
    assert result.code == 0, result.stderr[-3000:]
    assert "torn" in result.stderr
    assert metric_steps(run_copy) == [2, 4, 6]


# --- 9, 10. a full disk, a loss that is no longer finite -----------------------------------
def test_non_finite_loss_before_any_checkpoint_says_so(tmp_path, capfd):
    workdir = str(tmp_path / "nan")
    result = run_cli(
        capfd, VAE, "--config.optimizer.learning_rate=1e30", "--config.optimizer.grad_clip_norm=0",
        "--config.train.checkpoint_every=0", "--config.train.sample_every=0",
        f"--workdir={workdir}",
    )  # fmt: skip
    assert_refused(result, "non-finite", "no checkpoint had been written")
    assert not os.path.exists(os.path.join(workdir, "checkpoints", str(SMOKE_STEPS)))


def test_non_finite_loss_keeps_the_last_good_checkpoint(run_copy, capfd):
    before = tree_digest(os.path.join(run_copy, "checkpoints"))
    result = run_cli(
        capfd, VAE, "--config.optimizer.learning_rate=1e30",
        "--allow_config_change=optimizer.learning_rate",
        "--config.train.num_steps=8", f"--workdir={run_copy}",
    )  # fmt: skip
    assert_refused(result, "non-finite", f"step {SMOKE_STEPS}, is kept")
    assert tree_digest(os.path.join(run_copy, "checkpoints")) == before


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs (root only); the test is skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield str(mount)
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(trained, small_disk, capfd):
    workdir = os.path.join(small_disk, "run")
    skip = shutil.ignore_patterns(str(SMOKE_STEPS), "samples", "tb", "eval")
    shutil.copytree(trained, workdir, ignore=skip)  # resumes from step 2
    step_2 = tree_digest(os.path.join(workdir, "checkpoints", "2"))
    free = shutil.disk_usage(small_disk).free
    _write(os.path.join(small_disk, "ballast"), b"\0" * max(free - 256 * 1024, 0))  # < 1 step
    result = run_cli(capfd, VAE, f"--workdir={workdir}")
    assert_refused(result, "cannot write checkpoint", "step 2 is the newest intact one")
    assert tree_digest(os.path.join(workdir, "checkpoints", "2")) == step_2
    os.remove(os.path.join(small_disk, "ballast"))
    sampled = run_cli(capfd, VAE, "--mode=sample", f"--workdir={workdir}")
    assert sampled.code == 0 and os.path.exists(
        os.path.join(workdir, "samples", "samples_2.npz")
    ), sampled.stderr[-3000:]


# --- 5. signals at any moment (subprocesses) --------------------------------------------------
LONG = [VAE, "--config.train.log_every=1", "--config.sample.write_pngs=false"]


class Launcher:
    """``launch.py`` as a subprocess whose stderr lines can be waited for."""

    def __init__(self, *args: str):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "launch.py"), *args],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} in:\n{''.join(self.lines)[-3000:]}")

    def signal(self, signum=signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 240) -> tuple[int, str]:
        _, rest = self.process.communicate(timeout=timeout)
        return self.process.returncode, "".join(self.lines) + rest


def test_second_training_launch_on_a_busy_workdir_is_refused(tmp_path):
    workdir = str(tmp_path / "run")
    args = [*LONG, "--config.train.num_steps=100000", "--config.train.checkpoint_every=50",
            f"--workdir={workdir}"]  # fmt: skip
    first = Launcher(*args)
    first.wait_for("step 1/")
    second = launch(*args)
    assert second.returncode == 2, second.stderr[-2000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) <= 3 and f"is in use by pid {first.process.pid}" in lines[-1], lines
    first.signal()
    code, stderr = first.finish()
    assert code == 0 and "stopped by signal" in stderr, stderr[-3000:]
    steps = metric_steps(workdir)
    assert steps == list(range(1, len(steps) + 1))  # each step once, none from the second
    assert not os.path.exists(os.path.join(workdir, ".jaxgen.lock"))


def test_signals_at_every_stage_exit_0_and_the_run_completes(tmp_path):
    """One run stopped before its first step, right after a checkpoint, during a sample grid
    and during its final evaluation; then it finishes, every step logged once, and equals
    an uninterrupted run."""
    workdir = str(tmp_path / "run")
    args = [*LONG, "--config.train.num_steps=12", "--config.train.checkpoint_every=3",
            "--config.train.sample_every=8", "--config.sample.num=2048",
            f"--workdir={workdir}"]  # fmt: skip
    lock = os.path.join(workdir, ".jaxgen.lock")

    stages = [
        ("before the first step", "stopped before step 1"),
        # Checkpoints are written in the background: training may have gone on a few steps
        # by the time step 3's folder appears, and the stop saves the step it reached.
        ("right after a checkpoint", re.compile(r"checkpoint of step ([4-9]|1[01]) saved")),
        ("during a sample grid", "stop requested by SIGTERM"),
        ("during the final evaluation", "stop requested by SIGTERM"),
    ]
    for stage, said in stages:
        run = Launcher(*args)
        if stage == "before the first step":
            while not os.path.exists(lock) and run.process.poll() is None:
                time.sleep(0.005)
        elif stage == "right after a checkpoint":
            target = os.path.join(workdir, "checkpoints", "3")
            while not os.path.isdir(target) and run.process.poll() is None:
                time.sleep(0.005)
        elif stage == "during a sample grid":
            run.wait_for("sample grid at step 8")
        else:
            run.wait_for("final evaluation at step 12")
        run.signal()
        code, stderr = run.finish()
        assert code == 0, (stage, stderr[-3000:])
        if isinstance(said, str):
            said = re.compile(re.escape(said))
        assert re.search(f"stopped by signal 15: {said.pattern}", stderr), (stage, stderr[-3000:])
        assert "Traceback" not in stderr, (stage, stderr[-3000:])
    assert not os.path.exists(os.path.join(workdir, "eval", "step_12.json"))

    done = launch(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.path.exists(os.path.join(workdir, "eval", "step_12.json"))
    assert metric_steps(workdir) == list(range(1, 13))

    # Launched like the interrupted run: the launcher's XLA flags change CPU kernels' rounding.
    straight = str(tmp_path / "straight")
    assert launch(*args[:-1], f"--workdir={straight}").returncode == 0
    import jaxgen

    # Parameters, optimizer state, EMA and PRNG key of the final checkpoints, leaf for leaf.
    interrupted, uninterrupted = (jaxgen.load(d, params="raw") for d in (workdir, straight))
    assert interrupted.step == uninterrupted.step == 12
    assert state_digest(interrupted.state) == state_digest(uninterrupted.state)
    from jaxgen.metric_writer import read_metrics

    losses = [
        {
            r["step"]: r["loss"]
            for r in read_metrics(os.path.join(d, "metrics.jsonl"))
            if "loss" in r
        }
        for d in (workdir, straight)
    ]
    assert losses[0] == losses[1]  # the same batches and random numbers at every step


@pytest.mark.parametrize("mode,wait", [("sample", "sampling 2048 images"), ("eval", "evaluation")])
def test_signal_during_sample_or_eval_mode_exits_0_and_writes_nothing(
    mode, wait, trained, tmp_path
):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    shutil.rmtree(os.path.join(workdir, "samples"))
    shutil.rmtree(os.path.join(workdir, "eval"))
    run = Launcher(*LONG, "--config.sample.num=2048", f"--mode={mode}", f"--workdir={workdir}")
    run.wait_for(wait)
    run.signal()
    code, stderr = run.finish()
    assert code == 0 and "stopped by signal" in stderr, stderr[-3000:]
    assert not os.path.exists(os.path.join(workdir, "samples", f"samples_{SMOKE_STEPS}.npz"))
    assert not os.path.exists(os.path.join(workdir, "eval", f"step_{SMOKE_STEPS}.json"))


def test_second_ctrl_c_aborts_at_once_and_keeps_the_last_checkpoint(trained, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    checkpoints = tree_digest(os.path.join(workdir, "checkpoints"))
    slow_bound = ["--config.model.iwae_k=4000", "--config.evals.likelihood.num_examples=64"]
    run = Launcher(*LONG, *slow_bound, "--mode=eval", f"--workdir={workdir}")
    # Inside the bound, whose batches take seconds: the evaluators before it poll for the
    # stop so often that the first signal alone could end the run before the second came.
    # The progress line is written just before the bound's loop polls for the stop, so a
    # signal sent on reading it could still be seen at that poll (4 runs in 10 here); a
    # second later the next batch, about 7 s long on this CPU, is computing.
    run.wait_for("likelihood on")
    time.sleep(1.0)
    run.signal(signal.SIGINT)
    time.sleep(0.05)  # pressed twice
    sent = time.time()
    run.signal(signal.SIGINT)
    code, stderr = run.finish(timeout=30)
    assert code == 130 and time.time() - sent < 5, (code, stderr[-2000:])
    assert "second signal: aborting" in stderr
    assert tree_digest(os.path.join(workdir, "checkpoints")) == checkpoints


def test_lock_from_another_host_is_stale_only_without_a_heartbeat(tmp_path, monkeypatch):
    from jaxgen.errors import UserError
    from jaxgen.workdir_lock import LOCK_FILE, WorkdirLock

    holder = {"host": "another-node", "pid": 1, "started": "earlier", "mode": "train"}
    path = _write(tmp_path / LOCK_FILE, json.dumps(holder).encode())
    with pytest.raises(UserError, match="in use by pid 1 on another-node"):
        WorkdirLock(str(tmp_path), "train").acquire()  # fresh heartbeat: alive
    old = time.time() - 601
    os.utime(path, (old, old))
    lock = WorkdirLock(str(tmp_path), "train")
    lock.acquire()  # no heartbeat for the default 600 s: taken over
    lock.release()
    monkeypatch.setenv("JAXGEN_LOCK_STALE_SECONDS", "soon")
    _write(tmp_path / LOCK_FILE, json.dumps(holder).encode())
    os.utime(path, (old, old))
    with pytest.raises(UserError, match="JAXGEN_LOCK_STALE_SECONDS='soon'"):
        WorkdirLock(str(tmp_path), "train").acquire()


def test_bad_cache_threshold_is_one_line_before_the_first_write(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("JAXGEN_CACHE_MIN_COMPILE_SECS", "half a second")
    workdir = tmp_path / "run"
    result = run_cli(capfd, VAE, f"--workdir={workdir}")
    assert result.code == 2
    assert result.lines == [
        "error: JAXGEN_CACHE_MIN_COMPILE_SECS='half a second': expected seconds >= 0"
    ]
    assert not workdir.exists()


def test_a_checkpoint_that_misfits_names_the_keys_added_since_the_run_started():
    """A relaunch with today's config file: keys the run's config lacks may be what changed
    the model, so the one-line refusal names them and the way to resume."""
    from jaxgen.checkpoints import CheckpointMismatchError
    from jaxgen.run import _with_new_keys

    error = CheckpointMismatchError("checkpoint c/10 does not fit this config's model: x")
    trained = {"gan": {"loss": "hinge"}, "train": {"num_steps": 10}, "init_from": None}
    changes = {"gan.clusters": (None, 10), "train.num_steps": (10, 20), "init_from": (None, "w")}
    text = str(_with_new_keys(error, changes, trained))
    assert text.startswith("checkpoint c/10 does not fit this config's model: x; keys added")
    assert "(gan.clusters=10)" in text and "num_steps" not in text and "init_from" not in text
    assert "relaunch with --workdir alone" in text
    assert _with_new_keys(error, {"train.num_steps": (10, 20)}, trained) is error


def test_a_sampling_misfit_names_trained_values_and_keys_added_since(monkeypatch):
    """Sampling with today's config file: the refusal names the model values the run was
    trained with where they differ, and the model keys it predates with today's values."""
    import ml_collections

    from jaxgen import run as run_module
    from jaxgen.checkpoints import CheckpointMismatchError

    trained = {"model": {"width": 32}, "train": {"num_steps": 10}}
    monkeypatch.setattr(run_module, "trained_config", lambda workdir: trained)
    error = CheckpointMismatchError("checkpoint c/10 does not fit this config's model: x")
    today = {"model": {"width": 32, "clusters": 10}, "train": {"num_steps": 20}}
    text = str(run_module._with_trained_values(error, ml_collections.ConfigDict(today), "w"))
    assert text == (
        "checkpoint c/10 does not fit this config's model: x; keys added since the run started "
        "take today's values (model.clusters=10): leave the config out to use the run's own "
        "(launch.py with --workdir alone)"
    )
    today["model"]["width"] = 64
    text = str(run_module._with_trained_values(error, ml_collections.ConfigDict(today), "w"))
    assert "; the run was trained with model.width=32; keys added since" in text
    assert "(model.clusters=10): give those values, or leave the config out" in text
    today["model"] = {"width": 32}
    assert run_module._with_trained_values(error, ml_collections.ConfigDict(today), "w") is error
