"""Diffusion ablations (``configs/ddpm.py``): noise schedule x prediction target, then sampler x
steps on one trained model.

Trained runs (2 x 2): ``{linear,cosine}_{eps,v}`` set the config arguments ``schedule`` and
``prediction`` (Ho et al. 2020 linear betas vs Nichol & Dhariwal 2021 cosine alphas; epsilon vs
v prediction, Salimans & Ho 2022). Sampling-only runs ``linear_eps_<sampler>_<steps>`` reuse the
checkpoints of ``linear_eps`` (no extra training) with ``sample.sampler`` and ``sample.steps``.

  python -m experiments.sweep experiments/ablations/diffusion.py --root runs/diffusion
  python -m experiments.sweep experiments/ablations/diffusion.py:samplers=ddim+heun,steps=10 ...

Arguments: ``samplers`` ('+'-separated, default all four), ``steps`` ('+'-separated sampler
steps, default ``10+20+50``), ``data`` (default: the config's).
"""

from configs.base import parse_args
from experiments.ablations._args import plus_list, plus_numbers
from experiments.spec import Run, sampling_variant

SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp", "heun")


def get_sweep(arg=None):
    a = parse_args(arg, dict(samplers="+".join(SAMPLERS), steps="10+20+50", data=""))
    data = {"data": a["data"]} if a["data"] else {}
    runs = [
        Run(
            f"{schedule}_{prediction}",
            "configs/ddpm.py",
            args=dict(schedule=schedule, prediction=prediction, **data),
            description=f"{schedule} noise schedule, {prediction}-prediction",
        )
        for schedule in ("linear", "cosine")
        for prediction in ("eps", "v")
    ]
    base = runs[0]
    for sampler in plus_list("samplers", a["samplers"], SAMPLERS):
        for steps in plus_numbers("steps", a["steps"], int):
            runs.append(
                sampling_variant(
                    base,
                    f"{base.name}_{sampler}_{steps}",
                    f"{base.name} sampled with {sampler}, {steps} steps",
                    sampler=sampler,
                    steps=steps,
                )
            )
    return runs
