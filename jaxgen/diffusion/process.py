"""Noise processes: how training draws noise levels and how sampling grids are laid out.

Three processes are provided, each written as ``x = alpha * x_0 + sigma * eps``:

* :class:`VPProcess`, the discrete-time variance-preserving process of DDPM, with a linear or
  cosine schedule. The network's time input is the 0-based timestep index (a float; fractional
  values between two timesteps are used by the ``karras`` and ``logsnr`` grids).
* :class:`EDMProcess`, the variance-exploding process of Karras et al. (2022): ``alpha = 1``,
  training noise ``log sigma ~ N(p_mean, p_std^2)``, network time input ``250 * log(sigma)``
  (EDM's ``c_noise = log(sigma) / 4``, times 1000 so that it spans a range like DDPM's indices).
* :class:`FlowProcess`, rectified flow / flow matching (Liu et al. 2022; Lipman et al. 2022):
  the straight path ``alpha = 1 - t``, ``sigma = t`` for ``t`` in [0, 1] (1: pure noise), with
  uniform or logit-normal training times; network time input ``time_scale * t`` (default ``t``).

Grid spacings (``Process.grid(steps, spacing)``):

* ``uniform``: uniform in the network's time (DDIM's evenly spaced timesteps; EDM: log sigma).
* ``logsnr``: uniform in ``log(alpha / sigma)`` (DPM-Solver's ``logSNR`` spacing).
* ``karras``: EDM's ``sigma_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``
  with ``rho = 7``, in the scaled noise level ``sigma / alpha``.

``final_snr > 0`` (the VP and EDM grids) ends the noisy levels where the signal-to-noise ratio
``alpha^2 / sigma^2`` reaches ``final_snr`` instead of at the process's least noisy level; the
sampler's last step then goes from there to the denoiser's ``x_0`` estimate. A network trained
with little weight above some SNR (min-SNR-gamma weighting gives the levels above ``gamma``
weights falling as ``gamma / SNR``) is not asked to denoise where it never learned to.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.diffusion.schedules import DiscreteSchedule
from jaxgen.errors import UserError
from jaxgen.samplers.base import Grid, make_grid

SPACINGS = ("uniform", "logsnr", "karras")
EDM_TIME_SCALE = 250.0


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """EDM's noise levels, decreasing from ``sigma_max`` to ``sigma_min``; float64 ``[steps]``."""
    ramp = np.linspace(0.0, 1.0, steps) if steps > 1 else np.zeros(1)
    inv_max, inv_min = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (inv_max + ramp * (inv_min - inv_max)) ** rho


def _check_steps(steps: int, spacing: str) -> None:
    if steps < 1:
        raise UserError(f"config key sample.steps={steps}: expected a positive number of steps")
    if spacing not in SPACINGS:
        raise UserError(f"sampler spacing {spacing!r}: expected one of {SPACINGS}")


def _final_log_ratio(final_snr: float, least: float, most: float) -> float:
    """``log(sigma / alpha)`` of the grid's last noisy level: ``least`` (the process's least
    noisy level's) for ``final_snr = 0``, else that of ``final_snr``, which must lie strictly
    between the process's noisiest level ``most`` and ``least``."""
    if final_snr == 0:
        return least
    target = -0.5 * np.log(final_snr) if final_snr > 0 else np.nan
    if not least < target < most:
        lo, hi = np.exp(-2.0 * most), np.exp(-2.0 * least)
        raise UserError(
            f"config key sample.final_snr={final_snr!r}: expected 0 (the least noisy level) or "
            f"an SNR between this process's {lo:.3g} and {hi:.3g}"
        )
    return float(target)


