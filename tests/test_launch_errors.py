"""Bad input through the launcher: one line on stderr, exit 2, workdir untouched."""

import os
import shutil

import pytest

from tests.conftest import launch, tree_digest

SMOKE = "--config=configs/vae.py:preset=smoke"


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    result = launch(SMOKE, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    return workdir


CASES = {
    "unknown key": ([SMOKE, "--config.train.bogus=3"], "unknown config key 'train.bogus'"),
    "wrong type": ([SMOKE, "--config.train.num_steps=many"], "train.num_steps='many'"),
    "unknown argument": (["--config=configs/vae.py:preset=smoke,colour=red"], "'colour'"),
    "missing dataset": ([SMOKE, "--config.data.name=tfds:no_such_dataset"], "no_such_dataset"),
    "unknown mode": ([SMOKE, "--mode=dance"], "--mode='dance'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, trained_workdir):
    args, expected = CASES[case]
    before = tree_digest(trained_workdir)
    result = launch(*args, f"--workdir={trained_workdir}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], lines
    assert tree_digest(trained_workdir) == before


def test_bad_input_creates_no_workdir(tmp_path):
    workdir = tmp_path / "new"
    result = launch(SMOKE, "--config.data.name=nope", f"--workdir={workdir}")
    assert result.returncode == 2 and not workdir.exists()


def test_sampling_without_checkpoint(tmp_path):
    result = launch(SMOKE, "--mode=sample", f"--workdir={tmp_path / 'empty'}")
    assert result.returncode == 2 and "no checkpoint" in result.stderr
    assert not (tmp_path / "empty").exists()


def test_corrupt_latest_checkpoint(trained_workdir, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(trained_workdir, workdir)
    state_dir = os.path.join(workdir, "checkpoints", "4", "state")
    for root, _, files in os.walk(state_dir):
        for name in files:
            if name not in ("commit_success.txt",):
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")
    before = tree_digest(os.path.join(workdir, "checkpoints"))

    sampled = launch(SMOKE, "--mode=sample", f"--workdir={workdir}")
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert "checkpoints/4 cannot be restored" in sampled.stderr
    assert "falling back" in sampled.stderr
    assert os.path.exists(os.path.join(workdir, "samples", "samples_2.npz"))

    resumed = launch(SMOKE, "--config.train.num_steps=6", f"--workdir={workdir}")
    assert resumed.returncode == 2
    assert "checkpoints/4 cannot be restored" in resumed.stderr.strip().splitlines()[-1]
    assert tree_digest(os.path.join(workdir, "checkpoints")) == before


def test_evaluator_the_model_cannot_serve_fails_before_training(tmp_path):
    # The DDPM smoke config evaluates the variational bound, which the EDM process lacks.
    workdir = tmp_path / "edm"
    result = launch(
        "--config=configs/ddpm.py:preset=smoke",
        "--config.model.diffusion.process=edm",
        f"--workdir={workdir}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "evals.likelihood" in result.stderr and "no likelihood" in result.stderr
    assert not workdir.exists()
