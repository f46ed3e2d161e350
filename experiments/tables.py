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
import csv
import dataclasses
import io
import math
import os
import sys
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.bench import load_bench, run_timing_records
from experiments.rundir import RunRecord, find_runs
from jaxgen.errors import UserError

MISSING = "—"
DEFAULT_DOMAINS = ("fashion_mnist", "digits", "sprites")
NON_GENERATORS = ("classifier", "clip", "style_transfer")


# --- cells ---------------------------------------------------------------------------------
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


# --- values read from a run ------------------------------------------------------------------
def ev(key: str) -> Callable[[RunRecord], float | None]:
    return lambda r: r.eval_value(key)


def ev_pct(key: str) -> Callable[[RunRecord], float | None]:
    return lambda r: None if r.eval_value(key) is None else 100.0 * r.eval_value(key)


def last(key: str) -> Callable[[RunRecord], float | None]:
    return lambda r: None if r.last_metric(key) is None else r.last_metric(key)[1]


def last_pct(key: str) -> Callable[[RunRecord], float | None]:
    return lambda r: None if r.last_metric(key) is None else 100.0 * r.last_metric(key)[1]


def last_step(key: str) -> Callable[[RunRecord], int | None]:
    return lambda r: None if r.last_metric(key) is None else r.last_metric(key)[0]


def cfg(key: str) -> Callable[[RunRecord], Any]:
    def get(r: RunRecord):
        value = r.cfg(key)
        return None if value in (None, "") else value

    return get


def _tuple(value) -> str:
    return "(" + ", ".join(str(v) for v in value) + ")" if isinstance(value, list) else str(value)


def architecture(r: RunRecord) -> str | None:
    """A short description of the network, from ``config.json`` ``model.*``."""
    m = r.cfg("model", {}) or {}
    f = r.family
    if f == "vae":
        latent = (
            f"{m['latent_channels']}-channel latent map"
            if m.get("latent_channels")
            else f"latent {m.get('latent_dim')}"
        )
        return f"conv VAE {_tuple(m.get('channels'))}, {latent}"
    if f == "ddpm":
        u = m.get("unet", {}) or {}
        text = f"UNet ch {u.get('ch')} x {_tuple(u.get('ch_mult'))}, {u.get('num_res_blocks')} res"
        return text + (", latent" if m.get("autoencoder") else "")
    if f == "gan":
        return (
            f"{m.get('arch')} (G {m.get('g_width')}, D {m.get('d_width')}, "
            f"D norm {m.get('d_norm')})"
        )
    if f == "pixelcnn":
        v = m.get("variant")
        if v == "pixelcnn_pp":
            return (
                f"PixelCNN++ {m.get('num_levels')}x{m.get('num_resnet')} resnets, "
                f"{m.get('features')} features, {m.get('num_mixtures')} logistics"
            )
        name = {"gated": "Gated PixelCNN", "pixelcnn": "PixelCNN"}.get(v, str(v))
        return f"{name}, {m.get('num_layers')} layers, {m.get('features')} features"
    if f == "classifier":
        return f"CNN {_tuple(m.get('channels'))}"
    for key in ("arch", "variant", "network", "name"):
        if m.get(key):
            return str(m[key])
    return None


def training(r: RunRecord, runs_by_path: dict[str, RunRecord] | None = None) -> str | None:
    """The training objective and switches, from ``config.json``."""
    f = r.family
    parts = []
    if f == "vae":
        parts.append(f"ELBO, beta={r.cfg('model.beta')}")
    elif f == "ddpm":
        d = r.cfg("model.diffusion", {}) or {}
        process = "EDM" if d.get("process") == "edm" else f"{d.get('schedule')} schedule"
        parts.append(f"{process}, {d.get('prediction')}-prediction")
    elif f == "gan":
        g = r.cfg("gan", {}) or {}
        regs = []
        if r.cfg("model.d_norm") == "spectral":
            regs.append("SN")
        if float(g.get("r1_gamma") or 0) > 0:
            regs.append(f"R1 gamma={g['r1_gamma']}")
        if float(g.get("gp_weight") or 0) > 0:
            regs.append(f"GP lambda={g['gp_weight']}")
        parts.append(f"{g.get('loss')} loss, " + ("+".join(regs) or "no regulariser"))
        parts.append(f"{r.cfg('train.d_steps')} D steps")
    elif f == "pixelcnn":
        parts.append("max. likelihood, teacher forcing")
    elif f == "classifier":
        parts.append("cross-entropy")
    if r.cfg("data.cond") not in (None, "", "none"):
        parts.append(f"cond={r.cfg('data.cond')}")
    if r.cfg("init_from"):
        source = source_run(r, runs_by_path or {})
        parts.append(f"fine-tuned from {source.name if source else r.cfg('init_from')}")
    return ", ".join(parts) or None


