"""What ``python launch.py --help`` prints: the launcher's flags and the configs it can run.

With ``--config=configs/<family>.py[:args]`` on the same command line the help is that
config's instead: its module docstring (papers, presets, arguments) and every key of the
config those arguments build, with its value, as ``--config.<key>`` overrides name them.
With ``--workdir`` of a trained run and no ``--config``, it is the keys of the config that
run was trained with.
"""

from __future__ import annotations

import ast
import os

HELP_WORDS = ("-h", "--help", "-help", "--helpfull")
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# Configs that are building blocks of the others, not runs of their own.
_NOT_RUNNABLE = ("__init__", "base", "backbones")

USAGE = """\
usage: python launch.py --config=configs/<family>.py[:arg=value,...] --workdir=DIR
                        [--mode=train|eval|sample] [--config.<key>=<value> ...]
                        [--allow_config_change=<key>,...]

  --config                configs/<family>.py, with the file's own arguments after a colon
                          (e.g. configs/gan.py:preset=cpu,cond=class); may be left out when
                          DIR holds a trained run: its own config is used
  --workdir               the run's folder, local or gs:// / s3://; it is created, or resumed
                          from its latest checkpoint
  --mode                  train (default; resumes), eval or sample (the latest checkpoint)
  --config.<key>=<value>  overrides one key of the config; the key must exist
                          (python launch.py --config=<file> --help lists them)
  --allow_config_change   keys a training relaunch may change although they change what is
                          trained (comma-separated, e.g. optimizer.learning_rate,seed)
  -h, --help              this help; with --config, that config's; with only the --workdir
                          of a trained run, the config it was trained with

Bad input is one line on stderr and exit status 2, before anything is written; training
stopped by SIGTERM or Ctrl-C checkpoints its current step and exits 0, and the same command
resumes it. Workdir layout, errors and multi-process launches: docs/contract.md."""


def wants_help(argv: list[str]) -> bool:
    """Whether ``argv`` (without the program name) asks for the help."""
    return any(word in HELP_WORDS for word in argv)


def module_docstring(path: str) -> str:
    """The docstring of the Python file ``path``, read without running it ("" if none)."""
    try:
        with open(path, encoding="utf-8") as f:
            return (ast.get_docstring(ast.parse(f.read())) or "").strip()
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return ""


def config_list(configs_dir: str = CONFIGS_DIR) -> str:
    """One line per runnable config file of ``configs_dir``: its path and the first line
    of its docstring."""
    if not os.path.isdir(configs_dir):
        return ""
    names = sorted(
        name[:-3]
        for name in os.listdir(configs_dir)
        if name.endswith(".py") and name[:-3] not in _NOT_RUNNABLE
    )
    lines = ["configs (--config=<file> --help: its presets, arguments and keys):"]
    for name in names:
        doc = module_docstring(os.path.join(configs_dir, f"{name}.py"))
        summary = doc.splitlines()[0] if doc else ""
        lines.append(f"  {f'configs/{name}.py':26s}{summary}")
    return "\n".join(lines)


def flat_items(config, prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted key, value)`` for every leaf of a ConfigDict (or dict), in key order."""
    items = []
    for name in sorted(config.keys()):
        value = config[name]
        key = f"{prefix}{name}"
        if hasattr(value, "keys"):
            items.extend(flat_items(value, key + "."))
        else:
            items.append((key, value))
    return items


def config_help(title: str, doc: str, config) -> str:
    """``title``, the config file's docstring ``doc`` (if any), then every key of
    ``config`` with its value."""
    lines = [title, ""] + ([doc.strip(), ""] if doc.strip() else [])
    lines += ["keys (--config.<key>=<value>):"]
    lines += [f"  {key} = {value!r}" for key, value in flat_items(config)]
    return "\n".join(lines)


def launcher_help() -> str:
    """The launcher's usage and the list of configs."""
    listed = config_list()
    return f"{USAGE}\n\n{listed}" if listed else USAGE
