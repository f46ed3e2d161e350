"""DiT, the Diffusion Transformer of Peebles & Xie (2023), with the UNet's conditioning hooks.

Layout for ``patch_size = p`` and ``width = D`` on ``[B, H, W, C]`` inputs:

  patchify: [B, H, W, C] -> [B, N, p*p*C] tokens, N = (H / p) (W / p), row-major patches
  -> Dense D, plus a fixed 2-D sin-cos position embedding
  -> depth x DiTBlock(tokens, c)
  -> final layer: LayerNorm modulated by c, Dense p*p*out_channels
  -> unpatchify to [B, H, W, out_channels]

The conditioning vector ``c`` ``[B, D]`` is the sum of the time embedding (a sinusoid of ``t``
through two Dense layers), the class embedding, the projected pooled text embedding and,
when given, the embedding of a second time ``t2`` (MeanFlow's ``r``). Each block (adaLN-Zero):

  shift1, scale1, gate1, shift2, scale2, gate2 = Dense 6D (silu(c))     zero-initialised
  x += gate1 * SelfAttention(LayerNorm(x) * (1 + scale1) + shift1)
  x += CrossAttention(LayerNorm(x), context)                            text only
  x += gate2 * MLP(LayerNorm(x) * (1 + scale2) + shift2)

The modulation Dense and the cross-attention's output projection start at zero, so every
block is the identity at initialisation; the final layer's modulation and output projection
start at zero too, so the network outputs zeros. Conditioning follows
:class:`jaxgen.models.unet.UNet`: label ``num_classes`` (or any negative label) is the learned
null class of classifier-free guidance; text cross-attends to ``context``
``[B, L, context_dim]`` with ``context_mask`` ``[B, L]`` (rows with no real token get zero
cross-attention output); ``pooled`` ``[B, context_dim]`` is projected and added to ``c``.

The paper's DiT-S/2 (``patch_size=2, width=384, depth=12, num_heads=6, mlp_ratio=4``) has 33M
parameters on ImageNet 256x256 (32x32x4 VAE latents, 8 output channels, 1000 classes) and
reaches FID-50K 68.4 after 400K steps without guidance. This module has 32.9M trainable
parameters in that setting (``tests/test_dit.py``; the fixed position embedding is not a
parameter here).

Precision: the network computes in the dtype of ``x`` (give it parameters of that dtype);
the time sinusoids and the position embedding are computed in float32 and then cast,
LayerNorm statistics are float32 and attention runs through
:func:`jax.nn.dot_product_attention` (float32 softmax). There are no convolutions, so the
network supports forward-mode differentiation (``jax.jvp``) as well as reverse mode.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError
from jaxgen.models.unet import _attend, timestep_embedding

_KEYS = ("patch_size", "width", "depth", "num_heads", "mlp_ratio", "time_freq_dim")
_REQUIRED = ("patch_size", "width", "depth", "num_heads")


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Hyperparameters of :class:`DiT` (``model.dit``); ``width`` is the hidden size."""

    patch_size: int = 2
    width: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    time_freq_dim: int = 256  # width of the time sinusoid fed to the time embedding's MLP
    out_channels: int = 3
    num_classes: int = 0  # 0: unconditional; else labels 0..num_classes-1 plus a null token
    context_dim: int = 0  # 0: no cross-attention
    two_times: bool = False  # True: __call__ takes a second time t2, and requires it

    @classmethod
    def from_config(
        cls,
        cfg,
        out_channels: int,
        num_classes: int = 0,
        context_dim: int = 0,
        two_times: bool = False,
    ) -> DiTConfig:
        """From the ``model.dit`` section (keys: the first six fields above; ``mlp_ratio`` and
        ``time_freq_dim`` optional)."""
        keys = set(cfg.keys())
        unknown = sorted(keys - set(_KEYS))
        if unknown:
            raise UserError(f"config key model.dit.{unknown[0]}: unknown; expected one of {_KEYS}")
        for key in _REQUIRED:
            if key not in keys:
                raise UserError(f"config key model.dit.{key} is missing")
        values = {}
        for key in _KEYS:
            if key in keys:
                kind = float if key == "mlp_ratio" else int
                value = cfg[key]
                if isinstance(value, bool) or (kind is int and isinstance(value, float)):
                    value = str(value)  # 2.5 or True as an int: refused below
                try:
                    values[key] = kind(value)
                except (TypeError, ValueError):
                    raise UserError(
                        f"config key model.dit.{key}={cfg[key]!r}: expected {kind.__name__}"
                    ) from None
        result = cls(
            **values,
            out_channels=out_channels,
            num_classes=num_classes,
            context_dim=context_dim,
            two_times=two_times,
        )
        result.validate()
        return result

    def validate(self) -> None:
        for key in ("patch_size", "width", "depth", "num_heads"):
            if getattr(self, key) < 1:
                raise UserError(f"config key model.dit.{key}={getattr(self, key)}: expected >= 1")
        if self.width % self.num_heads:
            raise UserError(
                f"config key model.dit.num_heads={self.num_heads}: must divide "
                f"model.dit.width={self.width}"
            )
        if not self.mlp_ratio > 0:
            raise UserError(f"config key model.dit.mlp_ratio={self.mlp_ratio}: expected > 0")
        if self.time_freq_dim < 2:
            raise UserError(
                f"config key model.dit.time_freq_dim={self.time_freq_dim}: expected >= 2"
            )

    def check_input(self, height: int, width: int) -> None:
        p = self.patch_size
        if height % p or width % p:
            raise UserError(
                f"config key model.dit.patch_size={p}: image size {height}x{width} is not "
                f"divisible by it"
            )

    @property
    def mlp_width(self) -> int:
        return max(1, round(self.width * self.mlp_ratio))


