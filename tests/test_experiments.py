"""Sweeps, tables and report of ``experiments/``.

Most tests build run directories by hand (config.json, metrics.jsonl, eval/step_N.json,
sample PNGs) and stand in for the launcher, so they need no JAX; one end-to-end test runs a
two-run ``preset=smoke`` VAE sweep through the real launcher.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import report, rundir, sweep, tables
from experiments.spec import Ref, Run, load_sweep, sampling_variant, validate
from jaxgen.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
MISSING = tables.MISSING


# --- fixture run directories -------------------------------------------------------------------
def write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f)


def write_png(path, size=(12, 12)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(len(path))
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def make_config(family, data_name="fashion_mnist", **sections):
    config = {
        "family": family,
        "init_from": "",
        "seed": 0,
        "data": {"name": data_name, "image_size": 28, "cond": "none"},
        "train": {"num_steps": 10, "batch_size": 64},
        "sample": {"sampler": "", "steps": 0, "num": 16},
        "model": {},
        "evals": {},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    return config


def make_run(root, name, config, evals=None, metrics=(), images=(), evaluators=None):
    path = os.path.join(root, name)
    write_json(os.path.join(path, "config.json"), config)
    for step, values in (evals or {}).items():
        write_json(rundir.eval_path(path, step), values)
    if evaluators:
        write_json(os.path.join(path, "eval", "evaluators.json"), evaluators)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for row in metrics:
            f.write(json.dumps(row) + "\n")
    for image in images:
        write_png(os.path.join(path, "samples", image))
    return path


VAE_MODEL = {"channels": [32, 64], "latent_dim": 32, "latent_channels": 0, "beta": 1.0, "iwae_k": 8}
VAE_EVAL = {
    "bits_per_dim": 4.8775907,
    "elbo": -2650.648,
    "elbo_bits_per_dim": 4.9123,
    "nll_iwae": 2650.6164,
    "likelihood_num_examples": 16,
    "params": 67610,
}
GAN_EVAL = {
    "fd": 123.456789,
    "kid": 0.0123456,
    "precision": 0.61,
    "recall": 0.42,
    "fd_num_samples": 500,
    "classifier_score": 7.25,
    "class_coverage": 0.9,
    "class_entropy": 2.1,
    "classifier_score_num_samples": 500,
    "diversity": 10.5,
    "diversity_real": 11.25,
    "diversity_within_class": 8.75,
    "diversity_num_samples": 500,
    "c2st_accuracy": 0.8125,
    "c2st_fooled": 0.1875,
    "c2st_accuracy_num_samples": 400,
    "params": 1234567,
}
GAN_METRICS = [
    {"step": 5, "loss": 2.0, "d_acc_real": 0.5, "d_acc_fake": 0.5, "d_fake_called_real": 0.5},
    {"step": 10, "loss": 1.5, "d_acc_real": 0.7, "d_acc_fake": 0.6, "d_fake_called_real": 0.4},
    # logged again after a resume from the step-5 checkpoint: this row replaces the one above
    {
        "step": 10,
        "loss": 1.25,
        "d_acc_real": 0.75,
        "d_acc_fake": 0.625,
        "d_fake_called_real": 0.375,
    },
]
DDPM_OLD_EVAL = {"fd": 999.0, "kid": 0.9, "bits_per_dim": 9.0}
DDPM_EVAL = {"fd": 55.5, "kid": 0.004, "precision": 0.7, "recall": 0.5, "bits_per_dim": 3.875,
             "fd_num_samples": 256, "params": 4000000}  # fmt: skip


@pytest.fixture
def fixture_runs(tmp_path):
    """Six hand-made runs under ``tmp_path/runs`` (two nested one level deeper) + bench files."""
    root = str(tmp_path / "runs")
    make_run(
        root, "vae_b1", make_config("vae", model=VAE_MODEL), {10: VAE_EVAL},
        [{"step": 5, "loss": 3.0, "steps_per_sec": 9.0}, {"step": 10, "loss": 2.5}],
        ["step_10.png", "samples_10.png", "interpolation_10.png"],
    )  # fmt: skip
    gan_model = {"arch": "dcgan", "g_width": 32, "d_width": 32, "d_norm": "spectral"}
    make_run(
        root, "gan_hinge",
        make_config("gan", model=gan_model, gan={"loss": "hinge", "r1_gamma": 0.0,
                    "gp_weight": 0.0}, train={"d_steps": 1}),
        {10: GAN_EVAL}, GAN_METRICS, ["samples_10.png"],
        evaluators={"fd": {"extractor": "domain:fashion_mnist", "num_samples": 500}},
    )  # fmt: skip
    ddpm_model = {
        "unet": {"ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1},
        "diffusion": {"process": "vp", "schedule": "cosine", "prediction": "v"},
        "vlb_terms": 50,
    }
    make_run(
        root, "ddpm_cos",
        make_config("ddpm", model=ddpm_model, sample={"sampler": "ddim", "steps": 20},
                    evals={"quality": {"type": "quality", "features": "domain"}}),
        {5: DDPM_OLD_EVAL, 10: DDPM_EVAL}, [{"step": 10, "loss": 0.03125}], ["step_10.png"],
    )  # fmt: skip
    for step, speed in ((5, 1.0), (10, 8.0)):  # only the newest timing file counts
        write_json(
            os.path.join(root, "ddpm_cos", "samples", f"timing_{step}.json"),
            {"kind": "sample", "hardware": "2-core CPU", "images_per_sec": speed,
             "sampler": "ddim", "steps": 20, "batch_size": 64, "step": step},
        )  # fmt: skip
    tl = os.path.join(root, "transfer")
    digits28 = {"name": "digits", "image_size": 28}
    make_run(tl, "src", make_config("vae", model=VAE_MODEL), {10: dict(VAE_EVAL, bits_per_dim=4.5)})
    make_run(
        tl, "ft", make_config("vae", model=VAE_MODEL, data=digits28,
                              init_from=os.path.join(tl, "src")),
        {10: dict(VAE_EVAL, bits_per_dim=2.25)}, [{"step": 10, "loss": 0.5}],
    )  # fmt: skip
    make_run(
        tl, "scratch", make_config("vae", model=VAE_MODEL, data=digits28),
        {10: dict(VAE_EVAL, bits_per_dim=2.75)}, [{"step": 10, "loss": 0.75}],
    )  # fmt: skip
    make_run(  # other number of steps: not a counterpart of "ft"
        tl, "scratch_long",
        make_config("vae", model=VAE_MODEL, data=digits28, train={"num_steps": 20}),
        {20: dict(VAE_EVAL, bits_per_dim=2.5)},
    )  # fmt: skip
    bench = tmp_path / "bench"
    write_json(
        str(bench / "cpu.json"),
        {"hardware": "2-core CPU", "records": [
            {"config": "configs/ddpm.py:preset=cpu", "sampler": "ddim", "steps": 20,
             "batch_size": 64, "images_per_sec": 12.5},
            {"config": "configs/vae.py:preset=cpu", "batch_size": 64, "images_per_sec": 4096.0},
            {"config": "configs/vae.py:preset=cpu", "kind": "train_step", "images_per_sec": 1.0},
            {"config": "configs/gan.py:preset=cpu", "note": "no throughput: not a record"},
        ]},
    )  # fmt: skip
    write_json(
        str(bench / "gpu" / "h100.json"),
        [{"config": "configs/ddpm.py:preset=cpu", "sampler": "ddim", "steps": 20,
          "batch_size": 64, "images_per_sec": 2500.0, "hardware": "NVIDIA H100"}],
    )  # fmt: skip
    return root, str(bench)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def md_rows(path):
    """The body rows of the Markdown table in ``path`` as lists of cell strings."""
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def numbers_in(tree, out):
    if isinstance(tree, bool):
        return out
    if isinstance(tree, (int, float)):
        out.add(float(tree))
    elif isinstance(tree, dict):
        for v in tree.values():
            numbers_in(v, out)
    elif isinstance(tree, list):
        for v in tree:
            numbers_in(v, out)
    return out


def file_numbers(root, bench):
    """Every number in the fixture files (and the steps N of the eval file names)."""
    found: set[float] = set()
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if name.endswith(".json"):
                numbers_in(rundir.read_json(path), found)
                m = re.match(r"step_(\d+)\.json", name)
                if m:
                    found.add(float(m.group(1)))
            elif name.endswith(".jsonl"):
                numbers_in(rundir.read_jsonl(path), found)
    for directory, _, files in os.walk(bench):
        for name in files:
            numbers_in(rundir.read_json(os.path.join(directory, name)), found)
    return found


# --- tables ------------------------------------------------------------------------------------
def test_tables_numbers_come_from_the_files(fixture_runs, tmp_path):
    root, bench = fixture_runs
    out = str(tmp_path / "tables")
    assert tables.main(["--runs", root, "--out", out, "--bench", bench]) == 0
    stems = sorted(f[:-4] for f in os.listdir(out) if f.endswith(".csv"))
    assert stems == [
        "01_model_comparison", "02_parameters", "03_sample_quality", "04_diversity",
        "05_inference_time", "06_transfer", "07_domains", "08_discriminator_attributions",
        "09_misclassified_as_real", "10_likelihoods",
    ]  # fmt: skip

    # Every number of every CSV is a number of the files, or a percentage / millions of one.
    known = file_numbers(root, bench)
    allowed = known | {100.0 * x for x in known} | {x / 1e6 for x in known}
    for stem in stems:
        for row in read_csv(os.path.join(out, f"{stem}.csv")):
            for column, cell in row.items():
                try:
                    value = float(cell)
                except ValueError:
                    continue
                assert value in allowed, (stem, column, cell)

    by_run = {t: {r["run"]: r for r in read_csv(os.path.join(out, f"{t}.csv"))} for t in stems
              if t not in ("05_inference_time", "07_domains")}  # fmt: skip
    q = by_run["03_sample_quality"]
    assert sorted(q) == ["ddpm_cos", "gan_hinge"]
    names = {"fd": "FD", "kid": "KID", "precision": "precision", "recall": "recall",
             "classifier_score": "classifier score"}  # fmt: skip
    for key, column in names.items():
        assert float(q["gan_hinge"][column]) == GAN_EVAL[key]
    assert q["gan_hinge"]["features"] == "domain:fashion_mnist"
    assert int(q["gan_hinge"]["n"]) == GAN_EVAL["fd_num_samples"]
    # the newest eval file wins (step 10, not step 5); the extractor falls back to the config
    assert float(q["ddpm_cos"]["FD"]) == DDPM_EVAL["fd"] and q["ddpm_cos"]["step"] == "10"
    assert q["ddpm_cos"]["sampler"] == "ddim" and q["ddpm_cos"]["sampler steps"] == "20"
    assert q["ddpm_cos"]["features"] == "domain"
    assert q["ddpm_cos"]["classifier score"] == ""  # not in the eval file: empty, not invented

    d = by_run["04_diversity"]["gan_hinge"]
    assert float(d["pairwise distance"]) == GAN_EVAL["diversity"]
    assert float(d["within class"]) == GAN_EVAL["diversity_within_class"]
    assert float(d["real data"]) == GAN_EVAL["diversity_real"]
    assert float(d["class coverage"]) == GAN_EVAL["class_coverage"]
    assert float(d["class entropy"]) == GAN_EVAL["class_entropy"]

    # Tables 8 and 9: the last metrics.jsonl row of a step logged twice is the newest one.
    a = by_run["08_discriminator_attributions"]
    assert sorted(a) == ["gan_hinge"]
    assert float(a["gan_hinge"]["D correct on real (%)"]) == 100 * 0.75
    assert float(a["gan_hinge"]["D correct on generated (%)"]) == 100 * 0.625
    assert a["gan_hinge"]["D step"] == "10"
    assert float(a["gan_hinge"]["C2ST accuracy (%)"]) == 100 * GAN_EVAL["c2st_accuracy"]
    m = by_run["09_misclassified_as_real"]["gan_hinge"]
    assert float(m["C2ST: generated called real (%)"]) == 100 * GAN_EVAL["c2st_fooled"]
    assert float(m["D: generated called real (%)"]) == 100 * 0.375
    assert int(m["C2ST n"]) == GAN_EVAL["c2st_accuracy_num_samples"]

    lik = by_run["10_likelihoods"]
    assert sorted(lik) == [
        "ddpm_cos", "transfer/ft", "transfer/scratch", "transfer/scratch_long", "transfer/src",
        "vae_b1",
    ]  # fmt: skip
    assert float(lik["vae_b1"]["bits/dim"]) == VAE_EVAL["bits_per_dim"]
    assert float(lik["vae_b1"]["NLL IWAE (nats)"]) == VAE_EVAL["nll_iwae"]
    assert float(lik["vae_b1"]["ELBO (nats)"]) == VAE_EVAL["elbo"]
    assert float(lik["vae_b1"]["ELBO bits/dim"]) == VAE_EVAL["elbo_bits_per_dim"]
    assert lik["vae_b1"]["bound"] == "IWAE, k=8"
    assert lik["ddpm_cos"]["bound"] == "VLB, 50 sampled terms"
    assert float(lik["ddpm_cos"]["bits/dim"]) == DDPM_EVAL["bits_per_dim"]

    p = by_run["02_parameters"]
    assert int(p["gan_hinge"]["params"]) == GAN_EVAL["params"]
    assert float(p["gan_hinge"]["params (M)"]) == GAN_EVAL["params"] / 1e6

    c = by_run["01_model_comparison"]
    assert len(c) == 7
    assert c["gan_hinge"]["training"] == "hinge loss, SN, 1 D steps"
    assert c["ddpm_cos"]["training"] == "cosine schedule, v-prediction"
    assert c["transfer/ft"]["training"] == "ELBO, beta=1.0, fine-tuned from transfer/src"
    assert float(c["gan_hinge"]["final loss"]) == 1.25
    assert float(c["vae_b1"]["final loss"]) == 2.5

    # Table 6: the fine-tuned run and its from-scratch counterpart at equal steps only.
    t = by_run["06_transfer"]
    assert sorted(t) == ["transfer/ft", "transfer/scratch"]
    assert t["transfer/ft"]["start"] == "fine-tuned from fashion_mnist (transfer/src)"
    assert t["transfer/scratch"]["start"] == "scratch"
    assert float(t["transfer/ft"]["bits/dim"]) == 2.25
    assert float(t["transfer/scratch"]["bits/dim"]) == 2.75
    assert t["transfer/ft"]["train steps"] == t["transfer/scratch"]["train steps"] == "10"

    # Table 5: the runs' newest timing files, then one column per hardware of the benchmark
    # records, train-step and incomplete records left out.
    bench_rows = read_csv(os.path.join(out, "05_inference_time.csv"))
    assert [r["run / config"] for r in bench_rows] == [
        "ddpm_cos", "configs/ddpm.py:preset=cpu", "configs/vae.py:preset=cpu"
    ]  # fmt: skip
    assert float(bench_rows[0]["2-core CPU (images/s)"]) == 8.0
    assert bench_rows[0]["sampler"] == "ddim" and bench_rows[0]["steps"] == "20"
    assert float(bench_rows[1]["2-core CPU (images/s)"]) == 12.5
    assert float(bench_rows[1]["NVIDIA H100 (images/s)"]) == 2500.0
    assert float(bench_rows[2]["2-core CPU (images/s)"]) == 4096.0
    assert bench_rows[2]["NVIDIA H100 (images/s)"] == ""
    assert md_rows(os.path.join(out, "05_inference_time.md"))[2] == [
        "configs/vae.py:preset=cpu", MISSING, MISSING, "64", "4,096.0", MISSING
    ]  # fmt: skip

    # Table 7: a row of dashes for each domain a family has no run on.
    dom = read_csv(os.path.join(out, "07_domains.csv"))
    keyed = {(r["family"], r["data"]): r for r in dom}
    assert keyed[("gan", "digits")]["run"] == "" and keyed[("gan", "sprites")]["FD"] == ""
    assert keyed[("vae", "digits")]["run"] in ("transfer/ft", "transfer/scratch",
                                               "transfer/scratch_long")  # fmt: skip
    assert float(keyed[("gan", "fashion_mnist")]["FD"]) == GAN_EVAL["fd"]
    md_dom = md_rows(os.path.join(out, "07_domains.md"))
    gan_digits = next(r for r in md_dom if r[:2] == ["gan", "digits"])
    assert gan_digits[2:] == [MISSING] * (len(gan_digits) - 2)

    # Markdown shows the same values, formatted, and — where the CSV is empty.
    md = {r[0]: r for r in md_rows(os.path.join(out, "03_sample_quality.md"))}
    header = list(read_csv(os.path.join(out, "03_sample_quality.csv"))[0])
    gan_md = dict(zip(header, md["gan_hinge"], strict=True))
    assert gan_md["FD"] == tables.fmt(GAN_EVAL["fd"], "float") == "123.5"
    assert gan_md["KID"] == "0.01235"
    assert dict(zip(header, md["ddpm_cos"], strict=True))["classifier score"] == MISSING
    with open(os.path.join(out, "tables.md")) as f:
        combined = f.read()
    assert all(f"## Table {i}." in combined for i in range(1, 11))


def test_cell_formatting():
    assert tables.fmt(None, "float") == MISSING
    assert tables.fmt(67610, "int") == "67,610"
    assert tables.fmt(81.25, "pct") == "81.2"
    assert tables.fmt(4.87759, "float") == "4.878"
    assert tables.fmt(-2650.648, "float") == "-2,650.6"
    assert tables.fmt(float("nan"), "float") == "nan"
    assert tables.csv_cell(None, "float") == "" and tables.csv_cell(0.1, "float") == "0.1"


def test_sampler_columns_follow_the_launch_that_evaluated(tmp_path):
    """A finished run evaluated again with another sampler reports that sampler: the sample
    section comes from the newest train or eval launch, not from config.json."""
    path = make_run(str(tmp_path), "ddpm", make_config("ddpm", sample={"sampler": "ddim",
                    "steps": 30}), {10: {"fd": 1.0}})  # fmt: skip

    def launch(mode, steps):
        config = make_config("ddpm", sample={"sampler": "ddim", "steps": steps})
        with open(os.path.join(path, "launches.jsonl"), "a") as f:
            f.write(json.dumps({"mode": mode, "config": config}) + "\n")

    assert rundir.load_run(path, "ddpm").cfg("sample.steps") == 30  # no launches.jsonl
    launch("train", 30)
    launch("eval", 50)
    launch("sample", 80)  # drew the timing samples, not the eval file's
    with open(os.path.join(path, "launches.jsonl"), "a") as f:
        f.write('{"mode": "eval", "conf')  # torn by a killed writer
    run = rundir.load_run(path, "ddpm")
    assert run.cfg("sample.steps") == 50
    assert run.cfg("train.num_steps") == 10  # the rest is config.json's


def test_tables_runs_as_a_script_and_reports_bad_paths(fixture_runs, tmp_path):
    root, _ = fixture_runs
    out = tmp_path / "script_out"
    script = os.path.join(REPO, "experiments", "tables.py")
    ok = subprocess.run([sys.executable, script, "--runs", root, "--out", str(out)],
                        capture_output=True, text=True, cwd=str(tmp_path), timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (out / "10_likelihoods.csv").is_file()
    assert tables.main(["--runs", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert tables.main(["--runs", root, "--out", str(out), "--bench", "/no/such"]) == 2


def test_empty_runs_root_gives_empty_tables(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "runs").mkdir()
    assert tables.main(["--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    rows = md_rows(str(out / "03_sample_quality.md"))
    assert rows == [[MISSING] * len(rows[0])]
    assert read_csv(str(out / "03_sample_quality.csv")) == []


# --- report ------------------------------------------------------------------------------------
def image_sources(page: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', page)


def test_report_is_self_contained(fixture_runs, tmp_path):
    root, bench = fixture_runs
    out = str(tmp_path / "report")
    assert report.main(["--runs", root, "--out", out, "--bench", bench]) == 0
    with open(os.path.join(out, "report.html"), encoding="utf-8") as f:
        page = f.read()
    assert not re.search(r"(?i)https?:|src=\"//|url\(", page), "external URL"
    sources = image_sources(page)
    # vae_b1: newest samples_N grid + interpolation; gan: samples; ddpm: the training grid
    assert sorted(sources) == sorted([
        "images/vae_b1/samples_10.png", "images/vae_b1/interpolation_10.png",
        "images/gan_hinge/samples_10.png", "images/ddpm_cos/step_10.png",
    ])  # fmt: skip
    for src in sources:
        assert os.path.isfile(os.path.join(out, src)), src
    assert page.count("<svg") == 6  # loss of vae_b1, gan_hinge, ddpm_cos, ft, scratch + D acc
    assert "discriminator accuracy" in page
    assert all(f"Table {i}." in page for i in range(1, 11))
    assert f"<td>{MISSING}</td>" in page or f'<td class="num">{MISSING}</td>' in page


def test_svg_chart_scales_points_into_the_plot():
    svg = report.svg_chart("loss", {"loss": [(0, 1.0), (10, 3.0)]}, w=100, h=60)
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    (x0, y0), (x1, y1) = [tuple(map(float, p.split(","))) for p in points]
    assert (x0, x1) == (52.0, 90.0)  # left margin .. width - right margin
    assert y0 > y1  # the larger loss is drawn higher
    assert report.svg_chart("loss", {"loss": []}) == ""


def run_chromium(page: str, tmp_path) -> tuple[str, str]:
    profile = tmp_path / "chromium-profile"
    proc = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=5000", "--dump-dom", f"file://{page}",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium: apt-get install -y chromium"
)
def test_report_loads_in_headless_chromium(fixture_runs, tmp_path):
    root, bench = fixture_runs
    out = tmp_path / "report"
    path = report.write_report(root, str(out), [bench])
    dom, log = run_chromium(path, tmp_path)
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-images-loaded="4/4"' in body, body
    assert 'data-js-errors="0"' in body, body
    assert not [line for line in log.splitlines() if ":CONSOLE" in line], log[-2000:]
    # the check can fail: a broken image is counted as not loaded
    os.remove(out / "images" / "gan_hinge" / "samples_10.png")
    dom, _ = run_chromium(path, tmp_path)
    assert 'data-images-loaded="3/4"' in dom


# --- sweeps: definitions -------------------------------------------------------------------------
def shipped(name: str, arg: str = ""):
    spec = os.path.join(REPO, "experiments", "ablations", f"{name}.py") + (f":{arg}" if arg else "")
    return load_sweep(spec)


@pytest.mark.parametrize("preset", ["smoke", "cpu", "full"])
def test_shipped_sweeps_name_real_config_keys(preset):
    for name in (
        "diffusion", "gan", "vae", "autoregressive", "transfer", "domains", "results", "nfe"
    ):  # fmt: skip
        sweep.check_configs(shipped(name), preset)


def test_shipped_sweeps_cover_the_ablations():
    diff = shipped("diffusion")
    trained = [r for r in diff.runs if not r.shares_training_with]
    assert sorted((r.args["schedule"], r.args["prediction"]) for r in trained) == [
        ("cosine", "eps"), ("cosine", "v"), ("linear", "eps"), ("linear", "v")
    ]  # fmt: skip
    variants = [r for r in diff.runs if r.shares_training_with]
    assert len(variants) == 12 and {r.shares_training_with for r in variants} == {"linear_eps"}
    assert {(r.overrides["sample.sampler"], r.overrides["sample.steps"]) for r in variants} == {
        (s, n) for s in ("ddpm", "ddim", "dpm_solver_pp", "heun") for n in (10, 20, 50)
    }
    assert len(diff.groups()) == 4  # variants run in the task that trains linear_eps

    gan = shipped("gan")
    assert len(gan.runs) == 12
    gp = gan.run("wasserstein_gp").overrides
    assert gp["gan.gp_weight"] == 10.0 and gp["model.d_norm"] == "none"
    assert gan.run("hinge_sn").overrides["model.d_norm"] == "spectral"
    assert gan.run("nonsaturating_r1").overrides["gan.r1_gamma"] == 1.0

    assert [r.args["beta"] for r in shipped("vae", "betas=1+4").runs] == [1.0, 4.0]
    assert [r.args["variant"] for r in shipped("autoregressive").runs] == [
        "pixelcnn", "gated", "pixelcnn_pp"
    ]  # fmt: skip

    tl = shipped("transfer")
    ft = tl.run("finetune_fashion_mnist_to_digits")
    assert ft.overrides["init_from"] == Ref("source_fashion_mnist")
    scratch = tl.run("scratch_digits")
    assert ft.args == scratch.args and "train.num_steps" not in ft.overrides  # equal steps
    assert len(tl.groups()) == 2

    dom = shipped("domains", "extra=tfds:mnist")
    assert [r.args["data"] for r in dom.runs] == [
        "fashion_mnist",
        "digits",
        "sprites",
        "tfds:mnist",
    ]
    assert dom.names()[-1] == "vae_tfds-mnist"


def test_sweep_validation_errors():
    base = Run("a", "configs/vae.py")
    cases = [
        ([base, Run("a", "configs/vae.py")], "two runs"),
        ([Run("a", "configs/vae.py", overrides={"init_from": Ref("zz")})], "unknown run"),
        (
            [
                base,
                Run(
                    "b",
                    "configs/vae.py",
                    overrides={"train.num_steps": 3},
                    shares_training_with="a",
                ),
            ],
            "train.num_steps",
        ),  # fmt: skip
        ([Run("a", "configs/vae.py", args={"preset": "cpu"})], "preset"),
        ([Run("a b", "configs/vae.py")], "directory name"),
        (
            [
                Run("a", "configs/vae.py", overrides={"init_from": Ref("b")}),
                Run("b", "configs/vae.py", overrides={"init_from": Ref("a")}),
            ],
            "cycle",
        ),  # fmt: skip
    ]
    for runs, message in cases:
        with pytest.raises(UserError, match=message):
            validate(runs, "test")
    ok = validate([sampling_variant(base, "c", num=4), base], "test")
    assert [r.name for r in ok] == ["a", "c"]


# --- sweeps: commands, SLURM, skipping -----------------------------------------------------------
SWEEP_FILE = """
from experiments.spec import Run, ref, sampling_variant


