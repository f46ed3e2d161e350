"""The generic trainer end to end on the smoke VAE, in process."""

import json
import os

import jax
import numpy as np
import pytest

from jaxgen.checkpoints import Checkpoints
from jaxgen.errors import UserError
from jaxgen.experiment import Experiment
from jaxgen.run import run
from tests.conftest import load_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("vae"))
    config = load_config("configs/vae.py:preset=smoke")
    state = run(config, workdir, "train")
    return config, workdir, state


def test_train_leaves_the_documented_workdir(trained):
    _, workdir, _ = trained
    for path in ("config.json", "metrics.jsonl", "samples/step_4.png", "eval/step_4.json"):
        assert os.path.exists(os.path.join(workdir, path)), path
    assert os.listdir(os.path.join(workdir, "tb"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [x["step"] for x in lines] == [2, 4]
    assert all("loss" in x and "steps_per_sec" in x for x in lines)
    evals = json.load(open(os.path.join(workdir, "eval", "step_4.json")))
    assert {"elbo", "nll_iwae", "bits_per_dim", "params"} <= set(evals)


def test_checkpoint_restores_exactly(trained):
    config, workdir, state = trained
    exp = Experiment(config, workdir)
    checkpoints = Checkpoints(workdir, read_only=True)
    step, restored, data_state = checkpoints.restore_latest(
        exp.abstract_sharded_state(), fall_back=False
    )
    checkpoints.close()
    assert step == 4 and data_state["next_index"] == 4
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sample_mode_is_deterministic(trained):
    config, workdir, _ = trained
    first = run(config, workdir, "sample")
    path = os.path.join(workdir, "samples", "samples_4.npz")
    with np.load(path) as saved:
        assert saved["images"].dtype == np.uint8 and saved["images"].shape == (8, 28, 28, 1)
        np.testing.assert_array_equal(saved["images"], first["images"])
    np.testing.assert_array_equal(run(config, workdir, "sample")["images"], first["images"])
    assert os.path.exists(os.path.join(workdir, "samples", "interpolation_4.png"))


def test_init_from_reports_mismatched_parameters(trained, tmp_path):
    _, source_workdir, _ = trained
    config = load_config("configs/vae.py:preset=smoke")
    config.model.latent_dim = 6
    config.init_from = source_workdir
    with pytest.raises(UserError, match=r"parameters do not match: .*shape"):
        run(config, str(tmp_path), "train")


def test_init_from_loads_parameters(trained, tmp_path):
    _, source_workdir, state = trained
    config = load_config("configs/vae.py:preset=smoke")
    config.init_from = source_workdir
    config.train.num_steps = 0
    fresh = run(config, str(tmp_path), "train")
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(fresh.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    config.train.num_steps = 1  # a step donates params and EMA: they must be separate buffers
    tuned = run(config, str(tmp_path / "one_step"), "train")
    assert int(tuned.step) == 1


def test_ema_warms_up_then_uses_the_configured_decay():
    import jax.numpy as jnp
    import optax

    from jaxgen.data.spec import DataSpec
    from jaxgen.methods.base import Method, TrainState, ema_decay_at

    np.testing.assert_allclose(ema_decay_at(0, 0.999), 0.1)
    np.testing.assert_allclose(ema_decay_at(80, 0.999), 0.9)
    np.testing.assert_allclose(ema_decay_at(100_000, 0.999), 0.999)

    class Quadratic(Method):
        def loss(self, params, batch, rng):
            return jnp.sum((params["w"] - 1.0) ** 2), {}

    method = Quadratic(load_config("configs/vae.py:preset=smoke"), DataSpec((4, 4, 1), 0))
    tx = optax.sgd(0.25)
    w0 = jnp.zeros(2)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params={"w": w0}, opt_state=tx.init({"w": w0}),
        ema_params={"w": w0}, model_state={}, rng=jax.random.PRNGKey(0),
        first_nonfinite_step=jnp.full((), -1, jnp.int32),
    )  # fmt: skip
    state, _ = method.train_step(state, {}, tx, 0.999)
    np.testing.assert_allclose(state.params["w"], 0.5)  # w - 0.25 * 2 (w - 1)
    np.testing.assert_allclose(state.ema_params["w"], 0.9 * 0.5)  # decay 0.1 at step 0
