"""A static HTML report beside the tables: tables, sample grids, interpolations, training curves.

  python -m experiments.report --runs runs/experiments --out experiments/results

Writes everything :mod:`experiments.tables` writes, plus ``<out>/report.html`` and
``<out>/images/<run>/`` (copies of each run's newest ``samples/samples_<N>.png`` or
``samples/step_<N>.png`` grid, ``samples/interpolation_<N>.png`` strip and ``stylized.png``).
Training curves are inline SVG drawn from ``metrics.jsonl``. The page is self-contained: no
external URL, no script but a few lines that record, as ``data-images-loaded="<loaded>/<all>"``
and ``data-js-errors`` on ``<body>``, whether every image decoded (the tests read them).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
import urllib.parse

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import run_values
from experiments import tables as tables_lib
from experiments.rundir import RunRecord
from jaxgen.errors import UserError

COLORS = ("#1f5fbf", "#d1495b", "#2a9d4b", "#8a5cc2")

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 2px 6px; }
th { background: #eee; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note, .sources { color: #555; font-size: 0.85em; max-width: 70em; }
.run { border-top: 1px solid #ccc; margin-top: 1.5em; padding-top: 0.5em; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 0.8em; color: #555; }
img.grid { image-rendering: pixelated; width: 280px; }
img.strip { image-rendering: pixelated; width: 560px; }
svg text { font-size: 10px; fill: #333; }
"""

SCRIPT = """
(function () {
  var errors = [];
  window.addEventListener('error', function (e) { errors.push(String(e.message || e)); });
  window.addEventListener('load', function () {
    var images = Array.prototype.slice.call(document.images);
    var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
    document.body.setAttribute('data-images-loaded', ok.length + '/' + images.length);
    document.body.setAttribute('data-js-errors', String(errors.length));
  });
})();
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def anchor(name: str) -> str:
    return "run-" + "".join(c if c.isalnum() else "-" for c in name)


# --- training curves ------------------------------------------------------------------------
def _tick(v: float) -> str:
    return f"{v:.4g}"


def svg_chart(title: str, series: dict[str, list[tuple[int, float]]], w=360, h=170) -> str:
    """An inline SVG line chart of ``series`` (label -> [(step, value)]); '' when empty."""
    series = {k: v for k, v in series.items() if len(v) >= 1}
    if not series:
        return ""
    xs = [s for pts in series.values() for s, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    left, right, top, bottom = 52, 10, 18, 28
    pw, ph = w - left - right, h - top - bottom

    def px(x):
        return left + (x - x0) / (x1 - x0) * pw

    def py(y):
        return top + (y1 - y) / (y1 - y0) * ph

    parts = [
        f'<svg width="{w}" height="{h}" role="img" aria-label="{esc(title)}">',
        f'<text x="{left}" y="12">{esc(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{_tick(y1)}</text>',
        f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">{_tick(y0)}</text>',
        f'<text x="{left}" y="{h - 8}">{x0}</text>',
        f'<text x="{left + pw}" y="{h - 8}" text-anchor="end">step {x1}</text>',
    ]
    for i, (label, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{px(s):.1f},{py(y):.1f}" for s, y in pts)
        if len(pts) == 1:
            s, y = pts[0]
            parts.append(f'<circle cx="{px(s):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}"/>')
        else:
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>'
            )
        if len(series) > 1:
            parts.append(
                f'<text x="{left + pw - 4}" y="{top + 12 + 12 * i}" text-anchor="end" '
                f'fill="{color}" style="fill:{color}">{esc(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def curves(run: RunRecord) -> list[str]:
    charts = [svg_chart("training loss (metrics.jsonl loss)", {"loss": run.curve("loss")})]
    acc = {k: run.curve(k) for k in ("d_acc_real", "d_acc_fake")}
    if any(acc.values()):
        charts.append(svg_chart("discriminator accuracy", acc))
    for key in ("content_loss", "style_loss"):
        if run.curve(key):
            charts.append(svg_chart(key, {key: run.curve(key)}))
    return [c for c in charts if c]


# --- images -----------------------------------------------------------------------------------
def run_images(run: RunRecord) -> list[tuple[str, str, str]]:
    """``(kind, caption, source path)`` of the pictures shown for ``run``."""
    out = []
    grid = run.images("samples_{step}.png") or run.images("step_{step}.png")
    if grid:
        step, path = grid[-1]
        out.append(("grid", f"samples at step {step} ({os.path.basename(path)})", path))
    strip = run.images("interpolation_{step}.png")
    if strip:
        step, path = strip[-1]
        out.append(("strip", f"latent interpolation at step {step}", path))
    stylized = os.path.join(run.path, "stylized.png")
    if os.path.isfile(stylized):
        out.append(("grid", "stylized.png", stylized))
    return out


def copy_images(run: RunRecord, out: str) -> list[tuple[str, str, str]]:
    """Copies the run's pictures to ``<out>/images/<run>/``; returns (kind, caption, href)."""
    rel_dir = os.path.join("images", run.name.replace("/", "__"))
    shown = []
    for kind, caption, path in run_images(run):
        os.makedirs(os.path.join(out, rel_dir), exist_ok=True)
        rel = os.path.join(rel_dir, os.path.basename(path))
        shutil.copyfile(path, os.path.join(out, rel))
        shown.append((kind, caption, urllib.parse.quote(rel.replace(os.sep, "/"))))
    return shown


