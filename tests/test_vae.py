import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data.spec import DataSpec
from jaxgen.distributions import discretized_logistic_log_prob, gaussian_kl_to_standard
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


def _vae(cond="none"):
    config = load_config(f"configs/vae.py:preset=smoke,cond={cond}")
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
