"""Ancestral sampling (Ho et al. 2020, Algorithm 2) on any grid of noise levels.

Each step draws ``x_s ~ p(x_s | x_t) = q(x_s | x_t, x_0 = x0_hat)``, the Gaussian posterior of
the forward process between the levels ``t > s``:

  alpha_ts = alpha_t / alpha_s,   sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2
  mean = alpha_ts sigma_s^2 / sigma_t^2 * x_t + alpha_s sigma_ts^2 / sigma_t^2 * x0_hat
  var  = sigma_ts^2 sigma_s^2 / sigma_t^2                  ("small", beta~_t in the paper)
       or sigma_ts^2                                        ("large", beta_t in the paper)

On the full DDPM grid this is exactly the paper's sampler; on a coarser grid it is the strided
ancestral sampler. The last step returns the mean ``x0_hat`` without noise. NFE = steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgen.samplers.base import Denoiser, Grid

VARIANCES = ("small", "large")


@functools.partial(jax.jit, static_argnames=("denoise", "variance"))
def sample(
    denoise: Denoiser, x: jax.Array, grid: Grid, rng: jax.Array, variance: str = "small"
) -> jax.Array:
    """Runs ``grid.num_levels`` ancestral steps from ``x`` (at level 0) to data."""
    if variance not in VARIANCES:
        raise ValueError(f"ancestral variance {variance!r}: expected one of {VARIANCES}")
    last = grid.num_levels - 1

    def step(x, inputs):
        i, key = inputs
        a_t, s_t, a_s, s_s = grid.alpha[i], grid.sigma[i], grid.alpha[i + 1], grid.sigma[i + 1]
        x0 = denoise(x, grid.t[i], a_t, s_t)
        a_ts = a_t / a_s
        var_ts = s_t**2 - a_ts**2 * s_s**2
        mean = (a_ts * s_s**2 / s_t**2) * x + (a_s * var_ts / s_t**2) * x0
        var = var_ts * s_s**2 / s_t**2 if variance == "small" else var_ts
        std = jnp.where(i == last, 0.0, jnp.sqrt(jnp.maximum(var, 0.0)))
        return mean + std * jax.random.normal(key, x.shape, x.dtype), None

    keys = jax.random.split(rng, grid.num_levels)
    x, _ = jax.lax.scan(step, x, (jnp.arange(grid.num_levels), keys))
    return x
