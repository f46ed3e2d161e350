"""What every sampler shares: the noise-level grid and the denoiser signature.

A sampler integrates from pure noise to data along a decreasing grid of noise levels.
At a level, ``x = alpha * x_0 + sigma * eps``. The grid has ``N`` noisy levels, at which the
denoiser is evaluated, followed by the clean level ``alpha = 1, sigma = 0``.

The denoiser is ``denoise(x, t, alpha, sigma) -> x0_hat`` where ``x`` is ``[B, ...]``, ``t`` is
the (float32 scalar) time fed to the network and ``alpha``, ``sigma`` are float32 scalars; it
returns the estimate of ``E[x_0 | x]`` with the shape of ``x``. Tests pass the closed-form
denoiser of Gaussian data; the diffusion method passes its network (with guidance).

The samplers' state ``x`` is float32 from :func:`initial_noise` on; a denoiser whose network
computes in bfloat16 (mixed precision) casts its input itself and returns float32, so the
updates and the noise of every step stay float32.
"""

from __future__ import annotations

from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp

Denoiser = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class Grid:
    """Noise levels from the noisiest to clean.

    Attributes:
      t: float32 ``[N]``, the network's time input at each noisy level.
      alpha: float32 ``[N + 1]``, the data scale at each level; ``alpha[N] = 1``.
      sigma: float32 ``[N + 1]``, the noise scale at each level; ``sigma[N] = 0``.
    """

    t: jax.Array
    alpha: jax.Array
    sigma: jax.Array

    @property
    def num_levels(self) -> int:
        return self.t.shape[0]


def make_grid(t, alpha, sigma) -> Grid:
    """A :class:`Grid` from the ``N`` noisy levels; appends the clean level."""
    t = jnp.asarray(t, jnp.float32)
    alpha = jnp.append(jnp.asarray(alpha, jnp.float32), 1.0)
    sigma = jnp.append(jnp.asarray(sigma, jnp.float32), 0.0)
    return Grid(t=t, alpha=alpha, sigma=sigma)


def initial_noise(rng: jax.Array, shape: tuple[int, ...], grid: Grid) -> jax.Array:
    """The sampler's starting point ``x ~ N(0, sigma_0^2 I)``, float32 ``shape``.

    For the variance-preserving process ``sigma_0`` is 1 to within ``1e-4``; the signal
    ``alpha_0 x_0`` left at the noisiest level is neglected as usual.
    """
    return grid.sigma[0] * jax.random.normal(rng, shape, jnp.float32)