def source_run(r: RunRecord, runs_by_path: dict[str, RunRecord]) -> RunRecord | None:
    """The run that ``init_from`` points at (its workdir or one of its checkpoint steps)."""
    path = os.path.normpath(str(r.cfg("init_from") or ""))
    if not path or path == ".":
        return None
    candidates = [path]
    parent = os.path.dirname(path)
    if os.path.basename(parent) == "checkpoints":
        candidates.append(os.path.dirname(parent))
    for c in candidates:
        if c in runs_by_path:
            return runs_by_path[c]
    for c in candidates:  # the runs were moved: match by directory name
        matches = [x for p, x in runs_by_path.items() if os.path.basename(p) == os.path.basename(c)]
        if len(matches) == 1:
            return matches[0]
    return None


def likelihood_bound(r: RunRecord) -> str | None:
    if r.eval_value("bits_per_dim") is None:
        return None
    if r.family == "pixelcnn":
        return "exact"
    if r.family == "vae":
        return f"IWAE, k={r.cfg('model.iwae_k')}"
    if r.family == "ddpm":
        terms = r.cfg("model.vlb_terms")
        return f"VLB, {terms} sampled terms" if terms else "VLB, all terms"
    return None


def features(key: str, eval_type: str) -> Callable[[RunRecord], str | None]:
    """The feature extractor of metric ``key``: ``eval/evaluators.json``, else the config."""

    def get(r: RunRecord):
        info = r.evaluators.get(key)
        if isinstance(info, dict) and info.get("extractor"):
            return str(info["extractor"])
        if r.eval_value(key) is None:
            return None
        for spec in (r.cfg("evals", {}) or {}).values():
            if isinstance(spec, dict) and spec.get("type") == eval_type:
                return spec.get("features") or None
        return None

    return get


def sample_steps(r: RunRecord) -> str | None:
    steps, sampler = r.cfg("sample.steps"), r.cfg("sample.sampler")
    if steps:
        return str(steps)
    return "default" if sampler else None


# --- the tables ------------------------------------------------------------------------------
RUN = Column("run", "text", "directory under --runs", lambda r: r.name)
FAMILY = Column("family", "text", "config family", lambda r: r.family or None)
DATA = Column("data", "text", "config data.name", lambda r: r.data or None)
STEP = Column("step", "int", "N of the newest eval/step_N.json", lambda r: r.eval_step)


def _runs_with(runs, *predicates) -> list[RunRecord]:
    return [r for r in runs if any(p(r) is not None for p in predicates)]


def _table(key, number, title, note, columns, runs) -> Table:
    return Table(key, number, title, note, columns, [[c.get(r) for c in columns] for r in runs])


def model_comparison(runs, by_path) -> Table:
    cols = [
        RUN, FAMILY, DATA,
        Column("architecture", "text", "config model.*", architecture),
        Column("training", "text", "config (loss, schedule, init_from)",
               lambda r: training(r, by_path)),
        Column("train steps", "int", "config train.num_steps", cfg("train.num_steps")),
        Column("batch", "int", "config train.batch_size", cfg("train.batch_size")),
        Column("params", "int", "eval params", ev("params")),
        Column("FD", "float", "eval fd", ev("fd")),
        Column("classifier score", "float", "eval classifier_score", ev("classifier_score")),
        Column("bits/dim", "float", "eval bits_per_dim", ev("bits_per_dim")),
        Column("final loss", "float", "last metrics.jsonl loss", last("loss")),
        STEP,
    ]  # fmt: skip
    return _table(
        "model_comparison", 1, "Model comparison",
        "One row per run: family, network, training strategy and headline metrics "
        "(FD and classifier score of samples, test bits/dim).", cols, runs,
    )  # fmt: skip


