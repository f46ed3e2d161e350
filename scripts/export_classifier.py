"""Exports a trained ``configs/classifier.py`` run as the 'domain' feature extractor.

  python launch.py --config=configs/classifier.py:preset=cpu --workdir=/tmp/clf
  python scripts/export_classifier.py --workdir=/tmp/clf

Reads the run's ``config.json`` and latest checkpoint (EMA parameters), measures the
accuracy on the whole eval split (``data.eval_split``) and writes
``jaxgen/evaluate/weights/<data>_classifier.npz`` (or ``--out``): the parameters
plus a JSON ``meta`` record (architecture, image shape, classes, test accuracy).
Exits with status 2 and a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from jaxgen.errors import UserError  # noqa: E402


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist; train with configs/classifier.py first")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.get("family") != "classifier":
        raise UserError(f"{workdir} is a {config.get('family')!r} run, not a classifier")
    return config


def accuracy(method, params, source, batch_size: int = 500) -> float:
    """Share of ``source`` whose argmax logit is its label."""
    logits_fn = jax.jit(method.logits)
    correct = 0
    for start in range(0, len(source), batch_size):
        items = [source[i] for i in range(start, min(start + batch_size, len(source)))]
        images = np.stack([x["image"] for x in items])
        labels = np.asarray([x["label"] for x in items])
        correct += int((np.asarray(logits_fn(params, images)).argmax(-1) == labels).sum())
    return correct / len(source)


def export(workdir: str, out: str = "") -> dict:
    """Writes the weight file; returns its ``meta`` record."""
    from jaxgen.checkpoints import list_steps, load_params_from
    from jaxgen.data.pipeline import data_spec, load_source
    from jaxgen.evaluate.features import default_classifier_weights, save_classifier
    from jaxgen.methods.classifier import Classifier

    config = load_run_config(workdir)
    steps = list_steps(workdir)
    if not steps:
        raise UserError(f"no checkpoint in {workdir}/checkpoints")
    train_source = load_source(config.data, config.data.train_split)
    eval_source = load_source(config.data, config.data.eval_split)
    spec = data_spec(train_source, "none")
    method = Classifier(config, spec)
    example = {"image": np.zeros((1, *spec.image_shape), np.uint8)}
    abstract = jax.eval_shape(method.init_params, jax.random.key(0), example)
    params = load_params_from(workdir, abstract, key="ema_params")
    test_accuracy = accuracy(method, params, eval_source)
    meta = dict(
        data=config.data.name,
        image_shape=list(spec.image_shape),
        num_classes=spec.num_classes,
        class_names=list(getattr(train_source, "class_names", ()) or ()),
        channels=list(method.model_config.channels),
        feature_dim=method.model_config.feature_dim,
        test_accuracy=test_accuracy,
        test_split=config.data.eval_split,
        num_test=len(eval_source),
        train_steps=steps[-1],
        batch_size=config.train.batch_size,
        parameters="ema_params",
    )
    path = out or default_classifier_weights(config.data.name)
    save_classifier(path, params, meta)
    return dict(meta, path=path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the classifier run's workdir")
    parser.add_argument("--out", default="", help="output .npz (default: jaxgen/evaluate/weights/)")
    args = parser.parse_args(argv)
    try:
        meta = export(args.workdir, args.out)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(
        f"wrote {meta['path']}: {meta['data']} classifier after {meta['train_steps']} steps, "
        f"test accuracy {meta['test_accuracy']:.4f} on {meta['num_test']} "
        f"{meta['test_split']} images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
