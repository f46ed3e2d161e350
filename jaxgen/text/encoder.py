"""A Flax Transformer text encoder: token ids -> token embeddings and a pooled embedding.

Every text encoder in jaxgen (this one, the pretrained BERT of ``bert.py``) returns a
:class:`TextEmbedding`, so a generator conditions on text without knowing which
encoder made it: cross-attention reads ``tokens`` under ``mask``, and FiLM-style or
projection conditioning reads ``pooled``.

Attention goes through :func:`jax.nn.dot_product_attention` (JAX's default kernel, float32
softmax). The encoder computes in the dtype of its parameters (bfloat16 for mixed
precision; LayerNorm statistics stay float32).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class TextEmbedding(NamedTuple):
    """What a text encoder gives for a batch of ``B`` texts of ``L`` tokens.

    Attributes:
      tokens: float ``[B, L, D]`` per-token embeddings; zero at padding.
      mask: bool ``[B, L]``, True at real tokens (not padding).
      pooled: float ``[B, D]`` one embedding per text.

    Float fields are float32, or bfloat16 from an encoder run on bfloat16 parameters.
    """

    tokens: jax.Array
    mask: jax.Array
    pooled: jax.Array


def dot_product_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """``attention_fn`` of :class:`flax.linen.MultiHeadDotProductAttention` (no dropout).

    query ``[B, T, N, H]``, key/value ``[B, S, N, H]``, one dtype; ``mask`` bool broadcastable
    to ``[B, N, T, S]`` (True: attend) -> ``[B, T, N, H]``, through
    :func:`jax.nn.dot_product_attention` with ``implementation=None`` (JAX's choice: XLA as
    of JAX 0.10), float32 softmax. A query whose keys are all masked attends uniformly to
    all of them, as flax's own attention does.
    """
    return jax.nn.dot_product_attention(query, key, value, mask=mask)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``x`` [B, L, D] over the positions where ``mask`` [B, L] is True -> [B, D]."""
    weights = mask.astype(x.dtype)[..., None]
    return (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)


class EncoderBlock(nn.Module):
    """Pre-LN Transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    num_heads: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        width = x.shape[-1]
        h = nn.LayerNorm(name="ln_attn")(x)
        # Keys at padding are masked for every query; padding queries still see the
        # real tokens, so no softmax row is empty.
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, attention_fn=dot_product_attention, name="attn"
        )(h, h, mask=mask[:, None, None, :])
        x = x + h
        h = nn.LayerNorm(name="ln_mlp")(x)
        h = nn.Dense(width * self.mlp_ratio, name="mlp_in")(h)
        h = nn.Dense(width, name="mlp_out")(nn.gelu(h))
        return x + h


class TextEncoder(nn.Module):
    """Token + learned position embeddings, ``depth`` pre-LN blocks, final LN, mean pooling.

    Attributes:
      vocab_size: number of token ids.
      max_len: longest sequence (size of the position table).
      width: embedding size ``D``.
      depth: number of blocks.
      num_heads: attention heads (``width`` must divide by it).
      pad_id: the padding id; the mask defaults to ``tokens != pad_id``.
    """

    vocab_size: int
    max_len: int
    width: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: int = 4
    pad_id: int = 0

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> TextEmbedding:
        """Encodes int32 ``tokens`` [B, L] (L <= max_len); ``mask`` bool [B, L] or None."""
        if mask is None:
            mask = tokens != self.pad_id
        mask = mask.astype(bool)
        length = tokens.shape[1]
        x = nn.Embed(self.vocab_size, self.width, name="token_embed")(tokens)
        positions = self.param(
            "pos_embed", nn.initializers.normal(0.02), (self.max_len, self.width)
        )
        x = x + positions[None, :length]
        for i in range(self.depth):
            x = EncoderBlock(self.num_heads, self.mlp_ratio, name=f"block_{i}")(x, mask)
        x = nn.LayerNorm(name="ln_final")(x)
        x = jnp.where(mask[..., None], x, 0.0)
        return TextEmbedding(tokens=x, mask=mask, pooled=masked_mean(x, mask))
