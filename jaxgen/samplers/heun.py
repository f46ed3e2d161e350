"""EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1).

Works on ``y = x / alpha`` and ``sigma~ = sigma / alpha`` (so any process becomes the
variance-exploding one), integrating the probability-flow ODE
``dy / dsigma~ = (y - D(y; sigma~)) / sigma~`` with Heun's second-order method between noisy
levels and a final Euler step to ``sigma~ = 0``. NFE = 2 * steps - 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgen.samplers.base import Denoiser, Grid


@functools.partial(jax.jit, static_argnames=("denoise",))
def sample(denoise: Denoiser, x: jax.Array, grid: Grid, rng: jax.Array) -> jax.Array:
    """Runs the Heun sampler over the grid from ``x`` (at level 0) to data (``rng`` unused)."""
    del rng
    ratio = grid.sigma / grid.alpha  # sigma~ per level, [N + 1], last 0

    def slope(y, i):
        return (y - denoise(grid.alpha[i] * y, grid.t[i], grid.alpha[i], grid.sigma[i])) / ratio[i]

    def step(y, i):
        dt = ratio[i + 1] - ratio[i]
        d = slope(y, i)
        y_euler = y + dt * d
        return y + 0.5 * dt * (d + slope(y_euler, i + 1)), None

    y, _ = jax.lax.scan(step, x / grid.alpha[0], jnp.arange(grid.num_levels - 1))
    last = grid.num_levels - 1
    return denoise(grid.alpha[last] * y, grid.t[last], grid.alpha[last], grid.sigma[last])
