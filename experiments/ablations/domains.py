"""Several image domains: one family config on Fashion-MNIST, digits, sprites and any other
data source (e.g. a TensorFlow Datasets name). Table 7 lists them side by side.

Runs ``<family>_<domain>`` set the config argument ``data`` (each config picks the image size
that suits the source; ``tfds:<name>`` becomes ``tfds-<name>`` in the run name).

  python -m experiments.sweep experiments/ablations/domains.py --root runs/domains
  python -m experiments.sweep experiments/ablations/domains.py:extra=tfds:mnist+tfds:kmnist ...

Arguments: ``family`` (``vae``, ``ddpm``, ``gan`` or ``pixelcnn``; default ``vae``), ``domains``
('+'-separated, default ``fashion_mnist+digits+sprites``), ``extra`` ('+'-separated further
sources appended to ``domains``).
"""

from configs.base import parse_args
from experiments.ablations._args import dir_name, plus_list
from experiments.spec import Run
from jaxgen.errors import UserError

FAMILIES = ("vae", "ddpm", "gan", "pixelcnn")
DOMAINS = ("fashion_mnist", "digits", "sprites")


def get_sweep(arg=None):
    a = parse_args(arg, dict(family="vae", domains="+".join(DOMAINS), extra=""))
    if a["family"] not in FAMILIES:
        raise UserError(f"sweep argument family={a['family']!r}: expected one of {FAMILIES}")
    domains = plus_list("domains", a["domains"])
    if a["extra"]:
        domains += plus_list("extra", a["extra"])
    return [
        Run(
            f"{a['family']}_{dir_name(d)}",
            f"configs/{a['family']}.py",
            args=dict(data=d),
            description=f"{a['family']} on {d}",
        )
        for d in domains
    ]
