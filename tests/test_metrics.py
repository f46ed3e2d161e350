"""Metrics against cases with known answers, and the sample evaluators end to end."""

from __future__ import annotations

import json
import logging
import math

import jax
import ml_collections
import numpy as np
import pytest
import scipy.linalg

from jaxgen.evaluate import get_evaluator, metrics
from jaxgen.evaluate.c2st import classifier_two_sample_test


def _random_cov(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- Fréchet distance ------------------------------------------------------------------


def test_fd_diagonal_gaussians_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert metrics.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)


def test_fd_full_covariances_match_textbook_formula():
    rng = np.random.default_rng(0)
    s1, s2 = _random_cov(rng, 6), _random_cov(rng, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert metrics.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)
    assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_fd_stable_for_singular_covariances():
    # Fewer samples than dimensions: rank-deficient covariances, still finite and >= 0.
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((10, 64)), rng.standard_normal((10, 64))
    fd = metrics.frechet_distance_from_features(a, b)
    assert np.isfinite(fd) and fd > 0
    assert metrics.frechet_distance_from_features(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fd_of_samples_null_and_separable():
    rng = np.random.default_rng(2)
    d, n = 8, 4000
    x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    assert metrics.frechet_distance_from_features(x, y) < 0.05  # bias ~ d^2 / n
    shifted = y + 10.0
    assert metrics.frechet_distance_from_features(x, shifted) == pytest.approx(100.0 * d, rel=0.02)


# --- KID -------------------------------------------------------------------------------


def test_kid_point_masses_closed_form():
    a, b = np.full((20, 4), 0.5), np.full((30, 4), -1.0)

    def k(u, v):
        return (u @ v / 4 + 1) ** 3

    expected = k(a[0], a[0]) + k(b[0], b[0]) - 2 * k(a[0], b[0])
    mean, std = metrics.kernel_inception_distance(a, b, num_subsets=3, subset_size=10)
    assert mean == pytest.approx(expected)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_kid_null_and_separable():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((1000, 16)), rng.standard_normal((1000, 16))
    null, _ = metrics.kernel_inception_distance(x, y, num_subsets=20, subset_size=500)
    far, _ = metrics.kernel_inception_distance(x, y + 3.0, num_subsets=20, subset_size=500)
    assert abs(null) < 0.01
    assert far > 1.0


# --- precision / recall ----------------------------------------------------------------


def _line(values):
    return np.stack([np.asarray(values, float), np.zeros(len(values))], axis=1)


def test_precision_recall_constructed_clouds():
    real = _line(np.arange(100))
    # Identical sets: everything is inside.
    assert metrics.precision_recall(real, real) == (1.0, 1.0)
    # Samples cover the left half: each lies 0.5 from a real point (real radii are 2,
    # or 3 at the ends), and the samples' own radii (2, 3 at the ends) reach real points
    # 0..52 -> recall 53/100.
    half = _line(np.arange(50) + 0.5)
    precision, recall = metrics.precision_recall(real, half)
    assert precision == 1.0
    assert recall == pytest.approx(0.53)
    # A far-away cluster: nothing inside either manifold.
    assert metrics.precision_recall(real, _line(np.arange(20) + 1000.0)) == (0.0, 0.0)


def test_precision_recall_chunking_does_not_change_the_answer():
    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((300, 5)), rng.standard_normal((200, 5)) * 1.5
    assert metrics.precision_recall(real, fake, chunk=7) == metrics.precision_recall(real, fake)


def test_density_and_coverage_on_a_square_with_an_outlier():
    # Corners of the unit square (2nd-NN radius 1) and an outlier at (10, 10) whose 2nd-NN
    # radius is |(10, 10) - (1, 0)| = sqrt(181).
    real = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [10.0, 10.0]])
    # (0.5, 0) lies in the balls of (0, 0) and (1, 0); (3, 0), sqrt(149) from the outlier and
    # 2 from (1, 0), in the outlier's ball alone: precision counts it fully, density as 1/k.
    samples = np.array([[0.5, 0.0], [3.0, 0.0]])
    density, coverage = metrics.density_coverage(real, samples, k=2)
    assert density == pytest.approx((2 + 1) / (2 * 2))
    assert coverage == pytest.approx(3 / 5)
    assert metrics.precision_recall(real, np.concatenate([samples, samples]), k=2)[0] == 1.0
    far = metrics.density_coverage(real, np.array([[100.0, 0.0], [0.0, 100.0]]), k=2)
    assert far == (0.0, 0.0)
    with pytest.raises(ValueError, match="k=5"):
        metrics.density_coverage(real, samples, k=5)


