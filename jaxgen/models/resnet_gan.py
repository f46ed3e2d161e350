"""SN-GAN ResNet generator and discriminator (Miyato et al., 2018, appendix B.4).

Generator (CIFAR-10, 32x32): ``z [B, 128] -> Dense -> [4, 4, 256]``, three
up-sampling residual blocks (BN, ReLU, nearest 2x up-sampling, 3x3 conv, BN,
ReLU, 3x3 conv; shortcut: up-sampling + 1x1 conv), BN, ReLU, 3x3 conv to the
image channels, ``tanh``. Other sizes use ``n`` blocks from ``s0``
(:func:`jaxgen.models.dcgan.grid_plan`). Class-conditional generators use
conditional batch norm (Miyato & Koyama, 2018); text-conditioned ones
(``text_dim > 0``) project the pooled text embedding, concatenate it to ``z``
and drive the batch norms with it, as in :mod:`jaxgen.models.dcgan`.

Discriminator (32x32): an "optimised" first block (conv, ReLU, conv, 2x2
average pooling; shortcut pool + 1x1 conv), one more down-sampling block and
two plain blocks at width 128, ReLU, global sum pooling, a linear output plus
the projection term ``<embed(y), h>`` when class-conditional, or ``<h, W text>``
when text-conditioned (:func:`jaxgen.models.dcgan.text_projection`; ``h`` is sown
as ``intermediates/features``). Every weight is spectrally normalised unless
``spectral=False``. Outputs ``[B]``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.conv import Conv
from jaxgen.models.dcgan import check_square, grid_plan, text_projection
from jaxgen.models.layers import BatchStatNorm, TextProjection
from jaxgen.models.spectral_norm import SNConv, SNDense, SNEmbed

xavier = nn.initializers.xavier_uniform()


def _upsample(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _avg_pool(x: jax.Array) -> jax.Array:
    return nn.avg_pool(x, (2, 2), (2, 2))


def d_downsamplings(size: int) -> int:
    """Number of down-sampling blocks: halve while the result stays even-sized and >= 7."""
    n = 0
    while size % 2 == 0 and size // 2 >= 7:
        size //= 2
        n += 1
    return max(n, 1)


class GBlock(nn.Module):
    channels: int
    num_classes: int = 0

    @nn.compact
    def __call__(self, x, labels=None, stat_mask=None, cond=None):
        h = nn.relu(BatchStatNorm(self.num_classes)(x, labels, stat_mask, cond))
        h = Conv(self.channels, (3, 3), kernel_init=xavier)(_upsample(h))
        h = nn.relu(BatchStatNorm(self.num_classes)(h, labels, stat_mask, cond))
        h = Conv(self.channels, (3, 3), kernel_init=xavier)(h)
        return h + Conv(self.channels, (1, 1), kernel_init=xavier)(_upsample(x))


class ResNetGenerator(nn.Module):
    """``(z [B, z_dim], labels [B] | None, stat_mask [B] | None, text [B, D] | None)
    -> images [B, H, W, C]`` in ``[-1, 1]``."""

    image_shape: tuple[int, int, int]
    width: int = 256
    num_classes: int = 0
    text_dim: int = 0  # > 0: text-conditioned, width of the projected text embedding

    @nn.compact
    def __call__(
        self,
        z: jax.Array,
        labels: jax.Array | None = None,
        stat_mask: jax.Array | None = None,
        text: jax.Array | None = None,
    ) -> jax.Array:
        n, s0 = grid_plan(check_square(self.image_shape))
        c = None
        if self.text_dim:
            c = TextProjection(self.text_dim)(text)
            z = jnp.concatenate([z, c], axis=-1)
        x = nn.Dense(s0 * s0 * self.width, kernel_init=xavier)(z)
        x = x.reshape(-1, s0, s0, self.width)
        for _ in range(n):
            x = GBlock(self.width, self.num_classes)(x, labels, stat_mask, c)
        x = nn.relu(BatchStatNorm(self.num_classes)(x, labels, stat_mask, c))
        return jnp.tanh(Conv(self.image_shape[-1], (3, 3), kernel_init=xavier)(x))


class DBlock(nn.Module):
    channels: int
    down: bool
    first: bool = False  # the "optimised" input block: no leading ReLU
    spectral: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, update: bool) -> jax.Array:
        sn = self.spectral
        h = x if self.first else nn.relu(x)
        h = SNConv(self.channels, (3, 3), spectral=sn, kernel_init=xavier)(h, update)
        h = SNConv(self.channels, (3, 3), spectral=sn, kernel_init=xavier)(nn.relu(h), update)
        if self.down:
            h = _avg_pool(h)
        shortcut = x
        if self.first:
            shortcut = SNConv(self.channels, (1, 1), spectral=sn, kernel_init=xavier)(
                _avg_pool(x), update
            )
        elif self.down or x.shape[-1] != self.channels:
            shortcut = SNConv(self.channels, (1, 1), spectral=sn, kernel_init=xavier)(x, update)
            if self.down:
                shortcut = _avg_pool(shortcut)
        return h + shortcut


class ResNetDiscriminator(nn.Module):
    """``(images [B, H, W, C], labels [B] | None, update, text [B, D] | None) -> outputs [B]``."""

    image_shape: tuple[int, int, int]
    width: int = 128
    num_classes: int = 0
    spectral: bool = True
    extra_blocks: int = 2  # blocks without down-sampling after the down-sampling ones
    text_conditioned: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        labels: jax.Array | None = None,
        update: bool = False,
        text: jax.Array | None = None,
    ) -> jax.Array:
        downs = d_downsamplings(check_square(self.image_shape))
        sn = self.spectral
        x = DBlock(self.width, down=True, first=True, spectral=sn)(x, update)
        for _ in range(downs - 1):
            x = DBlock(self.width, down=True, spectral=sn)(x, update)
        for _ in range(self.extra_blocks):
            x = DBlock(self.width, down=False, spectral=sn)(x, update)
        h = jnp.sum(nn.relu(x), axis=(1, 2))
        self.sow("intermediates", "features", h)
        out = SNDense(1, spectral=sn, kernel_init=xavier)(h, update)[:, 0]
        if self.num_classes > 0:
            embed = SNEmbed(self.num_classes, h.shape[-1], spectral=sn)(labels, update)
            out = out + jnp.sum(embed * h, axis=-1)
        if self.text_conditioned:
            out = out + text_projection(h, text, sn, update)
        return out
