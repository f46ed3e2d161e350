"""DDIM (Song, Meng & Ermon 2021, Eq. 12) with stochasticity ``eta``.

From level ``t`` to ``s``, with ``eps_hat = (x_t - alpha_t x0_hat) / sigma_t``:

  c = eta * sqrt(sigma_ts^2 sigma_s^2 / sigma_t^2)      (the ancestral posterior std)
  x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z

``eta = 0`` is the deterministic DDIM (a first-order solver of the probability-flow ODE);
``eta = 1`` is ancestral sampling with the "small" variance. NFE = steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgen.samplers.base import Denoiser, Grid


@functools.partial(jax.jit, static_argnames=("denoise",))
def sample(
    denoise: Denoiser, x: jax.Array, grid: Grid, rng: jax.Array, eta: float = 0.0
) -> jax.Array:
    """Runs ``grid.num_levels`` DDIM steps from ``x`` (at level 0) to data."""

    def step(x, inputs):
        i, key = inputs
        a_t, s_t, a_s, s_s = grid.alpha[i], grid.sigma[i], grid.alpha[i + 1], grid.sigma[i + 1]
        x0 = denoise(x, grid.t[i], a_t, s_t)
        eps = (x - a_t * x0) / s_t
        var_ts = s_t**2 - (a_t / a_s) ** 2 * s_s**2
        c = eta * jnp.sqrt(jnp.maximum(var_ts * s_s**2 / s_t**2, 0.0))
        direction = jnp.sqrt(jnp.maximum(s_s**2 - c**2, 0.0))
        return a_s * x0 + direction * eps + c * jax.random.normal(key, x.shape, x.dtype), None

    keys = jax.random.split(rng, grid.num_levels)
    x, _ = jax.lax.scan(step, x, (jnp.arange(grid.num_levels), keys))
    return x
