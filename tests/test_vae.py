import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.data.spec import DataSpec
from jaxgen.distributions import discretized_logistic_log_prob, gaussian_kl_to_standard
from jaxgen.methods.latent_mixture import fit_mixture, sample_mixture
from jaxgen.methods.vae import VAE
from tests.conftest import adam_losses, load_config


def test_discretized_logistic_sums_to_one_over_256_values():
    values = jnp.linspace(-1.0, 1.0, 256)
    for mean, log_scale in [(0.1, -2.0), (-0.9, -4.0), (0.7, 0.5), (0.0, -6.5)]:
        logp = discretized_logistic_log_prob(values, jnp.full(256, mean), jnp.full(256, log_scale))
        np.testing.assert_allclose(jnp.exp(logp).sum(), 1.0, atol=2e-4)


def test_kl_matches_monte_carlo():
    mean, log_var = jnp.array([0.5, -1.0]), jnp.array([-0.3, 0.4])
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(jax.random.PRNGKey(0), (200_000, 2))
    log_q = -0.5 * (jnp.log(2 * jnp.pi) + log_var + (z - mean) ** 2 / jnp.exp(log_var))
    log_p = -0.5 * (jnp.log(2 * jnp.pi) + z**2)
    np.testing.assert_allclose(
        jnp.mean(log_q - log_p, 0), gaussian_kl_to_standard(mean, log_var), atol=0.01
    )


def _vae(cond="none", **model):
    config = load_config(f"configs/vae.py:preset=smoke,cond={cond}")
    config.model.update(model)
    return VAE(config, DataSpec((28, 28, 1), 10, cond)), config


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.random((n, 28, 28, 1)) < 0.3).astype(np.uint8) * 255
    return {"image": jnp.asarray(images), "label": jnp.asarray(np.arange(n) % 10, jnp.int32)}


def test_loss_goes_down_on_a_small_batch():
    method, _ = _vae()
    batch = _batch()
    params = jax.jit(method.init_params)(jax.random.PRNGKey(0), batch)
    _, losses = adam_losses(method.loss, params, batch, steps=60)
    assert np.mean(losses[-5:]) < 0.65 * np.mean(losses[:5])


def test_lean_networks_with_a_shared_scale_train():
    """``convs_per_level=0``: only the stride-2 stages; ``shared_scale``: one log scale."""
    method, _ = _vae(convs_per_level=0, shared_scale=True)
    batch = _batch()
    params = jax.jit(method.init_params)(jax.random.PRNGKey(0), batch)
    kernels = [p["kernel"].shape for p in params["encoder"].values() if "kernel" in p]
    assert kernels[:2] == [(4, 4, 1, 8), (4, 4, 8, 16)]  # stride-2 stages, then two Dense
    up = [params["decoder"][f"ConvTranspose_{i}"]["kernel"].shape for i in range(2)]
    assert up == [(4, 4, 16, 8), (4, 4, 8, 2)]  # the last stage writes mean and log scale
    assert not any(name.startswith("Conv_") for name in params["decoder"])
    assert params["decoder"]["log_scale"].shape == (1,)

    z = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    shifted = jax.tree.map(lambda x: x, params)
    shifted["decoder"]["log_scale"] = jnp.full((1,), -1.5)
    _, log_scale = method.decoder.apply({"params": shifted["decoder"]}, z)
    np.testing.assert_allclose(log_scale, -1.5)  # the same at every pixel, whatever z

    # The shared log scale starts at 0 (a broad likelihood) and moves about lr per step.
    _, losses = adam_losses(method.loss, params, batch, steps=60)
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])


def test_iwae_bound_is_tighter_than_elbo_and_consistent():
    method, _ = _vae()
    batch = _batch(8)
    params = jax.jit(method.init_params)(jax.random.PRNGKey(1), batch)
    out = jax.jit(method.likelihood)(params, batch, jax.random.PRNGKey(2))
    assert out["nll_iwae"].shape == (8,)
    assert np.all(out["nll_iwae"] <= -out["elbo"] + 1e-3)
    np.testing.assert_allclose(
        out["bits_per_dim"], out["nll_iwae"] / (28 * 28 * np.log(2.0)), rtol=1e-6
    )


def test_conditional_vae_uses_the_label():
    method, _ = _vae(cond="class")
    batch = _batch(4)
    params = jax.jit(method.init_params)(jax.random.PRNGKey(0), batch)
    params = jax.tree.map(lambda x: x + 0.05, params)  # break the zero-init of embeddings
    rng = jax.random.PRNGKey(3)
    a = method.sample(params, rng, 4, {"label": jnp.zeros(4, jnp.int32)})
    b = method.sample(params, rng, 4, {"label": jnp.full(4, 7, jnp.int32)})
    assert a.shape == (4, 28, 28, 1) and float(jnp.abs(a - b).max()) > 0
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_latent_mixture_recovers_two_clusters_and_samples_them():
    rng = np.random.default_rng(0)
    a = rng.normal([4.0, 0.0], 0.5, (600, 2))
    b = rng.normal([-4.0, 1.0], [1.0, 0.2], (200, 2))
    mixture = fit_mixture(np.concatenate([a, b]), components=2, seed=0)
    order = np.argsort(mixture["means"][:, 0])  # [cluster b, cluster a]
    np.testing.assert_allclose(np.exp(mixture["log_weights"][order]), [0.25, 0.75], atol=0.01)
    # Clusters this far apart: each component is its cluster's maximum-likelihood Gaussian.
    np.testing.assert_allclose(mixture["means"][order], [b.mean(0), a.mean(0)], atol=1e-3)

    draws = np.asarray(sample_mixture(mixture, jax.random.PRNGKey(0), 20_000))
    right = draws[:, 0] > 0
    assert abs(right.mean() - 0.75) < 0.01
    np.testing.assert_allclose(draws[~right].std(0), b.std(0), rtol=0.05)
    np.testing.assert_allclose(draws[right].std(0), a.std(0), rtol=0.05)


def test_gmm_sampler_decodes_the_mixture_fitted_to_posterior_means():
    from jaxgen.errors import UserError
    from jaxgen.sampling import SampleOptions

    method, _ = _vae()
    batch = _batch()
    params = jax.jit(method.init_params)(jax.random.PRNGKey(0), batch)
    source = [{"image": np.asarray(image)} for image in batch["image"]]
    gmm = method.resolve_sample_options(SampleOptions(sampler="gmm"))
    prepared = method.prepare_sampling(params, gmm, source)
    mixture = prepared["latent_mixture"]
    means, _ = method.encode(params, batch["image"])
    # Fitted to the 16 posterior means: the mixture's mean is theirs.
    weights = np.exp(np.asarray(mixture["log_weights"]))
    np.testing.assert_allclose(weights @ np.asarray(mixture["means"]), means.mean(0), atol=1e-4)

    rng = jax.random.PRNGKey(5)
    images = method.sample(prepared, rng, 4, options=gmm)
    z = sample_mixture(mixture, rng, 4)
    np.testing.assert_allclose(images, method.decode(params, z), atol=1e-6)
    prior = method.resolve_sample_options(SampleOptions(sampler="prior"))
    assert method.prepare_sampling(params, prior, source) is params
    with pytest.raises(UserError, match="no fitted mixture"):
        method.sample(params, rng, 4, options=gmm)
    with pytest.raises(UserError, match="sample.sampler='ddim'"):
        method.resolve_sample_options(SampleOptions(sampler="ddim"))
    conditional, _ = _vae(cond="class")
    with pytest.raises(UserError, match="cond=class"):
        conditional.resolve_sample_options(SampleOptions(sampler="gmm"))
