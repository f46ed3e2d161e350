"""Euler and Heun on the flow-matching ODE, for any process ``x = alpha x_0 + sigma eps``.

Every such path is the straight (rectified-flow) path after a rescaling:

  y = x / (alpha + sigma) = (1 - tau) x_0 + tau eps,    tau = sigma / (alpha + sigma)

so the probability-flow ODE is ``dy / dtau = v(y, tau) = E[eps - x_0 | y]``, and the denoiser
gives ``v = (y - x0_hat) / tau``. For rectified flow (``alpha = 1 - t``, ``sigma = t``) this is
``y = x``, ``tau = t``: plain Euler and Heun on ``dx / dt = v``. Unlike EDM's Heun
(:mod:`jaxgen.samplers.heun`, in ``x / alpha``) both start from pure noise, ``alpha = 0``.

* ``euler``: ``y_s = y_t + (tau_s - tau_t) v(y_t, tau_t)``, NFE = steps. It equals DDIM with
  ``eta = 0`` on every process (both are exact for a constant ``x0_hat``).
* ``flow_heun``: Heun's second-order step between noisy levels, then one Euler step to
  ``tau = 0`` (where ``v`` is not defined by the denoiser), NFE = 2 * steps - 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgen.samplers.base import Denoiser, Grid


def _flow_coordinates(grid: Grid) -> tuple[jax.Array, jax.Array]:
    """``(scale, tau)``: ``alpha + sigma`` and ``sigma / (alpha + sigma)``, float32 ``[N + 1]``."""
    scale = grid.alpha + grid.sigma
    return scale, grid.sigma / scale


@functools.partial(jax.jit, static_argnames=("denoise",))
def euler(denoise: Denoiser, x: jax.Array, grid: Grid, rng: jax.Array) -> jax.Array:
    """Runs ``grid.num_levels`` Euler steps from ``x`` (at level 0) to data (``rng`` unused)."""
    del rng
    scale, tau = _flow_coordinates(grid)

    def step(y, i):
        x0 = denoise(scale[i] * y, grid.t[i], grid.alpha[i], grid.sigma[i])
        return y + (tau[i + 1] - tau[i]) * (y - x0) / tau[i], None

    y, _ = jax.lax.scan(step, x / scale[0], jnp.arange(grid.num_levels))
    return y  # scale = 1 at the clean level


@functools.partial(jax.jit, static_argnames=("denoise",))
def heun(denoise: Denoiser, x: jax.Array, grid: Grid, rng: jax.Array) -> jax.Array:
    """Runs Heun's method over the grid from ``x`` (at level 0) to data (``rng`` unused)."""
    del rng
    scale, tau = _flow_coordinates(grid)

    def velocity(y, i):
        x0 = denoise(scale[i] * y, grid.t[i], grid.alpha[i], grid.sigma[i])
        return (y - x0) / tau[i]

    def step(y, i):
        dt = tau[i + 1] - tau[i]
        v = velocity(y, i)
        return y + 0.5 * dt * (v + velocity(y + dt * v, i + 1)), None

    y, _ = jax.lax.scan(step, x / scale[0], jnp.arange(grid.num_levels - 1))
    last = grid.num_levels - 1
    return denoise(scale[last] * y, grid.t[last], grid.alpha[last], grid.sigma[last])
