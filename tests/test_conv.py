"""The loop-safe convolution: JAX's values and gradients, canonical convolutions in loops."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.models.conv import Conv, conv_nhwc

LAYERS = [
    dict(features=7, kernel_size=(3, 3)),
    dict(features=6, kernel_size=(4, 4), strides=(2, 2)),
    dict(features=4, kernel_size=(3, 3), strides=(2, 2), padding="VALID"),  # drops a row
    dict(features=4, kernel_size=(1, 1)),
    dict(features=5, kernel_size=(2, 3), padding=((1, 0), (2, 0))),  # causal window
    dict(features=4, kernel_size=(3, 3), kernel_dilation=(2, 2)),  # falls back to lax
]


def _loss(module):
    return lambda params, x: jnp.sum(jnp.sin(module.apply(params, x)))


@pytest.mark.parametrize("layer", LAYERS, ids=lambda d: str(sorted(d.items())))
def test_values_and_gradients_match_flax_conv(layer):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 10, 9, 5))
    ours, reference = Conv(**layer), nn.Conv(**layer)
    params = reference.init(jax.random.PRNGKey(1), x)
    assert jax.tree.structure(ours.init(jax.random.PRNGKey(1), x)) == jax.tree.structure(params)

    np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x), atol=1e-5)
    got = jax.grad(_loss(ours), (0, 1))(params, x)
    want = jax.grad(_loss(reference), (0, 1))(params, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-5)

    # Reverse over reverse, as a gradient penalty (R1) differentiates it.
    def penalty(module):
        return lambda p, x: jnp.sum(jax.grad(_loss(module), 1)(p, x) ** 2)

    got = jax.grad(penalty(ours))(params, x)
    want = jax.grad(penalty(reference))(params, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-3, rtol=1e-4)


def _scanned_gradient_hlo(conv) -> str:
    x = jnp.ones((4, 8, 8, 16))
    kernels = jnp.ones((3, 3, 3, 16, 16)) * 0.01

    def loss(kernels, x):
        def body(h, kernel):
            return h + jnp.tanh(conv(h, kernel)), None

        h, _ = jax.lax.scan(body, x, kernels)
        return jnp.sum(h**2)

    return jax.jit(jax.grad(loss)).lower(kernels, x).compile().as_text()


def _conv_layouts(hlo: str) -> set[str]:
    return set(re.findall(r"convolution\(.*dim_labels=(\S+?),", hlo))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU property")
def test_gradient_in_a_loop_is_all_canonical_convolutions():
    ours = _conv_layouts(_scanned_gradient_hlo(lambda h, k: conv_nhwc(h, k, (1, 1), "SAME")))
    assert ours == {"b01f_01io->b01f"}, ours
