"""Orbax checkpoints of a run: ``<workdir>/checkpoints/<step>/{state,data,config,tokenizer}``.

``state`` is the :class:`~jaxgen.methods.base.TrainState` (params, optimizer
state, EMA, model state, step, RNG); ``data`` is the input iterator's state as
JSON; ``config`` the config the step was trained with and ``tokenizer`` the
vocabulary of a text run's corpus-built tokenizer, as JSON (:data:`RUN_ITEMS`;
absent from checkpoints written before jaxgen saved them), so that a checkpoint
describes itself when the workdir's ``config.json``, ``launches.jsonl`` or
``tokenizer.json`` are lost. A checkpoint that fails to restore is reported by
step and path; readers may fall back to an earlier one
(:meth:`Checkpoints.restore_latest`).

The workdir may be a local path or a ``gs://`` / ``s3://`` URL (see :mod:`jaxgen.paths`);
Orbax is given an ``etils.epath.Path`` and writes the arrays through TensorStore.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxgen import paths
from jaxgen.errors import UserError
from jaxgen.restore_failures import first_line, quiet_abandoned_reads

log = logging.getLogger("jaxgen")


class CorruptCheckpointError(UserError):
    """A checkpoint directory exists but cannot be restored."""


class CheckpointMismatchError(UserError):
    """A checkpoint holds arrays of other names or shapes than this config's state."""


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (e.g. a full disk); the earlier ones are intact."""


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``"params.encoder.Conv_0.kernel" -> shape`` for every array leaf of ``tree``."""
    return {
        ".".join(_key_name(k) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if hasattr(leaf, "shape")
    }


def shape_problems(saved: dict, expected: dict, limit: int = 3) -> list[str]:
    """The first ``limit`` differences between two :func:`leaf_shapes` maps."""
    problems = [
        f"{name} is {saved[name]} there, {shape} here"
        for name, shape in expected.items()
        if name in saved and saved[name] != shape
    ]
    problems += [f"{name} missing there" for name in expected if name not in saved]
    problems += [f"{name} not in this model" for name in saved if name not in expected]
    return problems[:limit]


COMMIT_FILE = "commit_success.txt"  # Orbax's mark of a finished step
# JSON items saved beside the arrays: the config the step was trained with, and the
# vocabulary of a corpus-built tokenizer (text runs).
RUN_ITEMS = ("config", "tokenizer")
JSON_ITEM_FILE = "metadata"  # the file Orbax's JsonSave writes in an item's folder
# How many times restore_latest looks at the steps again when one it read was removed or
# superseded meanwhile (a training launch beside it rotating its checkpoints).
MAX_RELISTS = 5


def _foreground_directories() -> ocp.AsyncOptions | None:
    """Async options that create a step's folders before ``save()`` returns, not in a
    background thread: when that thread fails (a read-only or lost checkpoints folder), the
    item writers Orbax has started wait for its "created" signal, which never comes, for the
    coordination timeout (300 s), and the process cannot exit before them. Created in the
    foreground, a failure raises from ``save()`` before any writer starts; the arrays are
    still written in the background. None (their defaults) for Orbax releases without the
    option, such as 0.11.0, the oldest that setup.cfg allows."""
    fields = {field.name for field in dataclasses.fields(ocp.AsyncOptions)}
    if "create_directories_asynchronously" not in fields:
        return None
    return ocp.AsyncOptions(create_directories_asynchronously=False)


def checkpoint_dir(workdir: str) -> str:
    """``<workdir>/checkpoints`` (a local path made absolute, or a URL)."""
    return paths.join(paths.normalize(workdir), "checkpoints")


def list_steps(workdir: str) -> list[int]:
    """Finished checkpoint steps in ``workdir``, oldest first (no Orbax manager needed).

    Locally Orbax writes a step into a temporary folder and renames it when complete; on
    object stores it writes into ``<step>`` directly and marks it finished with
    ``commit_success.txt``, which is then required.
    """
    directory = checkpoint_dir(workdir)
    names = [name for name in paths.listdir(directory) if name.isdigit()]
    if paths.is_remote(directory):
        names = [n for n in names if paths.exists(paths.join(directory, n, COMMIT_FILE))]
    return sorted(int(name) for name in names)


def newest_saved_item(workdir: str, item: str) -> dict | None:
    """The :data:`RUN_ITEMS` entry ``item`` saved with the newest checkpoint of ``workdir``
    that has a readable one (None: no checkpoint, or none that saved it). Read as the JSON
    file Orbax's ``JsonSave`` wrote, without an Orbax manager, so that it touches no JAX
    backend."""
    directory = checkpoint_dir(workdir)
    damaged = []  # (path, why) of newer steps' copies that could not be read
    missing = []  # newer steps without one: lost, if an older step has one
    for step in reversed(list_steps(workdir)):
        path = paths.join(directory, str(step), item, JSON_ITEM_FILE)
        if not paths.exists(path):
            missing.append((path, "missing"))
            continue
        try:
            value = json.loads(paths.read_text(path))
        except (OSError, ValueError) as e:
            damaged.append((path, f"{type(e).__name__}: {e}"))
            continue
        if isinstance(value, dict):
            _report_damaged(damaged + missing, f"using the one saved with checkpoint {step}")
            return value
        damaged.append((path, f"JSON {type(value).__name__}, not an object"))
    _report_damaged(damaged, "no other checkpoint has a readable one")
    return None


_DAMAGE_REPORTED: set[str] = set()  # item files warned about by this launch


def forget_reported_damage() -> None:
    """Lets :func:`newest_saved_item` warn again about the same damaged file (a new launch)."""
    _DAMAGE_REPORTED.clear()


def _report_damaged(damaged: list[tuple[str, str]], instead: str) -> None:
    """One warning per launch for each damaged item file skipped, saying what is used
    instead (``instead``): an older checkpoint's copy can hold other values."""
    for path, why in damaged:
        if path not in _DAMAGE_REPORTED:
            _DAMAGE_REPORTED.add(path)
            log.warning("%s cannot be read (%s); %s", path, why[:200], instead)


class Checkpoints:
    """Saves every ``checkpoint_every`` steps and keeps the newest ``keep``.

    With ``async_save`` a save returns once the arrays are copied to host memory and the
    files are written in the background while training goes on; the next save,
    :meth:`wait` and :meth:`close` wait for it and report its failure. Orbax writes each
    step into a temporary folder and renames it when complete, so an interrupted
    background write never looks like a checkpoint.
    """

    def __init__(
        self, workdir: str, keep: int = 3, read_only: bool = False, async_save: bool = False
    ):
        self.directory = checkpoint_dir(workdir)
        self.async_save = async_save and not read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max(keep, 1),
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=self.async_save,
            cleanup_tmp_directories=not read_only,  # what an interrupted save left behind
            async_options=_foreground_directories(),
        )
        self._manager = ocp.CheckpointManager(
            paths.as_path(self.directory),
            options=options,
            item_names=("state", "data", *RUN_ITEMS),
        )
        self._pending: int | None = None  # step of a background write not yet waited for

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(
        self, step: int, state: Any, data_state: dict, run_items: dict[str, dict] | None = None
    ) -> bool:
        """Saves ``step`` unless it is saved already; returns whether it wrote.

        ``run_items``: JSON objects saved beside the arrays, keyed by a name of
        :data:`RUN_ITEMS` (the run's config, a text run's tokenizer).

        Raises:
          CheckpointWriteError: when the write fails (a full disk, a lost mount); Orbax
            writes into a temporary folder and renames it when complete, so the earlier
            checkpoints stay intact and the partial one is ignored.
        """
        self.wait()
        if step in self._manager.all_steps():
            return False
        self._check_free_space(step, state)
        items = {"state": ocp.args.StandardSave(state), "data": ocp.args.JsonSave(data_state)}
        for name, value in (run_items or {}).items():
            if name not in RUN_ITEMS:
                raise ValueError(f"checkpoint item {name!r} is not one of {RUN_ITEMS}")
            items[name] = ocp.args.JsonSave(value)
        try:
            self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as e:  # OSError from tensorstore or the JSON writer, wrapped variously
            raise self._write_error(step, e) from None
        self._pending = step
        if not self.async_save:
            self.wait()
        return True

    def wait(self) -> None:
        """Returns when the last save is on disk.

        Raises:
          CheckpointWriteError: the background write of that save failed.
        """
        if self._pending is None:
            return
        step, self._pending = self._pending, None
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise self._write_error(step, e) from None

    def _write_error(self, step: int, error: BaseException) -> CheckpointWriteError:
        return CheckpointWriteError(
            f"cannot write checkpoint {paths.join(self.directory, str(step))}: "
            f"{first_line(error)}; {self._intact_note(step)}"
        )

    def _intact_note(self, failed_step: int) -> str:
        """What a failed save of ``failed_step`` leaves: the newest other checkpoint."""
        previous = [s for s in self.all_steps() if s != failed_step]
        return f"step {previous[-1]} is the newest intact one" if previous else "none is kept"

    def _check_free_space(self, step: int, state: Any) -> None:
        """Refuses to start a save that cannot fit on the disk (Orbax stores the arrays
        uncompressed); a save that runs out of space half-way still fails safely, only
        less quietly (Orbax's writer threads print their own tracebacks)."""
        if jax.process_index() != 0:
            return
        needed = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state))
        needed = int(needed * 1.1) + 2**16
        free = paths.disk_free(self.directory)  # None on object stores
        if free is None:
            return
        if free < needed:
            kept = self._intact_note(step)
            raise CheckpointWriteError(
                f"cannot write checkpoint {paths.join(self.directory, str(step))}: "
                f"{free / 2**20:.1f} MiB free on its disk, it needs {needed / 2**20:.1f} MiB; "
                f"{kept}"
            )

    def check_fits(self, step: int, abstract_state: Any) -> None:
        """Raises CheckpointMismatchError when ``step``'s arrays differ in name or shape."""
        state_dir = paths.as_path(paths.join(self.directory, str(step), "state"))
        try:
            metadata = ocp.StandardCheckpointer().metadata(state_dir).item_metadata.tree
        except Exception:  # unreadable metadata: left to restore(), which names the damage
            return
        problems = shape_problems(leaf_shapes(metadata), leaf_shapes(abstract_state))
        if problems:
            raise CheckpointMismatchError(
                f"checkpoint {paths.join(self.directory, str(step))} does not fit this "
                f"config's model: {'; '.join(problems)}"
            )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restores step ``step`` into the structure and shardings of ``abstract_state``."""
        quiet_abandoned_reads()
        self.check_fits(step, abstract_state)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                ),
            )
            _check_finite_tree(restored.state)
        except Exception as e:  # Orbax/tensorstore raise many types for damaged files
            raise CorruptCheckpointError(
                f"checkpoint {paths.join(self.directory, str(step))} cannot be restored: "
                f"{first_line(e)}"
            ) from None
        return restored.state, restored.data

    def restore_latest(self, abstract_state: Any, fall_back: bool) -> tuple[int, Any, dict]:
        """Restores the newest checkpoint; with ``fall_back``, the newest that restores.

        A step that fails to restore and is then gone from the disk, or has a newer step
        beside it, was rotated away by a training launch running beside this one rather
        than damaged: the steps are listed again (at most :data:`MAX_RELISTS` times) and
        the newest one tried, without a warning.

        Raises:
          UserError: when there is no checkpoint, or the newest is corrupt and
            ``fall_back`` is off (nothing is deleted either way).
        """
        steps = self.all_steps()
        if not steps:
            raise UserError(f"no checkpoint in {self.directory}; train first (--mode=train)")
        tried: set[int] = set()
        relists = 0
        while True:
            for step in [s for s in reversed(steps) if s not in tried]:
                tried.add(step)
                try:
                    state, data = self.restore(step, abstract_state)
                    return step, state, data
                except CorruptCheckpointError as e:
                    now = self._reread_steps()
                    moved_on = step not in now or (now and now[-1] > steps[-1])
                    if moved_on and relists < MAX_RELISTS:
                        # A training launch beside this one removed the step (rotation) or
                        # saved a newer one (which rotation may be removing this step for):
                        # a change of the listing, not damage. Look again, newest first.
                        log.info(
                            "checkpoint %d was %s while it was read; looking again",
                            step, "removed" if step not in now else "superseded",
                        )  # fmt: skip
                        relists += 1
                        steps = now
                        break
                    if not fall_back:
                        raise CorruptCheckpointError(
                            f"{e}; move it away to resume from the previous one"
                        ) from None
                    log.warning("%s; falling back to the previous checkpoint", e)
            else:
                raise UserError(f"no checkpoint in {self.directory} can be restored")

    def _reread_steps(self) -> list[int]:
        """The finished steps on disk now (the manager's list is read when it is made)."""
        self._manager.reload()
        return self.all_steps()

    def close(self) -> None:
        """Waits for a background write (raising its failure), then releases Orbax."""
        try:
            self.wait()
        finally:
            # The manager cleans up old temporary folders in a thread it starts on creation
            # and does not wait for in close(); a launch stopped within its first second
            # would otherwise exit under that thread, which then fails with a traceback.
            await_cleanup = getattr(self._manager, "_maybe_await_cleanup_tmp_directory", None)
            if await_cleanup is not None:
                await_cleanup()
            self._manager.close()


def _check_finite_tree(tree: Any) -> None:
    for leaf in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(leaf.dtype, np.floating) and not bool(
            jax.numpy.isfinite(leaf).all()
        ):
            raise ValueError("non-finite values in the restored state")


def load_params_from(path: str, abstract_params: Any, key: str = "params") -> Any:
    """Parameters of another run for fine-tuning (``init_from``).

    Args:
      path: a run's workdir (its latest checkpoint is used) or one ``checkpoints/<step>`` dir;
        a local path or a ``gs://`` / ``s3://`` URL.
      abstract_params: the structure expected by this run (shapes and dtypes).
      key: which entry of the saved TrainState to read (``params`` or ``ema_params``).

    Raises:
      UserError: listing every parameter whose name or shape differs.
    """
    step_dir = paths.normalize(path, "config key init_from")
    if paths.is_dir(checkpoint_dir(step_dir)):
        steps = list_steps(step_dir)
        if not steps:
            raise UserError(f"config key init_from={path!r}: the run has no checkpoint")
        step_dir = paths.join(checkpoint_dir(step_dir), str(steps[-1]))
    state_dir = paths.join(step_dir, "state")
    if not paths.is_dir(state_dir):
        raise UserError(f"config key init_from={path!r}: not a workdir or checkpoint directory")
    quiet_abandoned_reads()
    try:
        saved = ocp.StandardCheckpointer().restore(paths.as_path(state_dir))
    except Exception as e:
        raise UserError(
            f"config key init_from={path!r}: cannot read checkpoint: {first_line(e)}"
        ) from None
    if key not in saved:
        raise UserError(f"config key init_from={path!r}: checkpoint has no {key!r}")
    source = {
        jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(saved[key])
    }
    target = jax.tree_util.tree_leaves_with_path(abstract_params)
    problems = []
    for path_key, leaf in target:
        name = jax.tree_util.keystr(path_key)
        if name not in source:
            problems.append(f"{name} missing")
        elif tuple(source[name].shape) != tuple(leaf.shape):
            problems.append(f"{name} shape {tuple(source[name].shape)} != {tuple(leaf.shape)}")
    extra = set(source) - {jax.tree_util.keystr(k) for k, _ in target}
    problems += [f"{name} unexpected" for name in sorted(extra)]
    if problems:
        raise UserError(
            f"config key init_from={path!r}: parameters do not match: " + "; ".join(problems[:20])
        )
    leaves = [np.asarray(source[jax.tree_util.keystr(k)], leaf.dtype) for k, leaf in target]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract_params), leaves)
