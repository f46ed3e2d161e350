"""The sample metrics on image sets whose ranking a person knows, in two feature spaces.

  python benchmarks/metric_sanity.py                 # 500 images per set, 1000 reference
  python benchmarks/metric_sanity.py --num=1000 --num_ref=2000 --out=results/metric_sanity.jsonl

Reference: the first ``--num_ref`` Fashion-MNIST test images. Sets of ``--num`` images, all
from test images after those (:func:`known_answer_sets`):

  heldout   real test images the reference does not hold
  blurred   the held-out images, Gaussian blur (sigma 1.5 px)
  speckle   the held-out images, every third one with salt-and-pepper speckle on 25 % of
            its pixels (a third of the set broken, as the issue describes the DDPM preset)
  blocky    the held-out images, every second one pixelated into 4x4-pixel blocks (each
            block its mean): the patch artefacts of an under-trained patch transformer
  oneclass  test images of one class only (trousers)
  fragments a 10x10-pixel crop of each held-out image, in its place on black (what an
            under-trained autoregressive model draws: pieces of a garment)
  noise     uniform noise

For each set and extractor (``domain``, ``contrastive``): Fréchet distance, KID, precision,
recall (k=3), density, coverage (k=5) and the broken share (realism < 1,
:mod:`jaxgen.evaluate.realism`). Prints a
Markdown table and one JSON record per row (with the hardware, as the other benchmarks),
appended to ``--out`` when given. ``tests/test_realism.py`` asserts the orderings.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SET_NAMES = ("heldout", "blurred", "speckle", "blocky", "oneclass", "fragments", "noise")
ONE_CLASS = 1  # trouser
SPECKLE_EVERY, SPECKLE_PIXELS, BLUR_SIGMA = 3, 0.25, 1.5
BLOCKY_EVERY, BLOCK_PIXELS = 2, 4
FRAGMENT_PIXELS = 10


def speckle(images: np.ndarray, rng: np.random.Generator, every: int = SPECKLE_EVERY,
            share: float = SPECKLE_PIXELS) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """uint8 ``[N, H, W, C]`` with salt-and-pepper on ``share`` of the pixels of every
    ``every``-th image; returns ``(images, bool [N] speckled)``."""
    out = images.copy()
    hit = np.arange(len(images)) % every == 0
    for i in np.flatnonzero(hit):
        mask = rng.random(images.shape[1:3]) < share
        out[i][mask] = np.where(rng.random(int(mask.sum())) < 0.5, 0, 255)[:, None]
    return out, hit


def pixelate(images: np.ndarray, every: int = BLOCKY_EVERY,
             block: int = BLOCK_PIXELS) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """uint8 ``[N, H, W, C]`` with every ``every``-th image made of ``block x block``-pixel
    blocks, each the mean of its pixels (H and W divisible by ``block``); returns
    ``(images, bool [N] pixelated)``."""
    n, h, w, c = images.shape
    hit = np.arange(n) % every == 0
    blocks = images[hit].reshape(-1, h // block, block, w // block, block, c)
    means = np.round(blocks.astype(np.float32).mean(axis=(2, 4), keepdims=True))
    out = images.copy()
    out[hit] = np.broadcast_to(means, blocks.shape).reshape(-1, h, w, c).astype(np.uint8)
    return out, hit


def fragments(images: np.ndarray, rng: np.random.Generator,
              size: int = FRAGMENT_PIXELS) -> np.ndarray:  # fmt: skip
    """uint8 ``[N, H, W, C]``: of each image only a ``size x size`` crop at a random place,
    kept where it was, the rest black."""
    n, h, w, _ = images.shape
    rows, cols = rng.integers(0, h - size + 1, n), rng.integers(0, w - size + 1, n)
    out = np.zeros_like(images)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        out[i, r : r + size, c : c + size] = images[i, r : r + size, c : c + size]
    return out


def blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur of uint8 ``[N, H, W, C]`` over H and W (``sigma`` in pixels)."""
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(images.astype(np.float32), sigma=(0, sigma, sigma, 0), mode="constant")
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def known_answer_sets(num: int = 500, num_ref: int = 1000, seed: int = 0):
    """``(reference, sets, broken)``: uint8 reference images ``[num_ref, 28, 28, 1]``, a dict
    of the sets of :data:`SET_NAMES` (uint8 ``[num, 28, 28, 1]`` each) and a dict of the bool
    ``[num]`` masks of the altered images in ``sets["speckle"]`` and ``sets["blocky"]``.
    Deterministic for a ``seed``."""
    from jaxgen.data.sources import fashion_mnist

    test = fashion_mnist("test")
    images, labels = np.asarray(test.images), np.asarray(test.labels)
    if num_ref + num > len(images):
        raise ValueError(f"num_ref + num = {num_ref + num} > {len(images)} test images")
    rng = np.random.default_rng(seed)
    reference, rest, rest_labels = images[:num_ref], images[num_ref:], labels[num_ref:]
    heldout = rest[:num]
    speckled, speckle_hit = speckle(heldout, rng)
    blocky, blocky_hit = pixelate(heldout)
    sets = {
        "heldout": heldout,
        "blurred": blur(heldout),
        "speckle": speckled,
        "blocky": blocky,
        "oneclass": rest[rest_labels == ONE_CLASS][:num],
        "noise": rng.integers(0, 256, heldout.shape, dtype=np.uint8),
        "fragments": fragments(heldout, rng),
    }
    return reference, sets, {"speckle": speckle_hit, "blocky": blocky_hit}


