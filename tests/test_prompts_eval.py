"""The ``prompts`` evaluator: prompt sets, the sprite colour reader, the sprites classifier,
and the scores of fake models whose answers are known."""

from __future__ import annotations

import os
import re

import jax
import ml_collections
import numpy as np
import pytest

from jaxgen.data import captions, sprites
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluate import features, prompts
from jaxgen.evaluate.context import EvalContext

SPRITES_WEIGHTS = features.default_classifier_weights("sprites")
needs_sprites_classifier = pytest.mark.skipif(
    not os.path.isfile(SPRITES_WEIGHTS), reason="no committed sprites classifier"
)


def _sprites_test_images(split: str, num: int, size: int = 28):
    """The first ``num`` images of a sprites split at the classifier's size, and their factors."""
    from jaxgen.data.pipeline import load_source

    source = load_source(ml_collections.ConfigDict(dict(name="sprites", image_size=size, dir="")),
                         split)  # fmt: skip
    items = [source[i] for i in range(num)]
    return np.stack([x["image"] for x in items]), np.stack([x["factors"] for x in items])


# --- the colour reader -----------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 28])
def test_sprite_colour_is_exact_on_rendered_sprites(size):
    rng = np.random.default_rng(0)
    factors = []
    for colour in range(len(sprites.COLOURS)):
        for shape in range(len(sprites.SHAPES)):
            for scale in range(len(sprites.SCALES)):
                for rotation in range(len(sprites.ROTATIONS_DEG)):
                    position = int(rng.integers(len(sprites.POSITIONS)))
                    factors.append((shape, colour, scale, rotation, position))
    factors = np.array(factors)
    images = np.stack([sprites.render(f, size) for f in factors])
    np.testing.assert_array_equal(sprites.read_colour(images), factors[:, 1])
    # Also after the bilinear resize the evaluator applies to other sizes.
    resized = features.fit_to(images, (20, 20, 3))
    assert resized.shape == (len(images), 20, 20, 3)
    np.testing.assert_array_equal(sprites.read_colour(resized), factors[:, 1])


def test_sprite_colour_tolerates_noise_but_tells_colours_apart():
    rng = np.random.default_rng(1)
    colours = np.arange(60) % len(sprites.COLOURS)
    clean = np.stack(
        [sprites.render((c % 5, c, 2, 0, 4), 28) for c in colours]
    ).astype(np.float32)  # fmt: skip
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(sprites.read_colour(noisy), colours)


# --- the sprites domain classifier ------------------------------------------------------


@needs_sprites_classifier
def test_sprites_classifier_loads_as_the_domain_extractor():
    extractor = features.get_extractor(ml_collections.ConfigDict({"features": "domain"}), "sprites")
    assert extractor.weights == os.path.abspath(SPRITES_WEIGHTS)
    assert extractor.num_classes == len(sprites.SHAPES)
    assert extractor.image_shape == (28, 28, 3)
    _, meta = features.load_classifier(SPRITES_WEIGHTS)
    assert meta["data"] == "sprites" and meta["class_names"] == list(sprites.SHAPES)
    assert meta["test_accuracy"] >= 0.98
    assert os.path.getsize(SPRITES_WEIGHTS) < 600_000  # committed: keep it small


@needs_sprites_classifier
@pytest.mark.parametrize("split", ["test", "heldout"])
def test_sprites_classifier_reads_the_shape(split):
    """Test split: every (shape, colour) pair; heldout: pairs the classifier never saw."""
    images, factors = _sprites_test_images(split, 300)
    extractor = features.get_extractor({"features": "domain"}, "sprites")
    predicted = extractor(images)["logits"].argmax(-1)
    assert (predicted == factors[:, 0]).mean() >= 0.98


