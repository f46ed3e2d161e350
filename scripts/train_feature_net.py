"""Trains the ``contrastive`` feature extractor (SimCLR, no labels) and writes its weight file.

  nice -n 19 python scripts/train_feature_net.py                 # Fashion-MNIST, as shipped
  python scripts/train_feature_net.py --data=digits --steps=300 --out=/tmp/digits.npz

A :class:`~jaxgen.models.feature_net.FeatureNet` (residual blocks with GroupNorm; independent
of the domain classifier in architecture and recipe) is trained with the NT-Xent loss on two
augmented views of each image of the train split (:mod:`jaxgen.evaluate.simclr`: crops,
shifts, flips, contrast, brightness, cut-out; no noise, no blur). The extractor's features
are the pooled outputs of every stage, each scaled by one over the root of its total variance
on ``--probe_train`` train images (:mod:`jaxgen.evaluate.feature_net_weights`). Then, on the
test split, labels are used once to measure those features: k-NN accuracy (k=20, cosine,
against the same train images) and linear-probe accuracy (softmax regression). Writes
``jaxgen/evaluate/weights/<data>_contrastive.npz`` (or ``--out``): the backbone's parameters
and a JSON ``meta`` with the architecture, the stage scales, the recipe and the accuracies.
``--from_weights=<npz>`` skips training and re-exports that file's network (its recipe and
steps are kept). Errors are one line and exit status 2.

The shipped file: the defaults below, 200 steps of batch 256 (about 14 minutes on a shared
2-core CPU; ``train_seconds`` in its meta).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from jaxgen.errors import UserError  # noqa: E402


def load_split(data: str, data_dir: str, image_size: int, split: str):
    """uint8 images ``[N, H, W, C]`` and int labels ``[N]`` of a split, through the pipeline's
    source (resized to ``image_size``)."""
    import ml_collections

    from jaxgen.data.pipeline import load_source

    cfg = ml_collections.ConfigDict(dict(name=data, dir=data_dir, image_size=image_size))
    source = load_source(cfg, split)
    inner = getattr(source, "source", None)
    if not source._resize and hasattr(inner, "images"):  # array-backed: no per-item copy
        return np.asarray(inner.images), np.asarray(inner.labels)
    items = [source[i] for i in range(len(source))]
    return np.stack([x["image"] for x in items]), np.asarray([x["label"] for x in items])


def linear_probe(train_x, train_y, test_x, test_y, steps: int = 500, lr: float = 0.05) -> float:
    """Test accuracy of softmax regression on standardised features (full-batch Adam)."""
    import jax
    import jax.numpy as jnp
    import optax

    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x, xt = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    params = {"w": jnp.zeros((x.shape[1], classes)), "b": jnp.zeros((classes,))}
    tx = optax.adam(lr)

    def loss(p):
        logits = x @ p["w"] + p["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean()

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    predicted = np.asarray(xt @ params["w"] + params["b"]).argmax(1)
    return float((predicted == test_y).mean())


def train(args, images: np.ndarray, net) -> tuple[dict, dict]:
    """SimCLR on uint8 ``images``; returns the parameters (with the projection head) and the
    provenance fields of the weight file's meta."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxgen.evaluate import simclr

    example = jnp.zeros((1, *images.shape[1:]), jnp.float32)
    params = net.init(jax.random.key(args.seed), example, output="projection")["params"]
    warmup = min(args.warmup, args.steps - 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.learning_rate, warmup, args.steps)
    tx = optax.adamw(schedule, weight_decay=args.weight_decay)
    opt_state = tx.init(params)
    step = simclr.make_train_step(net, tx, args.temperature)
    rng = np.random.default_rng(args.seed)
    key = jax.random.key(args.seed + 1)
    start, order, pos = time.time(), rng.permutation(len(images)), 0
    for i in range(args.steps):
        if pos + args.batch_size > len(order):
            order, pos = rng.permutation(len(images)), 0
        batch = images[np.sort(order[pos : pos + args.batch_size])]
        pos += args.batch_size
        params, opt_state, loss = step(params, opt_state, batch, jax.random.fold_in(key, i))
        if (i + 1) % args.log_every == 0 or i + 1 == args.steps:
            print(f"step {i + 1}/{args.steps}: nt_xent {float(loss):.4f} "
                  f"({time.time() - start:.0f} s)", flush=True)  # fmt: skip
    provenance = dict(
        recipe=(
            f"SimCLR NT-Xent (temperature {args.temperature}, projection head "
            f"{args.channels[-1]}-{args.projection_dim}, dropped), views: crop scale "
            f"{simclr.CROP_SCALE}, shift <= {simclr.MAX_SHIFT} px past the border, h-flip, "
            f"contrast {simclr.CONTRAST}, brightness {simclr.BRIGHTNESS}, cut-out "
            f"p={simclr.CUTOUT_PROB}; no noise, no blur. AdamW lr {args.learning_rate} "
            f"(warmup {args.warmup}, cosine), weight decay {args.weight_decay}, seed {args.seed}"
        ),
        train_split=args.train_split,
        train_steps=args.steps,
        batch_size=args.batch_size,
        train_seconds=round(time.time() - start, 1),
        final_loss=float(loss),
    )
    return params, provenance


