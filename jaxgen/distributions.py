"""Likelihoods of 8-bit images, in nats.

``discretized_logistic_log_prob``: the single-component discretized logistic
of PixelCNN++ (Salimans et al. 2017, eq. 2): pixel values ``x`` in [-1, 1] on
the 256-point grid; the first and last bins absorb the tails, so the 256
probabilities sum to one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BIN_HALF_WIDTH = 1.0 / 255.0  # half the spacing of 256 values spread over [-1, 1]


def discretized_logistic_log_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
    """Elementwise log P(x) in nats for x in {-1, -1 + 2/255, ..., 1}; same shapes."""
    centered = x - mean
    inv_scale = jnp.exp(-log_scale)
    plus_in = inv_scale * (centered + BIN_HALF_WIDTH)
    min_in = inv_scale * (centered - BIN_HALF_WIDTH)
    cdf_plus = jax.nn.sigmoid(plus_in)
    cdf_min = jax.nn.sigmoid(min_in)
    log_cdf_plus = plus_in - jax.nn.softplus(plus_in)  # log sigmoid(plus_in): lowest bin
    log_one_minus_cdf_min = -jax.nn.softplus(min_in)  # log (1 - sigmoid(min_in)): highest bin
    cdf_delta = cdf_plus - cdf_min
    mid_in = inv_scale * centered
    # Where the bin mass underflows, use the density at the bin centre times the bin width.
    log_pdf_mid = mid_in - log_scale - 2.0 * jax.nn.softplus(mid_in) + jnp.log(2 * BIN_HALF_WIDTH)
    log_mid = jnp.where(cdf_delta > 1e-5, jnp.log(jnp.maximum(cdf_delta, 1e-12)), log_pdf_mid)
    return jnp.where(x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_mid))


def gaussian_kl_to_standard(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(N(mean, exp(log_var)) || N(0, 1)), elementwise, in nats."""
    return 0.5 * (jnp.exp(log_var) + mean**2 - 1.0 - log_var)


def gaussian_log_prob(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """Elementwise log N(z; mean, exp(log_var)) in nats."""
    return -0.5 * (jnp.log(2 * jnp.pi) + log_var + (z - mean) ** 2 * jnp.exp(-log_var))
