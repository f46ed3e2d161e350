"""Table cells and their formatting: :class:`Column`, :class:`Table`, Markdown and CSV.

A cell's ``kind`` decides how it is shown: ``text`` as is, ``int`` with thousands separators,
``float`` with four significant digits, ``pct`` (a percentage) with one decimal. A missing
value (None) is :data:`MISSING` in Markdown and an empty field in CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable
from typing import Any

MISSING = "—"


@dataclasses.dataclass(frozen=True)
class Column:
    """A table column: ``kind`` is ``text``, ``int``, ``float`` or ``pct`` (a percentage);
    ``source`` says which file and key the value comes from."""

    name: str
    kind: str
    source: str
    get: Callable[[Any], Any]


def fmt(value: Any, kind: str) -> str:
    """A cell as shown in Markdown and HTML."""
    if value is None:
        return MISSING
    if kind == "text":
        return str(value)
    if kind == "int":
        return f"{int(value):,}"
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if kind == "pct":
        return f"{v:.1f}"
    if v != 0 and abs(v) >= 1000:
        return f"{v:,.1f}"
    return f"{v:.4g}"


def csv_cell(value: Any, kind: str) -> str:
    """A cell as written to CSV: full precision, empty when missing."""
    if value is None:
        return ""
    if kind == "int":
        return str(int(value))
    if kind in ("float", "pct"):
        return repr(float(value))
    return str(value)


@dataclasses.dataclass
class Table:
    """One numbered table: its columns and rows of raw values (formatted when written)."""

    key: str
    number: int
    title: str
    note: str
    columns: list[Column]
    rows: list[list[Any]]

    def header(self) -> list[str]:
        return [c.name for c in self.columns]

    def formatted(self) -> list[list[str]]:
        cols = self.columns
        return [[fmt(v, c.kind) for v, c in zip(row, cols, strict=True)] for row in self.rows]

    def markdown(self) -> str:
        align = ["---:" if c.kind in ("int", "float", "pct") else "---" for c in self.columns]
        lines = [f"## Table {self.number}. {self.title}", "", self.note, ""]
        lines.append("| " + " | ".join(self.header()) + " |")
        lines.append("| " + " | ".join(align) + " |")
        for row in self.formatted():
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        if not self.rows:
            lines.append("| " + " | ".join(MISSING for _ in self.columns) + " |")
        sources = "; ".join(f"{c.name}: {c.source}" for c in self.columns if c.source)
        lines += ["", f"<sub>Columns: {sources}.</sub>", ""]
        return "\n".join(lines)

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.header())
        for row in self.rows:
            writer.writerow([csv_cell(v, c.kind) for v, c in zip(row, self.columns, strict=True)])
        return buf.getvalue()
