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

Conditions: class-conditional pairs draw the labels of generated images
uniformly; other conditions (e.g. text fields, any pytree of ``[B, ...]``
arrays) are drawn, with replacement, from the rows of the real batch (the
micro-batch for a discriminator update, the whole batch for the generator).

The ``k`` discriminator updates run in a ``lax.scan``: compile time flat in ``k``,
and on a CPU as fast per update as unrolled code, since the networks' convolutions
keep canonical gradients inside loops (:mod:`jaxgen.models.conv`).

Metrics (scalars; discriminator ones are means over the ``k`` updates):
``d_loss``, ``g_loss``, ``d_acc_real`` / ``d_acc_fake`` (share of real /
generated images the discriminator classifies correctly), ``d_fake_called_real``
(share of generated images it calls real, ``1 - d_acc_fake``), ``d_out_real`` /
``d_out_fake`` (mean outputs), ``d_grad_norm`` / ``g_grad_norm`` (global
norms of the gradients), and ``r1`` / ``gp`` when those penalties are on (the
lazy R1 reads 0 on updates where it is skipped), ``cr_real`` / ``cr_fake`` when
consistency regularisation is on, ``mode_seeking`` (the ratio of
:func:`mode_seeking_ratio`) when that term is on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxgen.errors import UserError
from jaxgen.gan.augment import augment
from jaxgen.gan.losses import decision_threshold, get_loss
from jaxgen.gan.regularizers import gradient_penalty, r1_penalty

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Players:
    """The networks as pure functions.

    Attributes:
      generate: ``(g_params, z [N, z_dim], cond | None) -> x [N, ...]``.
      discriminate: ``(d_params, d_state, x [N, ...], cond | None, update: bool)
        -> (outputs, d_state)``; ``update`` refines the spectral-norm state. ``outputs`` is
        ``[N]``, or with ``info_codes = K > 0`` ``[N, 1 + K]``: the critic's output, then
        the logits of the code that made each image (see :func:`critic`, :func:`code_loss`).
      z_dim: size of the continuous latent.
      num_classes: > 0 for a class-conditional pair (``cond``: int32 labels ``[N]``);
        otherwise ``cond`` is None or a pytree of ``[N, ...]`` arrays (e.g. text fields).
      info_codes: ``K > 0``: InfoGAN's categorical code (Chen et al., 2016): the generator's
        latent ``[N, z_dim + K]`` is ``N(0, I)`` followed by the one-hot of a uniform code,
        which the discriminator's second head learns to recover (0: off).
    """

    generate: Callable
    discriminate: Callable
    z_dim: int
    num_classes: int = 0
    info_codes: int = 0


