"""GAN ablations (``configs/gan.py``): loss x discriminator regulariser.

Losses (``gan.loss``): ``nonsaturating`` (Goodfellow et al. 2014), ``hinge`` (Miyato et al.
2018), ``wasserstein`` (Arjovsky et al. 2017). Regularisers: ``none`` (``model.d_norm=none``),
``sn`` (spectral normalisation, ``model.d_norm=spectral``), ``r1`` (R1 penalty on real data,
Mescheder et al. 2018, ``gan.r1_gamma``) and ``gp`` (WGAN-GP gradient penalty, Gulrajani et al.
2017, ``gan.gp_weight=10``). Runs are named ``<loss>_<regulariser>``.

  python -m experiments.sweep experiments/ablations/gan.py --root runs/gan
  python -m experiments.sweep experiments/ablations/gan.py:losses=hinge,regs=sn+r1 --root ...

Arguments: ``losses``, ``regs`` ('+'-separated subsets), ``r1_gamma`` (default 1.0),
``gp_weight`` (default 10.0), ``data`` (default: the config's).
"""

from configs.base import parse_args
from experiments.ablations._args import plus_list
from experiments.spec import Run

LOSSES = ("nonsaturating", "hinge", "wasserstein")
REGULARISERS = ("none", "sn", "r1", "gp")


def regulariser_overrides(name: str, r1_gamma: float, gp_weight: float) -> dict:
    none = {"model.d_norm": "none", "gan.r1_gamma": 0.0, "gan.gp_weight": 0.0}
    return {
        "none": none,
        "sn": dict(none, **{"model.d_norm": "spectral"}),
        "r1": dict(none, **{"gan.r1_gamma": r1_gamma}),
        "gp": dict(none, **{"gan.gp_weight": gp_weight}),
    }[name]


def get_sweep(arg=None):
    a = parse_args(
        arg,
        dict(
            losses="+".join(LOSSES), regs="+".join(REGULARISERS), r1_gamma=1.0, gp_weight=10.0,
            data="",
        ),
    )  # fmt: skip
    data = {"data": a["data"]} if a["data"] else {}
    return [
        Run(
            f"{loss}_{reg}",
            "configs/gan.py",
            args=dict(loss=loss, **data),
            overrides=regulariser_overrides(reg, a["r1_gamma"], a["gp_weight"]),
            description=f"{loss} loss, discriminator regulariser: {reg}",
        )
        for loss in plus_list("losses", a["losses"], LOSSES)
        for reg in plus_list("regs", a["regs"], REGULARISERS)
    ]
