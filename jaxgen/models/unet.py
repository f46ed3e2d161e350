"""The UNet of Ho et al. (2020, Appendix B), with conditioning hooks.

Layout for ``ch_mult = (1, 2, 2, 2)`` on 32x32 inputs (the paper's CIFAR-10 model, 35.7M
parameters with ``ch = 128``, ``num_res_blocks = 2``, attention at 16x16):

  conv_in -> [ResBlock x num_res_blocks (+ attention at attn_resolutions), Downsample] per level
          -> middle: ResBlock, attention, ResBlock
          -> [ResBlock x (num_res_blocks + 1) on skip concatenations (+ attention), Upsample]
          -> GroupNorm, swish, conv_out

Time enters every ResBlock as a projected sinusoidal embedding (``4 * ch`` wide). Conditioning:

* class labels (``num_classes > 0``): a learned embedding added to the time embedding. Label
  ``num_classes`` (or any negative label) is the learned "no class" token used by
  classifier-free guidance.
* text (``context_dim > 0``): a cross-attention layer after every self-attention layer attends
  from image positions to ``context`` ``[B, L, context_dim]`` with ``context_mask`` ``[B, L]``
  (True for real tokens); rows with no real token get zero cross-attention output. The
  pooled text embedding ``pooled`` ``[B, context_dim]`` is projected and added to the time
  embedding, like a class embedding.

Precision: the network computes in the dtype of its input ``x`` (float32, or bfloat16 with
bfloat16 parameters for mixed precision); the time embedding's sinusoid is computed in
float32 and then cast, the context is cast to ``x.dtype``, GroupNorm statistics are float32
(flax promotes them) and attention runs through :func:`jax.nn.dot_product_attention` (its
softmax is float32).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.errors import UserError
from jaxgen.models.conv import Conv


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Hyperparameters of :class:`UNet`; resolutions are in pixels of the input's height."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    num_heads: int = 1
    num_groups: int = 32
    resample_with_conv: bool = True
    out_channels: int = 3
    num_classes: int = 0  # 0: unconditional; else labels 0..num_classes-1 plus a null token
    context_dim: int = 0  # 0: no cross-attention

    @classmethod
    def from_config(cls, cfg, out_channels: int, num_classes: int = 0, context_dim: int = 0):
        """From the ``model.unet`` ConfigDict (keys as the fields above)."""
        try:
            result = cls(
                ch=int(cfg.ch),
                ch_mult=tuple(int(m) for m in cfg.ch_mult),
                num_res_blocks=int(cfg.num_res_blocks),
                attn_resolutions=tuple(int(r) for r in cfg.attn_resolutions),
                dropout=float(cfg.dropout),
                num_heads=int(cfg.get("num_heads", 1)),
                num_groups=int(cfg.get("num_groups", 32)),
                resample_with_conv=bool(cfg.get("resample_with_conv", True)),
                out_channels=out_channels,
                num_classes=num_classes,
                context_dim=context_dim,
            )
        except (AttributeError, TypeError, ValueError) as e:
            raise UserError(f"config section model.unet: {e}") from None
        result.validate()
        return result

    def validate(self) -> None:
        if self.ch < 1 or not self.ch_mult or min(self.ch_mult) < 1:
            raise UserError(f"config model.unet: ch={self.ch}, ch_mult={self.ch_mult} must be >= 1")
        if self.num_res_blocks < 1:
            raise UserError(
                f"config key model.unet.num_res_blocks={self.num_res_blocks}: expected >= 1"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"config key model.unet.dropout={self.dropout}: expected in [0, 1)")
        for m in self.ch_mult:
            if (self.ch * m) % self.num_heads:
                raise UserError(
                    f"config key model.unet.num_heads={self.num_heads}: must divide every "
                    f"level's channels ({self.ch} * {m})"
                )

    def check_input(self, height: int, width: int) -> None:
        factor = 2 ** (len(self.ch_mult) - 1)
        if height % factor or width % factor:
            raise UserError(
                f"image size {height}x{width} is not divisible by {factor}, the downsampling "
                f"factor of model.unet.ch_mult={self.ch_mult}"
            )


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """DDPM's sinusoidal embedding of float times ``t`` ``[B]`` -> float32 ``[B, dim]``."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def _groups(channels: int, wanted: int) -> int:
    return math.gcd(channels, wanted)


def _zero_init_dense(features: int, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.zeros, name=name)


