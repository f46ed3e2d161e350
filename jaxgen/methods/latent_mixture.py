"""A Gaussian mixture fitted to encoded training images: the VAE's ex-post sampling prior.

Sampling a VAE from ``N(0, I)`` decodes latents the encoder rarely produced (the "holes" of
the aggregate posterior ``q(z) = E_x q(z|x)``), and those decode to malformed images. Ghosh et
al. 2020 ("From Variational to Deterministic Autoencoders", ex-post density estimation) fit a
mixture of Gaussians to the posterior means of the training images after training and sample
``z`` from it instead; the decoder is unchanged. :func:`fit_mixture` does that fit (EM with full
covariances, scikit-learn's ``GaussianMixture``); :func:`sample_mixture` draws from the result
inside ``jax.jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def fit_mixture(latents: np.ndarray, components: int, seed: int) -> dict[str, np.ndarray]:
    """Fits ``components`` full-covariance Gaussians to ``latents`` float ``[N, D]``.

    Returns float32 ``{"log_weights": [K], "means": [K, D], "scale_tril": [K, D, D]}``
    (the Cholesky factor of each covariance). Deterministic for the same inputs and ``seed``.
    """
    from sklearn.mixture import GaussianMixture

    latents = np.asarray(latents, np.float64)
    if latents.ndim != 2 or len(latents) < components:
        raise ValueError(f"latents {latents.shape}: need [N, D] with N >= {components}")
    mixture = GaussianMixture(
        components, covariance_type="full", reg_covar=1e-5, max_iter=200, random_state=seed
    ).fit(latents)
    return {
        "log_weights": np.log(mixture.weights_).astype(np.float32),
        "means": mixture.means_.astype(np.float32),
        "scale_tril": np.linalg.cholesky(mixture.covariances_).astype(np.float32),
    }


def sample_mixture(mixture: dict[str, jax.Array], rng: jax.Array, num: int) -> jax.Array:
    """``num`` float32 draws ``[num, D]`` from a mixture of :func:`fit_mixture`."""
    pick_rng, noise_rng = jax.random.split(rng)
    k = jax.random.categorical(pick_rng, mixture["log_weights"], shape=(num,))
    eps = jax.random.normal(noise_rng, (num, mixture["means"].shape[-1]))
    return mixture["means"][k] + jnp.einsum("nij,nj->ni", mixture["scale_tril"][k], eps)
