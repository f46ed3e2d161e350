"""Luminance-only transfer (Gatys et al. 2016, "Preserving color in neural artistic style
transfer"): stylise the YIQ luminance, then put the content image's I and Q back.

Images are float32 ``[..., 3]`` RGB in ``[0, 1]``; luminance is ``[..., 1]``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# Rows: Y, I, Q as combinations of R, G, B (FCC NTSC definition).
RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    np.float32,
)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ).astype(np.float32)


def rgb_to_yiq(images):
    """``[..., 3]`` RGB -> ``[..., 3]`` YIQ (Y in ``[0, 1]``)."""
    return jnp.asarray(images) @ jnp.asarray(RGB_TO_YIQ).T


def yiq_to_rgb(images):
    """``[..., 3]`` YIQ -> ``[..., 3]`` RGB (not clipped)."""
    return jnp.asarray(images) @ jnp.asarray(YIQ_TO_RGB).T


def luminance(images):
    """``[..., 3]`` RGB -> ``[..., 1]`` Y."""
    return rgb_to_yiq(images)[..., :1]


def match_luminance(style_y, content_y):
    """Shifts and scales the style luminance to the content's mean and standard deviation."""
    s_mean, s_std = jnp.mean(style_y), jnp.std(style_y)
    c_mean, c_std = jnp.mean(content_y), jnp.std(content_y)
    return (style_y - s_mean) / jnp.maximum(s_std, 1e-6) * c_std + c_mean


def recolor(y, content_rgb):
    """Luminance ``[..., 1]`` + the content's I, Q -> RGB ``[..., 3]`` in ``[0, 1]``."""
    iq = rgb_to_yiq(content_rgb)[..., 1:]
    return jnp.clip(yiq_to_rgb(jnp.concatenate([y, iq], axis=-1)), 0.0, 1.0)
