"""Evaluator registry: ``config.evals.<name> = dict(type=..., ...)``.

Each evaluator is ``fn(ctx: EvalContext, cfg: ConfigDict) -> dict[str, float]``
and is looked up by ``type`` in :data:`EVALUATORS` (``"module:function"``,
imported lazily). ``jaxgen.train`` runs them every ``cfg.every`` steps (0: only
at the end and in ``--mode=eval``) and writes ``eval/step_<N>.json``.
"""

from __future__ import annotations

import importlib

from jaxgen.errors import UserError
from jaxgen.evaluate.context import EvalContext

EVALUATORS = {
    "likelihood": "jaxgen.evaluate.likelihood:evaluate",
    "params": "jaxgen.evaluate.likelihood:count_params",
    "quality": "jaxgen.evaluate.sample_evals:quality",
    "classifier": "jaxgen.evaluate.sample_evals:classifier",
    "diversity": "jaxgen.evaluate.sample_evals:diversity",
    "c2st": "jaxgen.evaluate.sample_evals:c2st",
    "prompts": "jaxgen.evaluate.prompts:evaluate",
}


def register(type_name: str, target: str) -> None:
    EVALUATORS[type_name] = target


def get_evaluator(type_name: str):
    if type_name not in EVALUATORS:
        raise UserError(f"evaluator type {type_name!r}: expected one of {sorted(EVALUATORS)}")
    module, fn = EVALUATORS[type_name].split(":")
    return getattr(importlib.import_module(module), fn)


def check_evaluators(evals, method) -> None:
    """Fails early (before training starts) on an evaluator ``method`` cannot serve.

    Catches unknown types and ``likelihood`` for a model without one (e.g. EDM or
    latent diffusion), which would otherwise fail only after the run's final step.
    """
    for name, cfg in evals.items():
        if "type" not in cfg:
            raise UserError(
                f"config key evals.{name} has no 'type'; expected one of {sorted(EVALUATORS)}"
            )
        get_evaluator(cfg.type)
        if cfg.type == "likelihood" and not method.has_likelihood:
            raise UserError(
                f"config key evals.{name}: this {method.config.family} model has no likelihood "
                f"to evaluate; remove the evaluator"
            )


def run_evaluators(ctx: EvalContext, evals, step: int, final: bool) -> dict[str, float]:
    """Runs every evaluator due at ``step`` (all of them when ``final``)."""
    results: dict[str, float] = {}
    for cfg in evals.values():
        every = int(cfg.get("every", 0))
        if not final and (every <= 0 or step % every):
            continue
        results.update(get_evaluator(cfg.type)(ctx, cfg))
    return results


__all__ = ["EvalContext", "EVALUATORS", "get_evaluator", "register", "run_evaluators"]
