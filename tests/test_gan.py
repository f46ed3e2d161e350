"""GAN family: spectral norm, penalties, losses, the two-player step, a 2-D mode-coverage run."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.gan import losses
from jaxgen.gan.regularizers import gradient_penalty, r1_penalty
from jaxgen.gan.step import (
    Objective,
    Players,
    generator_update,
    mode_seeking_ratio,
    top_k_gradients,
    top_k_share,
)
from jaxgen.methods.gan import GAN
from jaxgen.models.dcgan import DCGANDiscriminator, DCGANGenerator, grid_plan, minibatch_stddev
from jaxgen.models.layers import UpConv
from jaxgen.models.spectral_norm import SNConv, SNDense
from tests.conftest import gray_batch, jitted_init, jitted_step, load_config
from tests.ring_of_gaussians import MLP, nearest_mode, train_on_ring


def _trees_equal(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


# --- spectral normalisation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, x_shape, matrix_shape",
    [
        (SNDense(24), (2, 40), (40, 24)),
        (SNConv(8, (3, 3)), (1, 5, 5, 6), (54, 8)),
    ],
)
def test_spectral_norm_estimate_matches_svd(layer, x_shape, matrix_shape):
    x = jnp.ones(x_shape)
    variables = layer.init(jax.random.PRNGKey(0), x)
    kernel = variables["params"]["kernel"]
    state = {"spectral": variables["spectral"]}
    apply = jax.jit(lambda s: layer.apply({"params": variables["params"], **s}, x, True,
                                          mutable=["spectral"])[1])  # fmt: skip
    for _ in range(30):  # one power-iteration step per training step, state kept between
        state = apply(state)
    sigma_svd = np.linalg.svd(np.asarray(kernel).reshape(matrix_shape), compute_uv=False)[0]
    assert kernel.reshape(matrix_shape).shape == matrix_shape
    np.testing.assert_allclose(float(state["spectral"]["sigma"]), sigma_svd, rtol=0.01)
    # The normalised layer then has operator norm ~1: check on the dense case directly.
    if isinstance(layer, SNDense):
        w_sn = np.asarray(kernel) / float(state["spectral"]["sigma"])
        np.testing.assert_allclose(np.linalg.svd(w_sn, compute_uv=False)[0], 1.0, rtol=0.01)


def test_spectral_state_is_only_updated_when_asked():
    layer = SNDense(5)
    x = jnp.ones((1, 7))
    variables = layer.init(jax.random.PRNGKey(1), x)
    _, same = layer.apply(variables, x, False, mutable=["spectral"])
    _, moved = layer.apply(variables, x, True, mutable=["spectral"])
    assert _trees_equal(same["spectral"], variables["spectral"])
    assert not jnp.array_equal(moved["spectral"]["u"], variables["spectral"]["u"])


# --- penalties and losses -----------------------------------------------------------------


def test_r1_and_gradient_penalty_of_a_linear_discriminator():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(3, 4, 2)), jnp.float32)
    real = jnp.asarray(rng.normal(size=(6, 3, 4, 2)), jnp.float32)
    fake = jnp.asarray(rng.normal(size=(6, 3, 4, 2)), jnp.float32)

    def d_fn(x):  # D(x) = <w, x> + 0.7, so grad_x D = w for every example
        return jnp.sum(x * w, axis=(1, 2, 3)) + 0.7

    norm_sq = float(jnp.sum(w * w))
    np.testing.assert_allclose(float(r1_penalty(d_fn, real)), norm_sq, rtol=1e-5)
    gp = gradient_penalty(d_fn, real, fake, jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(gp), (math.sqrt(norm_sq) - 1.0) ** 2, rtol=1e-5)


REAL = jnp.array([0.0, 2.0])
FAKE = jnp.array([0.0, -1.0])
SP = math.log1p  # softplus(x) = log(1 + e^x)


@pytest.mark.parametrize(
    "name, d_value, g_value",
    [
        (
            "nonsaturating",
            (SP(1.0) + SP(math.exp(-2.0))) / 2 + (SP(1.0) + SP(math.exp(-1.0))) / 2,
            (SP(1.0) + SP(math.exp(1.0))) / 2,
        ),
        ("hinge", (1.0 + 0.0) / 2 + (1.0 + 0.0) / 2, 0.5),
        ("wasserstein", -0.5 - 1.0, 0.5),
    ],
)
def test_losses_on_known_logits(name, d_value, g_value):
    d_loss, g_loss = losses.get_loss(name)
    np.testing.assert_allclose(float(d_loss(REAL, FAKE)), d_value, rtol=1e-6)
    np.testing.assert_allclose(float(g_loss(FAKE)), g_value, rtol=1e-6)


def test_unknown_loss_is_a_user_error():
    with pytest.raises(UserError, match="gan.loss"):
        losses.get_loss("lsgan")


@pytest.mark.parametrize("x_shape, features", [((3, 7, 7, 5), 6), ((2, 4, 5, 3), 1)])
def test_up_conv_equals_a_transposed_convolution(x_shape, features):
    """The sub-pixel UpConv computes nn.ConvTranspose(4x4, stride 2, SAME) on its parameters."""
    x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
    ref = nn.ConvTranspose(features, (4, 4), (2, 2), padding="SAME")
    variables = ref.init(jax.random.PRNGKey(1), x)
    variables = jax.tree.map(lambda a: a + jax.random.normal(jax.random.PRNGKey(2), a.shape),
                             variables)  # fmt: skip
    out = UpConv(features).apply(variables, x)
    assert out.shape == (x_shape[0], 2 * x_shape[1], 2 * x_shape[2], features)
    np.testing.assert_allclose(out, ref.apply(variables, x), atol=1e-5)


def test_grid_plan():
    assert grid_plan(28) == (2, 7)
    assert grid_plan(32) == (3, 4)
    assert grid_plan(64) == (4, 4)
    with pytest.raises(UserError, match="image_size"):
        grid_plan(7)


def _conv_kernels(params) -> list[tuple[int, ...]]:
    return [tuple(v.shape) for path, v in jax.tree_util.tree_leaves_with_path(params)
            if "Conv_" in jax.tree_util.keystr(path) and path[-1].key == "kernel"]  # fmt: skip


def test_extra_generator_convolutions_sit_at_every_resolution():
    """``extra_convs=0`` keeps the DCGAN's parameters (so its checkpoints still load);
    ``extra_convs=2`` adds two 3x3 convolutions at 7 x 7 (32 channels) and at 14 x 14 (16),
    and ends at 28 x 28 with two more (8 channels, then the image's one)."""
    z = jax.random.normal(jax.random.PRNGKey(0), (3, 8))
    plain = DCGANGenerator((28, 28, 1), 16).init(jax.random.PRNGKey(1), z)["params"]
    assert sorted(plain) == ["BatchStatNorm_0", "BatchStatNorm_1", "ConvTranspose_0",
                             "ConvTranspose_1", "Dense_0"]  # fmt: skip
    deep = DCGANGenerator((28, 28, 1), 16, extra_convs=2)
    params = deep.init(jax.random.PRNGKey(1), z)["params"]
    assert _conv_kernels(params) == [(3, 3, 32, 32)] * 2 + [(3, 3, 16, 16)] * 2 + [
        (3, 3, 8, 8), (3, 3, 8, 1)]  # fmt: skip
    images = deep.apply({"params": params}, z)
    assert images.shape == (3, 28, 28, 1)
    assert float(jnp.abs(images).max()) <= 1.0 and float(images.std()) > 0


# --- the two-player step on the real method ------------------------------------------------


@pytest.fixture(scope="module")
def conditional_gan():
    config = load_config("configs/gan.py:preset=smoke,cond=class")
    method = GAN(config, DataSpec((8, 8, 1), 10, "class"))
    tx = method.make_optimizer()
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.integers(0, 256, (8, 8, 8, 1)), jnp.uint8),
        "label": jnp.arange(8, dtype=jnp.int32) % 10,
    }
    state = jitted_init(method, tx, jax.random.PRNGKey(0), batch)
    return method, tx, state, batch


