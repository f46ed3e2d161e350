"""Config of the toy family of ``tests/toy_family.py``, smoke-sized, on Fashion-MNIST.

  python launch.py --config=tests/toy_config.py --workdir=runs/toy

Four steps of batch 8, eight samples; evaluators: parameter count, exact likelihood of 16
test images and the pixel-space diversity of 16 samples. No arguments.
"""

from __future__ import annotations

import ml_collections

from configs.base import get_base_config, parse_args, shrink_for_preset


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parse_args(arg, {})  # no arguments: any is an error
    c = get_base_config()
    c.family = "tests.toy_family:ToyMethod"  # a Method subclass by import path
    c.data.name = "fashion_mnist"
    shrink_for_preset(c, "smoke")
    c.optimizer.learning_rate = 0.05
    c.evals.params = dict(type="params", every=0)
    c.evals.likelihood = dict(type="likelihood", num_examples=16, batch_size=8, every=0)
    c.evals.diversity = dict(type="diversity", num_samples=16, features="pixels", every=0)
    return c
