"""What a sweep is: named runs, each a config file, its arguments and ``--config`` overrides.

A sweep file ``experiments/ablations/<name>.py`` defines ``get_sweep(arg=None) -> list[Run]``;
``arg`` is the text after a colon (``experiments/ablations/domains.py:extra=tfds:mnist``), parsed
with :func:`configs.base.parse_args` like a config file's. Two kinds of dependency between runs:

* ``init_from=ref("<run>")`` in ``overrides``: fine-tune from another run of the same sweep
  (the reference becomes ``<root>/<run>``); the other run is trained first.
* ``shares_training_with="<run>"``: a sampling-only variant. It trains nothing; its
  ``checkpoints`` is a link to the other run's, and only its ``--mode=eval`` and
  ``--mode=sample`` differ (overrides under ``sample.`` and ``evals.``). Use
  :func:`sampling_variant` to build one.

The preset (``smoke``, ``cpu`` or ``full``) is not part of a run: ``experiments.sweep`` adds it
to every run's config arguments.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from jaxgen.cli import import_file
from jaxgen.errors import UserError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
SAMPLING_ONLY_PREFIXES = ("sample.", "evals.")


@dataclasses.dataclass(frozen=True)
class Ref:
    """Another run of the same sweep; becomes the absolute path ``<root>/<name>``."""

    name: str


def ref(name: str) -> Ref:
    return Ref(name)


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep.

    Attributes:
      name: directory name under the sweep root (letters, digits, ``_.=+-``).
      config: config file relative to the repository root, e.g. ``configs/vae.py``.
      args: the config file's arguments (``key=value`` after the colon), without ``preset``.
      overrides: ``--config.<key>=<value>`` pairs; a value may be a :class:`Ref`.
      shares_training_with: name of the run whose checkpoints this sampling-only run uses.
      description: one line shown in the report.
    """

    name: str
    config: str
    args: dict[str, Any] = dataclasses.field(default_factory=dict)
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    shares_training_with: str = ""
    description: str = ""

    def dependencies(self) -> list[str]:
        deps = [v.name for v in self.overrides.values() if isinstance(v, Ref)]
        if self.shares_training_with:
            deps.append(self.shares_training_with)
        return deps


def sampling_variant(base: Run, name: str, description: str = "", **sample: Any) -> Run:
    """A run that evaluates and samples ``base``'s checkpoints with other ``sample.*`` settings.

    ``sample`` keys are ``config.sample`` fields (``sampler="ddim", steps=20``).
    """
    overrides = dict(base.overrides)
    overrides.update({f"sample.{k}": v for k, v in sample.items()})
    return Run(
        name=name,
        config=base.config,
        args=dict(base.args),
        overrides=overrides,
        shares_training_with=base.name,
        description=description,
    )


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A validated sweep: ``runs`` in an order where every run follows its dependencies."""

    name: str
    path: str
    arg: str
    runs: tuple[Run, ...]

    def run(self, name: str) -> Run:
        for r in self.runs:
            if r.name == name:
                return r
        raise UserError(f"sweep {self.name!r} has no run {name!r}; runs: {self.names()}")

    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    def groups(self) -> list[list[str]]:
        """Runs linked by dependencies, each group in run order (one SLURM array task each)."""
        parent = {r.name: r.name for r in self.runs}

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for r in self.runs:
            for dep in r.dependencies():
                parent[find(r.name)] = find(dep)
        groups: dict[str, list[str]] = {}
        for r in self.runs:
            groups.setdefault(find(r.name), []).append(r.name)
        return list(groups.values())


def load_sweep(spec: str) -> Sweep:
    """``path[:arg]`` of a sweep file -> the validated :class:`Sweep`."""
    path, _, arg = spec.partition(":")
    module = import_file(path, f"sweep {spec!r}", "sweep", f"jaxgen_sweep_{_stem(path)}")
    if not hasattr(module, "get_sweep"):
        raise UserError(f"sweep {spec!r}: {path} has no get_sweep(arg)")
    runs = module.get_sweep(arg or None)
    return Sweep(name=_stem(path), path=path, arg=arg, runs=tuple(validate(runs, spec)))


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def validate(runs: list[Run], where: str) -> list[Run]:
    """Checks names, dependencies and sampling-only overrides; returns runs in dependency order."""
    by_name: dict[str, Run] = {}
    for r in runs:
        if not isinstance(r, Run):
            raise UserError(f"sweep {where!r}: get_sweep() must return Run objects, got {r!r}")
        if not NAME.match(r.name):
            raise UserError(f"sweep {where!r}: run name {r.name!r} is not a plain directory name")
        if r.name in by_name:
            raise UserError(f"sweep {where!r}: two runs are named {r.name!r}")
        if "preset" in r.args:
            raise UserError(
                f"sweep {where!r}: run {r.name!r} sets preset; the preset comes from --preset"
            )
        by_name[r.name] = r
    for r in runs:
        for dep in r.dependencies():
            if dep not in by_name:
                raise UserError(f"sweep {where!r}: run {r.name!r} depends on unknown run {dep!r}")
        if r.shares_training_with:
            _check_sampling_only(r, by_name[r.shares_training_with], where)
    return _topological(runs, by_name, where)


def _check_sampling_only(run: Run, base: Run, where: str) -> None:
    if base.shares_training_with:
        raise UserError(
            f"sweep {where!r}: run {run.name!r} shares the training of {base.name!r}, "
            "which trains nothing itself"
        )
    if run.config != base.config or run.args != base.args:
        raise UserError(
            f"sweep {where!r}: sampling-only run {run.name!r} must use the config file and "
            f"arguments of {base.name!r}"
        )
    for key in set(run.overrides) | set(base.overrides):
        same = key in run.overrides and key in base.overrides
        if same and run.overrides[key] == base.overrides[key]:
            continue
        if not key.startswith(SAMPLING_ONLY_PREFIXES):
            raise UserError(
                f"sweep {where!r}: sampling-only run {run.name!r} changes {key!r}; only "
                f"keys under {SAMPLING_ONLY_PREFIXES} may differ from {base.name!r}"
            )


def _topological(runs: list[Run], by_name: dict[str, Run], where: str) -> list[Run]:
    order: list[Run] = []
    state: dict[str, str] = {}

    def visit(r: Run, chain: tuple[str, ...]):
        if state.get(r.name) == "done":
            return
        if state.get(r.name) == "active":
            raise UserError(f"sweep {where!r}: dependency cycle {' -> '.join(chain + (r.name,))}")
        state[r.name] = "active"
        for dep in r.dependencies():
            visit(by_name[dep], chain + (r.name,))
        state[r.name] = "done"
        order.append(r)

    for r in runs:
        visit(r, ())
    return order
