"""The plain and the fast (cached) autoregressive samplers compute the same thing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.pixelcnn import sampling
from tests.test_pixelcnn import H, W, tiny


@pytest.mark.parametrize(
    "variant", ["pixelcnn", "gated", "gated_tall", "gated_wide", "pixelcnn_pp", "pixelcnn_pp_scan"]
)
def test_incremental_outputs_match_the_full_pass(variant):
    scan = variant == "pixelcnn_pp_scan"
    rows = 3 if variant in ("gated_tall", "gated_wide") else 2
    cols = 5 if variant == "gated_wide" else 3
    name = variant.removesuffix("_scan").removesuffix("_tall").removesuffix("_wide")
    method, params = tiny(name, channels=3, vertical_rows=rows, vertical_cols=cols)
    if variant.startswith("pixelcnn_pp"):  # three resolutions: 8x8, 4x4, 2x2
        method.config.model.num_levels = 3
        if scan:  # the caches of two stacked resnets per level
            method.config.model.num_resnet, method.config.model.scan_blocks = 2, True
        method, params = _rebuild(method)
    images = jax.random.randint(jax.random.PRNGKey(5), (2, H, W, 3), 0, 256)
    model = method.model
    full, _ = jax.jit(model.apply)(params, images, {})
    step_by_step = jax.jit(lambda p, x: sampling.incremental_outputs(model, p, x))(params, images)
    np.testing.assert_allclose(np.asarray(step_by_step), np.asarray(full), atol=2e-5, rtol=1e-5)


def _rebuild(method):
    from jaxgen.methods.pixelcnn import PixelCNN

    method = PixelCNN(method.config, method.data)
    batch = {"image": jnp.zeros((1, *method.data.image_shape), jnp.uint8)}
    return method, jax.jit(method.init_params)(jax.random.PRNGKey(0), batch)


@pytest.mark.parametrize(
    "variant,channels,num_classes",
    [("pixelcnn", 3, 0), ("gated", 1, 4), ("gated", 3, 0), ("pixelcnn_pp", 3, 0)],
)
def test_plain_and_fast_samplers_draw_the_same_images(variant, channels, num_classes):
    method, params = tiny(variant, channels=channels, num_classes=num_classes)
    cond = {"label": jnp.array([0, 1, 3])} if num_classes else None
    rng = jax.random.PRNGKey(11)
    images = {}
    for name in ("plain", "fast"):
        method.config.sample.sampler = name
        images[name] = np.asarray(jax.jit(method.sample, static_argnums=2)(params, rng, 3, cond))
    np.testing.assert_array_equal(images["plain"], images["fast"])
    values = np.round(images["fast"] * 255)
    assert values.shape == (3, H, W, channels)
    assert len(np.unique(values)) > 20  # real draws, not a constant canvas
    other = jax.jit(method.sample, static_argnums=2)(params, jax.random.PRNGKey(12), 3, cond)
    assert not np.array_equal(np.asarray(other), images["fast"])


def test_mixture_sampler_draws_from_the_model():
    """Histogram of draws vs. the probabilities of ``log_prob`` (one channel, 2 components)."""
    from jaxgen.pixelcnn import logistic_mixture

    n = 20_000
    out = jnp.array([0.3, -0.2, -0.5, 0.6, -2.5, -3.0])  # logits, means, log-scales
    draws = logistic_mixture.sample_pixel(jnp.tile(out, (n, 1)), 1, 2, jax.random.PRNGKey(0))
    freq = np.bincount(np.asarray(draws[:, 0]), minlength=256) / n
    values = jnp.arange(256).reshape(256, 1, 1, 1)
    probs = np.exp(logistic_mixture.log_prob(jnp.tile(out, (256, 1, 1, 1)), values, 2))[:, 0, 0]
    assert 0.5 * np.abs(freq - probs).sum() < 0.05  # total variation
    # Three channels, one sharp component at (200, 100, 50), coupling coefficients tanh(0) = 0.
    sharp = jnp.zeros((64, logistic_mixture.num_outputs(3, 1)))
    sharp = sharp.at[:, 1:4].set(jnp.array([200, 100, 50]) / 127.5 - 1).at[:, 4:7].set(-7.0)
    pixels = np.asarray(logistic_mixture.sample_pixel(sharp, 3, 1, jax.random.PRNGKey(1)))
    assert np.mean(np.abs(pixels - [200, 100, 50]) <= 1) > 0.95
