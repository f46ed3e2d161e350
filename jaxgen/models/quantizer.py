"""Finite scalar quantisation (FSQ, Mentzer et al. 2023): a codebook without parameters.

A latent vector ``z`` of ``d = len(levels)`` channels is bounded channel by channel and
rounded to an integer grid, channel ``i`` taking ``levels[i]`` values; the implicit codebook
is the product grid, ``prod(levels)`` codes (``(8, 5, 5, 5)``: 1000). Per channel, with
``L`` levels, ``h = (L - 1)(1 - eps) / 2``, ``o = 1/2`` for even ``L`` (else 0) and
``s = atanh(o / h)``:

  bound(z) = h tanh(z + s) - o          in (-h - o, h - o): rounds to L integers
  q = round(bound(z)) / (L // 2)        the code, in [-1, 1]
  digit = round(bound(z)) + L // 2      0 .. L - 1;  index = sum_i digit_i * prod_{j<i} L_j

``s`` makes ``bound(0) = 0`` (the reference code uses ``tan``, which is close, not exact).
Rounding passes gradients straight through (``x + stop_gradient(round(x) - x)``), so
``dq/dz = bound'(z) / (L // 2) = h (1 - tanh^2(z + s)) / (L // 2)`` channel by channel.

There is nothing to learn, no auxiliary loss and no codebook to collapse; every code is a
grid point, so codes -> indices -> codes is exact. Shapes: ``z`` ``[..., d]`` float,
indices ``[...]`` int32. Computed in float32 (the rounding must not depend on bfloat16).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-3  # keeps bound(z) strictly inside the outermost rounding intervals


def round_ste(x: jax.Array) -> jax.Array:
    """``round(x)`` forward, identity backward (the straight-through estimator)."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


class FSQ:
    """The quantiser of one tuple of levels (each >= 3); pure functions, no parameters."""

    def __init__(self, levels: tuple[int, ...]):
        self.levels = tuple(int(n) for n in levels)
        # Two levels would need bound(0) = 0 outside the range h tanh(.) - o can reach.
        if not self.levels or min(self.levels) < 3:
            raise ValueError(f"FSQ levels {levels}: expected a non-empty tuple of ints >= 3")
        levels_np = np.asarray(self.levels, np.float64)
        self._half_levels = np.floor(levels_np / 2)  # L // 2: the grid's scale per channel
        self._half_width = (levels_np - 1) * (1 - EPS) / 2
        self._offset = np.where(levels_np % 2 == 0, 0.5, 0.0)
        self._shift = np.arctanh(self._offset / self._half_width)
        self._basis = np.cumprod([1] + list(self.levels[:-1])).astype(np.int64)

    @property
    def dim(self) -> int:
        """``d``: the latent channels (one per level)."""
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        """``prod(levels)``: the number of codes."""
        return math.prod(self.levels)

    def _consts(self):
        f32 = jnp.float32
        return (
            jnp.asarray(self._half_width, f32),
            jnp.asarray(self._offset, f32),
            jnp.asarray(self._shift, f32),
            jnp.asarray(self._half_levels, f32),
        )

    def bound(self, z: jax.Array) -> jax.Array:
        """``h tanh(z + s) - o``, float32 ``[..., d]``: each channel inside its rounding range."""
        h, o, s, _ = self._consts()
        return h * jnp.tanh(z.astype(jnp.float32) + s) - o

    def quantize(self, z: jax.Array) -> jax.Array:
        """Codes ``[..., d]`` float32 in [-1, 1] for latents ``z`` ``[..., d]``; gradients pass
        straight through the rounding."""
        *_, scale = self._consts()
        return round_ste(self.bound(z)) / scale

    def codes_to_indices(self, codes: jax.Array) -> jax.Array:
        """Codes ``[..., d]`` (grid points of :meth:`quantize`) -> int32 indices ``[...]``."""
        *_, scale = self._consts()
        digits = jnp.round(codes.astype(jnp.float32) * scale + scale).astype(jnp.int32)
        return jnp.sum(digits * jnp.asarray(self._basis, jnp.int32), axis=-1)

    def indices_to_codes(self, indices: jax.Array) -> jax.Array:
        """int indices ``[...]`` in ``[0, codebook_size)`` -> float32 codes ``[..., d]``."""
        *_, scale = self._consts()
        indices = jnp.asarray(indices, jnp.int32)[..., None]
        basis = jnp.asarray(self._basis, jnp.int32)
        digits = (indices // basis) % jnp.asarray(self.levels, jnp.int32)
        return (digits.astype(jnp.float32) - scale) / scale

    def inverse_bound(self, codes: jax.Array) -> jax.Array:
        """A latent ``z`` ``[..., d]`` whose :meth:`quantize` is ``codes`` (tests, diagnostics).

        ``z = atanh((t + o) / h) - s`` with ``t`` the grid value ``q (L // 2)``, moved a quarter
        step inside the bound's open range where it lies on or beyond its edge (the lowest
        value of an even ``L`` is reached only by rounding).
        """
        h, o, s, scale = self._consts()
        t = jnp.clip(codes.astype(jnp.float32) * scale, -h - o + 0.25, h - o - 0.25)
        return jnp.arctanh((t + o) / h) - s


def codebook_usage(indices: jax.Array, codebook_size: int) -> dict[str, jax.Array]:
    """How a batch of indices ``[...]`` spreads over the codebook, float32 scalars.

    ``codebook_usage``: the share of the ``codebook_size`` codes used at least once;
    ``codebook_perplexity``: ``exp(entropy)`` of the empirical code distribution (from 1,
    one code, to ``codebook_size``, all equally often).
    """
    counts = jnp.bincount(indices.reshape(-1), length=codebook_size).astype(jnp.float32)
    p = counts / jnp.maximum(jnp.sum(counts), 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return {
        "codebook_usage": jnp.mean((counts > 0).astype(jnp.float32)),
        "codebook_perplexity": jnp.exp(entropy),
    }
