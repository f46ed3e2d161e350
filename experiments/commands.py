"""The launcher commands of a sweep's runs: config spec, ``--config.<key>`` flags, stages.

A run's stage is one ``python launch.py --config=<file>:preset=<p>,<args> --workdir=<root>/<run>
--mode=<stage> --config.<key>=<value> ...`` command; :func:`check_configs` applies every
run's overrides to its config before anything runs, so a mistyped key or value fails first.
"""

from __future__ import annotations

import os

from experiments.spec import Ref, Run, Sweep
from jaxgen.errors import UserError
from jaxgen.overrides import apply_overrides, override_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = ("smoke", "cpu", "full")
STAGES = ("train", "eval", "sample")


def config_spec(run: Run, preset: str) -> str:
    """``configs/<family>.py:preset=<p>,key=value,...`` of ``run``."""
    pairs = [f"preset={preset}"] + [f"{k}={override_text(v)}" for k, v in run.args.items()]
    return f"{run.config}:{','.join(pairs)}"


def override_values(run: Run, root: str) -> dict:
    """``run.overrides`` with every :class:`Ref` replaced by the path ``<root>/<name>``."""
    return {
        key: os.path.join(root, value.name) if isinstance(value, Ref) else value
        for key, value in run.overrides.items()
    }


def override_flags(run: Run, root: str) -> list[str]:
    """``--config.<key>=<value>`` of each override of ``run``."""
    return [f"--config.{k}={override_text(v)}" for k, v in override_values(run, root).items()]


def workdir(root: str, run: Run) -> str:
    return os.path.join(root, run.name)


def command(run: Run, root: str, preset: str, mode: str, prefix=()) -> list[str]:
    """The launcher argv of one stage of ``run``: ``[*prefix, "python", "launch.py", ...]``.

    The sample stage times the compiled sampler (``sample.timing_repeats``, off by default)
    for the tables' inference-time column, unless the run sets it itself.
    """
    timing = []
    if mode == "sample" and "sample.timing_repeats" not in run.overrides:
        timing = [f"--config.sample.timing_repeats={1 if preset == 'smoke' else 3}"]
    return [
        *prefix,
        "python",
        "launch.py",
        f"--config={config_spec(run, preset)}",
        f"--workdir={workdir(root, run)}",
        f"--mode={mode}",
        *override_flags(run, root),
        *timing,
    ]


def check_configs(sweep: Sweep, preset: str) -> None:
    """Loads every run's config file with its arguments and applies its overrides (as the
    launcher will, :func:`jaxgen.overrides.apply_overrides`), so that an unknown key or a
    value of the wrong type fails before anything runs."""
    from jaxgen.cli import load_config_file

    for run in sweep.runs:
        config = load_config_file(os.path.join(REPO, config_spec(run, preset)))
        try:
            apply_overrides(config, override_values(run, "<root>"))
        except UserError as e:
            raise UserError(f"sweep {sweep.name!r}, run {run.name!r}: {e}") from None


def stages_of(run: Run) -> tuple[str, ...]:
    return STAGES[1:] if run.shares_training_with else STAGES