@needs_sprites_classifier
def test_sprites_classifier_reads_the_shape_whatever_the_colour():
    """Every distinct sprite (all 3240 factor combinations, at 32 px resized to 28 px as the
    pipeline does); the shape must be read right for every (shape, colour) pair, not only
    overall: a classifier that guesses the shape from the colour fails the held-out pairs."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in sprites.FACTOR_SIZES], indexing="ij"))
    factors = grid.reshape(len(sprites.FACTOR_SIZES), -1).T
    images = features.fit_to(np.stack([sprites.render(f, 32) for f in factors]), (28, 28, 3))
    extractor = features.get_extractor({"features": "domain"}, "sprites")
    ok = extractor(images)["logits"].argmax(-1) == factors[:, 0]
    assert ok.mean() >= 0.98
    for shape in range(len(sprites.SHAPES)):
        for colour in range(len(sprites.COLOURS)):
            pair = (factors[:, 0] == shape) & (factors[:, 1] == colour)
            assert ok[pair].mean() >= 0.95, (sprites.SHAPES[shape], sprites.COLOURS[colour])


# --- prompt sets ------------------------------------------------------------------------


def test_fashion_prompt_sets_cover_every_class_and_hold_out_paraphrases():
    sets = captions.prompt_sets()
    assert set(sets) == {"train", "heldout_known", "heldout_new"}
    for rows in sets.values():
        assert {y for _, y in rows} == set(range(captions.NUM_CLASSES))
    train = {p for label in range(captions.NUM_CLASSES) for p in captions.train_captions(label)}
    assert {p for p, _ in sets["train"]} == train
    vocab = captions.train_vocabulary()
    for name in ("heldout_known", "heldout_new"):
        texts = {p for p, _ in sets[name]}
        assert texts and not texts & train
    for p, _ in sets["heldout_known"]:
        assert set(re.findall(r"[a-z0-9'-]+", p)) <= vocab
    for p, _ in sets["heldout_new"]:
        assert set(re.findall(r"[a-z0-9'-]+", p)) - vocab, p
    # Each prompt names one class only.
    for rows in sets.values():
        assert len({p for p, _ in rows}) == len(rows)


def test_spread_over_classes_takes_classes_in_turn():
    rows = captions.prompt_sets()["train"]
    picked = prompts.spread_over_classes(rows, 25)
    assert len(picked) == 25 and {y for _, y in picked} == set(range(10))
    assert [y for _, y in picked[:10]] == list(range(10))
    assert prompts.spread_over_classes(rows, 0) == rows


def test_sprites_prompt_sets_separate_seen_and_heldout_pairs():
    sets = sprites.prompt_sets(120)
    assert set(sets) == {"seen_pairs", "heldout_pairs"}
    seen = {(int(f[0]), int(f[1])) for _, f in sets["seen_pairs"]}
    heldout = {(int(f[0]), int(f[1])) for _, f in sets["heldout_pairs"]}
    assert all(len(rows) == 120 for rows in sets.values())
    assert heldout <= sprites.HELDOUT_PAIRS and len(heldout) == len(sprites.HELDOUT_PAIRS)
    assert not seen & sprites.HELDOUT_PAIRS
    assert len(seen) >= 20  # most of the 25 seen pairs
    for rows in sets.values():
        for caption, f in rows:
            assert _parse_sprite_prompt(caption) == (int(f[0]), int(f[1]))


# --- the evaluator on fake models ------------------------------------------------------


def _parse_sprite_prompt(prompt: str) -> tuple[int, int]:
    words = set(re.findall(r"[a-z]+", prompt))
    (shape,) = [i for i, s in enumerate(sprites.SHAPES) if s in words]
    (colour,) = [i for i, c in enumerate(sprites.COLOURS) if c in words]
    return shape, colour


def _context(data: str, prompts_fn, image_shape, num_classes, workdir="") -> EvalContext:
    config = ml_collections.ConfigDict({"data": {"name": data}})
    return EvalContext(
        config=config,
        params=None,
        model_state=None,
        spec=DataSpec(image_shape, num_classes, cond="text"),
        train_source=None,
        eval_source=None,
        rng=jax.random.key(0),
        workdir=workdir,
        generate_fn=None,
        prompts_fn=prompts_fn,
    )


def _sprite_model(shift: int):
    """A fake model: sprites (32 x 32, random scale, rotation and position) of the prompted
    shape and colour, each moved ``shift`` along its list (0: the prompted ones)."""
    rng = np.random.default_rng(3)

    def prompts_fn(texts, key):
        del key
        out = []
        for text in texts:
            shape, colour = _parse_sprite_prompt(text)
            f = (
                (shape + shift) % len(sprites.SHAPES),
                (colour + shift) % len(sprites.COLOURS),
                rng.integers(len(sprites.SCALES)),
                rng.integers(len(sprites.ROTATIONS_DEG)),
                rng.integers(len(sprites.POSITIONS)),
            )
            out.append(sprites.render(f, 32))
        return np.stack(out)

    return prompts_fn


@needs_sprites_classifier
def test_prompts_eval_on_sprites_scores_right_and_wrong_models(tmp_path):
    cfg = ml_collections.ConfigDict(dict(type="prompts", samples_per_prompt=2, sprites_prompts=40))
    right = prompts.evaluate(_context("sprites", _sprite_model(0), (32, 32, 3), 5, str(tmp_path)),
                             cfg)  # fmt: skip
    for name in ("seen_pairs", "heldout_pairs"):
        assert right[f"prompt_shape_accuracy_{name}"] >= 0.95
        assert right[f"prompt_colour_accuracy_{name}"] == 1.0
        assert right[f"prompt_both_accuracy_{name}"] >= 0.95
    assert right["prompt_accuracy"] >= 0.95
    recorded = (tmp_path / "eval" / "evaluators.json").read_text()
    assert "sprites_classifier.npz" in recorded and "prompt_shape_accuracy_seen_pairs" in recorded

    wrong = prompts.evaluate(_context("sprites", _sprite_model(1), (32, 32, 3), 5), cfg)
    assert set(wrong) == set(right)
    assert max(wrong[k] for k in wrong if "colour" in k) == 0.0
    assert max(wrong[k] for k in wrong if "shape" in k) <= 0.03
    assert wrong["prompt_accuracy"] == 0.0


@pytest.fixture(scope="module")
def fashion_test():
    """Per class, 20 Fashion-MNIST test images, and 20 that the classifier gets right."""
    try:
        from jaxgen.data.sources import fashion_mnist

        test = fashion_mnist("test")
    except UserError:
        pytest.skip("Fashion-MNIST is not installed")
    if not os.path.isfile(features.default_classifier_weights("fashion_mnist")):
        pytest.skip("no committed Fashion-MNIST classifier")
    images, labels = np.asarray(test.images[:500]), np.asarray(test.labels[:500])
    extractor = features.get_extractor({"features": "domain"}, "fashion_mnist")
    right = extractor(images)["logits"].argmax(-1) == labels
    first = {c: images[labels == c][:20] for c in range(10)}
    agreed = {c: images[(labels == c) & right][:20] for c in range(10)}
    return first, agreed


def _fashion_model(pools, class_of):
    """A fake model: for each prompt, the next image of ``pools[class_of(label)]``."""
    label_of = {p: y for rows in captions.prompt_sets().values() for p, y in rows}
    counters = dict.fromkeys(range(10), 0)

    def prompts_fn(texts, key):
        del key
        out = []
        for text in texts:
            c = class_of(label_of[text])
            out.append(pools[c][counters[c] % len(pools[c])])
            counters[c] += 1
        return np.stack(out)

    return prompts_fn


def test_prompts_eval_on_fashion_scores_right_wrong_and_constant_models(fashion_test):
    first, agreed = fashion_test
    cfg = ml_collections.ConfigDict(dict(type="prompts", samples_per_prompt=2, max_prompts=20))
    keys = {"prompt_accuracy"} | {
        f"prompt_accuracy_{s}" for s in ("train", "heldout_known", "heldout_new")
    }

    def run(model):
        return prompts.evaluate(_context("fashion_mnist", model, (28, 28, 1), 10), cfg)

    right = run(_fashion_model(first, lambda y: y))  # real images of the prompted class
    assert set(right) == keys
    assert min(right.values()) >= 0.8
    wrong = run(_fashion_model(agreed, lambda y: (y + 1) % 10))  # always the next class
    assert max(wrong.values()) == 0.0
    # Always trousers, whatever the prompt: right for the trouser prompts only (2 of 20).
    constant = run(_fashion_model(agreed, lambda y: 1))
    assert all(v == pytest.approx(0.1) for v in constant.values())


def test_prompts_eval_needs_a_text_model_and_known_data():
    cfg = ml_collections.ConfigDict(dict(type="prompts"))
    with pytest.raises(UserError, match="cond=text"):
        prompts.evaluate(_context("sprites", None, (28, 28, 3), 5), cfg)
    with pytest.raises(UserError, match="prompt sets exist"):
        prompts.evaluate(
            _context("digits", _sprite_model(0), (8, 8, 1), 10),
            ml_collections.ConfigDict(dict(type="prompts", features="pixels")),
        )
    with pytest.raises(UserError, match="samples_per_prompt"):
        prompts.evaluate(
            _context("sprites", _sprite_model(0), (28, 28, 3), 5),
            ml_collections.ConfigDict(dict(type="prompts", samples_per_prompt=0)),
        )


# --- the clip_zero_shot evaluator on fake encoders ---------------------------------------


def _fake_encoders(images_to_factors, colour_shift: int = 0):
    """Encoders of a fake contrastive model: an image and a caption meet when they name the
    same (shape, colour); images' colours are read ``colour_shift`` along the list."""
    n_colours = len(sprites.COLOURS)

    def one_hot(shape, colour):
        v = np.zeros(len(sprites.SHAPES) * n_colours, np.float32)
        v[shape * n_colours + colour] = 1.0
        return v

    def encode_texts(texts):
        return np.stack([one_hot(*_parse_sprite_prompt(t)) for t in texts])

    def encode_images(images):
        rows = [images_to_factors[np.asarray(x).tobytes()] for x in images]
        return np.stack([one_hot(f[0], (f[1] + colour_shift) % n_colours) for f in rows])

    return {"encode_images": encode_images, "encode_texts": encode_texts}


