"""The records of ``quality_table.py``: draws summarised, jaxgen compared with its peer and
with held-out real images, and the Markdown table.

A record is a dict with ``family``, ``implementation``, ``minutes``, ``steps``, ``params`` and,
per metric of :data:`COLUMNS` and feature space of :data:`FEATURES`, ``<metric>_<features>``
(the mean over draws) and ``<metric>_<features>_std`` (their standard deviation).
"""

from __future__ import annotations

import json
import os

import numpy as np

# Table columns: (label, metric key prefix); each cell shows domain / contrastive.
COLUMNS = (("FD", "fd"), ("KID", "kid"), ("precision", "precision"), ("recall", "recall"),
           ("density", "density"), ("coverage", "coverage"), ("C2ST acc.", "c2st_accuracy"),
           ("broken share", "broken_share"))  # fmt: skip


def json_objects(path: str) -> list[dict]:
    """The JSON objects of the lines of ``path`` ([] when absent); a line that is not one
    (the torn last line of a killed writer) is skipped."""
    if not os.path.isfile(path):
        return []
    objects = []
    with open(path) as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                objects.append(obj)
    return objects


# Metric key prefixes where a lower value is better; higher is better for the others.
LOWER_IS_BETTER = frozenset({"fd", "kid", "c2st_accuracy", "broken_share"})
FEATURES = ("domain", "contrastive")
REAL_BENCHMARK = "quality_table_real"  # the record of held-out real images
# A lead counts when the difference of the means exceeds this many standard errors of it.
CLEAR_LEAD_SE = 2.0


def metric_keys() -> list[str]:
    """``<metric>_<features>`` of every column of :data:`COLUMNS`, in table order."""
    return [f"{metric}_{features}" for _, metric in COLUMNS for features in FEATURES]


def summarize_draws(scores: list[dict[str, float]]) -> dict:
    """One record's metric fields from the scores of its draws (independent sample sets of
    equal size): ``<key>`` the mean over draws, ``<key>_std`` their sample standard deviation
    (``ddof=1``; only with two draws or more), ``draws`` the count and ``draw_scores`` the
    scores themselves."""
    out: dict = {"draws": len(scores), "draw_scores": scores}
    for key in scores[0]:
        values = np.asarray([s[key] for s in scores], np.float64)
        out[key] = float(values.mean())
        if len(values) > 1:
            out[f"{key}_std"] = float(values.std(ddof=1))
    return out


def _standard_error(record: dict, key: str) -> float:
    """Standard error of ``record``'s mean of ``key`` (0 for a single draw)."""
    std = record.get(f"{key}_std")
    return 0.0 if std is None else std / np.sqrt(record.get("draws") or 1)


def comparison(jaxgen: dict, peer: dict) -> tuple[list[str], list[str], list[str]]:
    """``(ahead, level, behind)``: the ``<metric>_<features>`` keys of :data:`COLUMNS` both
    records have, split by whether jaxgen's mean is better than the peer's by more than
    :data:`CLEAR_LEAD_SE` standard errors of the difference, within that, or worse by more.
    Records of a single draw have no spread: there any difference decides and only an exact
    tie is level."""
    ahead, level, behind = [], [], []
    for key in metric_keys():
        if key not in jaxgen or key not in peer:
            continue
        gain = jaxgen[key] - peer[key]
        if key.rsplit("_", 1)[0] in LOWER_IS_BETTER:
            gain = -gain
        margin = CLEAR_LEAD_SE * float(np.hypot(_standard_error(jaxgen, key),
                                                _standard_error(peer, key)))  # fmt: skip
        if gain > margin:
            ahead.append(key)
        elif gain < -margin:
            behind.append(key)
        else:
            level.append(key)
    return ahead, level, behind


def newest_records(path: str, families: list[str]) -> list[dict]:
    """The last ``quality_table`` record of each (family, implementation) in the JSON lines
    file ``path``, ordered as ``families`` and then jaxgen before its peer."""
    latest = {}
    for record in json_objects(path):
        if record.get("benchmark") == "quality_table":
            latest[record["family"], record["implementation"]] = record
    order = {"jaxgen": 0}
    keys = sorted((k for k in latest if k[0] in families),
                  key=lambda k: (families.index(k[0]), order.get(k[1], 1), k[1]))  # fmt: skip
    return [latest[k] for k in keys]


