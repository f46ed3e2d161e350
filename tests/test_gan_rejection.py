"""Discriminator rejection sampling: exact rejection sampling on a known case, calibration,
and the GAN's ``sample.sampler=drs`` (options, what it keeps, independence of other slots)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import clusters
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.gan import rejection
from jaxgen.gan.rejection_sampler import CANDIDATES
from jaxgen.methods.gan import GAN
from jaxgen.sampling import SampleOptions
from tests.conftest import gray_batch, jitted_init, load_config


def test_zero_shift_is_exact_rejection_sampling_of_the_data_density():
    """Generator U(0, 1), data density 2x on [0, 1]: the optimal discriminator's logit is
    log 2x, its maximum log 2. With gamma = 0 a draw is kept with probability x, so the kept
    draws have density 2x: mean 2/3, a quarter of them below 1/2 (U(0, 1): 1/2, 1/2)."""
    slots = 20_000
    x = jax.random.uniform(jax.random.PRNGKey(0), (slots, CANDIDATES), minval=1e-6)
    calibration = {"max_logit": jnp.float32(math.log(2.0)), "gamma": jnp.float32(0.0)}
    probability = rejection.acceptance_probability(jnp.log(2.0 * x), calibration)
    np.testing.assert_allclose(probability, x, rtol=1e-4, atol=1e-5)
    uniform = jax.random.uniform(jax.random.PRNGKey(1), x.shape)
    index, accepted = rejection.choose(probability, uniform)
    kept = np.asarray(x[jnp.arange(slots), index])
    assert float(accepted.mean()) > 0.999  # a slot keeps none with probability 2^-16
    assert abs(kept.mean() - 2.0 / 3.0) < 0.006  # standard error 0.0017
    assert abs((kept < 0.5).mean() - 0.25) < 0.012  # standard error 0.003
    assert abs(float(x[:, 0].mean()) - 0.5) < 0.01  # the candidates themselves: U(0, 1)


def test_choose_takes_the_first_accepted_else_the_most_likely():
    probability = jnp.array([[0.1, 0.9, 0.8], [0.2, 0.7, 0.3]])
    uniform = jnp.array([[0.5, 0.95, 0.1], [0.9, 0.8, 0.4]])
    index, accepted = rejection.choose(probability, uniform)
    np.testing.assert_array_equal(index, [2, 1])
    np.testing.assert_array_equal(accepted, [True, False])


def test_calibration_and_scores():
    logits = jax.random.normal(jax.random.PRNGKey(2), (1000,))
    calibration = rejection.calibrate(logits, 90.0)
    assert float(calibration["max_logit"]) == float(logits.max())
    scores = rejection.acceptance_scores(logits, calibration["max_logit"])
    assert float(calibration["gamma"]) == pytest.approx(float(np.percentile(scores, 90.0)))
    assert bool(jnp.all(jnp.diff(scores[jnp.argsort(logits)]) >= 0))  # monotone in the logit
    probability = rejection.acceptance_probability(logits, calibration)
    assert float(jnp.mean(probability > 0.5)) == pytest.approx(0.10, abs=0.002)
    above = rejection.acceptance_scores(logits.max() + 3.0, calibration["max_logit"])
    assert float(above) == pytest.approx(-math.log(rejection.EPSILON), rel=1e-3)


@pytest.fixture(scope="module")
def gan():
    """An untrained class-conditional smoke GAN (spectrally normalised D: per-image logits)."""
    config = load_config("configs/gan.py:preset=smoke,cond=class")
    method = GAN(config, DataSpec((8, 8, 1), 10, "class"))
    batch = {
        "image": jnp.zeros((8, 8, 8, 1), jnp.uint8),
        "label": jnp.arange(8, dtype=jnp.int32) % 10,
    }
    state = jitted_init(method, method.make_optimizer(), jax.random.PRNGKey(0), batch)
    return method, state


@pytest.fixture(scope="module")
def clustered_gan():
    """An untrained smoke GAN conditioned on 3 k-means clusters (``gan.clusters``)."""
    config = load_config("configs/gan.py:preset=smoke")
    config.gan.clusters = 3
    method = GAN(config, DataSpec((8, 8, 1), 10, "none"))
    state = jitted_init(method, method.make_optimizer(), jax.random.PRNGKey(0), gray_batch(0))
    return method, state


@pytest.fixture(params=["class", "clusters"])
def labelled_gan(request, gan, clustered_gan):
    return gan if request.param == "class" else clustered_gan


def _drs(method, state, percentile):
    options = method.resolve_sample_options(SampleOptions(sampler="drs", drs_percentile=percentile))
    params = method.prepare_sampling(method.sampling_params(state, options), options, None)
    return options, params


def _logits(method, params, images, labels):
    return method._score(params, jnp.asarray(images) * 2.0 - 1.0, labels)


def test_drs_keeps_each_slot_one_of_its_draws_as_the_acceptance_rule_says(labelled_gan):
    """Against the candidates drawn the way ``sample`` draws them: each kept image is one of
    its slot's draws, and the kept draws' mean logit matches its exact expectation under the
    rule (first accepted, else the likeliest); a higher percentile keeps higher logits. For
    classes and for clusters: the slot's label conditions its draws and their scores."""
    method, state = labelled_gan
    num, rng = 1024, jax.random.PRNGKey(3)
    slots = jnp.arange(num, dtype=jnp.int32) % (method.clusters or method.num_classes)
    total = num * CANDIDATES
    expected_means = []
    for percentile in (50.0, 99.0):
        options, params = _drs(method, state, percentile)
        kept = jax.jit(method.sample, static_argnums=(2, 4))(
            params, rng, num, {"label": slots}, options
        )
        assert kept.shape == (num, 8, 8, 1)
        draw_rng, _ = jax.random.split(rng)
        sampler = method.rejection_sampler
        _, logits = sampler.scored_draws(
            params, draw_rng, total, sampler.candidate_labels(slots, total)
        )
        logits = logits.reshape(num, CANDIDATES)
        kept_logits = _logits(method, params, kept, slots)
        gaps = jnp.min(jnp.abs(logits - kept_logits[:, None]), axis=1)
        assert float(gaps.max()) < 1e-5  # the kept image is one of its slot's draws
        p = rejection.acceptance_probability(logits, params["drs"])
        before = jnp.cumprod(1.0 - p, axis=1)
        first = p * jnp.concatenate([jnp.ones((num, 1)), before[:, :-1]], axis=1)
        fallback = jnp.take_along_axis(logits, jnp.argmax(p, axis=1)[:, None], axis=1)[:, 0]
        mean = jnp.sum(first * logits, axis=1) + before[:, -1] * fallback
        second = jnp.sum(first * logits**2, axis=1) + before[:, -1] * fallback**2
        stderr = float(jnp.sqrt(jnp.sum(second - mean**2))) / num
        assert abs(float(kept_logits.mean() - mean.mean())) < 4 * stderr
        expected_means.append(float(mean.mean()))
    assert float(logits.mean()) < expected_means[0] < expected_means[1]


