"""The ``model.diffusion`` config section of the diffusion family, validated, and the
importance sampling of its training timesteps."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxgen.config_section import section_values
from jaxgen.errors import UserError

PROCESSES = ("vp", "edm")
LOSS_WEIGHTINGS = ("uniform", "min_snr")
LEVEL_SAMPLINGS = ("uniform", "importance")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """The ``model.diffusion`` section.

    ``process``: ``vp`` (DDPM's discrete process; ``schedule``, ``timesteps``, ``beta_*``,
    ``prediction`` apply) or ``edm`` (Karras et al.: preconditioned network, lognormal noise;
    ``sigma_*`` and ``p_*`` apply). ``variance``: the reverse-process variance of the ancestral
    sampler and the bound, ``small`` (beta~) or ``large`` (beta). ``loss_weighting``:
    ``uniform`` (the plain MSE on the network's output) or ``min_snr`` (Hang et al. 2023: each
    image's MSE weighted so that its error in x_0 counts ``min(SNR, min_snr_gamma)`` times,
    :func:`~jaxgen.diffusion.objectives.min_snr_weight`). ``level_sampling`` (VP process with
    ``min_snr`` only): ``uniform`` timesteps, or ``importance``: timesteps drawn in proportion to
    their min-SNR weight, each image's MSE then weighted by the mean weight, the same expected
    loss with lower-variance gradients (:func:`importance_levels`). ``input_perturbation``
    (``gamma``, 0: off; Ning et al. 2023, DDPM-IP): the network's training input is noised with
    ``eps + gamma * xi`` (``xi`` a second standard normal draw) while its target stays that of
    ``eps``, so it learns to denoise inputs slightly off the forward process, as its own
    sampling trajectory is (the paper's ``gamma``: 0.1).
    """

    process: str = "vp"
    schedule: str = "linear"
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "eps"
    variance: str = "large"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    loss_weighting: str = "uniform"
    min_snr_gamma: float = 5.0
    level_sampling: str = "uniform"
    input_perturbation: float = 0.0

    @classmethod
    def from_config(cls, cfg) -> DiffusionConfig:
        values = section_values(cls, cfg, "model.diffusion")
        result = cls(**values)
        if result.process not in PROCESSES:
            raise UserError(
                f"config key model.diffusion.process={result.process!r}: "
                f"expected one of {PROCESSES}"
            )
        if result.variance not in ("small", "large"):
            raise UserError(
                f"config key model.diffusion.variance={result.variance!r}: expected small or large"
            )
        if result.loss_weighting not in LOSS_WEIGHTINGS:
            raise UserError(
                f"config key model.diffusion.loss_weighting={result.loss_weighting!r}: "
                f"expected one of {LOSS_WEIGHTINGS}"
            )
        if result.min_snr_gamma <= 0:
            raise UserError(
                f"config key model.diffusion.min_snr_gamma={result.min_snr_gamma}: expected > 0"
            )
        if not 0.0 <= result.input_perturbation <= 1.0:
            raise UserError(
                "config key model.diffusion.input_perturbation="
                f"{result.input_perturbation}: expected in [0, 1]"
            )
        if result.level_sampling not in LEVEL_SAMPLINGS:
            raise UserError(
                f"config key model.diffusion.level_sampling={result.level_sampling!r}: "
                f"expected one of {LEVEL_SAMPLINGS}"
            )
        if result.level_sampling == "importance" and (
            result.process != "vp" or result.loss_weighting != "min_snr"
        ):
            raise UserError(
                "config key model.diffusion.level_sampling='importance': needs process='vp' and "
                f"loss_weighting='min_snr' (got {result.process!r}, {result.loss_weighting!r})"
            )
        return result


def importance_levels(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """``(log_probs [T], loss_weight)`` for drawing timesteps in proportion to ``weights [T]``.

    A uniform timestep's loss ``mean_t w_t * mse_t`` is, in expectation, that of timesteps
    drawn with probability ``w_t / sum(w)`` and weighted by ``mean(w)`` each: the same
    objective, without the timesteps whose tiny weights make them near-empty samples.
    """
    weights = np.asarray(weights, np.float64)
    return np.log(weights / weights.sum()).astype(np.float32), float(weights.mean())
