"""Adversarial losses on discriminator outputs (logits / critic values), shape ``[B]``.

Each loss gives the discriminator's loss from outputs on real and generated
images and the generator's loss from outputs on generated images; both are
batch means (scalars). Names (``config.gan.loss``):

* ``nonsaturating``: Goodfellow et al. (2014), with the generator maximising
  ``log D(G(z))``: ``L_D = softplus(-r) + softplus(f)``, ``L_G = softplus(-f)``.
* ``hinge``: Lim & Ye (2017), Miyato et al. (2018):
  ``L_D = relu(1 - r) + relu(1 + f)``, ``L_G = -f``.
* ``wasserstein``: Arjovsky et al. (2017), used with the gradient penalty of
  Gulrajani et al. (2017): ``L_D = f - r``, ``L_G = -f``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxgen.errors import UserError


def nonsaturating_d(real: jax.Array, fake: jax.Array) -> jax.Array:
    return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


def nonsaturating_g(fake: jax.Array) -> jax.Array:
    return jnp.mean(jax.nn.softplus(-fake))


def hinge_d(real: jax.Array, fake: jax.Array) -> jax.Array:
    return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))


def hinge_g(fake: jax.Array) -> jax.Array:
    return -jnp.mean(fake)


def wasserstein_d(real: jax.Array, fake: jax.Array) -> jax.Array:
    return jnp.mean(fake) - jnp.mean(real)


def wasserstein_g(fake: jax.Array) -> jax.Array:
    return -jnp.mean(fake)


LOSSES: dict[str, tuple[Callable, Callable]] = {
    "nonsaturating": (nonsaturating_d, nonsaturating_g),
    "hinge": (hinge_d, hinge_g),
    "wasserstein": (wasserstein_d, wasserstein_g),
}


def get_loss(name: str) -> tuple[Callable, Callable]:
    """``(d_loss(real, fake), g_loss(fake))`` for ``name``."""
    if name not in LOSSES:
        raise UserError(f"config key gan.loss={name!r}: expected one of {sorted(LOSSES)}")
    return LOSSES[name]


def decision_threshold(name: str, real: jax.Array, fake: jax.Array) -> jax.Array:
    """The output above which the discriminator calls an image real.

    0 for the classifier-like losses. A Wasserstein critic's outputs have no
    fixed origin, so its threshold is the midpoint of the mean outputs.
    """
    if name == "wasserstein":
        return jax.lax.stop_gradient(0.5 * (jnp.mean(real) + jnp.mean(fake)))
    return jnp.zeros((), real.dtype)
