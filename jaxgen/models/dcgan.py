"""DCGAN generator and discriminator (Radford et al., 2016), sized by the image size.

Generator: ``z [B, z_dim] -> Dense -> [s0, s0, width * 2^(n-1)]``, then ``n``
stride-2 4x4 transposed convolutions that halve the channels and double the
resolution, batch norm + ReLU between them, ``tanh`` at the end. Images of
size ``s0 * 2^n`` with ``s0`` in 4..7 (see :func:`grid_plan`): 28 -> 7 x 2^2,
32 -> 4 x 2^3, 64 -> 4 x 2^4 (the paper's 64x64 network has ``width=128``).

Discriminator: the mirror image with 4x4 stride-2 convolutions and
LeakyReLU(0.2), normalisation after every convolution but the first
(``norm``: ``batch`` as in the paper, ``spectral`` as in Miyato et al.'s
"standard CNN" experiments, ``layer`` or ``none``), then a linear output and,
when class-conditional, the projection term ``<embed(y), h>`` (Miyato &
Koyama, 2018). Outputs are logits/critic values ``[B]``.

Conditional generators use class-conditional batch norm.
Images are NHWC in ``[-1, 1]``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.errors import UserError
from jaxgen.gan.layers import BatchStatNorm
from jaxgen.models.spectral_norm import SNConv, SNDense, SNEmbed

D_NORMS = ("batch", "spectral", "layer", "none")
dcgan_init = nn.initializers.normal(0.02)


def grid_plan(size: int) -> tuple[int, int]:
    """``(n, s0)`` with ``size = s0 * 2**n``, ``s0 >= 4`` and ``n`` as large as possible."""
    n, s0 = 0, size
    while s0 % 2 == 0 and s0 // 2 >= 4:
        s0 //= 2
        n += 1
    if n == 0:
        raise UserError(
            f"config key data.image_size={size}: GANs need a size s0 * 2^n with s0 >= 4, n >= 1"
        )
    return n, s0


def check_square(image_shape: tuple[int, int, int]) -> int:
    if image_shape[0] != image_shape[1]:
        raise UserError(f"GAN image shape {image_shape}: expected square images")
    return image_shape[0]


class DCGANGenerator(nn.Module):
    """``(z [B, z_dim], labels [B] | None) -> images [B, H, W, C]`` in ``[-1, 1]``."""

    image_shape: tuple[int, int, int]
    width: int = 64  # channels of the last hidden layer
    num_classes: int = 0

    @nn.compact
    def __call__(
        self, z: jax.Array, labels: jax.Array | None = None, stat_mask: jax.Array | None = None
    ) -> jax.Array:
        n, s0 = grid_plan(check_square(self.image_shape))
        ch = self.width * 2 ** (n - 1)
        x = nn.Dense(s0 * s0 * ch, kernel_init=dcgan_init)(z).reshape(-1, s0, s0, ch)
        x = nn.relu(BatchStatNorm(self.num_classes)(x, labels, stat_mask))
        for _ in range(n - 1):
            ch //= 2
            x = nn.ConvTranspose(ch, (4, 4), (2, 2), padding="SAME", kernel_init=dcgan_init)(x)
            x = nn.relu(BatchStatNorm(self.num_classes)(x, labels, stat_mask))
        x = nn.ConvTranspose(
            self.image_shape[-1], (4, 4), (2, 2), padding="SAME", kernel_init=dcgan_init
        )(x)
        return jnp.tanh(x)


class DCGANDiscriminator(nn.Module):
    """``(images [B, H, W, C], labels [B] | None) -> outputs [B]``."""

    image_shape: tuple[int, int, int]
    width: int = 64  # channels of the first convolution
    norm: str = "spectral"
    num_classes: int = 0

    @nn.compact
    def __call__(
        self, x: jax.Array, labels: jax.Array | None = None, update: bool = False
    ) -> jax.Array:
        if self.norm not in D_NORMS:
            raise UserError(f"config key model.d_norm={self.norm!r}: expected one of {D_NORMS}")
        n, _ = grid_plan(check_square(self.image_shape))
        sn = self.norm == "spectral"
        init = nn.initializers.lecun_normal() if sn else dcgan_init
        ch = self.width
        for i in range(n):
            x = SNConv(ch, (4, 4), (2, 2), spectral=sn, kernel_init=init)(x, update)
            if i > 0 and self.norm == "batch":
                x = BatchStatNorm()(x)
            elif i > 0 and self.norm == "layer":
                x = nn.LayerNorm()(x)
            x = nn.leaky_relu(x, 0.2)
            ch *= 2
        h = x.reshape(x.shape[0], -1)
        out = SNDense(1, spectral=sn, kernel_init=init)(h, update)[:, 0]
        if self.num_classes > 0:
            embed = SNEmbed(self.num_classes, h.shape[-1], spectral=sn)(labels, update)
            out = out + jnp.sum(embed * h, axis=-1)
        return out