def test_train_step_updates_both_players_state_and_ema(conditional_gan):
    method, tx, state, batch = conditional_gan
    new, metrics = jitted_step(method, tx, 0.9)(state, batch)
    assert int(new.step) == 1 and int(new.first_nonfinite_step) == -1
    assert not _trees_equal(new.params["generator"], state.params["generator"])
    assert not _trees_equal(new.params["discriminator"], state.params["discriminator"])
    assert not _trees_equal(new.model_state, state.model_state)
    # EMA decay at step 0 is min(0.9, 1/10): ema = 0.1 * old + 0.9 * new
    expected = jax.tree.map(
        lambda e, p: 0.1 * e + 0.9 * p, state.ema_params["generator"], new.params["generator"]
    )
    close = jax.tree.map(
        lambda a, b: np.allclose(a, b, atol=1e-6), expected, new.ema_params["generator"]
    )
    assert all(jax.tree.leaves(close))
    np.testing.assert_allclose(metrics["loss"], metrics["d_loss"] + metrics["g_loss"], rtol=1e-6)
    for name in ("d_acc_real", "d_acc_fake", "d_fake_called_real"):
        assert 0.0 <= float(metrics[name]) <= 1.0
    np.testing.assert_allclose(metrics["d_acc_fake"] + metrics["d_fake_called_real"], 1.0)
    for name in ("d_out_real", "d_out_fake", "d_grad_norm", "g_grad_norm"):
        assert np.isfinite(float(metrics[name]))


