"""Causal layers that run either on whole images or incrementally, one row or pixel at a time.

Every network of the PixelCNN family is written once with these layers. Called
with ``step=None`` they are ordinary (masked or shifted) convolutions over the
whole ``[B, H, W, D]`` input, used for teacher-forced training and by the plain
sampler. Called with a :class:`Step` they compute only the outputs at the
current position and keep their inputs in the ``cache`` collection, which is how
the fast sampler reuses work between steps (Ramachandran et al. 2017):

* ``Step("row", r, c)``: the *row stream* (layers that only see rows above, e.g.
  the vertical stack) computes one whole row, once per image row.
* ``Step("pixel", r, c)``: the *pixel stream* (layers that see the current row)
  computes one position.

A layer at resolution level ``l`` (the image downsampled ``2**l`` times) works
at row ``r >> l`` and column ``c >> l``. Layers at coarse levels recompute the
same position at several consecutive steps; their inputs are final by then, so
the recomputation writes identical values and no control flow is needed.

A convolution's window is described relative to its output position: it reads
input rows ``r - pad_top ... r - pad_top + kh - 1`` and columns
``c - pad_left ... c - pad_left + kw - 1``.

The layers compute in the dtype of their input and parameters (float32, or bfloat16 for
mixed precision); the 0/1 masks are cast to the kernel's dtype.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.models.conv import conv_nhwc

PHASES = ("row", "pixel")


@dataclasses.dataclass(frozen=True)
class Step:
    """Where an incremental call computes: ``phase`` (row | pixel), level-0 row and column."""

    phase: str
    row: jax.Array
    col: jax.Array

    def at(self, level: int) -> tuple[jax.Array, jax.Array]:
        """Row and column at resolution level ``level``."""
        return self.row >> level, self.col >> level


def channel_groups(size: int, num_groups: int) -> np.ndarray:
    """Colour group of each of ``size`` features: ``k % num_groups`` (R, G, B interleaved)."""
    return np.arange(size) % num_groups


def group_mask(d_in: int, d_out: int, num_groups: int, mask_type: str) -> np.ndarray:
    """``[d_in, d_out]`` 0/1 matrix: ``A`` connects lower groups only, ``B`` also equal ones."""
    g_in = channel_groups(d_in, num_groups)[:, None]
    g_out = channel_groups(d_out, num_groups)[None, :]
    allowed = g_in < g_out if mask_type == "A" else g_in <= g_out
    return allowed.astype(np.float32)


def conv_mask(
    kh: int, kw: int, pad_top: int, pad_left: int, d_in: int, d_out: int, num_groups: int,
    mask_type: str | None,
) -> np.ndarray:  # fmt: skip
    """``[kh, kw, d_in, d_out]`` mask of a window whose centre tap is ``(pad_top, pad_left)``.

    Without ``mask_type`` everything is allowed. With ``A``/``B`` the taps right of
    the centre in the centre row are cut, and the centre tap only connects colour
    groups as :func:`group_mask` says. Rows below the centre must not be in the window.
    """
    mask = np.ones((kh, kw, d_in, d_out), np.float32)
    if mask_type is None:
        return mask
    if pad_top != kh - 1:
        raise ValueError("a masked window must end at the centre row")
    mask[pad_top, pad_left + 1 :] = 0.0
    if 0 <= pad_left < kw:
        mask[pad_top, pad_left] = group_mask(d_in, d_out, num_groups, mask_type)
    return mask


class MaskedDense(nn.Module):
    """A 1x1 convolution that respects colour groups (mask ``B`` or ``A``); pointwise."""

    features: int
    num_groups: int = 1
    mask_type: str = "B"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_in = x.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (d_in, self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        if self.num_groups > 1:
            mask = group_mask(d_in, self.features, self.num_groups, self.mask_type)
            kernel = kernel * jnp.asarray(mask, kernel.dtype)
        return x @ kernel + bias


class WindowConv(nn.Module):
    """A convolution with an explicit causal window, runnable whole or incrementally.

    Attributes:
      features: output features.
      kh, kw: window size.
      pad_top, pad_left: the window starts ``pad_top`` rows above and ``pad_left``
        columns left of the output position. ``pad_top >= kh - 1`` (rows at or above).
      stride: 1, or 2 to halve the resolution (output level = ``level + 1``).
      mask_type: None, ``A`` or ``B`` (see :func:`conv_mask`).
      num_groups: colour groups for the centre tap (the image's channels).
      level: resolution level of the input.
      full_input: the input is the whole image in every mode (the network's input
        canvas); it is read directly instead of being cached.
      init_scale: scale of the initial weights.
    """

    features: int
    kh: int
    kw: int
    pad_top: int
    pad_left: int
    stride: int = 1
    mask_type: str | None = None
    num_groups: int = 1
    level: int = 0
    full_input: bool = False
    init_scale: float = 1.0

    def _pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
        bottom = max(self.kh - 1 - self.pad_top, 0)
        right = max(self.kw - 1 - self.pad_left, 0)
        return (self.pad_top, bottom), (self.pad_left, right)

    def _pad(self, x: jax.Array) -> jax.Array:
        rows, cols = self._pads()
        return jnp.pad(x, ((0, 0), rows, cols, (0, 0)))

    def _conv(self, x: jax.Array, kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
        return conv_nhwc(x, kernel, strides, "VALID")

    @nn.compact
    def __call__(self, x: jax.Array, step: Step | None = None) -> jax.Array:
        """``x``: ``[B, H, W, D]`` (whole) or the current row/pixel slice; same for the output."""
        if self.pad_top < self.kh - 1:
            raise ValueError("WindowConv windows may not reach below the output row")
        d_in = x.shape[-1]
        init = nn.initializers.variance_scaling(self.init_scale, "fan_in", "truncated_normal")
        kernel = self.param("kernel", init, (self.kh, self.kw, d_in, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        mask = conv_mask(
            self.kh, self.kw, self.pad_top, self.pad_left, d_in, self.features,
            self.num_groups, self.mask_type,
        )  # fmt: skip
        kernel = kernel * jnp.asarray(mask, kernel.dtype)
        s = self.stride

        if step is None:
            y = self._conv(self._pad(x), kernel, (s, s))
            h, w = x.shape[1] // s, x.shape[2] // s
            if not self.full_input and self.is_mutable_collection("cache"):
                self.variable("cache", "inputs", jnp.zeros_like, self._pad(x))
            return y[:, :h, :w] + bias

        row, col = step.at(self.level)
        if self.full_input:
            source = self._pad(x)
        else:
            cache = self.variable("cache", "inputs", lambda: None)
            if step.phase == "row":
                start = (0, row + self.pad_top, self.pad_left, 0)
            else:
                start = (0, row + self.pad_top, col + self.pad_left, 0)
            cache.value = jax.lax.dynamic_update_slice(cache.value, x, start)
            source = cache.value
        batch, _, width, _ = source.shape
        top = (row // s) * s
        if step.phase == "row":
            window = jax.lax.dynamic_slice(source, (0, top, 0, 0), (batch, self.kh, width, d_in))
            y = self._conv(window, kernel, (1, s))
            image_width = width - sum(self._pads()[1])
            return y[:, :, : image_width // s] + bias
        left = (col // s) * s
        window = jax.lax.dynamic_slice(source, (0, top, left, 0), (batch, self.kh, self.kw, d_in))
        return jnp.einsum("bhwi,hwio->bo", window, kernel)[:, None, None, :] + bias


class Upsample2x(nn.Module):
    """Transposed convolution with stride 2: kernel ``[2, kw]``, ``kw`` = 2 or 3.

    Output pixel ``(R, C)`` takes input row ``R // 2`` with kernel row ``R % 2``;
    with ``kw = 2`` only input column ``C // 2`` (depth-to-space, causal per pixel),
    with ``kw = 3`` input columns ``(C - 1) // 2 ... (C + 1) // 2`` (row stream only).
    ``level`` is the output's resolution level.
    """

    features: int
    kw: int = 2
    level: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, step: Step | None = None) -> jax.Array:
        d_in = x.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (2, self.kw, d_in, self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        if step is None:
            return self._rows(x, kernel) + bias
        row, col = step.at(self.level)
        k_row = jax.lax.dynamic_index_in_dim(kernel, row % 2, 0, keepdims=True)
        if step.phase == "row":
            return self._rows(x, k_row) + bias
        if self.kw != 2:
            raise ValueError("Upsample2x with kw=3 mixes columns; use it in the row stream")
        tap = jax.lax.dynamic_index_in_dim(k_row[0], col % 2, 0, keepdims=False)
        return jnp.einsum("bhwi,io->bhwo", x, tap) + bias

    def _rows(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        """``x`` ``[B, h, w, D]``, ``kernel`` ``[p, kw, D, F]`` -> ``[B, h * p, 2w, F]``."""
        b, h, w, _ = x.shape
        p = kernel.shape[0]
        taps = jnp.einsum("bhwi,pqio->bhpqwo", x, kernel)
        out = jnp.zeros((b, h, p, 2 * w + self.kw - 1, self.features), x.dtype)
        for q in range(self.kw):
            out = out.at[:, :, :, q : q + 2 * w : 2].add(taps[:, :, :, q])
        offset = (self.kw - 1) // 2
        return out[:, :, :, offset : offset + 2 * w].reshape(b, h * p, 2 * w, self.features)


class Bridge(nn.Module):
    """Hands a row-stream tensor to the pixel stream.

    Whole-image mode: identity. Row phase: stores the row and returns it. Pixel
    phase: returns the stored value at the current position (``x`` is ignored).
    """

    level: int = 0

    @nn.compact
    def __call__(self, x: jax.Array | None, step: Step | None = None) -> jax.Array:
        if step is None:
            if self.is_mutable_collection("cache"):
                self.variable("cache", "rows", jnp.zeros_like, x)
            return x
        cache = self.variable("cache", "rows", lambda: None)
        row, col = step.at(self.level)
        if step.phase == "row":
            cache.value = jax.lax.dynamic_update_slice(cache.value, x, (0, row, 0, 0))
            return x
        b, _, _, d = cache.value.shape
        return jax.lax.dynamic_slice(cache.value, (0, row, col, 0), (b, 1, 1, d))


class ConditionBias(nn.Module):
    """Per-example bias ``[B, 1, 1, features]`` from a conditioning vector ``[B, D]`` (or 0)."""

    features: int

    @nn.compact
    def __call__(self, cond: jax.Array | None) -> jax.Array | float:
        if cond is None:
            return 0.0
        return nn.Dense(self.features, use_bias=False)(cond)[:, None, None, :]


class Conditioning(nn.Module):
    """The conditioning vector ``[B, dim]`` from a class label and/or a context vector.

    ``label``: int32 ``[B]`` (used when ``num_classes > 0``); ``context``: float
    ``[B, D]`` (e.g. a text embedding). Returns None when there is neither.
    """

    num_classes: int = 0
    dim: int = 64

    @nn.compact
    def __call__(self, label: jax.Array | None, context: jax.Array | None) -> jax.Array | None:
        parts = []
        if self.num_classes > 0:
            if label is None:
                raise ValueError("a class-conditional model needs labels")
            parts.append(nn.Embed(self.num_classes, self.dim, name="class_embed")(label))
        if context is not None:
            parts.append(nn.Dense(self.dim, name="context_proj")(context))
        if not parts:
            return None
        return sum(parts)
