"""The DiT backbone: adaLN-Zero identity at init, patches, conditioning, the backbone switch."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import load_config, run_cli

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.diffusion import Diffusion
from jaxgen.models.backbone import build_backbone, count_backbone_params, describe_backbone
from jaxgen.models.dit import (
    DiT,
    DiTBlock,
    DiTConfig,
    FinalLayer,
    patchify,
    position_embedding,
    unpatchify,
)
from jaxgen.models.unet import UNet, UNetConfig

TINY = dict(patch_size=2, width=16, depth=1, num_heads=2, out_channels=1)


def _perturbed(tree, scale=0.3):
    """Every leaf plus a fixed pattern of size ``scale``: the zero-initialised layers come
    alive (no random numbers, which compile slowly)."""
    leaves, treedef = jax.tree.flatten(tree)
    noisy = [
        p + scale * jnp.sin(0.7 * jnp.arange(p.size, dtype=p.dtype).reshape(p.shape) + i)
        for i, p in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, noisy)


def _live_params(model, *args, **kwargs):
    """Parameters of ``model.init(*args)``'s shapes holding :func:`_perturbed`'s pattern, made
    with NumPy (neither the initialisers nor eager JAX ops compile anything)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args, **kwargs))
    leaves, treedef = jax.tree.flatten(shapes["params"])
    return jax.tree.unflatten(
        treedef,
        [
            (0.3 * np.sin(0.7 * np.arange(s.size).reshape(s.shape) + i)).astype(s.dtype)
            for i, s in enumerate(leaves)
        ],
    )


def _inputs(b=2, h=8, w=8, c=1, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, h, w, c)).astype(np.float32)
    return x, (rng.uniform(size=b) * 100.0).astype(np.float32)


def test_patchify_round_trip_is_exact_and_row_major():
    x = np.arange(2 * 6 * 4 * 3, dtype=np.float32).reshape(2, 6, 4, 3)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 6, 12)
    # Token 1 is the patch at rows 0-1, columns 2-3, flattened as (row, column, channel).
    np.testing.assert_array_equal(tokens[0, 1], x[0, 0:2, 2:4].reshape(-1))
    np.testing.assert_array_equal(unpatchify(tokens, 2, 6, 4), x)


def test_position_embedding_is_sin_cos_of_row_and_column():
    pos = position_embedding(3, 5, 8)  # [15, 8]: rows in columns 0-3, columns in 4-7
    assert pos.shape == (15, 8) and pos.dtype == np.float32
    token = 2 * 5 + 3  # row 2, column 3
    np.testing.assert_allclose(pos[token, :4], [np.sin(2), np.sin(0.02), np.cos(2), np.cos(0.02)])
    np.testing.assert_allclose(pos[token, 4:], [np.sin(3), np.sin(0.03), np.cos(3), np.cos(0.03)])
    assert len({tuple(row) for row in pos.round(6)}) == 15  # every position distinct


def test_every_block_is_the_identity_and_the_final_layer_zero_at_init():
    rng = np.random.default_rng(0)
    x, c, context = (
        rng.standard_normal(s).astype(np.float32) for s in ((2, 5, 16), (2, 16), (2, 3, 6))
    )
    mask = np.array([[True, True, False], [True, False, False]])
    block = DiTBlock(2, 64, cross_attention=True)

    @jax.jit
    def outputs():
        text, params = block.init_with_output(jax.random.PRNGKey(1), x, c, context, mask)
        plain, _ = DiTBlock(2, 64).init_with_output(jax.random.PRNGKey(1), x, c)
        final, _ = FinalLayer(12).init_with_output(jax.random.PRNGKey(2), x, c)
        return text, plain, final, block.apply(_perturbed(params), x, c, context, mask)

    text, plain, final, perturbed = (np.asarray(a) for a in outputs())
    np.testing.assert_array_equal(text, x)  # with cross-attention
    np.testing.assert_array_equal(plain, x)
    np.testing.assert_array_equal(final, np.zeros((2, 5, 12)))
    # Not a trivial identity: with the zero-initialised layers perturbed the block acts.
    assert np.abs(perturbed - np.asarray(x)).max() > 1e-2


