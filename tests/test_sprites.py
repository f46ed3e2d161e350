"""The sprites source: determinism, captions that match the factors, held-out pairs, drawing."""

import numpy as np
import pytest

from jaxgen.data import sprites
from jaxgen.data.sources import get_source
from jaxgen.errors import UserError


def parse_caption(caption: str) -> tuple[int, int, int, int]:
    """(shape, colour, scale, position) named in a caption, each found exactly once."""
    found = []
    for names in (sprites.SHAPES, sprites.COLOURS, sprites.SCALES):
        hits = [i for i, n in enumerate(names) if f" {n}" in f" {caption}".replace(",", " ")]
        assert len(hits) == 1, (caption, names)
        found.append(hits[0])
    positions = [i for i, p in enumerate(sprites.POSITIONS) if p in caption]
    # "in the top left" also contains no other position phrase; "at the top" is unique too.
    assert len(positions) == 1, caption
    return (*found, positions[0])


def test_registered_and_item_layout():
    source = get_source("sprites", "train")
    assert len(source) == sprites.SPLIT_SIZES["train"]
    assert source.image_shape == (32, 32, 3) and source.num_classes == 5
    item = source[7]
    assert item["image"].dtype == np.uint8 and item["image"].shape == (32, 32, 3)
    assert item["label"].dtype == np.int32 and item["label"] == item["factors"][0]
    assert item["factors"].dtype == np.int32 and item["factors"].shape == (5,)
    assert isinstance(item["caption"], str)


def test_deterministic_per_index_and_split():
    a, b = sprites.SpritesSource("train"), sprites.SpritesSource("train")
    for i in (0, 1, 12345, 59999):
        x, y = a[i], b[i]
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["factors"], y["factors"])
        assert x["caption"] == y["caption"]
    test = sprites.SpritesSource("test")
    assert any(not np.array_equal(a[i]["factors"], test[i]["factors"]) for i in range(10))


def test_captions_match_factors():
    source = sprites.SpritesSource("test")
    templates = set()
    for i in range(300):
        item = source[i]
        shape, colour, scale, _, position = item["factors"]
        assert parse_caption(item["caption"]) == (shape, colour, scale, position)
        templates.add(i % len(sprites.CAPTION_TEMPLATES))
    assert len(templates) == len(sprites.CAPTION_TEMPLATES)
    assert sprites.caption_for_factors((3, 0, 0, 2, 0)) == "a small red heart in the top left"


def test_heldout_pairs_only_outside_train():
    def pairs(split, n=3000):
        return {tuple(int(f) for f in sprites.sample_factors(split, i)[:2]) for i in range(n)}

    train, heldout, test = pairs("train"), pairs("heldout", 500), pairs("test")
    assert not train & sprites.HELDOUT_PAIRS
    assert heldout == sprites.HELDOUT_PAIRS
    assert sprites.HELDOUT_PAIRS <= test
    # Every shape and every colour is still seen in training.
    assert {s for s, _ in train} == set(range(5)) and {c for _, c in train} == set(range(6))
    np.testing.assert_array_equal(sprites.SpritesSource("heldout")[9]["factors"],
                                  sprites.sample_factors("heldout", 9))  # fmt: skip


@pytest.mark.parametrize("shape", range(5))
def test_drawing_has_the_factors_colour_place_and_size(shape):
    areas = []
    for scale in range(3):
        for position in (0, 4, 8):
            colour = (shape + scale) % len(sprites.COLOURS)
            image = sprites.render((shape, colour, scale, 1, position)).astype(np.float32)
            coverage = image.max(axis=-1) / sprites.COLOUR_RGB[colour].max()
            full = coverage > 0.99
            assert full.any()
            np.testing.assert_allclose(image[full].mean(0), sprites.COLOUR_RGB[colour], atol=1.5)
            ys, xs = np.nonzero(coverage > 0.5)
            centre = np.array([xs.mean(), ys.mean()]) / 32
            cell = np.array([position % 3, position // 3])
            assert np.all(np.abs(centre - np.take(sprites.POSITION_CENTRES, cell)) < 0.09)
            if position == 4:
                areas.append(coverage.sum())
    assert areas[0] < areas[1] < areas[2]


def test_shapes_differ_and_rotation_changes_the_image():
    images = [sprites.render((s, 5, 2, 0, 4)) for s in range(5)]
    for i in range(5):
        for j in range(i):
            assert np.abs(images[i].astype(int) - images[j]).sum() > 1000
    square = [sprites.render((0, 5, 2, r, 4)) for r in range(4)]
    assert np.abs(square[0].astype(int) - square[2]).sum() > 1000


def test_bad_split_is_a_user_error():
    with pytest.raises(UserError, match="sprites has splits"):
        get_source("sprites", "validation")


def test_factor_reads_one_factor_by_name():
    factors = np.stack([sprites.sample_factors("test", i) for i in range(6)])
    for column, name in enumerate(sprites.FACTOR_NAMES):
        np.testing.assert_array_equal(sprites.factor(factors, name), factors[:, column])
    assert sprites.factor(factors[0], "colour") == factors[0, 1]


def test_the_source_table_opens_sprites_without_importing_them_first():
    assert get_source("sprites", "test").image_shape == (32, 32, 3)
    with pytest.raises(UserError, match="reads no files"):
        get_source("sprites", "test", "/tmp")
