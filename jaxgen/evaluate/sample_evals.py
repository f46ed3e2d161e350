"""Evaluators on generated samples: ``fn(ctx, cfg) -> dict[str, float]``.

Declared in a config as ``evals.<name> = dict(type=<type>, ...)``:

=============  ==================================================  ==========================
type           keys                                                metric functions
=============  ==================================================  ==========================
quality        fd, kid, precision, recall, density, coverage,      :mod:`.metrics`,
               broken_share (+ fd_<x>, kid_<x>, precision_<x>,      :mod:`.realism`
               recall_<x>, density_<x>, coverage_<x> for a second
               extractor ``features2=<x>``)
classifier     classifier_score, class_coverage, class_entropy     :mod:`.metrics`
               (+ class_accuracy for class-conditional samples)
diversity      diversity, diversity_within_class, diversity_real   :mod:`.metrics`
c2st           c2st_accuracy, c2st_fooled                          :mod:`.c2st`
=============  ==================================================  ==========================

Options shared by all: ``num_samples`` (default 1000), ``features`` (``domain``,
``inception`` or ``pixels``), ``split`` of the real data (``eval``, the default, or
``train``), ``num_real`` (default ``num_samples``), ``classifier_weights`` /
``inception_weights`` (weight files), ``prefix`` (prepended to every key, for two
evaluators of one type). Each result also carries ``<first key>_num_samples``, and
``<workdir>/eval/evaluators.json`` records the split, extractor and weights of each key.

``quality`` also reads and writes Fréchet-distance reference statistics (pytorch-fid's
``mu``/``sigma`` ``.npz``): ``reference_stats`` and ``save_reference_stats``, see
:mod:`.fid_stats` and ``docs/fid.md``.
"""

from __future__ import annotations

import json
import logging
import os
import re

import jax
import numpy as np

from jaxgen import paths
from jaxgen.errors import UserError
from jaxgen.evaluate import fid_stats, metrics, realism
from jaxgen.evaluate.c2st import classifier_two_sample_test
from jaxgen.evaluate.feature_cache import (
    describe,
    generated_features,
    record,
    reference_features,
    split_name,
)
from jaxgen.evaluate.features import feature_dim, file_fingerprint, get_extractor

log = logging.getLogger("jaxgen")


def _setup(ctx, cfg, need_real: bool = True):
    num = int(cfg.get("num_samples", 1000))
    if num < 4:
        raise UserError(f"evals option num_samples={num}: expected at least 4")
    split = cfg.get("split", "eval")
    split_name(ctx.config, split)  # validates the option before any sampling
    extractor = get_extractor(cfg, ctx.config.data.name)
    gen = generated_features(ctx, extractor, num)
    info = describe(extractor, num_samples=len(gen["features"]), data=ctx.config.data.name)
    real = None
    if need_real:
        real = reference_features(ctx, extractor, split, int(cfg.get("num_real", num)))
        info.update(num_real=len(real["features"]), split=split_name(ctx.config, split))
    return extractor, real, gen, info


def _finish(ctx, cfg, results: dict, info: dict, key_info: dict | None = None) -> dict[str, float]:
    """Prefixed float results; records ``info`` (or ``key_info[key]``) for each key."""
    prefix = cfg.get("prefix", "")
    first = next(iter(results))
    results[f"{first}_num_samples"] = float(info["num_samples"])
    out = {f"{prefix}{k}": float(v) for k, v in results.items()}
    key_info = key_info or {}
    record(ctx, {f"{prefix}{k}": key_info.get(k, info) for k in results})
    return out


def _seed(ctx) -> int:
    return int(jax.random.randint(ctx.rng, (), 0, 2**31 - 1))


# The metrics of each extractor's features (the second extractor's keys get its name).
SET_METRICS = ("fd", "kid", "precision", "recall", "density", "coverage")