def test_dit_shapes_precision_and_conditioning():
    x, t = _inputs(b=1, h=8, w=12, c=2)
    model = DiT(DiTConfig(**dict(TINY, out_channels=3), num_classes=3, context_dim=6))
    rng = np.random.default_rng(2)
    ctx = rng.standard_normal((1, 4, 6)).astype(np.float32)
    pooled = rng.standard_normal((1, 6)).astype(np.float32)
    # One batched call, a row per case (the rows do not interact):
    #   0: null label (3), all context masked   4: real context tokens 0-2
    #   1: label -1, all context masked          5: as 4, masked token 3 changed
    #   2: label 0                               6: pooled embedding
    #   3: label 1
    changed = ctx.copy()
    changed[:, 3] = 5.0
    label = np.array([3, -1, 0, 1, 3, 3, 3], np.int32)
    context = np.concatenate([ctx] * 5 + [changed, ctx])
    mask = np.array([[0] * 4] * 4 + [[1, 1, 1, 0]] * 2 + [[0] * 4], bool)
    pooled = np.concatenate([np.zeros((6, 6), np.float32), pooled])
    rows = np.repeat(x, 7, axis=0), np.repeat(t, 7)
    params = _live_params(model, x, t)

    @jax.jit
    def outputs(params):
        bf16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
        return (
            model.apply({"params": params}, x, t),  # label, context, pooled: None
            model.apply({"params": bf16}, x.astype(jnp.bfloat16), t),
            model.apply({"params": params}, *rows, label, context, mask, pooled),
        )

    base, out16, out = outputs(params)
    assert base.shape == (1, 8, 12, 3) and base.dtype == jnp.float32
    assert out16.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(out16, np.float32)))
    base, out = np.asarray(base[0]), np.asarray(out)
    # None is the null class, and so is -1; a context with no real token is no context.
    np.testing.assert_allclose(out[0], base, atol=1e-5)  # (other batch sizes round apart)
    np.testing.assert_allclose(out[1], base, atol=1e-5)
    for row in (2, 3, 4, 6):  # class labels, cross-attention, the pooled embedding act
        assert np.abs(out[row] - base).max() > 1e-3, row
    assert np.abs(out[2] - out[3]).max() > 1e-3
    np.testing.assert_allclose(out[5], out[4], atol=1e-5)  # masked tokens are ignored


def test_second_time_input_and_forward_mode_gradients():
    x, t = _inputs(b=1)
    t2 = np.array([3.0], np.float32)
    dit = DiT(DiTConfig(**TINY, two_times=True))
    unet = UNet(
        UNetConfig(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), num_groups=4,
                   out_channels=1, dropout=0.0)
    )  # fmt: skip
    params = _live_params(dit, x, t, t2=t2)
    new = _live_params(unet, x, t, t2=t2)
    old = {k: v for k, v in new.items() if not k.startswith("temb2")}

    @jax.jit
    def outputs(params, new, old):
        f = lambda x, t, t2: dit.apply({"params": params}, x, t, t2=t2)
        # MeanFlow differentiates the network along (x, t) with jax.jvp. Row 1: another t2.
        xs, ts, t2s = jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.array([3.0, 8.0])
        jvp = jax.jvp(f, (xs, ts, t2s), (jnp.ones_like(xs), jnp.ones_like(ts), 0 * t2s))
        return jvp, unet.apply({"params": old}, x, t), unet.apply({"params": new}, x, t, t2=t2)

    (out, tangent), without, with_t2 = outputs(params, new, old)
    assert "temb2" in params
    assert np.abs(np.asarray(out[0] - out[1])).max() > 1e-3
    assert tangent.shape == out.shape and np.all(np.isfinite(np.asarray(tangent)))
    assert np.abs(np.asarray(tangent)).max() > 0
    with pytest.raises(ValueError, match="two_times"):
        jax.eval_shape(lambda: dit.apply({"params": params}, x, t))

    # The UNet: without t2 its parameters are today's (old checkpoints restore); t2 adds the
    # temb2_* layers, which then act.
    today = jax.eval_shape(lambda: unet.init(jax.random.PRNGKey(0), x, t)["params"])
    assert set(new) - set(today) == {"temb2_0", "temb2_1"}
    assert jax.tree.map(np.shape, today) == jax.tree.map(np.shape, old)
    assert np.abs(np.asarray(with_t2 - without)).max() > 1e-3


def _model_cfg(**dit):
    sizes = dict(dict(patch_size=2, width=16, depth=1, num_heads=2), **dit)
    return ml_collections.ConfigDict({"backbone": "dit", "dit": sizes})