@pytest.mark.parametrize("frozen, trained", [("discriminator", "generator"),
                                               ("generator", "discriminator")])  # fmt: skip
def test_each_player_changes_only_its_own_parameters(frozen, trained):
    """With one player's learning rate at 0, a whole step leaves that player as it was."""
    config = load_config("configs/gan.py:preset=smoke")
    if frozen == "discriminator":
        config.optimizer.d_learning_rate = 0.0
    else:
        config.optimizer.learning_rate = 0.0
    method = GAN(config, DataSpec((8, 8, 1), 10, "none"))
    tx = method.make_optimizer()
    batch = gray_batch(1)
    state = jitted_init(method, tx, jax.random.PRNGKey(0), batch)
    new, _ = jitted_step(method, tx, 0.0)(state, batch)
    assert _trees_equal(new.params[frozen], state.params[frozen])
    assert not _trees_equal(new.params[trained], state.params[trained])


def test_sample_does_not_depend_on_the_other_requested_samples(conditional_gan):
    method, _, state, _ = conditional_gan
    params = method.sampling_params(state)
    rng = jax.random.PRNGKey(5)
    sample = jax.jit(method.sample, static_argnums=2)
    a = sample(params, rng, 4, {"label": jnp.array([0, 1, 2, 3], jnp.int32)})
    b = sample(params, rng, 4, {"label": jnp.array([0, 1, 2, 9], jnp.int32)})
    assert a.shape == (4, 8, 8, 1) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    np.testing.assert_allclose(a[:3], b[:3], atol=1e-6)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"model.d_norm": "batch", "gan.r1_gamma": 1.0}, "d_norm"),
        ({"train.d_steps": 3}, "train.d_steps"),
        ({"model.arch": "vit"}, "model.arch"),
        ({"gan.loss": "lsgan"}, "gan.loss"),
        ({"gan.top_k": 1.5}, "gan.top_k="),
        ({"gan.top_k": 0.5, "gan.top_k_gamma": 0.0}, "gan.top_k_gamma"),
        ({"gan.top_k": 0.5, "gan.top_k_every": 0}, "gan.top_k_every"),
        ({"model.arch": "resnet", "model.g_extra_convs": 1}, "model.g_extra_convs"),
        ({"model.d_minibatch_std": 1}, "model.d_minibatch_std"),
        ({"model.arch": "resnet", "model.d_minibatch_std": 4}, "model.d_minibatch_std"),
    ],
)
def test_bad_gan_config_is_a_user_error(overrides, key):
    config = load_config("configs/gan.py:preset=smoke")
    for dotted, value in overrides.items():
        section, name = dotted.split(".")
        config[section][name] = value
    with pytest.raises(UserError, match=key):
        GAN(config, DataSpec((8, 8, 1), 10, "none"))


# --- the minibatch standard deviation channel ----------------------------------------------


def test_minibatch_stddev_is_the_mean_spread_of_each_group():
    x = np.random.default_rng(0).normal(size=(6, 3, 3, 2)).astype(np.float32)
    x[[1, 3, 5]] = x[1]  # group 1 (images 1, 3, 5; G = gcd(6, 4) = 2 would split it): copies
    out = np.asarray(minibatch_stddev(jnp.asarray(x), 3))
    np.testing.assert_array_equal(out[..., :2], x)
    spread = np.sqrt(x[[0, 2, 4]].var(axis=0) + 1e-8).mean()
    np.testing.assert_allclose(out[[0, 2, 4], ..., 2], spread, rtol=1e-5)
    np.testing.assert_allclose(out[[1, 3, 5], ..., 2], 1e-4, rtol=1e-3)  # sqrt(0 + 1e-8)


