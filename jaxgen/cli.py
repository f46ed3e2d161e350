"""Command-line handling behind ``launch.py``: flags, config loading, one-line errors."""

from __future__ import annotations

import importlib.util
import os
import re
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from jaxgen.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<family>.py[:key=value,...]")
flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, samples).")
flags.DEFINE_string("mode", "train", "train | eval | sample")

_OVERRIDE = re.compile(r"^--config\.([^=]+)(=(.*))?$")


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def import_file(path: str, where: str, kind: str, module_name: str):
    """Imports the Python file ``path``; a missing or broken file is a UserError naming it."""
    if not os.path.isfile(path):
        raise UserError(f"{where}: no {kind} file {path!r}")
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{where}: cannot load {path}: {one_line(e)}") from None
    return module


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``path[:arg]`` -> the ConfigDict returned by the file's ``get_config(arg)``."""
    path, _, arg = spec.partition(":")
    module = import_file(path, f"--config={spec}", "config", "jaxgen_user_config")
    if not hasattr(module, "get_config"):
        raise UserError(f"--config={spec}: {path} has no get_config(arg)")
    return module.get_config(arg or None) if arg else module.get_config()


def _has_key(config: ml_collections.ConfigDict, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
            return False
        node = node[part]
    return True


def check_overrides(argv: list[str]) -> None:
    """Names the first ``--config.<key>`` override whose key the config lacks."""
    spec = None
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
    if spec is None:
        raise UserError("--config is required, e.g. --config=configs/vae.py:preset=smoke")
    config = load_config_file(spec)
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if match and not _has_key(config, match.group(1)):
            raise UserError(f"unknown config key {match.group(1)!r} (--config.{match.group(1)})")


def parse(argv: list[str]) -> tuple[ml_collections.ConfigDict, str, str]:
    """Returns ``(config, workdir, mode)`` or raises UserError naming the bad input."""
    check_overrides(argv)
    try:
        FLAGS(argv)
    except flags.Error as e:
        text = one_line(e)
        bad = re.match(r"flag --config\.([^=]+)=(.*?): (.*)", text)
        if bad:
            raise UserError(f"config key {bad.group(1)}={bad.group(2)!r}: {bad.group(3)}") from None
        raise UserError(text) from None
    if not FLAGS.workdir:
        raise UserError("--workdir is required")
    return FLAGS.config, os.path.abspath(FLAGS.workdir), FLAGS.mode


def main(argv: list[str]) -> None:
    """Parses, sets up the process and runs; bad input exits 2 with one line."""
    try:
        config, workdir, mode = parse(argv)
        from jaxgen import runtime
        from jaxgen.run import run, validate_mode

        validate_mode(mode)
        runtime.initialize()
        run(config, workdir, mode)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
