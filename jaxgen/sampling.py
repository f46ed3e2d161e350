"""How a family draws its images: the sampling options, one typed, hashable value.

:class:`SampleOptions` holds the ``sample.sampler``, ``steps``, ``guidance``, ``eta``,
``spacing``, ``final_snr`` and ``drs_percentile`` of a config. A family's
``Method.resolve_sample_options`` checks it once, before anything compiles, and fills in the
family's defaults; ``Method.sample(..., options=)`` then draws with it. Being frozen and
hashable, it can be a static argument of ``jax.jit``: each distinct value compiles its own
sampler.
"""

from __future__ import annotations

import dataclasses
import numbers

from jaxgen.errors import UserError

_KINDS = {"str": str, "int": numbers.Integral, "float": numbers.Real}


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """Sampler options; ``""`` and ``0`` mean the family's or the sampler's default.

    Attributes:
      sampler: the sampler's name (diffusion: ``ddpm``, ``ddim``, ``dpm_solver_pp``, ``heun``;
        PixelCNN: ``fast``, ``plain``).
      steps: noise levels the sampler visits (network evaluations: see ``SamplerSpec.nfe``).
      guidance: classifier-free guidance scale (0: unconditional, 1: conditional, above 1:
        sharper samples).
      eta: the stochasticity of DDIM and DPM-Solver++ in [0, 1] (0: deterministic, the
        probability-flow ODE; DDIM 1: ancestral; DPM-Solver++ 1: the reverse SDE).
      spacing: the diffusion grid's spacing (``uniform``, ``logsnr`` or ``karras``).
      final_snr: the signal-to-noise ratio ``alpha^2 / sigma^2`` of the diffusion grid's last
        noisy level, from which the sampler returns the denoiser's estimate of the image (0:
        the process's least noisy level; :mod:`jaxgen.diffusion.process`).
      drs_percentile: GAN discriminator rejection sampling (``sampler="drs"``): the
        percentile, in [0, 100), of the burn-in draws' acceptance scores at which a draw is
        kept with probability 1/2; higher keeps fewer, more real-looking draws (0: 95;
        :mod:`jaxgen.gan.rejection`).
    """

    sampler: str = ""
    steps: int = 0
    guidance: float = 0.0
    eta: float = 0.0
    spacing: str = ""
    final_snr: float = 0.0
    drs_percentile: float = 0.0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_config(cls, sample) -> SampleOptions:
        """The options of a config's ``sample`` section; keys it lacks keep their defaults."""
        return cls(**{name: sample[name] for name in cls.names() if name in sample})

    def replace(self, **overrides) -> SampleOptions:
        """A copy with ``overrides`` (option name -> value; None keeps the current value).

        Raises:
          UserError: an unknown option, or a value of the wrong type (an int is a float).
        """
        fields = {f.name: f.type for f in dataclasses.fields(self)}
        changes = {}
        for name, value in overrides.items():
            if value is None:
                continue
            if name not in fields:
                raise UserError(f"no sample option {name!r}; expected one of {list(fields)}")
            kind = fields[name]
            if isinstance(value, bool) or not isinstance(value, _KINDS[kind]):
                raise UserError(f"{name}={value!r}: expected {kind}")
            changes[name] = {"str": str, "int": int, "float": float}[kind](value)
        return dataclasses.replace(self, **changes)
