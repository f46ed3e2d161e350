"""Gradient accumulation, rematerialisation and bfloat16 agree with the plain step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.gradients import loss_and_grads
from jaxgen.methods.vae import VAE
from tests.conftest import load_config


def _mlp_loss(params, batch, rng):
    del rng
    h = jnp.tanh(batch["x"] @ params["w1"])
    err = h @ params["w2"] - batch["y"]
    return jnp.mean(err**2), {"mae": jnp.mean(jnp.abs(err))}


@pytest.fixture
def problem():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {"w1": jax.random.normal(keys[0], (5, 16)), "w2": jax.random.normal(keys[1], (16, 3))}
    batch = {"x": jax.random.normal(keys[2], (24, 5)), "y": jax.random.normal(keys[3], (24, 3))}
    return params, batch


@pytest.mark.parametrize("accum_steps", [2, 4, 8])
def test_gradient_accumulation_matches_full_batch(problem, accum_steps):
    params, batch = problem
    rng = jax.random.PRNGKey(1)
    (loss, metrics), grads = loss_and_grads(_mlp_loss, params, batch, rng)
    (loss_a, metrics_a), grads_a = jax.jit(
        lambda p, b: loss_and_grads(_mlp_loss, p, b, rng, accum_steps=accum_steps)
    )(params, batch)
    np.testing.assert_allclose(loss_a, loss, rtol=1e-5)
    np.testing.assert_allclose(metrics_a["mae"], metrics["mae"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_the_same_gradients(problem, remat):
    params, batch = problem
    rng = jax.random.PRNGKey(1)
    (_, _), grads = loss_and_grads(_mlp_loss, params, batch, rng)
    (_, _), grads_r = jax.jit(lambda p: loss_and_grads(_mlp_loss, p, batch, rng, remat=remat))(
        params
    )
    for a, b in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_bfloat16_vae_loss_and_gradients_track_float32():
    """bf16 has an 8-bit mantissa: the loss agrees to 2%, gradients to a cosine of 0.9."""
    config = load_config("configs/vae.py:preset=smoke")
    method = VAE(config, DataSpec((28, 28, 1), 10, "none"))
    config.precision = "bfloat16"
    method_bf16 = VAE(config, DataSpec((28, 28, 1), 10, "none"))
    images = (np.random.default_rng(0).random((16, 28, 28, 1)) * 255).astype(np.uint8)
    batch = {"image": jnp.asarray(images), "label": jnp.zeros(16, jnp.int32)}
    params = method.init_params(jax.random.PRNGKey(0), batch)
    rng = jax.random.PRNGKey(2)
    f32 = jax.jit(lambda p, b, r: loss_and_grads(method.loss, p, b, r))
    bf16 = jax.jit(
        lambda p, b, r: loss_and_grads(method_bf16.loss, p, b, r, compute_dtype=jnp.bfloat16)
    )  # jitted: op by op, the two passes took most of a minute
    (loss, _), grads = f32(params, batch, rng)
    (loss16, _), grads16 = bf16(params, batch, rng)
    assert jax.tree.leaves(grads16)[0].dtype == jnp.float32
    np.testing.assert_allclose(loss16, loss, rtol=2e-2)
    flat = jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads)])
    flat16 = jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads16)])
    cosine = flat @ flat16 / (jnp.linalg.norm(flat) * jnp.linalg.norm(flat16))
    assert cosine > 0.9


def test_invalid_step_options_are_named():
    config = load_config("configs/vae.py:preset=smoke")
    config.train.grad_accum_steps = 3  # batch 8
    with pytest.raises(UserError, match="grad_accum_steps=3"):
        VAE(config, DataSpec((28, 28, 1), 10, "none"))
    config.train.grad_accum_steps = 1
    config.model.remat = "some"
    with pytest.raises(UserError, match="model.remat='some'"):
        VAE(config, DataSpec((28, 28, 1), 10, "none"))
