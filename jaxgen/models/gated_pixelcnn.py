"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

Two stacks remove the blind spot of masked convolutions:

* the *vertical* stack sees every pixel in the rows above (its first layer reads
  rows ``r - k//2 ... r - 1``, later layers ``R x Q`` windows of the stack below,
  ``R = vertical_rows``, ``Q = vertical_cols``), so it grows a full triangle upwards,
  ``R - 1`` rows per layer: ``k//2 + (L - 1)(R - 1)`` rows above the pixel after ``L``
  layers, and ``k//2 + (L - 1)(Q - 1)/2`` columns to either side;
* the *horizontal* stack sees the current row to the left (``1 x (k//2 + 1)``
  then ``1 x 2`` windows ending at the pixel, mask ``A``/``B`` on the centre for
  the colour channels) and receives the vertical stack through a 1x1 link.

Each layer is gated, ``tanh(a) * sigmoid(b)``, with a per-example bias from the
conditioning vector (a class embedding and/or a ``context`` vector ``[B, D]``)
added to ``a`` and ``b``; the horizontal stack is residual. Colour groups as in
:mod:`jaxgen.models.pixelcnn` (feature ``k`` belongs to channel ``k % C``).

The vertical stack is the row stream and the horizontal stack the pixel stream
of :mod:`jaxgen.pixelcnn.layers` (the fast sampler computes the vertical stack
once per row and the horizontal stack once per pixel).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.pixelcnn.layers import (
    Bridge,
    ConditionBias,
    Conditioning,
    MaskedDense,
    Step,
    WindowConv,
)


def gate(x: jax.Array) -> jax.Array:
    """``[..., 2F]`` -> ``tanh(first half) * sigmoid(second half)``, ``[..., F]``."""
    a, b = jnp.split(x, 2, axis=-1)
    return jnp.tanh(a) * jax.nn.sigmoid(b)


class GatedPixelCNNNet(nn.Module):
    """Logits ``[B, H, W, 256 * C]`` from images ``x`` ``[B, H, W, C]`` in [-1, 1].

    Attributes:
      channels: image channels ``C``.
      num_outputs: outputs per pixel (``256 * C``).
      features: width ``F`` of both stacks; divisible by ``C``.
      num_layers: gated layers.
      kernel_size: size ``k`` of the first layer's window.
      vertical_rows: rows ``R`` of the later vertical layers' windows (2: the compact
        form, one row of context per layer; more rows widen the receptive field upwards at
        ``R / 2`` times the vertical convolutions' cost).
      vertical_cols: columns ``Q`` (odd) of the later vertical layers' windows (3: the
        paper's; 5 widens the reach to the sides by one more column a layer).
      output_features: width of the hidden 1x1 output layer.
      num_classes: > 0 for class-conditional models.
      cond_dim: width of the conditioning vector.
    """

    channels: int
    num_outputs: int
    features: int = 128
    num_layers: int = 15
    kernel_size: int = 7
    vertical_rows: int = 2
    vertical_cols: int = 3
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
        phase = None if step is None else step.phase
        run_v, run_h = phase in (None, "row"), phase in (None, "pixel")
        groups, k, f = self.channels, self.kernel_size, self.features
        cond = Conditioning(self.num_classes, self.cond_dim, name="cond")(label, context)
        v = h = x
        for i in range(self.num_layers):
            link = None
            if run_v:
                if i == 0:
                    vconv = WindowConv(2 * f, k // 2, k, k // 2, k // 2, full_input=True, name="v0")
                else:
                    r, q = self.vertical_rows, self.vertical_cols
                    vconv = WindowConv(2 * f, r, q, r - 1, q // 2, name=f"v{i}")
                v_pre = vconv(v, step) + ConditionBias(2 * f, name=f"v{i}_cond")(cond)
                link = nn.Dense(2 * f, name=f"link{i}")(v_pre)
                v = gate(v_pre)
            link = Bridge(name=f"bridge{i}")(link, step)
            if not run_h:
                continue
            if i == 0:
                hconv = WindowConv(
                    2 * f, 1, k // 2 + 1, 0, k // 2, mask_type="A", num_groups=groups,
                    full_input=True, name="h0",
                )  # fmt: skip
            else:
                hconv = WindowConv(
                    2 * f, 1, 2, 0, 1, mask_type="B", num_groups=groups, name=f"h{i}"
                )
            h_pre = hconv(h, step) + link + ConditionBias(2 * f, name=f"h{i}_cond")(cond)
            out = MaskedDense(f, groups, name=f"h{i}_out")(gate(h_pre))
            h = out if i == 0 else h + out
        if not run_h:
            return None
        h = MaskedDense(self.output_features, groups, name="out_hidden")(nn.relu(h))
        return MaskedDense(self.num_outputs, groups, name="out")(nn.relu(h))
