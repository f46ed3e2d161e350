"""Gradient regularisers of the discriminator.

Both take ``d_fn(x) -> outputs [B]`` that treats rows independently (no batch
normalisation in the discriminator), so the gradient of ``sum(d_fn(x))`` with
respect to ``x`` holds every example's own input gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _per_example_sq_norm(grads: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(grads).reshape(grads.shape[0], -1), axis=1)


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
    """R1 (Mescheder et al., 2018): ``E_x ||grad_x D(x)||^2`` on real data ``[B, ...]``.

    Returns the unscaled mean; the loss adds ``gamma / 2`` times it.
    """
    grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(real)
    return jnp.mean(_per_example_sq_norm(grads))


def gradient_penalty(
    d_fn: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array, rng: jax.Array
) -> jax.Array:
    """WGAN-GP (Gulrajani et al., 2017): ``E (||grad D(x_hat)||_2 - 1)^2``.

    ``x_hat = eps * real + (1 - eps) * fake`` with ``eps ~ U[0, 1]`` per example.
    Returns the unscaled mean; the loss adds ``lambda`` times it.
    """
    eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    x_hat = eps * real + (1.0 - eps) * jax.lax.stop_gradient(fake)
    grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(x_hat)
    norms = jnp.sqrt(_per_example_sq_norm(grads) + 1e-12)
    return jnp.mean(jnp.square(norms - 1.0))
