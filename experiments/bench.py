"""Benchmark records for the inference-time table: benchmark JSON files and runs' own timing.

A record is a dict with ``hardware`` (text) and ``images_per_sec`` (number), and optionally
``config``, ``sampler``, ``steps``, ``batch_size`` and ``kind`` (``sample``, the default, or
``train_step``); the schema is in ``experiments/README.md``.
"""

from __future__ import annotations

import glob
import os
import re

from experiments.rundir import RunRecord, read_json, read_jsonl
from jaxgen.errors import UserError

_TIMING_FILE = re.compile(r"^timing_(\d+)\.json$")


def is_record(rec) -> bool:
    """Whether ``rec`` has the two fields every record needs."""
    return (
        isinstance(rec, dict)
        and isinstance(rec.get("hardware"), str)
        and isinstance(rec.get("images_per_sec"), (int, float))
    )


def load_bench(paths: list[str]) -> list[dict]:
    """Benchmark records from ``.json``/``.jsonl`` files and directories (searched recursively).

    A file holds one record, a list of records, or ``{"records": [...], ...}`` whose other
    top-level fields (e.g. ``hardware``) apply to every record that lacks them. Items that are
    not records (see :func:`is_record`) are skipped.
    """
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for ext in ("json", "jsonl"):
                files += glob.glob(os.path.join(p, "**", f"*.{ext}"), recursive=True)
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise UserError(f"--bench {p!r}: no such file or directory")
    records = []
    for path in sorted(files):
        payload = read_jsonl(path) if path.endswith(".jsonl") else read_json(path)
        items = payload if isinstance(payload, list) else [payload]
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("records"), list):
                shared = {k: v for k, v in item.items() if k != "records"}
                records += [dict(shared, **rec) for rec in item["records"] if isinstance(rec, dict)]
            elif isinstance(item, dict):
                records.append(item)
    return [rec for rec in records if is_record(rec)]


def run_timing_records(runs: list[RunRecord]) -> list[dict]:
    """Each run's newest ``samples/timing_<N>.json`` (written by ``--mode=sample``) as a
    record whose ``config`` is the run's name."""
    records = []
    for run in runs:
        names = (os.path.basename(p) for p in glob.glob(os.path.join(run.path, "samples", "*")))
        steps = sorted(int(m.group(1)) for m in map(_TIMING_FILE.match, names) if m)
        if not steps:
            continue
        rec = read_json(os.path.join(run.path, "samples", f"timing_{steps[-1]}.json"))
        if is_record(rec):
            records.append(dict(rec, config=run.name))
    return records
