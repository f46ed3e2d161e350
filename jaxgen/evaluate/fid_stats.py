"""Reference statistics for the Fréchet distance: ``mu`` / ``sigma`` ``.npz`` files.

The layout is the one pytorch-fid (``--save-stats``) and clean-fid
(``make_custom_stats``, its downloadable ``<name>_<mode>_<split>_<res>.npz``) write and
read: an ``.npz`` archive holding ``mu``, the float64 mean of the features ``[D]``, and
``sigma``, their unbiased covariance ``[D, D]`` (``np.cov(features, rowvar=False)``).
Files written here hold exactly these two arrays, so either tool reads them, and files
from either tool are read here (other arrays in a file are ignored).

Options of the ``quality`` evaluator (see :func:`jaxgen.evaluate.sample_evals.quality`):
  * ``reference_stats=<path.npz>``: the Fréchet distance ``fd`` is computed against these
    statistics instead of the run's own real images. KID, precision and recall need real
    features, so they are still computed from ``num_real`` images of ``split``; with
    ``num_real=0`` they are omitted and no real image is read.
  * ``save_reference_stats=<path.npz>``: writes ``mu``/``sigma`` of the real features the
    evaluator used (the first ``num_real`` images of ``split``) to this file.

:func:`check_options` validates both before a run starts (``check_evaluators``).
"""

from __future__ import annotations

import os

import numpy as np

from jaxgen.errors import UserError

STATS_OPTIONS = ("reference_stats", "save_reference_stats")
_HOW = (
    "write one with `python scripts/fid_reference_stats.py` or "
    "evals.<name>.save_reference_stats (docs/fid.md)"
)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def read_stats(path: str, feature_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(mu [D], sigma [D, D])`` as float64 from a pytorch-fid / clean-fid ``.npz``.

    Args:
      path: the file.
      feature_dim: the width of the features they are compared with (None: not checked).

    Raises:
      UserError: one line naming ``path``: missing or unreadable file, no ``mu`` or
        ``sigma`` array, shapes that are not ``[D]`` and ``[D, D]``, ``D`` other than
        ``feature_dim``, or values that are not finite real numbers.
    """
    from jaxgen.weight_files import read_npz

    what = f"reference statistics {path}"
    if not path:
        raise UserError(f"reference statistics: no path given; {_HOW}")
    if not os.path.isfile(path):
        reason = "does not exist" if not os.path.exists(path) else "is not a file"
        raise UserError(f"{what} {reason}; {_HOW}")
    try:
        arrays = read_npz(path)
    except UserError as e:  # "weight file <path>: unreadable .npz (...)"
        detail = str(e).removeprefix(f"weight file {path}: ")
        raise UserError(_one_line(f"{what}: {detail}")) from None
    missing = [k for k in ("mu", "sigma") if k not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "nothing"
        raise UserError(
            f"{what} has no {missing[0]!r} array (it holds {found}); expected 'mu' [D] and "
            "'sigma' [D, D] as pytorch-fid and clean-fid write them"
        )
    mu, sigma = arrays["mu"], arrays["sigma"]
    for name, value in (("mu", mu), ("sigma", sigma)):
        if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
            raise UserError(f"{what}: {name!r} has dtype {value.dtype}, expected real numbers")
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise UserError(
            f"{what}: 'mu' has shape {tuple(mu.shape)} and 'sigma' {tuple(sigma.shape)}; "
            "expected [D] and [D, D]"
        )
    if feature_dim is not None and len(mu) != feature_dim:
        raise UserError(
            f"{what} are of {len(mu)}-d features, but the evaluator's extractor gives "
            f"{feature_dim}-d features"
        )
    mu, sigma = mu.astype(np.float64), sigma.astype(np.float64)
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UserError(f"{what}: 'mu' or 'sigma' holds NaN or infinite values")
    return mu, sigma


def write_stats(path: str, mu: np.ndarray, sigma: np.ndarray) -> str:
    """Writes ``mu`` ``[D]`` and ``sigma`` ``[D, D]`` (float64) to ``path`` in the
    pytorch-fid layout, atomically; returns the file's fingerprint (12 hex digits of its
    SHA-256, as ``evaluators.json`` records it).

    Raises:
      UserError: a name not ending in ``.npz``, shapes that do not fit, or a file that
        cannot be written.
    """
    from jaxgen.evaluate.features import file_fingerprint

    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if not path.endswith(".npz"):
        raise UserError(f"reference statistics {path}: expected a name ending in .npz")
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise UserError(
            f"reference statistics {path}: cannot write mu {mu.shape} with sigma {sigma.shape}"
        )
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        np.savez(tmp, mu=mu, sigma=sigma)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(_one_line(f"reference statistics {path}: cannot write ({e})")) from None
    return file_fingerprint(path)


def stats_options(cfg) -> tuple[str, str, int | None]:
    """``(reference_stats, save_reference_stats, num_real or None when unset)`` of ``cfg``."""
    num_real = cfg.get("num_real", None)
    return (
        str(cfg.get("reference_stats", "") or ""),
        str(cfg.get("save_reference_stats", "") or ""),
        None if num_real is None else int(num_real),
    )


def check_options(cfg, feature_dim: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Validates ``reference_stats``, ``save_reference_stats`` and ``num_real`` of one
    evaluator config (before anything is sampled); returns the statistics read from
    ``reference_stats`` (:func:`read_stats`), or None when it is not set.

    Raises:
      UserError: one line: either option on an evaluator other than ``quality``, a bad or
        misshaped statistics file (see :func:`read_stats`), a ``save_reference_stats``
        name that does not end in ``.npz``, is a folder or is the ``reference_stats``
        file, or ``num_real=0`` where real features are needed.
    """
    stats, save, num_real = stats_options(cfg)
    kind = cfg.get("type", "quality")
    if kind != "quality":
        for option in STATS_OPTIONS:
            if cfg.get(option, ""):
                raise UserError(
                    f"{option} is an option of the quality evaluator only, not of {kind!r}"
                )
        return None
    if num_real is not None and num_real < 0:
        raise UserError(f"evals option num_real={num_real}: expected >= 0")
    if num_real == 0 and not stats:
        raise UserError(
            "evals option num_real=0 reads no real images, so the quality evaluator needs "
            "reference_stats=<file.npz> for the Fréchet distance"
        )
    if save:
        if not save.endswith(".npz"):
            raise UserError(
                f"save_reference_stats={save!r}: expected a name ending in .npz (pytorch-fid "
                "reads a path as statistics only then)"
            )
        if os.path.isdir(save):
            raise UserError(f"save_reference_stats={save!r} is a folder")
        if num_real == 0:
            raise UserError(
                "save_reference_stats needs the real images' features; num_real=0 reads none"
            )
        if stats and os.path.abspath(save) == os.path.abspath(stats):
            raise UserError(
                f"save_reference_stats and reference_stats name the same file {save}; "
                "the statistics read would be overwritten by the run's own"
            )
    return read_stats(stats, feature_dim) if stats else None
