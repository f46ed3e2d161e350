"""Autoregressive Transformer prior over image tokens (``family = token_prior``, stage 2 of
``configs/tokens.py``).

``model.tokenizer`` names a trained ``image_tokenizer`` run (stage 1); its EMA parameters are
loaded and frozen (:class:`~jaxgen.methods.tokenizer.FrozenTokenizer`). Per training batch:

  t = Tokenizer(x)                               int32 [B, N], N = h * w tokens, raster order
  logits = Transformer(t, c)                     [B, N, K], position i sees t_<i and c only
  loss = mean_b sum_i -log softmax(logits)[t_i] / N      nats per token

``c`` is the class label (``cond=class``) or the caption (``cond=text``: the pooled text
embedding in the start vector, cross-attention to its token embeddings), replaced by the
null class / null text with probability ``model.cond_drop_prob`` so that the same network
also models ``p(t)`` (classifier-free guidance). Sampling draws ``t_0 .. t_{N-1}`` left to
right and decodes them with the frozen tokenizer to float32 images in [0, 1]:

* ``sample.sampler``: ``fast`` (default; one position per step against a key/value cache,
  inside ``lax.scan``) or ``plain`` (the full causal pass over the canvas at every step);
  both draw position ``i`` with the key ``fold_in(rng, i)`` and give the same tokens.
* ``sample.guidance`` (conditional models): 0 unconditional, 1 conditional, else
  ``log p_u + g (log p_c - log p_u)`` per position (two rows per sample).
* ``sample.temperature`` (0: greedy, the most likely token) and ``sample.top_k`` (0: all
  codes) reshape each position's distribution before the draw.

Likelihood (:meth:`TokenPrior.likelihood`, per test image, given its label or caption):
``bits_per_token`` = ``-log2 p(t)`` / N, exact for the tokens; ``token_nll`` the same in nats
per image; and the tokenizer's ``recon_mse`` / ``recon_psnr`` of that image. Bits per token
are **not** pixel bits/dim: they score the tokens, not the image (the tokenizer is lossy).

Mixed precision: the Transformer (and a jointly trained text encoder) computes in bfloat16
in training and sampling; logits are cast to float32 before the log-softmax, guidance and
the draw. The frozen tokenizer runs in float32 (its rounding must not move).
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.base import Method, images_to_unit
from jaxgen.methods.description import config_value
from jaxgen.methods.gradients import cast_floating
from jaxgen.methods.tokenizer import FrozenTokenizer, psnr
from jaxgen.models.precision import floating_dtype
from jaxgen.models.token_transformer import (
    TokenTransformer,
    TokenTransformerConfig,
    empty_cache,
)
from jaxgen.sampling import SampleOptions
from jaxgen.text.conditioner import PARAMS_KEY, drop_text
from jaxgen.validate import check_sample_options_used

SAMPLERS = ("fast", "plain")


class TokenPrior(Method):
    """The token prior; see the module docstring."""

    supports_bfloat16 = True
    reads_guidance = True

    def __init__(self, config, data: DataSpec, tokenizer: FrozenTokenizer | None = None):
        """``tokenizer``: an in-memory frozen tokenizer (tests); None loads ``model.tokenizer``."""
        super().__init__(config, data)
        m = config.model
        self.num_classes = data.num_classes if data.cond == "class" else 0
        if data.cond == "class" and not self.num_classes:
            raise UserError(f"cond=class but data {config.data.name!r} has no labels")
        self.cond_drop_prob = float(m.get("cond_drop_prob", 0.0))
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise UserError(
                f"config key model.cond_drop_prob={self.cond_drop_prob}: expected in [0, 1)"
            )
        for key in ("width", "depth", "num_heads", "mlp_ratio"):
            if int(m[key]) < 1:
                raise UserError(f"config key model.{key}={m[key]}: expected >= 1")
        if int(m.width) % int(m.num_heads):
            raise UserError(
                f"config key model.width={m.width}: expected a multiple of "
                f"model.num_heads={m.num_heads}"
            )
        if not 0.0 <= float(m.dropout) < 1.0:
            raise UserError(f"config key model.dropout={m.dropout}: expected in [0, 1)")
        sample = config.get("sample", {})
        self.temperature = float(sample.get("temperature", 1.0))
        self.top_k = int(sample.get("top_k", 0))
        if self.temperature < 0:
            raise UserError(
                f"config key sample.temperature={self.temperature}: expected >= 0 (0: greedy)"
            )
        self.tokenizer = tokenizer or FrozenTokenizer(str(m.get("tokenizer", "")), data)
        vocab = self.tokenizer.method.codebook_size
        if not 0 <= self.top_k <= vocab:
            raise UserError(
                f"config key sample.top_k={self.top_k}: expected 0 (all codes) .. {vocab}"
            )
        self.net_config = TokenTransformerConfig(
            vocab_size=vocab,
            num_positions=self.tokenizer.method.num_tokens,
            width=int(m.width),
            depth=int(m.depth),
            num_heads=int(m.num_heads),
            mlp_ratio=int(m.mlp_ratio),
            dropout=float(m.dropout),
            num_classes=self.num_classes,
            context_dim=self.text.width if self.text is not None else 0,
        )
        self.net = TokenTransformer(self.net_config)
        self.resolve_sample_options()  # bad sample.* options fail here, before compiling

    @property
    def num_tokens(self) -> int:
        return self.net_config.num_positions

    @staticmethod
    def _net_params(params) -> dict:
        return {k: v for k, v in params.items() if k != PARAMS_KEY}

    # --- conditioning ----------------------------------------------------------
    def _cond(self, params, source: dict | None, num: int, drop=None) -> dict:
        """The network's keyword arguments for a batch or sampling ``conditioning``.

        ``label`` int32 ``[B]`` (the null class where ``drop`` bool ``[B]`` is True, where the
        label is -1, or for every row without a ``source``); with text ``text_tokens``,
        ``text_mask`` and ``text_pooled`` of the text fields (the null text likewise).
        """
        if self.num_classes:
            if source is None:
                return {"label": jnp.full((num,), self.num_classes, jnp.int32)}
            label = jnp.asarray(source["label"], jnp.int32)
            null = label < 0 if drop is None else drop | (label < 0)
            return {"label": jnp.where(null, self.num_classes, label)}
        if self.text is not None:
            if source is None:
                emb = self.text.null_embedding(num)
            else:
                missing = [k for k in self.text.fields if k not in source]
                if missing:
                    raise UserError(
                        f"cond=text: the conditioning lacks the text fields {missing}; "
                        "give prompts (sample.prompt or sample.prompts_file)"
                    )
                emb = self.text.embed(params, source)
                if drop is not None:
                    emb = drop_text(emb, drop)
            return {"text_tokens": emb.tokens, "text_mask": emb.mask, "text_pooled": emb.pooled}
        return {}

    # --- Method interface --------------------------------------------------------
    def init_params(self, rng, batch):
        net_rng, text_rng = jax.random.split(rng)
        tokens = jnp.zeros((1, self.num_tokens), jnp.int32)
        params = self.text.init_params(text_rng) if self.text is not None else {}
        cond = {}
        if self.num_classes:
            cond = {"label": jnp.zeros((1,), jnp.int32)}
        elif self.text is not None:
            emb = self.text.null_embedding(1)
            cond = {"text_tokens": emb.tokens, "text_mask": emb.mask, "text_pooled": emb.pooled}
        return {**self.net.init(net_rng, tokens, **cond)["params"], **params}

    def _nll(self, params, batch, rng, train: bool):
        """Per-image negative log-likelihood of the tokens in nats ``[B]``, and the tokens."""
        tokens = self.tokenizer.encode(batch["image"])
        drop_rng, dropout_rng = jax.random.split(rng)
        drop = None
        if train and self.cond_drop_prob > 0:
            drop = jax.random.bernoulli(drop_rng, self.cond_drop_prob, (tokens.shape[0],))
        cond = self._cond(params, batch, tokens.shape[0], drop)
        rngs = {"dropout": dropout_rng} if train else None
        logits = self.net.apply(
            {"params": self._net_params(params)}, tokens, **cond, train=train, rngs=rngs
        )
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        nll = -jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0].sum(axis=-1)
        return nll, tokens

    def loss(self, params, batch, rng):
        nll, _ = self._nll(params, batch, rng, train=True)
        nats_per_token = jnp.mean(nll) / self.num_tokens
        return nats_per_token, {"bits_per_token": nats_per_token / math.log(2.0)}

    has_likelihood = True

    def likelihood(self, params, batch, rng):
        """Per image: ``bits_per_token``, ``token_nll`` (nats), and the frozen tokenizer's
        ``recon_mse`` (pixels in [0, 1]) and ``recon_psnr`` (dB); not pixel bits/dim."""
        nll, tokens = self._nll(params, batch, rng, train=False)
        recon = self.tokenizer.decode(tokens)
        mse = jnp.mean((recon - images_to_unit(batch["image"])) ** 2, axis=(1, 2, 3))
        return {
            "bits_per_token": nll / (self.num_tokens * math.log(2.0)),
            "token_nll": nll,
            "recon_mse": mse,
            "recon_psnr": psnr(mse),
        }

    def _resolve_sample_options(self, options: SampleOptions) -> SampleOptions:
        """``sampler`` ``fast`` (default) or ``plain``; ``guidance`` >= 0 for a conditional
        model (0 or 1 otherwise, where it changes nothing); no steps, eta or spacing."""
        name = options.sampler or "fast"
        if name not in SAMPLERS:
            raise UserError(f"config key sample.sampler={name!r}: expected one of {SAMPLERS}")
        check_sample_options_used(self.config.family, options, ("sampler", "guidance"))
        conditional = self.num_classes or self.text is not None
        if not conditional and options.guidance not in (0, 1):
            raise UserError(
                f"config key sample.guidance={options.guidance}: an unconditional token prior "
                "has no guidance; leave it at 0"
            )
        return options.replace(sampler=name, guidance=float(options.guidance))

    def _pick(self, logits: jax.Array, key: jax.Array) -> jax.Array:
        """Tokens int32 ``[B]`` from float32 logits ``[B, K]``: greedy at temperature 0, else
        a draw from the tempered, top-k-truncated distribution."""
        if self.temperature == 0:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        logits = logits / self.temperature
        if self.top_k:
            kth = jax.lax.top_k(logits, self.top_k)[0][:, -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)

    def sample_tokens(self, params, rng, num, conditioning=None, options=None) -> jax.Array:
        """int32 tokens ``[num, N]`` (see :meth:`sample`; ``params`` as they are given)."""
        options = self.resolve_sample_options(options)
        conditional = self.num_classes or self.text is not None
        conditioning = dict(conditioning or {})
        if self.num_classes and "label" not in conditioning:
            conditioning["label"] = jnp.arange(num, dtype=jnp.int32) % self.num_classes
        has_text = self.text is not None and any(k in conditioning for k in self.text.fields)
        guidance = options.guidance if conditional else 1.0
        if self.text is not None and not has_text:
            guidance = 0.0  # no prompt: the null text (p(t) when trained with cond_drop_prob)
        if guidance == 0:
            cond = self._cond(params, None, num)
        else:
            cond = self._cond(params, conditioning, num)
        guided = guidance not in (0, 1)
        if guided:  # rows [0, num): conditional; [num, 2 num): unconditional
            null = self._cond(params, None, num)
            cond = jax.tree.map(lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]), cond, null)
        rows = 2 * num if guided else num

        def combine(logits):  # [rows, K] -> float32 [num, K]
            logits = logits.astype(jnp.float32)
            if not guided:
                return logits
            logp = jax.nn.log_softmax(logits, axis=-1)
            return logp[num:] + guidance * (logp[:num] - logp[num:])

        def widen(tokens):  # [num, ...] -> [rows, ...]
            return jnp.concatenate([tokens, tokens]) if guided else tokens

        net_params = {"params": self._net_params(params)}
        n = self.num_tokens
        if options.sampler == "fast":

            def body(carry, i):
                cache, prev = carry
                logits, cache = self.net.apply(
                    net_params, widen(prev), i, cache, **cond, method="decode_step"
                )
                tok = self._pick(combine(logits), jax.random.fold_in(rng, i))
                return (cache, tok), tok

            cache = empty_cache(self.net_config, rows, floating_dtype(net_params))
            init = (cache, jnp.zeros((num,), jnp.int32))
            _, tokens = jax.lax.scan(body, init, jnp.arange(n, dtype=jnp.int32))
            return tokens.T

        def plain_body(i, canvas):
            logits = self.net.apply(net_params, widen(canvas), **cond)
            logits = jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False)
            tok = self._pick(combine(logits), jax.random.fold_in(rng, i))
            return jax.lax.dynamic_update_index_in_dim(canvas, tok, i, axis=1)

        return jax.lax.fori_loop(0, n, plain_body, jnp.zeros((num, n), jnp.int32))

    def sample(self, params, rng, num, conditioning=None, options=None):
        """float32 images in [0, 1], ``[num, H, W, C]``: tokens drawn left to right
        (:meth:`sample_tokens`, the Transformer in ``compute_dtype``), decoded by the frozen
        tokenizer. ``conditioning``: ``label`` int32 ``[num]`` (default: the classes in turn)
        or the prompts' text fields (none: the null text)."""
        tokens = self.sample_tokens(
            cast_floating(params, self.compute_dtype), rng, num, conditioning, options
        )
        return self.tokenizer.decode(tokens)

    @classmethod
    def describe(cls, config):
        model = config_value(config, "model", {}) or {}
        arch = (
            f"Transformer {model.get('depth')}x{model.get('width')}, "
            f"{model.get('num_heads')} heads, over FSQ tokens"
        )
        source = os.path.basename(os.path.normpath(str(model.get("tokenizer") or ""))) or "?"
        generic = super().describe(config)
        return generic.replace(
            architecture=arch,
            training=f"max. likelihood of tokenizer {source}'s tokens, teacher forcing",
            likelihood_bound="exact over tokens (bits/token, not pixel bits/dim)",
        )
