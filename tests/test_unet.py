"""The DDPM UNet: parameter count of the paper's model and the conditioning hooks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, random_params

from jaxgen.errors import UserError
from jaxgen.models.unet import UNet, UNetConfig, count_params, timestep_embedding

TINY = dict(
    ch=8,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    dropout=0.0,
    num_groups=4,
    out_channels=2,
)


def test_default_config_is_the_35_7m_parameter_cifar10_model():
    config = load_config("configs/ddpm.py")
    unet = UNetConfig.from_config(config.model.unet, out_channels=3)
    n = count_params(unet, (config.data.image_size, config.data.image_size, 3))
    # Ho et al. (2020), Appendix B: "Our CIFAR10 model has 35.7 million parameters".
    assert round(n / 1e6, 1) == 35.7
    assert n == 35_746_307  # the count of the reference TensorFlow implementation's model


def _init_randomly(model, *args, **kwargs):
    """Parameters with every (otherwise zero-initialised) output layer made non-zero."""
    return random_params(
        lambda key: model.init(key, *args, **kwargs)["params"], jax.random.PRNGKey(0)
    )


def test_shapes_and_zero_initialised_output():
    model = UNet(UNetConfig(**TINY))
    x = jnp.ones((2, 8, 8, 3))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x, jnp.array([0.0, 5.0]))["params"]
    out = jax.jit(model.apply)({"params": params}, x, jnp.array([0.0, 5.0]))
    assert out.shape == (2, 8, 8, 2)
    np.testing.assert_array_equal(np.asarray(out), 0.0)


def test_time_and_class_conditioning():
    model = UNet(UNetConfig(**TINY, num_classes=3))
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 8, 8, 3))
    t = jnp.array([10.0, 10.0, 10.0])
    params = _init_randomly(model, x, t, jnp.zeros((3,), jnp.int32))
    jitted = jax.jit(lambda t, y: model.apply({"params": params}, x, t, y))
    apply = lambda t, y: np.asarray(jitted(t, y))  # noqa: E731
    base = apply(t, jnp.array([0, 1, 2]))
    assert np.abs(base - apply(t + 50.0, jnp.array([0, 1, 2]))).max() > 1e-3
    assert np.abs(base[0] - apply(t, jnp.array([1, 1, 2]))[0]).max() > 1e-3
    # -1 and num_classes are both the "no class" token used by classifier-free guidance.
    null = apply(t, jnp.array([3, 3, 3]))
    np.testing.assert_allclose(apply(t, jnp.array([-1, 3, -1])), null, atol=1e-5)
    no_label = jax.jit(lambda t: model.apply({"params": params}, x, t))(t)
    np.testing.assert_allclose(np.asarray(no_label), null, atol=1e-5)


def test_cross_attention_respects_the_mask():
    model = UNet(UNetConfig(**TINY, context_dim=6))
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 3))
    t = jnp.array([3.0, 7.0])
    context = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 6))
    mask = jnp.array([[True, True, False, False, False], [True, False, False, False, False]])
    params = _init_randomly(model, x, t, context=context, context_mask=mask)

    jitted = jax.jit(
        lambda ctx, m: model.apply({"params": params}, x, t, context=ctx, context_mask=m)
    )

    def apply(ctx, m):
        return np.asarray(jitted(ctx, m))

    base = apply(context, mask)
    np.testing.assert_allclose(apply(context.at[:, 2:].set(9.0), mask), base, atol=1e-5)
    assert np.abs(apply(context.at[:, 0].set(9.0), mask) - base).max() > 1e-3
    # No context at all equals a fully masked one.
    no_context = np.asarray(jax.jit(lambda: model.apply({"params": params}, x, t))())
    np.testing.assert_allclose(apply(context, jnp.zeros_like(mask)), no_context, atol=1e-5)


def test_dropout_only_in_training():
    model = UNet(UNetConfig(**dict(TINY, dropout=0.5)))
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 8, 8, 3))
    t = jnp.array([1.0])
    params = _init_randomly(model, x, t)
    train = jax.jit(
        lambda key: model.apply({"params": params}, x, t, train=True, rngs={"dropout": key})
    )
    run = lambda seed: np.asarray(train(jax.random.PRNGKey(seed)))  # noqa: E731
    assert np.abs(run(0) - run(1)).max() > 1e-4
    evaluate = jax.jit(lambda: model.apply({"params": params}, x, t))  # no dropout key
    np.testing.assert_array_equal(np.asarray(evaluate()), np.asarray(evaluate()))


def test_timestep_embedding_is_ddpm_sinusoid():
    emb = np.asarray(timestep_embedding(jnp.array([0.0, 3.0]), 8))
    freqs = np.exp(-np.log(10_000.0) * np.arange(4) / 3)
    np.testing.assert_allclose(
        emb[1], np.concatenate([np.sin(3 * freqs), np.cos(3 * freqs)]), rtol=1e-5
    )
    np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])


def test_bad_sizes_are_user_errors():
    with pytest.raises(UserError, match="not divisible by 4"):
        UNet(UNetConfig(**dict(TINY, ch_mult=(1, 2, 2)))).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 6, 6, 1)), jnp.zeros((1,))
        )
    with pytest.raises(UserError, match="num_res_blocks"):
        UNetConfig(**dict(TINY, num_res_blocks=0)).validate()