@dataclasses.dataclass(frozen=True)
class Objective:
    """Loss and regularisers (see :mod:`jaxgen.gan.losses`, :mod:`jaxgen.gan.regularizers`).

    ``r1_gamma``: weight ``gamma`` of ``gamma/2 * R1`` (0: off); ``r1_every``: lazy
    R1 applied on every ``r1_every``-th discriminator update, scaled by
    ``r1_every`` (Karras et al., 2020); ``gp_weight``: WGAN-GP ``lambda`` (0: off);
    ``mode_seeking``: weight of Mao et al.'s (2019) mode-seeking term in the generator's
    loss (0: off), against conditional generators that ignore ``z`` (see
    :func:`mode_seeking_ratio`; pairs of rows share their conditions).
    ``top_k``: top-k generator updates (Sinha et al., 2020; 0: off): the generator's loss
    takes only the share of its images the discriminator rates most real, a share that
    starts at 1 and shrinks by ``top_k_gamma`` every ``top_k_every`` generator updates
    down to ``top_k`` (see :func:`top_k_share`).
    ``augment``: the DiffAugment policy (Zhao et al., 2020; ``()``: off), applied to every
    image the discriminator sees, in both players' updates; penalties (R1, GP) then see the
    augmented images too. ``cr_real`` / ``cr_fake``: weights of balanced consistency
    regularisation (Zhao et al., 2021; 0: off), the mean squared difference between the
    discriminator's outputs on the real / generated images and on ``cr_augment`` copies of
    them (:mod:`jaxgen.gan.augment`). ``info_weight``: weight of InfoGAN's code loss (the
    cross-entropy of the discriminator's code logits on generated images) in both players'
    losses, for pairs with ``Players.info_codes`` (``lambda``; Chen et al. used 1).
    """

    loss: str = "hinge"
    d_steps: int = 1
    g_batch_size: int = 0  # 0: the discriminator's micro-batch size
    r1_gamma: float = 0.0
    r1_every: int = 1
    gp_weight: float = 0.0
    mode_seeking: float = 0.0  # weight of the mode-seeking term (0: off)
    top_k: float = 0.0  # the smallest share of generated images the generator learns from
    top_k_gamma: float = 0.99
    top_k_every: int = 1000
    augment: tuple[str, ...] = ()
    cr_real: float = 0.0
    cr_fake: float = 0.0
    cr_augment: tuple[str, ...] = ("translation",)
    info_weight: float = 1.0

    def __post_init__(self):
        for key in ("cr_real", "cr_fake", "info_weight"):
            if not getattr(self, key) >= 0:
                raise UserError(f"config key gan.{key}={getattr(self, key)}: expected >= 0")
        if (self.cr_real or self.cr_fake) and not self.cr_augment:
            raise UserError("config key gan.cr_augment is empty: consistency needs a transform")
        if not 0.0 <= self.top_k <= 1.0:
            raise UserError(f"config key gan.top_k={self.top_k}: expected in [0, 1] (0: off)")
        if not 0.0 < self.top_k_gamma <= 1.0:
            raise UserError(f"config key gan.top_k_gamma={self.top_k_gamma}: expected in (0, 1]")
        if self.top_k_every < 1:
            raise UserError(f"config key gan.top_k_every={self.top_k_every}: expected >= 1")


def _rows(tree: PyTree, index: jax.Array) -> PyTree:
    return jax.tree.map(lambda x: jnp.take(x, index, axis=0), tree)


def _latents(
    players: Players, rng: jax.Array, n: int, pool: PyTree | None = None
) -> tuple[jax.Array, PyTree | None]:
    """``n`` latents ``[n, z_dim (+ info_codes)]`` (:func:`latents`) and their conditions.

    Conditions: uniform labels for a class-conditional pair; else ``n`` rows of ``pool``
    (real conditions ``[M, ...]``) drawn uniformly with replacement; else None.
    """
    z_rng, y_rng = jax.random.split(rng)
    z = latents(z_rng, n, players.z_dim, players.info_codes)
    cond = None
    if players.num_classes > 0:
        cond = jax.random.randint(y_rng, (n,), 0, players.num_classes, jnp.int32)
    elif pool is not None:
        m = jax.tree.leaves(pool)[0].shape[0]
        cond = _rows(pool, jax.random.randint(y_rng, (n,), 0, m))
    return z, cond


def latents(rng: jax.Array, n: int, z_dim: int, info_codes: int = 0) -> jax.Array:
    """``n`` generator inputs: ``N(0, I)`` ``[n, z_dim]``, followed with ``info_codes = K
    > 0`` by the one-hot ``[n, K]`` of uniform codes."""
    if not info_codes:
        return jax.random.normal(rng, (n, z_dim))
    z_rng, code_rng = jax.random.split(rng)
    z = jax.random.normal(z_rng, (n, z_dim))
    codes = jax.random.randint(code_rng, (n,), 0, info_codes)
    return jnp.concatenate([z, jax.nn.one_hot(codes, info_codes, dtype=z.dtype)], axis=-1)


def critic(outputs: jax.Array) -> jax.Array:
    """The critic's outputs ``[N]`` of the discriminator's ``[N]`` or ``[N, 1 + K]``."""
    return outputs[:, 0] if outputs.ndim == 2 else outputs