def test_density_is_about_one_for_samples_from_the_real_distribution():
    rng = np.random.default_rng(5)
    real, same, wide = (rng.standard_normal((2000, 4)) * s for s in (1.0, 1.0, 3.0))
    density, coverage = metrics.density_coverage(real, same)
    assert 0.9 < density < 1.1 and coverage > 0.9
    assert metrics.density_coverage(real, wide)[0] < 0.2
    assert metrics.density_coverage(real, same, chunk=37) == (density, coverage)


# --- classifier score, coverage, entropy, diversity ------------------------------------


def test_classifier_score_uniform_predictor_is_one():
    assert metrics.classifier_score(np.full((500, 10), 0.1))[0] == pytest.approx(1.0)


def test_classifier_score_confident_and_balanced_is_num_classes():
    probs = np.eye(10)[np.arange(1000) % 10]
    assert metrics.classifier_score(probs)[0] == pytest.approx(10.0, rel=1e-6)
    assert metrics.classifier_score(probs, num_splits=10)[0] == pytest.approx(10.0, rel=1e-6)
    collapsed = np.eye(10)[np.zeros(100, int)]
    assert metrics.classifier_score(collapsed)[0] == pytest.approx(1.0)


def test_class_coverage_and_entropy():
    balanced = np.arange(1000) % 10
    assert metrics.class_coverage(balanced, 10) == 1.0
    assert metrics.class_entropy(balanced, 10) == pytest.approx(math.log(10))
    two = np.arange(1000) % 2
    assert metrics.class_coverage(two, 10) == 0.2
    assert metrics.class_entropy(two, 10) == pytest.approx(math.log(2))
    # One stray sample of class 9 in 1000 is below a tenth of its uniform share (1%).
    stray = np.concatenate([np.arange(999) % 9, [9]])
    assert metrics.class_coverage(stray, 10) == 0.9


def test_diversity_known_distances():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # Pairs: 4 sides of length 1, 2 diagonals of sqrt(2).
    assert metrics.mean_pairwise_distance(square) == pytest.approx((4 + 2 * math.sqrt(2)) / 6)
    labels = np.array([0, 0, 1, 1])  # pairs (0,0)-(1,0) and (0,1)-(1,1): both length 1
    assert metrics.within_class_diversity(square, labels) == pytest.approx(1.0)
    assert metrics.mean_pairwise_distance(np.zeros((5, 3))) == 0.0


# --- C2ST ------------------------------------------------------------------------------


def test_c2st_null_and_separable():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((1000, 8)), rng.standard_normal((1000, 8))
    null = classifier_two_sample_test(x, y, seed=0, steps=200)
    assert abs(null["accuracy"] - 0.5) < 0.07
    assert abs(null["fooled"] - 0.5) < 0.15
    assert null["num_test"] == 1000
    far = classifier_two_sample_test(x, y + 3.0, seed=0, steps=200)
    assert far["accuracy"] > 0.98
    assert far["fooled"] < 0.02


# --- evaluators end to end on a fake context -------------------------------------------


def _save_tiny_classifier(path, constant_class=None):
    """A small random-init domain classifier in the export format; with
    ``constant_class`` its logits ignore the image and always pick that class."""
    from jaxgen.evaluate.features import save_classifier
    from jaxgen.models.classifier import ClassifierNet

    net = ClassifierNet(num_classes=10, channels=(8,), feature_dim=16)
    params = net.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))["params"]
    if constant_class is not None:
        params = jax.tree.map(np.asarray, params)
        params["logits"]["kernel"] = np.zeros_like(params["logits"]["kernel"])
        params["logits"]["bias"] = 20.0 * np.eye(10, dtype=np.float32)[constant_class]
    meta = dict(num_classes=10, channels=[8], feature_dim=16, image_shape=[28, 28, 1])
    save_classifier(str(path), params, meta)
    return str(path)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    return _save_tiny_classifier(tmp_path_factory.mktemp("clf") / "tiny.npz")


