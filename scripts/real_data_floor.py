"""The real-data floor: every sample metric between the train and test splits.

  python scripts/real_data_floor.py --data=fashion_mnist --num_samples=1000,10000

The first ``N`` train images play the generated samples and the first ``N`` test
images the reference, through the same evaluators (and the same extractor) that
score models, so a model's numbers can be read against what real data gets at the
same ``N``. Prints a Markdown table and writes ``--out`` (JSON) when given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from jaxgen.errors import UserError  # noqa: E402

EVALS = ("quality", "classifier", "diversity", "c2st")
KEYS = ("fd", "kid", "precision", "recall", "classifier_score", "class_coverage",
        "class_entropy", "diversity", "diversity_real", "diversity_within_class",
        "c2st_accuracy", "c2st_fooled")  # fmt: skip


def floor(data: str, num: int, features: str, workdir: str, **options) -> dict[str, float]:
    """The metrics of ``num`` train images against ``num`` test images of ``data``."""
    from configs.base import get_base_config
    from jaxgen.data.pipeline import data_spec, load_source
    from jaxgen.evaluate import EvalContext, get_evaluator

    config = get_base_config()
    config.data.name = data
    config.data.image_size = 8 if data == "digits" else 28
    train = load_source(config.data, config.data.train_split)
    test = load_source(config.data, config.data.eval_split)
    num = min(num, len(train), len(test))

    def generate(n, rng):
        del rng
        return {"images": np.stack([train[i]["image"] for i in range(n)])}

    ctx = EvalContext(
        config=config, params=None, model_state=None,
        spec=data_spec(train, "none"), train_source=train, eval_source=test,
        rng=jax.random.key(0), workdir=workdir, generate_fn=generate,
    )  # fmt: skip
    results = {}
    for kind in EVALS:
        cfg = ml_collections.ConfigDict(
            dict(type=kind, num_samples=num, features=features, **options)
        )
        results.update(get_evaluator(kind)(ctx, cfg))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--num_samples", default="1000,10000", help="comma-separated N")
    parser.add_argument("--features", default="domain", help="domain | inception | pixels")
    parser.add_argument("--inception_weights", default="")
    parser.add_argument("--classifier_weights", default="", help="default: the committed file")
    parser.add_argument("--out", default="", help="JSON file for the results")
    args = parser.parse_args(argv)
    options = {
        k: v for k, v in (("inception_weights", args.inception_weights),
                          ("classifier_weights", args.classifier_weights)) if v
    }  # fmt: skip
    rows = {}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for n in (int(x) for x in args.num_samples.split(",")):
                start = time.time()
                rows[n] = floor(args.data, n, args.features, workdir, **options)
                rows[n]["seconds"] = time.time() - start
                provenance = json.load(open(os.path.join(workdir, "eval", "evaluators.json")))
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    cpu = platform.processor() or platform.machine()
    hardware = f"{os.cpu_count()}-core CPU ({cpu}), jax {jax.__version__}"
    print(f"Real-data floor: {args.data} train vs test, features={args.features}; {hardware}\n")
    print("| N | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 1) + "|")
    for n, r in rows.items():
        print(f"| {n} | " + " | ".join(f"{r.get(k, float('nan')):.4g}" for k in KEYS) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"data": args.data, "features": args.features, "hardware": hardware,
                       "provenance": provenance, "results": rows}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
