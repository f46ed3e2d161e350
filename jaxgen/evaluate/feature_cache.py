"""Features of the real and generated images an evaluation round compares, and what each
metric was computed on.

* :func:`reference_features`: the first ``num`` real images of a split through an extractor
  (:mod:`jaxgen.evaluate.features`), with their mean and covariance; computed once, then
  read from a cache under ``$JAXGEN_CACHE_DIR`` (default ``~/.cache/jaxgen``);
* :func:`generated_features`: the round's samples through an extractor, once per round;
* :func:`record` / :func:`describe`: ``<workdir>/eval/evaluators.json``, the provenance of
  every metric.
"""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np

from jaxgen import paths
from jaxgen.errors import UserError
from jaxgen.evaluate.features import Extractor


def cache_dir() -> str:
    root = os.environ.get("JAXGEN_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxgen"
    )
    return os.path.join(root, "refstats")


# evals option split: which real images a sample evaluator compares with.
SPLIT_OPTIONS = ("eval", "train")


def check_split_option(split: str) -> None:
    if split not in SPLIT_OPTIONS:
        raise UserError(f"evals option split={split!r}: expected 'eval' or 'train'")


def split_name(config, split: str) -> str:
    """``eval``/``train`` -> the dataset split they stand for (``data.eval_split``...)."""
    check_split_option(split)
    return config.data.eval_split if split == "eval" else config.data.train_split


def reference_features(ctx, extractor: Extractor, split: str, num: int) -> dict[str, np.ndarray]:
    """Features (and logits, labels, mean ``mu``, covariance ``sigma``) of the first ``num``
    real images of ``split``; computed once, then read from the cache."""
    config = ctx.config
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{config.data.name}_{split_name(config, split)}")
    size = config.data.get("image_size", 0)
    path = os.path.join(cache_dir(), f"{tag}_{size}px_{extractor.key}_n{num}.npz")
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed
    real = ctx.real(num, split=split)
    out = extractor(real["images"])
    out["labels"] = real["labels"]
    feats = out["features"].astype(np.float64)
    out["mu"], out["sigma"] = feats.mean(0), np.cov(feats, rowvar=False)
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **out)
        os.replace(tmp, path)
    return out


def generated_features(ctx, extractor: Extractor, num: int) -> dict[str, np.ndarray]:
    """Features of ``ctx.generate(num)``, computed once per round and extractor.

    Stored in the round's sample dict under ``_features/<extractor>`` so that every
    evaluator of the round reuses them. Adds ``labels`` when the samples are conditioned.
    """
    samples = ctx.generate(num)
    key = f"_features/{extractor.key}"
    if key not in samples:
        out = extractor(samples["images"])
        if "labels" in samples:
            out["labels"] = np.asarray(samples["labels"])
        samples[key] = out
    return samples[key]


def record(ctx, entries: dict[str, dict]) -> None:
    """Merges ``{metric: info}`` into ``<workdir>/eval/evaluators.json`` (what each
    metric was computed on: number of samples, split, extractor, weights)."""
    if jax.process_index() != 0 or not ctx.workdir:
        return
    path = paths.join(ctx.workdir, "eval", "evaluators.json")  # a local path or URL
    data = {}
    if paths.is_file(path):
        try:
            data = json.loads(paths.read_text(path))
        except (OSError, ValueError):
            data = {}
    if not isinstance(data, dict):  # a damaged file: rewritten from this evaluation's entries
        data = {}
    data.update(entries)
    paths.write_text(path, json.dumps(data, indent=1, sort_keys=True))


def describe(extractor: Extractor, **extra) -> dict:
    """The provenance fields recorded with every metric."""
    return dict(extractor=extractor.name, weights=extractor.weights,
                weights_sha256=extractor.fingerprint, **extra)  # fmt: skip