def newest_real_record(path: str, like: dict) -> dict | None:
    """The last real-images record in ``path`` scored as ``like`` (``num``, ``draws``,
    ``num_ref``, ``seed``), or None."""
    fields = ("num", "draws", "num_ref", "seed")
    found = [r for r in json_objects(path) if r.get("benchmark") == REAL_BENCHMARK
             and all(r.get(k) == like.get(k) for k in fields)]  # fmt: skip
    return found[-1] if found else None


def summary_lines(records: list[dict], real: dict | None = None) -> list[str]:
    """One line per family with a jaxgen and a ``pytorch`` record: how many metrics jaxgen
    leads on clearly (:func:`comparison`), and the ones where it is level or behind; with the
    ``real`` images' record, the level metrics where neither model is behind the real images."""
    by_key = {(r["family"], r["implementation"]): r for r in records}
    lines = []
    for family in dict.fromkeys(r["family"] for r in records):
        jaxgen, peer = by_key.get((family, "jaxgen")), by_key.get((family, "pytorch"))
        if jaxgen is None or peer is None:
            continue
        ahead, level, behind = comparison(jaxgen, peer)
        total = len(ahead) + len(level) + len(behind)
        line = f"{family}: jaxgen ahead on {len(ahead)} of {total}"
        if level:
            line += f"; level (within {CLEAR_LEAD_SE:g} standard errors) on {', '.join(level)}"
            if real is not None:
                behind_real = set(comparison(jaxgen, real)[2]) | set(comparison(peer, real)[2])
                floor = [k for k in level if k in real and k not in behind_real]
                if floor:
                    line += f" ({', '.join(floor)}: both as good as held-out real images)"
        lines.append(line + (f"; behind on {', '.join(behind)}" if behind else ""))
    return lines


def print_table(records: list[dict], real: dict | None = None) -> None:
    first = records[0]
    draws = max(int(r.get("draws") or 1) for r in records)
    spread = (f"; each cell the mean over {draws} independent draws ± their standard deviation"
              if draws > 1 else "")  # fmt: skip
    machines = list(dict.fromkeys(r.get("hardware", "unknown hardware") for r in records))
    where = machines[0] if len(machines) == 1 else (
        " and ".join(machines) + " (each record's hardware says which)")  # fmt: skip
    print(f"\n{where}; {first.get('num')} samples per draw "
          f"against the first {first.get('num_ref')} Fashion-MNIST test images; each metric: "
          f"domain / contrastive features{spread}\n")  # fmt: skip
    print(markdown_table(records + ([real] if real else [])))
    print("\n" + "\n".join(summary_lines(records, real)))


def _value(record: dict, key: str) -> str:
    value, std = record.get(key), record.get(f"{key}_std")
    if value is None:
        return "-"
    return f"{value:.3g}" if std is None else f"{value:.3g}±{std:.1g}"


def _cell(record: dict, key: str) -> str:
    return " / ".join(_value(record, f"{key}_{x}") for x in FEATURES)


def markdown_table(records: list[dict]) -> str:
    """One row per record: family, implementation, minutes, steps, params, and each metric of
    :data:`COLUMNS` as ``domain / contrastive`` (``mean±std`` over draws when it has several)."""
    head = ["family", "implementation", "minutes", "steps", "params"] + [c[0] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in records:
        params = "-" if r.get("params") is None else f"{r['params']:,}"
        minutes = "-" if r.get("minutes") is None else f"{r['minutes']:.2f}"
        steps = "-" if r.get("steps") is None else str(r["steps"])
        cells = [r["family"], r["implementation"], minutes, steps, params]
        lines.append("| " + " | ".join(cells + [_cell(r, key) for _, key in COLUMNS]) + " |")
    return "\n".join(lines)
