"""The ten comparison tables: which runs each lists and which columns it shows.

Each builder takes the runs (:class:`~experiments.rundir.RunRecord`) and ``by_path`` (a run's
normalised path -> its record, to find fine-tuning sources) and returns a
:class:`~experiments.cells.Table`; :func:`build_tables` returns all ten in their order.
Inference time comes from benchmark records instead (:mod:`experiments.bench`).
"""

from __future__ import annotations

import os

from experiments.cells import Column, Table
from experiments.run_values import (
    architecture,
    cfg,
    ev,
    ev_pct,
    features,
    is_generator,
    last,
    last_pct,
    last_step,
    likelihood_bound,
    sample_steps,
    sampler,
    source_run,
    training,
)
from experiments.rundir import RunRecord

DEFAULT_DOMAINS = ("fashion_mnist", "digits", "sprites")


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
        Column("bits/token", "float", "eval bits_per_token", ev("bits_per_token")),
        Column("final loss", "float", "last metrics.jsonl loss", last("loss")),
        STEP,
    ]  # fmt: skip
    return _table(
        "model_comparison", 1, "Model comparison",
        "One row per run: family, network, training strategy and headline metrics "
        "(FD and classifier score of samples, test bits/dim; bits/token for a token prior, "
        "which scores its tokenizer's tokens, not pixels).", cols, runs,
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
        Column("sampler", "text", "config sample.sampler", sampler),
        Column("sampler steps", "text", "config sample.steps (0: the sampler's default)",
               sample_steps),
        Column("features", "text", "eval/evaluators.json fd extractor", features("fd", "quality")),
        Column("n", "int", "eval fd_num_samples", ev("fd_num_samples")),
        Column("FD", "float", "eval fd", ev("fd")),
        Column("KID", "float", "eval kid", ev("kid")),
        Column("precision", "float", "eval precision", ev("precision")),
        Column("recall", "float", "eval recall", ev("recall")),
        Column("FD (contrastive)", "float", "eval fd_contrastive (evals.quality.features2)",
               ev("fd_contrastive")),
        Column("broken (%)", "pct", "100 x eval broken_share (samples with realism < 1)",
               ev_pct("broken_share")),
        Column("classifier score", "float", "eval classifier_score", ev("classifier_score")),
        STEP,
    ]  # fmt: skip
    rows = _runs_with(runs, ev("fd"), ev("kid"), ev("precision"), ev("classifier_score"))
    return _table(
        "sample_quality", 3, "Sample quality",
        "Fréchet distance and KID (lower is better), precision and recall (k=3), the FD in the "
        "second (contrastive) features, the share of broken samples (off the real manifold), "
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
        Column("bits/token", "float", "eval bits_per_token", ev("bits_per_token")),
        STEP,
    ]  # fmt: skip
    gen = [r for r in runs if r.family and is_generator(r)]
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
        Column("bits/token", "float", "eval bits_per_token", ev("bits_per_token")),
        Column("tokenizer recon. MSE", "float", "eval recon_mse", ev("recon_mse")),
        Column("n", "int", "eval likelihood_num_examples", ev("likelihood_num_examples")),
        STEP,
    ]  # fmt: skip
    rows = _runs_with(runs, ev("bits_per_dim"), ev("nll_iwae"), ev("elbo"), ev("bits_per_token"))
    return _table(
        "likelihoods", 10, "Likelihoods",
        "Negative log-likelihood of the test split in bits/dim (lower is better): exact for "
        "PixelCNNs, an upper bound (IWAE for VAEs, the variational bound for diffusion). A "
        "token prior reports bits/token instead: exact for its tokenizer's tokens, not a "
        "pixel likelihood (the tokenizer is lossy; its test reconstruction MSE, pixels in "
        "[0, 1], is beside it).",
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


# --- all together ------------------------------------------------------------------------------
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
