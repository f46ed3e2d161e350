"""The GAN family through the generic trainer: train, resume exactly, sample (smoke preset)."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from jaxgen.run import run
from tests.conftest import load_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("gan"))
    config = load_config("configs/gan.py:preset=smoke,cond=class")
    state = run(config, workdir, "train")
    return config, workdir, state


def test_train_writes_gan_diagnostics_and_evals(trained):
    _, workdir, state = trained
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    assert os.path.exists(os.path.join(workdir, "samples", "step_4.png"))
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    keys = {"loss", "d_loss", "g_loss", "d_acc_real", "d_acc_fake", "d_fake_called_real",
            "d_out_real", "d_out_fake", "d_grad_norm", "g_grad_norm"}  # fmt: skip
    assert all(keys <= set(line) for line in lines)
    evals = json.load(open(os.path.join(workdir, "eval", "step_4.json")))
    assert {"fd", "kid", "c2st_accuracy", "c2st_fooled", "params"} <= set(evals)
    assert set(state.params) == {"generator", "discriminator"}
    generator_params = sum(np.size(x) for x in jax.tree.leaves(state.params["generator"]))
    assert evals["params"] == generator_params  # the network that generates, not D
    assert set(state.opt_state) == {"generator", "discriminator"}
    assert "spectral" in state.model_state


def test_resume_gives_the_same_state_as_an_uninterrupted_run(trained, tmp_path):
    config, workdir, state = trained
    resumed_dir = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed_dir)
    shutil.rmtree(os.path.join(resumed_dir, "checkpoints", "4"))  # as if stopped at step 2
    config = load_config("configs/gan.py:preset=smoke,cond=class")
    config.evals = {}
    resumed = run(config, resumed_dir, "train")
    assert int(resumed.step) == 4
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sample_mode_writes_labelled_deterministic_samples(trained):
    config, workdir, _ = trained
    first = run(config, workdir, "sample")
    with np.load(os.path.join(workdir, "samples", "samples_4.npz")) as saved:
        assert saved["images"].dtype == np.uint8 and saved["images"].shape == (8, 28, 28, 1)
        np.testing.assert_array_equal(saved["labels"], np.arange(8) % 10)
        np.testing.assert_array_equal(saved["images"], first["images"])
    np.testing.assert_array_equal(run(config, workdir, "sample")["images"], first["images"])


def test_drs_through_sample_and_eval_modes(trained, tmp_path):
    """``sample.sampler=drs`` on the trained run: labelled, deterministic samples, and the
    ``params`` evaluator counts the discriminator that scores every draw."""
    _, workdir, state = trained
    drs_dir = str(tmp_path / "drs")
    shutil.copytree(workdir, drs_dir)
    plain = run(load_config("configs/gan.py:preset=smoke,cond=class"), drs_dir, "sample")
    config = load_config("configs/gan.py:preset=smoke,cond=class")
    config.sample.sampler = "drs"
    first = run(config, drs_dir, "sample")
    assert first["images"].shape == (8, 28, 28, 1)
    np.testing.assert_array_equal(first["labels"], np.arange(8) % 10)
    assert not np.array_equal(first["images"], plain["images"])
    np.testing.assert_array_equal(run(config, drs_dir, "sample")["images"], first["images"])
    run(config, drs_dir, "eval")
    evals = json.load(open(os.path.join(drs_dir, "eval", "step_4.json")))
    assert evals["params"] == sum(np.size(x) for x in jax.tree.leaves(state.params))
