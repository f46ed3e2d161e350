"""Discrete-time noise schedules of the variance-preserving (DDPM) process.

The forward process over ``T`` steps is
``q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)``,
so ``q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)`` with ``alpha_t = sqrt(prod_{s<=t}(1 - beta_s))``
and ``sigma_t = sqrt(1 - alpha_t^2)``. Timesteps are 0-based here: index ``0`` is the paper's
``t = 1`` (the least noisy latent) and index ``T - 1`` the paper's ``t = T``.

Everything is computed once in float64 NumPy and handed to JAX as float32 constants.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxgen.errors import UserError

SCHEDULES = ("linear", "cosine")


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. (2020): betas linear from ``beta_start`` to ``beta_end``; float64 ``[T]``."""
    return np.linspace(beta_start, beta_end, timesteps, dtype=np.float64)


def cosine_betas(timesteps: int, offset: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021), ``alpha_bar(t) = cos^2((t/T + s)/(1 + s) pi/2)``; ``[T]``."""

    def alpha_bar(u: np.ndarray) -> np.ndarray:
        return np.cos((u + offset) / (1.0 + offset) * math.pi / 2.0) ** 2

    u = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    betas = 1.0 - alpha_bar(u[1:]) / alpha_bar(u[:-1])
    return np.minimum(betas, max_beta)


@dataclasses.dataclass(frozen=True)
class DiscreteSchedule:
    """Per-timestep constants of the DDPM process, float64 NumPy arrays of shape ``[T]``.

    Attributes:
      betas: ``beta_t``.
      alpha_bar: ``prod_{s<=t} (1 - beta_s)`` (the signal variance, ``alpha_t^2``).
      alpha_bar_prev: ``alpha_bar_{t-1}``, with 1 at index 0.
      posterior_variance: ``beta~_t``, the variance of ``q(x_{t-1} | x_t, x_0)``; 0 at index 0.
    """

    betas: np.ndarray

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    @property
    def alpha_bar(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    @property
    def alpha_bar_prev(self) -> np.ndarray:
        return np.append(1.0, self.alpha_bar[:-1])

    @property
    def alphas(self) -> np.ndarray:
        """``alpha_t = sqrt(alpha_bar_t)``, the scale of ``x_0`` in ``x_t``."""
        return np.sqrt(self.alpha_bar)

    @property
    def sigmas(self) -> np.ndarray:
        """``sigma_t = sqrt(1 - alpha_bar_t)``, the noise standard deviation in ``x_t``."""
        return np.sqrt(1.0 - self.alpha_bar)

    @property
    def posterior_variance(self) -> np.ndarray:
        return self.betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)

    def log_snr(self) -> np.ndarray:
        """``lambda_t = log(alpha_t^2 / sigma_t^2)``, decreasing in ``t``; float64 ``[T]``."""
        return np.log(self.alpha_bar) - np.log1p(-self.alpha_bar)


def make_schedule(
    name: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> DiscreteSchedule:
    """The schedule ``name`` (``linear`` or ``cosine``) over ``timesteps`` steps."""
    if timesteps < 2:
        raise UserError(f"config key model.diffusion.timesteps={timesteps}: expected at least 2")
    if name == "linear":
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise UserError(
                f"config keys model.diffusion.beta_start={beta_start}, beta_end={beta_end}: "
                "expected 0 < beta_start <= beta_end < 1"
            )
        return DiscreteSchedule(linear_betas(timesteps, beta_start, beta_end))
    if name == "cosine":
        return DiscreteSchedule(cosine_betas(timesteps))
    raise UserError(f"config key model.diffusion.schedule={name!r}: expected one of {SCHEDULES}")
