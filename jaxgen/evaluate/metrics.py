"""Sample-quality and diversity metrics on feature arrays (numpy, float64 where it matters).

Every function takes features ``[N, D]`` (rows are samples) or class probabilities
``[N, K]`` and returns Python floats. The feature extractor is chosen elsewhere
(:mod:`jaxgen.evaluate.features`); these functions only follow the published
definitions.
"""

from __future__ import annotations

import numpy as np


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name}: expected [N >= 2, D] features, got shape {x.shape}")
    return x


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of ``features`` ``[N, D]``, float64."""
    f = _as_2d(features, "features")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigh, clipped)."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))`` (Dowson & Landau
    1982), used as FID by Heusel et al., "GANs Trained by a Two Time-Scale Update Rule
    Converge to a Local Nash Equilibrium", NeurIPS 2017.

    The trace of the matrix square root is computed in float64 without a general
    ``sqrtm``: with symmetric roots ``R_i = sigma_i^(1/2)`` (``eigh``, eigenvalues clipped
    at 0), ``tr (sigma1 sigma2)^(1/2) = tr (R1 sigma2 R1)^(1/2)`` is the sum of the
    singular values of ``R1 R2``. This stays real and accurate for singular covariances
    (fewer samples than feature dimensions), where ``scipy.linalg.sqrtm`` of the
    non-symmetric product can return complex values or NaN.

    Args:
      mu1, mu2: means ``[D]``.
      sigma1, sigma2: covariances ``[D, D]``.

    Returns:
      The distance in squared feature units (>= 0 up to rounding).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"shape mismatch: {mu1.shape} vs {mu2.shape}, {sigma1.shape} vs {sigma2.shape}"
        )
    trace_sqrt = np.linalg.svd(_psd_sqrt(sigma1) @ _psd_sqrt(sigma2), compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """:func:`frechet_distance` between the Gaussians fitted to two feature sets ``[N, D]``."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``k(x, y) = (x.y / D + 1)^3``, ``[N, M]``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m, n = len(x), len(y)
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    term_xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    term_yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * kxy.mean())


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: unbiased squared MMD with the cubic polynomial kernel, averaged over subsets.

    Bińkowski et al., "Demystifying MMD GANs", ICLR 2018: ``k(x, y) = (x.y/D + 1)^3``;
    the unbiased estimator is computed on ``num_subsets`` random subsets of
    ``subset_size`` rows drawn without replacement from each set (as in the reference
    implementation; ``subset_size`` is capped at the smaller set's size).

    Args:
      features1, features2: ``[N, D]`` and ``[M, D]``.

    Returns:
      ``(mean, std)`` over subsets. Zero in expectation for one distribution.
    """
    x, y = _as_2d(features1, "features1"), _as_2d(features2, "features2")
    size = min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    values = [
        _mmd2_unbiased(
            x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)]
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _pairwise_sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[len(a), len(b)]``, clipped at 0."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _knn_radii(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance of each row of ``x`` to its k-th nearest other row, ``[N]``."""
    radii = np.empty(len(x))
    for start in range(0, len(x), chunk):
        d = _pairwise_sq_distances(x[start : start + chunk], x)
        # Index k (not k-1): the row itself is at distance 0 and sorts first.
        radii[start : start + chunk] = np.partition(d, k, axis=1)[:, k]
    return radii


def _share_inside_manifold(
    points: np.ndarray, support: np.ndarray, radii: np.ndarray, chunk: int
) -> float:
    inside = np.zeros(len(points), dtype=bool)
    for start in range(0, len(points), chunk):
        d = _pairwise_sq_distances(points[start : start + chunk], support)
        inside[start : start + chunk] = (d <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(
    real: np.ndarray, generated: np.ndarray, k: int = 3, chunk: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019).

    Each set's manifold is the union of balls around its points whose radius is the
    distance to the point's k-th nearest neighbour in the same set (k=3 in the paper).
    Precision: share of generated points inside the real manifold. Recall: share of
    real points inside the generated manifold.

    Args:
      real: ``[N, D]`` real features; generated: ``[M, D]`` generated features.
      k: neighbourhood size.
      chunk: rows per block of the distance matrix (memory ``chunk * max(N, M)``).

    Returns:
      ``(precision, recall)``, each in [0, 1].
    """
    real, generated = _as_2d(real, "real"), _as_2d(generated, "generated")
    if min(len(real), len(generated)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points in each set")
    real_radii = _knn_radii(real, k, chunk)
    gen_radii = _knn_radii(generated, k, chunk)
    precision = _share_inside_manifold(generated, real, real_radii, chunk)
    recall = _share_inside_manifold(real, generated, gen_radii, chunk)
    return precision, recall


def density_coverage(
    real: np.ndarray, generated: np.ndarray, k: int = 5, chunk: int = 1024
) -> tuple[float, float]:
    """Density and coverage (Naeem, Oh, Uh, Choi & Yoo, ICML 2020, k=5 in the paper).

    Around each real point lies a ball whose radius is the distance to its k-th nearest
    other real point. Density: the number of real balls that contain a generated point,
    averaged over the generated points and divided by k (about 1 for samples distributed as
    the real data; it can exceed 1). Coverage: share of real points whose ball contains at
    least one generated point. Unlike precision, density is not fooled by a few isolated
    real points with huge balls: a sample inside one of them alone scores 1/k, not 1.

    Args:
      real: ``[N, D]`` real features; generated: ``[M, D]`` generated features.
      k: neighbourhood size of the real balls.
      chunk: generated rows per block of the distance matrix (memory ``chunk * N``).

    Returns:
      ``(density, coverage)``: density >= 0, coverage in [0, 1].
    """
    real, generated = _as_2d(real, "real"), _as_2d(generated, "generated")
    if len(real) <= k or len(generated) == 0:
        raise ValueError(
            f"density/coverage with k={k} needs more than {k} real points and a sample"
        )
    radii = _knn_radii(real, k, chunk)
    balls_hit = 0
    covered = np.zeros(len(real), dtype=bool)
    for start in range(0, len(generated), chunk):
        inside = _pairwise_sq_distances(generated[start : start + chunk], real) <= radii[None, :]
        balls_hit += int(inside.sum())
        covered |= inside.any(axis=0)
    return balls_hit / (k * len(generated)), float(covered.mean())


def classifier_score(
    probs: np.ndarray, num_splits: int = 1, eps: float = 1e-12
) -> tuple[float, float]:
    """Inception-Score-style classifier score ``exp(E_x KL(p(y|x) || p(y)))``.

    Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016, with the
    domain classifier (or Inception) giving ``p(y|x)``. It is 1 for a predictor that is
    the same for every image and K when the predictions are confident and spread
    evenly over K classes.

    Args:
      probs: ``[N, K]`` class probabilities (rows sum to 1).
      num_splits: the score is computed on this many equal splits (the paper uses 10).

    Returns:
      ``(mean, std)`` over splits.
    """
    p = np.asarray(probs, np.float64)
    scores = []
    for part in np.array_split(p, num_splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + eps) - np.log(marginal + eps))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def class_histogram(predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of samples predicted as each class, ``[K]``."""
    counts = np.bincount(np.asarray(predicted, np.int64), minlength=num_classes)[:num_classes]
    return counts / max(counts.sum(), 1)


def class_coverage(predicted: np.ndarray, num_classes: int, threshold: float = 0.1) -> float:
    """Share of classes the samples cover (a mode-collapse signal).

    A class counts as covered when at least ``threshold / K`` of the samples are
    classified as it (default: a tenth of its share under a uniform class
    distribution), following the mode counting of Srivastava et al., "VEEGAN", NeurIPS
    2017, and Che et al., "Mode Regularized GANs", ICLR 2017, where a mode is captured
    when generated samples are classified into it. 1.0 means every class appears.

    Args:
      predicted: int ``[N]`` predicted class of each sample.
    """
    share = class_histogram(predicted, num_classes)
    return float((share >= threshold / num_classes).mean())


def class_entropy(predicted: np.ndarray, num_classes: int) -> float:
    """Entropy (nats) of the histogram of predicted classes; at most ``log K``.

    A drop below ``log K`` for a model trained on balanced classes signals mode
    dropping (Che et al., ICLR 2017, use this marginal label distribution).
    """
    share = class_histogram(predicted, num_classes)
    nonzero = share[share > 0]
    return float(0.0 - (nonzero * np.log(nonzero)).sum())


def mean_pairwise_distance(features: np.ndarray, max_points: int = 2000, seed: int = 0) -> float:
    """Mean Euclidean distance between distinct pairs of rows of ``features`` ``[N, D]``.

    A diversity measure in feature space (cf. the LPIPS-style pairwise diversity of
    Zhu et al., "Toward Multimodal Image-to-Image Translation", NeurIPS 2017, here with
    the evaluator's features). Uses a random subset of ``max_points`` rows when larger.
    """
    f = _as_2d(features, "features")
    if len(f) > max_points:
        f = f[np.random.default_rng(seed).choice(len(f), max_points, replace=False)]
    d = np.sqrt(_pairwise_sq_distances(f, f))
    n = len(f)
    return float(d.sum() / (n * (n - 1)))


def within_class_diversity(
    features: np.ndarray, labels: np.ndarray, max_points: int = 2000
) -> float:
    """Mean over classes (with >= 2 samples) of :func:`mean_pairwise_distance` inside the class.

    Low values with a high overall diversity mean each class has collapsed to a few
    images even though every class appears (intra-class mode collapse).
    """
    f = _as_2d(features, "features")
    labels = np.asarray(labels)
    values = [
        mean_pairwise_distance(f[labels == c], max_points)
        for c in np.unique(labels)
        if (labels == c).sum() >= 2
    ]
    return float(np.mean(values)) if values else float("nan")
