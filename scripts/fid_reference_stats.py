"""Fréchet-distance reference statistics of real images, as a pytorch-fid ``.npz``.

  python scripts/fid_reference_stats.py --data=tfds:cifar10 --split=train \\
      --features=inception --inception_weights=inception_fid.npz --out=cifar10_train.npz
  python scripts/fid_reference_stats.py --images=path/to/pngs --features=inception \\
      --inception_weights=inception_fid.npz --out=pngs.npz

The images are a split of any source jaxgen loads (``--data``: ``fashion_mnist``,
``digits``, ``sprites``, ``tfds:<name>``; ``--data_dir`` as ``data.dir``), in the order
the evaluators read them, or the image files of a folder (``--images``: the extensions
pytorch-fid reads, not recursive, sorted by name). ``--num`` keeps the first N (default:
all) and ``--image_size`` resizes them (PIL bilinear, as the data pipeline's
``data.image_size``; default: their own size). Their features (``--features``:
``inception``, ``domain`` or ``pixels``, with ``--inception_weights`` /
``--classifier_weights``) give ``mu`` (float64 ``[D]``) and ``sigma`` (float64 ``[D, D]``,
``np.cov``), written to ``--out`` in the layout pytorch-fid and clean-fid read. The
statistics equal those of the ``quality`` evaluator's real features for the same images,
size and extractor. Prints N, the feature width and the file's SHA-256 fingerprint (the
first 12 hex digits, as ``evaluators.json`` records it). Errors are one line, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from jaxgen.errors import UserError  # noqa: E402

# The extensions pytorch-fid's fid_score.py reads from a folder (compared case-insensitively).
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")
CHUNK = 1000  # images decoded at a time


def image_files(folder: str) -> list[str]:
    """The image files directly in ``folder``, sorted by name."""
    if not os.path.isdir(folder):
        raise UserError(f"--images={folder}: not a folder")
    files = sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS
        and os.path.isfile(os.path.join(folder, name))
    )
    if not files:
        raise UserError(f"--images={folder}: no {'/'.join(IMAGE_EXTENSIONS)} files in it")
    return files


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[H, W, C]`` -> ``[size, size, C]``, PIL bilinear as ``ResizedSource``."""
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    return np.asarray(pil.resize((size, size), Image.BILINEAR), np.uint8).reshape(size, size, -1)


def folder_chunks(files: list[str], image_size: int, channels: int | None):
    """Yields uint8 ``[n, H, W, C]`` chunks of ``files``: RGB as pytorch-fid reads them
    (``convert('RGB')``), or grey when ``channels`` is 1 or (None) every file is grey."""
    from PIL import Image

    def read(path, mode):
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert(mode), np.uint8)
        except OSError as e:
            raise UserError(f"cannot read image {path}: {' '.join(str(e).split())}") from None

    if channels is None:
        grey = True
        for path in files:
            try:
                with Image.open(path) as im:
                    grey = grey and im.mode in ("1", "L", "LA", "I", "I;16", "F")
            except OSError as e:
                raise UserError(f"cannot read image {path}: {' '.join(str(e).split())}") from None
            if not grey:
                break
        channels = 1 if grey else 3
    mode = "L" if channels == 1 else "RGB"
    shape = None
    for start in range(0, len(files), CHUNK):
        images = []
        for path in files[start : start + CHUNK]:
            image = read(path, mode)
            image = image.reshape(*image.shape[:2], -1)
            if image_size:
                image = _resize(image, image_size)
            if shape is None:
                shape = image.shape
            elif image.shape != shape:
                raise UserError(
                    f"{path} is {image.shape[1]}x{image.shape[0]}, the first image "
                    f"{shape[1]}x{shape[0]}; give --image_size to resize them all"
                )
            images.append(image)
        yield np.stack(images)


def source_chunks(source, num: int):
    """Yields uint8 ``[n, H, W, C]`` chunks of the first ``num`` items of ``source``."""
    for start in range(0, num, CHUNK):
        yield np.stack([source[i]["image"] for i in range(start, min(start + CHUNK, num))])


def compute(args) -> dict:
    """Features of the chosen images -> ``{"mu", "sigma", "num", "extractor", "what"}``."""
    from jaxgen.data.pipeline import ResizedSource
    from jaxgen.data.sources import get_source
    from jaxgen.evaluate.features import get_extractor
    from jaxgen.evaluate.metrics import feature_statistics

    cfg = {"features": args.features, "batch_size": args.batch_size}
    if args.inception_weights:
        cfg["inception_weights"] = args.inception_weights
    if args.classifier_weights:
        cfg["classifier_weights"] = args.classifier_weights
    if args.images and args.features == "domain" and not args.classifier_weights:
        raise UserError("--features=domain with --images needs --classifier_weights")
    extractor = get_extractor(cfg, args.data or "")
    if args.images:
        files = image_files(args.images)[: args.num or None]
        channels = extractor.image_shape[-1] if extractor.image_shape else None
        chunks, what = folder_chunks(files, args.image_size, channels), args.images
    else:
        source = get_source(args.data, args.split, args.data_dir)
        if args.image_size:  # as load_source resizes to data.image_size
            source = ResizedSource(source, args.image_size)
        num = min(args.num or len(source), len(source))
        chunks, what = source_chunks(source, num), f"{args.data} {args.split}"
    features, shape = [], None
    for images in chunks:
        shape = images.shape[1:]
        features.append(extractor(images)["features"])
    feats = np.concatenate(features)
    if len(feats) < 2:
        raise UserError(f"{what}: {len(feats)} image(s); a covariance needs at least 2")
    mu, sigma = feature_statistics(feats)
    return dict(mu=mu, sigma=sigma, num=len(feats), extractor=extractor.key, what=what,
                shape=shape)  # fmt: skip


def main(argv=None) -> int:
    from jaxgen.evaluate.features import EXTRACTORS
    from jaxgen.evaluate.fid_stats import write_stats

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--data", help="a jaxgen source: fashion_mnist, digits, tfds:<name>, ...")
    which.add_argument("--images", help="a folder of PNG/JPEG/... images")
    parser.add_argument("--split", default="train", help="split of --data (default: train)")
    parser.add_argument("--data_dir", default="", help="data.dir for --data")
    parser.add_argument("--out", required=True, help="the .npz to write (mu, sigma)")
    parser.add_argument("--features", default="inception", choices=EXTRACTORS)
    parser.add_argument("--inception_weights", default="")
    parser.add_argument("--classifier_weights", default="", help="default: the data's own")
    parser.add_argument("--image_size", type=int, default=0, help="0: the images' own size")
    parser.add_argument("--num", type=int, default=0, help="the first N images (0: all)")
    parser.add_argument("--batch_size", type=int, default=0, help="0: the extractor's")
    args = parser.parse_args(argv)
    try:
        if not args.out.endswith(".npz"):
            raise UserError(f"--out={args.out}: expected a name ending in .npz")
        for flag in ("image_size", "num", "batch_size"):
            if getattr(args, flag) < 0:
                raise UserError(f"--{flag}={getattr(args, flag)}: expected >= 0")
        out = compute(args)
        fingerprint = write_stats(args.out, out["mu"], out["sigma"])
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    shape = "x".join(str(d) for d in out["shape"])
    print(
        f"wrote {args.out}: N={out['num']}, feature_dim={len(out['mu'])}, "
        f"sha256={fingerprint} ({out['what']}, {shape} images, features {out['extractor']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
