"""Contrastive image-caption pretraining (CLIP, Radford et al. 2021) as a jaxgen family.

An image tower (a small CNN) and a text tower (:class:`TextEncoder`) map an image
and its caption to unit vectors ``z_img``, ``z_txt`` in a shared space. For a batch
of ``B`` pairs the logits are ``s * z_img @ z_txt.T`` with a learned scale
``s = exp(logit_scale)`` (the inverse temperature, clipped at 100); the loss is the
symmetric InfoNCE, cross-entropy of each image against all captions and of each
caption against all images. Captions repeat within a batch (Fashion-MNIST has ten
classes), so every pair with the same caption counts as a positive: the target of
row ``i`` is uniform over the pairs whose tokens equal those of pair ``i``.

The trained text tower is then a frozen text encoder for the generators. CLIP draws
no images: ``sample`` raises, and ``configs/clip.py`` sets ``train.sample_every=0``.
The ``clip_zero_shot`` evaluator (:mod:`jaxgen.evaluate.zero_shot`) classifies eval images
by text alone, through the encoders of :meth:`CLIP.eval_functions`.

Mixed precision (``precision=bfloat16``): both towers compute in bfloat16 in training (the
image tower's GroupNorm statistics and the text tower's LayerNorm statistics and attention
softmax in float32); the embeddings are normalised to unit vectors in float32, and the
logit scale, the ``[B, B]`` similarity logits and the InfoNCE loss are float32. The
encoders of the evaluators compute in the dtype of the parameters they are given (float32).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.base import Method, images_to_symmetric
from jaxgen.models.conv import Conv
from jaxgen.models.precision import floating_dtype
from jaxgen.text import conditioning

MAX_LOGIT_SCALE = float(np.log(100.0))
NO_SAMPLES = "family clip learns encoders and draws no images; use --mode=train or --mode=eval"


class ImageTower(nn.Module):
    """Stride-2 conv blocks, global mean pool, linear projection: [B, H, W, C] -> [B, embed_dim]."""

    channels: tuple[int, ...]
    embed_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, ch in enumerate(self.channels):
            x = Conv(ch, (3, 3), strides=(2, 2) if i else (1, 1), name=f"conv_{i}")(x)
            x = nn.GroupNorm(num_groups=min(8, ch), name=f"norm_{i}")(x)
            x = nn.gelu(x)
        return nn.Dense(self.embed_dim, name="proj")(x.mean(axis=(1, 2)))


class CLIPModel(nn.Module):
    """Both towers and the logit scale; ``__call__`` returns unit embeddings and the scale."""

    text_encoder: nn.Module
    image_channels: tuple[int, ...]
    embed_dim: int
    init_temperature: float = 0.07

    def setup(self):
        self.image_tower = ImageTower(self.image_channels, self.embed_dim)
        self.text_proj = nn.Dense(self.embed_dim)
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(np.log(1.0 / self.init_temperature)), ()
        )

    def encode_image(self, images: jax.Array) -> jax.Array:
        """Images in [-1, 1] [B, H, W, C] -> float32 unit vectors [B, embed_dim].

        The tower computes in the images' dtype (that of the parameters).
        """
        return _unit(self.image_tower(images))

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        """int32 tokens [B, L] -> float32 unit vectors [B, embed_dim]."""
        pooled = self.text_encoder(tokens, tokens != self.text_encoder.pad_id).pooled
        return _unit(self.text_proj(pooled))

    def scale(self) -> jax.Array:
        """The inverse temperature, a float32 scalar."""
        return jnp.exp(jnp.minimum(self.logit_scale.astype(jnp.float32), MAX_LOGIT_SCALE))

    def __call__(self, images, tokens):
        return self.encode_image(images), self.encode_text(tokens), self.scale()


def _unit(x: jax.Array) -> jax.Array:
    """``x / ||x||`` over the last axis, computed and returned in float32."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def contrastive_loss(
    z_img: jax.Array, z_txt: jax.Array, scale: jax.Array, same: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Symmetric InfoNCE with several positives per row.

    Args:
      z_img, z_txt: unit vectors [B, D].
      scale: inverse temperature, scalar.
      same: bool [B, B], True where captions i and j are identical (diagonal True).

    Returns:
      the loss (nats) and metrics ``i2t_acc``/``t2i_acc`` (top-1 lands on a positive).
    """
    logits = scale * z_img @ z_txt.T
    targets = same / same.sum(axis=1, keepdims=True)
    loss_i2t = -(targets * jax.nn.log_softmax(logits, axis=1)).sum(axis=1).mean()
    loss_t2i = -(targets * jax.nn.log_softmax(logits.T, axis=1)).sum(axis=1).mean()
    rows = jnp.arange(len(same))
    metrics = {
        "i2t_acc": same[rows, jnp.argmax(logits, axis=1)].mean(),
        "t2i_acc": same[rows, jnp.argmax(logits.T, axis=1)].mean(),
    }
    return 0.5 * (loss_i2t + loss_t2i), metrics


class CLIP(Method):
    """The ``clip`` family; see the module docstring. Needs ``config.text``."""

    supports_bfloat16 = True
    is_generator = False  # it learns encoders and draws no images

    def __init__(self, config: ml_collections.ConfigDict, data: DataSpec):
        super().__init__(config, data)
        if "text" not in config:
            raise UserError("family clip needs a config.text section (see configs/clip.py)")
        if config.text.encoder != "transformer":
            raise UserError(
                f"config key text.encoder={config.text.encoder!r}: clip trains a "
                "'transformer' text encoder"
            )
        self.tokenizer = self.text.tokenizer
        text_encoder, _ = conditioning.build_text_encoder(config.text, self.tokenizer)
        self.model = CLIPModel(
            text_encoder=text_encoder,
            image_channels=tuple(config.model.image_channels),
            embed_dim=int(config.model.embed_dim),
            init_temperature=float(config.model.init_temperature),
        )

    def batch_transform(self):
        return conditioning.text_batch_transform(self.tokenizer, self.config.text.caption_seed)

    def init_params(self, rng, batch):
        images = images_to_symmetric(batch["image"][:1])
        return self.model.init(rng, images, batch["tokens"][:1])["params"]

    def loss(self, params, batch, rng):
        del rng
        tokens = batch["tokens"]
        images = images_to_symmetric(batch["image"], floating_dtype(params))
        z_img, z_txt, scale = self.model.apply({"params": params}, images, tokens)
        same = (tokens[:, None, :] == tokens[None, :, :]).all(axis=-1)
        loss, metrics = contrastive_loss(z_img, z_txt, scale, same)
        return loss, dict(metrics, temperature=1.0 / scale)

    def sample(self, params, rng, num, conditioning=None, options=None):
        raise UserError(NO_SAMPLES)

    def text_conditioning(self, prompts):
        raise UserError(NO_SAMPLES)

    # --- encoders for evaluation and for the generators ---------------------
    def encode_images(self, params, images_uint8) -> jax.Array:
        """uint8 images ``[N, H, W, C]`` -> float32 unit vectors ``[N, embed_dim]``."""
        images = images_to_symmetric(images_uint8, floating_dtype(params))
        return self.model.apply({"params": params}, images, method=CLIPModel.encode_image)

    def encode_texts(self, params, texts: list[str]) -> jax.Array:
        """``N`` strings -> float32 unit vectors ``[N, embed_dim]``."""
        ids, _ = self.tokenizer(texts, pad_to_longest=False)
        return self.model.apply({"params": params}, ids, method=CLIPModel.encode_text)

    def eval_functions(self, params) -> dict[str, Callable]:
        """The encoders of the ``clip_zero_shot`` evaluator, bound to ``params``.

        ``encode_images``: uint8 images ``[N, H, W, C]`` -> float32 unit vectors
        ``[N, embed_dim]``; ``encode_texts``: ``N`` strings -> float32 unit vectors
        ``[N, embed_dim]``.
        """
        return {
            "encode_images": functools.partial(self.encode_images, params),
            "encode_texts": functools.partial(self.encode_texts, params),
        }

    @staticmethod
    def text_encoder_params(params) -> dict:
        """The variables of the text tower (a :class:`TextEncoder`), to reuse it frozen."""
        return {"params": params["text_encoder"]}
