"""Scores a samples ``.npz`` (jaxgen's or a PyTorch peer's) with jaxgen's own metrics.

  python benchmarks/peers/score_samples.py runs/quality_peers/vae/samples/samples_2000.npz
  python benchmarks/peers/score_samples.py peer.npz --num=2000 --num-ref=2000 --out=scores.jsonl

The file holds ``images``, uint8 ``[N, 28, 28, 1]`` (``launch.py --mode=sample`` writes
``<workdir>/samples/samples_<step>.npz``; the peers of ``benchmarks/peers/quality`` write the
same, plus ``train_minutes``, ``steps`` and ``params``, copied into the result). Its first
``--num`` images (default: all) are scored against the first ``--num-ref`` Fashion-MNIST test
images (the evaluators' ``split=eval``) in each feature space of ``--extractors`` (default
``domain,contrastive``; ``<x>`` below):

  fd_<x>, kid_<x>, precision_<x>, recall_<x>, density_<x>, coverage_<x>, broken_share_<x>
      as ``benchmarks/metric_sanity.py`` computes them (:func:`metric_sanity.set_metrics`:
      KID over 20 subsets of up to 500, k=3 for precision and recall, k=5 for density and
      coverage, the broken share with the realism defaults)
  c2st_accuracy_<x>
      :func:`jaxgen.evaluate.c2st.classifier_two_sample_test` with ``--seed`` (0.5: the test
      cannot tell the samples from test images; 1.0: it always can)

Prints one JSON object per file (with the hardware), appended to ``--out`` when given. Needs
jax, not torch.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

METRICS = ("fd", "kid", "precision", "recall", "density", "coverage", "c2st_accuracy",
           "broken_share")  # fmt: skip
INFO_FIELDS = ("train_minutes", "target_minutes", "steps", "params", "sample_seconds", "threads",
               "torch_version")  # fmt: skip


def reference_images(num_ref: int) -> np.ndarray:
    """The first ``num_ref`` Fashion-MNIST test images, uint8 ``[num_ref, 28, 28, 1]``."""
    from jaxgen.data.sources import fashion_mnist

    images = np.asarray(fashion_mnist("test").images)
    if not 10 < num_ref <= len(images):
        raise ValueError(f"num_ref={num_ref}: expected 10 < num_ref <= {len(images)}")
    return images[:num_ref].reshape(num_ref, 28, 28, 1)


def held_out_images(num_ref: int, num: int) -> np.ndarray:
    """The ``num`` Fashion-MNIST test images after the first ``num_ref`` (the reference), uint8
    ``[num, 28, 28, 1]``: real images scored like samples, the best any model can do."""
    from jaxgen.data.sources import fashion_mnist

    images = np.asarray(fashion_mnist("test").images)
    if num_ref + num > len(images):
        raise ValueError(
            f"num_ref + num = {num_ref + num}: more than the {len(images)} test images"
        )
    return images[num_ref : num_ref + num].reshape(num, 28, 28, 1)


class Scorer:
    """Scores uint8 image sets ``[N, 28, 28, 1]`` against fixed reference images; the
    reference features of each extractor are computed once."""

    def __init__(self, reference: np.ndarray, extractors=("domain", "contrastive"), seed: int = 0):
        from benchmarks.metric_sanity import extractor

        self.seed = seed
        self.extractors = {name: extractor(name) for name in extractors}
        self.real = {name: ex(reference)["features"] for name, ex in self.extractors.items()}
        self.num_ref = len(reference)

    def score(self, images: np.ndarray) -> dict[str, float]:
        """``{<metric>_<extractor>: value}`` for every metric of :data:`METRICS`."""
        from benchmarks.metric_sanity import set_metrics
        from jaxgen.evaluate.c2st import classifier_two_sample_test

        out = {}
        for name, ex in self.extractors.items():
            real, fake = self.real[name], ex(images)["features"]
            values = set_metrics(real, fake)
            values["c2st_accuracy"] = classifier_two_sample_test(real, fake, seed=self.seed)[
                "accuracy"
            ]
            out.update({f"{k}_{name}": float(v) for k, v in values.items()})
        return out


def read_samples(path: str, num: int = 0) -> tuple[np.ndarray, dict]:
    """``(images uint8 [num, 28, 28, 1], {field: value} of INFO_FIELDS present)`` of a samples
    file; ``num=0``: every image. Raises ValueError for a file of another layout."""
    with np.load(path, allow_pickle=False) as f:
        if "images" not in f.files:
            raise ValueError(f"{path}: no 'images' array (has {f.files})")
        images = f["images"]
        info = {k: f[k].item() for k in INFO_FIELDS if k in f.files}
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (28, 28, 1):
        raise ValueError(f"{path}: images {images.dtype} {images.shape}, expected uint8 "
                         "[N, 28, 28, 1]")  # fmt: skip
    if num > len(images):
        raise ValueError(f"{path}: {len(images)} images, fewer than --num={num}")
    return images[: num or len(images)], info


def main(argv=None) -> int:
    from benchmarks.common import hardware, write_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="samples .npz files")
    parser.add_argument("--num", type=int, default=0, help="images scored per file (0: all)")
    parser.add_argument("--num-ref", type=int, default=2000, help="test images of reference")
    parser.add_argument("--extractors", default="domain,contrastive")
    parser.add_argument("--seed", type=int, default=0, help="seed of the two-sample test")
    parser.add_argument("--out", default="", help="JSON-lines file to append to")
    args = parser.parse_args(argv)
    try:
        samples = [read_samples(path, args.num) for path in args.files]
        scorer = Scorer(reference_images(args.num_ref), args.extractors.split(","), args.seed)
    except ValueError as e:
        parser.error(str(e))
    info = hardware()
    for path, (images, fields) in zip(args.files, samples, strict=True):
        record = dict(benchmark="score_samples", file=os.path.abspath(path), num=len(images),
                      num_ref=scorer.num_ref, seed=args.seed, **fields,
                      **scorer.score(images), **info)  # fmt: skip
        write_record(record, args.out or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
