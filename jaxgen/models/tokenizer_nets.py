"""Convolutional encoder and decoder of the image tokenizer (``family = tokenizer``).

The encoder maps images ``[B, H, W, C]`` in [-1, 1] to latents ``[B, H/f, W/f, d]``
(``f = 2 ** len(channels)``, one stride-2 stage per entry of ``channels``; ``d`` = the
quantiser's channels), which :class:`~jaxgen.models.quantizer.FSQ` rounds to codes; the
decoder maps codes ``[B, H/f, W/f, d]`` back to images ``[B, H, W, C]`` (unbounded; the
family clips them to [-1, 1] when it draws). ``num_res_blocks`` residual blocks
(``x + conv(swish(conv(swish(x))))``) run at the lowest resolution on both sides.
Both compute in the dtype of their parameters and inputs (bfloat16 for mixed precision).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from jaxgen.models.conv import Conv
from jaxgen.models.layers import UpConv


@dataclasses.dataclass(frozen=True)
class TokenizerNetConfig:
    channels: tuple[int, ...] = (32, 64)  # width at full, half, ... resolution
    num_res_blocks: int = 1  # at the lowest resolution, in the encoder and in the decoder
    latent_dim: int = 4  # d: the quantiser's channels (len(levels) for FSQ)


class ResBlock(nn.Module):
    """``x + conv3x3(swish(conv3x3(swish(x))))``, same width in and out."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        h = Conv(width, (3, 3))(nn.swish(x))
        h = Conv(width, (3, 3))(nn.swish(h))
        return x + h


class TokenEncoder(nn.Module):
    config: TokenizerNetConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x ``[B, H, W, C]`` in [-1, 1] -> latents ``[B, H/f, W/f, latent_dim]``."""
        cfg = self.config
        h = Conv(cfg.channels[0], (3, 3))(x)
        for width in cfg.channels:
            h = nn.swish(Conv(width, (3, 3))(h))
            h = Conv(width, (4, 4), strides=(2, 2))(h)
        for _ in range(cfg.num_res_blocks):
            h = ResBlock()(h)
        return Conv(cfg.latent_dim, (1, 1))(nn.swish(h))


class TokenDecoder(nn.Module):
    config: TokenizerNetConfig
    out_channels: int

    @nn.compact
    def __call__(self, codes: jax.Array) -> jax.Array:
        """codes ``[B, H/f, W/f, latent_dim]`` -> images ``[B, H, W, out_channels]``, ~[-1, 1]."""
        cfg = self.config
        h = Conv(cfg.channels[-1], (3, 3))(codes)
        for _ in range(cfg.num_res_blocks):
            h = ResBlock()(h)
        for i, width in enumerate(reversed(cfg.channels)):
            h = UpConv(width, name=f"UpConv_{i}")(nn.swish(h))
            h = Conv(width, (3, 3))(nn.swish(h))
        return Conv(self.out_channels, (3, 3))(nn.swish(h))
