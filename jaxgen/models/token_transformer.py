"""A decoder-only causal Transformer over image tokens, with a key/value cache for sampling.

Sequence layout, for ``N`` tokens ``t_0 .. t_{N-1}`` (an image's token grid in raster order):

  input  position i:  start (i = 0) or embed(t_{i-1}),  plus the learned position embedding i
  output position i:  logits of t_i given t_0 .. t_{i-1} and the condition

The start vector carries the condition: a learned start vector, or the embedding of the
class label (``num_classes > 0``; index ``num_classes`` is the null class of classifier-free
guidance), plus a projection of the pooled text embedding (``context_dim > 0``). With text,
every block also cross-attends to the text encoder's token embeddings under their mask.

Blocks are pre-LN: ``x + SelfAttn(LN(x))``, ``x + CrossAttn(LN(x), text)`` (text only),
``x + MLP(LN(x))``. Attention goes through :func:`jax.nn.dot_product_attention`: the full
pass (:meth:`TokenTransformer.__call__`, training and likelihood) with ``is_causal=True``;
the incremental pass (:meth:`TokenTransformer.decode_step`, one position for a batch) writes
the position's keys and values into a cache ``[B, N, heads, head_dim]`` per block and
attends to the cache under an explicit mask of the positions ``<= i``. Both give the same
logits up to float rounding. Networks compute in the dtype of their parameters (bfloat16
for mixed precision; LayerNorm statistics in float32).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

Cache = tuple[tuple[jax.Array, jax.Array], ...]  # per block: keys, values [B, N, heads, hd]


def _attention(query, key, value, mask=None, **unused):
    """``attention_fn`` of the cross-attention: :func:`jax.nn.dot_product_attention` on
    ``[B, T, heads, hd]`` query and ``[B, S, heads, hd]`` keys/values (no dropout); a query
    whose keys are all masked (the null text) attends uniformly to them."""
    del unused
    return jax.nn.dot_product_attention(query, key, value, mask=mask)


@dataclasses.dataclass(frozen=True)
class TokenTransformerConfig:
    vocab_size: int  # codebook size
    num_positions: int  # N: tokens per image
    width: int = 256
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: int = 4
    dropout: float = 0.0
    num_classes: int = 0  # > 0: class-conditional (plus one null class)
    context_dim: int = 0  # > 0: text-conditional (width of the text embeddings)

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; :meth:`step` is one position against a cache."""

    width: int
    num_heads: int

    def setup(self):
        self.qkv = nn.DenseGeneral((3, self.num_heads, self.width // self.num_heads))
        self.out = nn.DenseGeneral(self.width, axis=(-2, -1))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x ``[B, T, W]`` -> ``[B, T, W]``, position i attending to positions ``<= i``."""
        qkv = self.qkv(x)  # [B, T, 3, heads, hd]
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        return self.out(jax.nn.dot_product_attention(q, k, v, is_causal=True))

    def step(self, x: jax.Array, pos: jax.Array, keys: jax.Array, values: jax.Array):
        """x ``[B, 1, W]`` at position ``pos`` (int32 scalar) -> (``[B, 1, W]``, keys, values).

        ``keys``/``values`` ``[B, N, heads, hd]`` hold positions ``< pos``; this position's are
        written at ``pos``, and the query attends to positions ``<= pos`` (the rest masked).
        """
        qkv = self.qkv(x)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        keys = jax.lax.dynamic_update_slice_in_dim(keys, k.astype(keys.dtype), pos, axis=1)
        values = jax.lax.dynamic_update_slice_in_dim(values, v.astype(values.dtype), pos, axis=1)
        mask = (jnp.arange(keys.shape[1]) <= pos)[None, None, None, :]  # [1, 1, 1, N]
        y = jax.nn.dot_product_attention(q, keys, values, mask=mask)
        return self.out(y), keys, values


class Block(nn.Module):
    """Pre-LN block: causal self-attention, optional cross-attention to text, MLP."""

    width: int
    num_heads: int
    mlp_ratio: int
    dropout: float
    cross: bool

    def setup(self):
        self.ln_attn = nn.LayerNorm()
        self.attn = CausalSelfAttention(self.width, self.num_heads)
        if self.cross:
            self.ln_cross = nn.LayerNorm()
            self.cross_attn = nn.MultiHeadDotProductAttention(
                num_heads=self.num_heads, attention_fn=_attention
            )
        self.ln_mlp = nn.LayerNorm()
        self.mlp_in = nn.Dense(self.width * self.mlp_ratio)
        self.mlp_out = nn.Dense(self.width)
        self.drop = nn.Dropout(self.dropout)

    def _rest(self, x, text, train: bool) -> jax.Array:
        """Cross-attention (with ``text = (tokens [B, L, D], mask [B, L])``) and the MLP."""
        if self.cross:
            tokens, mask = text
            h = self.ln_cross(x)
            h = self.cross_attn(h, tokens.astype(h.dtype), mask=mask[:, None, None, :])
            x = x + self.drop(h, deterministic=not train)
        h = self.mlp_out(nn.gelu(self.mlp_in(self.ln_mlp(x))))
        return x + self.drop(h, deterministic=not train)

    def __call__(self, x: jax.Array, text=None, train: bool = False) -> jax.Array:
        x = x + self.drop(self.attn(self.ln_attn(x)), deterministic=not train)
        return self._rest(x, text, train)

    def step(self, x, pos, keys, values, text=None):
        h, keys, values = self.attn.step(self.ln_attn(x), pos, keys, values)
        return self._rest(x + h, text, False), keys, values


class TokenTransformer(nn.Module):
    """Logits over the codebook for each token position; see the module docstring.

    Conditioning arguments (all optional): ``label`` int32 ``[B]`` (``num_classes``: the
    null class), ``text_tokens`` float ``[B, L, D]`` with ``text_mask`` bool ``[B, L]`` and
    ``text_pooled`` float ``[B, D]`` (the null text: mask all False, zero vectors).
    """

    config: TokenTransformerConfig

    def setup(self):
        cfg = self.config
        init = nn.initializers.normal(0.02)
        self.token_embed = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=init)
        self.pos_embed = self.param("pos_embed", init, (cfg.num_positions, cfg.width))
        self.start = self.param("start", init, (cfg.width,))
        if cfg.num_classes:
            self.class_embed = nn.Embed(cfg.num_classes + 1, cfg.width, embedding_init=init)
        if cfg.context_dim:
            self.pooled_proj = nn.Dense(cfg.width)
        self.blocks = [
            Block(cfg.width, cfg.num_heads, cfg.mlp_ratio, cfg.dropout, cross=cfg.context_dim > 0)
            for _ in range(cfg.depth)
        ]
        self.ln_out = nn.LayerNorm()
        # Zero weights: the prior starts uniform over the codebook (loss ln vocab_size).
        self.head = nn.Dense(cfg.vocab_size, kernel_init=nn.initializers.zeros)

    def _start(self, batch: int, label, text_pooled) -> jax.Array:
        """The condition's start vector ``[B, W]``."""
        start = jnp.broadcast_to(self.start, (batch, self.config.width))
        if self.config.num_classes:
            start = start + self.class_embed(label)
        if self.config.context_dim:
            start = start + self.pooled_proj(text_pooled.astype(start.dtype))
        return start

    def __call__(
        self, tokens, label=None, text_tokens=None, text_mask=None, text_pooled=None,
        train: bool = False,
    ) -> jax.Array:  # fmt: skip
        """tokens int32 ``[B, N]`` -> logits ``[B, N, vocab]`` (the parameters' dtype); those at
        position i depend on ``tokens[:, :i]`` and the condition only."""
        b = tokens.shape[0]
        start = self._start(b, label, text_pooled)
        x = jnp.concatenate([start[:, None], self.token_embed(tokens[:, :-1])], axis=1)
        x = x + self.pos_embed[None].astype(x.dtype)
        text = (text_tokens, text_mask) if self.config.context_dim else None
        for block in self.blocks:
            x = block(x, text, train=train)
        return self.head(self.ln_out(x))

    def decode_step(
        self, prev, pos, cache: Cache, label=None, text_tokens=None, text_mask=None,
        text_pooled=None,
    ):  # fmt: skip
        """One position for a batch: ``(logits [B, vocab], cache)``.

        ``prev`` int32 ``[B]``: the token at ``pos - 1`` (ignored at ``pos = 0``, where the
        start vector is the input); ``pos`` int32 scalar; ``cache`` from :func:`empty_cache`
        (positions ``< pos`` filled). Equals ``__call__``'s logits at ``pos``.
        """
        start = self._start(prev.shape[0], label, text_pooled)
        x = jnp.where(pos == 0, start, self.token_embed(prev).astype(start.dtype))
        x = (x + jax.lax.dynamic_index_in_dim(self.pos_embed, pos, keepdims=False))[:, None]
        text = (text_tokens, text_mask) if self.config.context_dim else None
        new_cache = []
        for block, (keys, values) in zip(self.blocks, cache, strict=True):
            x, keys, values = block.step(x, pos, keys, values, text)
            new_cache.append((keys, values))
        return self.head(self.ln_out(x))[:, 0], tuple(new_cache)


def empty_cache(config: TokenTransformerConfig, batch: int, dtype) -> Cache:
    """Zero keys and values ``[batch, N, heads, head_dim]`` for each block."""
    shape = (batch, config.num_positions, config.num_heads, config.head_dim)
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.depth))