PROVENANCE = ("recipe", "train_split", "train_steps", "batch_size", "train_seconds", "final_loss")


def read_trained(path: str) -> tuple[dict, dict]:
    """``(backbone params, meta)`` of a weight file this script wrote before (an older one
    without ``stage_scales`` too): for ``--from_weights``."""
    import json

    from jaxgen.evaluate.inception_weights import unflatten
    from jaxgen.weight_files import read_npz

    arrays = read_npz(path)
    try:
        meta = json.loads(str(arrays["meta"]))
        missing = [k for k in ("channels", "blocks", "groups", *PROVENANCE) if k not in meta]
    except (KeyError, ValueError, TypeError):
        meta, missing = {}, ["meta"]
    if missing:
        raise UserError(f"--from_weights={path}: not written by this script (no {missing[0]})")
    flat = {k[len("params/") :]: v for k, v in arrays.items() if k.startswith("params/")}
    return unflatten(flat), meta


def export(args, net, params, provenance: dict) -> dict:
    """Scales the stages on train images, measures k-NN and linear-probe accuracy of the
    extractor's features on the test split, writes the weight file; returns its meta."""
    from jaxgen.evaluate import feature_net_weights, simclr

    train_x, train_y = load_split(args.data, args.data_dir, args.image_size, args.train_split)
    test_x, test_y = load_split(args.data, args.data_dir, args.image_size, args.test_split)
    pick = np.random.default_rng(0).permutation(len(train_x))[: args.probe_train]
    channels = list(net.channels)
    raw = simclr.embed(net, params, train_x[pick], scales=[1.0] * len(channels))
    blocks = np.split(raw.astype(np.float64), np.cumsum(channels)[:-1], axis=1)
    scales = [float(1.0 / np.sqrt(b.var(axis=0).sum() + 1e-12)) for b in blocks]
    f_train = simclr.embed(net, params, train_x[pick], scales=scales)
    f_test = simclr.embed(net, params, test_x, scales=scales)
    last_train = simclr.embed(net, params, train_x[pick])
    last_test = simclr.embed(net, params, test_x)
    meta = dict(
        provenance,
        data=args.data,
        image_shape=list(train_x.shape[1:]),
        channels=channels,
        blocks=net.blocks,
        groups=net.groups,
        stage_scales=scales,
        feature_dim=int(sum(channels)),
        test_split=args.test_split,
        num_test=len(test_x),
        probe_train=len(pick),
        knn_k=20,
        knn_accuracy=simclr.knn_accuracy(f_train, train_y[pick], f_test, test_y, k=20),
        linear_probe_accuracy=linear_probe(f_train, train_y[pick], f_test, test_y),
        knn_accuracy_last_stage=simclr.knn_accuracy(
            last_train, train_y[pick], last_test, test_y, k=20
        ),
    )
    path = args.out or feature_net_weights.default_weights(args.data)
    feature_net_weights.save(path, simclr.backbone_params(params), meta)
    return dict(meta, path=path)


def run(args) -> dict:
    from jaxgen.models.feature_net import FeatureNet

    if args.from_weights:
        params, old = read_trained(args.from_weights)
        net = FeatureNet(channels=tuple(old["channels"]), blocks=int(old["blocks"]),
                         groups=int(old["groups"]))  # fmt: skip
        return export(args, net, params, {k: old[k] for k in PROVENANCE})
    images, _ = load_split(args.data, args.data_dir, args.image_size, args.train_split)
    net = FeatureNet(channels=tuple(args.channels), blocks=args.blocks, groups=args.groups,
                     projection_dim=args.projection_dim)  # fmt: skip
    params, provenance = train(args, images, net)
    return export(args, net, params, provenance)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--test_split", default="test")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--projection_dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe_train", type=int, default=10_000)
    parser.add_argument("--log_every", type=int, default=25)
    parser.add_argument("--out", default="", help="output .npz (default: jaxgen/evaluate/weights/)")
    parser.add_argument(
        "--from_weights",
        default="",
        help="skip training: re-export the network of this weight file "
        "(its recipe and steps are kept; scales and accuracies are recomputed)",
    )
    args = parser.parse_args(argv)
    try:
        if args.steps < 1 or args.batch_size < 2 or min(args.channels) < 1:
            raise UserError("--steps >= 1, --batch_size >= 2 and positive --channels expected")
        if args.temperature <= 0:
            raise UserError(f"--temperature={args.temperature}: expected > 0")
        meta = run(args)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(
        f"wrote {meta['path']}: {meta['data']} contrastive features ({meta['feature_dim']}-d) "
        f"after {meta['train_steps']} steps of batch {meta['batch_size']}; "
        f"{meta['test_split']} k-NN accuracy {meta['knn_accuracy']:.4f} (last stage alone "
        f"{meta['knn_accuracy_last_stage']:.4f}), linear probe "
        f"{meta['linear_probe_accuracy']:.4f} ({meta['num_test']} images)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
