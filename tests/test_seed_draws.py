"""benchmarks/peers/seed_draws.py: draws under several seeds, paired by seed, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.peers import seed_draws
from benchmarks.peers.score_samples import Scorer, held_out_images, reference_images


def test_variants_parse_to_typed_sample_options_and_bad_ones_are_named():
    assert seed_draws.parse_variant("eta=0.5,steps=100,sampler=ddim") == {
        "eta": 0.5, "steps": 100, "sampler": "ddim"}  # fmt: skip
    with pytest.raises(ValueError, match="'temperature=2' is not key=value"):
        seed_draws.parse_variant("eta=1,temperature=2")
    with pytest.raises(ValueError, match="steps='many' is not a int"):
        seed_draws.parse_variant("steps=many")


def test_draws_are_paired_by_seed_written_once_and_resumed(tmp_path):
    """The run's options draw held-out test images (a slice per seed), the variant the same
    images with speckle: the variant's FD is worse on every seed, its paired difference is the
    mean of the per-seed differences, and a second pass over the saved records samples
    nothing."""
    pool = held_out_images(200, 120)
    calls = []

    def sample(seed, options):
        calls.append((seed, dict(options)))
        images = pool[seed * 40 : (seed + 1) * 40].astype(np.float32)
        if options:
            noise = np.random.default_rng(seed).normal(0, options["eta"] * 80, images.shape)
            images = images + noise
        return np.clip(images, 0, 255).astype(np.uint8)

    scorer = Scorer(reference_images(200))
    seeds, variants = [0, 1, 2], {"run": {}, "eta=1": {"eta": 1.0}}
    out = tmp_path / "draws.jsonl"
    identity = {"workdir": "/w", "step": 5, "num": 40, "num_ref": 200}

    def write(record):
        with open(out, "a") as f:
            f.write(json.dumps(dict(record, benchmark=seed_draws.BENCHMARK, **identity)) + "\n")

    scores = seed_draws.draw_all(sample, scorer, seeds, variants, {}, write)
    assert sorted(calls, key=str) == sorted(
        [(s, o) for s in seeds for o in variants.values()], key=str
    )
    diffs = seed_draws.paired_differences(scores, "eta=1", seeds)
    per_seed = [scores["eta=1", s]["fd_domain"] - scores["run", s]["fd_domain"] for s in seeds]
    assert min(per_seed) > 0
    assert diffs["fd_domain"][0] == pytest.approx(np.mean(per_seed))
    assert diffs["fd_domain"][1] == pytest.approx(np.std(per_seed, ddof=1) / np.sqrt(3))
    text = seed_draws.report(scores, list(variants), seeds)
    assert "3 seeds (0,1,2)" in text and "eta=1 minus run, same seeds: fd_domain +" in text

    saved = seed_draws._saved_scores(str(out), identity)
    assert saved == scores
    assert seed_draws._saved_scores(str(out), dict(identity, step=6)) == {}
    calls.clear()
    again = seed_draws.draw_all(sample, scorer, seeds, variants, saved, write)
    assert calls == [] and again["eta=1", 2]["fd_domain"] == scores["eta=1", 2]["fd_domain"]
