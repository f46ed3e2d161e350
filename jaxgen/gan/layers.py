"""Normalisation layers of GAN generators and discriminators.

GAN batch normalisation always uses the statistics of the batch it is given
(no running averages, as in DCGAN and SN-GAN training). To make sampling
independent of what else is in the batch, statistics can be taken over a
subset of rows (``stat_mask``): the sampler prepends a reference batch of
random latents and normalises the requested samples with its statistics
(standing statistics computed on the fly).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


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
    """

    num_classes: int = 0
    epsilon: float = 1e-5

    @nn.compact
    def __call__(
        self, x: jax.Array, labels: jax.Array | None = None, stat_mask: jax.Array | None = None
    ) -> jax.Array:
        c = x.shape[-1]
        mean, var = masked_moments(x, stat_mask)
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (c,)
        if self.num_classes > 0:  # labels required
            zeros = nn.initializers.zeros
            gamma = nn.Embed(self.num_classes, c, embedding_init=zeros, name="gamma")
            beta = nn.Embed(self.num_classes, c, embedding_init=zeros, name="beta")
            return y * (1.0 + gamma(labels).reshape(shape)) + beta(labels).reshape(shape)
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return y * scale + bias