def _context(tmp_path, generate_fn):
    from jaxgen.data.sources import ArraySource
    from jaxgen.data.spec import DataSpec
    from jaxgen.evaluate import EvalContext

    rng = np.random.default_rng(0)
    labels = np.arange(600) % 10
    # Class c: a bright square at a class-dependent position plus noise.
    images = rng.integers(0, 40, (600, 28, 28, 1)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 + 2 * c : 8 + 2 * c, 4:20] = 255
    source = ArraySource(images, labels, tuple(str(i) for i in range(10)))
    config = ml_collections.ConfigDict(
        {
            "data": {
                "name": "unit_test",
                "image_size": 28,
                "train_split": "train",
                "eval_split": "test",
            }
        }
    )
    return EvalContext(
        config=config, params=None, model_state=None,
        spec=DataSpec((28, 28, 1), 10), train_source=source, eval_source=source,
        rng=jax.random.key(0), workdir=str(tmp_path), generate_fn=generate_fn,
    ), source  # fmt: skip


def test_evaluators_write_every_key(tmp_path, tiny_classifier, monkeypatch, caplog):
    monkeypatch.setenv("JAXGEN_CACHE_DIR", str(tmp_path / "cache"))
    holder = {}

    def generate(num, rng):
        del rng
        src = holder["source"]
        return {"images": src.images[:num].copy()}  # real images stand in for samples

    ctx, holder["source"] = _context(tmp_path, generate)
    common = dict(num_samples=200, features="domain", classifier_weights=tiny_classifier)
    results = {}
    for kind in ("quality", "classifier", "diversity", "c2st"):
        cfg = ml_collections.ConfigDict(dict(type=kind, **common))
        results.update(get_evaluator(kind)(ctx, cfg))
    keys = ("fd", "kid", "precision", "recall", "classifier_score", "class_coverage",
            "class_entropy", "diversity", "c2st_accuracy", "c2st_fooled")  # fmt: skip
    for key in (*keys, "fd_num_samples"):
        assert key in results and np.isfinite(results[key]), key
    # The samples are the reference images themselves.
    assert results["fd"] == pytest.approx(0.0, abs=1e-6)
    assert results["precision"] == results["recall"] == 1.0
    assert results["fd_num_samples"] == 200
    provenance = json.loads((tmp_path / "eval" / "evaluators.json").read_text())
    assert provenance["fd"]["split"] == "test" and provenance["fd"]["extractor"] == "domain"
    assert provenance["fd"]["num_real"] == 200
    cached = list((tmp_path / "cache" / "refstats").glob("unit_test_test_28px_domain-*_n200.npz"))
    assert len(cached) == 1


def test_coverage_drop_warns_with_known_scores(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("JAXGEN_CACHE_DIR", str(tmp_path / "cache"))
    constant = _save_tiny_classifier(tmp_path / "constant.npz", constant_class=3)
    ctx, source = _context(
        tmp_path, lambda num, rng: {"images": np.zeros((num, 28, 28, 1), np.uint8)}
    )
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "step_10.json").write_text(json.dumps({"class_coverage": 1.0}))
    cfg = ml_collections.ConfigDict(
        dict(type="classifier", num_samples=50, features="domain", classifier_weights=constant)
    )
    with caplog.at_level(logging.WARNING, logger="jaxgen"):
        out = get_evaluator("classifier")(ctx, cfg)
    assert out["classifier_score"] == pytest.approx(1.0)
    assert out["class_coverage"] == pytest.approx(0.1)
    assert out["class_entropy"] == pytest.approx(0.0)
    assert "class coverage 0.100 (previous evaluation: 1.000)" in caplog.text


def test_evaluator_errors_are_user_errors(tmp_path):
    from jaxgen.errors import UserError

    ctx, _ = _context(tmp_path, lambda num, rng: {"images": np.zeros((num, 28, 28, 1), np.uint8)})
    cases = [
        (dict(features="inception"), "needs weights"),
        (dict(features="domain", classifier_weights=str(tmp_path / "none.npz")), "does not exist"),
        (dict(features="resnet"), "expected one of"),
        (dict(features="pixels", split="valid"), "split='valid'"),
    ]
    for options, pattern in cases:
        with pytest.raises(UserError, match=pattern):
            get_evaluator("quality")(ctx, ml_collections.ConfigDict(dict(num_samples=8, **options)))
    with pytest.raises(UserError, match="no class logits"):
        get_evaluator("classifier")(
            ctx, ml_collections.ConfigDict(dict(num_samples=8, features="pixels"))
        )
