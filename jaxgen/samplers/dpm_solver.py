"""DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), a multistep second-order ODE solver, and
with ``eta > 0`` its SDE form (SDE-DPM-Solver++(2M), same paper, Section 5).

With ``lambda = log(alpha / sigma)`` and ``h_i = lambda_{i+1} - lambda_i``, the step from level
``i`` to ``i + 1`` is

  x_{i+1} = sigma_{i+1} / sigma_i * exp(-eta h_i) x_i - alpha_{i+1} (exp(-(1 + eta) h_i) - 1) D_i
            + sigma_{i+1} sqrt(1 - exp(-2 eta h_i)) z_i,      z_i ~ N(0, I)
  D_i = x0_i                                                 (first step)
  D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1},  r_i = h_{i-1} / h_i   (later steps)

where ``x0_i`` is the denoiser's output at level ``i``. ``eta = 0`` is the ODE solver (no
noise); ``eta = 1`` solves the reverse SDE, which at each step forgets a share
``1 - exp(-2 h_i)`` of the noise it carries and draws it afresh, so that errors of earlier
steps are partly washed out at the price of more steps for the same accuracy. The final
step to the clean level (``lambda = inf``) returns ``x0`` of the last noisy level. NFE = steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgen.samplers.base import Denoiser, Grid


@functools.partial(jax.jit, static_argnames=("denoise", "eta"))
def sample(
    denoise: Denoiser, x: jax.Array, grid: Grid, rng: jax.Array, eta: float = 0.0
) -> jax.Array:
    """Runs DPM-Solver++(2M) over the grid from ``x`` (at level 0) to data; ``eta`` in [0, 1]
    (0: the ODE, ``rng`` unused; 1: the SDE)."""
    lam = jnp.log(grid.alpha[:-1]) - jnp.log(grid.sigma[:-1])  # [N]

    def step(carry, inputs):
        x, x0_prev, h_prev = carry
        i, key = inputs
        x0 = denoise(x, grid.t[i], grid.alpha[i], grid.sigma[i])
        h = lam[i + 1] - lam[i]
        half_inv_r = 0.5 * h / jnp.where(i == 0, h, h_prev)
        d = jnp.where(i == 0, x0, (1.0 + half_inv_r) * x0 - half_inv_r * x0_prev)
        decay = grid.sigma[i + 1] / grid.sigma[i] * jnp.exp(-eta * h)
        x = decay * x - grid.alpha[i + 1] * jnp.expm1(-(1.0 + eta) * h) * d
        if eta:  # a Python float: the ODE compiles without drawing noise
            fresh = grid.sigma[i + 1] * jnp.sqrt(-jnp.expm1(-2.0 * eta * h))
            x = x + fresh * jax.random.normal(key, x.shape, x.dtype)
        return (x, x0, h), None

    steps = jnp.arange(grid.num_levels - 1)
    keys = jax.random.split(rng, grid.num_levels - 1)
    init = (x, jnp.zeros_like(x), jnp.ones((), x.dtype))
    (x, _, _), _ = jax.lax.scan(step, init, (steps, keys))
    last = grid.num_levels - 1
    return denoise(x, grid.t[last], grid.alpha[last], grid.sigma[last])
