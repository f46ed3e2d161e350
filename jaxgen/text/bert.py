"""A Flax BERT in the layout of Hugging Face's ``BertModel``, and its loader.

``load_bert(model_dir)`` reads a Hugging Face model folder (``config.json``,
``model.safetensors``, ``tokenizer.json`` or ``vocab.txt``) into a
:class:`PretrainedBert`. Its ``encode`` gives sentence embeddings the way
sentence-transformers does (mean of the token embeddings over the attention mask,
then L2 normalisation, as in all-MiniLM-L6-v2), and its ``module``/``params`` plug
into a generator as a frozen text encoder returning a :class:`TextEmbedding`.

Parameter names mirror the Hugging Face names: ``encoder.layer.3.output.dense.weight``
is ``params["encoder"]["layer_3"]["output"]["dense"]["kernel"]`` (transposed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError
from jaxgen.text.encoder import TextEmbedding, masked_mean
from jaxgen.text.wordpiece import WordPieceTokenizer, load_wordpiece
from jaxgen.weight_files import read_safetensors

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` that the forward pass uses."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_dict(cls, d: dict, where: str = "config.json") -> BertConfig:
        kwargs = {}
        for field in dataclasses.fields(cls):
            if field.name in d:
                kwargs[field.name] = d[field.name]
            elif field.default is dataclasses.MISSING:
                raise UserError(f"{where} lacks the key {field.name!r}")
        config = cls(**kwargs)
        if config.hidden_act not in ACTIVATIONS:
            raise UserError(
                f"{where}: hidden_act={config.hidden_act!r}, expected one of {sorted(ACTIVATIONS)}"
            )
        if config.hidden_size % config.num_attention_heads:
            raise UserError(
                f"{where}: hidden_size={config.hidden_size} is not a multiple of "
                f"num_attention_heads={config.num_attention_heads}"
            )
        return config


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False, name=name)


class BertEmbeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        c = self.config
        positions = jnp.arange(input_ids.shape[1])[None, :]
        x = nn.Embed(c.vocab_size, c.hidden_size, name="word_embeddings")(input_ids)
        x = x + nn.Embed(c.max_position_embeddings, c.hidden_size, name="position_embeddings")(
            positions
        )
        x = x + nn.Embed(c.type_vocab_size, c.hidden_size, name="token_type_embeddings")(
            token_type_ids
        )
        return _layer_norm(c, "LayerNorm")(x)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention: x ``[B, L, hidden]``, mask bool ``[B, L]`` -> ``[B, L, hidden]``.

    Through :func:`jax.nn.dot_product_attention` (JAX's default kernel, float32 softmax);
    a row without real tokens attends uniformly, as Hugging Face's does.
    """

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        c = self.config
        heads, head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads

        def split(name):
            y = nn.Dense(c.hidden_size, name=name)(x)
            return y.reshape(*y.shape[:2], heads, head_dim)

        q, k, v = split("query"), split("key"), split("value")  # [B, L, heads, head_dim]
        # softmax(q k^T / sqrt(head_dim)) v over the real tokens (mask bool [B, L]).
        out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :])
        return out.reshape(*out.shape[:2], c.hidden_size)


class BertAttentionOutput(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, h: jax.Array, residual: jax.Array) -> jax.Array:
        return _layer_norm(self.config, "LayerNorm")(
            nn.Dense(self.config.hidden_size, name="dense")(h) + residual
        )


class BertAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        h = BertSelfAttention(self.config, name="self")(x, mask)
        return BertAttentionOutput(self.config, name="output")(h, x)


