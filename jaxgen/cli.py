"""Command-line handling behind ``launch.py``: flags, config loading, one-line errors.

Only the standard library is imported at module level, so that ``launch.py`` installs its
signal handling within milliseconds of the interpreter's start (see ``_StartupSignals``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import signal
import sys
from typing import TYPE_CHECKING

from jaxgen import paths
from jaxgen.dotted import MISSING, lookup
from jaxgen.errors import UserError
from jaxgen.launch_help import config_help, launcher_help, module_docstring, wants_help
from jaxgen.overrides import apply_override_args, one_line, override_key

if TYPE_CHECKING:
    import ml_collections


@dataclasses.dataclass(frozen=True)
class Launch:
    """What one command line asks for."""

    config: ml_collections.ConfigDict
    workdir: str
    mode: str
    allow_config_change: tuple[str, ...]


def _flag_values():
    """The launcher's flags besides ``--config`` (an absl ``FlagValues``), defined afresh for
    each command line (no global flag state, so that ``main`` can be called more than once in
    a process, as the tests do)."""
    from absl import flags

    fv = flags.FlagValues()
    # base_config reads --config=<spec> and parse drops it; defined for absl's errors.
    flags.DEFINE_string("config", None, "configs/<family>.py[:key=value,...]", flag_values=fv)
    flags.DEFINE_string(
        "workdir", None, "Run directory (checkpoints, metrics, samples).", flag_values=fv
    )
    flags.DEFINE_string("mode", "train", "train | eval | sample", flag_values=fv)
    flags.DEFINE_list(
        "allow_config_change",
        [],
        "Config keys a training relaunch may change although they alter the model, data or "
        "optimisation (comma-separated, e.g. optimizer.learning_rate,seed).",
        flag_values=fv,
    )
    return fv


def import_file(path: str, where: str, kind: str, module_name: str, expected: str = "a .py file"):
    """Imports the Python file ``path``; a missing or broken file, or one that is no Python
    module (``expected`` says what is), is a UserError naming it."""
    if not os.path.isfile(path):
        raise UserError(f"{where}: no {kind} file {path!r}")
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:  # not a .py file: no loader for it
        raise UserError(f"{where}: {path} is not a Python {kind} file; expected {expected}")
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
    module = import_file(
        path, f"--config={spec}", "config", "jaxgen_user_config",
        expected="a .py file that defines get_config(), e.g. configs/vae.py:preset=smoke",
    )  # fmt: skip
    if not hasattr(module, "get_config"):
        raise UserError(f"--config={spec}: {path} has no get_config(arg)")
    return module.get_config(arg or None) if arg else module.get_config()


def _has_key(config: ml_collections.ConfigDict, dotted: str) -> bool:
    return lookup(config, dotted) is not MISSING


def _key_added_since(config: ml_collections.ConfigDict, args: list[str]) -> str | None:
    """The first override key of ``args`` that ``config`` (a run's own) lacks and that today's
    ``configs/<family>.py`` has: a key added since the run was trained; None if there is none."""
    missing = [k for k in map(override_key, args) if k is not None and not _has_key(config, k)]
    path = os.path.join(os.path.dirname(paths.__file__), "..", "configs", f"{config.family}.py")
    if not missing or not os.path.isfile(path):
        return None
    try:
        today = load_config_file(path)
    except Exception:  # the plain unknown-key error then stands
        return None
    return missing[0] if _has_key(today, missing[0]) else None


def _argv_value(argv: list[str], name: str) -> str | None:
    """The last value of ``--name=V`` or ``--name V`` in ``argv``, or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def base_config(argv: list[str]) -> tuple[ml_collections.ConfigDict, bool]:
    """The config before overrides and whether it is the workdir's own: the ``--config`` file,
    else the config the workdir's checkpoints were trained with."""
    spec = _argv_value(argv, "config")
    if spec is not None:
        return load_config_file(spec), False
    workdir = _argv_value(argv, "workdir")
    if workdir and paths.is_dir(paths.normalize(workdir)):
        from jaxgen.checkpoints import list_steps
        from jaxgen.saved_config import workdir_config
        from jaxgen.workdir import unrecorded_checkpoints_error

        real = paths.normalize(workdir)
        config = workdir_config(real)
        if config is not None:
            return config, True
        if list_steps(real):
            raise unrecorded_checkpoints_error(
                real, "pass --config=configs/<family>.py[:args] with the settings they had"
            )
    raise UserError(
        "--config is required for a new workdir, e.g. --config=configs/vae.py:preset=smoke "
        "(a trained workdir's own config is used when --config is left out)"
    )


def _without_config_flag(args: list[str]) -> list[str]:
    """``args`` without their ``--config=<spec>`` and ``--config <spec>`` words (read by
    :func:`base_config`). An override before them is refused, as absl's config flag does."""
    rest, config_seen, skip = [], False, False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg.startswith("--config=") or (arg == "--config" and i + 1 < len(args)):
            config_seen, skip = True, arg == "--config"
        else:
            rest.append(arg)
    if config_seen:
        first = next(i for i, a in enumerate(args) if a == "--config" or a.startswith("--config="))
        for arg in args[:first]:
            if override_key(arg) is not None:
                raise UserError(f"Found {arg} in argv before a value for --config was specified")
    return rest


def _positional_error(words: list[str]) -> UserError:
    """The refusal of words that are no flag (``launch.py ... sample``): the launcher takes
    none, and running without them would do something else than was asked."""
    listed = " ".join(repr(w) for w in words)
    modes = [w for w in words if w in ("train", "eval", "sample")]
    hint = f"; did you mean --mode={modes[0]}?" if modes else ""
    return UserError(
        f"unexpected argument{'s' if len(words) > 1 else ''} {listed}: launch.py takes only "
        f"flags (--config=..., --workdir=..., --mode=..., --config.<key>=<value>){hint}"
    )


def help_text(argv: list[str]) -> str:
    """``launch.py --help``: the launcher's usage; with ``--config=<spec>`` that config's
    docstring and keys (a config that does not load is the usual one-line error); with only
    the ``--workdir`` of a trained run, the keys of the config it was trained with."""
    spec = _argv_value(argv, "config")
    if spec is not None:
        config = load_config_file(spec)
        return config_help(f"--config={spec}", module_docstring(spec.partition(":")[0]), config)
    workdir = _argv_value(argv, "workdir")
    if workdir and paths.is_dir(paths.normalize(workdir)):
        from jaxgen.saved_config import workdir_config

        config = workdir_config(paths.normalize(workdir))
        if config is not None:
            title = f"--workdir={workdir}: the config its checkpoints were trained with"
            return config_help(title, "", config)
    return launcher_help()


def parse(argv: list[str]) -> Launch:
    """The launch ``argv`` asks for, or a UserError naming the bad input.

    Without ``--config`` the workdir's own config is used (the one its checkpoints were last
    trained with); ``--config.<key>=<value>`` overrides apply to it as to a config file
    (:func:`jaxgen.overrides.apply_override_args`). The config is locked: no new keys.
    """
    from absl import flags

    config, own = base_config(argv)
    family = config.get("family")
    args = _without_config_flag(argv[1:])
    added = _key_added_since(config, args) if own else None
    if added is not None:
        raise UserError(
            f"unknown config key {added!r} (--config.{added}) in the config this run was "
            f"trained with: configs/{family}.py added it since; to set it, pass "
            f"--config=configs/{family}.py[:args] with the settings the run was trained with"
        )
    rest = apply_override_args(config, args)
    if config.get("family") != family:  # the other sections are still this family's
        raise UserError(
            f"config key family={config.get('family')!r}: a config builds one family "
            f"({family!r}); use configs/<family>.py for another"
        )
    config.lock()
    fv = _flag_values()
    try:
        positional = fv([argv[0], *rest])[1:]
    except flags.Error as e:
        raise UserError(one_line(e)) from None
    if positional:
        raise _positional_error(positional)
    if not fv.workdir:
        raise UserError("--workdir is required")
    for key in fv.allow_config_change:
        if not _has_key(config, key):
            raise UserError(f"--allow_config_change: unknown config key {key!r}")
    return Launch(
        config=config,
        workdir=paths.normalize(fv.workdir),  # a local folder or a gs:// / s3:// URL
        mode=fv.mode,
        allow_config_change=tuple(fv.allow_config_change),
    )


class _StartupSignals:
    """Records SIGTERM/SIGINT that arrive while the process starts (before the
    :class:`~jaxgen.preemption.StopRequest` is in place), so they too end in a clean stop.

    Not used with several processes: ``jax.distributed.initialize`` installs JAX's own
    SIGTERM handler, which a Python handler installed earlier would hide.
    """

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        del frame
        if self.signal is not None:
            os._exit(128 + signum)
        self.signal = signum


def main(argv: list[str]) -> int:
    """Parses, sets up the process and runs; returns the exit status.

    0 when done or stopped by a signal (the workdir is then resumable); 2 with one line on
    stderr for a problem the run names (bad input, a busy workdir, a failed checkpoint
    write). Nothing is lost either way.
    """
    from jaxgen import runtime

    startup = _StartupSignals() if runtime.multi_process_env() is None else None
    with startup or contextlib.nullcontext():
        return _main(argv, startup)


def _main(argv: list[str], startup: _StartupSignals | None) -> int:
    from jaxgen import runtime
    from jaxgen.workdir import start_warnings_afresh

    start_warnings_afresh()
    try:
        if wants_help(argv[1:]):
            print(help_text(argv))
            return 0
        launch = parse(argv)
        from jaxgen.preemption import Preempted, StopRequest
        from jaxgen.run import run, validate_mode

        validate_mode(launch.mode)
        runtime.initialize()
        with StopRequest() as stop:
            if startup is not None and startup.signal is not None:
                stop.request(startup.signal)
            try:
                run(
                    launch.config, launch.workdir, launch.mode,
                    allow_config_change=launch.allow_config_change, argv=argv[1:], stop=stop,
                )  # fmt: skip
            except Preempted as e:
                by = f"signal {stop.signal}" if stop.signal else "a signal to another process"
                print(f"stopped by {by}: {one_line(e)}", file=sys.stderr)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a lost mount, a permission: not a traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or one_line(e)}{where}", file=sys.stderr)
        return 2
    return 0


def exit_process(status: int) -> None:
    """Ends the launcher's process with ``status``. Signals are ignored from here on: the
    run is over, and the interpreter's shutdown (libraries' exit hooks, XLA's threads) would
    otherwise meet them with the default action once Python's own handlers are gone."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(status)
