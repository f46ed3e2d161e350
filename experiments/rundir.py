"""Reading run directories (the workdir layout of docs/contract.md) without importing JAX.

A run directory holds ``config.json``, ``checkpoints/<step>/``, ``metrics.jsonl``,
``eval/step_<N>.json`` (and ``eval/evaluators.json``), ``samples/*.png``, ``launches.jsonl``
(one line per launch, with its mode and resolved config) and, when a sweep made it,
``sweep.json`` (the sweep's record of the run: name, launch commands, shared run).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
from typing import Any

from jaxgen.errors import UserError

_STEP_FILE = re.compile(r"^step_(\d+)\.json$")
_SKIP_DIRS = {"checkpoints", "eval", "samples", "tb", "logs"}


def checkpoint_steps(workdir: str) -> list[int]:
    """Finished checkpoint steps in ``workdir`` (names of ``checkpoints/<step>``), ascending.

    Same rule as :func:`jaxgen.checkpoints.list_steps`: Orbax writes a step under a temporary
    name and renames it when complete, so only all-digit names count.
    """
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def latest_checkpoint_step(workdir: str) -> int | None:
    steps = checkpoint_steps(workdir)
    return steps[-1] if steps else None


def eval_steps(workdir: str) -> list[int]:
    """Steps ``N`` of the ``eval/step_<N>.json`` files, ascending."""
    directory = os.path.join(workdir, "eval")
    if not os.path.isdir(directory):
        return []
    found = (_STEP_FILE.match(n) for n in os.listdir(directory))
    return sorted(int(m.group(1)) for m in found if m)


def eval_path(workdir: str, step: int) -> str:
    return os.path.join(workdir, "eval", f"step_{step}.json")


def sample_path(workdir: str, step: int) -> str:
    return os.path.join(workdir, "samples", f"samples_{step}.npz")


def read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def read_jsonl(path: str) -> list[dict]:
    """The JSON objects of ``path``, one a line; a torn last line (killed writer) is skipped."""
    rows = []
    if not os.path.isfile(path):
        return rows
    with open(path) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                continue
            raise UserError(f"{path}:{i + 1}: not a JSON object") from None
    return rows


def get_key(tree: dict, dotted: str, default: Any = None) -> Any:
    """``tree["a"]["b"]`` for ``"a.b"``, or ``default`` when a part is missing."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


@dataclasses.dataclass
class RunRecord:
    """Everything the tables and the report read from one run directory.

    Attributes:
      name: path relative to the runs root (``vae/beta_4``), or the directory name.
      path: absolute path of the directory.
      config: ``config.json`` (the config the run was trained with), except its ``sample``
        section: that of the newest ``train`` or ``eval`` launch in ``launches.jsonl``, the
        one that wrote the newest eval file, so that the sampler a table reports is the one
        its samples were drawn with when a finished run was evaluated again with another.
      eval: the newest ``eval/step_<N>.json`` (metric name -> number); ``{}`` when none.
      eval_step: its ``N``, or None.
      evaluators: ``eval/evaluators.json`` (metric -> extractor, split, ...) or ``{}``.
      metrics: ``metrics.jsonl`` rows, one per step (a step logged twice after a resume
        keeps its newest row), ordered by step.
      sweep: ``sweep.json`` or ``{}``.
    """

    name: str
    path: str
    config: dict
    eval: dict
    eval_step: int | None
    evaluators: dict
    metrics: list[dict]
    sweep: dict

    @property
    def family(self) -> str:
        return str(self.config.get("family", ""))

    @property
    def data(self) -> str:
        return str(get_key(self.config, "data.name", ""))

    def cfg(self, dotted: str, default: Any = None) -> Any:
        return get_key(self.config, dotted, default)

    def eval_value(self, key: str) -> float | None:
        value = self.eval.get(key)
        return None if value is None else float(value)

    def last_metric(self, key: str) -> tuple[int, float] | None:
        """``(step, value)`` of the last ``metrics.jsonl`` row that has ``key``."""
        for row in reversed(self.metrics):
            if key in row and row[key] is not None:
                return int(row["step"]), float(row[key])
        return None

    def curve(self, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` of every row with a finite ``key``, ordered by step."""
        out = []
        for row in self.metrics:
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                out.append((int(row["step"]), float(value)))
        return out

    def images(self, pattern: str) -> list[tuple[int, str]]:
        """``(step, path)`` of ``samples/<pattern>`` files (``pattern`` has one ``{step}``)."""
        regex = re.compile("^" + re.escape(pattern).replace(r"\{step\}", r"(\d+)") + "$")
        out = []
        for path in glob.glob(os.path.join(self.path, "samples", "*")):
            m = regex.match(os.path.basename(path))
            if m:
                out.append((int(m.group(1)), path))
        return sorted(out)


def evaluating_sample_config(path: str) -> dict | None:
    """The ``sample`` section of the newest ``train`` or ``eval`` launch recorded in
    ``<path>/launches.jsonl``, or None (no such file or launch; a torn line is skipped)."""
    newest = None
    for row in read_jsonl(os.path.join(path, "launches.jsonl")):
        if not isinstance(row, dict) or row.get("mode") not in ("train", "eval"):
            continue
        sample = (row.get("config") or {}).get("sample")
        if isinstance(sample, dict):
            newest = sample
    return newest


def load_run(path: str, name: str) -> RunRecord:
    config = read_json(os.path.join(path, "config.json"))
    if not isinstance(config, dict):
        raise UserError(f"{os.path.join(path, 'config.json')}: expected a JSON object")
    sample = evaluating_sample_config(path)
    if sample is not None:
        config = {**config, "sample": sample}
    steps = eval_steps(path)
    eval_step = steps[-1] if steps else None
    results = read_json(eval_path(path, eval_step)) if eval_step is not None else {}
    evaluators_file = os.path.join(path, "eval", "evaluators.json")
    evaluators = read_json(evaluators_file) if os.path.isfile(evaluators_file) else {}
    by_step: dict[int, dict] = {}
    for row in read_jsonl(os.path.join(path, "metrics.jsonl")):
        if "step" in row:
            by_step.setdefault(int(row["step"]), {}).update(row)
    sweep_file = os.path.join(path, "sweep.json")
    return RunRecord(
        name=name,
        path=os.path.abspath(path),
        config=config,
        eval=results,
        eval_step=eval_step,
        evaluators=evaluators if isinstance(evaluators, dict) else {},
        metrics=[by_step[s] for s in sorted(by_step)],
        sweep=read_json(sweep_file) if os.path.isfile(sweep_file) else {},
    )


def find_runs(root: str) -> list[RunRecord]:
    """Every directory at or under ``root`` with a ``config.json``, sorted by name."""
    if not os.path.isdir(root):
        raise UserError(f"--runs {root!r}: no such directory")
    runs = []
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIP_DIRS and not d.startswith("."))
        if "config.json" in files:
            rel = os.path.relpath(directory, root)
            name = os.path.basename(os.path.abspath(root)) if rel == "." else rel
            runs.append(load_run(directory, name.replace(os.sep, "/")))
    return sorted(runs, key=lambda r: r.name)
