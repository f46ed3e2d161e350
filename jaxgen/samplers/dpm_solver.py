"""DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a multistep second-order ODE solver.

With ``lambda = log(alpha / sigma)`` and ``h_i = lambda_{i+1} - lambda_i``, the step from level
``i`` to ``i + 1`` is

  x_{i+1} = sigma_{i+1} / sigma_i * x_i - alpha_{i+1} (exp(-h_i) - 1) D_i
  D_i = x0_i                                                 (first step)
  D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1},  r_i = h_{i-1} / h_i   (later steps)

where ``x0_i`` is the denoiser's output at level ``i``. The final step to the clean level
(``lambda = inf``) returns ``x0`` of the last noisy level. NFE = steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgen.samplers.base import Denoiser, Grid


@functools.partial(jax.jit, static_argnames=("denoise",))
def sample(denoise: Denoiser, x: jax.Array, grid: Grid, rng: jax.Array) -> jax.Array:
    """Runs DPM-Solver++(2M) over the grid from ``x`` (at level 0) to data (``rng`` unused)."""
    del rng
    lam = jnp.log(grid.alpha[:-1]) - jnp.log(grid.sigma[:-1])  # [N]

    def step(carry, i):
        x, x0_prev, h_prev = carry
        x0 = denoise(x, grid.t[i], grid.alpha[i], grid.sigma[i])
        h = lam[i + 1] - lam[i]
        half_inv_r = 0.5 * h / jnp.where(i == 0, h, h_prev)
        d = jnp.where(i == 0, x0, (1.0 + half_inv_r) * x0 - half_inv_r * x0_prev)
        x = grid.sigma[i + 1] / grid.sigma[i] * x - grid.alpha[i + 1] * jnp.expm1(-h) * d
        return (x, x0, h), None

    steps = jnp.arange(grid.num_levels - 1)
    (x, _, _), _ = jax.lax.scan(step, (x, jnp.zeros_like(x), jnp.ones((), x.dtype)), steps)
    last = grid.num_levels - 1
    return denoise(x, grid.t[last], grid.alpha[last], grid.sigma[last])