def get_sweep(arg=None):
    src = Run("src", "configs/vae.py", args={"beta": 2.0}, overrides={"train.num_steps": 6})
    ft = Run("ft", "configs/vae.py", args={"data": "digits"},
             overrides={"data.image_size": 28, "init_from": ref("src")})
    other = Run("other", "configs/vae.py", overrides={"model.latent_dim": 4})
    return [ft, src, sampling_variant(src, "src_n4", num=4), other]
"""


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "mini.py"
    path.write_text(SWEEP_FILE)
    return str(path)


def test_dry_run_prints_the_commands(sweep_file, tmp_path, capsys):
    root = str(tmp_path / "root")
    assert sweep.main([sweep_file, "--root", root, "--preset", "smoke", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    src = f"python launch.py --config=configs/vae.py:preset=smoke,beta=2.0 --workdir={root}/src"
    ft = f"python launch.py --config=configs/vae.py:preset=smoke,data=digits --workdir={root}/ft"
    ft_flags = f"--config.data.image_size=28 --config.init_from={root}/src"
    variant = (
        f"python launch.py --config=configs/vae.py:preset=smoke,beta=2.0 --workdir={root}/src_n4"
    )
    other = f"python launch.py --config=configs/vae.py:preset=smoke --workdir={root}/other"
    timed = " --config.sample.timing_repeats=1"  # the sample stage times the sampler

    def stages(head, flags, modes=("train", "eval", "sample")):
        return [f"{head} --mode={m} {flags}" + (timed if m == "sample" else "") for m in modes]

    assert lines == [
        "# src: train, eval, sample",
        *stages(src, "--config.train.num_steps=6"),
        "# ft: train, eval, sample",
        *stages(ft, ft_flags),
        "# src_n4: eval, sample",
        f"ln -sfn ../src/checkpoints {root}/src_n4/checkpoints",
        *stages(variant, "--config.train.num_steps=6 --config.sample.num=4", ("eval", "sample")),
        "# other: train, eval, sample",
        *stages(other, "--config.model.latent_dim=4"),
    ]
    assert not os.path.exists(root)  # a dry run writes nothing

    argv = [
        sweep_file,
        "--root",
        root,
        "--only",
        "other",
        "--dry-run",
        "--launcher-prefix=srun -N2",
    ]
    assert sweep.main(argv) == 0
    first = capsys.readouterr().out.splitlines()[1]
    assert first.startswith("srun -N2 python launch.py --config=configs/vae.py:preset=cpu ")
    assert sweep._with_interpreter(first.split()) == ["srun", "-N2", sys.executable, "launch.py",
                                                      *first.split()[4:]]  # fmt: skip


def test_bad_sweep_input_is_one_line_exit_2(sweep_file, tmp_path, capsys):
    root = str(tmp_path / "root")
    assert sweep.main([sweep_file, "--root", root, "--preset", "tiny", "--dry-run"]) == 2
    assert sweep.main([sweep_file, "--root", root, "--only", "nope", "--dry-run"]) == 2
    assert sweep.main([str(tmp_path / "missing.py"), "--root", root, "--dry-run"]) == 2
    typo = tmp_path / "typo.py"
    typo.write_text(
        "from experiments.spec import Run\n"
        "def get_sweep(arg=None):\n"
        "    return [Run('a', 'configs/vae.py', overrides={'train.num_stepz': 3})]\n"
    )
    assert sweep.main([str(typo), "--root", root, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert "tiny" in err[0] and "nope" in err[1] and "missing.py" in err[2]
    assert "train.num_stepz" in err[3]


def test_slurm_script(sweep_file, tmp_path):
    root = str(tmp_path / "root")
    script = str(tmp_path / "mini.sbatch")
    argv = [sweep_file, "--root", root, "--preset", "full", "--slurm", script,
            "--sbatch=--gres=gpu:1", "--sbatch=--time=2:00:00", "--max-parallel", "2"]  # fmt: skip
    assert sweep.main(argv) == 0
    text = open(script).read()
    assert text.startswith("#!/bin/bash\n")
    for line in ["#SBATCH --array=0-1%2", f"#SBATCH --output={root}/_slurm/%A_%a.out",
                 "#SBATCH --gres=gpu:1", "#SBATCH --time=2:00:00", f"cd {REPO}"]:  # fmt: skip
        assert line in text.splitlines()
    assert os.path.isdir(os.path.join(root, "_slurm"))  # sbatch does not create it
    # every launcher command of the sweep is in the script, each run in one task only
    for name in ("src", "ft", "src_n4", "other"):
        for stage in ("train", "eval", "sample"):
            cmd = f"--workdir={root}/{name} --mode={stage}"
            assert (cmd in text) == (not (name == "src_n4" and stage == "train")), cmd
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    # array task i runs group i through the sweep module
    for index, names in ((0, "src,ft,src_n4"), (1, "other")):
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(index), PYTHON="echo")
        proc = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        expected = f"-m experiments.sweep {sweep_file} --root {root} --preset full --only {names}"
        assert proc.stdout.strip() == expected
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="7", PYTHON="echo")
    assert subprocess.run(["bash", script], env=env, capture_output=True).returncode == 2
    assert "#SBATCH --ntasks=1" in text.splitlines()

    # several nodes per task: no --ntasks=1, the launcher goes through srun
    argv += ["--sbatch=--nodes=2", "--launcher-prefix=srun"]
    assert sweep.main(argv) == 0
    text = open(script).read()
    assert "#SBATCH --ntasks=1" not in text and "#SBATCH --nodes=2" in text
    assert (
        f"#   srun python launch.py --config=configs/vae.py:preset=full --workdir={root}/other"
        in text
    )
    assert "--only other --launcher-prefix=srun" in text


class FakeLauncher:
    """Stands in for ``launch.py``: each stage leaves the files the real one leaves.

    ``stop_at``: run name -> the step where training stops (as after SIGTERM: exit 0).
    ``fail``: (run name, mode) pairs that exit 1.
    """

    def __init__(self, num_steps=6, stop_at=None, fail=()):
        self.num_steps, self.stop_at, self.fail = num_steps, dict(stop_at or {}), set(fail)
        self.calls = []

    def __call__(self, argv, log_path):
        assert argv[:2] == ["python", "launch.py"]
        flags = dict(a[2:].split("=", 1) for a in argv[2:])
        wd, mode = flags["workdir"], flags["mode"]
        name = os.path.basename(wd)
        self.calls.append((name, mode))
        if (name, mode) in self.fail:
            return 1
        if mode == "train":
            config = make_config(
                "vae", train={"num_steps": self.num_steps}, evals={"p": {"type": "params"}}
            )
            write_json(os.path.join(wd, "config.json"), config)
            step = self.stop_at.get(name, self.num_steps)
            os.makedirs(os.path.join(wd, "checkpoints", str(step)), exist_ok=True)
            if step == self.num_steps:  # the trainer evaluates at the end of training
                write_json(rundir.eval_path(wd, step), {"params": 1})
            return 0
        step = rundir.latest_checkpoint_step(wd)
        if mode == "eval":
            write_json(rundir.eval_path(wd, step), {"params": 1})
        else:
            os.makedirs(os.path.join(wd, "samples"), exist_ok=True)
            open(rundir.sample_path(wd, step), "wb").close()
        return 0


def test_local_sweep_skips_finished_and_resumes(sweep_file, tmp_path):
    sw = load_sweep(sweep_file)
    root = str(tmp_path / "root")
    quiet = open(os.devnull, "w")

    fake = FakeLauncher(stop_at={"src": 3})  # src is interrupted at step 3 of 6
    outcome = sweep.run_sweep(sw, root, "smoke", runner=fake, out=quiet)
    assert outcome == {"src": "failed", "ft": "blocked", "src_n4": "blocked", "other": "finished"}
    assert fake.calls == [("src", "train"), ("other", "train"), ("other", "sample")]
    assert not sweep.is_finished(sw, root, sw.run("src"))

    fake = FakeLauncher()  # again: src resumes, its dependents run, other is skipped
    outcome = sweep.run_sweep(sw, root, "smoke", runner=fake, out=quiet)
    assert outcome == {"src": "finished", "ft": "finished", "src_n4": "finished",
                       "other": "skipped"}  # fmt: skip
    assert fake.calls == [("src", "train"), ("src", "sample"), ("ft", "train"), ("ft", "sample"),
                          ("src_n4", "eval"), ("src_n4", "sample")]  # fmt: skip
    link = os.path.join(root, "src_n4", "checkpoints")
    assert os.readlink(link) == os.path.join("..", "src", "checkpoints")
    variant_config = rundir.read_json(os.path.join(root, "src_n4", "config.json"))
    assert variant_config["sample"]["num"] == 4 and variant_config["train"]["num_steps"] == 6
    recorded = rundir.read_json(os.path.join(root, "ft", "sweep.json"))
    assert recorded["overrides"] == ["--config.data.image_size=28",
                                     f"--config.init_from={root}/src"]  # fmt: skip

    fake = FakeLauncher()
    assert set(sweep.run_sweep(sw, root, "smoke", runner=fake, out=quiet).values()) == {"skipped"}
    assert fake.calls == []

    # finished = latest checkpoint step == num_steps and its eval file exists
    os.remove(rundir.eval_path(os.path.join(root, "ft"), 6))
    assert not sweep.is_finished(sw, root, sw.run("ft"))
    assert sweep.pending_stages(sw, root, sw.run("ft")) == ["eval"]
    fake = FakeLauncher()
    sweep.run_sweep(sw, root, "smoke", only=["ft"], runner=fake, out=quiet)
    assert fake.calls == [("ft", "eval")]
    assert sweep.is_finished(sw, root, sw.run("ft"))

    # a failing command stops that run only and is reported
    os.remove(rundir.sample_path(os.path.join(root, "other"), 6))
    fake = FakeLauncher(fail={("other", "sample")})
    assert sweep.run_sweep(sw, root, "smoke", runner=fake, out=quiet)["other"] == "failed"

    # a run directory started with other arguments is refused before anything runs
    changed = tmp_path / "changed.py"
    changed.write_text(SWEEP_FILE.replace('"beta": 2.0', '"beta": 3.0'))
    with pytest.raises(UserError, match="started with config="):
        sweep.run_sweep(load_sweep(str(changed)), root, "smoke", runner=FakeLauncher(), out=quiet)
    quiet.close()


# --- end to end ----------------------------------------------------------------------------------
E2E_SWEEP = """
from experiments.spec import Run, sampling_variant


