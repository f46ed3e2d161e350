"""Convolutional encoder and decoder of the VAE.

The encoder maps images ``[B, H, W, C]`` in [-1, 1] to the mean and log
variance of a diagonal Gaussian posterior; the decoder maps latents back to
per-pixel discretized-logistic parameters (mean in [-1, 1], log scale).
Latents are vectors ``[B, latent_dim]``, or feature maps
``[B, H/f, W/f, latent_channels]`` when ``latent_channels > 0`` (for latent
diffusion), where ``f = 2 ** len(channels)`` (one stride-2 stage per entry of
``channels``); ``H`` and ``W`` must be divisible by ``f``.

``shared_scale``: the likelihood's log scale is one learned parameter per channel instead of
one output per pixel (the calibrated decoder of Rybkin et al. 2021, "sigma-VAE"): the
reconstruction weight then follows the mean error, not each pixel's, which spends fewer nats
of KL on the easy pixels and leaves fewer holes in the prior where samples are drawn.

``convs_per_level`` is the number of stride-1 3x3 convolutions at each resolution, in both
networks. With 0 the networks are only their stride-2 stages, as in the usual DCGAN-like
VAE: the encoder's first one reads the image, the decoder's last one writes the likelihood's
parameters. On the cpu preset's widths that is an eighth of the arithmetic of 1 (39 against
306 MFLOP per training image), for budgets where images seen count more than depth.

Conditional VAE (Sohn et al. 2015): both networks take an optional condition, class
labels int32 ``[B]`` (``num_classes > 0``) or a text vector float ``[B, text_dim]`` (the
pooled text embedding, ``text_dim > 0``). :class:`ConditionalBias` turns it into one
vector per example (a class embedding, or a learned projection of the text vector) and
adds it to the features: after the encoder's first convolution, and in the decoder to
the hidden layer fed by ``z`` and to the first feature map.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.conv import Conv
from jaxgen.models.layers import UpConv


@dataclasses.dataclass(frozen=True)
class VAENetConfig:
    channels: tuple[int, ...] = (32, 64)  # width at full and half resolution
    latent_dim: int = 16
    latent_channels: int = 0  # > 0: spatial latent [H/f, W/f, latent_channels]
    hidden_dim: int = 256
    num_classes: int = 0  # > 0: class-conditional encoder and decoder
    text_dim: int = 0  # > 0: text-conditional (pooled text embedding of this width)
    cond_dim: int = 256  # width of the hidden layer projecting the text vector
    convs_per_level: int = 1  # stride-1 3x3 convolutions per resolution (0: stride-2 only)
    shared_scale: bool = False  # one learned log scale per channel, not one per pixel


class ConditionalBias(nn.Module):
    """Adds a learned conditioning vector to the features ``h`` ``[B, ..., F]``.

    The vector ``[B, F]`` is a per-class embedding of ``labels`` int32 ``[B]``
    (``num_classes > 0``) or a projection (LayerNorm -> Dense ``cond_dim`` -> swish ->
    Dense ``F``) of ``text`` float ``[B, text_dim]`` (``text_dim > 0``). A no-op without
    a condition.
    """

    num_classes: int = 0
    text_dim: int = 0
    cond_dim: int = 256

    @nn.compact
    def __call__(
        self, h: jax.Array, labels: jax.Array | None = None, text: jax.Array | None = None
    ) -> jax.Array:
        if self.num_classes and labels is not None:
            emb = nn.Embed(self.num_classes, h.shape[-1])(labels)
        elif self.text_dim and text is not None:
            # LayerNorm first: a unit-norm sentence embedding ([B, 384], entries ~0.05) would
            # otherwise give a near-zero bias at init, and the decoder learns to ignore it.
            text = nn.LayerNorm(dtype=h.dtype, name="text_norm")(text)
            hidden = nn.swish(nn.Dense(self.cond_dim, dtype=h.dtype, name="text_in")(text))
            emb = nn.Dense(h.shape[-1], dtype=h.dtype, name="text_out")(hidden)
        else:
            return h
        return h + emb.reshape(emb.shape[:1] + (1,) * (h.ndim - 2) + emb.shape[1:])


def _bias(cfg: VAENetConfig) -> ConditionalBias:
    return ConditionalBias(cfg.num_classes, cfg.text_dim, cfg.cond_dim)


class Encoder(nn.Module):
    config: VAENetConfig

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, text=None):
        """x: [B, H, W, C] in [-1, 1] -> (mean, log_var), each of the latent shape.

        ``labels`` int32 [B] or ``text`` float [B, text_dim]: the condition (or None).
        """
        cfg = self.config
        if cfg.convs_per_level:
            h = _bias(cfg)(Conv(cfg.channels[0], (3, 3))(x), labels, text)
        else:  # the first stride-2 stage reads the image
            h = x
        for level, width in enumerate(cfg.channels):
            for _ in range(cfg.convs_per_level):
                h = nn.swish(Conv(width, (3, 3))(h))
            h = Conv(width, (4, 4), strides=(2, 2))(h)
            if level == 0 and not cfg.convs_per_level:
                h = _bias(cfg)(h, labels, text)
            h = nn.swish(h)
        if cfg.latent_channels:
            h = nn.swish(Conv(cfg.channels[-1], (3, 3))(h))
            stats = Conv(2 * cfg.latent_channels, (1, 1))(h)
        else:
            h = nn.swish(nn.Dense(cfg.hidden_dim)(h.reshape(h.shape[0], -1)))
            stats = nn.Dense(2 * cfg.latent_dim)(h)
        mean, log_var = jnp.split(stats, 2, axis=-1)
        return mean, jnp.clip(log_var, -30.0, 20.0)


class Decoder(nn.Module):
    config: VAENetConfig
    image_shape: tuple[int, int, int]

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None, text=None):
        """z: latent -> (mean [B, H, W, C] in [-1, 1], log_scale [B, H, W, C]).

        ``labels`` int32 [B] or ``text`` float [B, text_dim]: the condition (or None).
        """
        cfg = self.config
        height, width, channels = self.image_shape
        if cfg.latent_channels:
            h = nn.swish(Conv(cfg.channels[-1], (3, 3))(z))
        else:
            h = nn.Dense(cfg.hidden_dim)(z)
            if cfg.text_dim:  # the text also shapes the global layout
                h = _bias(cfg)(h, labels, text)
            h = nn.swish(h)
            f = 2 ** len(cfg.channels)
            h = nn.Dense(height // f * width // f * cfg.channels[-1])(h)
            h = nn.swish(h.reshape(z.shape[0], height // f, width // f, cfg.channels[-1]))
        h = _bias(cfg)(h, labels, text)
        # nn.ConvTranspose(width, (4, 4), (2, 2)) as a sub-pixel convolution (UpConv): its
        # parameters and outputs, with canonical gradients (gradient accumulation stays fast).
        if cfg.convs_per_level:
            for i, width_ in enumerate(reversed(cfg.channels)):
                h = nn.swish(UpConv(width_, name=f"ConvTranspose_{i}")(h))
                for _ in range(cfg.convs_per_level):
                    h = nn.swish(Conv(width_, (3, 3))(h))
            out = Conv(2 * channels, (3, 3))(h)
        else:  # the encoder's mirror image: the last stage writes the likelihood's parameters
            for i, width_ in enumerate(reversed(cfg.channels[:-1])):
                h = nn.swish(UpConv(width_, name=f"ConvTranspose_{i}")(h))
            out = UpConv(2 * channels, name=f"ConvTranspose_{len(cfg.channels) - 1}")(h)
        mean, log_scale = jnp.split(out, 2, axis=-1)
        if cfg.shared_scale:
            shared = self.param("log_scale", nn.initializers.zeros, (channels,))
            log_scale = jnp.broadcast_to(shared.astype(mean.dtype), mean.shape)
        return jnp.tanh(mean), jnp.clip(log_scale, -7.0, 2.0)