def code_loss(players: Players, outputs: jax.Array, z: jax.Array) -> jax.Array:
    """InfoGAN's code loss: the mean cross-entropy (nats) of the code logits
    ``outputs[:, 1:]`` ``[N, K]`` against the codes in the latents ``z[:, z_dim:]``."""
    labels = jnp.argmax(z[:, players.z_dim :], axis=-1)
    logits = outputs[:, 1:].astype(jnp.float32)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def discriminator_update(
    players: Players,
    objective: Objective,
    tx: optax.GradientTransformation,
    params: PyTree,
    opt_state: PyTree,
    d_state: PyTree,
    real: jax.Array,
    real_labels: PyTree | None,
    rng: jax.Array,
    index: jax.Array,
) -> tuple[PyTree, PyTree, PyTree, dict[str, jax.Array]]:
    """One discriminator update.

    Args:
      params: ``{"generator", "discriminator"}``; only the discriminator changes.
      opt_state: the discriminator's optimizer state.
      real: float real images ``[N, ...]`` in the generator's output range.
      real_labels: the real images' conditions (labels ``[N]``, a pytree of ``[N, ...]``
        arrays, or None).
      index: int32 scalar, running count of discriminator updates (for lazy R1).

    Returns:
      ``(discriminator params, opt_state, d_state, metrics)``.
    """
    latent_rng, gp_rng = jax.random.split(rng)
    aug_rng, cr_rng = jax.random.fold_in(rng, 2), jax.random.fold_in(rng, 3)  # split's unchanged
    z, fake_labels = _latents(players, latent_rng, real.shape[0], real_labels)
    fake = jax.lax.stop_gradient(players.generate(params["generator"], z, fake_labels))
    if objective.augment:
        real = augment(real, jax.random.fold_in(aug_rng, 0), objective.augment)
        fake = augment(fake, jax.random.fold_in(aug_rng, 1), objective.augment)
    d_loss_fn, _ = get_loss(objective.loss)

    def loss_fn(d_params):
        out_real, state = players.discriminate(d_params, d_state, real, real_labels, True)
        out_fake, state = players.discriminate(d_params, state, fake, fake_labels, True)
        extra = {}
        if players.info_codes:
            extra["d_info_loss"] = code_loss(players, out_fake, z)
        out_real, out_fake = critic(out_real), critic(out_fake)
        loss = d_loss_fn(out_real, out_fake)
        if players.info_codes:
            loss = loss + objective.info_weight * extra["d_info_loss"]
        pairs = (("cr_real", real, out_real, real_labels), ("cr_fake", fake, out_fake, fake_labels))
        for i, (key, x, out, labels) in enumerate(pairs):
            weight = getattr(objective, key)
            if weight > 0:
                copies = augment(x, jax.random.fold_in(cr_rng, i), objective.cr_augment)
                out_copies = critic(players.discriminate(d_params, state, copies, labels, False)[0])
                extra[key] = jnp.mean(jnp.square(out - out_copies))
                loss = loss + weight * extra[key]

        def d_fn(x):
            return critic(players.discriminate(d_params, state, x, real_labels, False)[0])

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
    cond_pool: PyTree | None = None,
    step: jax.Array | int = 0,
) -> tuple[PyTree, PyTree, dict[str, jax.Array]]:
    """One generator update against the current discriminator (left unchanged).

    ``cond_pool``: real conditions ``[M, ...]`` to draw the generated images' from (see
    :func:`_latents`); ``step``: generator updates so far (for ``objective.top_k``).
    Returns ``(generator params, opt_state, metrics)``.
    """
    z, labels = _latents(players, rng, batch_size, cond_pool)
    aug_rng = jax.random.fold_in(rng, 2)
    half = batch_size // 2
    seek = objective.mode_seeking > 0 and half > 0
    if seek and labels is not None:  # rows half..2*half share the conditions of rows 0..half
        labels = jax.tree.map(lambda y: y.at[half : 2 * half].set(y[:half]), labels)
    _, g_loss_fn = get_loss(objective.loss)

    def loss_fn(g_params):
        fake = players.generate(g_params, z, labels)
        seen = augment(fake, aug_rng, objective.augment) if objective.augment else fake
        out, _ = players.discriminate(params["discriminator"], d_state, seen, labels, False)
        extra = {}
        if players.info_codes:
            extra["g_info_loss"] = code_loss(players, out, z)
        out = critic(out)
        if objective.top_k > 0:
            share = top_k_share(objective, step)
            out = top_k_gradients(out, share)
            extra["top_k_share"] = share
        loss = g_loss_fn(out)
        if seek:
            extra["mode_seeking"] = mode_seeking_ratio(fake[:half], fake[half : 2 * half],
                                                       z[:half], z[half : 2 * half])  # fmt: skip
            loss = loss + objective.mode_seeking / (extra["mode_seeking"] + 1e-5)
        if players.info_codes:
            loss = loss + objective.info_weight * extra["g_info_loss"]
        return loss, extra

    (loss, extra), grads = jax.value_and_grad(loss_fn, has_aux=True)(params["generator"])
    updates, opt_state = tx.update(grads, opt_state, params["generator"])
    g_params = optax.apply_updates(params["generator"], updates)
    metrics = dict(extra, g_loss=loss, g_grad_norm=optax.tree.norm(grads))
    return g_params, opt_state, metrics