def quality(ctx, cfg) -> dict[str, float]:
    """Fréchet distance, KID, precision/recall, density/coverage and the broken share of
    samples against real features.

    Extra options: ``kid_subsets`` (100), ``kid_subset_size`` (1000), ``k`` (3, of precision
    and recall), ``density_k`` (5, of density and coverage: :func:`.metrics.density_coverage`;
    precision counts a sample inside one isolated real point's huge ball as realistic, which
    in the ``domain`` features calls 10x10-pixel crops of garments on black 96 % precise,
    above held-out real images; density scores them 0.52 against 0.99), and

    * ``features2``: a second extractor (e.g. ``contrastive`` next to ``domain``; '' for
      none): its metrics are reported next to the first's as ``fd_<x>``, ``kid_<x>``,
      ``precision_<x>``, ``recall_<x>``, ``density_<x>`` and ``coverage_<x>`` (``<x>``: its
      name), against as many real images
      of the same split. It reads its own weight option (``feature_net_weights``,
      ``classifier_weights``, ``inception_weights``); ``reference_stats`` apply to the first
      extractor only.
    * ``broken_share``: the share of samples whose realism score
      (:func:`.realism.realism_scores`) is below 1, i.e. that lie outside every kept k-NN
      ball of the real features (``realism_k``, default :data:`.realism.BROKEN_K`, capped
      at ``num_real - 1``; ``realism_keep``, default :data:`.realism.BROKEN_KEEP`); not with
      ``num_real=0``. It is computed on the
      ``contrastive`` features whenever the evaluator has them (as ``features`` or
      ``features2``), otherwise on the first extractor's: on the known-answer sets of
      ``benchmarks/metric_sanity.py`` they separate broken from real images best (97 % of
      speckled images and 92 % of blurred ones broken, 3-4 % of real ones; the ``domain``
      features, trained to ignore what does not change the class: 74 % and 42 %).
      ``evaluators.json`` records the extractor used.

    and (:mod:`.fid_stats`):

    * ``reference_stats``: a ``mu``/``sigma`` ``.npz`` (pytorch-fid / clean-fid layout);
      ``fd`` is computed against it, KID and precision/recall against ``num_real`` real
      images as usual, or not at all with ``num_real=0`` (then only ``fd`` is returned
      and no real image is read). ``evaluators.json`` records the file and its SHA-256
      fingerprint for ``fd``.
    * ``save_reference_stats``: writes ``mu``/``sigma`` of the real features used here
      (the first ``num_real`` images of ``split``) to this ``.npz``.
    """
    stats_path, save_path, num_real = fid_stats.stats_options(cfg)
    second = _second_extractor_options(cfg, num_real)
    realism_k, realism_keep = realism.options(cfg)
    density_k = realism.density_k(cfg)
    dim = feature_dim(cfg, ctx.config.data.name, ctx.spec.image_shape) if stats_path else None
    ref = fid_stats.check_options(cfg, dim)  # the statistics, read before anything is sampled
    extractor, real, gen, info = _setup(ctx, cfg, need_real=num_real != 0)
    fake = gen["features"].astype(np.float64)
    mu, sigma = metrics.feature_statistics(fake)
    results, key_info = {}, {}
    if ref is not None:
        if len(ref[0]) != fake.shape[1]:  # an extractor whose width was not known before
            fid_stats.read_stats(stats_path, fake.shape[1])
        results["fd"] = metrics.frechet_distance(ref[0], ref[1], mu, sigma)
        fd_info = describe(
            extractor, num_samples=info["num_samples"], data=info["data"],
            reference_stats=os.path.abspath(stats_path),
            reference_stats_sha256=file_fingerprint(stats_path),
        )  # fmt: skip
        key_info = {"fd": fd_info, "fd_num_samples": fd_info}
    else:
        results["fd"] = metrics.frechet_distance(real["mu"], real["sigma"], mu, sigma)
    if real is not None:
        kid, _ = metrics.kernel_inception_distance(
            real["features"], fake, int(cfg.get("kid_subsets", 100)),
            int(cfg.get("kid_subset_size", 1000)), seed=_seed(ctx),
        )  # fmt: skip
        precision, recall = metrics.precision_recall(real["features"], fake, k=int(cfg.get("k", 3)))
        density_k = min(density_k, len(real["features"]) - 1)  # a smoke run's handful
        density, coverage = metrics.density_coverage(real["features"], fake, k=density_k)
        results.update(kid=kid, precision=precision, recall=recall, density=density,
                       coverage=coverage)  # fmt: skip
        broken_on = (real["features"], fake, info)  # the features the broken share uses
        if second is not None:
            extractor2, real2, fake2 = _second_features(ctx, cfg, second)
            name2 = extractor2.name
            info2 = describe(extractor2, num_samples=info["num_samples"], data=info["data"],
                             num_real=len(real2), split=info["split"])  # fmt: skip
            kid2, _ = metrics.kernel_inception_distance(
                real2, fake2, int(cfg.get("kid_subsets", 100)),
                int(cfg.get("kid_subset_size", 1000)), seed=_seed(ctx),
            )  # fmt: skip
            p2, r2 = metrics.precision_recall(real2, fake2, k=int(cfg.get("k", 3)))
            d2, c2 = metrics.density_coverage(real2, fake2, k=density_k)
            results[f"fd_{name2}"] = metrics.frechet_distance_from_features(real2, fake2)
            results.update({f"kid_{name2}": kid2, f"precision_{name2}": p2,
                            f"recall_{name2}": r2, f"density_{name2}": d2,
                            f"coverage_{name2}": c2})  # fmt: skip
            key_info.update({f"{m}_{name2}": info2 for m in SET_METRICS})
            if name2 == "contrastive":
                broken_on = (real2, fake2, info2)
        # k is capped below the number of real images (a smoke run's handful).
        k = min(realism_k, len(broken_on[0]) - 1)
        results["broken_share"] = realism.broken_share(broken_on[0], broken_on[1], k, realism_keep)
        key_info["broken_share"] = broken_on[2]
        if save_path:
            saved = _save_reference_stats(save_path, real, info)
            for entry in (info, *key_info.values()):
                entry.update(saved)
    return _finish(ctx, cfg, results, info, key_info)