def test_drs_sample_does_not_depend_on_later_slots(gan):
    """Slots share discriminator chunks of 64 draws (4 slots of 16), not earlier chunks."""
    method, state = gan
    options, params = _drs(method, state, 95.0)
    rng = jax.random.PRNGKey(4)
    a = method.sample(params, rng, 5, {"label": jnp.array([0, 1, 2, 3, 4])}, options)
    b = method.sample(params, rng, 9, {"label": jnp.array([0, 1, 2, 3, 9, 8, 7, 6, 5])}, options)
    np.testing.assert_array_equal(a[:4], b[:4])


def test_drs_on_clusters_draws_each_slot_a_cluster_by_size(clustered_gan):
    """Asked for no labels, a clustered GAN's slots take clusters drawn in proportion to the
    counts (:func:`jaxgen.clusters.draw`), as its plain sampler does."""
    method, state = clustered_gan
    options, params = _drs(method, state, 95.0)
    assert set(params) == {"generator", "cluster_counts", "discriminator",
                           "discriminator_state", "drs"}  # fmt: skip
    rng, num = jax.random.PRNGKey(5), 12
    slots = clusters.draw(jax.random.fold_in(rng, 2), params["cluster_counts"], num)
    assert len(set(np.asarray(slots).tolist())) > 1
    unlabelled = method.sample(params, rng, num, None, options)
    np.testing.assert_array_equal(
        unlabelled, method.sample(params, rng, num, {"label": slots}, options)
    )
    other = (slots + 1) % method.clusters
    assert not np.array_equal(
        unlabelled, method.sample(params, rng, num, {"label": other}, options)
    )


def test_drs_params_hold_the_discriminator(gan):
    method, state = gan
    options, params = _drs(method, state, 0.0)
    assert options.drs_percentile == rejection.DEFAULT_PERCENTILE
    assert set(params) == {"generator", "discriminator", "discriminator_state", "drs"}
    assert set(method.sampling_params(state)) == {"generator"}


@pytest.mark.parametrize(
    "options, text",
    [
        (SampleOptions(sampler="drs", drs_percentile=100.0), "drs_percentile=100.0: expected"),
        (SampleOptions(drs_percentile=90.0), "sample.drs_percentile=90.0: family 'gan' does not"),
        (SampleOptions(sampler="topk"), "sample.sampler='topk': expected one of"),
        (SampleOptions(sampler="drs", steps=4), "sample.steps=4: family 'gan' does not"),
    ],
)
def test_bad_drs_options_are_one_line_errors(gan, options, text):
    method, _ = gan
    with pytest.raises(UserError, match=text):
        method.resolve_sample_options(options)


def test_drs_is_refused_for_text_conditioned_gans():
    config = load_config("configs/gan.py:preset=smoke,cond=text,data=sprites")
    config.sample.sampler = "drs"
    with pytest.raises(UserError, match="sample.sampler='drs': for GANs without text"):
        GAN(config, DataSpec((8, 8, 3), 5, "text")).resolve_sample_options()
