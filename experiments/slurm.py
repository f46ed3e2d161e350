"""The SLURM array script of a sweep (``python -m experiments.sweep ... --slurm PATH``).

Task ``i`` of the array runs group ``i`` of :meth:`Sweep.groups` through
``python -m experiments.sweep --only``, so the cluster skips and resumes exactly as a local
sweep does. Every user value is shell-quoted in shell and comment lines and sbatch-quoted in
``#SBATCH`` lines; a value with a line break is refused.
"""

from __future__ import annotations

import os
import re
import shlex

from experiments.commands import REPO, command, stages_of
from experiments.spec import Ref, Sweep
from jaxgen.errors import UserError
from jaxgen.overrides import override_text

LINE_BREAKS = ("\n", "\r", "\0")
_SBATCH_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def _refuse_line_breaks(what: str, text: str) -> None:
    """A line break in a script line ends it (a comment, an ``#SBATCH`` line), so the rest
    would run as a command: such text is refused."""
    if any(c in text for c in LINE_BREAKS):
        raise UserError(
            f"{what}: {text!r} holds a line break or NUL; a SLURM script cannot hold it"
        )


def _check_slurmoverride_text(sweep: Sweep, texts: dict[str, str]) -> None:
    """Refuses line breaks in ``texts`` (what -> text) and in every value of every run."""
    for what, text in texts.items():
        _refuse_line_breaks(what, text)
    for run in sweep.runs:
        where = f"sweep {sweep.name!r}, run {run.name!r}"
        _refuse_line_breaks(f"{where}: config", run.config)
        for key, value in run.args.items():
            text = override_text(value)
            _refuse_line_breaks(f"{where}: config argument {key!r}", f"{key}={text}")
        for key, value in run.overrides.items():
            text = value.name if isinstance(value, Ref) else override_text(value)
            _refuse_line_breaks(f"{where}: override {key!r}", f"{key}={text}")


def sbatch_word(text: str) -> str:
    """``text`` as (part of) one argument of an ``#SBATCH`` line.

    sbatch, not the shell, splits these lines: at blanks outside quotes, ``\\`` keeps the next
    character, an unquoted ``#`` starts a comment, and nothing is expanded. Old versions know
    only double quotes and end the line at any ``#`` not escaped, so: double quotes, with
    ``\\``, ``"`` and ``#`` escaped.
    """
    if _SBATCH_PLAIN.match(text):
        return text
    return '"' + re.sub(r'([\\"#])', r"\\\1", text) + '"'


def _sbatch_option(option: str) -> str:
    """One option argument, e.g. ``--comment=two words`` -> ``--comment="two words"``."""
    name, eq, value = option.partition("=")
    if option.startswith("--") and eq and _SBATCH_PLAIN.match(name):
        return f"{name}={sbatch_word(value)}"
    return sbatch_word(option)


def _sbatch_options(sbatch: list[str]) -> list[str]:
    """``--sbatch`` values (each split like a shell command line) -> option arguments."""
    options = []
    for text in sbatch:
        try:
            options += shlex.split(text)
        except ValueError as e:
            raise UserError(f"--sbatch={text!r}: {e}") from None
    return options


def _output_path(log_dir: str) -> str:
    """The ``--output`` file pattern of the array tasks in ``log_dir``."""
    if "\\" in log_dir:
        raise UserError(
            f"--root: {log_dir!r} holds a backslash, with which sbatch would not replace "
            "%A and %a in the log file names; choose a root without one"
        )
    return log_dir.replace("%", "%%") + "/%A_%a.out"


def slurm_script(
    sweep: Sweep,
    sweep_spec: str,
    root: str,
    preset: str,
    sbatch: list[str] = (),
    max_parallel: int = 0,
    prefix=(),
) -> str:
    """A ``sbatch`` array script: task ``i`` runs group ``i`` of :meth:`Sweep.groups`.

    Every user value is shell-quoted in shell and comment lines and sbatch-quoted in
    ``#SBATCH`` lines; a value with a line break is a :class:`UserError`.
    """
    _check_slurmoverride_text(
        sweep,
        {
            "the sweep argument": sweep_spec,
            "--root": root,
            "--preset": preset,
            **{f"--sbatch #{i + 1}": text for i, text in enumerate(sbatch)},
            **{f"--launcher-prefix word {i + 1}": word for i, word in enumerate(prefix)},
            "the repository path": REPO,
        },
    )
    options = _sbatch_options(list(sbatch))
    path, colon, arg = sweep_spec.partition(":")
    path = os.path.abspath(path)
    if path.startswith(REPO + os.sep):
        path = os.path.relpath(path, REPO)
    sweep_spec = path + colon + arg
    groups = sweep.groups()
    array = f"0-{len(groups) - 1}" + (f"%{max_parallel}" if max_parallel else "")
    log_dir = os.path.join(root, "_slurm")
    lines = [
        "#!/bin/bash",
        f"# Sweep {shlex.quote(sweep.name)} ({shlex.quote(sweep_spec)}), "
        f"preset={shlex.quote(preset)}: {len(sweep.runs)} runs in {len(groups)} array tasks.",
        "# Written by: python -m experiments.sweep "
        + shlex.join([sweep_spec, "--root", root, "--preset", preset, "--slurm", "<this file>"]),
        f"#SBATCH --job-name={sbatch_word('jaxgen-' + sweep.name)}",
        f"#SBATCH --array={array}",
        f"#SBATCH --output={sbatch_word(_output_path(log_dir))}",
        *(
            []
            if any(o.startswith(("--ntasks", "--nodes", "-n", "-N")) for o in options)
            else ["#SBATCH --ntasks=1"]
        ),
        *[f"#SBATCH {_sbatch_option(o)}" for o in options],
        "set -euo pipefail",
        f"cd {shlex.quote(REPO)}",
        'PYTHON="${PYTHON:-python}"',
        'case "${SLURM_ARRAY_TASK_ID:?run this script with sbatch}" in',
    ]
    for index, group in enumerate(groups):
        lines.append(f"  {index})")
        for name in group:
            run = sweep.run(name)
            lines.append(f"    # {name}:")
            if run.shares_training_with:
                lines.append(f"    #   checkpoints -> ../{run.shares_training_with}/checkpoints")
            for stage in stages_of(run):
                lines.append(f"    #   {shlex.join(command(run, root, preset, stage, prefix))}")
        sweep_cmd = [sweep_spec, "--root", root, "--preset", preset, "--only", ",".join(group)]
        if prefix:
            sweep_cmd.append(f"--launcher-prefix={shlex.join(prefix)}")
        lines.append(f'    exec "$PYTHON" -m experiments.sweep {shlex.join(sweep_cmd)}')
        lines.append("    ;;")
    lines += [
        '  *) echo "no run group for array index $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;',
        "esac",
        "",
    ]
    return "\n".join(lines)
