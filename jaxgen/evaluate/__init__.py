"""Evaluator registry: ``config.evals.<name> = dict(type=..., ...)``.

Each evaluator is ``fn(ctx: EvalContext, cfg: ConfigDict) -> dict[str, float]``
and is looked up by ``type`` in :data:`EVALUATORS` (``"module:function"``,
imported lazily). ``jaxgen.trainer`` runs them every ``cfg.every`` steps (0: only
at the end and in ``--mode=eval``) and writes ``eval/step_<N>.json``.
"""

from __future__ import annotations

import importlib

from jaxgen.errors import UserError
from jaxgen.evaluate.context import EvalContext
from jaxgen.evaluate.feature_cache import check_split_option
from jaxgen.evaluate.features import check_weights, feature_dim
from jaxgen.evaluate.fid_stats import STATS_OPTIONS
from jaxgen.evaluate.fid_stats import check_options as check_stats_options
from jaxgen.preemption import check_active

EVALUATORS = {
    "likelihood": "jaxgen.evaluate.likelihood:evaluate",
    "params": "jaxgen.evaluate.likelihood:count_params",
    "quality": "jaxgen.evaluate.sample_evals:quality",
    "classifier": "jaxgen.evaluate.sample_evals:classifier",
    "diversity": "jaxgen.evaluate.sample_evals:diversity",
    "c2st": "jaxgen.evaluate.sample_evals:c2st",
    "prompts": "jaxgen.evaluate.prompts:evaluate",
    "clip_zero_shot": "jaxgen.evaluate.zero_shot:evaluate",
}


def register(type_name: str, target: str) -> None:
    EVALUATORS[type_name] = target


def get_evaluator(type_name: str):
    if type_name not in EVALUATORS:
        raise UserError(f"evaluator type {type_name!r}: expected one of {sorted(EVALUATORS)}")
    module, fn = EVALUATORS[type_name].split(":")
    return getattr(importlib.import_module(module), fn)


# Evaluator types that compute features of images (``evals.<name>.features``, default
# ``domain``; see :func:`jaxgen.evaluate.features.get_extractor`).
FEATURE_EVALUATORS = ("quality", "classifier", "diversity", "c2st", "prompts")


def check_evaluators(
    evals,
    *,
    family: str,
    data_name: str,
    has_likelihood: bool,
    cond: str = "none",
    image_shape: tuple[int, int, int] | None = None,
) -> None:
    """Fails early (before training starts) on an evaluator the model cannot serve.

    Args:
      evals: ``config.evals``.
      family: ``config.family``, named in errors.
      data_name: ``config.data.name``: whose domain classifier the feature evaluators use.
      has_likelihood: whether the model gives likelihoods (``likelihood`` evaluator).
      cond: the model's conditioning, ``none | class | text`` (``prompts`` needs ``text``).
      image_shape: ``(H, W, C)`` of the model's images (the width of ``reference_stats``
        features of some extractors depends on it); None: not checked before sampling.

    Catches unknown types, a ``split`` option other than ``eval`` or ``train``,
    ``likelihood`` for a model without one (e.g. EDM or latent diffusion), and, for every
    evaluator that computes features, an unknown extractor or a weight file (Inception's, the
    domain classifier's of ``data_name``) that is missing, unreadable or of the wrong names
    or shapes, and the ``quality`` evaluator's
    ``reference_stats`` file (missing, without ``mu``/``sigma``, or of another width than the
    extractor's features) and ``save_reference_stats`` name. Each would otherwise fail only
    after the run's final step.
    """
    checked = set()  # (extractor, weight options): each file is read once
    for name, cfg in evals.items():
        if "type" not in cfg:
            raise UserError(
                f"config key evals.{name} has no 'type'; expected one of {sorted(EVALUATORS)}"
            )
        get_evaluator(cfg.type)
        if cfg.type == "likelihood" and not has_likelihood:
            raise UserError(
                f"config key evals.{name}: this {family} model has no likelihood "
                f"to evaluate; remove the evaluator"
            )
        if "split" in cfg:
            try:
                check_split_option(cfg.split)
            except UserError as e:
                raise UserError(f"config key evals.{name}: {e}") from None
        if cfg.type == "prompts" and cond != "text":
            raise UserError(
                f"config key evals.{name}: the prompts evaluator needs a model trained with "
                f"cond=text; this one has cond={cond}"
            )
        options = tuple(
            str(cfg.get(k, ""))
            for k in ("features", "classifier_weights", "inception_weights", "features2",
                      "feature_net_weights", "realism_k", "realism_keep", "density_k", "type",
                      "num_real")
        )  # fmt: skip
        if (cfg.type in FEATURE_EVALUATORS or "features" in cfg) and options not in checked:
            try:
                check_weights(cfg, data_name)
            except UserError as e:
                raise UserError(f"config key evals.{name}: {e}") from None
            checked.add(options)
        if cfg.type == "quality" or any(cfg.get(k, "") for k in STATS_OPTIONS):
            try:
                dim = None
                if cfg.type == "quality" and cfg.get("reference_stats", ""):
                    dim = feature_dim(cfg, data_name, image_shape)
                check_stats_options(cfg, dim)
            except UserError as e:
                raise UserError(f"config key evals.{name}: {e}") from None


def run_evaluators(ctx: EvalContext, evals, step: int, final: bool) -> dict[str, float]:
    """Runs every evaluator due at ``step`` (all of them when ``final``)."""
    results: dict[str, float] = {}
    for cfg in evals.values():
        every = int(cfg.get("every", 0))
        if not final and (every <= 0 or step % every):
            continue
        check_active()
        results.update(get_evaluator(cfg.type)(ctx, cfg))
    return results


__all__ = [
    "EvalContext",
    "EVALUATORS",
    "FEATURE_EVALUATORS",
    "check_evaluators",
    "get_evaluator",
    "register",
    "run_evaluators",
]
