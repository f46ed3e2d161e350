"""The two-player update: ``d_steps`` discriminator updates, then one generator update.

Written against two pure functions (:class:`Players`) so the same code trains
the image GANs of :mod:`jaxgen.methods.gan` and the toy MLP GANs of the tests.

Per call, with a real batch of ``B`` rows and ``k = d_steps``:

1. The real batch is split into ``k`` strided micro-batches ``real[i::k]``
   (strided so that each stays sharded over the data axis). Discriminator
   update ``i`` sees micro-batch ``i`` against as many fresh generated images.
   Each discriminator call on real and on generated images does one
   power-iteration step of every spectrally normalised layer (as in
   Miyato et al.'s code), and the resulting vectors are kept.
2. The generator is updated once on ``g_batch_size`` fresh latents against the
   updated discriminator, whose parameters and spectral state are left as they are.

Metrics (scalars; discriminator ones are means over the ``k`` updates):
``d_loss``, ``g_loss``, ``d_acc_real`` / ``d_acc_fake`` (share of real /
generated images the discriminator classifies correctly), ``d_fake_called_real``
(share of generated images it calls real, ``1 - d_acc_fake``), ``d_out_real`` /
``d_out_fake`` (mean outputs), ``d_grad_norm`` / ``g_grad_norm`` (global
norms of the gradients), and ``r1`` / ``gp`` when those penalties are on (the
lazy R1 reads 0 on updates where it is skipped).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxgen.gan.losses import decision_threshold, get_loss
from jaxgen.gan.regularizers import gradient_penalty, r1_penalty

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Players:
    """The networks as pure functions.

    Attributes:
      generate: ``(g_params, z [N, z_dim], labels [N] | None) -> x [N, ...]``.
      discriminate: ``(d_params, d_state, x [N, ...], labels [N] | None, update: bool)
        -> (outputs [N], d_state)``; ``update`` refines the spectral-norm state.
      z_dim: latent size.
      num_classes: > 0 for a class-conditional pair.
    """

    generate: Callable
    discriminate: Callable
    z_dim: int
    num_classes: int = 0


@dataclasses.dataclass(frozen=True)
class Objective:
    """Loss and regularisers (see :mod:`jaxgen.gan.losses`, :mod:`jaxgen.gan.regularizers`).

    ``r1_gamma``: weight ``gamma`` of ``gamma/2 * R1`` (0: off); ``r1_every``: lazy
    R1 applied on every ``r1_every``-th discriminator update, scaled by
    ``r1_every`` (Karras et al., 2020); ``gp_weight``: WGAN-GP ``lambda`` (0: off).
    """

    loss: str = "hinge"
    d_steps: int = 1
    g_batch_size: int = 0  # 0: the discriminator's micro-batch size
    r1_gamma: float = 0.0
    r1_every: int = 1
    gp_weight: float = 0.0


def _latents(players: Players, rng: jax.Array, n: int) -> tuple[jax.Array, jax.Array | None]:
    z_rng, y_rng = jax.random.split(rng)
    z = jax.random.normal(z_rng, (n, players.z_dim))
    labels = None
    if players.num_classes > 0:
        labels = jax.random.randint(y_rng, (n,), 0, players.num_classes, jnp.int32)
    return z, labels


def discriminator_update(
    players: Players,
    objective: Objective,
    tx: optax.GradientTransformation,
    params: PyTree,
    opt_state: PyTree,
    d_state: PyTree,
    real: jax.Array,
    real_labels: jax.Array | None,
    rng: jax.Array,
    index: jax.Array,
) -> tuple[PyTree, PyTree, PyTree, dict[str, jax.Array]]:
    """One discriminator update.

    Args:
      params: ``{"generator", "discriminator"}``; only the discriminator changes.
      opt_state: the discriminator's optimizer state.
      real: float real images ``[N, ...]`` in the generator's output range.
      index: int32 scalar, running count of discriminator updates (for lazy R1).

    Returns:
      ``(discriminator params, opt_state, d_state, metrics)``.
    """
    latent_rng, gp_rng = jax.random.split(rng)
    z, fake_labels = _latents(players, latent_rng, real.shape[0])
    fake = jax.lax.stop_gradient(players.generate(params["generator"], z, fake_labels))
    d_loss_fn, _ = get_loss(objective.loss)

    def loss_fn(d_params):
        out_real, state = players.discriminate(d_params, d_state, real, real_labels, True)
        out_fake, state = players.discriminate(d_params, state, fake, fake_labels, True)
        loss = d_loss_fn(out_real, out_fake)
        extra = {}

        def d_fn(x):
            return players.discriminate(d_params, state, x, real_labels, False)[0]

        if objective.gp_weight > 0:
            extra["gp"] = gradient_penalty(d_fn, real, fake, gp_rng)
            loss = loss + objective.gp_weight * extra["gp"]
        if objective.r1_gamma > 0:
            every = max(int(objective.r1_every), 1)
            extra["r1"] = jax.lax.cond(
                index % every == 0,
                lambda: r1_penalty(d_fn, real),
                lambda: jnp.zeros((), real.dtype),
            )
            loss = loss + 0.5 * objective.r1_gamma * every * extra["r1"]
        return loss, (out_real, out_fake, state, extra)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (out_real, out_fake, d_state, extra)), grads = grad_fn(params["discriminator"])
    updates, opt_state = tx.update(grads, opt_state, params["discriminator"])
    d_params = optax.apply_updates(params["discriminator"], updates)
    threshold = decision_threshold(objective.loss, out_real, out_fake)
    fake_called_real = jnp.mean((out_fake > threshold).astype(jnp.float32))
    metrics = dict(
        extra,
        d_loss=loss,
        d_acc_real=jnp.mean((out_real > threshold).astype(jnp.float32)),
        d_acc_fake=1.0 - fake_called_real,
        d_fake_called_real=fake_called_real,
        d_out_real=jnp.mean(out_real),
        d_out_fake=jnp.mean(out_fake),
        d_grad_norm=optax.tree.norm(grads),
    )
    return d_params, opt_state, d_state, metrics


def generator_update(
    players: Players,
    objective: Objective,
    tx: optax.GradientTransformation,
    params: PyTree,
    opt_state: PyTree,
    d_state: PyTree,
    batch_size: int,
    rng: jax.Array,
) -> tuple[PyTree, PyTree, dict[str, jax.Array]]:
    """One generator update against the current discriminator (left unchanged).

    Returns ``(generator params, opt_state, metrics)``.
    """
    z, labels = _latents(players, rng, batch_size)
    _, g_loss_fn = get_loss(objective.loss)

    def loss_fn(g_params):
        fake = players.generate(g_params, z, labels)
        out, _ = players.discriminate(params["discriminator"], d_state, fake, labels, False)
        return g_loss_fn(out)

    loss, grads = jax.value_and_grad(loss_fn)(params["generator"])
    updates, opt_state = tx.update(grads, opt_state, params["generator"])
    g_params = optax.apply_updates(params["generator"], updates)
    return g_params, opt_state, {"g_loss": loss, "g_grad_norm": optax.tree.norm(grads)}


def _micro_batch(x: jax.Array | None, i: jax.Array, k: int) -> jax.Array | None:
    """Rows ``i, i + k, i + 2k, ...`` of ``x`` ``[B, ...]`` -> ``[B / k, ...]``."""
    if x is None:
        return None
    x = x.reshape(x.shape[0] // k, k, *x.shape[1:])
    return jax.lax.dynamic_index_in_dim(x, i, axis=1, keepdims=False)


def two_player_step(
    players: Players,
    objective: Objective,
    tx_g: optax.GradientTransformation,
    tx_d: optax.GradientTransformation,
    params: PyTree,
    opt_state: PyTree,
    d_state: PyTree,
    real: jax.Array,
    real_labels: jax.Array | None,
    rng: jax.Array,
    step: jax.Array,
) -> tuple[PyTree, PyTree, PyTree, dict[str, jax.Array]]:
    """``objective.d_steps`` discriminator updates, then one generator update.

    Args:
      params / opt_state: dicts with ``"generator"`` and ``"discriminator"``.
      d_state: the discriminator's spectral-norm collections (may be ``{}``).
      real: ``[B, ...]`` with ``B`` divisible by ``d_steps``.
      step: int32 scalar, number of generator updates so far.

    Returns:
      ``(params, opt_state, d_state, metrics)``.
    """
    k = int(objective.d_steps)
    if real.shape[0] % k:
        raise ValueError(f"batch of {real.shape[0]} rows does not split into {k} D steps")
    d_rng, g_rng = jax.random.split(rng)

    def d_body(carry, i):
        d_params, d_opt, state = carry
        d_params, d_opt, state, metrics = discriminator_update(
            players,
            objective,
            tx_d,
            {"generator": params["generator"], "discriminator": d_params},
            d_opt,
            state,
            _micro_batch(real, i, k),
            _micro_batch(real_labels, i, k),
            jax.random.fold_in(d_rng, i),
            step * k + i,
        )
        return (d_params, d_opt, state), metrics

    (d_params, d_opt, d_state), d_metrics = jax.lax.scan(
        d_body, (params["discriminator"], opt_state["discriminator"], d_state), jnp.arange(k)
    )
    params = {"generator": params["generator"], "discriminator": d_params}
    g_batch = objective.g_batch_size or real.shape[0] // k
    g_params, g_opt, g_metrics = generator_update(
        players, objective, tx_g, params, opt_state["generator"], d_state, g_batch, g_rng
    )
    metrics = {name: jnp.mean(v) for name, v in d_metrics.items()}
    metrics.update(g_metrics)
    return (
        {"generator": g_params, "discriminator": d_params},
        {"generator": g_opt, "discriminator": d_opt},
        d_state,
        metrics,
    )
