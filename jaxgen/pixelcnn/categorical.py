"""256-way softmax likelihood of 8-bit pixels (PixelCNN, Gated PixelCNN).

The network emits ``256 * C`` logits per pixel, interleaved by colour: logit
``k`` belongs to channel ``k % C`` (the colour groups of the masked layers), so
``out.reshape(..., 256, C)[..., c]`` are the logits of channel ``c``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NUM_VALUES = 256
PER_CHANNEL = True  # the distribution of channel c depends on channels < c of the same pixel


def num_outputs(channels: int) -> int:
    return NUM_VALUES * channels


def channel_logits(out: jax.Array, channels: int) -> jax.Array:
    """``out`` ``[..., 256 * C]`` -> logits ``[..., C, 256]``."""
    logits = out.reshape(*out.shape[:-1], NUM_VALUES, channels)
    return jnp.swapaxes(logits, -1, -2)


def log_prob(out: jax.Array, images: jax.Array) -> jax.Array:
    """Log-probabilities in nats, ``[B, H, W, C]``, of uint8 ``images`` given ``out``."""
    logits = jax.nn.log_softmax(channel_logits(out, images.shape[-1]), axis=-1)
    index = images.astype(jnp.int32)[..., None]
    return jnp.take_along_axis(logits, index, axis=-1)[..., 0]


def channel_params(out: jax.Array, x: jax.Array) -> jax.Array:
    """Parameters of ``p(x[i, c] | x before (i, c))``: logits ``[B, H, W, C, 256]``."""
    return channel_logits(out, x.shape[-1])


def sample_channel(
    out_pixel: jax.Array, channel: int, channels: int, key: jax.Array, temperature: float = 1.0
) -> jax.Array:
    """Draws channel ``channel`` of one pixel: ``out_pixel`` ``[B, 256C]`` -> int32 ``[B]``.

    ``temperature`` divides the logits: 1 draws from the model, below 1 sharper, 0 the most
    likely value (greedy).
    """
    logits = channel_logits(out_pixel, channels)[:, channel]
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if temperature != 1.0:
        logits = logits / temperature
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
