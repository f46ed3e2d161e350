"""A single-optimizer family conditioned on k-means clusters of its training pixels
(``model.clusters``: the PixelCNN and the diffusion models; the GAN has its own two-player
step, ``gan.clusters``).

The network takes the cluster index where a class-conditional one takes the class label.
Each training batch is labelled by its images' nearest centroids, which then move towards
them (:mod:`jaxgen.clusters`); a fresh run's centroids are fitted to the training images
before the first step. Samples draw their cluster in proportion to the clusters' shares of
the data, and a likelihood becomes the bound ``-log p(c) - log p(x | c)`` at the image's
nearest cluster ``c``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen import clusters
from jaxgen.errors import UserError
from jaxgen.methods.base import images_to_symmetric


class ClusterConditioned:
    """Mixin for a :class:`~jaxgen.methods.base.Method` subclass (listed before it) that sets
    ``self.clusters`` (K; 0: off, every hook below is then the plain ``Method``'s) with
    :meth:`read_clusters` before it builds its network with ``K`` labels."""

    clusters: int = 0

    def read_clusters(self, config, data) -> int:
        """``model.clusters`` of ``config`` (0 when absent), refused in one line for data
        with labels or text (``cond`` other than ``none``)."""
        k = int(config.model.get("clusters", 0) or 0)
        if k and data.cond != "none":
            raise UserError(
                f"config key model.clusters={k}: for data without labels or text (cond=none); "
                f"this config has cond={data.cond!r}"
            )
        return k

    def init_model_state(self, rng, batch):
        """With clusters: the k-means state's placeholder (a fresh run's is fitted to the
        training images before its first step, :meth:`fit_to_data`)."""
        if not self.clusters:
            return super().init_model_state(rng, batch)
        shape = batch["image"].shape[1:]
        return {clusters.STATE_KEY: clusters.placeholder_state(self.clusters, shape)}

    def data_fit_count(self, available):
        return clusters.fit_count(self.data.image_shape, available, self.clusters, "model.clusters")

    def fit_to_data(self, model_state, images, rng):
        return clusters.fit_model_state(model_state, images, self.clusters, rng)

    def train_step(self, state, batch, tx, ema_decay):
        """The generic step; with clusters on the batch labelled by its nearest centroids,
        which then move towards it. Adds the metric ``cluster_min_share``."""
        if not self.clusters:
            return super().train_step(state, batch, tx, ema_decay)
        images = images_to_symmetric(batch["image"])
        cluster_state = state.model_state[clusters.STATE_KEY]
        labels = clusters.assign(images, cluster_state["centroids"])
        cluster_state = clusters.update(cluster_state, images, labels)
        state, metrics = super().train_step(state, {**batch, "label": labels}, tx, ema_decay)
        share = cluster_state["counts"] / jnp.sum(cluster_state["counts"])
        metrics = dict(metrics, cluster_min_share=jnp.min(share))
        return state.replace(model_state={clusters.STATE_KEY: cluster_state}), metrics

    def sampling_params(self, state, options=None):
        """The family's sampling parameters; with clusters also the k-means state under
        ``"clusters"`` (the likelihood's labels, the samples' cluster shares)."""
        params = super().sampling_params(state, options)
        if self.clusters:
            params = {**params, clusters.STATE_KEY: state.model_state[clusters.STATE_KEY]}
        return params

    def nearest_clusters(self, params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(labels int32 [B], log_share float32 [B])``: each of uint8 ``images [B, H, W, C]``
        nearest cluster and the log of that cluster's share of the data, ``log p(c)``."""
        state = params[clusters.STATE_KEY]
        labels = clusters.assign(images_to_symmetric(images), state["centroids"])
        counts = state["counts"].astype(jnp.float32)
        return labels, jnp.log(counts / jnp.sum(counts))[labels]

    def draw_clusters(self, params, rng: jax.Array, num: int) -> jax.Array:
        """int32 ``[num]`` cluster indices drawn in proportion to the clusters' shares."""
        counts = params[clusters.STATE_KEY]["counts"].astype(jnp.float32)
        return clusters.draw(rng, counts, num)
