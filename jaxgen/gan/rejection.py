"""Discriminator rejection sampling (DRS; Azadi et al., 2019): keep a generated image with a
probability that grows with the discriminator's belief that it is real.

For a discriminator trained to optimality with the logistic loss, its logit ``D(x)`` is
``log p_data(x) / p_g(x)``, so accepting a draw of the generator with probability
``exp(D(x) - D_max)`` would sample ``p_data`` exactly. A trained discriminator is not optimal
and ``D_max`` is estimated from a burn-in set, so the paper accepts with probability
``sigmoid(F(x) - gamma)``, where

    F(x) = D(x) - D_max - log(1 - exp(D(x) - D_max - eps))

is the logit of the acceptance ratio ``exp(D(x) - D_max)``: with ``gamma = 0`` the rule is
exact rejection sampling. The shift ``gamma`` sets how many draws survive; here it is a
percentile of ``F`` over the burn-in draws (95 by default). Logits are in nats (natural-log
odds); every function here is pure and jit-compatible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPSILON = 1e-6  # keeps log(1 - exp(.)) finite at D(x) = D_max
DEFAULT_PERCENTILE = 95.0


def acceptance_scores(logits: jax.Array, max_logit: jax.Array) -> jax.Array:
    """``F(x)`` float32 ``[...]`` of discriminator logits ``[...]`` (nats) given ``D_max``.

    A logit above ``D_max`` (a draw more real-looking than every burn-in draw) scores as one
    at ``D_max``: about ``-log(EPSILON)``, the highest score.
    """
    gap = jnp.minimum(logits.astype(jnp.float32) - max_logit, 0.0)
    return gap - jnp.log1p(-jnp.exp(gap - EPSILON))


def calibrate(logits: jax.Array, percentile: float) -> dict[str, jax.Array]:
    """``{"max_logit", "gamma"}`` (float32 scalars) from the burn-in draws' logits ``[N]``:
    ``D_max`` is their largest logit and ``gamma`` the ``percentile``-th percentile (in
    [0, 100)) of their scores ``F``."""
    max_logit = jnp.max(logits).astype(jnp.float32)
    gamma = jnp.percentile(acceptance_scores(logits, max_logit), percentile)
    return {"max_logit": max_logit, "gamma": gamma.astype(jnp.float32)}


def acceptance_probability(logits: jax.Array, calibration: dict[str, jax.Array]) -> jax.Array:
    """``sigmoid(F(x) - gamma)`` float32 ``[...]`` of logits ``[...]``."""
    scores = acceptance_scores(logits, calibration["max_logit"])
    return jax.nn.sigmoid(scores - calibration["gamma"])


def choose(probability: jax.Array, uniform: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row, the candidate kept: ``(index int32 [B], accepted bool [B])``.

    Args:
      probability: acceptance probabilities ``[B, K]``, ``K`` candidates per requested image.
      uniform: uniform draws in [0, 1) ``[B, K]``; candidate ``k`` is accepted when
        ``uniform < probability``.

    Returns the first accepted candidate of each row, or, in a row where none was accepted
    (``accepted`` False), the candidate most likely to have been.
    """
    hits = uniform < probability
    any_hit = jnp.any(hits, axis=1)
    first_hit = jnp.argmax(hits, axis=1)
    best = jnp.argmax(probability, axis=1)
    return jnp.where(any_hit, first_hit, best).astype(jnp.int32), any_hit
