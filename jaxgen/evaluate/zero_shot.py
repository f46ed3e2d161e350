"""Zero-shot classification by text alone (evaluator type ``clip_zero_shot``).

The model is reached through two functions of ``ctx.functions`` (a contrastive image-text
family provides them, e.g. CLIP's ``eval_functions``), both bound to the evaluated parameters:

* ``encode_images(images)``: uint8 ``[N, H, W, C]`` -> float32 unit vectors ``[N, D]``;
* ``encode_texts(texts)``: ``N`` strings -> float32 unit vectors ``[N, D]``.

An image's class is that of the nearest text embedding (cosine similarity).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError

ENCODERS = ("encode_images", "encode_texts")


def _unit(x) -> jnp.ndarray:
    """``x / ||x||`` over the last axis, computed and returned in float32."""
    x = jnp.asarray(x).astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _chunks(fn, xs, size: int) -> np.ndarray:
    return np.concatenate([np.asarray(fn(xs[i : i + size])) for i in range(0, len(xs), size)])


def nearest_texts(
    encoders: dict[str, Callable], images: np.ndarray, texts: list[str]
) -> np.ndarray:
    """For each image (uint8 ``[N, H, W, C]``), the index of the nearest text in ``texts``,
    int ``[N]``. ``encoders``: ``encode_images`` and ``encode_texts`` (module docstring)."""
    z_txt = _chunks(encoders["encode_texts"], texts, 512)
    z_img = _chunks(lambda x: encoders["encode_images"](jnp.asarray(x)), images, 256)
    return np.argmax(z_img @ z_txt.T, axis=1)


def prompt_ensemble_predictions(
    encoders: dict[str, Callable], images: np.ndarray, prompts: list[list[str]]
) -> np.ndarray:
    """Class of each image (uint8 ``[N, H, W, C]``), int ``[N]``: the nearest mean embedding
    of a class's prompts (``prompts[c]``: those of class ``c``; CLIP's prompt ensemble)."""
    z_txt = np.stack([np.asarray(_unit(encoders["encode_texts"](p).mean(axis=0))) for p in prompts])
    z_img = _chunks(lambda x: encoders["encode_images"](jnp.asarray(x)), images, 256)
    return np.argmax(z_img @ z_txt.T, axis=1)


def _take(source, num: int, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    items = [source[i] for i in range(min(num, len(source)))]
    return {k: np.stack([np.asarray(it[k]) for it in items]) for k in keys}


def evaluate(ctx, cfg) -> dict[str, float]:
    """Classify eval images by text alone; all results are shares in [0, 1].

    Fashion-MNIST: ``zero_shot_acc`` with each class's training captions as a prompt
    ensemble, ``zero_shot_acc_heldout`` with its held-out paraphrases. Sprites: each
    image takes the factors of its nearest caption in the whole corpus;
    ``zero_shot_acc`` (shape) and ``zero_shot_colour_acc`` on the eval split,
    ``zero_shot_heldout_pair_acc`` (shape and colour both right) on the ``heldout``
    split, whose (shape, colour) pairs never occur in training.

    Options: ``num_examples`` (1000) of each split.
    """
    if not all(k in ctx.functions for k in ENCODERS):
        raise UserError("evaluator clip_zero_shot needs family clip")
    num = int(cfg.get("num_examples", 1000))
    encoders, name = ctx.functions, ctx.config.data.name
    if name == "fashion_mnist":
        from jaxgen.data import captions

        data = _take(ctx.eval_source, num, ("image", "label"))
        results = {}
        for key, heldout in (("zero_shot_acc", False), ("zero_shot_acc_heldout", True)):
            prompts = captions.class_prompts(heldout)
            predicted = prompt_ensemble_predictions(encoders, data["image"], prompts)
            results[key] = float(np.mean(predicted == data["label"]))
        return results
    if name == "sprites":
        from jaxgen.data import sprites

        corpus, factors = list(sprites.caption_corpus()), sprites.caption_corpus_factors()
        data = _take(ctx.eval_source, num, ("image", "factors"))
        guess = factors[nearest_texts(encoders, data["image"], corpus)]
        size = ctx.spec.image_shape[0]
        held = _take(sprites.SpritesSource("heldout", size=size), num, ("image", "factors"))
        held_guess = factors[nearest_texts(encoders, held["image"], corpus)]

        def right(guessed, true, factor):
            return sprites.factor(guessed, factor) == sprites.factor(true, factor)

        both = right(held_guess, held["factors"], "shape") & right(
            held_guess, held["factors"], "colour"
        )
        return {
            "zero_shot_acc": float(np.mean(right(guess, data["factors"], "shape"))),
            "zero_shot_colour_acc": float(np.mean(right(guess, data["factors"], "colour"))),
            "zero_shot_heldout_pair_acc": float(np.mean(both)),
        }
    raise UserError(f"evaluator clip_zero_shot: no captions for data.name={name!r}")
