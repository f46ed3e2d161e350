"""k-means of the training images, whose cluster indices condition a model trained without
labels (``gan.clusters``, ``model.clusters`` of the PixelCNN).

A continuous latent maps onto a connected set, so an unconditional generator of classes that
look nothing alike also draws images between them; conditioning on a cluster of the real
images lets it keep such modes apart without labels (as Sage et al., 2018, and Liu et al.,
2020, condition on clusters of learned features; here the pixels are clustered, so nothing
trained elsewhere is used). An autoregressive model commits to the cluster before its first
pixel instead of deciding row by row what it draws.

Before the first step the trainer fits the centroids to up to :data:`FIT_EXAMPLES` training
images spread over the split (:func:`fit`: k-means++ seeding, then :data:`FIT_ITERATIONS`
Lloyd iterations). While training they follow mini-batch k-means (Sculley, 2010): each real
image is assigned to its nearest centroid, and every centroid moves to the running mean of all
the images assigned to it so far (a step of ``1 / count`` per image). The counts also give
each cluster's share of the data, from which generated images draw their cluster.

State: ``{"centroids": float32 [K, D], "counts": float32 [K]}`` with ``D = H * W * C`` in the
model's ``[-1, 1]`` scale.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxgen.errors import UserError

STATE_KEY = "clusters"  # the model_state entry that holds the state
FIT_EXAMPLES = 20_000  # training images the centroids are fitted to before the first step
FIT_BYTES = 1 << 30  # ... fewer where their float32 pixels would take more memory than this
FIT_ITERATIONS = 30  # Lloyd iterations after the k-means++ seeding


def placeholder_state(k: int, image_shape: tuple[int, ...]) -> dict[str, jax.Array]:
    """The state's shapes and dtypes for ``k`` clusters of images ``image_shape``: zero
    centroids, each counted once. A fresh run replaces it by :func:`fit_model_state` before
    its first step; a resumed one by its checkpoint."""
    dims = math.prod(image_shape)
    return {"centroids": jnp.zeros((k, dims), jnp.float32), "counts": jnp.ones((k,), jnp.float32)}


def fit_count(image_shape: tuple[int, ...], available: int, k: int, what: str) -> int:
    """How many of ``available`` training images :func:`fit` is given (0 for ``k = 0``: no
    clusters): at most :data:`FIT_EXAMPLES`, and fewer for images so large that their float32
    pixels would exceed :data:`FIT_BYTES`. Raises a one-line error, naming the config key
    ``what``, when that leaves fewer images than the ``k`` clusters."""
    if not k:
        return 0
    dims = math.prod(image_shape)
    count = min(FIT_EXAMPLES, available, max(FIT_BYTES // (4 * dims), 1))
    if count < k:
        raise UserError(
            f"config key {what}={k}: more clusters than the {count} training images their "
            "centroids are fitted to"
        )
    return count


def fit(images: jax.Array, k: int, rng: jax.Array, iterations: int = FIT_ITERATIONS) -> dict:
    """The state of k-means fitted to ``images [N, H, W, C]`` (``N >= k``, the model's
    ``[-1, 1]`` scale): k-means++ seeding (:func:`init_state`), then ``iterations`` Lloyd
    iterations, each moving every centroid to the mean of the images nearest to it (a
    centroid no image is nearest to stays). ``counts`` are the clusters' sizes at the end,
    at least 1 each, so that every cluster keeps a share."""
    x = images.reshape(images.shape[0], -1).astype(jnp.float32)

    def lloyd(_, centroids):
        member = jax.nn.one_hot(assign(x, centroids), k, dtype=jnp.float32)  # [N, K]
        sizes = member.sum(0)
        means = (member.T @ x) / jnp.maximum(sizes, 1.0)[:, None]
        return jnp.where(sizes[:, None] > 0, means, centroids)

    centroids = jax.lax.fori_loop(0, iterations, lloyd, init_state(x, k, rng)["centroids"])
    sizes = jnp.zeros((k,), jnp.float32).at[assign(x, centroids)].add(1.0)
    return {"centroids": centroids, "counts": jnp.maximum(sizes, 1.0)}


def fit_model_state(model_state: dict, images: jax.Array, k: int, rng: jax.Array) -> dict:
    """``model_state`` with its :data:`STATE_KEY` entry fitted (:func:`fit`) to uint8
    ``images [N, H, W, C]``, taken to the models' ``[-1, 1]`` scale."""
    symmetric = images.astype(jnp.float32) / 127.5 - 1.0
    return {**model_state, STATE_KEY: fit(symmetric, k, rng)}


def init_state(images: jax.Array, k: int, rng: jax.Array) -> dict[str, jax.Array]:
    """Centroids at ``k`` rows of ``images [B, ...]`` (``B >= k``) chosen by k-means++
    (Arthur & Vassilvitskii, 2007: each next row drawn in proportion to its squared distance
    to the nearest row already chosen), each counted once."""
    x = images.reshape(images.shape[0], -1).astype(jnp.float32)
    first_rng, rng = jax.random.split(rng)
    first = jax.random.randint(first_rng, (), 0, x.shape[0])
    centroids = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(x[first])

    def add(i, centroids):
        chosen = jnp.arange(k) < i
        d2 = jnp.where(chosen[None], _squared_distances(x, centroids), jnp.inf).min(1)
        pick = jax.random.categorical(jax.random.fold_in(rng, i), jnp.log(d2))
        return centroids.at[i].set(x[pick])

    centroids = jax.lax.fori_loop(1, k, add, centroids)
    return {"centroids": centroids, "counts": jnp.ones((k,), jnp.float32)}


def _squared_distances(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """``[B, K]`` squared Euclidean distances of rows ``x [B, D]`` to ``centroids [K, D]``
    (expanded as ``|x|^2 - 2 x.c + |c|^2``, whose rounding can fall below 0: clipped)."""
    return jnp.maximum(
        jnp.sum(jnp.square(x), 1, keepdims=True)
        - 2.0 * x @ centroids.T
        + jnp.sum(jnp.square(centroids), 1)[None],
        0.0,
    )


def assign(images: jax.Array, centroids: jax.Array) -> jax.Array:
    """int32 ``[B]``: the nearest centroid (Euclidean) of each of ``images [B, ...]``."""
    x = images.reshape(images.shape[0], -1).astype(jnp.float32)
    return jnp.argmin(_squared_distances(x, centroids), axis=1).astype(jnp.int32)


def update(state: dict[str, jax.Array], images: jax.Array, labels: jax.Array) -> dict:
    """The state after adding ``images [B, H, W, C]`` assigned to ``labels [B]``: each
    centroid becomes the mean of every image assigned to it so far (its initial row
    included)."""
    x = images.reshape(images.shape[0], -1).astype(jnp.float32)
    member = jax.nn.one_hot(labels, state["counts"].shape[0], dtype=jnp.float32)  # [B, K]
    added = member.sum(0)
    counts = state["counts"] + added
    sums = member.T @ x
    centroids = state["centroids"] + (sums - added[:, None] * state["centroids"]) / counts[:, None]
    return {"centroids": centroids, "counts": counts}


def draw(rng: jax.Array, counts: jax.Array, n: int) -> jax.Array:
    """int32 ``[n]`` cluster indices drawn in proportion to ``counts [K]``."""
    return jax.random.categorical(rng, jnp.log(counts), shape=(n,)).astype(jnp.int32)
