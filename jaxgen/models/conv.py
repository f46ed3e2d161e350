"""2-D convolutions whose gradients stay fast inside loops on XLA's CPU backend.

XLA:CPU runs a convolution on its fast (Eigen/YNNPACK) kernels only when the convolution is
in canonical form: NHWC input, HWIO kernel, NHWC output. JAX's autodiff writes the input
and weight gradients of an NHWC/HWIO convolution with other dimension orders; XLA's
canonicalisation pass rewrites them with explicit transposes, but only in the entry
computation. Inside a ``while`` loop (``lax.scan``, ``nn.scan``, gradient accumulation)
they stay non-canonical and run on a naive loop nest, 30-60x slower (benchmarks/README.md,
"Loops on XLA:CPU").

:func:`conv_general_dilated` is a drop-in for ``lax.conv_general_dilated`` whose gradient
is written out with canonical convolutions, so the compiled program is the same straight
line or in a loop. It applies to NHWC/HWIO convolutions without dilation or grouping on
the CPU backend; every other case, and every GPU/TPU convolution (not measured there, so
JAX's own gradient is kept), goes to ``lax.conv_general_dilated`` unchanged. Values and
gradients equal JAX's up to float rounding.
It supports reverse-mode differentiation to any order, not forward mode (``jax.jvp``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")
Pads = tuple[tuple[int, int], tuple[int, int]]


def _canonical(x, w, strides: tuple[int, int], pads: Pads, precision) -> jax.Array:
    return lax.conv_general_dilated(
        x, w, strides, pads, dimension_numbers=NHWC, precision=precision
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides: tuple[int, int], pads: Pads, precision) -> jax.Array:
    return _canonical(x, w, strides, pads, precision)


def _conv_fwd(x, w, strides, pads, precision):
    return _canonical(x, w, strides, pads, precision), (x, w)


def _conv_bwd(strides, pads, precision, residuals, dy):
    """Gradients of ``y = conv(x, w)``, x [B, H, W, I], w [kh, kw, I, O], dy [B, M, N, O].

    Both are canonical convolutions (NHWC input, HWIO kernel); the transposes around them
    are ordinary ops that XLA fuses.
    """
    x, w = residuals
    size, kernel, out = x.shape[1:3], w.shape[:2], dy.shape[1:3]
    # dx: dy spread out by the stride, correlated with the flipped kernel ([kh, kw, O, I]).
    dx_pads = []
    for n, k, m, s, (lo, _) in zip(size, kernel, out, strides, pads, strict=True):
        before = k - 1 - lo
        dx_pads.append((before, n + k - 1 - ((m - 1) * s + 1) - before))
    w_flipped = jnp.flip(w, (0, 1)).swapaxes(2, 3)
    dx = lax.conv_general_dilated(
        dy, w_flipped, (1, 1), dx_pads, lhs_dilation=strides, dimension_numbers=NHWC,
        precision=precision,
    )  # fmt: skip
    # dw: the input's channels as the batch and its batch as the features, correlated with
    # dy as a [M, N, B, O] kernel dilated by the stride -> [I, kh, kw, O].
    dw_pads = [
        (lo, (m - 1) * s + k - n - lo)
        for n, k, m, s, (lo, _) in zip(size, kernel, out, strides, pads, strict=True)
    ]
    dw = lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1), dw_pads,
        rhs_dilation=strides, dimension_numbers=NHWC, precision=precision,
    )  # fmt: skip
    return dx, dw.transpose(1, 2, 0, 3).astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _is_nhwc(lhs, rhs, dimension_numbers) -> bool:
    if lhs.ndim != 4 or dimension_numbers is None:
        return False
    wanted = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == wanted


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """``lax.conv_general_dilated`` with a loop-safe gradient on CPU (see the module docstring)."""
    plain = (
        jax.default_backend() != "cpu"
        or not _is_nhwc(lhs, rhs, dimension_numbers)
        or any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
        or feature_group_count != 1
        or batch_group_count != 1
        or preferred_element_type is not None
        or lhs.dtype != rhs.dtype
    )
    if plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type,
        )  # fmt: skip
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv(lhs, rhs, strides, pads, precision)


def conv_nhwc(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    """``x [B, H, W, I]`` convolved with ``kernel [kh, kw, I, O]`` -> ``[B, H', W', O]``.

    ``padding``: ``"SAME"``, ``"VALID"`` or ``((top, bottom), (left, right))``.
    """
    return conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC)


class Conv(nn.Conv):
    """``flax.linen.Conv`` computed with :func:`conv_general_dilated` (same parameters)."""

    conv_general_dilated: Callable[..., jax.Array] | None = conv_general_dilated