def parameters(runs, by_path) -> Table:
    cols = [
        RUN, FAMILY, DATA,
        Column("architecture", "text", "config model.*", architecture),
        Column("image size", "int", "config data.image_size", cfg("data.image_size")),
        Column("params", "int", "eval params", ev("params")),
        Column("params (M)", "float", "eval params / 1e6",
               lambda r: None if r.eval_value("params") is None else r.eval_value("params") / 1e6),
    ]  # fmt: skip
    return _table(
        "parameters", 2, "Parameters",
        "Parameters used to generate (for a GAN: the generator's), counted by the "
        "`params` evaluator.", cols, runs,
    )  # fmt: skip


def sample_quality(runs, by_path) -> Table:
    cols = [
        RUN, FAMILY, DATA,
        Column("sampler", "text", "config sample.sampler", cfg("sample.sampler")),
        Column("sampler steps", "text", "config sample.steps (0: the sampler's default)",
               sample_steps),
        Column("features", "text", "eval/evaluators.json fd extractor", features("fd", "quality")),
        Column("n", "int", "eval fd_num_samples", ev("fd_num_samples")),
        Column("FD", "float", "eval fd", ev("fd")),
        Column("KID", "float", "eval kid", ev("kid")),
        Column("precision", "float", "eval precision", ev("precision")),
        Column("recall", "float", "eval recall", ev("recall")),
        Column("classifier score", "float", "eval classifier_score", ev("classifier_score")),
        STEP,
    ]  # fmt: skip
    rows = _runs_with(runs, ev("fd"), ev("kid"), ev("precision"), ev("classifier_score"))
    return _table(
        "sample_quality", 3, "Sample quality",
        "Fréchet distance and KID (lower is better), precision and recall (k=3), "
        "classifier score, of `n` samples against the eval split.", cols, rows,
    )  # fmt: skip


def diversity(runs, by_path) -> Table:
    cols = [
        RUN, FAMILY, DATA,
        Column("features", "text", "eval/evaluators.json diversity extractor",
               features("diversity", "diversity")),
        Column("n", "int", "eval diversity_num_samples", ev("diversity_num_samples")),
        Column("pairwise distance", "float", "eval diversity", ev("diversity")),
        Column("within class", "float", "eval diversity_within_class",
               ev("diversity_within_class")),
        Column("real data", "float", "eval diversity_real", ev("diversity_real")),
        Column("class coverage", "float", "eval class_coverage", ev("class_coverage")),
        Column("class entropy", "float", "eval class_entropy", ev("class_entropy")),
        STEP,
    ]  # fmt: skip
    rows = _runs_with(runs, ev("diversity"), ev("class_coverage"), ev("class_entropy"))
    return _table(
        "diversity", 4, "Diversity",
        "Mean pairwise feature distance of samples (overall, within predicted classes, and of "
        "as many real images), and the class coverage and entropy of the samples' predicted "
        "labels.", cols, rows,
    )  # fmt: skip


