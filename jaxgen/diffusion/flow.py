"""MeanFlow (Geng et al. 2025): the average velocity of the rectified-flow ODE, one-step sampling.

On the path ``z_t = (1 - t) x_0 + t eps`` (``t = 1``: noise) the ODE ``dz / dt = v(z_t, t)``
has the average velocity over ``[r, t]``

  u(z_t, r, t) = (z_t - z_r) / (t - r) = 1 / (t - r) * integral_r^t v(z_s, s) ds,

and ``u(z, t, t) = v(z, t)``. Differentiating ``(t - r) u = integral_r^t v ds`` in ``t`` gives
the MeanFlow identity

  u(z_t, r, t) = v(z_t, t) - (t - r) d/dt u(z_t, r, t),
  d/dt u = v * du/dz + du/dt     (the total derivative along the path; r is held fixed),

a Jacobian-vector product of ``u`` with the tangent ``(v, 0, 1)`` in ``(z, r, t)``
(:func:`total_derivative`). Training
regresses the network ``u_theta`` on ``stop_gradient(v - (t - r) d/dt u_theta)`` with the
per-example conditional velocity ``v = eps - x_0`` in place of ``v(z_t, t)`` (as flow matching
does), and an adaptive weight ``w = stop_gradient(1 / (||Delta||^2 + c)^p)`` on the squared error
(``||Delta||^2``: its mean over an example's elements here, so ``c`` does not scale with the
image size; ``p = 0`` is the plain mean squared error).

Sampling jumps between the levels of a grid: ``z_r = z_t - (t - r) u(z_t, r, t)``; one step
``x_0 = z_1 - u(z_1, 0, 1)`` is one network evaluation.

Times are path times in [0, 1], float32 ``[B]``; the family feeds the network
``t`` and ``t - r`` (times its ``model.flow.time_scale``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxgen.samplers import Grid, SamplerSpec

# u(z, r, t) -> the average velocity, like z; r and t float32 [B].
AverageVelocity = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
ADAPTIVE_C = 1e-3


def _expand(c: jax.Array, x: jax.Array) -> jax.Array:
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


def sample_two_times(
    sample_times: Callable[[jax.Array, tuple[int, ...]], jax.Array],
    rng: jax.Array,
    batch: int,
    fraction: float,
) -> tuple[jax.Array, jax.Array]:
    """``(r, t)``, float32 ``[batch]`` each, ``r <= t``: two draws of ``sample_times(rng,
    shape)`` sorted; in a share ``1 - fraction`` of the examples ``r = t`` (flow matching)."""
    times_rng, keep_rng = jax.random.split(rng)
    pair = sample_times(times_rng, (2, batch))
    r, t = jnp.min(pair, axis=0), jnp.max(pair, axis=0)
    distinct = jax.random.bernoulli(keep_rng, fraction, (batch,))
    return jnp.where(distinct, r, t), t


def total_derivative(f: Callable, primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    """``(f(*primals), J_f(primals) @ tangents)``: what ``jax.jvp`` returns, computed as the
    transpose (``jax.linear_transpose``) of the linear map ``w -> J^T w`` of ``jax.vjp``.

    The transpose of the backward pass is the forward-mode product, at about its cost, and it
    also passes ``jax.custom_vjp`` functions, which ``jax.jvp`` refuses (the CPU convolution
    of :mod:`jaxgen.models.conv` is one).
    """
    out, vjp_fn = jax.vjp(f, *primals)
    (product,) = jax.linear_transpose(vjp_fn, out)(tuple(tangents))
    return out, product


def meanflow_target(
    u_fn: AverageVelocity, z: jax.Array, r: jax.Array, t: jax.Array, v: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(u, u_tgt)``: ``u_fn(z, r, t)`` and the stop-gradient target
    ``v - (t - r) d/dt u_fn(z, r, t)``, the total derivative along ``(v, 0, 1)``
    (:func:`total_derivative`). ``z``, ``v``: ``[B, ...]``; ``r``, ``t``: ``[B]``."""
    u, dudt = total_derivative(u_fn, (z, r, t), (v, jnp.zeros_like(r), jnp.ones_like(t)))
    return u, jax.lax.stop_gradient(v - _expand(t - r, v) * dudt)


def meanflow_loss(
    u: jax.Array, u_tgt: jax.Array, power: float, c: float = ADAPTIVE_C
) -> tuple[jax.Array, jax.Array]:
    """``(loss, mse)``: the adaptively weighted loss (mean over the batch of ``w * ||Delta||^2``)
    and the plain mean squared error, float32 scalars."""
    per_example = jnp.mean(((u - u_tgt) ** 2).reshape(u.shape[0], -1), axis=1)
    weight = jax.lax.stop_gradient(1.0 / (per_example + c) ** power) if power else 1.0
    return jnp.mean(weight * per_example), jnp.mean(per_example)


@functools.partial(jax.jit, static_argnames=("u_fn",))
def sample(u_fn: AverageVelocity, x: jax.Array, grid: Grid, rng: jax.Array) -> jax.Array:
    """From ``x`` at the grid's first level, one jump ``z_r = z_t - (t - r) u(z_t, r, t)`` per
    level down to ``t = 0`` (the path times are ``grid.sigma``); NFE = ``grid.num_levels``."""
    del rng
    times, b = grid.sigma, x.shape[0]

    def step(z, i):
        t, r = times[i], times[i + 1]
        u = u_fn(z, jnp.full((b,), r, jnp.float32), jnp.full((b,), t, jnp.float32))
        return z - (t - r) * u, None

    z, _ = jax.lax.scan(step, x, jnp.arange(grid.num_levels))
    return z


# The ``meanflow`` sampler: driven by an average velocity, not a denoiser, so it is the flow
# family's own and not in jaxgen.samplers.SAMPLERS.
MEANFLOW_SAMPLER = SamplerSpec(sample, "uniform", 1)