class ResBlock(nn.Module):
    """GroupNorm-swish-conv twice, time embedding added in between, dropout before the second."""

    out_ch: int
    dropout: float
    num_groups: int

    @nn.compact
    def __call__(self, x, temb, train: bool):
        h = nn.swish(nn.GroupNorm(_groups(x.shape[-1], self.num_groups))(x))
        h = Conv(self.out_ch, (3, 3))(h)
        h = h + nn.Dense(self.out_ch)(nn.swish(temb))[:, None, None, :]
        h = nn.swish(nn.GroupNorm(_groups(self.out_ch, self.num_groups))(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = Conv(self.out_ch, (3, 3), kernel_init=nn.initializers.zeros)(h)
        if x.shape[-1] != self.out_ch:
            x = nn.Dense(self.out_ch, name="shortcut")(x)
        return x + h


def _attend(q, k, v, num_heads: int, mask=None):
    """Multi-head dot-product attention: q ``[B, N, C]``, k/v ``[B, L, C]`` -> ``[B, N, C]``.

    Softmax of ``q k^T / sqrt(C / num_heads)`` per head, through
    :func:`jax.nn.dot_product_attention` with ``implementation=None`` (JAX's choice of
    kernel: XLA as of JAX 0.10, whose code leaves selecting cuDNN for later); float32
    softmax; q, k and v share one dtype, the output has it too.
    ``mask`` bool ``[B, L]`` (True: attend); query rows whose keys are all masked return zeros.
    """
    b, n, c = q.shape
    d = c // num_heads
    q = q.reshape(b, n, num_heads, d)
    k = k.reshape(b, -1, num_heads, d)
    v = v.reshape(b, -1, num_heads, d)
    key_mask = None if mask is None else mask[:, None, None, :]  # [B, 1 head, 1 query, L]
    out = jax.nn.dot_product_attention(q, k, v, mask=key_mask)  # [B, N, heads, d]
    if mask is not None:
        out = out * jnp.any(mask, axis=-1)[:, None, None, None].astype(out.dtype)
    return out.reshape(b, n, c)


class SelfAttention(nn.Module):
    """Residual self-attention over all positions, ``[B, H, W, C]`` -> same."""

    num_heads: int
    num_groups: int

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        y = nn.GroupNorm(_groups(c, self.num_groups))(x).reshape(b, h * w, c)
        q, k, v = (nn.Dense(c, name=name)(y) for name in ("q", "k", "v"))
        out = _zero_init_dense(c, "proj_out")(_attend(q, k, v, self.num_heads))
        return x + out.reshape(b, h, w, c)


class CrossAttention(nn.Module):
    """Residual attention from image positions to a context sequence ``[B, L, D]``."""

    num_heads: int
    num_groups: int

    @nn.compact
    def __call__(self, x, context, mask):
        b, h, w, c = x.shape
        y = nn.GroupNorm(_groups(c, self.num_groups))(x).reshape(b, h * w, c)
        q = nn.Dense(c, name="q")(y)
        k = nn.Dense(c, name="k")(context)
        v = nn.Dense(c, name="v")(context)
        out = _zero_init_dense(c, "proj_out")(_attend(q, k, v, self.num_heads, mask))
        return x + out.reshape(b, h, w, c)


class Downsample(nn.Module):
    with_conv: bool

    @nn.compact
    def __call__(self, x):
        if self.with_conv:
            return Conv(x.shape[-1], (3, 3), strides=(2, 2))(x)
        return nn.avg_pool(x, (2, 2), (2, 2))


class Upsample(nn.Module):
    with_conv: bool

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        x = jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest")
        return Conv(c, (3, 3))(x) if self.with_conv else x


class UNet(nn.Module):
    """``F(x, t, label, context)``: ``[B, H, W, C_in]`` -> ``[B, H, W, out_channels]``.

    Args of ``__call__``:
      x: float32 or bfloat16 ``[B, H, W, C]``; the network computes and returns in this dtype
        (give it parameters of the same dtype).
      t: float ``[B]``, the time input (DDPM: the 0-based timestep index); its sinusoidal
        embedding is computed in float32.
      label: int32 ``[B]`` or None; negative or ``num_classes`` means "no class".
      context: float ``[B, L, context_dim]`` or None; ``context_mask``: bool ``[B, L]``;
        ``pooled``: float ``[B, context_dim]`` or None (zeros); both are cast to ``x.dtype``.
      train: enables dropout (needs a ``dropout`` PRNG stream).
      t2: float ``[B]`` or None, a second time input (MeanFlow's ``r``): its own projected
        sinusoidal embedding (``temb2_*``) is added to the time embedding. Parameters for it
        exist only when ``init`` was given ``t2``; without it the parameters are as before.
    """

    config: UNetConfig

    def _attention(self, h, context, context_mask, level_name: str):
        cfg = self.config
        h = SelfAttention(cfg.num_heads, cfg.num_groups, name=f"{level_name}_attn")(h)
        if cfg.context_dim:
            h = CrossAttention(cfg.num_heads, cfg.num_groups, name=f"{level_name}_xattn")(
                h, context, context_mask
            )
        return h

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
        cfg = self.config
        cfg.check_input(x.shape[1], x.shape[2])
        temb = timestep_embedding(t, cfg.ch).astype(x.dtype)  # float32 sinusoid, then cast
        temb = nn.Dense(4 * cfg.ch, name="temb_0")(temb)
        temb = nn.Dense(4 * cfg.ch, name="temb_1")(nn.swish(temb))
        if t2 is not None:
            temb2 = nn.Dense(4 * cfg.ch, name="temb2_0")(
                timestep_embedding(t2, cfg.ch).astype(x.dtype)
            )
            temb = temb + nn.Dense(4 * cfg.ch, name="temb2_1")(nn.swish(temb2))
        if cfg.num_classes:
            if label is None:
                label = jnp.full((x.shape[0],), cfg.num_classes, jnp.int32)
            label = jnp.where(label < 0, cfg.num_classes, label)
            temb = temb + nn.Embed(cfg.num_classes + 1, 4 * cfg.ch, name="class_emb")(label)
        if cfg.context_dim:
            if context is None:
                context = jnp.zeros((x.shape[0], 1, cfg.context_dim), x.dtype)
                context_mask = jnp.zeros((x.shape[0], 1), bool)
            elif context_mask is None:
                context_mask = jnp.ones(context.shape[:2], bool)
            context = context.astype(x.dtype)
            if pooled is None:
                pooled = jnp.zeros((x.shape[0], cfg.context_dim), x.dtype)
            temb = temb + nn.Dense(4 * cfg.ch, name="text_emb")(pooled.astype(x.dtype))

        def block(h, ch, name):
            return ResBlock(ch, cfg.dropout, cfg.num_groups, name=name)(h, temb, train)

        hs = [Conv(cfg.ch, (3, 3), name="conv_in")(x)]
        for level, mult in enumerate(cfg.ch_mult):
            for i in range(cfg.num_res_blocks):
                h = block(hs[-1], cfg.ch * mult, f"down_{level}_block_{i}")
                if h.shape[1] in cfg.attn_resolutions:
                    h = self._attention(h, context, context_mask, f"down_{level}_{i}")
                hs.append(h)
            if level != len(cfg.ch_mult) - 1:
                hs.append(Downsample(cfg.resample_with_conv, name=f"down_{level}_resample")(hs[-1]))

        h = block(hs[-1], hs[-1].shape[-1], "mid_block_0")
        h = self._attention(h, context, context_mask, "mid")
        h = block(h, h.shape[-1], "mid_block_1")

        for level, mult in reversed(list(enumerate(cfg.ch_mult))):
            for i in range(cfg.num_res_blocks + 1):
                h = block(
                    jnp.concatenate([h, hs.pop()], -1), cfg.ch * mult, f"up_{level}_block_{i}"
                )
                if h.shape[1] in cfg.attn_resolutions:
                    h = self._attention(h, context, context_mask, f"up_{level}_{i}")
            if level:
                h = Upsample(cfg.resample_with_conv, name=f"up_{level}_resample")(h)
        assert not hs

        h = nn.swish(nn.GroupNorm(_groups(h.shape[-1], cfg.num_groups), name="norm_out")(h))
        return Conv(cfg.out_channels, (3, 3), kernel_init=nn.initializers.zeros, name="conv_out")(h)


def count_params(config: UNetConfig, image_shape: tuple[int, int, int]) -> int:
    """Number of parameters of ``UNet(config)`` for ``image_shape`` inputs (``jax.eval_shape``)."""
    model = UNet(config)
    h, w, c = image_shape
    shapes = jax.eval_shape(
        lambda: model.init(
            jax.random.PRNGKey(0),
            jnp.zeros((1, h, w, c)),
            jnp.zeros((1,)),
            jnp.zeros((1,), jnp.int32),
        )
    )
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))
