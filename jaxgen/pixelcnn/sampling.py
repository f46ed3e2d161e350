"""Ancestral sampling of autoregressive image models: a plain and a fast (cached) sampler.

Both draw pixels in raster order and, where the head is per channel, channels
in R, G, B order, with the key ``fold_in(fold_in(rng, pixel), channel)`` (per
pixel ``fold_in(rng, pixel)`` for the mixture head), inside one jitted
``jax.lax.fori_loop``; with the same ``rng`` they give the same images.

* :func:`sample_plain` runs the whole network on the whole canvas for every
  pixel and channel (``H * W * C`` full passes; one per pixel for PixelCNN++,
  whose output at a pixel does not depend on that pixel).
* :func:`sample_fast` keeps every layer's inputs in a cache and computes only
  what the current step needs (Ramachandran et al. 2017): the row stream once
  per image row, the pixel stream at one position per step (see
  :mod:`jaxgen.pixelcnn.layers`).

The network computes in the dtype of the parameters it is given (float32, or bfloat16 for
mixed precision: the canvas and the context are cast to it, and so is the cache); its
outputs are cast to float32 before the likelihood heads and the draws. The two samplers
give the same images in float32; in bfloat16 their outputs differ by rounding (whole-image
convolutions against per-position products), so an occasional draw can differ.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.precision import floating_dtype
from jaxgen.pixelcnn import categorical, logistic_mixture
from jaxgen.pixelcnn.layers import Step


@dataclasses.dataclass(frozen=True)
class ARModel:
    """A network with its likelihood head.

    Attributes:
      net: a linen module ``net(x, label, context, step, train)`` over ``x`` in [-1, 1].
      image_shape: ``(H, W, C)``.
      head: ``categorical`` or ``logistic_mixture``.
      num_mixtures: mixture components (``logistic_mixture`` only).
    """

    net: nn.Module
    image_shape: tuple[int, int, int]
    head: str
    num_mixtures: int = 0

    @property
    def per_channel(self) -> bool:
        return self.head == "categorical"

    def _inputs(self, params, canvas, cond) -> tuple[jax.Array, jax.Array | None]:
        """The canvas in [-1, 1] and the context ``[B, D]`` (or None), in the params' dtype."""
        dtype = floating_dtype(params)
        x = (canvas.astype(jnp.float32) / 127.5 - 1.0).astype(dtype)
        context = cond.get("context")
        return x, None if context is None else context.astype(dtype)

    def apply(self, params, canvas, cond, step=None, cache=None, train=False, rng=None):
        """Network outputs for the int canvas ``[B, H, W, C]`` (0..255).

        Returns ``(out, cache)``; ``out`` is float32 ``[B, H, W, P]`` without ``step`` and
        ``[B, 1, 1, P]`` in the pixel phase (None in the row phase). The network computes in
        the dtype of ``params``.
        """
        x, context = self._inputs(params, canvas, cond)
        variables = {"params": params}
        kwargs = dict(label=cond.get("label"), context=context, step=step, train=train)
        rngs = {"dropout": rng} if rng is not None else {}
        if cache is None:
            out, cache = self.net.apply(variables, x, rngs=rngs, **kwargs), None
        else:
            variables["cache"] = cache
            out, mutated = self.net.apply(variables, x, mutable=["cache"], **kwargs)
            cache = mutated["cache"]
        return (None if out is None else out.astype(jnp.float32)), cache

    def init_cache(self, params, num: int, cond) -> Any:
        """Zero caches for ``num`` images (from one whole-image pass), in the params' dtype."""
        canvas = jnp.zeros((num, *self.image_shape), jnp.int32)
        x, context = self._inputs(params, canvas, cond)
        _, mutated = self.net.apply(
            {"params": params}, x, label=cond.get("label"), context=context, mutable=["cache"]
        )
        return jax.tree.map(jnp.zeros_like, mutated["cache"])

    def log_prob(self, out: jax.Array, images: jax.Array) -> jax.Array:
        """Per-image log-likelihood in nats, ``[B]``, of uint8 ``images``."""
        if self.head == "categorical":
            per_dim = categorical.log_prob(out, images)
        else:
            per_dim = logistic_mixture.log_prob(out, images, self.num_mixtures)
        return jnp.sum(per_dim.reshape(per_dim.shape[0], -1), axis=-1)

    def channel_params(self, out: jax.Array, x: jax.Array) -> jax.Array:
        """Parameters of ``p(x[i, c] | earlier)``, ``[B, H, W, C, Q]`` (``x`` in [-1, 1])."""
        if self.head == "categorical":
            return categorical.channel_params(out, x)
        return logistic_mixture.channel_params(out, x, self.num_mixtures)

    def draw(self, out_pixel, canvas, row, col, key, channel=None, temperature=1.0):
        """Writes a draw from ``out_pixel`` ``[B, P]`` into ``canvas`` at ``(row, col)``, at
        ``temperature`` (see the heads' samplers; 1: from the model, 0: greedy)."""
        channels = self.image_shape[2]
        if self.per_channel:
            value = categorical.sample_channel(
                out_pixel, channel, channels, jax.random.fold_in(key, channel), temperature
            )
            return canvas.at[:, row, col, channel].set(value)
        pixel = logistic_mixture.sample_pixel(
            out_pixel, channels, self.num_mixtures, key, temperature
        )
        return canvas.at[:, row, col, :].set(pixel)


