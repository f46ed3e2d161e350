"""A small convolutional image classifier (the 'domain' feature extractor).

Any image size and channel count: each stage is two 3x3 convolutions (GELU) and a
2x2 max pool, then a global average pool, a dense feature layer and the logits.
No batch statistics, so ``apply`` is a pure function of the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.conv import Conv


class ClassifierNet(nn.Module):
    """Images ``[B, H, W, C]`` in [0, 1] -> logits ``[B, num_classes]``.

    Computes and returns in the dtype of the images (float32, or bfloat16 with bfloat16
    parameters for mixed precision).

    Attributes:
      num_classes: number of output classes.
      channels: convolution width of each stage (each stage halves H and W).
      feature_dim: width of the penultimate dense layer (the features used by metrics).
      dropout: dropout rate before the logits (training only).
    """

    num_classes: int
    channels: Sequence[int] = (32, 64, 128)
    feature_dim: int = 128
    dropout: float = 0.0

    @nn.compact
    def __call__(
        self, images: jax.Array, train: bool = False, return_features: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Returns logits ``[B, K]``, or ``(features [B, feature_dim], logits)``."""
        x = images * 2.0 - 1.0
        for i, width in enumerate(self.channels):
            x = nn.gelu(Conv(width, (3, 3), name=f"conv{i}_a")(x))
            if i > 0:
                x = nn.gelu(Conv(width, (3, 3), name=f"conv{i}_b")(x))
            if min(x.shape[1:3]) >= 2:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        features = nn.gelu(nn.Dense(self.feature_dim, name="features")(x))
        h = nn.Dropout(self.dropout, deterministic=not train)(features)
        logits = nn.Dense(self.num_classes, name="logits")(h)
        return (features, logits) if return_features else logits
