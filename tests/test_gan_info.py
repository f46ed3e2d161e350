"""InfoGAN's categorical code (``gan.info_codes``): the latent, the code loss, what a trained
code captures, and the option on the real method."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data.spec import DataSpec
from jaxgen.gan.step import Players, code_loss, critic, latents
from jaxgen.methods.gan import GAN
from tests.conftest import gray_batch, jitted_init, jitted_step, load_config
from tests.ring_of_gaussians import MLP, nearest_mode, train_on_ring


def test_latents_append_the_one_hot_of_a_uniform_code():
    rng = jax.random.PRNGKey(0)
    np.testing.assert_array_equal(latents(rng, 6, 4), jax.random.normal(rng, (6, 4)))
    z = np.asarray(latents(rng, 5000, 4, info_codes=5))
    assert z.shape == (5000, 9)
    code = z[:, 4:]
    np.testing.assert_array_equal(code.sum(1), 1.0)
    assert set(np.unique(code)) == {0.0, 1.0}
    share = np.bincount(code.argmax(1), minlength=5) / 5000
    np.testing.assert_allclose(share, 0.2, atol=0.02)
    assert abs(z[:, :4].mean()) < 0.05 and abs(z[:, :4].std() - 1.0) < 0.05


def test_code_loss_is_the_cross_entropy_of_the_code_logits():
    players = Players(generate=None, discriminate=None, z_dim=2, info_codes=3)
    z = jnp.array([[0.3, -1.0, 0, 1, 0], [2.0, 0.5, 0, 0, 1]])  # codes 1 and 2
    outputs = jnp.array([[7.0, 0.0, np.log(3.0), 0.0], [-2.0, 0.0, 0.0, 0.0]])
    expected = (-np.log(3 / 5) - np.log(1 / 3)) / 2
    np.testing.assert_allclose(float(code_loss(players, outputs, z)), expected, rtol=1e-6)
    np.testing.assert_array_equal(critic(outputs), [7.0, -2.0])
    np.testing.assert_array_equal(critic(outputs[:, 0]), [7.0, -2.0])


def test_a_trained_code_picks_one_mode_of_a_ring_of_gaussians_each():
    """8 separate modes and an 8-valued code: each code's samples gather on one mode, and
    the codes share the modes out, which a continuous latent alone cannot keep apart."""
    std, z_dim, codes, steps = 0.05, 8, 8, 3000
    g_net, d_net = MLP(2), MLP(1 + codes)
    players = Players(
        generate=lambda p, z, y: g_net.apply(p, z),
        discriminate=lambda p, s, x, y, update: (d_net.apply(p, x), s),
        z_dim=z_dim,
        info_codes=codes,
    )
    key = jax.random.PRNGKey(0)
    params, info_loss = train_on_ring(players, g_net, d_net, steps, std, key, "d_info_loss")
    assert float(info_loss[:50].mean()) > 1.5  # about log(8) = 2.08 at the start
    assert float(info_loss[-100:].mean()) < 0.1
    z = latents(jax.random.fold_in(key, 99), 4000, z_dim, codes)
    x = np.asarray(g_net.apply(params["generator"], z))
    code = np.asarray(z[:, z_dim:]).argmax(1)
    mode, _ = nearest_mode(x)
    main_modes = []
    for c in range(codes):
        counts = np.bincount(mode[code == c], minlength=8)
        main_modes.append(counts.argmax())
        assert counts.max() / counts.sum() > 0.8, f"code {c}: samples per mode {counts}"
    assert len(set(main_modes)) >= 7, f"the codes' modes: {main_modes}"


def test_info_gan_trains_its_code_head_and_samples_every_code():
    config = load_config("configs/gan.py:preset=smoke")
    config.gan.info_codes = 3
    config.optimizer.learning_rate = config.optimizer.d_learning_rate = 1e-2  # a few steps
    method = GAN(config, DataSpec((8, 8, 1), 10, "none"))
    tx = method.make_optimizer()
    batch = gray_batch(0)
    state = jitted_init(method, tx, jax.random.PRNGKey(0), batch)
    head = state.params["discriminator"]["info_head"]["kernel"]
    assert head.shape[-1] == 3
    step = jitted_step(method, tx, 0.0)
    losses = []
    for _ in range(40):
        state, metrics = step(state, batch)
        losses.append(float(metrics["d_info_loss"]))
    assert np.isfinite(float(metrics["g_info_loss"]))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    params = method.sampling_params(state)
    images = jax.jit(method.sample, static_argnums=2)(params, jax.random.PRNGKey(1), 6)
    assert images.shape == (6, 8, 8, 1) and 0.0 <= float(images.min()) <= float(images.max()) <= 1
