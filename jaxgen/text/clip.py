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
The ``clip_zero_shot`` evaluator classifies eval images by text alone.

Mixed precision (``precision=bfloat16``): both towers compute in bfloat16 in training (the
image tower's GroupNorm statistics and the text tower's LayerNorm statistics and attention
softmax in float32); the embeddings are normalised to unit vectors in float32, and the
logit scale, the ``[B, B]`` similarity logits and the InfoNCE loss are float32. The
encoders of the evaluators compute in the dtype of the parameters they are given (float32).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.errors import UserError
from jaxgen.evaluate import register as register_evaluator
from jaxgen.methods.base import DataSpec, Method, floating_dtype, images_to_symmetric
from jaxgen.models.conv import Conv
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

    def sample(self, params, rng, num, conditioning=None):
        raise UserError(NO_SAMPLES)

    def text_conditioning(self, prompts):
        raise UserError(NO_SAMPLES)

    # --- encoders for evaluation and for the generators ---------------------
    def encode_images(self, params, images_uint8) -> jax.Array:
        images = images_to_symmetric(images_uint8, floating_dtype(params))
        return self.model.apply({"params": params}, images, method=CLIPModel.encode_image)

    def encode_texts(self, params, texts: list[str]) -> jax.Array:
        ids, _ = self.tokenizer(texts, pad_to_longest=False)
        return self.model.apply({"params": params}, ids, method=CLIPModel.encode_text)

    @staticmethod
    def text_encoder_params(params) -> dict:
        """The variables of the text tower (a :class:`TextEncoder`), to reuse it frozen."""
        return {"params": params["text_encoder"]}


def _chunks(fn, xs, size: int) -> np.ndarray:
    return np.concatenate([np.asarray(fn(xs[i : i + size])) for i in range(0, len(xs), size)])


def nearest_texts(method: CLIP, params, images: np.ndarray, texts: list[str]) -> np.ndarray:
    """For each image (uint8 [N, H, W, C]), the index of the nearest text in ``texts``."""
    z_txt = _chunks(lambda t: method.encode_texts(params, t), texts, 512)
    z_img = _chunks(lambda x: method.encode_images(params, jnp.asarray(x)), images, 256)
    return np.argmax(z_img @ z_txt.T, axis=1)


def prompt_ensemble_predictions(
    method: CLIP, params, images: np.ndarray, prompts: list[list[str]]
) -> np.ndarray:
    """Class of each image: the nearest mean embedding of a class's prompts (CLIP's ensemble)."""
    z_txt = np.stack(
        [np.asarray(_unit(method.encode_texts(params, p).mean(axis=0))) for p in prompts]
    )
    z_img = _chunks(lambda x: method.encode_images(params, jnp.asarray(x)), images, 256)
    return np.argmax(z_img @ z_txt.T, axis=1)


def _take(source, num: int, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    items = [source[i] for i in range(min(num, len(source)))]
    return {k: np.stack([np.asarray(it[k]) for it in items]) for k in keys}


def evaluate_zero_shot(ctx, cfg) -> dict[str, float]:
    """Evaluator ``clip_zero_shot``: classify eval images by text alone.

    Fashion-MNIST: ``zero_shot_acc`` with each class's training captions as a prompt
    ensemble, ``zero_shot_acc_heldout`` with its held-out paraphrases. Sprites: each
    image takes the factors of its nearest caption in the whole corpus;
    ``zero_shot_acc`` (shape) and ``zero_shot_colour_acc`` on the eval split,
    ``zero_shot_heldout_pair_acc`` (shape and colour both right) on the ``heldout``
    split, whose (shape, colour) pairs never occur in training.
    """
    if not isinstance(ctx.method, CLIP):
        raise UserError("evaluator clip_zero_shot needs family clip")
    num = int(cfg.get("num_examples", 1000))
    method, params, name = ctx.method, ctx.params, ctx.config.data.name
    if name == "fashion_mnist":
        from jaxgen.data import captions

        data = _take(ctx.eval_source, num, ("image", "label"))
        results = {}
        for key, pick in (
            ("zero_shot_acc", captions.train_captions),
            ("zero_shot_acc_heldout", captions.heldout_captions),
        ):
            prompts = [list(pick(c)) for c in range(captions.NUM_CLASSES)]
            predicted = prompt_ensemble_predictions(method, params, data["image"], prompts)
            results[key] = float(np.mean(predicted == data["label"]))
        return results
    if name == "sprites":
        from jaxgen.data import sprites

        corpus, factors = list(sprites.caption_corpus()), sprites.caption_corpus_factors()
        data = _take(ctx.eval_source, num, ("image", "factors"))
        guess = factors[nearest_texts(method, params, data["image"], corpus)]
        size = ctx.spec.image_shape[0]
        held = _take(sprites.SpritesSource("heldout", size=size), num, ("image", "factors"))
        held_guess = factors[nearest_texts(method, params, held["image"], corpus)]
        both = (held_guess[:, :2] == held["factors"][:, :2]).all(axis=1)
        return {
            "zero_shot_acc": float(np.mean(guess[:, 0] == data["factors"][:, 0])),
            "zero_shot_colour_acc": float(np.mean(guess[:, 1] == data["factors"][:, 1])),
            "zero_shot_heldout_pair_acc": float(np.mean(both)),
        }
    raise UserError(f"evaluator clip_zero_shot: no captions for data.name={name!r}")


register_evaluator("clip_zero_shot", "jaxgen.text.clip:evaluate_zero_shot")
