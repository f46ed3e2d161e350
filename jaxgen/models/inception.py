"""InceptionV3 as used for FID: the TF 2015-12-05 graph in the pytorch-fid layout.

Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016,
with the FID changes of pytorch-fid's ``fid_inception_v3``: average pools in the
Inception A/C/E1 blocks ignore the padding (``count_include_pad=False``, as TensorFlow
does) and the last block (Mixed_7c) pools with max instead of average. Module names
follow the PyTorch state dict (``Mixed_5b.branch1x1.conv``) so that the converter in
:mod:`jaxgen.evaluate.inception_weights` maps names one to one.

Input: float32 ``[B, H, W, 1 or 3]`` in [0, 1]. As pytorch-fid does, grayscale is
repeated to three channels, the image is resized bilinearly (half-pixel centres, no
antialiasing: ``F.interpolate(..., mode='bilinear', align_corners=False)``) to 299x299
and scaled to [-1, 1]. Output: the 2048-d pool3 features and the 1008 logits.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.models.conv import Conv

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008


def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``[out, in]`` weights of PyTorch's bilinear resize with ``align_corners=False``."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    m = np.zeros((out_size, in_size), np.float64)
    np.add.at(m, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(m, (np.arange(out_size), hi), frac)
    return m.astype(np.float32)


def resize_bilinear(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, size, size, C]``, matching ``F.interpolate`` bilinear."""
    rows = jnp.asarray(_bilinear_matrix(images.shape[1], size))
    cols = jnp.asarray(_bilinear_matrix(images.shape[2], size))
    hp = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,bhwc->bowc", rows, images, precision=hp)
    return jnp.einsum("pw,bowc->bopc", cols, x, precision=hp)


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, running statistics), ReLU."""

    features: int
    kernel: tuple[int, int] = (1, 1)
    strides: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = ((self.padding[0], self.padding[0]), (self.padding[1], self.padding[1]))
        x = Conv(
            self.features, self.kernel, strides=self.strides, padding=pad, use_bias=False,
            name="conv",
        )(x)  # fmt: skip
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool_same(x: jax.Array) -> jax.Array:
    """3x3 stride-1 average pool over the unpadded pixels only (TensorFlow's SAME pool)."""
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_valid(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(64, name="branch1x1")(x)
        b5 = BasicConv2d(48, name="branch5x5_1")(x)
        b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv2d(64, name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, name="branch_pool")(_avg_pool_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = BasicConv2d(64, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_valid(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        b1 = BasicConv2d(192, name="branch1x1")(x)
        b7 = BasicConv2d(c7, name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, **row, name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, **col, name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c7, **col, name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c7, **row, name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c7, **col, name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192, **row, name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192, name="branch_pool")(_avg_pool_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(192, name="branch3x3_1")(x)
        b3 = BasicConv2d(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv2d(192, name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_valid(x)], axis=-1)


class InceptionE(nn.Module):
    """``pool='avg'`` for Mixed_7b; ``'max'`` for Mixed_7c (the FID graph's quirk)."""

    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        b1 = BasicConv2d(320, name="branch1x1")(x)
        b3 = BasicConv2d(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [BasicConv2d(384, **row, name="branch3x3_2a")(b3),
             BasicConv2d(384, **col, name="branch3x3_2b")(b3)], axis=-1,
        )  # fmt: skip
        bd = BasicConv2d(448, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [BasicConv2d(384, **row, name="branch3x3dbl_3a")(bd),
             BasicConv2d(384, **col, name="branch3x3dbl_3b")(bd)], axis=-1,
        )  # fmt: skip
        if self.pool == "max":
            pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_same(x)
        bp = BasicConv2d(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def preprocess(images: jax.Array) -> jax.Array:
    """float ``[B, H, W, 1|3]`` in [0, 1] -> ``[B, 299, 299, 3]`` in [-1, 1] (pytorch-fid)."""
    if images.shape[-1] == 1:
        images = jnp.repeat(images, 3, axis=-1)
    if images.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
        images = resize_bilinear(images, INPUT_SIZE)
    return 2.0 * images - 1.0


class InceptionV3(nn.Module):
    """FID InceptionV3: images ``[B, H, W, 1|3]`` in [0, 1] -> (pool3, logits).

    Returns pool3 features ``[B, 2048]`` and the 1008 logits ``[B, 1008]``.
    """

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = preprocess(images)
        x = BasicConv2d(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_valid(x)
        x = BasicConv2d(80, name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_valid(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c7 in (
            ("Mixed_6b", 128),
            ("Mixed_6c", 160),
            ("Mixed_6d", 160),
            ("Mixed_6e", 192),
        ):
            x = InceptionC(c7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        pool3 = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(NUM_LOGITS, name="fc")(pool3)
        return pool3, logits