def get_sweep(arg=None):
    base = Run("vae", "configs/vae.py", description="smoke VAE")
    return [base, sampling_variant(base, "vae_n4", num=4)]
"""


def test_end_to_end_smoke_sweep_tables_and_report(tmp_path, capsys):
    """Two runs through the real launcher: one trained, one sampling-only on its checkpoints."""
    spec = tmp_path / "e2e.py"
    spec.write_text(E2E_SWEEP)
    root, out = tmp_path / "root", tmp_path / "results"
    argv = [str(spec), "--root", str(root), "--preset", "smoke", "--report", str(out)]
    status = sweep.main(argv)
    printed = capsys.readouterr().out
    assert status == 0, printed + "".join(
        open(os.path.join(d, f)).read()
        for d, _, fs in os.walk(root) for f in fs if f.endswith(".log")
    )  # fmt: skip
    assert "vae: eval" not in printed  # training wrote the final eval: not run twice
    base, variant = root / "vae", root / "vae_n4"
    steps = rundir.checkpoint_steps(str(base))
    assert steps[-1] == 4 and rundir.checkpoint_steps(str(variant)) == steps
    base_eval = rundir.read_json(rundir.eval_path(str(base), 4))
    variant_eval = rundir.read_json(rundir.eval_path(str(variant), 4))
    assert base_eval == variant_eval  # the same checkpoint, restored through the link
    with np.load(rundir.sample_path(str(variant), 4)) as f:
        assert f["images"].shape[0] == 4 and f["images"].dtype == np.uint8

    lik = {r["run"]: r for r in read_csv(str(out / "10_likelihoods.csv"))}
    assert float(lik["vae"]["bits/dim"]) == base_eval["bits_per_dim"]
    assert float(lik["vae"]["NLL IWAE (nats)"]) == base_eval["nll_iwae"]
    params = {r["run"]: r for r in read_csv(str(out / "02_parameters.csv"))}
    assert int(params["vae_n4"]["params"]) == base_eval["params"]
    loss = [row for row in rundir.read_jsonl(str(base / "metrics.jsonl")) if "loss" in row][-1]
    comparison = {r["run"]: r for r in read_csv(str(out / "01_model_comparison.csv"))}
    assert float(comparison["vae"]["final loss"]) == loss["loss"]
    timing = {r["run / config"]: r for r in read_csv(str(out / "05_inference_time.csv"))}
    for run, num in (("vae", 8), ("vae_n4", 4)):  # --mode=sample timed the compiled sampler
        record = rundir.read_json(str(root / run / "samples" / "timing_4.json"))
        assert record["batch_size"] == num and record["seconds"] > 0
        assert float(timing[run][f"{record['hardware']} (images/s)"]) == record["images_per_sec"]
    page = (out / "report.html").read_text()
    assert sorted(image_sources(page)) == [
        "images/vae/interpolation_4.png", "images/vae/samples_4.png",
        "images/vae_n4/interpolation_4.png", "images/vae_n4/samples_4.png",
    ]  # fmt: skip

    assert "checkpoints of: vae" in page
    # everything is finished now: a second call runs no launcher command
    assert sweep.main(argv[:-2] + ["--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "# vae: finished, skipped", "# vae_n4: finished, skipped"
    ]  # fmt: skip
    shutil.rmtree(out)


def test_percent_columns_are_exact_multiples():
    run = rundir.RunRecord("r", "/r", {"family": "gan"}, {"c2st_fooled": 0.1}, 3, {},
                           [{"step": 3, "d_fake_called_real": 0.3}], {})  # fmt: skip
    assert tables.ev_pct("c2st_fooled")(run) == 100 * 0.1
    assert tables.last_pct("d_fake_called_real")(run) == 100 * 0.3
    assert math.isclose(tables.last_pct("d_fake_called_real")(run), 30.0)


def test_runs_without_evals_or_samples_finish_after_training(tmp_path):
    """A classifier declares no evaluators and draws no images: trained means finished."""
    from experiments.spec import Sweep

    sw = Sweep("t", "t.py", "", (Run("clf", "configs/classifier.py"),))
    wd = os.path.join(str(tmp_path), "clf")
    write_json(os.path.join(wd, "config.json"), make_config("classifier", train={"num_steps": 6}))
    os.makedirs(os.path.join(wd, "checkpoints", "4"))
    assert sweep.pending_stages(sw, str(tmp_path), sw.runs[0]) == ["train", "eval", "sample"]
    os.makedirs(os.path.join(wd, "checkpoints", "6"))
    assert sweep.pending_stages(sw, str(tmp_path), sw.runs[0]) == []
    assert sweep.is_finished(sw, str(tmp_path), sw.runs[0])
