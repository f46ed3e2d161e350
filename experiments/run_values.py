"""What a table cell reads from one run directory (a :class:`~experiments.rundir.RunRecord`).

Metric values come from the run's files (``eval/step_<N>.json``, ``metrics.jsonl``, the
config); the text about the family (architecture, training, sampler, likelihood bound) comes
from the family itself, ``describe(config)`` of :func:`jaxgen.methods.describe_family`, so
nothing here knows a family by name. A run whose family cannot be found (an old or foreign
run, a family module not on ``sys.path``) gets the generic description.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from experiments.rundir import RunRecord
from jaxgen.errors import UserError


def ev(key: str) -> Callable[[RunRecord], float | None]:
    return lambda r: r.eval_value(key)


def ev_pct(key: str) -> Callable[[RunRecord], float | None]:
    return lambda r: None if r.eval_value(key) is None else 100.0 * r.eval_value(key)


def last(key: str) -> Callable[[RunRecord], float | None]:
    return lambda r: None if r.last_metric(key) is None else r.last_metric(key)[1]


def last_pct(key: str) -> Callable[[RunRecord], float | None]:
    return lambda r: None if r.last_metric(key) is None else 100.0 * r.last_metric(key)[1]


def last_step(key: str) -> Callable[[RunRecord], int | None]:
    return lambda r: None if r.last_metric(key) is None else r.last_metric(key)[0]


def cfg(key: str) -> Callable[[RunRecord], Any]:
    def get(r: RunRecord):
        value = r.cfg(key)
        return None if value in (None, "") else value

    return get


def describe(r: RunRecord):
    """The :class:`~jaxgen.methods.description.FamilyDescription` of ``r``'s family."""
    from jaxgen.methods import describe_family
    from jaxgen.methods.description import describe_config

    try:
        return describe_family(r.config)
    except UserError:
        return describe_config(r.config)


def architecture(r: RunRecord) -> str | None:
    """A short description of the network, from ``config.json`` ``model.*``."""
    return describe(r).architecture


def is_generator(r: RunRecord) -> bool:
    """Whether ``r``'s family draws images."""
    return describe(r).is_generator


def training(r: RunRecord, runs_by_path: dict[str, RunRecord] | None = None) -> str | None:
    """The training objective and switches, from ``config.json``: the family's own text, then
    the conditioning and the run it was fine-tuned from."""
    own = describe(r).training
    parts = [own] if own else []
    if r.cfg("data.cond") not in (None, "", "none"):
        parts.append(f"cond={r.cfg('data.cond')}")
    if r.cfg("init_from"):
        source = source_run(r, runs_by_path or {})
        parts.append(f"fine-tuned from {source.name if source else r.cfg('init_from')}")
    return ", ".join(parts) or None


def source_run(r: RunRecord, runs_by_path: dict[str, RunRecord]) -> RunRecord | None:
    """The run that ``init_from`` points at (its workdir or one of its checkpoint steps)."""
    path = os.path.normpath(str(r.cfg("init_from") or ""))
    if not path or path == ".":
        return None
    candidates = [path]
    parent = os.path.dirname(path)
    if os.path.basename(parent) == "checkpoints":
        candidates.append(os.path.dirname(parent))
    for c in candidates:
        if c in runs_by_path:
            return runs_by_path[c]
    for c in candidates:  # the runs were moved: match by directory name
        matches = [x for p, x in runs_by_path.items() if os.path.basename(p) == os.path.basename(c)]
        if len(matches) == 1:
            return matches[0]
    return None


def likelihood_bound(r: RunRecord) -> str | None:
    """How the run's ``bits_per_dim`` (or ``bits_per_token``) was obtained; None when it
    reports neither."""
    if r.eval_value("bits_per_dim") is None and r.eval_value("bits_per_token") is None:
        return None
    return describe(r).likelihood_bound


def features(key: str, eval_type: str) -> Callable[[RunRecord], str | None]:
    """The feature extractor of metric ``key``: ``eval/evaluators.json``, else the config."""

    def get(r: RunRecord):
        info = r.evaluators.get(key)
        if isinstance(info, dict) and info.get("extractor"):
            return str(info["extractor"])
        if r.eval_value(key) is None:
            return None
        for spec in (r.cfg("evals", {}) or {}).values():
            if isinstance(spec, dict) and spec.get("type") == eval_type:
                return spec.get("features") or None
        return None

    return get


def sampler(r: RunRecord) -> str | None:
    """``sample.sampler``, or None when unset."""
    return describe(r).sampler


def sample_steps(r: RunRecord) -> str | None:
    """``sample.steps``; ``default`` for a named sampler without steps."""
    return describe(r).sampler_steps
