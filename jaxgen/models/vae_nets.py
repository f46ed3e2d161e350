"""Convolutional encoder and decoder of the VAE.

The encoder maps images ``[B, H, W, C]`` in [-1, 1] to the mean and log
variance of a diagonal Gaussian posterior; the decoder maps latents back to
per-pixel discretized-logistic parameters (mean in [-1, 1], log scale).
Latents are vectors ``[B, latent_dim]``, or feature maps
``[B, H/f, W/f, latent_channels]`` when ``latent_channels > 0`` (for latent
diffusion), where ``f = 2 ** len(channels)`` (one stride-2 stage per entry of
``channels``); ``H`` and ``W`` must be divisible by ``f``.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class VAENetConfig:
    channels: tuple[int, ...] = (32, 64)  # width at full and half resolution
    latent_dim: int = 16
    latent_channels: int = 0  # > 0: spatial latent [H/f, W/f, latent_channels]
    hidden_dim: int = 256
    num_classes: int = 0  # > 0: class-conditional encoder and decoder


class ConditionalBias(nn.Module):
    """Adds a learned per-class vector to the features (no-op without labels)."""

    num_classes: int

    @nn.compact
    def __call__(self, h: jax.Array, labels: jax.Array | None) -> jax.Array:
        if self.num_classes == 0 or labels is None:
            return h
        emb = nn.Embed(self.num_classes, h.shape[-1])(labels)
        return h + emb.reshape(emb.shape[:1] + (1,) * (h.ndim - 2) + emb.shape[1:])


class Encoder(nn.Module):
    config: VAENetConfig

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None):
        """x: [B, H, W, C] in [-1, 1] -> (mean, log_var), each of the latent shape."""
        cfg = self.config
        h = nn.Conv(cfg.channels[0], (3, 3))(x)
        h = ConditionalBias(cfg.num_classes)(h, labels)
        for width in cfg.channels:
            h = nn.swish(nn.Conv(width, (3, 3))(h))
            h = nn.swish(nn.Conv(width, (4, 4), strides=(2, 2))(h))
        if cfg.latent_channels:
            h = nn.swish(nn.Conv(cfg.channels[-1], (3, 3))(h))
            stats = nn.Conv(2 * cfg.latent_channels, (1, 1))(h)
        else:
            h = nn.swish(nn.Dense(cfg.hidden_dim)(h.reshape(h.shape[0], -1)))
            stats = nn.Dense(2 * cfg.latent_dim)(h)
        mean, log_var = jnp.split(stats, 2, axis=-1)
        return mean, jnp.clip(log_var, -30.0, 20.0)


class Decoder(nn.Module):
    config: VAENetConfig
    image_shape: tuple[int, int, int]

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None):
        """z: latent -> (mean [B, H, W, C] in [-1, 1], log_scale [B, H, W, C])."""
        cfg = self.config
        height, width, channels = self.image_shape
        if cfg.latent_channels:
            h = nn.swish(nn.Conv(cfg.channels[-1], (3, 3))(z))
        else:
            h = nn.swish(nn.Dense(cfg.hidden_dim)(z))
            f = 2 ** len(cfg.channels)
            h = nn.Dense(height // f * width // f * cfg.channels[-1])(h)
            h = nn.swish(h.reshape(z.shape[0], height // f, width // f, cfg.channels[-1]))
        h = ConditionalBias(cfg.num_classes)(h, labels)
        for width_ in reversed(cfg.channels):
            h = nn.swish(nn.ConvTranspose(width_, (4, 4), strides=(2, 2))(h))
            h = nn.swish(nn.Conv(width_, (3, 3))(h))
        out = nn.Conv(2 * channels, (3, 3))(h)
        mean, log_scale = jnp.split(out, 2, axis=-1)
        return jnp.tanh(mean), jnp.clip(log_scale, -7.0, 2.0)
