"""PixelCNN with masked convolutions (van den Oord et al. 2016, "Pixel Recurrent Neural Networks").

A 7x7 convolution with mask ``A`` (a pixel's own value is hidden from it; colour
channel ``c`` sees channels ``< c`` of the same pixel), then residual blocks of
``1x1 -> 3x3 mask B -> 1x1`` convolutions (mask ``B`` lets a feature see its own
colour group, which already excludes the pixel's own value), then two 1x1
layers to ``256 * C`` logits. Features are split into colour groups R, G, B
(feature ``k`` belongs to group ``k % C``).

Stacked masked 3x3 convolutions leave a *blind spot*: pixels above and to the
right of the current one that no path reaches (``tests/test_pixelcnn.py``
shows it). Gated PixelCNN removes it.

Every layer reads only positions at or before its output in raster order, so the
whole network runs in the pixel stream of :mod:`jaxgen.pixelcnn.layers`.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxgen.pixelcnn.layers import (
    ConditionBias,
    Conditioning,
    MaskedDense,
    Step,
    WindowConv,
)


class PixelCNNNet(nn.Module):
    """Logits ``[B, H, W, 256 * C]`` from images ``x`` ``[B, H, W, C]`` in [-1, 1].

    Attributes:
      channels: image channels ``C`` (colour groups).
      num_outputs: outputs per pixel (``256 * C``).
      features: residual stream width ("2h" in the paper); divisible by ``2C``.
      num_blocks: residual blocks.
      kernel_size: size of the first (mask ``A``) convolution.
      output_features: width of the hidden 1x1 output layer.
      num_classes: > 0 for class-conditional models.
      cond_dim: width of the conditioning vector.
    """

    channels: int
    num_outputs: int
    features: int = 128
    num_blocks: int = 15
    kernel_size: int = 7
    output_features: int = 1024
    num_classes: int = 0
    cond_dim: int = 64

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        label: jax.Array | None = None,
        context: jax.Array | None = None,
        step: Step | None = None,
        train: bool = False,
    ) -> jax.Array | None:
        del train
        if step is not None and step.phase == "row":
            return None  # no row stream
        groups, k, f = self.channels, self.kernel_size, self.features
        cond = Conditioning(self.num_classes, self.cond_dim, name="cond")(label, context)
        h = WindowConv(
            f, k // 2 + 1, k, k // 2, k // 2, mask_type="A", num_groups=groups,
            full_input=True, name="conv_in",
        )(x, step)  # fmt: skip
        for i in range(self.num_blocks):
            y = MaskedDense(f // 2, groups, name=f"block{i}_reduce")(nn.relu(h))
            y = WindowConv(
                f // 2, 2, 3, 1, 1, mask_type="B", num_groups=groups, name=f"block{i}_conv"
            )(nn.relu(y), step)
            y = y + ConditionBias(f // 2, name=f"block{i}_cond")(cond)
            h = h + MaskedDense(f, groups, name=f"block{i}_expand")(nn.relu(y))
        h = MaskedDense(self.output_features, groups, name="out_hidden")(nn.relu(h))
        return MaskedDense(self.num_outputs, groups, name="out")(nn.relu(h))
