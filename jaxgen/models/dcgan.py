"""DCGAN generator and discriminator (Radford et al., 2016), sized by the image size.

Generator: ``z [B, z_dim] -> Dense -> [s0, s0, width * 2^(n-1)]``, then ``n``
stride-2 4x4 transposed convolutions (:class:`~jaxgen.models.layers.UpConv`) that
halve the channels and double the resolution, batch norm + ReLU between them,
``tanh`` at the end. Images of size ``s0 * 2^n`` with ``s0`` in 4..7 (see
:func:`grid_plan`): 28 -> 7 x 2^2, 32 -> 4 x 2^3, 64 -> 4 x 2^4 (the paper's
64x64 network has ``width=128``). With ``extra_convs = k > 0`` each resolution gets
``k`` 3x3 convolutions of its width (+ batch norm, ReLU) after its upsampling (the
first: after the dense layer), and the last upsampling keeps ``width / 2`` channels
for ``k`` 3x3 convolutions at full resolution, the last of them to the image's
channels (the SN-GAN ResNet generator ends so).

Discriminator: the mirror image with 4x4 stride-2 convolutions and
LeakyReLU(0.2), normalisation after every convolution but the first
(``norm``: ``batch`` as in the paper, ``spectral`` as in Miyato et al.'s
"standard CNN" experiments, ``layer`` or ``none``), optionally the minibatch
standard deviation channel of Karras et al. (2018) on the last feature map
(``minibatch_std``: its group size; :func:`minibatch_stddev`), then a linear output and,
when class-conditional, the projection term ``<embed(y), h>`` (Miyato &
Koyama, 2018). Outputs are logits/critic values ``[B]``; with ``info_codes = K`` a second
linear head on the same features adds the logits of InfoGAN's code (Chen et al., 2016),
``[B, 1 + K]`` in all.

Conditional generators use class-conditional batch norm. Text-conditioned ones
(``text_dim > 0``) map the pooled text embedding ``[B, D]`` through a learned
projection (:class:`~jaxgen.models.layers.TextProjection`) to ``c [B, text_dim]``,
concatenate ``c`` to ``z`` and make every batch norm's scale and shift linear in
``c``. Text-conditioned discriminators (``text_conditioned``) add the projection
term ``<phi(x), W pooled>`` (Miyato & Koyama, 2018, with the class embedding
replaced by a linear map ``W [D, F]`` of the text embedding, spectrally
normalised when the discriminator is), where ``phi(x) [B, F]`` are the features
the linear output reads; ``phi(x)`` is sown as ``intermediates/features``.
Images are NHWC in ``[-1, 1]``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.errors import UserError
from jaxgen.models.layers import BatchStatNorm, TextProjection, UpConv
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
    """``(z [B, z_dim], labels [B] | None, stat_mask [B] | None, text [B, D] | None)
    -> images [B, H, W, C]`` in ``[-1, 1]``."""

    image_shape: tuple[int, int, int]
    width: int = 64  # channels of the last hidden layer
    num_classes: int = 0
    text_dim: int = 0  # > 0: text-conditioned, width of the projected text embedding
    extra_convs: int = 0  # 3x3 convolutions (+ norm, ReLU) added at every resolution

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
        ch = self.width * 2 ** (n - 1)
        x = nn.Dense(s0 * s0 * ch, kernel_init=dcgan_init)(z).reshape(-1, s0, s0, ch)
        x = nn.relu(BatchStatNorm(self.num_classes)(x, labels, stat_mask, c))
        x = self._refine(x, labels, stat_mask, c)
        for i in range(n - 1):
            ch //= 2
            x = UpConv(ch, dcgan_init, name=f"ConvTranspose_{i}")(x)
            x = nn.relu(BatchStatNorm(self.num_classes)(x, labels, stat_mask, c))
            x = self._refine(x, labels, stat_mask, c)
        if not self.extra_convs:
            x = UpConv(self.image_shape[-1], dcgan_init, name=f"ConvTranspose_{n - 1}")(x)
            return jnp.tanh(x)
        x = UpConv(max(ch // 2, 1), dcgan_init, name=f"ConvTranspose_{n - 1}")(x)
        x = nn.relu(BatchStatNorm(self.num_classes)(x, labels, stat_mask, c))
        x = self._refine(x, labels, stat_mask, c, self.extra_convs - 1)
        x = nn.Conv(self.image_shape[-1], (3, 3), kernel_init=dcgan_init)(x)
        return jnp.tanh(x)

    def _refine(self, x, labels, stat_mask, c, count: int | None = None):
        """``count`` (default ``extra_convs``) x (3x3 convolution, batch norm, ReLU) on
        ``x [B, h, w, ch]``, keeping its shape."""
        for _ in range(self.extra_convs if count is None else count):
            x = nn.Conv(x.shape[-1], (3, 3), use_bias=False, kernel_init=dcgan_init)(x)
            x = nn.relu(BatchStatNorm(self.num_classes)(x, labels, stat_mask, c))
        return x


class DCGANDiscriminator(nn.Module):
    """``(images [B, H, W, C], labels [B] | None, update, text [B, D] | None) -> outputs [B]``."""

    image_shape: tuple[int, int, int]
    width: int = 64  # channels of the first convolution
    norm: str = "spectral"
    num_classes: int = 0
    text_conditioned: bool = False
    info_codes: int = 0  # K > 0: a second head, the logits [B, K] of InfoGAN's code
    minibatch_std: int = 0  # G > 0: a minibatch standard deviation channel, groups of G

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        labels: jax.Array | None = None,
        update: bool = False,
        text: jax.Array | None = None,
    ) -> jax.Array:
        """Outputs ``[B]``, or with ``info_codes = K`` ``[B, 1 + K]``: the output, then the
        code logits read from the same features."""
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
        if self.minibatch_std:
            x = minibatch_stddev(x, self.minibatch_std)
        h = x.reshape(x.shape[0], -1)
        self.sow("intermediates", "features", h)
        out = SNDense(1, spectral=sn, kernel_init=init)(h, update)[:, 0]
        if self.num_classes > 0:
            embed = SNEmbed(self.num_classes, h.shape[-1], spectral=sn)(labels, update)
            out = out + jnp.sum(embed * h, axis=-1)
        if self.text_conditioned:
            out = out + text_projection(h, text, sn, update)
        if self.info_codes:
            logits = SNDense(self.info_codes, spectral=sn, kernel_init=init, name="info_head")(
                h, update
            )
            return jnp.concatenate([out[:, None], logits], axis=-1)
        return out


def minibatch_stddev(x: jax.Array, group_size: int) -> jax.Array:
    """``x [B, H, W, C] -> [B, H, W, C + 1]``: ``x`` with one more channel, constant over
    each image, that says how much the images of its group differ (Karras et al., 2018).

    The batch is cut into groups of ``G = gcd(B, group_size)`` images, image ``b`` in group
    ``b mod (B / G)``; the channel is the standard deviation over the group of each feature,
    averaged over the features (``H * W * C``). A discriminator that sees it can tell a batch
    of near-copies from a batch as varied as the data, which a per-image discriminator cannot.
    """
    batch = x.shape[0]
    group = math.gcd(batch, group_size)
    members = list(x.astype(jnp.float32).reshape(group, batch // group, -1))  # G x [B/G, F]
    # A sum over the G slices, not a reduction over the leading axis: XLA's CPU backend runs
    # the latter's gradient about 20 times slower.
    mean = sum(members) / group
    var = sum(jnp.square(m - mean) for m in members) / group
    spread = jnp.sqrt(var + 1e-8).mean(axis=-1)  # [B / G]
    channel = jnp.concatenate([spread] * group).astype(x.dtype)  # image b: group b mod (B / G)
    channel = jnp.broadcast_to(channel[:, None, None, None], (*x.shape[:3], 1))
    return jnp.concatenate([x, channel], axis=-1)


def text_projection(h: jax.Array, text: jax.Array, spectral: bool, update: bool) -> jax.Array:
    """The projection term ``<h, W text>`` ``[B]`` of features ``h [B, F]`` and text ``[B, D]``.

    ``W [D, F]`` (no bias) is the parameter ``text_projection/kernel`` of the calling
    module, spectrally normalised when ``spectral``. Call inside a compact module.
    """
    w_text = SNDense(
        h.shape[-1], spectral=spectral, use_bias=False, kernel_init=nn.initializers.normal(0.02),
        name="text_projection",
    )(text, update)  # fmt: skip
    return jnp.sum(w_text * h, axis=-1)
