"""The ten comparison tables, as Markdown and CSV, from run directories and benchmark files.

  python -m experiments.tables --runs runs/experiments --out experiments/results
  python experiments/tables.py --runs runs/vae_beta --out /tmp/tables --bench benchmarks/results

Every run directory under ``--runs`` (any depth; one with a ``config.json``) is a row
candidate. Values come from the run's ``config.json``, its newest ``eval/step_<N>.json``
(``eval/evaluators.json`` for the feature extractor), the last ``metrics.jsonl`` row carrying a
key, the runs' ``samples/timing_<N>.json`` and the benchmark JSON records of ``--bench``
(:mod:`experiments.bench`; schema in ``experiments/README.md``). A missing value is ``—`` in
Markdown and an empty field in CSV; nothing is estimated or filled in. Writes
``<out>/tables.md`` (all tables) and ``<out>/<table>.md`` / ``<out>/<table>.csv`` for each of:

 1. model_comparison   2. parameters     3. sample_quality    4. diversity
 5. inference_time     6. transfer       7. domains           8. discriminator_attributions
 9. misclassified_as_real                10. likelihoods
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.bench import load_bench, run_timing_records
from experiments.cells import MISSING, Column, Table, csv_cell, fmt
from experiments.run_values import (
    architecture,
    cfg,
    describe,
    ev,
    ev_pct,
    features,
    last,
    last_pct,
    last_step,
    likelihood_bound,
    sample_steps,
    source_run,
    training,
)
from experiments.rundir import RunRecord, find_runs
from experiments.table_defs import DEFAULT_DOMAINS, build_tables
from jaxgen.errors import UserError

__all__ = [  # the names other modules and tests read from here
    "DEFAULT_DOMAINS", "MISSING", "Column", "RunRecord", "Table", "add_arguments",
    "architecture", "build_tables", "cfg", "csv_cell", "describe", "ev", "ev_pct", "features",
    "file_stem", "fmt", "last", "last_pct", "last_step", "likelihood_bound", "main",
    "sample_steps", "source_run", "tables_for", "training", "write_tables",
]  # fmt: skip


def file_stem(table: Table) -> str:
    return f"{table.number:02d}_{table.key}"


def write_tables(tables: list[Table], out: str, runs_root: str = "") -> list[str]:
    """Writes ``tables.md`` and one ``.md`` and ``.csv`` per table; returns the paths."""
    os.makedirs(out, exist_ok=True)
    written = []
    for t in tables:
        for ext, text in (("md", t.markdown()), ("csv", t.csv())):
            path = os.path.join(out, f"{file_stem(t)}.{ext}")
            with open(path, "w") as f:
                f.write(text)
            written.append(path)
    intro = f"# Tables\n\nBuilt by `python -m experiments.tables` from the runs in `{runs_root}`.\n"
    path = os.path.join(out, "tables.md")
    with open(path, "w") as f:
        f.write(intro + "\n" + "\n".join(t.markdown() for t in tables))
    written.append(path)
    return written


def tables_for(runs_root: str, bench_paths=(), extra_domains=()) -> tuple[list, list[Table]]:
    runs = find_runs(runs_root)
    bench = run_timing_records(runs) + load_bench(list(bench_paths))
    return runs, build_tables(runs, bench, tuple(extra_domains))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", required=True, help="directory holding run directories")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--bench", action="append", default=[], help="benchmark JSON file or dir")
    p.add_argument("--domains", default="", help="extra data sources for Table 7 (comma-sep.)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.tables", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        runs, tables = tables_for(args.runs, args.bench, [d for d in args.domains.split(",") if d])
        write_tables(tables, args.out, args.runs)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"{len(runs)} runs -> {len(tables)} tables in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
