"""How often a text-conditioned model draws what its prompt asks for.

Fashion-MNIST: for each class, prompts from three sets (:func:`jaxgen.data.captions.prompt_sets`):
training captions, held-out paraphrases made of words seen in training, and held-out
paraphrases with new words ("jeans", "a hoodie"). Each sample is classified by the domain
classifier; the score is the share assigned to the prompted class.

Sprites: captions of the ``test`` split's factors (every shape-colour pair) and of the
``heldout`` split (pairs never seen together in training), from
:func:`jaxgen.data.sprites.prompt_sets`. The shape is read by the sprites domain classifier
(trained on the shape factor with ``configs/classifier.py``); the colour by
:func:`jaxgen.data.sprites.read_colour`, the nearest named colour of the brightest pixels
(exact on the renderer's output). The scores are the shares with the prompted shape, with
the prompted colour, and with both, per set; ``prompt_accuracy`` is the share with both
right over the two sets.

Samples whose size differs from the classifier's input (e.g. 32 x 32 sprites and the
28 x 28 sprites classifier) are resized bilinearly by the extractor, as the data pipeline resizes.
"""

from __future__ import annotations

import itertools

import numpy as np

from jaxgen.data import captions, sprites
from jaxgen.errors import UserError
from jaxgen.evaluate.feature_cache import describe, record
from jaxgen.evaluate.features import get_extractor


def spread_over_classes(rows: list[tuple[str, int]], limit: int) -> list[tuple[str, int]]:
    """The first ``limit`` rows taken one class at a time in turn (all rows if ``limit`` is 0),
    so that a quick check with few prompts still asks for every class."""
    if not limit:
        return rows
    by_class: dict[int, list[tuple[str, int]]] = {}
    for row in rows:
        by_class.setdefault(row[1], []).append(row)
    turns = itertools.zip_longest(*by_class.values())
    return [row for turn in turns for row in turn if row is not None][:limit]


def _generate(ctx, prompts: list[str], per: int, tag: int) -> np.ndarray:
    """``per`` samples of each prompt, in prompt order: uint8 ``[len(prompts) * per, H, W, C]``."""
    import jax

    repeated = [p for p in prompts for _ in range(per)]
    images = np.asarray(ctx.prompts_fn(repeated, jax.random.fold_in(ctx.rng, 1000 + tag)))
    if images.ndim != 4 or len(images) != len(repeated):
        raise UserError(
            f"evaluator type 'prompts': the model gave images of shape {images.shape} for "
            f"{len(repeated)} prompts; expected [{len(repeated)}, H, W, C]"
        )
    return images


def evaluate(ctx, cfg) -> dict[str, float]:
    """``prompt_accuracy`` (and per prompt set) for fashion_mnist; shape/colour for sprites.

    Options: ``samples_per_prompt`` (10), ``max_prompts`` (0: all; else that many prompts
    of each set, classes in turn, for quick checks), ``sprites_prompts`` (prompts per
    sprites set, 200; ``max_prompts`` overrides it), and the extractor options of
    :func:`get_extractor` (``classifier_weights``...). All results are shares in [0, 1].
    """
    if ctx.prompts_fn is None or ctx.spec.cond != "text":
        raise UserError("evaluator type 'prompts' needs a model trained with cond=text")
    data = ctx.config.data.name
    per = int(cfg.get("samples_per_prompt", 10))
    limit = int(cfg.get("max_prompts", 0))
    if per < 1 or limit < 0:
        raise UserError(
            f"evaluator type 'prompts': samples_per_prompt={per} and max_prompts={limit}; "
            "expected samples_per_prompt >= 1 and max_prompts >= 0"
        )
    extractor = get_extractor(cfg, data)
    results: dict[str, float] = {}
    if data == "fashion_mnist":
        hits = []
        for tag, (name, rows) in enumerate(captions.prompt_sets().items()):
            rows = spread_over_classes(rows, limit)
            images = _generate(ctx, [p for p, _ in rows], per, tag)
            predicted = extractor(images)["logits"].argmax(-1)  # resized to its input
            hit = predicted == np.repeat([y for _, y in rows], per)
            results[f"prompt_accuracy_{name}"] = float(hit.mean())
            hits.append(hit)
        results["prompt_accuracy"] = float(np.concatenate(hits).mean())
    elif data == "sprites":
        n = int(cfg.get("sprites_prompts", 200))
        if n < 1:
            raise UserError(f"evaluator type 'prompts': sprites_prompts={n}; expected >= 1")
        both = []
        for tag, (name, rows) in enumerate(sprites.prompt_sets(limit or n).items()):
            images = _generate(ctx, [p for p, _ in rows], per, tag)
            factors = np.repeat(np.stack([f for _, f in rows]), per, axis=0)
            logits = extractor(images)["logits"]  # resized to its input
            shape_ok = logits.argmax(-1) == sprites.factor(factors, "shape")
            colour_ok = sprites.read_colour(images) == sprites.factor(factors, "colour")
            results[f"prompt_shape_accuracy_{name}"] = float(shape_ok.mean())
            results[f"prompt_colour_accuracy_{name}"] = float(colour_ok.mean())
            results[f"prompt_both_accuracy_{name}"] = float((shape_ok & colour_ok).mean())
            both.append(shape_ok & colour_ok)
        results["prompt_accuracy"] = float(np.concatenate(both).mean())
    else:
        raise UserError(
            f"evaluator type 'prompts': prompt sets exist for fashion_mnist and sprites, "
            f"not {data!r}"
        )
    record(ctx, {k: describe(extractor, samples_per_prompt=per) for k in results})
    return results
