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


def test_tempered_categorical_draws_follow_the_tempered_softmax():
    from jaxgen.pixelcnn import categorical

    n, temperature = 20_000, 0.5
    logits = jax.random.normal(jax.random.PRNGKey(3), (256,)) * 2.0
    out = jnp.tile(logits, (n, 1))  # one channel: the 256 logits of every draw
    draws = categorical.sample_channel(out, 0, 1, jax.random.PRNGKey(4), temperature)
    freq = np.bincount(np.asarray(draws), minlength=256) / n
    tempered = np.asarray(jax.nn.softmax(logits / temperature))
    assert 0.5 * np.abs(freq - tempered).sum() < 0.05  # total variation
    assert 0.5 * np.abs(tempered - np.asarray(jax.nn.softmax(logits))).sum() > 0.2
    greedy = categorical.sample_channel(out[:4], 0, 1, jax.random.PRNGKey(4), 0.0)
    np.testing.assert_array_equal(np.asarray(greedy), int(jnp.argmax(logits)))


def test_tempered_mixture_draws_follow_the_tempered_mixture():
    """At temperature T the draws follow the mixture whose logits are divided by T and whose
    scales are multiplied by it; at 0, the likeliest component's mean."""
    from jaxgen.pixelcnn import logistic_mixture

    n, temperature = 20_000, 0.5
    out = jnp.array([0.3, -0.2, -0.5, 0.6, -2.5, -3.0])  # logits, means, log-scales
    draws = logistic_mixture.sample_pixel(
        jnp.tile(out, (n, 1)), 1, 2, jax.random.PRNGKey(0), temperature
    )
    freq = np.bincount(np.asarray(draws[:, 0]), minlength=256) / n
    log_t = np.log(temperature)
    tempered = jnp.concatenate([out[:2] / temperature, out[2:4], out[4:] + log_t])
    values = jnp.arange(256).reshape(256, 1, 1, 1)
    log_probs = logistic_mixture.log_prob(jnp.tile(tempered, (256, 1, 1, 1)), values, 2)
    probs = np.exp(np.asarray(log_probs))[:, 0, 0]
    assert 0.5 * np.abs(freq - probs).sum() < 0.05
    untempered = np.exp(
        np.asarray(logistic_mixture.log_prob(jnp.tile(out, (256, 1, 1, 1)), values, 2))
    )
    assert 0.5 * np.abs(untempered[:, 0, 0] - probs).sum() > 0.2
    greedy = logistic_mixture.sample_pixel(jnp.tile(out, (3, 1)), 1, 2, jax.random.PRNGKey(0), 0.0)
    np.testing.assert_array_equal(np.asarray(greedy[:, 0]), 64)  # component 0's mean, -0.5


@pytest.mark.parametrize("variant", ["gated", "pixelcnn_pp"])
def test_sample_temperature_reaches_every_draw(variant):
    """``sample.temperature=0`` draws greedily: the same images whatever the key."""
    method, params = tiny(variant, channels=1)
    method.config.sample.temperature = 0.0
    method, _ = _rebuild(method)
    sample = jax.jit(method.sample, static_argnums=2)
    first, second = (np.asarray(sample(params, jax.random.PRNGKey(k), 2)) for k in (1, 2))
    np.testing.assert_array_equal(first, second)


def test_the_tables_name_a_sampling_temperature_other_than_1():
    from jaxgen.methods.pixelcnn import PixelCNN
    from tests.conftest import load_config

    config = load_config("configs/pixelcnn.py:preset=cpu").to_dict()
    assert PixelCNN.describe(config).sampler == "fast"
    config["sample"]["temperature"] = 0.9
    assert PixelCNN.describe(config).sampler == "fast, temperature 0.9"
