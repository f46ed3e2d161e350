"""Per-sample realism score and the share of broken samples (numpy, float64).

Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing Generative Models",
NeurIPS 2019, section 5: around each real feature ``r`` lies a ball whose radius ``rad_k(r)``
is the distance to its k-th nearest other real feature. The realism of a sample ``g`` is

  R(g) = max over kept real r of  rad_k(r) / ||g - r||

``R(g) >= 1`` exactly when ``g`` lies inside some kept ball. As in the paper, only the real
balls with the smallest radii are kept (``keep=0.5``: those up to the median radius), so that
a few isolated real points with huge balls do not make everything near them "realistic".

``broken_share`` is the share of samples with ``R < 1``: outside every kept ball, off the
real manifold. With ``keep=1`` it equals ``1 - precision`` (same k), and a few real outliers
with huge balls swallow samples far from every other real image (uniform noise, in the domain
classifier's features); the pruning removes them. Its defaults, :data:`BROKEN_K` and
:data:`BROKEN_KEEP`, were set so that 4-7 % of held-out real Fashion-MNIST test images count
as broken in both the ``domain`` and ``contrastive`` features (k=3 with the paper's median
pruning calls half of them broken); ``benchmarks/metric_sanity.py`` prints the shares.
"""

from __future__ import annotations

import numpy as np

from jaxgen.errors import UserError
from jaxgen.evaluate.metrics import _as_2d, _knn_radii, _pairwise_sq_distances

BROKEN_K = 10  # neighbourhood size of the real balls for broken_share
BROKEN_KEEP = 0.85  # share of real balls kept for broken_share, smallest radii first
DENSITY_K = 5  # neighbourhood size of density and coverage (Naeem et al. 2020)


def realism_scores(
    real: np.ndarray, generated: np.ndarray, k: int = 3, keep: float = 0.5, chunk: int = 1024
) -> np.ndarray:
    """Realism score ``R(g)`` of each generated feature row, float64 ``[M]`` (>= 0; inf for a
    sample that coincides with a kept real point).

    Args:
      real: ``[N, D]`` real features (N > k); generated: ``[M, D]``.
      k: neighbourhood size of the real balls (3 in the paper).
      keep: share of real balls kept, smallest radii first (0 < keep <= 1; the paper: 0.5).
      chunk: generated rows per block of the distance matrix (memory ``chunk * N``).
    """
    real, generated = _as_2d(real, "real"), np.asarray(generated, np.float64)
    if generated.ndim != 2 or generated.shape[1] != real.shape[1]:
        raise ValueError(
            f"generated: expected [M, {real.shape[1]}] features, got {generated.shape}"
        )
    if len(real) <= k:
        raise ValueError(f"realism with k={k} needs more than {k} real points, got {len(real)}")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep={keep}: expected 0 < keep <= 1")
    radii = _knn_radii(real, k, chunk)  # squared
    kept = radii <= np.quantile(radii, keep)
    support, radii = real[kept], radii[kept]
    scores = np.empty(len(generated))
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, len(generated), chunk):
            d = _pairwise_sq_distances(generated[start : start + chunk], support)
            ratio = radii[None, :] / d  # 0 / 0 (a duplicate real point hit): NaN, skipped
            scores[start : start + chunk] = np.sqrt(np.fmax.reduce(ratio, axis=1))
    return scores


def broken_share(
    real: np.ndarray,
    generated: np.ndarray,
    k: int = BROKEN_K,
    keep: float = BROKEN_KEEP,
    chunk: int = 1024,
) -> float:
    """Share of generated rows with realism ``R < 1`` (outside every kept real ball), in
    [0, 1]; arguments as :func:`realism_scores`."""
    return float((realism_scores(real, generated, k, keep, chunk) < 1.0).mean())


def options(cfg) -> tuple[int, float]:
    """``(k, keep)`` of an evaluator config's ``realism_k`` and ``realism_keep`` (defaults
    :data:`BROKEN_K`, :data:`BROKEN_KEEP`).

    Raises:
      UserError: ``realism_k < 1`` or ``realism_keep`` outside (0, 1].
    """
    k, keep = cfg.get("realism_k", BROKEN_K), cfg.get("realism_keep", BROKEN_KEEP)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"evals option realism_k={k!r}: expected an integer >= 1")
    if isinstance(keep, bool) or not isinstance(keep, int | float) or not 0.0 < keep <= 1.0:
        raise UserError(f"evals option realism_keep={keep!r}: expected 0 < realism_keep <= 1")
    return k, float(keep)


def density_k(cfg) -> int:
    """The ``density_k`` option of a ``quality`` evaluator config (default
    :data:`DENSITY_K`): the neighbourhood size of :func:`.metrics.density_coverage`.

    Raises:
      UserError: not an integer >= 1.
    """
    k = cfg.get("density_k", DENSITY_K)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"evals option density_k={k!r}: expected an integer >= 1")
    return k
