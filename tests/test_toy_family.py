"""A family added from outside ``jaxgen/`` (``tests/toy_family.py``, named by import path in
``tests/toy_config.py``) trains, samples, evaluates and appears in the comparison tables."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from experiments import tables
from jaxgen.methods import get_method_class
from tests.conftest import launch
from tests.toy_family import ToyMethod

CONFIG = "--config=tests/toy_config.py"


def _rows(table) -> list[dict]:
    return [dict(zip(table.header(), row, strict=True)) for row in table.rows]


def test_a_family_from_outside_trains_samples_evaluates_and_is_tabled(tmp_path):
    assert get_method_class("tests.toy_family:ToyMethod") is ToyMethod
    workdir = tmp_path / "toy"
    trained = launch(CONFIG, f"--workdir={workdir}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    sampled = launch(CONFIG, f"--workdir={workdir}", "--mode=sample")
    assert sampled.returncode == 0, sampled.stderr[-3000:]

    with open(workdir / "metrics.jsonl") as f:
        losses = [row["loss"] for row in map(json.loads, f) if "loss" in row]
    assert losses and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 8.0  # bits/dim: a uniform model has exactly 8
    with np.load(workdir / "samples" / "samples_4.npz") as npz:
        images = npz["images"]
    assert images.shape == (8, 28, 28, 1)
    assert os.path.isfile(workdir / "samples" / "samples_4.png")
    with open(workdir / "eval" / "step_4.json") as f:
        evals = json.load(f)
    assert evals["params"] == 28 * 28 * 256
    assert 0 < evals["bits_per_dim"] < 8.0 and evals["likelihood_num_examples"] == 16
    assert evals["diversity"] > 0

    runs, built = tables.tables_for(str(tmp_path))
    assert [r.name for r in runs] == ["toy"]
    by_key = {t.key: _rows(t) for t in built}
    (row,) = by_key["model_comparison"]
    assert row["family"] == "tests.toy_family:ToyMethod"
    assert row["architecture"] == "per-pixel categorical, 256 levels"
    assert row["training"] == "max. likelihood"
    assert row["params"] == evals["params"]
    (bound,) = by_key["likelihoods"]
    assert bound["bound"] == "exact" and bound["bits/dim"] == evals["bits_per_dim"]
    domains = [r for r in by_key["domains"] if r["family"] == "tests.toy_family:ToyMethod"]
    assert [r["run"] for r in domains if r["data"] == "fashion_mnist"] == ["toy"]