def set_metrics(
    real: np.ndarray, fake: np.ndarray, k: int = 3, kid_subsets: int = 20
) -> dict[str, float]:
    """FD, KID (``kid_subsets`` subsets of up to 500), precision, recall (``k``), density,
    coverage and broken share (the evaluator's defaults) of features ``fake`` against
    ``real``."""
    from jaxgen.evaluate import metrics, realism

    precision, recall = metrics.precision_recall(real, fake, k=k)
    density, coverage = metrics.density_coverage(real, fake, k=realism.DENSITY_K)
    kid, _ = metrics.kernel_inception_distance(real, fake, num_subsets=kid_subsets, subset_size=500)
    return dict(
        fd=metrics.frechet_distance_from_features(real, fake),
        kid=kid,
        precision=precision,
        recall=recall,
        density=density,
        coverage=coverage,
        broken_share=realism.broken_share(real, fake),
    )


def extractor(name: str):
    import ml_collections

    from jaxgen.evaluate.features import get_extractor

    return get_extractor(ml_collections.ConfigDict(dict(features=name)), "fashion_mnist")


def main(argv=None) -> int:
    from benchmarks.common import hardware, write_record
    from jaxgen.evaluate import realism

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=500)
    parser.add_argument("--num_ref", type=int, default=1000)
    parser.add_argument("--extractors", default="domain,contrastive")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    reference, sets, altered = known_answer_sets(args.num, args.num_ref, args.seed)
    info = hardware()
    rows = []
    for name in args.extractors.split(","):
        ex = extractor(name)
        real = ex(reference)["features"]
        for set_name in SET_NAMES:
            fake = ex(sets[set_name])["features"]
            values = set_metrics(real, fake)
            record = dict(benchmark="metric_sanity", extractor=ex.key, set=set_name,
                          num=args.num, num_ref=args.num_ref, **values, **info)  # fmt: skip
            if set_name in altered:
                hit = altered[set_name]
                scores = realism.realism_scores(real, fake, realism.BROKEN_K, realism.BROKEN_KEEP)
                record.update(altered_share=float(hit.mean()),
                              broken_among_altered=float((scores[hit] < 1).mean()),
                              broken_among_clean=float((scores[~hit] < 1).mean()))  # fmt: skip
            write_record(record, args.out or None)
            rows.append(record)
    shares = ", ".join(f"{n} set {h.mean():.1%} altered" for n, h in altered.items())
    print(f"\n{info['hardware']}; {args.num} images per set against {args.num_ref} test images; "
          f"{shares}\n")  # fmt: skip
    print("| set | extractor | FD | KID | precision | recall | density | coverage | broken share |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (SET_NAMES.index(r["set"]), r["extractor"])):
        print(f"| {r['set']} | {r['extractor'].split('-')[0]} | {r['fd']:.4g} | {r['kid']:.4g} | "
              f"{r['precision']:.3f} | {r['recall']:.3f} | {r['density']:.3f} | "
              f"{r['coverage']:.3f} | {r['broken_share']:.1%} |")  # fmt: skip
    for r in rows:
        if r["set"] in altered:
            print(f"{r['extractor'].split('-')[0]}: broken among the altered images of the "
                  f"{r['set']} set {r['broken_among_altered']:.1%}, among its clean ones "
                  f"{r['broken_among_clean']:.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
