"""DiffAugment and consistency regularisation: each transform does what it says, stays
differentiable, and the two-player step shows the discriminator the augmented images."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.errors import UserError
from jaxgen.gan.augment import augment, parse_policy
from jaxgen.gan.step import Objective, Players, discriminator_update, generator_update

N, H, W = 16, 12, 10


def _images(seed: int = 0, channels: int = 1) -> jax.Array:
    """Distinct non-zero pixel values, so a moved or zeroed pixel is recognisable."""
    x = jax.random.uniform(jax.random.PRNGKey(seed), (N, H, W, channels), minval=0.1, maxval=1)
    return x


def _shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` moved down by ``dy`` and right by ``dx``, zeros where nothing moved in."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_translation_moves_each_image_by_at_most_an_eighth_of_its_size():
    x = np.asarray(_images())
    y = np.asarray(augment(jnp.asarray(x), jax.random.PRNGKey(1), ("translation",)))
    assert y.shape == x.shape
    limit_y, limit_x = int(H / 8 + 0.5), int(W / 8 + 0.5)
    shifts = set()
    for image, moved in zip(x, y, strict=True):
        found = [
            (dy, dx)
            for dy in range(-limit_y, limit_y + 1)
            for dx in range(-limit_x, limit_x + 1)
            if np.array_equal(moved, _shifted(image, dy, dx))
        ]
        assert len(found) == 1, "each output is exactly one in-range shift of its input"
        shifts.add(found[0])
    assert len(shifts) > 4  # per-image parameters, not one shift for the batch


def test_cutout_zeroes_one_square_of_half_the_side_and_keeps_the_rest():
    x = np.asarray(_images())
    y = np.asarray(augment(jnp.asarray(x), jax.random.PRNGKey(2), ("cutout",)))
    side_y, side_x = int(H / 2 + 0.5), int(W / 2 + 0.5)
    for image, cut in zip(x, y, strict=True):
        hole = cut[..., 0] == 0
        np.testing.assert_array_equal(cut[~hole], image[~hole])
        rows, cols = np.nonzero(hole)
        assert 0 < hole.sum() <= side_y * side_x
        # a rectangle (a square clipped at the border) of at most half the side
        assert hole.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        assert np.ptp(rows) + 1 <= side_y and np.ptp(cols) + 1 <= side_x


def test_flip_mirrors_about_half_of_the_images():
    x = np.asarray(_images())
    y = np.asarray(augment(jnp.asarray(x), jax.random.PRNGKey(3), ("flip",)))
    mirrored = [bool(np.array_equal(b, a[:, ::-1])) for a, b in zip(x, y, strict=True)]
    kept = [bool(np.array_equal(b, a)) for a, b in zip(x, y, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))
    assert 2 <= sum(mirrored) <= N - 2


def test_color_is_a_per_image_affine_map_of_a_grey_image():
    x = np.asarray(_images())
    y = np.asarray(augment(jnp.asarray(x), jax.random.PRNGKey(4), ("color",)))
    scales = []
    for image, out in zip(x.reshape(N, -1), y.reshape(N, -1), strict=True):
        a, b = np.polyfit(image, out, 1)
        np.testing.assert_allclose(out, a * image + b, atol=1e-5)
        scales.append(a)
    assert 0.5 <= min(scales) and max(scales) <= 1.5  # contrast; saturation: 1 for one channel
    assert np.std(scales) > 0.05


def test_augmentations_are_differentiable_in_the_pixels():
    x = _images()
    policy = ("color", "translation", "cutout", "flip")
    grad = jax.grad(lambda v: jnp.sum(augment(v, jax.random.PRNGKey(5), policy) ** 2))(x)
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) > 0
    moved = jax.grad(lambda v: jnp.sum(augment(v, jax.random.PRNGKey(6), ("translation",))))(x)
    assert set(np.unique(np.asarray(moved))) <= {0.0, 1.0}  # each pixel kept once or dropped


@pytest.mark.parametrize(
    "text, expected", [("", ()), ("translation, cutout", ("translation", "cutout"))]
)
def test_policy_parsing(text, expected):
    assert parse_policy(text, "gan.diffaugment") == expected


def test_unknown_transform_is_a_user_error():
    with pytest.raises(UserError, match="gan.diffaugment='rotate'.*'rotate'"):
        parse_policy("rotate", "gan.diffaugment")


# --- the two-player step --------------------------------------------------------------------

# A discriminator whose output is the share of exactly-zero pixels of each image: cutout makes
# it positive on images that have none.
ZERO_SHARE = Players(
    generate=lambda p, z, y: jnp.ones((z.shape[0], H, W, 1)) * p["w"],
    discriminate=lambda p, s, x, y, update: (jnp.mean(x == 0, axis=(1, 2, 3)) + 0 * p["v"], s),
    z_dim=4,
)
PARAMS = {"generator": {"w": jnp.ones(())}, "discriminator": {"v": jnp.zeros(())}}


def _d_metrics(objective: Objective) -> dict:
    tx = optax.sgd(0.0)
    real = jnp.ones((8, H, W, 1))
    *_, metrics = discriminator_update(
        ZERO_SHARE, objective, tx, PARAMS, tx.init(PARAMS["discriminator"]), {}, real, None,
        jax.random.PRNGKey(0), jnp.int32(0),
    )  # fmt: skip
    return metrics


def test_diffaugment_shows_the_discriminator_augmented_images_in_both_updates():
    plain, augmented = Objective(), Objective(augment=("cutout",))
    assert float(_d_metrics(plain)["d_out_real"]) == 0.0
    assert float(_d_metrics(plain)["d_out_fake"]) == 0.0
    metrics = _d_metrics(augmented)
    assert 0.0 < float(metrics["d_out_real"]) <= 0.25 + 1e-6
    assert 0.0 < float(metrics["d_out_fake"]) <= 0.25 + 1e-6
    tx = optax.sgd(0.0)
    losses = {}
    for name, objective in (("plain", plain), ("augmented", augmented)):
        _, _, g_metrics = generator_update(
            ZERO_SHARE, objective, tx, PARAMS, tx.init(PARAMS["generator"]), {}, 8,
            jax.random.PRNGKey(1),
        )  # fmt: skip
        losses[name] = float(g_metrics["g_loss"])
    assert losses["plain"] != losses["augmented"]  # the generator is judged through them too


def test_consistency_terms_measure_the_outputs_change_under_the_transform():
    metrics = _d_metrics(Objective(cr_real=10.0, cr_fake=10.0, cr_augment=("cutout",)))
    # plain outputs 0, cutout copies a share s of zeros: the term is mean(s^2) > 0
    assert 0.0 < float(metrics["cr_real"]) <= 0.25**2 + 1e-6
    assert 0.0 < float(metrics["cr_fake"]) <= 0.25**2 + 1e-6
    loss_without = float(_d_metrics(Objective())["d_loss"])
    expected = loss_without + 10.0 * (float(metrics["cr_real"]) + float(metrics["cr_fake"]))
    np.testing.assert_allclose(float(metrics["d_loss"]), expected, rtol=1e-5)
    assert "cr_real" not in _d_metrics(Objective())


def test_negative_consistency_weight_is_a_user_error():
    with pytest.raises(UserError, match="gan.cr_real=-1"):
        Objective(cr_real=-1.0)
