"""Image tokens: the FSQ quantiser, the causal Transformer prior, its cached sampler, and one
smoke run of both stages of ``configs/tokens.py`` through the trainer and the tables."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.token_prior import TokenPrior
from jaxgen.methods.tokenizer import FrozenTokenizer, ImageTokenizer
from jaxgen.models.quantizer import FSQ
from jaxgen.models.token_transformer import (
    TokenTransformer,
    TokenTransformerConfig,
    empty_cache,
)
from jaxgen.sampling import SampleOptions
from tests.conftest import adam_losses, load_config

SPEC = DataSpec((8, 8, 1), 10, "class")


# --- the quantiser ----------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (3, 4, 6)])
def test_fsq_round_trip_is_exact_for_every_code(levels):
    fsq = FSQ(levels)

    @jax.jit
    def round_trip():
        indices = jnp.arange(fsq.codebook_size)
        codes = fsq.indices_to_codes(indices)  # [K, d]
        # A latent that lands on each code quantises to exactly that code.
        requantized = fsq.quantize(fsq.inverse_bound(codes))
        return indices, codes, fsq.codes_to_indices(codes), requantized

    indices, codes, back, requantized = round_trip()
    assert len({tuple(c) for c in np.asarray(codes)}) == fsq.codebook_size
    assert float(codes.min()) == -1.0 and float(codes.max()) <= 1.0
    np.testing.assert_array_equal(back, indices)
    np.testing.assert_array_equal(requantized, codes)


def test_fsq_straight_through_gradient_matches_its_definition():
    fsq = FSQ((8, 5, 5, 5))
    z = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (16, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (16, 4))

    @jax.jit
    def value_grad_jacobian(z):
        value, grad = jax.value_and_grad(lambda z: jnp.sum(w * fsq.quantize(z)))(z)
        return value, grad, jax.jacobian(fsq.quantize)(z[0])

    q, grad, jac = value_grad_jacobian(z)
    levels = np.asarray(fsq.levels, np.float64)
    half_width = (levels - 1) * (1 - 1e-3) / 2
    offset = np.where(levels % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half_width)
    scale = levels // 2
    z64 = np.asarray(z, np.float64)
    bounded = half_width * np.tanh(z64 + shift) - offset
    # Forward: the rounded bound over L // 2. Backward: identity through the rounding times
    # the bounding map's derivative, channel by channel (no cross-channel terms).
    np.testing.assert_allclose(float(q), np.sum(np.asarray(w) * np.round(bounded) / scale), 1e-5)
    expected = np.asarray(w) * half_width * (1 - np.tanh(z64 + shift) ** 2) / scale
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-6)
    jac = np.asarray(jac)
    assert np.count_nonzero(jac - np.diag(np.diag(jac))) == 0


# --- the Transformer ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_net():
    """A tiny text-conditioned Transformer (cross-attention), its random head and inputs."""
    cfg = TokenTransformerConfig(
        vocab_size=45, num_positions=16, width=16, depth=2, num_heads=2, mlp_ratio=2,
        context_dim=8,
    )  # fmt: skip
    net = TokenTransformer(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 16), 0, 45)
    mask = jnp.array([[1, 1, 0, 0, 0], [1] * 5, [0] * 5], bool)  # the last: the null text
    text = jax.random.normal(jax.random.PRNGKey(2), (3, 5, 8))
    cond = {
        "text_tokens": text * mask[..., None],
        "text_mask": mask,
        "text_pooled": jax.random.normal(jax.random.PRNGKey(3), (3, 8)),
    }
    params = jax.jit(net.init)(jax.random.PRNGKey(0), tokens, **cond)["params"]
    # The head starts at zero (a uniform prior); give it weights so that logits differ.
    params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(4), (16, 45))
    return cfg, net, params, tokens, cond


def test_changing_token_i_changes_no_logit_at_or_before_i(text_net):
    _, net, params, tokens, cond = text_net

    @jax.jit
    def changed_positions(i):
        other = tokens.at[:, i].set((tokens[:, i] + 7) % 45)
        a = net.apply({"params": params}, tokens, **cond)
        b = net.apply({"params": params}, other, **cond)
        return jnp.any(a != b, axis=(0, 2))  # [N]: which positions' logits moved

    for i in (0, 5, 14):
        moved = np.asarray(changed_positions(i))
        assert not moved[: i + 1].any()  # exactly: not a single bit
        assert moved[i + 1 :].all()  # the later positions do see it


def test_cached_decoding_gives_the_full_causal_pass_logits(text_net):
    cfg, net, params, tokens, cond = text_net

    @jax.jit
    def both():
        full = net.apply({"params": params}, tokens, **cond)

        def body(cache, i):
            prev = tokens[:, jnp.maximum(i - 1, 0)]
            logits, cache = net.apply(
                {"params": params}, prev, i, cache, **cond, method="decode_step"
            )
            return cache, logits

        _, steps = jax.lax.scan(body, empty_cache(cfg, 3, jnp.float32), jnp.arange(16))
        return full, steps.transpose(1, 0, 2)

    full, cached = both()
    np.testing.assert_allclose(np.asarray(cached), np.asarray(full), rtol=1e-5, atol=1e-5)


# --- the family, on a tiny in-memory tokenizer ---------------------------------------------------
@pytest.fixture(scope="module")
def prior():
    """A class-conditional TokenPrior on an untrained 8x8 tokenizer (4x4 = 16 tokens, 45 codes)."""
    tok_config = load_config("configs/tokens.py:preset=smoke,stage=tokenizer")
    tok_config.model.channels = (8,)
    tokenizer = ImageTokenizer(tok_config, DataSpec((8, 8, 1), 0, "none"))
    example = {"image": jnp.zeros((1, 8, 8, 1), jnp.uint8)}
    tok_params = jax.jit(tokenizer.init_params)(jax.random.PRNGKey(0), example)
    config = load_config("configs/tokens.py:preset=smoke,stage=prior,cond=class")
    config.model.dropout = 0.0
    config.model.cond_drop_prob = 0.0  # the loss is then the mean likelihood
    method = TokenPrior(config, SPEC, tokenizer=FrozenTokenizer.from_method(tokenizer, tok_params))
    images = jax.random.randint(jax.random.PRNGKey(5), (8, 8, 8, 1), 0, 256).astype(jnp.uint8)
    batch = {"image": images, "label": jnp.arange(8, dtype=jnp.int32)}
    params = jax.jit(method.init_params)(jax.random.PRNGKey(1), batch)
    return method, params, batch


def test_cached_sampler_draws_the_plain_samplers_tokens(prior):
    method, params, _ = prior
    assert method.num_tokens == 16 and method.tokenizer.method.codebook_size == 45
    # The head starts at zero (a uniform prior); give it weights so that the draws differ.
    params = dict(params, head=dict(params["head"]))
    params["head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(4), (16, 45))
    labels = {"label": jnp.array([3, 3, 7, 1, 0, 9], jnp.int32)}
    draw = jax.jit(method.sample_tokens, static_argnums=(2,), static_argnames=("options",))
    guided = SampleOptions("fast", 0, 2.5)  # conditional and unconditional rows per sample
    fast = draw(params, jax.random.PRNGKey(3), 6, labels, options=guided)
    plain = draw(params, jax.random.PRNGKey(3), 6, labels, options=guided.replace(sampler="plain"))
    np.testing.assert_array_equal(fast, plain)
    assert fast.shape == (6, 16) and fast.dtype == jnp.int32
    assert len(np.unique(np.asarray(fast))) > 10  # a draw, not a constant
    # Row i does not depend on how many samples are drawn with it.
    first = {"label": labels["label"][:2]}
    np.testing.assert_array_equal(draw(params, jax.random.PRNGKey(3), 2, first, options=guided),
                                  fast[:2])  # fmt: skip

    config = method.config.copy_and_resolve_references()
    config.sample.temperature = 0.0
    greedy_method = TokenPrior(config, SPEC, tokenizer=method.tokenizer)

    @jax.jit
    def greedy(seed):
        options = SampleOptions("fast", 0, 1.0)
        tokens = greedy_method.sample_tokens(params, jax.random.PRNGKey(seed), 6, labels, options)
        logits = method.net.apply({"params": method._net_params(params)}, tokens, **labels)
        return tokens, jnp.argmax(logits, -1)

    (tokens, argmax), (again, _) = greedy(0), greedy(1)
    np.testing.assert_array_equal(tokens, again)  # greedy: no randomness left
    np.testing.assert_array_equal(tokens, argmax)  # each token is the full pass's argmax


def test_prior_loss_falls_on_a_small_batch(prior):
    method, params, batch = prior
    _, losses = adam_losses(method.loss, params, batch, steps=30, learning_rate=1e-2)
    assert abs(losses[0] - np.log(45)) < 1e-5  # the zero head: uniform over the 45 codes
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def test_likelihood_at_init_is_uniform_bits_per_token(prior):
    method, params, batch = prior
    out = jax.jit(method.likelihood)(params, batch, jax.random.PRNGKey(0))
    assert "bits_per_dim" not in out  # a token likelihood is not a pixel likelihood
    # The zero head: every token costs exactly log2(45) bits, 16 * ln(45) nats an image.
    np.testing.assert_allclose(out["bits_per_token"], np.full(8, np.log2(45)), rtol=1e-6)
    np.testing.assert_allclose(out["token_nll"], np.full(8, 16 * np.log(45)), rtol=1e-6)
    recon = method.tokenizer.decode(method.tokenizer.encode(batch["image"]))
    mse = np.mean((np.asarray(recon) - np.asarray(batch["image"]) / 255.0) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(out["recon_mse"], mse, rtol=1e-5)
    np.testing.assert_allclose(out["recon_psnr"], -10 * np.log10(mse), rtol=1e-5)


def test_bad_keys_are_user_errors():
    with pytest.raises(UserError, match="model.levels"):
        config = load_config("configs/tokens.py:preset=smoke,stage=tokenizer")
        config.model.levels = (8, 2)
        ImageTokenizer(config, DataSpec((8, 8, 1), 0, "none"))
    with pytest.raises(UserError, match="stage="):
        load_config("configs/tokens.py:preset=smoke,stage=both")
    with pytest.raises(UserError, match="model.tokenizer=''"):
        TokenPrior(load_config("configs/tokens.py:preset=smoke,stage=prior"), SPEC)


# --- both stages through the trainer ---------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """The smoke presets of both stages trained in this process: ``(tokenizer, prior)`` dirs."""
    # jaxgen.api's, not ``jaxgen.train``: once the trainer is imported, that names its module.
    from jaxgen.api import train

    root = tmp_path_factory.mktemp("tokens")
    tok, prior_dir = str(root / "tokenizer"), str(root / "prior")
    train("configs/tokens.py:preset=smoke,stage=tokenizer", tok)
    train(f"configs/tokens.py:preset=smoke,stage=prior,tokenizer={tok}", prior_dir)
    return tok, prior_dir


def test_smoke_runs_train_sample_evaluate_and_are_tabled(smoke_runs):
    from experiments import tables

    tok, prior_dir = smoke_runs
    with open(os.path.join(tok, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    for key in ("recon_mse", "psnr", "codebook_usage", "codebook_perplexity"):
        assert all(np.isfinite(r[key]) for r in rows if "loss" in r), key
    assert 0 < rows[-1]["codebook_usage"] <= 1 and rows[-1]["codebook_perplexity"] >= 1
    with open(os.path.join(prior_dir, "eval", "step_4.json")) as f:
        evals = json.load(f)
    assert 0 < evals["bits_per_token"] < 2 * np.log2(45) and "bits_per_dim" not in evals
    assert evals["likelihood_num_examples"] == 16 and 0 < evals["recon_mse"] < 1
    assert os.path.isfile(os.path.join(prior_dir, "samples", "step_4.png"))  # drawn, decoded

    runs, built = tables.tables_for(os.path.dirname(prior_dir))
    rows = {t.key: [dict(zip(t.header(), r, strict=True)) for r in t.rows] for t in built}
    (lik,) = rows["likelihoods"]  # the prior; the tokenizer reports no likelihood
    assert lik["run"] == "prior" and lik["bits/token"] == evals["bits_per_token"]
    assert lik["bits/dim"] is None and lik["tokenizer recon. MSE"] == evals["recon_mse"]
    assert lik["bound"].startswith("exact over tokens")
    families = {r["run"]: r["family"] for r in rows["model_comparison"]}
    assert families == {"prior": "token_prior", "tokenizer": "image_tokenizer"}
    assert {r["family"] for r in rows["domains"] if r["run"]} == {"token_prior"}