def _channel_steps(model: ARModel) -> tuple[int | None, ...]:
    return tuple(range(model.image_shape[2])) if model.per_channel else (None,)


def sample_plain(
    model: ARModel,
    params,
    rng: jax.Array,
    num: int,
    cond=None,
    num_pixels: int | None = None,
    temperature: float = 1.0,
) -> jax.Array:
    """int32 images ``[num, H, W, C]`` in 0..255, one full network pass per pixel and channel.

    ``num_pixels`` stops after that many pixels in raster order (the rest stay 0; for timing);
    ``temperature`` tempers each draw (:meth:`ARModel.draw`; 1: from the model, 0: greedy).
    """
    cond = cond or {}
    height, width, channels = model.image_shape

    def body(t, canvas):
        row, col = t // width, t % width
        key = jax.random.fold_in(rng, t)
        for channel in _channel_steps(model):
            out, _ = model.apply(params, canvas, cond)
            out_pixel = jax.lax.dynamic_index_in_dim(
                jax.lax.dynamic_index_in_dim(out, row, 1, keepdims=False), col, 1, keepdims=False
            )
            canvas = model.draw(out_pixel, canvas, row, col, key, channel, temperature)
        return canvas

    canvas = jnp.zeros((num, height, width, channels), jnp.int32)
    return jax.lax.fori_loop(0, num_pixels or height * width, body, canvas)


def sample_fast(
    model: ARModel,
    params,
    rng: jax.Array,
    num: int,
    cond=None,
    num_pixels: int | None = None,
    temperature: float = 1.0,
) -> jax.Array:
    """int32 images ``[num, H, W, C]`` in 0..255, with cached incremental network passes.

    ``num_pixels``, ``temperature``: as in :func:`sample_plain`.
    """
    cond = cond or {}
    height, width, channels = model.image_shape

    def body(t, carry):
        canvas, cache = carry
        row, col = t // width, t % width

        def row_phase(cache):
            return model.apply(params, canvas, cond, Step("row", row, col), cache)[1]

        cache = jax.lax.cond(col == 0, row_phase, lambda c: c, cache)
        key = jax.random.fold_in(rng, t)
        for channel in _channel_steps(model):
            out, cache = model.apply(params, canvas, cond, Step("pixel", row, col), cache)
            canvas = model.draw(out[:, 0, 0], canvas, row, col, key, channel, temperature)
        return canvas, cache

    canvas = jnp.zeros((num, height, width, channels), jnp.int32)
    cache = model.init_cache(params, num, cond)
    return jax.lax.fori_loop(0, num_pixels or height * width, body, (canvas, cache))[0]


def incremental_outputs(model: ARModel, params, images: jax.Array, cond=None) -> jax.Array:
    """Network outputs ``[B, H, W, P]`` for known ``images``, computed step by step.

    Runs the fast sampler's computation with the images as the canvas (teacher
    forcing); equals ``model.apply(params, images, cond)`` up to rounding. For tests.
    """
    cond = cond or {}
    height, width, _ = model.image_shape
    canvas = images.astype(jnp.int32)

    def body(t, carry):
        outs, cache = carry
        row, col = t // width, t % width
        cache = jax.lax.cond(
            col == 0,
            lambda c: model.apply(params, canvas, cond, Step("row", row, col), c)[1],
            lambda c: c,
            cache,
        )
        out, cache = model.apply(params, canvas, cond, Step("pixel", row, col), cache)
        return outs.at[:, row, col].set(out[:, 0, 0]), cache

    full, _ = model.apply(params, canvas, cond)
    cache = model.init_cache(params, images.shape[0], cond)
    return jax.lax.fori_loop(0, height * width, body, (jnp.zeros_like(full), cache))[0]


SAMPLERS = {"plain": sample_plain, "fast": sample_fast}
