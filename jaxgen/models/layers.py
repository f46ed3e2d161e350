"""Layers shared by the networks of several families: batch-statistics normalisation, the
up-sampling convolution (GAN generators, the VAE decoder) and the text projection of
text-conditioned GAN generators.

GAN batch normalisation always uses the statistics of the batch it is given
(no running averages, as in DCGAN and SN-GAN training). To make sampling
independent of what else is in the batch, statistics can be taken over a
subset of rows (``stat_mask``): the sampler prepends a reference batch of
random latents and normalises the requested samples with its statistics
(standing statistics computed on the fly).

:class:`UpConv` is DCGAN's 4x4 stride-2 transposed convolution computed as a
sub-pixel convolution (a 3x3 stride-1 convolution to ``4 * features`` channels,
then depth-to-space). It has the parameters of ``flax.linen.ConvTranspose`` and
the same outputs, but its weight gradient is an ordinary convolution: on XLA's
CPU backend the weight gradient of an input-dilated convolution (what
``ConvTranspose`` lowers to) is about 4x slower, and made the CPU GAN step slow.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.models.conv import conv_nhwc


def masked_moments(x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and variance of ``x`` ``[B, ..., C]`` over rows where ``mask`` ``[B]`` is 1.

    Returns arrays of shape ``[C]``. ``mask=None`` uses every row.
    """
    axes = tuple(range(x.ndim - 1))
    if mask is None:
        mean = jnp.mean(x, axes)
        return mean, jnp.mean(jnp.square(x - mean), axes)
    w = mask.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    count = jnp.sum(w) * (x.size // (x.shape[0] * x.shape[-1]))
    mean = jnp.sum(x * w, axes) / count
    var = jnp.sum(jnp.square(x - mean) * w, axes) / count
    return mean, var


class BatchStatNorm(nn.Module):
    """Batch normalisation over every axis but the last, with an optional class-conditional affine.

    With ``num_classes > 0`` the scale and shift are per class (conditional
    batch norm, de Vries et al. 2017 / Miyato & Koyama 2018): ``labels`` int32
    ``[B]`` select them; the scale is ``1 + embed(label)``, initialised to 1.
    With a condition vector ``cond`` float ``[B, E]`` (e.g. a text embedding) they
    are linear in it instead: scale ``1 + cond W_g``, shift ``cond W_b`` (both
    initialised to 0, so that training starts from the unconditional layer).

    The statistics, the normalisation and the affine map are computed in float32; the
    output has the dtype of ``x`` (bfloat16 for mixed precision).
    """

    num_classes: int = 0
    epsilon: float = 1e-5

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        labels: jax.Array | None = None,
        stat_mask: jax.Array | None = None,
        cond: jax.Array | None = None,
    ) -> jax.Array:
        c, dtype = x.shape[-1], x.dtype
        x = x.astype(jnp.float32)  # a no-op for float32 inputs
        mean, var = masked_moments(x, stat_mask)
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (c,)
        if cond is not None:
            zeros = nn.initializers.zeros
            gamma = nn.Dense(c, kernel_init=zeros, name="cond_gamma")(cond)
            beta = nn.Dense(c, kernel_init=zeros, name="cond_beta")(cond)
            out = y * (1.0 + gamma.reshape(shape)) + beta.reshape(shape)
        elif self.num_classes > 0:  # labels required
            zeros = nn.initializers.zeros
            gamma = nn.Embed(self.num_classes, c, embedding_init=zeros, name="gamma")
            beta = nn.Embed(self.num_classes, c, embedding_init=zeros, name="beta")
            out = y * (1.0 + gamma(labels).reshape(shape)) + beta(labels).reshape(shape)
        else:
            scale = self.param("scale", nn.initializers.ones, (c,))
            bias = self.param("bias", nn.initializers.zeros, (c,))
            out = y * scale + bias
        return out.astype(dtype)


def _subpixel_selection() -> np.ndarray:
    """``S[u, a, k] = 1`` where tap ``k`` of a length-4 stride-2 transposed kernel links input
    offset ``u - 1`` to output parity ``a`` (``k = 2u - a``), ``[3, 2, 4]``.

    With "SAME" padding, ``out[2i + a] = sum_u x[i + u - 1] * w[2u - a]`` over the taps
    ``0 <= 2u - a <= 3``.
    """
    sel = np.zeros((3, 2, 4), np.float32)
    for u in range(3):
        for a in range(2):
            k = 2 * u - a
            if 0 <= k <= 3:
                sel[u, a, k] = 1.0
    return sel


SUBPIXEL = _subpixel_selection()


def transposed_kernel_as_subpixel(kernel: jax.Array) -> jax.Array:
    """A 4x4 stride-2 transposed-convolution kernel ``[4, 4, C, O]`` as the equivalent
    3x3 stride-1 kernel to the four output parities, ``[3, 3, C, 2 * 2 * O]``.
    """
    sel = jnp.asarray(SUBPIXEL, kernel.dtype)
    k = jnp.einsum("uak,vbl,klco->uvcabo", sel, sel, kernel)
    c, o = kernel.shape[2], kernel.shape[3]
    return k.reshape(3, 3, c, 4 * o)


def depth_to_space(x: jax.Array, out: int) -> jax.Array:
    """``[B, H, W, 2 * 2 * out]`` (parities ``a, b`` then channels) -> ``[B, 2H, 2W, out]``."""
    b, h, w, _ = x.shape
    x = x.reshape(b, h, w, 2, 2, out).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, 2 * h, 2 * w, out)


class UpConv(nn.Module):
    """4x4 stride-2 "SAME" transposed convolution, ``[B, H, W, C] -> [B, 2H, 2W, features]``.

    Same parameters (``kernel [4, 4, C, features]``, ``bias [features]``) and outputs as
    ``nn.ConvTranspose(features, (4, 4), (2, 2), padding="SAME")``; computed as a sub-pixel
    convolution (see the module docstring).
    """

    features: int
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = conv_nhwc(x, transposed_kernel_as_subpixel(kernel), (1, 1), "SAME")
        return depth_to_space(y, self.features) + bias


class TextProjection(nn.Module):
    """The generator's learned projection of a text embedding: ``[B, D] -> [B, features]``.

    Dense, LeakyReLU(0.2), Dense: the result is concatenated to ``z`` and drives the
    conditional batch norms (see :class:`BatchStatNorm`).
    """

    features: int

    @nn.compact
    def __call__(self, pooled: jax.Array) -> jax.Array:
        h = nn.leaky_relu(nn.Dense(self.features)(pooled), 0.2)
        return nn.Dense(self.features)(h)