def test_zero_shot_evaluator_takes_encoders_not_the_family():
    from jaxgen.evaluate import get_evaluator

    size, num = 8, 12
    test, heldout = sprites.SpritesSource("test", size=size), sprites.SpritesSource("heldout", size)
    lookup = {
        s[i]["image"].tobytes(): s[i]["factors"] for s in (test, heldout) for i in range(num)
    }  # fmt: skip
    config = ml_collections.ConfigDict({"data": {"name": "sprites"}})
    cfg = ml_collections.ConfigDict(dict(type="clip_zero_shot", num_examples=num))

    def run(functions):
        ctx = EvalContext(
            config=config, params=None, model_state=None,
            spec=DataSpec((size, size, 3), 5, "text"), train_source=None, eval_source=test,
            rng=jax.random.key(0), workdir="", generate_fn=None, functions=functions,
        )  # fmt: skip
        return get_evaluator("clip_zero_shot")(ctx, cfg)

    right = run(_fake_encoders(lookup))
    assert right == {
        "zero_shot_acc": 1.0, "zero_shot_colour_acc": 1.0, "zero_shot_heldout_pair_acc": 1.0
    }  # fmt: skip
    wrong = run(_fake_encoders(lookup, colour_shift=1))
    assert wrong["zero_shot_acc"] == 1.0 and wrong["zero_shot_colour_acc"] == 0.0
    assert wrong["zero_shot_heldout_pair_acc"] == 0.0
    with pytest.raises(UserError, match="needs family clip"):
        run({})


