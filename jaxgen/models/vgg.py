"""Feature networks for neural style transfer.

* :class:`VGG19`: the 16 convolutions of Simonyan & Zisserman's VGG19 (no classifier head),
  ImageNet input normalisation, features tapped by layer name, max or average pooling.
  Its weights come from an export of torchvision's ``vgg19-dcbb9e9d.pth``
  (see ``jaxgen/style_transfer/weights.py`` and ``scripts/convert_vgg19.py``).
* :class:`RandomMultiScale`: the fallback used when no VGG weights are available: one layer
  of random convolution filters + ReLU applied to every level of an image pyramid. Random,
  untrained multi-scale filters are known to carry enough texture statistics for texture
  synthesis and style transfer (Ustyuzhaninov et al. 2017, "What does it take to generate
  natural textures?"; He et al. 2016, "A powerful generative model using random weights for
  the deep image representation"). Ustyuzhaninov et al. grow the filter size (3 ... 55 px) at
  full resolution; here the receptive field grows by pooling the image instead, which
  costs a few percent of the large filters' FLOPs on a CPU.

Both modules take float32 RGB images ``[B, H, W, 3]`` in ``[0, 1]`` and return a dict from
tapped layer name to the rectified feature map ``[B, h, w, C]``. A tapped name ``convX_Y``
means the output of that convolution after its ReLU, as in Gatys et al.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.conv import Conv

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (name, output channels) of every convolution; a pooling layer follows the last conv of a block.
VGG19_CONVS: tuple[tuple[str, int], ...] = tuple(
    (f"conv{block}_{i}", width)
    for block, (n, width) in enumerate(((2, 64), (2, 128), (4, 256), (4, 512), (4, 512)), 1)
    for i in range(1, n + 1)
)
VGG19_LAYERS: tuple[str, ...] = tuple(name for name, _ in VGG19_CONVS)
POOLINGS = ("max", "avg")


def vgg19_param_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """``{layer: {"kernel": (3, 3, C_in, C_out), "bias": (C_out,)}}`` for the 16 convolutions."""
    shapes, c_in = {}, 3
    for name, c_out in VGG19_CONVS:
        shapes[name] = {"kernel": (3, 3, c_in, c_out), "bias": (c_out,)}
        c_in = c_out
    return shapes


def imagenet_normalize(images: jax.Array) -> jax.Array:
    """``[..., 3]`` RGB in ``[0, 1]`` -> zero-mean, unit-variance ImageNet statistics."""
    mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
    std = jnp.asarray(IMAGENET_STD, images.dtype)
    return (images - mean) / std


class VGG19(nn.Module):
    """VGG19 convolutions; computes only up to the deepest tapped layer.

    Attributes:
      taps: layer names (``conv1_1`` ... ``conv5_4``) whose rectified outputs are returned.
      pooling: ``"max"`` (the trained network) or ``"avg"`` (Gatys et al.'s choice for synthesis).
    """

    taps: tuple[str, ...] = ("conv4_2",)
    pooling: str = "avg"

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        """images: float32 ``[B, H, W, 3]`` in ``[0, 1]`` -> ``{tap: [B, h, w, C]}``."""
        unknown = [t for t in self.taps if t not in VGG19_LAYERS]
        if unknown or not self.taps:
            raise ValueError(f"VGG19 taps {unknown or '()'}: expected names from {VGG19_LAYERS}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"VGG19 pooling {self.pooling!r}: expected one of {POOLINGS}")
        last = max(VGG19_LAYERS.index(t) for t in self.taps)
        x = imagenet_normalize(images)
        features = {}
        for index, (name, width) in enumerate(VGG19_CONVS[: last + 1]):
            x = nn.relu(Conv(width, (3, 3), padding=1, name=name)(x))
            if name in self.taps:
                features[name] = x
            if index < last and VGG19_CONVS[index + 1][0].endswith("_1"):
                pool = nn.max_pool if self.pooling == "max" else nn.avg_pool
                x = pool(x, (2, 2), strides=(2, 2))
        return features


def pyramid_down(x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, ceil(H/2), ceil(W/2), C]``: binomial blur, then every 2nd pixel.

    The separable 5-tap binomial filter ``[1, 4, 6, 4, 1] / 16`` (reflect padding) keeps the
    gradient smooth; a 2x2 average pool would send it back in visible 2x2 blocks. Written as
    shifted slices: on a CPU that is several times faster than a depthwise convolution.
    """
    taps = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
    x = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    h, w = x.shape[1] - 4, x.shape[2] - 4
    x = sum(t * x[:, i : i + h : 2] for i, t in enumerate(taps))
    return sum(t * x[:, :, i : i + w : 2] for i, t in enumerate(taps))


def random_multiscale_layers(scales: int) -> tuple[str, ...]:
    """Layer names of :class:`RandomMultiScale`: ``color``, ``scale1`` ... ``scale<scales>``."""
    return ("color",) + tuple(f"scale{s}" for s in range(1, scales + 1))


def zero_mean_he_normal(key, shape, dtype=jnp.float32):
    """He-normal ``[k, k, C_in, C_out]`` kernels with each ``[k, k]`` slice made zero-mean."""
    kernel = nn.initializers.he_normal()(key, shape, dtype)
    return kernel - jnp.mean(kernel, axis=(0, 1), keepdims=True)


class RandomMultiScale(nn.Module):
    """Random filters on a Gaussian pyramid: ``scale<s>`` sees the image at ``1 / 2**(s-1)``.

    * ``scale<s>``: ``depth`` layers of (reflect-padded ``kernel_size`` convolution, ReLU) with
      ``channels`` random filters; the first layer's filters are zero-mean (band-pass), so each
      level answers to structure at its own scale and not to the flat colour. Level ``s`` has a
      receptive field of about ``kernel_size * 2**(s-1)`` input pixels.
    * ``color``: ``channels`` random 1x1 projections of the pixel colour with random biases,
      rectified: their Gram matrix summarises the colour distribution.

    Weights and biases are drawn from the init seed (He-normal; colour biases standard
    normal) and never trained: the same seed gives the same network.

    Attributes:
      taps: names from :func:`random_multiscale_layers` to return.
      scales: number of pyramid levels.
      channels: filters per level.
      kernel_size: spatial filter size (odd).
      depth: random conv layers per level.
    """

    taps: tuple[str, ...] = ("scale1",)
    scales: int = 5
    channels: int = 128
    kernel_size: int = 5
    depth: int = 1

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        """images: float32 ``[B, H, W, 3]`` in ``[0, 1]`` -> ``{tap: [B, h, w, channels]}``."""
        names = random_multiscale_layers(self.scales)
        unknown = [t for t in self.taps if t not in names]
        if unknown or not self.taps:
            raise ValueError(f"random network taps {unknown or '()'}: expected names from {names}")
        pad = self.kernel_size // 2
        level = imagenet_normalize(images)
        features = {}
        if "color" in self.taps:
            conv = Conv(
                self.channels,
                (1, 1),
                kernel_init=nn.initializers.he_normal(),
                bias_init=nn.initializers.normal(1.0),
                name="color",
            )
            features["color"] = nn.relu(conv(level))
        for s, name in enumerate(names[1:], 1):
            if s > 1:
                level = pyramid_down(level)
            if name not in self.taps:
                continue
            x = level
            for d in range(self.depth):
                x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
                conv = Conv(
                    self.channels,
                    (self.kernel_size, self.kernel_size),
                    padding="VALID",
                    kernel_init=zero_mean_he_normal if d == 0 else nn.initializers.he_normal(),
                    name=f"{name}_{d + 1}",
                )
                x = nn.relu(conv(x))
            features[name] = x
        return features
