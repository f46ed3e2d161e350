"""Transfer learning: fine-tuned from one domain versus trained from scratch on another.

Three runs of one family config, all at ``data.image_size=<image_size>`` so that parameter
shapes match across domains:

* ``source_<source>``: trained on the source domain;
* ``finetune_<source>_to_<target>``: trained on the target domain starting from the source
  run's parameters (``--config.init_from=<root>/source_<source>``; fresh optimiser state);
* ``scratch_<target>``: trained on the target domain from a random initialisation.

The last two have the same preset, so the same ``train.num_steps`` (Table 6 compares them at
equal steps). Source and target need the same number of channels (Fashion-MNIST and digits are
both grey).

  python -m experiments.sweep experiments/ablations/transfer.py --root runs/transfer
  python -m experiments.sweep experiments/ablations/transfer.py:family=ddpm --root runs/tl_ddpm

Arguments: ``family`` (``vae``, ``ddpm``, ``gan`` or ``pixelcnn``; default ``vae``), ``source``
(default ``fashion_mnist``), ``target`` (default ``digits``), ``image_size`` (default 28).
"""

from configs.base import parse_args
from experiments.ablations._args import dir_name
from experiments.spec import Run, ref
from jaxgen.errors import UserError

FAMILIES = ("vae", "ddpm", "gan", "pixelcnn")


def get_sweep(arg=None):
    a = parse_args(arg, dict(family="vae", source="fashion_mnist", target="digits", image_size=28))
    if a["family"] not in FAMILIES:
        raise UserError(f"sweep argument family={a['family']!r}: expected one of {FAMILIES}")
    config = f"configs/{a['family']}.py"
    size = {"data.image_size": a["image_size"]}
    src, tgt = dir_name(a["source"]), dir_name(a["target"])
    source = Run(
        f"source_{src}",
        config,
        args=dict(data=a["source"]),
        overrides=size,
        description=f"{a['family']} trained on {a['source']} (transfer source)",
    )
    return [
        source,
        Run(
            f"finetune_{src}_to_{tgt}",
            config,
            args=dict(data=a["target"]),
            overrides=dict(size, init_from=ref(source.name)),
            description=f"{a['family']} fine-tuned on {a['target']} from {a['source']}",
        ),
        Run(
            f"scratch_{tgt}",
            config,
            args=dict(data=a["target"]),
            overrides=size,
            description=f"{a['family']} trained on {a['target']} from scratch",
        ),
    ]