# --- page --------------------------------------------------------------------------------------
def prose(text: str) -> str:
    """Escaped ``text`` with Markdown `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))


def table_html(t: tables_lib.Table) -> str:
    stem = tables_lib.file_stem(t)
    head = "".join(f"<th>{esc(c.name)}</th>" for c in t.columns)
    body = []
    rows = t.formatted() or [[tables_lib.MISSING] * len(t.columns)]
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(v)}</td>' if c.kind != "text" else f"<td>{esc(v)}</td>"
            for v, c in zip(row, t.columns, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    sources = "; ".join(f"{c.name}: {c.source}" for c in t.columns if c.source)
    return (
        f'<section id="{esc(stem)}"><h2>Table {t.number}. {esc(t.title)}</h2>'
        f'<p class="note">{prose(t.note)} <a href="{esc(stem)}.csv">CSV</a> · '
        f'<a href="{esc(stem)}.md">Markdown</a></p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f'<p class="sources">Columns: {esc(sources)}.</p></section>'
    )


def run_html(run: RunRecord, out: str, by_path: dict) -> str:
    family = run_values.describe(run)
    facts = [
        ("family", run.family or None),
        ("data", run.data or None),
        ("architecture", family.architecture),
        ("training", run_values.training(run, by_path)),
        ("sampler", family.sampler),
        ("sampler steps", family.sampler_steps),
        ("eval step", run.eval_step),
    ]
    shared = run.sweep.get("shares_training_with") if run.sweep else ""
    if shared:
        facts.append(("checkpoints of", shared))
    desc = run.sweep.get("description") if run.sweep else ""
    parts = [f'<section class="run" id="{anchor(run.name)}"><h3>{esc(run.name)}</h3>']
    if desc:
        parts.append(f"<p>{esc(desc)}</p>")
    parts.append(
        '<p class="note">'
        + " · ".join(f"{k}: {esc(v if v is not None else tables_lib.MISSING)}" for k, v in facts)
        + "</p>"
    )
    figures = []
    for kind, caption, href in copy_images(run, out):
        figures.append(
            f'<figure><img class="{kind}" src="{esc(href)}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )
    figures += [f"<figure>{svg}</figure>" for svg in curves(run)]
    if figures:
        parts.append(f'<div class="figures">{"".join(figures)}</div>')
    else:
        parts.append('<p class="note">No samples or training curves in this run directory.</p>')
    parts.append("</section>")
    return "".join(parts)


def render(runs: list[RunRecord], tables: list[tables_lib.Table], out: str, title: str) -> str:
    by_path = {os.path.normpath(r.path): r for r in runs}
    toc = "".join(
        f'<li><a href="#{esc(tables_lib.file_stem(t))}">Table {t.number}. {esc(t.title)}</a></li>'
        for t in tables
    )
    run_toc = " · ".join(f'<a href="#{anchor(r.name)}">{esc(r.name)}</a>' for r in runs)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(title)}</title><style>{STYLE}</style>",
            f"<script>{SCRIPT}</script></head><body>",
            f"<h1>{esc(title)}</h1>",
            f'<p class="note">{len(runs)} runs. Every number is read from the run directories '
            "(config.json, eval/step_N.json, metrics.jsonl) and benchmark files; — marks a "
            "value the files do not have.</p>",
            f"<h2>Tables</h2><ol>{toc}</ol>",
            f"<p>Runs: {run_toc or tables_lib.MISSING}</p>",
            *[table_html(t) for t in tables],
            "<h2>Runs</h2>",
            *[run_html(r, out, by_path) for r in runs],
            "</body></html>",
            "",
        ]
    )


def write_report(runs_root: str, out: str, bench=(), extra_domains=(), title: str = "") -> str:
    """Writes the tables and ``<out>/report.html``; returns the report's path."""
    runs, tables = tables_lib.tables_for(runs_root, bench, extra_domains)
    tables_lib.write_tables(tables, out, runs_root)
    images = os.path.join(out, "images")
    if os.path.isdir(images):
        shutil.rmtree(images)  # pictures of runs that are gone must not linger
    page = render(runs, tables, out, title or f"jaxgen experiments: {runs_root}")
    path = os.path.join(out, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    tables_lib.add_arguments(p)
    p.add_argument("--title", default="", help="page title")
    args = p.parse_args(argv)
    try:
        domains = [d for d in args.domains.split(",") if d]
        path = write_report(args.runs, args.out, args.bench, domains, args.title)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
