"""Orbax checkpoints of a run: ``<workdir>/checkpoints/<step>/{state,data}``.

``state`` is the :class:`~jaxgen.methods.base.TrainState` (params, optimizer
state, EMA, model state, step, RNG); ``data`` is the input iterator's state as
JSON. A checkpoint that fails to restore is reported by step and path; readers
may fall back to an earlier one (:meth:`Checkpoints.restore_latest`).
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxgen.errors import UserError

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


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def list_steps(workdir: str) -> list[int]:
    """Finished checkpoint steps in ``workdir``, oldest first (no Orbax manager needed)."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


class Checkpoints:
    """Saves every ``checkpoint_every`` steps and keeps the newest ``keep``."""

    def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
        self.directory = checkpoint_dir(workdir)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max(keep, 1),
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=not read_only,  # what an interrupted save left behind
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data")
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict) -> bool:
        """Saves ``step`` unless it is saved already; returns whether it wrote.

        Raises:
          CheckpointWriteError: when the write fails (a full disk, a lost mount); Orbax
            writes into a temporary folder and renames it when complete, so the earlier
            checkpoints stay intact and the partial one is ignored.
        """
        if step in self._manager.all_steps():
            return False
        self._check_free_space(step, state)
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
                ),
                force=True,
            )
            self._manager.wait_until_finished()
        except Exception as e:  # OSError from tensorstore or the JSON writer, wrapped variously
            kept = self._intact_note(step)
            raise CheckpointWriteError(
                f"cannot write checkpoint {os.path.join(self.directory, str(step))}: "
                f"{_first_line(e)}; {kept}"
            ) from None
        return True

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
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            return
        if free < needed:
            kept = self._intact_note(step)
            raise CheckpointWriteError(
                f"cannot write checkpoint {os.path.join(self.directory, str(step))}: "
                f"{free / 2**20:.1f} MiB free on its disk, it needs {needed / 2**20:.1f} MiB; "
                f"{kept}"
            )

    def check_fits(self, step: int, abstract_state: Any) -> None:
        """Raises CheckpointMismatchError when ``step``'s arrays differ in name or shape."""
        state_dir = os.path.join(self.directory, str(step), "state")
        try:
            metadata = ocp.StandardCheckpointer().metadata(state_dir).item_metadata.tree
        except Exception:  # unreadable metadata: left to restore(), which names the damage
            return
        problems = shape_problems(leaf_shapes(metadata), leaf_shapes(abstract_state))
        if problems:
            raise CheckpointMismatchError(
                f"checkpoint {os.path.join(self.directory, str(step))} does not fit this "
                f"config's model: {'; '.join(problems)}"
            )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restores step ``step`` into the structure and shardings of ``abstract_state``."""
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
                f"checkpoint {os.path.join(self.directory, str(step))} cannot be restored: "
                f"{_first_line(e)}"
            ) from None
        return restored.state, restored.data

    def restore_latest(self, abstract_state: Any, fall_back: bool) -> tuple[int, Any, dict]:
        """Restores the newest checkpoint; with ``fall_back``, the newest that restores.

        Raises:
          UserError: when there is no checkpoint, or the newest is corrupt and
            ``fall_back`` is off (nothing is deleted either way).
        """
        steps = self.all_steps()
        if not steps:
            raise UserError(f"no checkpoint in {self.directory}; train first (--mode=train)")
        for step in reversed(steps):
            try:
                state, data = self.restore(step, abstract_state)
                return step, state, data
            except CorruptCheckpointError as e:
                if not fall_back:
                    raise CorruptCheckpointError(
                        f"{e}; move it away to resume from the previous one"
                    ) from None
                log.warning("%s; falling back to the previous checkpoint", e)
        raise UserError(f"no checkpoint in {self.directory} can be restored")

    def close(self) -> None:
        self._manager.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _check_finite_tree(tree: Any) -> None:
    for leaf in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(leaf.dtype, np.floating) and not bool(
            jax.numpy.isfinite(leaf).all()
        ):
            raise ValueError("non-finite values in the restored state")


def load_params_from(path: str, abstract_params: Any, key: str = "params") -> Any:
    """Parameters of another run for fine-tuning (``init_from``).

    Args:
      path: a run's workdir (its latest checkpoint is used) or one ``checkpoints/<step>`` dir.
      abstract_params: the structure expected by this run (shapes and dtypes).
      key: which entry of the saved TrainState to read (``params`` or ``ema_params``).

    Raises:
      UserError: listing every parameter whose name or shape differs.
    """
    step_dir = path
    if os.path.isdir(checkpoint_dir(path)):
        steps = list_steps(path)
        if not steps:
            raise UserError(f"config key init_from={path!r}: the run has no checkpoint")
        step_dir = os.path.join(checkpoint_dir(path), str(steps[-1]))
    state_dir = os.path.join(step_dir, "state")
    if not os.path.isdir(state_dir):
        raise UserError(f"config key init_from={path!r}: not a workdir or checkpoint directory")
    try:
        saved = ocp.StandardCheckpointer().restore(os.path.abspath(state_dir))
    except Exception as e:
        raise UserError(f"config key init_from={path!r}: cannot read checkpoint: {e}") from None
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
