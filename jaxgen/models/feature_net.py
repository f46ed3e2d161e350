"""A small residual network with GroupNorm: the ``contrastive`` feature extractor.

Independent of the domain classifier (:mod:`jaxgen.models.classifier`: plain conv stacks with
max pooling, trained on labels): pre-activation residual blocks with GroupNorm, average-pool
downsampling, trained without labels by ``scripts/train_feature_net.py`` (SimCLR).

  images [B, H, W, C] in [0, 1] -> 2x - 1 -> 3x3 conv (channels[0])
  -> per stage s: (2x2 average pool if s > 0), ``blocks`` x ResBlock(channels[s])
     (its output, averaged over H and W, is stage s's pooled feature [B, channels[s]])
  -> GroupNorm, GELU -> mean over H, W -> features [B, channels[-1]]
  (training only) -> Dense, GELU, Dense -> projection [B, projection_dim]

``output`` selects what ``__call__`` returns: ``"features"``, ``"stages"`` (the list of pooled
stage outputs: the metrics use them, since the first stages keep the pixel-level statistics,
speckle and blur, that the last stage learns to ignore) or ``"projection"``
(``(features, projection)``, for SimCLR). No batch statistics, so ``apply`` is a pure
function of the parameters; the projection head's parameters exist only when the network is
initialised with ``output="projection"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.conv import Conv


def _groups(width: int, groups: int) -> int:
    """The largest group count <= ``groups`` that divides ``width``."""
    return max(g for g in range(1, min(groups, width) + 1) if width % g == 0)


class ResBlock(nn.Module):
    """Pre-activation block: ``x + conv(gelu(gn(conv(gelu(gn(x))))))``; a 1x1 conv on the
    skip path when the width changes. ``[B, H, W, C] -> [B, H, W, width]``."""

    width: int
    groups: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.gelu(nn.GroupNorm(_groups(x.shape[-1], self.groups), name="norm_a")(x))
        h = Conv(self.width, (3, 3), name="conv_a")(h)
        h = nn.gelu(nn.GroupNorm(_groups(self.width, self.groups), name="norm_b")(h))
        h = Conv(self.width, (3, 3), name="conv_b")(h)
        if x.shape[-1] != self.width:
            x = Conv(self.width, (1, 1), name="skip")(x)
        return x + h


class FeatureNet(nn.Module):
    """Images ``[B, H, W, C]`` in [0, 1] -> features ``[B, channels[-1]]``.

    Attributes:
      channels: width of each stage (each stage after the first halves H and W).
      blocks: residual blocks per stage.
      groups: GroupNorm groups (fewer when a width is not divisible).
      projection_dim: output width of the SimCLR projection head.
    """

    channels: Sequence[int] = (32, 64, 128)
    blocks: int = 1
    groups: int = 8
    projection_dim: int = 64

    @nn.compact
    def __call__(self, images: jax.Array, output: str = "features"):
        """Features ``[B, channels[-1]]``; ``output="stages"``: a list of ``[B, channels[s]]``;
        ``output="projection"``: ``(features, projection [B, projection_dim])``."""
        if output not in ("features", "stages", "projection"):
            raise ValueError(f"output={output!r}: expected features, stages or projection")
        x = Conv(self.channels[0], (3, 3), name="stem")(images * 2.0 - 1.0)
        stages = []
        for s, width in enumerate(self.channels):
            if s > 0 and min(x.shape[1:3]) >= 2:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            for b in range(self.blocks):
                x = ResBlock(width, self.groups, name=f"stage{s}_block{b}")(x)
            stages.append(jnp.mean(x, axis=(1, 2)))
        if output == "stages":
            return stages
        x = nn.gelu(nn.GroupNorm(_groups(x.shape[-1], self.groups), name="norm_out")(x))
        features = jnp.mean(x, axis=(1, 2))
        if output == "features":
            return features
        h = nn.gelu(nn.Dense(features.shape[-1], name="head_hidden")(features))
        return features, nn.Dense(self.projection_dim, name="head_out")(h)