def patchify(x: jax.Array, p: int) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, (H/p) (W/p), p*p*C]``: row-major patches, each flattened
    as ``(row in patch, column in patch, channel)``. ``H`` and ``W`` must be multiples of p."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: jax.Array, p: int, height: int, width: int) -> jax.Array:
    """The inverse of :func:`patchify`: ``[B, N, p*p*C]`` -> ``[B, height, width, C]``."""
    b, _, d = tokens.shape
    c = d // (p * p)
    x = tokens.reshape(b, height // p, width // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, height, width, c)


def _sincos_1d(positions: np.ndarray, dim: int) -> np.ndarray:
    """Sines then cosines of ``positions`` ``[N]`` at ``dim // 2`` frequencies from 1 down to
    1/10000 -> float32 ``[N, dim]`` (a zero column when ``dim`` is odd)."""
    half = dim // 2
    freqs = 1.0 / 10_000.0 ** (np.arange(half, dtype=np.float64) / max(half, 1))
    args = positions.astype(np.float64)[:, None] * freqs[None, :]
    emb = np.concatenate([np.sin(args), np.cos(args)], axis=-1)
    return np.pad(emb, ((0, 0), (0, dim % 2))).astype(np.float32)


def position_embedding(grid_h: int, grid_w: int, dim: int) -> np.ndarray:
    """The fixed 2-D sin-cos embedding of a ``grid_h x grid_w`` patch grid, float32
    ``[grid_h * grid_w, dim]`` in :func:`patchify`'s order: the first ``dim // 2`` columns
    encode the patch's row, the rest its column."""
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    half = dim // 2
    return np.concatenate(
        [_sincos_1d(rows.reshape(-1), half), _sincos_1d(cols.reshape(-1), dim - half)], axis=-1
    )


def _modulate(x, shift, scale):
    """``x`` ``[B, N, D]`` scaled and shifted per example by ``[B, D]`` vectors."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def _norm(name: str | None = None) -> nn.LayerNorm:
    """LayerNorm without its own scale and bias (the modulation supplies them)."""
    return nn.LayerNorm(epsilon=1e-6, use_scale=False, use_bias=False, name=name)


_dense_init = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros


class TimeEmbed(nn.Module):
    """Float times ``[B]`` -> ``[B, width]``: a float32 sinusoid cast to ``dtype``, then
    Dense, silu, Dense."""

    width: int
    freq_dim: int

    @nn.compact
    def __call__(self, t, dtype):
        init = nn.initializers.normal(0.02)
        e = timestep_embedding(t, self.freq_dim).astype(dtype)
        e = nn.Dense(self.width, kernel_init=init, name="dense_0")(e)
        return nn.Dense(self.width, kernel_init=init, name="dense_1")(nn.silu(e))


class DiTBlock(nn.Module):
    """One adaLN-Zero transformer block: tokens ``[B, N, D]``, conditioning ``c`` ``[B, D]``
    -> ``[B, N, D]``; the identity at initialisation. ``context`` ``[B, L, context_dim]``
    and ``context_mask`` bool ``[B, L]`` are used when ``cross_attention``."""

    num_heads: int
    mlp_width: int
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x, c, context=None, context_mask=None):
        d = x.shape[-1]
        mod = nn.Dense(6 * d, kernel_init=_zeros, bias_init=_zeros, name="adaln")(nn.silu(c))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)

        h = _modulate(_norm("norm1")(x), shift1, scale1)
        q, k, v = jnp.split(nn.Dense(3 * d, kernel_init=_dense_init, name="qkv")(h), 3, -1)
        h = nn.Dense(d, kernel_init=_dense_init, name="proj")(_attend(q, k, v, self.num_heads))
        x = x + gate1[:, None, :] * h

        if self.cross_attention:
            h = nn.LayerNorm(epsilon=1e-6, name="xattn_norm")(x)
            q = nn.Dense(d, kernel_init=_dense_init, name="xattn_q")(h)
            k = nn.Dense(d, kernel_init=_dense_init, name="xattn_k")(context)
            v = nn.Dense(d, kernel_init=_dense_init, name="xattn_v")(context)
            h = _attend(q, k, v, self.num_heads, context_mask)
            x = x + nn.Dense(d, kernel_init=_zeros, name="xattn_out")(h)

        h = _modulate(_norm("norm2")(x), shift2, scale2)
        h = nn.Dense(self.mlp_width, kernel_init=_dense_init, name="mlp_0")(h)
        h = nn.Dense(d, kernel_init=_dense_init, name="mlp_1")(nn.gelu(h, approximate=True))
        return x + gate2[:, None, :] * h


class FinalLayer(nn.Module):
    """Tokens ``[B, N, D]`` and ``c`` ``[B, D]`` -> ``[B, N, out_features]``; zeros at init."""

    out_features: int

    @nn.compact
    def __call__(self, x, c):
        d = x.shape[-1]
        mod = nn.Dense(2 * d, kernel_init=_zeros, bias_init=_zeros, name="adaln")(nn.silu(c))
        shift, scale = jnp.split(mod, 2, axis=-1)
        x = _modulate(_norm("norm")(x), shift, scale)
        return nn.Dense(self.out_features, kernel_init=_zeros, name="out")(x)


class DiT(nn.Module):
    """``F(x, t, label, context)``: ``[B, H, W, C_in]`` -> ``[B, H, W, out_channels]``.

    Args of ``__call__`` (as :class:`jaxgen.models.unet.UNet`'s, plus ``t2``):
      x: float32 or bfloat16 ``[B, H, W, C]``, ``H`` and ``W`` multiples of ``patch_size``;
        the network computes and returns in this dtype (give it parameters of that dtype).
      t: float ``[B]``, the time input, embedded at the scale it is given (DDPM: the
        0-based timestep index); its sinusoid is computed in float32.
      label: int32 ``[B]`` or None; negative or ``num_classes`` means "no class".
      context: float ``[B, L, context_dim]`` or None; ``context_mask``: bool ``[B, L]``;
        ``pooled``: float ``[B, context_dim]`` or None (zeros); both are cast to ``x.dtype``.
      train: accepted for the UNet's signature; the DiT has no dropout.
      t2: float ``[B]``, a second time (embedded like ``t`` by its own layers, ``temb2``, and
        added to the conditioning vector); required when ``config.two_times``, refused
        otherwise, so that ``init`` creates exactly the parameters ``apply`` uses.
    """

    config: DiTConfig

    @nn.compact
    def __call__(
        self,
        x,
        t,
        label=None,
        context=None,
        context_mask=None,
        pooled=None,
        train: bool = False,
        t2=None,
    ):
        del train
        cfg = self.config
        b, height, width, _ = x.shape
        cfg.check_input(height, width)
        if (t2 is not None) != cfg.two_times:
            raise ValueError(
                f"DiT built with two_times={cfg.two_times} was called with t2="
                f"{'None' if t2 is None else 'an array'}"
            )
        d, p = cfg.width, cfg.patch_size

        c = TimeEmbed(d, cfg.time_freq_dim, name="temb")(t, x.dtype)
        if t2 is not None:
            c = c + TimeEmbed(d, cfg.time_freq_dim, name="temb2")(t2, x.dtype)
        if cfg.num_classes:
            if label is None:
                label = jnp.full((b,), cfg.num_classes, jnp.int32)
            label = jnp.where(label < 0, cfg.num_classes, label)
            embed = nn.Embed(
                cfg.num_classes + 1, d, embedding_init=nn.initializers.normal(0.02),
                name="class_emb",
            )  # fmt: skip
            c = c + embed(label).astype(x.dtype)
        if cfg.context_dim:
            if context is None:
                context = jnp.zeros((b, 1, cfg.context_dim), x.dtype)
                context_mask = jnp.zeros((b, 1), bool)
            elif context_mask is None:
                context_mask = jnp.ones(context.shape[:2], bool)
            context = context.astype(x.dtype)
            if pooled is None:
                pooled = jnp.zeros((b, cfg.context_dim), x.dtype)
            c = c + nn.Dense(d, name="text_emb")(pooled.astype(x.dtype))

        tokens = nn.Dense(d, kernel_init=_dense_init, name="patch_embed")(patchify(x, p))
        pos = position_embedding(height // p, width // p, d)
        h = tokens + jnp.asarray(pos, x.dtype)[None]
        for i in range(cfg.depth):
            block = DiTBlock(cfg.num_heads, cfg.mlp_width, bool(cfg.context_dim), name=f"block_{i}")
            h = block(h, c, context, context_mask)
        h = FinalLayer(p * p * cfg.out_channels, name="final")(h, c)
        return unpatchify(h, p, height, width)
