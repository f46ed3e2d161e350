"""Online k-means of the training images, whose cluster indices condition a model trained
without labels (``gan.clusters``, ``model.clusters`` of the PixelCNN).

A continuous latent maps onto a connected set, so an unconditional generator of classes that
look nothing alike also draws images between them; conditioning on a cluster of the real
images lets it keep such modes apart without labels (as Sage et al., 2018, and Liu et al.,
2020, condition on clusters of learned features; here the pixels are clustered, so nothing
trained elsewhere is used). An autoregressive model commits to the cluster before its first
pixel instead of deciding row by row what it draws. The centroids follow mini-batch k-means
(Sculley, 2010): each real image is assigned to its nearest centroid, and every centroid moves
to the running mean of all the images assigned to it so far (a step of ``1 / count`` per
image). The counts also give each cluster's share of the data, from which generated images
draw their cluster.

State: ``{"centroids": float32 [K, D], "counts": float32 [K]}`` with ``D = H * W * C`` in the
model's ``[-1, 1]`` scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

STATE_KEY = "clusters"  # the model_state entry that holds the state


def init_state(images: jax.Array, k: int, rng: jax.Array) -> dict[str, jax.Array]:
    """Centroids at ``k`` rows of ``images [B, H, W, C]`` (``B >= k``) chosen by k-means++
    (Arthur & Vassilvitskii, 2007: each next row drawn in proportion to its squared distance
    to the nearest row already chosen), each counted once."""
    x = images.reshape(images.shape[0], -1).astype(jnp.float32)
    first_rng, rng = jax.random.split(rng)
    first = jax.random.randint(first_rng, (), 0, x.shape[0])
    centroids = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(x[first])

    def add(i, centroids):
        chosen = jnp.arange(k) < i
        d2 = jnp.where(chosen[None], _squared_distances(x, centroids), jnp.inf).min(1)
        pick = jax.random.categorical(jax.random.fold_in(rng, i), jnp.log(d2 + 1e-12))
        return centroids.at[i].set(x[pick])

    centroids = jax.lax.fori_loop(1, k, add, centroids)
    return {"centroids": centroids, "counts": jnp.ones((k,), jnp.float32)}


def _squared_distances(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """``[B, K]`` squared Euclidean distances of rows ``x [B, D]`` to ``centroids [K, D]``."""
    return (
        jnp.sum(jnp.square(x), 1, keepdims=True)
        - 2.0 * x @ centroids.T
        + jnp.sum(jnp.square(centroids), 1)[None]
    )


def assign(images: jax.Array, centroids: jax.Array) -> jax.Array:
    """int32 ``[B]``: the nearest centroid (Euclidean) of each of ``images [B, H, W, C]``."""
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