def transfer(runs, by_path) -> Table:
    def start(r):
        if not r.cfg("init_from"):
            return "scratch"
        src = source_run(r, by_path)
        if src is None:
            return f"fine-tuned from {r.cfg('init_from')}"
        return f"fine-tuned from {src.data} ({src.name})"

    cols = [
        Column("target data", "text", "config data.name", lambda r: r.data or None),
        FAMILY,
        Column("train steps", "int", "config train.num_steps", cfg("train.num_steps")),
        Column("start", "text", "config init_from", start),
        RUN,
        Column("FD", "float", "eval fd", ev("fd")),
        Column("KID", "float", "eval kid", ev("kid")),
        Column("bits/dim", "float", "eval bits_per_dim", ev("bits_per_dim")),
        Column("final loss", "float", "last metrics.jsonl loss", last("loss")),
        STEP,
    ]

    def same_setting(r):
        return (r.family, r.data, r.cfg("data.image_size"), r.cfg("train.num_steps"))

    tuned = [r for r in runs if r.cfg("init_from")]
    rows, seen = [], set()
    for t in tuned:
        for r in [t] + [
            s for s in runs if not s.cfg("init_from") and same_setting(s) == same_setting(t)
        ]:
            if r.name not in seen:
                seen.add(r.name)
                rows.append(r)
    return _table(
        "transfer", 6, "Transfer learning",
        "Runs fine-tuned from another run (`init_from`) next to runs trained from scratch on "
        "the same data, image size and number of steps.", cols, rows,
    )  # fmt: skip


def domains(runs, by_path, extra_domains=()) -> Table:
    cols = [
        FAMILY,
        Column("data", "text", "config data.name", lambda r: r.data or None),
        Column("image size", "int", "config data.image_size", cfg("data.image_size")),
        RUN,
        Column("features", "text", "eval/evaluators.json fd extractor", features("fd", "quality")),
        Column("FD", "float", "eval fd", ev("fd")),
        Column("KID", "float", "eval kid", ev("kid")),
        Column("precision", "float", "eval precision", ev("precision")),
        Column("recall", "float", "eval recall", ev("recall")),
        Column("class coverage", "float", "eval class_coverage", ev("class_coverage")),
        Column("bits/dim", "float", "eval bits_per_dim", ev("bits_per_dim")),
        STEP,
    ]  # fmt: skip
    gen = [r for r in runs if r.family and r.family not in NON_GENERATORS]
    order = list(DEFAULT_DOMAINS)
    for d in list(extra_domains) + sorted({r.data for r in gen}):
        if d and d not in order:
            order.append(d)
    rows = []
    for family in sorted({r.family for r in gen}):
        for d in order:
            matching = [r for r in gen if r.family == family and r.data == d]
            if matching:
                rows += [[c.get(r) for c in cols] for r in matching]
            else:
                rows.append([family, d] + [None] * (len(cols) - 2))
    note = (
        f"Every generator run by family and data source ({', '.join(order)}); a domain a "
        "family has no run on is a row of —."
    )
    return Table("domains", 7, "Image domains", note, cols, rows)


def discriminator_attributions(runs, by_path) -> Table:
    cols = [
        RUN, FAMILY, DATA,
        Column("D correct on real (%)", "pct", "100 x last metrics.jsonl d_acc_real",
               last_pct("d_acc_real")),
        Column("D correct on generated (%)", "pct", "100 x last metrics.jsonl d_acc_fake",
               last_pct("d_acc_fake")),
        Column("D step", "int", "step of that metrics.jsonl row", last_step("d_acc_real")),
        Column("C2ST accuracy (%)", "pct", "100 x eval c2st_accuracy", ev_pct("c2st_accuracy")),
        Column("C2ST n", "int", "eval c2st_accuracy_num_samples",
               ev("c2st_accuracy_num_samples")),
        STEP,
    ]  # fmt: skip
    rows = _runs_with(runs, last("d_acc_real"), last("d_acc_fake"), ev("c2st_accuracy"))
    return _table(
        "discriminator_attributions", 8, "Correct real/generated attributions (%)",
        "The GAN discriminator's accuracy on real and on generated training batches (last "
        "logged window), and the test accuracy of a fresh classifier trained to tell held-out "
        "real images from samples (C2ST; 50% is ideal).", cols, rows,
    )  # fmt: skip