def _second_extractor_options(cfg, num_real: int):
    """The options of ``cfg``'s second extractor (``features2``), or None when unset.

    Raises:
      UserError: ``features2`` equal to ``features``, or set with ``num_real=0``.
    """
    import ml_collections

    name = cfg.get("features2", "") or ""
    if not name:
        return None
    if name == cfg.get("features", "domain"):
        raise UserError(f"evals option features2={name!r}: the same extractor as features")
    if num_real == 0:
        raise UserError(f"evals option features2={name!r} needs real images; num_real=0 reads none")
    return ml_collections.ConfigDict(dict(cfg.to_dict(), features=name))


def _second_features(ctx, cfg, cfg2):
    """``(extractor, real features [N, D], sample features [M, D])`` of the second extractor,
    float64, for as many samples and real images of the same split as the first."""
    extractor = get_extractor(cfg2, ctx.config.data.name)
    num = int(cfg.get("num_samples", 1000))
    gen = generated_features(ctx, extractor, num)
    real = reference_features(ctx, extractor, cfg.get("split", "eval"),
                              int(cfg.get("num_real", num)))  # fmt: skip
    return extractor, real["features"].astype(np.float64), gen["features"].astype(np.float64)


def _save_reference_stats(path: str, real: dict, info: dict) -> dict:
    """Writes the real features' ``mu``/``sigma`` (process 0); returns the provenance fields
    that name the file (none on other processes)."""
    if jax.process_index() != 0:
        return {}
    fingerprint = fid_stats.write_stats(path, real["mu"], real["sigma"])
    log.info(
        "wrote reference statistics %s: N=%d, feature_dim=%d, sha256=%s (%s split, %s)",
        path, len(real["features"]), len(real["mu"]), fingerprint, info.get("split"),
        info.get("extractor"),
    )  # fmt: skip
    return dict(saved_reference_stats=os.path.abspath(path),
                saved_reference_stats_sha256=fingerprint)  # fmt: skip


def _predictions(extractor, feats: dict) -> tuple[np.ndarray, np.ndarray]:
    if "logits" not in feats:
        raise UserError(
            f"features={extractor.name!r} has no class logits; use 'domain' or 'inception'"
        )
    logits = feats["logits"].astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True), logits.argmax(1)


