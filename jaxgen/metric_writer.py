"""Writes training metrics to ``metrics.jsonl`` and TensorBoard (no TensorFlow needed).

Only the main process (``jax.process_index() == 0``) writes; on the others every
method is a no-op, so callers need no ``if``.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np


def _to_builtin(value):
    value = np.asarray(value)
    if value.dtype.kind in "iu":
        return int(value)
    if value.dtype.kind == "b":
        return bool(value)
    f = float(value)
    return f if math.isfinite(f) else str(f)


class MetricWriter:
    """``metrics.jsonl`` lines ``{"step": int, ...}`` plus TensorBoard scalars and images.

    Args:
      workdir: the run directory; files go to ``<workdir>/metrics.jsonl`` and ``<workdir>/tb/``.
      is_main: whether this process writes (process 0 of a multi-process run).
    """

    def __init__(self, workdir: str, is_main: bool = True):
        self.is_main = is_main
        self._jsonl = None
        self._tb = None
        if is_main:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            self._tb_dir = os.path.join(workdir, "tb")

    def _tensorboard(self):
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(self._tb_dir, flush_secs=10)
        return self._tb

    def write_scalars(self, step: int, scalars: dict, jsonl: bool = True) -> None:
        """TensorBoard scalars, and (with ``jsonl``) one ``metrics.jsonl`` line."""
        if not self.is_main:
            return
        row = {"step": int(step)}
        row.update({k: _to_builtin(v) for k, v in scalars.items()})
        if jsonl:
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        tb = self._tensorboard()
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                tb.add_scalar(k, v, int(step))

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        """One uint8 image ``[H, W, C]`` (e.g. a sample grid) to TensorBoard."""
        if not self.is_main:
            return
        image = np.asarray(image)
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        self._tensorboard().add_image(name, image, int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
