"""Optimizers from ``config.optimizer``: adam/adamw, warmup, cosine or constant, clipping."""

from __future__ import annotations

import ml_collections
import optax

from jaxgen.errors import UserError

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup over ``cfg.warmup_steps``, then constant or cosine decay to 0."""
    if cfg.schedule not in SCHEDULES:
        raise UserError(
            f"config key optimizer.schedule={cfg.schedule!r}: expected one of {SCHEDULES}"
        )
    warmup = max(int(cfg.warmup_steps), 0)
    if cfg.schedule == "constant":
        if warmup == 0:
            return optax.constant_schedule(cfg.learning_rate)
        return optax.linear_schedule(0.0, cfg.learning_rate, warmup)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else cfg.learning_rate,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(num_steps, warmup + 1),
    )


def build_optimizer(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """The optax transformation described by ``cfg`` (the ``optimizer`` section)."""
    if cfg.name not in OPTIMIZERS:
        raise UserError(f"config key optimizer.name={cfg.name!r}: expected one of {OPTIMIZERS}")
    lr = learning_rate_schedule(cfg, num_steps)
    if cfg.name == "adam":
        opt = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    else:
        opt = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), opt)
    return opt
