"""The losses of Gatys et al. (2016), "Image style transfer using convolutional neural networks".

Feature maps are ``[B, h, w, C]`` (the feature networks of ``jaxgen/models/vgg.py``); images
are float32 ``[B, H, W, C]`` in ``[0, 1]``. Normalisations (stated so weights carry over
between image sizes):

* content, layer ``l``: ``mean((F_l - P_l)**2)``, Gatys's ``1/2 sum(...)`` divided by half the
  number of entries ``h*w*C``; the content loss is the mean over the content layers.
* style, layer ``l``: ``E_l = 1/4 mean((G_l - A_l)**2)`` over the ``C x C`` entries, with
  ``G_l = F^T F / (h*w)``: exactly Gatys's ``E_l = 1/(4 N_l^2 M_l^2) sum(...)`` for
  ``N_l = C`` maps of ``M_l = h*w`` positions. The style loss is ``sum_l w_l E_l``.
* total variation: mean squared difference between vertically and horizontally adjacent
  pixels, summed over the two directions.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp


def gram_matrix(features: jax.Array) -> jax.Array:
    """``[B, h, w, C]`` -> ``[B, C, C]``, ``G[b, i, j] = sum_p F[b, p, i] F[b, p, j] / (h*w)``."""
    b, h, w, c = features.shape
    flat = features.reshape(b, h * w, c)
    return jnp.einsum("bpi,bpj->bij", flat, flat, precision=jax.lax.Precision.HIGHEST) / (h * w)


def content_loss(
    features: Mapping[str, jax.Array], targets: Mapping[str, jax.Array], layers: tuple[str, ...]
) -> jax.Array:
    """Mean over ``layers`` of ``mean((F_l - P_l)**2)``; scalar (the batch is averaged too)."""
    per_layer = [jnp.mean(jnp.square(features[n] - targets[n])) for n in layers]
    return sum(per_layer) / len(per_layer)


def style_loss(
    features: Mapping[str, jax.Array],
    target_grams: Mapping[str, jax.Array],
    layer_weights: Mapping[str, float],
) -> jax.Array:
    """``sum_l w_l * 1/4 mean((G_l - A_l)**2)``; ``target_grams[l]``: ``[B or 1, C, C]``."""
    total = jnp.zeros((), jnp.float32)
    for name, weight in layer_weights.items():
        diff = gram_matrix(features[name]) - target_grams[name]
        total = total + weight * 0.25 * jnp.mean(jnp.square(diff))
    return total


def tv_loss(images: jax.Array) -> jax.Array:
    """``mean(dy**2) + mean(dx**2)`` of adjacent-pixel differences of ``[B, H, W, C]``."""
    dy = images[:, 1:, :, :] - images[:, :-1, :, :]
    dx = images[:, :, 1:, :] - images[:, :, :-1, :]
    return jnp.mean(jnp.square(dy)) + jnp.mean(jnp.square(dx))
