"""SimCLR training of the ``contrastive`` feature extractor (:mod:`jaxgen.models.feature_net`).

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML
2020: two random views of each image, a projection head, and the NT-Xent loss that pulls the
two views of an image together and pushes the other ``2B - 2`` views of the batch away.

The views differ in geometry (crop scale, shift, horizontal flip), intensity (contrast,
brightness) and occlusion (a cut-out square). There is deliberately no noise and no blur
augmentation: the features are meant to *see* speckle and blur (the failures of generated
samples the metrics must catch), and a contrastive net becomes invariant to whatever its
augmentations vary.

Used by ``scripts/train_feature_net.py``; evaluation helpers (k-NN accuracy) live here too.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.models.feature_net import FeatureNet

# Ranges of the random view (uniform draws).
CROP_SCALE = (0.7, 1.0)  # side of the crop as a fraction of the image side
MAX_SHIFT = 3.0  # pixels the crop may move past the border (zeros come in)
CONTRAST = (0.6, 1.4)
BRIGHTNESS = (0.7, 1.3)  # multiplicative
CUTOUT_PROB, CUTOUT_SIZE = 0.5, 0.3  # share of views with a zeroed square; side / image side


def random_view(rng: jax.Array, image: jax.Array) -> jax.Array:
    """One augmented view of ``image`` float32 ``[H, W, C]`` in [0, 1] (same shape and range).

    Bilinear crop-and-resize (scale ``CROP_SCALE``, shift up to ``MAX_SHIFT`` px past the
    border, zero fill), horizontal flip (p=0.5), contrast around the image mean and a
    brightness factor, then a zeroed square with probability ``CUTOUT_PROB``.
    """
    h, w, _ = image.shape
    keys = jax.random.split(rng, 8)
    scale = jax.random.uniform(keys[0], (), minval=CROP_SCALE[0], maxval=CROP_SCALE[1])
    room_y = (1.0 - scale) * h / 2.0 + MAX_SHIFT
    room_x = (1.0 - scale) * w / 2.0 + MAX_SHIFT
    ty = jax.random.uniform(keys[1], (), minval=-room_y, maxval=room_y)
    tx = jax.random.uniform(keys[2], (), minval=-room_x, maxval=room_x)
    flip = jnp.where(jax.random.bernoulli(keys[3]), -1.0, 1.0)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                          indexing="ij")  # fmt: skip
    src_y = cy + ty + scale * (yy - cy)
    src_x = cx + tx + scale * flip * (xx - cx)
    view = jax.vmap(
        lambda ch: jax.scipy.ndimage.map_coordinates(ch, [src_y, src_x], order=1, cval=0.0),
        in_axes=-1, out_axes=-1,
    )(image)  # fmt: skip
    contrast = jax.random.uniform(keys[4], (), minval=CONTRAST[0], maxval=CONTRAST[1])
    bright = jax.random.uniform(keys[5], (), minval=BRIGHTNESS[0], maxval=BRIGHTNESS[1])
    mean = view.mean()
    view = jnp.clip(((view - mean) * contrast + mean) * bright, 0.0, 1.0)
    side = int(round(CUTOUT_SIZE * min(h, w)))
    corner = jax.random.randint(keys[6], (2,), 0, jnp.array([h - side + 1, w - side + 1]))
    inside = ((yy >= corner[0]) & (yy < corner[0] + side) & (xx >= corner[1])
              & (xx < corner[1] + side))  # fmt: skip
    cut = jax.random.bernoulli(keys[7], CUTOUT_PROB) & inside
    return jnp.where(cut[..., None], 0.0, view)


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
    """NT-Xent loss (nats per view) of projections ``z1``, ``z2`` ``[B, D]``: row ``i`` of
    each is a view of image ``i``.

    Cosine similarities divided by ``temperature``; each of the ``2B`` views classifies its
    partner among the other ``2B - 1`` views (softmax cross-entropy). ``log(2B - 1)`` when
    every similarity is equal; near 0 when partners coincide and differ from the rest.
    """
    z = jnp.concatenate([z1, z2]).astype(jnp.float32)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
    partner = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
    log_probs = jax.nn.log_softmax(logits, axis=1)
    return -jnp.mean(log_probs[jnp.arange(2 * n), partner])


def make_train_step(net: FeatureNet, tx: optax.GradientTransformation, temperature: float):
    """``step(params, opt_state, images uint8 [B, H, W, C], rng) -> (params, opt_state, loss)``,
    jitted: two random views per image, NT-Xent on the projections, one optimizer update."""

    def loss_fn(params, images, rng):
        x = images.astype(jnp.float32) / 255.0
        keys = jax.random.split(rng, 2 * x.shape[0]).reshape(2, x.shape[0])
        v1 = jax.vmap(random_view)(keys[0], x)
        v2 = jax.vmap(random_view)(keys[1], x)
        _, z = net.apply({"params": params}, jnp.concatenate([v1, v2]), output="projection")
        return nt_xent(z[: x.shape[0]], z[x.shape[0] :], temperature)

    @jax.jit
    def step(params, opt_state, images, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def backbone_params(params: dict) -> dict:
    """``params`` without the projection head (what the extractor keeps)."""
    return {k: v for k, v in params.items() if not k.startswith("head_")}


def embed(
    net: FeatureNet, params, images: np.ndarray, scales=None, batch_size: int = 500
) -> np.ndarray:
    """Features float32 of uint8 images ``[N, H, W, C]``: the extractor's (``[N, sum(channels)]``,
    :func:`~jaxgen.evaluate.feature_net_weights.feature_fn`) with one scale per stage, or the
    last stage's ``[N, channels[-1]]`` (the projection head's input) with ``scales=None``."""
    from jaxgen.evaluate.feature_net_weights import feature_fn

    fn = net.apply if scales is None else feature_fn(net, scales)
    apply = jax.jit(functools.partial(fn, {"params": backbone_params(params)}))
    out = []
    for start in range(0, len(images), batch_size):
        chunk = np.asarray(images[start : start + batch_size], np.float32) / 255.0
        out.append(np.asarray(apply(chunk)))
    return np.concatenate(out)


def knn_accuracy(
    train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
    test_labels: np.ndarray, k: int = 20, chunk: int = 1000,
) -> float:  # fmt: skip
    """Share of test rows whose majority label among the ``k`` most cosine-similar train rows
    is their own (ties: the lowest label)."""

    def unit(f):
        f = np.asarray(f, np.float64)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    train, test = unit(train_feats), unit(test_feats)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for start in range(0, len(test), chunk):
        sims = test[start : start + chunk] @ train.T
        nearest = np.argpartition(-sims, k, axis=1)[:, :k]
        votes = np.zeros((len(nearest), classes))
        np.add.at(votes, (np.arange(len(nearest))[:, None], train_labels[nearest]), 1.0)
        correct += int((votes.argmax(1) == test_labels[start : start + chunk]).sum())
    return correct / len(test)