def test_text_encoder_ceiling_counts_prompts_nearest_their_class():
    """benchmarks/text_encoder_ceiling.py on a known embedding: two classes on two axes, one
    held-out prompt pointing at the wrong class; a training caption never counts as its own
    neighbour."""
    from benchmarks.text_encoder_ceiling import ceiling

    vectors = {
        "a coat": [1.0, 0.0], "a jacket": [0.9, 0.1], "a bag": [0.0, 1.0], "a purse": [0.1, 0.9],
        "an overcoat": [0.8, 0.2], "a hoodie": [0.2, 0.8], "a tote bag": [0.05, 0.95],
    }  # fmt: skip

    def embed(texts):
        v = np.array([vectors[t] for t in texts])
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    sets = {
        "train": [("a coat", 0), ("a jacket", 0), ("a bag", 1), ("a purse", 1)],
        "heldout_new": [("an overcoat", 0), ("a hoodie", 0), ("a tote bag", 1)],
    }
    got = ceiling(sets, embed)
    assert got["train"]["nearest_caption"] == 1.0
    assert got["heldout_new"]["nearest_caption"] == pytest.approx(2 / 3)
    assert got["heldout_new"]["nearest_centroid"] == pytest.approx(2 / 3)
    assert got["heldout_new"]["misses"] == [("a hoodie", 0, 1)]
