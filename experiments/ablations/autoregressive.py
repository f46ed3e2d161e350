"""Autoregressive ablation (``configs/pixelcnn.py``): PixelCNN vs Gated PixelCNN vs PixelCNN++.

Runs ``pixelcnn`` (masked convolutions, van den Oord et al. 2016a), ``gated`` (gated vertical
and horizontal stacks, van den Oord et al. 2016b) and ``pixelcnn_pp`` (discretized logistic
mixture, Salimans et al. 2017) set the config argument ``variant``; at the same preset they
share data, steps and optimiser. Table 10 compares their exact test bits/dim.

  python -m experiments.sweep experiments/ablations/autoregressive.py --root runs/ar

Arguments: ``variants`` ('+'-separated subset), ``data`` (default: the config's).
"""

from configs.base import parse_args
from experiments.ablations._args import plus_list
from experiments.spec import Run

VARIANTS = ("pixelcnn", "gated", "pixelcnn_pp")


def get_sweep(arg=None):
    a = parse_args(arg, dict(variants="+".join(VARIANTS), data=""))
    data = {"data": a["data"]} if a["data"] else {}
    return [
        Run(v, "configs/pixelcnn.py", args=dict(variant=v, **data), description=f"variant={v}")
        for v in plus_list("variants", a["variants"], VARIANTS)
    ]