@dataclasses.dataclass(frozen=True)
class VPProcess:
    """DDPM's discrete variance-preserving process over ``schedule.timesteps`` steps."""

    schedule: DiscreteSchedule

    @property
    def timesteps(self) -> int:
        return self.schedule.timesteps

    def coefficients(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(alpha, sigma)`` at integer timesteps ``t`` (any shape), float32."""
        alphas = jnp.asarray(self.schedule.alphas, jnp.float32)
        sigmas = jnp.asarray(self.schedule.sigmas, jnp.float32)
        return alphas[t], sigmas[t]

    def sample_train_levels(self, rng: jax.Array, batch: int):
        """Uniform timesteps: ``(t_model, alpha, sigma)``, float32 ``[batch]`` each."""
        t = jax.random.randint(rng, (batch,), 0, self.timesteps)
        alpha, sigma = self.coefficients(t)
        return t.astype(jnp.float32), alpha, sigma

    def grid(self, steps: int, spacing: str = "uniform", final_snr: float = 0.0) -> Grid:
        """``steps`` noisy levels between timestep ``T - 1`` and ``0`` (or the level of SNR
        ``final_snr``, see the module docstring), then the clean level."""
        _check_steps(steps, spacing)
        sched, num = self.schedule, self.timesteps
        # Work in log(sigma / alpha) = -lambda / 2, increasing in t; interpolate t between indices.
        log_ratio = -0.5 * sched.log_snr()
        lo, hi = _final_log_ratio(final_snr, log_ratio[0], log_ratio[-1]), log_ratio[-1]
        if spacing == "uniform":
            last = int(np.round(np.interp(lo, log_ratio, np.arange(num))))
            if steps > num - last:
                raise UserError(
                    f"config key sample.steps={steps}: at most {num - last} for the uniform "
                    "spacing" + (f" ending at sample.final_snr={final_snr}" if final_snr else "")
                )
            t = np.round(np.linspace(num - 1, last, steps)).astype(np.float64)
            return make_grid(t, sched.alphas[t.astype(int)], sched.sigmas[t.astype(int)])
        if spacing == "logsnr":
            targets = np.linspace(hi, lo, steps)
        else:
            targets = np.log(karras_sigmas(np.exp(lo), np.exp(hi), steps))
        t = np.interp(targets, log_ratio, np.arange(num, dtype=np.float64))
        ratio = np.exp(targets)  # sigma / alpha
        alpha = 1.0 / np.sqrt(1.0 + ratio**2)
        return make_grid(t, alpha, ratio * alpha)


@dataclasses.dataclass(frozen=True)
class EDMProcess:
    """The EDM process (Karras et al. 2022, Table 1): ``alpha = 1``, lognormal training noise."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    rho: float = 7.0

    @staticmethod
    def model_time(sigma: jax.Array) -> jax.Array:
        return EDM_TIME_SCALE * jnp.log(sigma)

    def sample_train_levels(self, rng: jax.Array, batch: int):
        """``(t_model, alpha, sigma)``, float32 ``[batch]``; ``log sigma ~ N(p_mean, p_std^2)``."""
        sigma = jnp.exp(self.p_mean + self.p_std * jax.random.normal(rng, (batch,)))
        return self.model_time(sigma), jnp.ones_like(sigma), sigma

    def grid(self, steps: int, spacing: str = "karras", final_snr: float = 0.0) -> Grid:
        """``steps`` noise levels from ``sigma_max`` down to ``sigma_min`` (or to ``sigma`` of
        SNR ``1 / sigma^2 = final_snr``), then the clean level."""
        _check_steps(steps, spacing)
        least, most = np.log(self.sigma_min), np.log(self.sigma_max)
        sigma_min = self.sigma_min
        if final_snr:
            sigma_min = float(np.exp(_final_log_ratio(final_snr, least, most)))
        if spacing == "karras":
            sigmas = karras_sigmas(sigma_min, self.sigma_max, steps, self.rho)
        else:  # uniform in the network's time and in log-SNR are both uniform in log sigma
            sigmas = np.exp(np.linspace(np.log(self.sigma_max), np.log(sigma_min), steps))
        return make_grid(EDM_TIME_SCALE * np.log(sigmas), np.ones(steps), sigmas)


TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclasses.dataclass(frozen=True)
class FlowProcess:
    """The rectified-flow path ``x_t = (1 - t) x_0 + t eps``, ``t`` in [0, 1] (1: pure noise).

    Training times: ``uniform`` on [0, 1), or ``logit_normal``: ``t = sigmoid(mean + std * n)``,
    ``n ~ N(0, 1)`` (Esser et al. 2024). Grids: ``uniform`` is uniform in ``t`` from ``t = 1``
    (``alpha = 0``) down to ``1 / steps``; ``logsnr`` and ``karras`` space the scaled noise
    level ``sigma / alpha = t / (1 - t)`` between ``ratio_max`` and ``ratio_min`` (EDM's range),
    as for the other processes, so they start just short of pure noise.
    """

    time_sampling: str = "logit_normal"
    mean: float = 0.0
    std: float = 1.0
    ratio_min: float = 0.002
    ratio_max: float = 80.0
    time_scale: float = 1.0

    def __post_init__(self):
        if self.time_sampling not in TIME_SAMPLINGS:
            raise UserError(
                f"config key model.flow.time_sampling={self.time_sampling!r}: "
                f"expected one of {TIME_SAMPLINGS}"
            )
        if not self.std > 0:
            raise UserError(f"config key model.flow.std={self.std}: expected > 0")

    def model_time(self, t: jax.Array) -> jax.Array:
        """The network's time input for path times ``t`` (any shape): ``time_scale * t``."""
        return self.time_scale * t

    @staticmethod
    def coefficients(t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(alpha, sigma) = (1 - t, t)``, float32, shaped like ``t``."""
        t = jnp.asarray(t, jnp.float32)
        return 1.0 - t, t

    def sample_times(self, rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Path times in [0, 1] from the configured distribution, float32 ``shape``."""
        if self.time_sampling == "uniform":
            return jax.random.uniform(rng, shape, jnp.float32)
        return jax.nn.sigmoid(self.mean + self.std * jax.random.normal(rng, shape, jnp.float32))

    def sample_train_levels(self, rng: jax.Array, batch: int):
        """``(t_model, alpha, sigma)``, float32 ``[batch]`` each."""
        t = self.sample_times(rng, (batch,))
        alpha, sigma = self.coefficients(t)
        return self.model_time(t), alpha, sigma

    def grid(self, steps: int, spacing: str = "uniform") -> Grid:
        """``steps`` noisy levels from the noisiest down, then the clean level ``t = 0``."""
        _check_steps(steps, spacing)
        if spacing == "uniform":
            t = 1.0 - np.arange(steps, dtype=np.float64) / steps
        else:
            lo, hi = np.log(self.ratio_min), np.log(self.ratio_max)
            if spacing == "logsnr":
                ratio = np.exp(np.linspace(hi, lo, steps))
            else:
                ratio = karras_sigmas(self.ratio_min, self.ratio_max, steps)
            t = ratio / (1.0 + ratio)
        return make_grid(self.time_scale * t, 1.0 - t, t)