def test_backbone_switch_and_bad_keys_are_user_errors():
    ddpm = load_config("configs/ddpm.py:preset=smoke")
    assert ddpm.model.backbone == "unet"
    assert isinstance(build_backbone(ddpm.model, 1, 0, 0, (28, 28)), UNet)
    assert describe_backbone(ddpm.model) == "UNet ch 8 x (1, 2), 1 res"
    dit = load_config("configs/ddpm.py:backbone=dit")
    assert describe_backbone(dit.model.to_dict()) == "DiT-S/2: width 384, depth 12, heads 6"
    net = build_backbone(_model_cfg(), 1, 10, 0, (8, 8))
    assert isinstance(net, DiT) and net.config.num_classes == 10
    with pytest.raises(UserError, match="model.dit.patch_size=3"):
        build_backbone(_model_cfg(patch_size=3), 1, 0, 0, (28, 28))
    with pytest.raises(UserError, match="model.dit.num_heads=3"):
        build_backbone(_model_cfg(num_heads=3), 1, 0, 0, (8, 8))
    with pytest.raises(UserError, match="model.dit.heads: unknown"):
        build_backbone(_model_cfg(heads=2), 1, 0, 0, (8, 8))
    with pytest.raises(UserError, match="model.dit.width='wide'"):
        build_backbone(_model_cfg(width="wide"), 1, 0, 0, (8, 8))
    with pytest.raises(UserError, match="model.backbone='vit'"):
        build_backbone(ml_collections.ConfigDict({"backbone": "vit"}), 1, 0, 0, (8, 8))
    with pytest.raises(UserError, match="backbone='vit'"):
        load_config("configs/ddpm.py:backbone=vit")


def test_dit_s2_has_the_papers_33m_parameters():
    # ImageNet 256x256: 32x32x4 VAE latents, 8 outputs (eps and the variance), 1000 classes.
    model = {"backbone": "dit", "dit": dict(patch_size=2, width=384, depth=12, num_heads=6)}
    n = count_backbone_params(model, (32, 32, 4), num_classes=1000, out_channels=8)
    assert 32.5e6 < n < 33.5e6  # 32,865,056


SMOKE = "configs/ddpm.py:preset=smoke,backbone=dit"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke-preset DiT run (4 steps, a sample grid, the evaluations), shared."""
    import jaxgen

    workdir = str(tmp_path_factory.mktemp("dit") / "run")
    config = load_config(SMOKE)
    del config.evals["likelihood"]  # the UNet's smoke run covers it; compiling it costs 2 s
    jaxgen.train(config, workdir)
    return workdir


def test_smoke_run_with_a_dit_trains_samples_and_evaluates(smoke_run):
    rows = [json.loads(line) for line in open(os.path.join(smoke_run, "metrics.jsonl"))]
    assert any("loss" in row and np.isfinite(row["loss"]) for row in rows)
    assert os.path.isfile(os.path.join(smoke_run, "samples", "step_4.png"))
    evals = json.load(open(os.path.join(smoke_run, "eval", "step_4.json")))
    assert evals["params"] == count_backbone_params(load_config(SMOKE).model, (28, 28, 1))


def test_saved_dit_run_restores_and_describes_itself(smoke_run):
    import jaxgen

    run = jaxgen.load(smoke_run)
    assert run.step == 4 and {"patch_embed", "block_0", "final"} <= set(run.state.params)
    saved = json.load(open(os.path.join(smoke_run, "config.json")))
    assert Diffusion.describe(saved).architecture == "DiT/4: width 16, depth 1, heads 2"


def test_wrong_patch_size_is_a_one_line_error(tmp_path, capfd):
    bad = run_cli(
        capfd,
        "--config=configs/ddpm.py:preset=smoke,backbone=dit",
        "--config.model.dit.patch_size=5",
        f"--workdir={tmp_path / 'bad'}",
    )
    assert bad.code == 2
    assert len(bad.lines) == 1 and "model.dit.patch_size=5" in bad.lines[0]
    assert not os.path.exists(tmp_path / "bad")


def test_diffusion_family_builds_the_dit():
    config = load_config("configs/ddpm.py:preset=smoke,backbone=dit,cond=class")
    method = Diffusion(config, DataSpec((8, 8, 1), 10, "class"))
    assert isinstance(method.net, DiT) and method.net.config.num_classes == 10