class BertIntermediate(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Dense(self.config.intermediate_size, name="dense")(x)
        return ACTIVATIONS[self.config.hidden_act](h)


class BertLayer(nn.Module):
    """Post-LN block: LN(x + attn(x)), then LN(x + FFN(x))."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = BertAttention(self.config, name="attention")(x, mask)
        h = BertIntermediate(self.config, name="intermediate")(x)
        return BertAttentionOutput(self.config, name="output")(h, x)


class BertEncoder(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        for i in range(self.config.num_hidden_layers):
            x = BertLayer(self.config, name=f"layer_{i}")(x, mask)
        return x


class BertPooler(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(nn.Dense(self.config.hidden_size, name="dense")(x[:, 0]))


class BertModel(nn.Module):
    """``BertModel``: returns ``last_hidden_state`` [B, L, H] and, with the pooler, [B, H].

    Args (of ``__call__``): ``input_ids`` int32 [B, L]; ``attention_mask`` [B, L]
    (1/True at real tokens); ``token_type_ids`` int32 [B, L] or None (all zero).
    """

    config: BertConfig
    add_pooler: bool = True

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        mask = attention_mask.astype(bool)
        x = BertEmbeddings(self.config, name="embeddings")(input_ids, token_type_ids)
        x = BertEncoder(self.config, name="encoder")(x, mask)
        pooled = BertPooler(self.config, name="pooler")(x) if self.add_pooler else None
        return x, pooled


class BertTextEncoder(nn.Module):
    """BERT as a jaxgen text encoder: mean-pooled (optionally normalised) sentence embedding.

    Shares the parameter tree of :class:`BertModel` without the pooler.
    """

    config: BertConfig
    normalize: bool = True

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array) -> TextEmbedding:
        hidden, _ = BertModel(self.config, add_pooler=False, name="bert")(tokens, mask)
        mask = mask.astype(bool)
        pooled = masked_mean(hidden, mask)
        if self.normalize:
            pooled = l2_normalize(pooled)
        return TextEmbedding(
            tokens=jnp.where(mask[..., None], hidden, 0.0), mask=mask, pooled=pooled
        )


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` over the last axis (as ``torch.nn.functional.normalize``)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


# --- conversion from the Hugging Face layout ---------------------------------
def _flax_path(hf_name: str) -> tuple[str, ...]:
    """``encoder.layer.3.attention.self.query.weight`` -> flax path (last part mapped)."""
    parts = hf_name.split(".")
    path = []
    i = 0
    while i < len(parts) - 1:
        if parts[i] == "layer" and i + 1 < len(parts) - 1 and parts[i + 1].isdigit():
            path.append(f"layer_{parts[i + 1]}")
            i += 2
        else:
            path.append(parts[i])
            i += 1
    leaf, parent = parts[-1], path[-1] if path else ""
    if parent == "LayerNorm":
        leaf = {"weight": "scale", "gamma": "scale", "beta": "bias"}.get(leaf, leaf)
    elif parent.endswith("_embeddings"):
        leaf = {"weight": "embedding"}.get(leaf, leaf)
    else:
        leaf = {"weight": "kernel"}.get(leaf, leaf)
    return (*path, leaf)


def convert_hf_state(
    tensors: dict[str, np.ndarray], config: BertConfig, add_pooler: bool, where: str
) -> dict:
    """Flax params of :class:`BertModel` from Hugging Face tensors.

    Names outside ``embeddings``/``encoder``/``pooler`` (heads, ``position_ids``) are
    ignored; a prefix ``bert.`` is removed.

    Raises:
      UserError: naming a missing or unexpected tensor, or one of the wrong shape.
    """
    model = BertModel(config, add_pooler=add_pooler)
    dummy = jnp.zeros((1, 1), jnp.int32)
    expected = jax.eval_shape(model.init, jax.random.key(0), dummy, dummy)["params"]
    expected_flat = {path: s.shape for path, s in _flatten(expected).items()}
    found: dict[tuple[str, ...], np.ndarray] = {}
    for name, value in tensors.items():
        name = name.removeprefix("bert.")
        if name.split(".")[0] not in ("embeddings", "encoder", "pooler"):
            continue
        if name.endswith("position_ids") or (name.startswith("pooler.") and not add_pooler):
            continue
        path = _flax_path(name)
        if path not in expected_flat:
            raise UserError(
                f"{where}: unexpected tensor {name} for a {config.num_hidden_layers}-layer BERT"
            )
        want = tuple(expected_flat[path])
        want_hf = want[::-1] if path[-1] == "kernel" else want
        if tuple(value.shape) != want_hf:
            raise UserError(
                f"{where}: tensor {name} has shape {tuple(value.shape)}, "
                f"config.json implies {want_hf}"
            )
        if path[-1] == "kernel":
            value = value.T
        found[path] = np.asarray(value, np.float32)
    missing = [p for p in expected_flat if p not in found]
    if missing:
        raise UserError(f"{where} lacks {len(missing)} tensors, e.g. {_hf_name(missing[0])}")
    return _unflatten(found)


def _hf_name(path: tuple[str, ...]) -> str:
    parts = [p.replace("layer_", "layer.") if p.startswith("layer_") else p for p in path]
    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(parts[-1], parts[-1])
    return ".".join([*parts[:-1], leaf])


def _flatten(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def _unflatten(flat: dict[tuple[str, ...], object]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return tree


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


# --- a loaded sentence encoder ------------------------------------------------
@dataclasses.dataclass
class PretrainedBert:
    """A BERT model read from disk, with its tokenizer and sentence-pooling settings.

    Attributes:
      config: the architecture.
      params: flax params of :class:`BertModel` (``{"embeddings", "encoder"[, "pooler"]}``).
      tokenizer: the WordPiece tokenizer.
      normalize: whether sentence embeddings are L2-normalised.
    """

    config: BertConfig
    params: dict
    tokenizer: WordPieceTokenizer
    normalize: bool = True

    @property
    def module(self) -> BertTextEncoder:
        """The text-encoder module; its params are :meth:`text_encoder_params`."""
        return BertTextEncoder(self.config, normalize=self.normalize)

    def text_encoder_params(self) -> dict:
        """``{"params": ...}`` for :attr:`module` (the pooler is not used)."""
        return {"params": {"bert": {k: v for k, v in self.params.items() if k != "pooler"}}}

    def encode(self, sentences: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Sentence embeddings float32 ``[N, hidden_size]``."""
        apply = jax.jit(self.module.apply)
        variables = self.text_encoder_params()
        out = []
        for start in range(0, len(sentences), batch_size):
            ids, mask = self.tokenizer(list(sentences[start : start + batch_size]))
            out.append(np.asarray(apply(variables, ids, mask).pooled))
        return np.concatenate(out) if out else np.zeros((0, self.config.hidden_size), np.float32)


def load_bert(model_dir: str, max_len: int | None = None) -> PretrainedBert:
    """Reads a Hugging Face BERT folder, with sentence-transformers settings when present.

    ``sentence_bert_config.json`` gives ``max_seq_length`` (else ``max_len`` or the
    position table size); ``1_Pooling/config.json`` must ask for mean pooling when
    present; normalisation follows a ``Normalize`` entry in ``modules.json`` (plain
    BERT folders: normalised).

    Raises:
      UserError: one line naming the missing file, key or tensor, or the wrong shape.
    """
    if not os.path.isdir(model_dir):
        raise UserError(f"BERT model folder {model_dir} does not exist")
    config = BertConfig.from_dict(
        _read_json(os.path.join(model_dir, "config.json")), os.path.join(model_dir, "config.json")
    )
    weights = os.path.join(model_dir, "model.safetensors")
    if not os.path.exists(weights):
        raise UserError(f"{model_dir} has no model.safetensors")
    tensors = read_safetensors(weights)
    has_pooler = any(k.removeprefix("bert.").startswith("pooler.") for k in tensors)
    params = convert_hf_state(tensors, config, has_pooler, weights)

    normalize = True
    st_config = os.path.join(model_dir, "sentence_bert_config.json")
    if max_len is None:
        max_len = config.max_position_embeddings
        if os.path.exists(st_config):
            max_len = int(_read_json(st_config).get("max_seq_length", max_len))
    modules_path = os.path.join(model_dir, "modules.json")
    if os.path.exists(modules_path):
        modules = _read_json(modules_path)
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    pooling_path = os.path.join(model_dir, "1_Pooling", "config.json")
    if os.path.exists(pooling_path) and not _read_json(pooling_path).get(
        "pooling_mode_mean_tokens"
    ):
        raise UserError(
            f"{pooling_path}: only mean pooling (pooling_mode_mean_tokens) is supported"
        )
    if max_len > config.max_position_embeddings:
        raise UserError(
            f"max_len={max_len} exceeds max_position_embeddings={config.max_position_embeddings}"
        )
    tokenizer = load_wordpiece(model_dir, max_len=max_len)
    if tokenizer.vocab_size != config.vocab_size:
        raise UserError(
            f"{model_dir}: tokenizer has {tokenizer.vocab_size} tokens, "
            f"config.json says vocab_size={config.vocab_size}"
        )
    return PretrainedBert(config, params, tokenizer, normalize)