def previous_coverage(workdir: str, key: str = "class_coverage") -> float | None:
    """``key`` in the latest ``<workdir>/eval/step_<N>.json`` that has it, or None
    (``workdir``: a local path or URL)."""
    found = []
    for path in paths.glob(paths.join(workdir, "eval"), "step_*.json"):
        match = re.search(r"step_(\d+)\.json$", path)
        if match:
            found.append((int(match.group(1)), path))
    for _, path in sorted(found, reverse=True):
        try:
            value = json.loads(paths.read_text(path)).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if value is not None:
            return float(value)
    return None


def classifier(ctx, cfg) -> dict[str, float]:
    """Classifier score, class coverage, class entropy and the smallest class share
    (``class_min_share``: the share of samples predicted as the rarest class) of the
    samples' predicted labels.

    Extra options: ``splits`` of the classifier score (1), ``coverage_threshold`` (0.1).
    Logs a warning when the coverage is below 1 or below the previous evaluation's
    (for GANs the first sign of mode collapse).
    """
    extractor, _, gen, info = _setup(ctx, cfg, need_real=False)
    probs, predicted = _predictions(extractor, gen)
    k = extractor.num_classes
    score, _ = metrics.classifier_score(probs, int(cfg.get("splits", 1)))
    coverage = metrics.class_coverage(predicted, k, float(cfg.get("coverage_threshold", 0.1)))
    results = {
        "classifier_score": score,
        "class_coverage": coverage,
        "class_entropy": metrics.class_entropy(predicted, k),
        "class_min_share": float(metrics.class_histogram(predicted, k).min()),
    }
    labels = gen.get("labels")
    if labels is not None and (labels >= 0).all():
        results["class_accuracy"] = float((predicted == labels).mean())
    key = f"{cfg.get('prefix', '')}class_coverage"
    before = previous_coverage(ctx.workdir, key) if ctx.workdir else None
    if coverage < 1.0 or (before is not None and coverage < before):
        share = metrics.class_histogram(predicted, k)
        log.warning(
            "class coverage %.3f (previous evaluation: %s): samples of classes %s are (nearly) "
            "missing; a falling coverage is the usual sign of mode collapse",
            coverage, "none" if before is None else f"{before:.3f}",
            np.flatnonzero(share < float(cfg.get("coverage_threshold", 0.1)) / k).tolist(),
        )  # fmt: skip
    return _finish(ctx, cfg, results, info)


def diversity(ctx, cfg) -> dict[str, float]:
    """Mean pairwise feature distance of the samples, overall and within each class, and
    of as many real images (``diversity_real``) for scale.

    Classes are the conditioning labels of class-conditional samples, otherwise the
    extractor's predicted labels (no within-class value for ``pixels`` features).
    """
    extractor, real, gen, info = _setup(ctx, cfg)
    results = {
        "diversity": metrics.mean_pairwise_distance(gen["features"]),
        "diversity_real": metrics.mean_pairwise_distance(real["features"]),
    }
    labels = gen.get("labels")
    if labels is None or (labels < 0).any():
        labels = _predictions(extractor, gen)[1] if "logits" in gen else None
    if labels is not None:
        results["diversity_within_class"] = metrics.within_class_diversity(gen["features"], labels)
    return _finish(ctx, cfg, results, info)


def c2st(ctx, cfg) -> dict[str, float]:
    """Classifier two-sample test between held-out real images and samples.

    Extra options: ``hidden`` (128), ``steps`` (500) of the fresh MLP.
    """
    _, real, gen, info = _setup(ctx, cfg)
    out = classifier_two_sample_test(
        real["features"], gen["features"], seed=_seed(ctx),
        hidden=int(cfg.get("hidden", 128)), steps=int(cfg.get("steps", 500)),
    )  # fmt: skip
    info = dict(info, c2st_num_train=out["num_train"], c2st_num_test=out["num_test"])
    return _finish(ctx, cfg, {"c2st_accuracy": out["accuracy"], "c2st_fooled": out["fooled"]}, info)
