"""The GAN's optimizers: one optax transformation per player, built from the ``optimizer``
config section (the generator at ``optimizer.learning_rate``, the discriminator at
``optimizer.d_learning_rate``), with SN-GAN's linear decay to 0 as the ``linear`` schedule."""

from __future__ import annotations

from typing import NamedTuple

import ml_collections
import optax

from jaxgen.optim import build_optimizer


class TwoPlayerOptimizer(NamedTuple):
    """One optax transformation per player.

    ``init``/``update`` act on ``{"generator", "discriminator"}`` trees, each
    player through its own transformation, so the pair can stand where the
    trainer expects one optimizer (e.g. re-initialising for ``init_from``).
    """

    generator: optax.GradientTransformation
    discriminator: optax.GradientTransformation

    def init(self, params):
        return {name: getattr(self, name).init(params[name]) for name in params}

    def update(self, grads, state, params=None):
        out = {
            name: getattr(self, name).update(
                grads[name], state[name], None if params is None else params[name]
            )
            for name in grads
        }
        return {k: v[0] for k, v in out.items()}, {k: v[1] for k, v in out.items()}


def player_optimizer(
    cfg: ml_collections.ConfigDict, learning_rate: float, num_updates: int
) -> optax.GradientTransformation:
    """``cfg`` (the ``optimizer`` section) at ``learning_rate``; adds the ``linear`` schedule."""
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.learning_rate = float(learning_rate)
    if cfg.schedule != "linear":
        return build_optimizer(cfg, num_updates)
    cfg.schedule = "constant"
    decay = optax.linear_schedule(1.0, 0.0, max(num_updates, 1))
    return optax.chain(build_optimizer(cfg, num_updates), optax.scale_by_schedule(decay))