def misclassified_as_real(runs, by_path) -> Table:
    cols = [
        RUN, FAMILY, DATA,
        Column("C2ST: generated called real (%)", "pct", "100 x eval c2st_fooled",
               ev_pct("c2st_fooled")),
        Column("C2ST n", "int", "eval c2st_accuracy_num_samples",
               ev("c2st_accuracy_num_samples")),
        STEP,
        Column("D: generated called real (%)", "pct", "100 x last metrics.jsonl d_fake_called_real",
               last_pct("d_fake_called_real")),
        Column("D step", "int", "step of that metrics.jsonl row", last_step("d_fake_called_real")),
    ]  # fmt: skip
    rows = _runs_with(runs, ev("c2st_fooled"), last("d_fake_called_real"))
    return _table(
        "misclassified_as_real", 9, "Generated images misclassified as real (%)",
        "Share of generated images the two-sample-test classifier calls real, and share the "
        "GAN discriminator calls real in training.", cols, rows,
    )  # fmt: skip


def likelihoods(runs, by_path) -> Table:
    cols = [
        RUN, FAMILY, DATA,
        Column("bound", "text", "config family (+ model.iwae_k / model.vlb_terms)",
               likelihood_bound),
        Column("bits/dim", "float", "eval bits_per_dim", ev("bits_per_dim")),
        Column("ELBO bits/dim", "float", "eval elbo_bits_per_dim", ev("elbo_bits_per_dim")),
        Column("NLL IWAE (nats)", "float", "eval nll_iwae", ev("nll_iwae")),
        Column("ELBO (nats)", "float", "eval elbo", ev("elbo")),
        Column("n", "int", "eval likelihood_num_examples", ev("likelihood_num_examples")),
        STEP,
    ]  # fmt: skip
    rows = _runs_with(runs, ev("bits_per_dim"), ev("nll_iwae"), ev("elbo"))
    return _table(
        "likelihoods", 10, "Likelihoods",
        "Negative log-likelihood of the test split in bits/dim (lower is better): exact for "
        "PixelCNNs, an upper bound (IWAE for VAEs, the variational bound for diffusion).",
        cols, rows,
    )  # fmt: skip


# --- benchmarks ----------------------------------------------------------------------------------
BENCH_KEYS = ("config", "sampler", "steps", "batch_size")


def inference_time(bench: list[dict]) -> Table:
    recs = [r for r in bench if r.get("kind", "sample") in ("sample", "inference")]
    hardware = sorted({r["hardware"] for r in recs})
    keys: list[tuple] = []
    cells: dict[tuple, dict[str, float]] = {}
    for r in recs:
        key = tuple(r.get(k) for k in BENCH_KEYS)
        if key not in cells:
            keys.append(key)
            cells[key] = {}
        cells[key][r["hardware"]] = float(r["images_per_sec"])  # a repeated record: the last wins
    cols = [
        Column("run / config", "text", "run name or bench config", lambda row: row[0]),
        Column("sampler", "text", "bench sampler", lambda row: row[1]),
        Column("steps", "int", "bench steps", lambda row: row[2]),
        Column("batch", "int", "bench batch_size", lambda row: row[3]),
    ]
    for hw in hardware:
        cols.append(
            Column(f"{hw} (images/s)", "float", "bench images_per_sec",
                   lambda row, hw=hw: cells[row].get(hw))
        )  # fmt: skip
    rows = [[c.get(key) for c in cols] for key in keys]
    return Table(
        "inference_time", 5, "Inference throughput per hardware",
        "Sampling throughput in images per second (time per image = 1 / throughput), compiled, "
        "from each run's `samples/timing_<N>.json` (`--mode=sample`) and the benchmark JSON "
        "records given with `--bench`, one column per `hardware` string.",
        cols, rows,
    )  # fmt: skip


# --- all together ---------------------------------------------------------------------------------
def build_tables(
    runs: list[RunRecord], bench: list[dict] = (), extra_domains: tuple[str, ...] = ()
) -> list[Table]:
    by_path = {os.path.normpath(r.path): r for r in runs}
    return [
        model_comparison(runs, by_path),
        parameters(_runs_with(runs, ev("params")), by_path),
        sample_quality(runs, by_path),
        diversity(runs, by_path),
        inference_time(list(bench)),
        transfer(runs, by_path),
        domains(runs, by_path, extra_domains),
        discriminator_attributions(runs, by_path),
        misclassified_as_real(runs, by_path),
        likelihoods(runs, by_path),
    ]


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
