"""Discretized logistic mixture likelihood of PixelCNN++ (Salimans et al. 2017, sec. 2.1-2.2).

Pixel values ``k`` in {0..255} sit at ``x = k / 127.5 - 1`` in [-1, 1]; value
``k`` owns the bin ``x +- 1/255`` and the two end bins absorb the tails, so the
256 probabilities of one channel sum to one. A pixel's channels share the mixture
component ``m``; within a component the channels are coupled linearly (eq. 3):
``mean_G = mu_G + a * x_R``, ``mean_B = mu_B + b * x_R + c * x_G``.

Network output per pixel, ``P = M * (1 + 2C + C(C-1)/2)`` numbers:
``[logits (M) | means (C x M) | log-scales (C x M) | coupling coefficients (C(C-1)/2 x M)]``,
the coefficient of channel ``c`` on ``c' < c`` at row ``c(c-1)/2 + c'``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BIN_HALF_WIDTH = 1.0 / 255.0
MIN_LOG_SCALE = -7.0
PER_CHANNEL = False  # one network output per pixel; the channels are coupled in the head


def num_outputs(channels: int, num_mixtures: int) -> int:
    return num_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)


def split_params(out: jax.Array, channels: int, num_mixtures: int):
    """``out`` ``[..., P]`` -> logits ``[..., M]``, means, log_scales ``[..., C, M]``, coeffs."""
    m = num_mixtures
    logits = out[..., :m]
    rest = out[..., m:].reshape(*out.shape[:-1], -1, m)
    means = rest[..., :channels, :]
    log_scales = jnp.maximum(rest[..., channels : 2 * channels, :], MIN_LOG_SCALE)
    coeffs = jnp.tanh(rest[..., 2 * channels :, :])
    return logits, means, log_scales, coeffs


def coupled_means(means: jax.Array, coeffs: jax.Array, x: jax.Array) -> jax.Array:
    """Per-channel means ``[..., C, M]`` given the pixel's values ``x`` ``[..., C]`` in [-1, 1]."""
    channels = means.shape[-2]
    out = [means[..., 0, :]]
    for c in range(1, channels):
        shift = sum(coeffs[..., c * (c - 1) // 2 + j, :] * x[..., j, None] for j in range(c))
        out.append(means[..., c, :] + shift)
    return jnp.stack(out, axis=-2)


def log_bin_prob(values: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
    """log P(value) in nats of integer ``values`` in 0..255 under discretized logistics.

    The bin mass ``sigmoid(a) - sigmoid(b)`` is computed in log space as
    ``log sigmoid(a) - softplus(b) + log(1 - exp(b - a))``, exact without cut-offs.
    """
    x = values.astype(jnp.float32) / 127.5 - 1.0
    inv_scale = jnp.exp(-log_scale)
    upper = inv_scale * (x - mean + BIN_HALF_WIDTH)
    lower = inv_scale * (x - mean - BIN_HALF_WIDTH)
    log_lowest = jax.nn.log_sigmoid(upper)  # value 0: everything below the upper edge
    log_highest = -jax.nn.softplus(lower)  # value 255: everything above the lower edge
    log_middle = (
        jax.nn.log_sigmoid(upper) - jax.nn.softplus(lower) + jnp.log(-jnp.expm1(lower - upper))
    )
    return jnp.where(values == 0, log_lowest, jnp.where(values == 255, log_highest, log_middle))


def log_prob(out: jax.Array, images: jax.Array, num_mixtures: int) -> jax.Array:
    """Log-probability in nats of each pixel (all channels jointly): ``[B, H, W]``.

    ``out``: ``[B, H, W, P]`` network outputs; ``images``: uint8 ``[B, H, W, C]``.
    """
    channels = images.shape[-1]
    logits, means, log_scales, coeffs = split_params(out, channels, num_mixtures)
    values = images.astype(jnp.int32)
    x = values.astype(jnp.float32) / 127.5 - 1.0
    means = coupled_means(means, coeffs, x)
    per_channel = log_bin_prob(values[..., None], means, log_scales)  # [B, H, W, C, M]
    joint = jnp.sum(per_channel, axis=-2) + jax.nn.log_softmax(logits, axis=-1)
    return jax.nn.logsumexp(joint, axis=-1)


def channel_params(out: jax.Array, x: jax.Array, num_mixtures: int) -> jax.Array:
    """Parameters of channel ``c`` at pixel ``i`` given ``x`` ``[B, H, W, C]`` in [-1, 1].

    Returns ``[B, H, W, C, 3M]``: mixture logits, coupled means and log-scales.
    """
    channels = x.shape[-1]
    logits, means, log_scales, coeffs = split_params(out, channels, num_mixtures)
    means = coupled_means(means, coeffs, x)
    logits = jnp.broadcast_to(logits[..., None, :], means.shape)
    return jnp.concatenate([logits, means, log_scales], axis=-1)


def sample_pixel(
    out_pixel: jax.Array,
    channels: int,
    num_mixtures: int,
    key: jax.Array,
    temperature: float = 1.0,
) -> jax.Array:
    """Draws one pixel, int32 ``[B, C]``, from ``out_pixel`` ``[B, P]``.

    The component is drawn first, then each channel by inverting the logistic CDF
    and rounding to the nearest of the 256 values (clipped to the end bins), which
    draws exactly from the discretized distribution; later channels are coupled to
    the drawn (discrete) values of earlier ones, as in :func:`log_prob`.

    ``temperature`` (1 draws from the model) divides the mixture logits and multiplies every
    logistic's scale: below 1, the likelier components and values closer to their means; 0
    takes the likeliest component's mean (greedy).
    """
    logits, means, log_scales, coeffs = split_params(out_pixel, channels, num_mixtures)
    mix_key, value_key = jax.random.split(key)
    if temperature == 0:
        component = jnp.argmax(logits, axis=-1)
    else:
        component = jax.random.categorical(mix_key, logits / temperature, axis=-1)
    pick = lambda a: jnp.take_along_axis(a, component[:, None, None], axis=-1)[..., 0]
    means, log_scales, coeffs = pick(means), pick(log_scales), pick(coeffs)
    u = jax.random.uniform(value_key, means.shape, minval=1e-5, maxval=1.0 - 1e-5)
    noise = temperature * (jnp.log(u) - jnp.log1p(-u))  # the logistic's scale times T
    values, xs = [], []
    for c in range(channels):
        mean = means[:, c] + sum(coeffs[:, c * (c - 1) // 2 + j] * xs[j] for j in range(c))
        cont = mean + jnp.exp(log_scales[:, c]) * noise[:, c]
        value = jnp.clip(jnp.round((cont + 1.0) * 127.5), 0, 255).astype(jnp.int32)
        values.append(value)
        xs.append(value.astype(jnp.float32) / 127.5 - 1.0)
    return jnp.stack(values, axis=-1)
