"""VAE ablation (``configs/vae.py``): the KL weight beta (Higgins et al. 2017).

Runs ``beta_<value>`` set the config argument ``beta`` (1 is the plain ELBO). Table 10 shows
the IWAE bits/dim of each, the report their samples and interpolation strips.

  python -m experiments.sweep experiments/ablations/vae.py --root runs/vae_beta
  python -m experiments.sweep experiments/ablations/vae.py:betas=1+4 --root runs/vae_beta

Arguments: ``betas`` ('+'-separated, default ``0.5+1+2+4``), ``data`` (default: the config's).
"""

from configs.base import parse_args
from experiments.ablations._args import plus_numbers
from experiments.spec import Run


def get_sweep(arg=None):
    a = parse_args(arg, dict(betas="0.5+1+2+4", data=""))
    data = {"data": a["data"]} if a["data"] else {}
    return [
        Run(
            f"beta_{beta:g}",
            "configs/vae.py",
            args=dict(beta=beta, **data),
            description=f"beta-VAE, beta={beta:g}",
        )
        for beta in plus_numbers("betas", a["betas"], float)
    ]
