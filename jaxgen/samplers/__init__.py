"""Diffusion samplers by name (``config.sample.sampler``); see docs/contract.md for the names.

Every sampler is ``sample(denoise, x, grid, rng, **options) -> x_0``, a jitted ``lax.scan`` over
the grid's noise levels driven by a denoiser ``denoise(x, t, alpha, sigma) -> x0_hat`` (see
:mod:`jaxgen.samplers.base`). :class:`SamplerSpec` records how many network evaluations a
number of steps costs and which grid spacing and step count suit the sampler by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from jaxgen.errors import UserError
from jaxgen.samplers import ancestral, ddim, dpm_solver, flow_ode, heun
from jaxgen.samplers.base import Denoiser, Grid, initial_noise, make_grid


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler.

    Attributes:
      fn: ``fn(denoise, x, grid, rng, **options) -> samples`` (same shape as ``x``).
      spacing: default grid spacing (``uniform``, ``logsnr`` or ``karras``).
      default_steps: steps used when ``sample.steps`` is 0 (``None``: every timestep).
      nfe_per_step / nfe_offset: network evaluations = ``nfe_per_step * steps + nfe_offset``.
      takes_eta: ``fn`` takes ``eta``, its stochasticity in [0, 1] (``sample.eta``).
    """

    fn: Callable
    spacing: str
    default_steps: int | None
    nfe_per_step: int = 1
    nfe_offset: int = 0
    takes_eta: bool = False

    def nfe(self, steps: int) -> int:
        return self.nfe_per_step * steps + self.nfe_offset

    def steps_for_nfe(self, nfe: int) -> int:
        """The most steps whose cost does not exceed ``nfe`` (at least 1)."""
        return max(1, (nfe - self.nfe_offset) // self.nfe_per_step)


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(ancestral.sample, "uniform", None),
    "ddim": SamplerSpec(ddim.sample, "uniform", 50, takes_eta=True),
    "dpm_solver_pp": SamplerSpec(dpm_solver.sample, "logsnr", 20, takes_eta=True),
    "heun": SamplerSpec(heun.sample, "karras", 18, nfe_per_step=2, nfe_offset=-1),
    "euler": SamplerSpec(flow_ode.euler, "uniform", 50),
    "flow_heun": SamplerSpec(flow_ode.heun, "uniform", 25, nfe_per_step=2, nfe_offset=-1),
}


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise UserError(f"config key sample.sampler={name!r}: expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def register(name: str, spec: SamplerSpec) -> None:
    SAMPLERS[name] = spec


__all__ = [
    "Denoiser",
    "Grid",
    "SAMPLERS",
    "SamplerSpec",
    "get_sampler",
    "initial_noise",
    "make_grid",
    "register",
]