def top_k_share(objective: Objective, step: jax.Array | int) -> jax.Array:
    """``max(top_k, top_k_gamma ** (step // top_k_every))``: float32 scalar in ``(0, 1]``."""
    decays = jnp.asarray(step, jnp.float32) // objective.top_k_every
    return jnp.maximum(jnp.float32(objective.top_k), jnp.float32(objective.top_k_gamma) ** decays)


def top_k_gradients(out: jax.Array, share: jax.Array) -> jax.Array:
    """``out`` ``[B]`` with gradients only through its ``ceil(share * B)`` largest entries.

    The values are unchanged; the kept rows' gradients are scaled by ``B / k``, so that a
    batch-mean loss of the result has the gradient of the mean over the kept rows alone.
    """
    n = out.shape[0]
    k = jnp.clip(jnp.ceil(share * n), 1, n)
    rank = jnp.argsort(jnp.argsort(-jax.lax.stop_gradient(out)))
    weight = jnp.where(rank < k, n / k, 0.0).astype(out.dtype)
    frozen = jax.lax.stop_gradient(out)
    return frozen + (out - frozen) * weight


def mode_seeking_ratio(x1: jax.Array, x2: jax.Array, z1: jax.Array, z2: jax.Array) -> jax.Array:
    """``mean|x1 - x2| / mean|z1 - z2|`` (Mao et al., 2019): images per unit of latent change
    under the same conditions; the generator's loss adds ``weight / (ratio + 1e-5)``."""
    return jnp.mean(jnp.abs(x1 - x2)) / jnp.mean(jnp.abs(z1 - z2))


def _micro_batch(tree: PyTree | None, i: jax.Array, k: int) -> PyTree | None:
    """Rows ``i, i + k, i + 2k, ...`` of every ``[B, ...]`` leaf -> ``[B / k, ...]``."""

    def pick(x):
        x = x.reshape(x.shape[0] // k, k, *x.shape[1:])
        return jax.lax.dynamic_index_in_dim(x, i, axis=1, keepdims=False)

    return None if tree is None else jax.tree.map(pick, tree)


def two_player_step(
    players: Players,
    objective: Objective,
    tx_g: optax.GradientTransformation,
    tx_d: optax.GradientTransformation,
    params: PyTree,
    opt_state: PyTree,
    d_state: PyTree,
    real: jax.Array,
    real_labels: PyTree | None,
    rng: jax.Array,
    step: jax.Array,
) -> tuple[PyTree, PyTree, PyTree, dict[str, jax.Array]]:
    """``objective.d_steps`` discriminator updates, then one generator update.

    Args:
      params / opt_state: dicts with ``"generator"`` and ``"discriminator"``.
      d_state: the discriminator's spectral-norm collections (may be ``{}``).
      real: ``[B, ...]`` with ``B`` divisible by ``d_steps``.
      real_labels: conditions of ``real`` (labels ``[B]``, a pytree of ``[B, ...]``, None).
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

    carry = (params["discriminator"], opt_state["discriminator"], d_state)
    carry, d_metrics = jax.lax.scan(d_body, carry, jnp.arange(k))
    d_params, d_opt, d_state = carry
    params = {"generator": params["generator"], "discriminator": d_params}
    g_batch = objective.g_batch_size or real.shape[0] // k
    g_params, g_opt, g_metrics = generator_update(
        players,
        objective,
        tx_g,
        params,
        opt_state["generator"],
        d_state,
        g_batch,
        g_rng,
        None if players.num_classes else real_labels,
        step,
    )
    metrics = {name: jnp.mean(v) for name, v in d_metrics.items()}
    metrics.update(g_metrics)
    return (
        {"generator": g_params, "discriminator": d_params},
        {"generator": g_opt, "discriminator": d_opt},
        d_state,
        metrics,
    )