def test_minibatch_std_lets_the_discriminator_see_its_group_and_only_its_group():
    d = DCGANDiscriminator((8, 8, 1), width=4, norm="none", minibatch_std=2)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))  # groups {0, 2} and {1, 3}
    variables = d.init(jax.random.PRNGKey(1), x)
    out = np.asarray(d.apply(variables, x))
    same_group = np.asarray(d.apply(variables, x.at[2].multiply(3.0)))
    other_group = np.asarray(d.apply(variables, x.at[3].multiply(3.0)))
    assert abs(float(same_group[0] - out[0])) > 1e-4
    np.testing.assert_allclose(other_group[[0, 2]], out[[0, 2]], rtol=1e-6)


# --- a toy run: 8 Gaussians on a ring ------------------------------------------------------


def test_gan_recovers_the_modes_of_a_ring_of_gaussians():
    std, z_dim, steps = 0.05, 8, 2000
    g_net, d_net = MLP(2), MLP(1)
    players = Players(
        generate=lambda p, z, y: g_net.apply(p, z),
        discriminate=lambda p, s, x, y, update: (d_net.apply(p, x)[:, 0], s),
        z_dim=z_dim,
    )
    key = jax.random.PRNGKey(0)
    params, _ = train_on_ring(players, g_net, d_net, steps, std, key)
    x = np.asarray(g_net.apply(params["generator"], jax.random.normal(key, (2000, z_dim))))
    mode, dist = nearest_mode(x)
    close = dist < 3 * std  # within 3 standard deviations of a mode
    counts = np.bincount(mode[close], minlength=8)
    assert close.mean() > 0.25, f"only {close.mean():.2f} of samples are near a mode"
    assert (counts >= 20).sum() >= 7, f"samples per mode: {counts}"


def test_mode_seeking_pairs_share_conditions_and_penalise_ignoring_z():
    """A generator that ignores ``z`` gives identical paired images: ratio 0, loss ~1/1e-5."""
    images = jnp.zeros((2, 3)), jnp.ones((2, 3)) * 0.5
    np.testing.assert_allclose(
        float(mode_seeking_ratio(*images, jnp.zeros((2, 4)), jnp.full((2, 4), 2.0))), 0.25
    )
    table = jax.random.normal(jax.random.PRNGKey(0), (10, 2))
    players = Players(
        generate=lambda p, z, y: p["w"] * table[y],  # depends on the label only
        discriminate=lambda p, s, x, y, update: (jnp.sum(x * p["v"], -1), s),
        z_dim=4,
        num_classes=10,
    )
    params = {"generator": {"w": jnp.ones(())}, "discriminator": {"v": jnp.ones((2,))}}
    tx = optax.sgd(0.0)
    for weight, ignored in ((1.0, True), (0.0, False)):
        objective = Objective(loss="hinge", mode_seeking=weight)
        _, _, metrics = generator_update(
            players, objective, tx, params, tx.init(params["generator"]), {}, 8,
            jax.random.PRNGKey(1),
        )  # fmt: skip
        if ignored:
            assert float(metrics["mode_seeking"]) == 0.0
            assert float(metrics["g_loss"]) > 0.9e5
        else:
            assert "mode_seeking" not in metrics and float(metrics["g_loss"]) < 100


def test_top_k_share_decays_to_its_floor():
    objective = Objective(top_k=0.5, top_k_gamma=0.9, top_k_every=10)
    shares = [float(top_k_share(objective, step)) for step in (0, 9, 10, 25, 10_000)]
    np.testing.assert_allclose(shares, [1.0, 1.0, 0.9, 0.81, 0.5], rtol=1e-6)


def test_top_k_gradients_are_those_of_the_best_rated_images_alone():
    out = jnp.array([0.3, -1.0, 2.0, 0.5, -0.2, 1.1])
    best = jnp.array([2, 5, 3])  # the three largest outputs
    for g_loss in (losses.nonsaturating_g, losses.hinge_g):
        value = g_loss(top_k_gradients(out, jnp.float32(0.5)))
        np.testing.assert_allclose(float(value), float(g_loss(out)), rtol=1e-6)
        grad = jax.grad(lambda o, f=g_loss: f(top_k_gradients(o, jnp.float32(0.5))))(out)
        expected = jax.grad(lambda o, f=g_loss: f(o[best]))(out)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), rtol=1e-6, atol=1e-7)
    full = jax.grad(lambda o: losses.hinge_g(top_k_gradients(o, jnp.float32(1.0))))(out)
    np.testing.assert_allclose(np.asarray(full), np.full(6, -1 / 6), rtol=1e-6)
