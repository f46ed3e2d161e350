"""PixelCNN family: exact causality, receptive fields, likelihood heads, method and launcher."""

from __future__ import annotations

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.data.spec import DataSpec
from jaxgen.methods.pixelcnn import PixelCNN, build_model
from jaxgen.pixelcnn import categorical, logistic_mixture
from tests.conftest import launch, load_config

H = W = 8


def tiny_model_config(
    variant: str, layers: int = 3, cond: str = "none", vertical_rows: int = 2,
    vertical_cols: int = 3,
):  # fmt: skip
    config = load_config(f"configs/pixelcnn.py:preset=smoke,variant={variant},cond={cond}")
    m = config.model
    m.features, m.output_features, m.num_layers, m.kernel_size = 12, 12, layers, 5
    m.vertical_rows, m.vertical_cols = vertical_rows, vertical_cols
    m.num_resnet, m.num_levels, m.num_mixtures, m.dropout = 1, 2, 2, 0.0
    return config


def tiny(
    variant: str, channels: int = 3, layers: int = 3, num_classes: int = 0, cond: str = "",
    vertical_rows: int = 2, vertical_cols: int = 3,
):  # fmt: skip
    """(method, params) of a tiny network on ``8 x 8 x channels`` images.

    ``cond``: none | class | text (default: class when ``num_classes``, else none); text
    uses the smoke preset's tiny jointly trained Transformer encoder. ``vertical_rows``,
    ``vertical_cols``: the Gated PixelCNN's later vertical windows.
    """
    cond = cond or ("class" if num_classes else "none")
    config = tiny_model_config(variant, layers, cond, vertical_rows, vertical_cols)
    method = PixelCNN(config, DataSpec((H, W, channels), num_classes, cond))
    batch = {
        "image": jnp.zeros((1, H, W, channels), jnp.uint8),
        "label": jnp.zeros((1,), jnp.int32),
    }
    params = jax.jit(method.init_params)(jax.random.PRNGKey(0), batch)  # one compile
    return method, params


def jacobian(model, params, context=None) -> np.ndarray:
    """``|d params(pixel p, channel c) / d x[row, col, c2]|`` as ``[H * W, C, H, W, C]``.

    The parameters of each conditional (logits, or mixture weights, coupled means
    and scales) are projected on a fixed random vector; an entry is non-zero iff the
    distribution of channel ``c`` at raster pixel ``p`` depends on that input.
    ``context``: a conditioning vector ``[1, D]`` (e.g. a pooled text embedding).
    """
    channels = model.image_shape[2]
    x0 = jax.random.uniform(jax.random.PRNGKey(1), (1, H, W, channels), minval=-1, maxval=1)
    probe = jax.random.normal(jax.random.PRNGKey(2), (channels, 1024))

    def at(pixel):
        def f(x):
            out = model.net.apply({"params": params}, x, context=context)
            p = model.channel_params(out, x)[0].reshape(H * W, channels, -1)
            p = jax.lax.dynamic_index_in_dim(p, pixel, 0, keepdims=False)  # [C, Q]
            return jnp.sum(p * probe[:, : p.shape[-1]], axis=-1)

        return jax.jacrev(f)(x0)[:, 0]

    return np.abs(np.asarray(jax.jit(jax.vmap(at))(jnp.arange(H * W))))


def raster_channel_order(channels: int) -> np.ndarray:
    """Position of (pixel, channel) in the generation order, ``[H * W, C]``."""
    return np.arange(H * W)[:, None] * channels + np.arange(channels)


@pytest.mark.parametrize(
    "variant", ["pixelcnn", "gated", "gated_tall", "gated_wide", "pixelcnn_pp"]
)
def test_output_never_depends_on_current_or_later_inputs(variant):
    rows = {"gated_tall": 4, "gated_wide": 3}.get(variant, 2)
    cols = 5 if variant == "gated_wide" else 3
    name = variant.removesuffix("_tall").removesuffix("_wide")
    method, params = tiny(name, channels=3, vertical_rows=rows, vertical_cols=cols)
    jac = jacobian(method.model, params)
    order = raster_channel_order(3)
    later = order.reshape(H, W, 3)[None, None] >= order[:, :, None, None, None]
    assert float(np.max(jac * later)) == 0.0  # exactly: not a single path
    # ... while the conditionals do use earlier inputs (a ReLU unit may be off at this x),
    uses_past = (np.sum(jac * ~later, axis=(2, 3, 4)) > 0).ravel()
    assert np.mean(uses_past[1:]) > 0.9 and not uses_past[0]
    # ... including the earlier channels of its own pixel (G on R, B on R and G).
    own = jac.reshape(H * W, 3, H * W, 3)[np.arange(H * W), :, np.arange(H * W)]  # [HW, C, C]
    for channel, earlier in [(1, 0), (2, 0), (2, 1)]:
        assert np.mean(own[:, channel, earlier] > 0) > 0.75


def earlier_pixels_unseen(
    variant: str, pixel: tuple[int, int], layers: int, vertical_rows: int = 2,
    vertical_cols: int = 3,
) -> set:  # fmt: skip
    """The pixels before ``pixel`` in raster order that its distribution ignores."""
    method, params = tiny(variant, channels=1, layers=layers, vertical_rows=vertical_rows,
                          vertical_cols=vertical_cols)  # fmt: skip
    jac = jacobian(method.model, params)[pixel[0] * W + pixel[1], 0, :, :, 0]
    return {(r, c) for r in range(H) for c in range(W) if (r, c) < pixel and jac[r, c] == 0}


def test_gated_pixelcnn_has_no_blind_spot():
    # 5x5 first layer then 2x3 / 1x2 windows: 6 layers reach 8 rows up and 8 columns across.
    assert earlier_pixels_unseen("gated", (H - 1, W - 1), layers=6) == set()
    assert earlier_pixels_unseen("gated", (4, 2), layers=6) == set()


@pytest.mark.parametrize("vertical_rows,reach", [(2, 4), (3, 6)])
def test_taller_vertical_windows_reach_further_up(vertical_rows, reach):
    # 5x5 first layer: rows r-2..r-1; each of the 2 later layers adds vertical_rows - 1.
    unseen = earlier_pixels_unseen("gated", (7, 3), layers=3, vertical_rows=vertical_rows)
    unseen_rows = {r for r in range(7) if all((r, c) in unseen for c in range(W))}
    assert unseen_rows == set(range(7 - reach))


@pytest.mark.parametrize("vertical_cols,reach", [(3, 4), (5, 6)])
def test_wider_vertical_windows_reach_further_to_the_side(vertical_cols, reach):
    # The row above the left-most pixel: the 5x5 first layer reads columns 0..2, each of the
    # 2 later layers adds (vertical_cols - 1) / 2 to the right.
    unseen = earlier_pixels_unseen("gated", (7, 0), layers=3, vertical_cols=vertical_cols)
    assert {c for c in range(W) if (6, c) in unseen} == set(range(reach + 1, W))


def test_vertical_rows_below_two_is_a_user_error():
    from jaxgen.errors import UserError

    config = tiny_model_config("gated", vertical_rows=1)
    with pytest.raises(UserError, match="model.vertical_rows=1"):
        build_model(config.model, DataSpec((H, W, 1), 0, "none"), 0)
    for cols in (2, 1):
        config = tiny_model_config("gated", vertical_cols=cols)
        with pytest.raises(UserError, match=f"model.vertical_cols={cols}"):
            build_model(config.model, DataSpec((H, W, 1), 0, "none"), 0)


def test_pixelcnn_has_a_blind_spot_above_right():
    # Masked 3x3 convolutions grow one column to the right per row up, so however deep the
    # stack, the row above is seen up to column c + k//2 = c + 2 (5x5 mask A) and no further.
    unseen = earlier_pixels_unseen("pixelcnn", (4, 2), layers=6)
    assert {(3, 5), (3, 6), (3, 7)} <= unseen
    assert unseen <= {(r, c) for r in range(4) for c in range(5, W)}


def total_mass(out: jax.Array, channels: int, m: int) -> float:
    """Sum of the probabilities of all ``256 ** channels`` colours of one pixel."""
    grid = jnp.arange(256, dtype=jnp.int32)
    if channels == 1:
        outs = jnp.broadcast_to(out, (256, 1, 1, out.shape[-1]))
        return float(
            jnp.sum(jnp.exp(logistic_mixture.log_prob(outs, grid.reshape(256, 1, 1, 1), m)))
        )
    green_blue = jnp.stack(jnp.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 1, 2)
    outs = jnp.broadcast_to(out, (green_blue.shape[0], 1, 1, out.shape[-1]))

    def mass(red):  # all green and blue values for one red value
        images = jnp.concatenate([jnp.full_like(green_blue[..., :1], red), green_blue], -1)
        return jnp.sum(jnp.exp(logistic_mixture.log_prob(outs, images, m)))

    return float(jnp.sum(jax.lax.map(mass, grid)))


def test_logistic_mixture_sums_to_one_over_256_values():
    for channels, m in ((1, 3), (3, 2)):
        out = 2.0 * jax.random.normal(
            jax.random.PRNGKey(channels), (1, 1, 1, logistic_mixture.num_outputs(channels, m))
        )
        out = out.at[..., m : m + channels * m].multiply(0.5)  # means mostly inside [-1, 1]
        np.testing.assert_allclose(total_mass(out, channels, m), 1.0, atol=2e-4)


def test_logistic_bins_match_the_cdf_and_extreme_scales_stay_finite():
    values = jnp.arange(256)
    for mean, log_scale in [(0.3, -2.0), (-0.9, -7.0), (0.0, 4.0)]:
        logp = logistic_mixture.log_bin_prob(values, mean, log_scale)
        edges = (jnp.arange(257) - 0.5) / 127.5 - 1.0
        cdf = jax.nn.sigmoid((edges - mean) / math.exp(log_scale)).at[0].set(0.0).at[-1].set(1.0)
        assert bool(jnp.all(jnp.isfinite(logp)))
        np.testing.assert_allclose(np.exp(logp), np.diff(cdf), atol=1e-6)


def test_categorical_uniform_is_eight_bits_and_sampling_follows_logits():
    images = jax.random.randint(jax.random.PRNGKey(0), (2, 4, 4, 3), 0, 256)
    logp = categorical.log_prob(jnp.zeros((2, 4, 4, 256 * 3)), images)
    np.testing.assert_allclose(-logp / math.log(2.0), 8.0, rtol=1e-6)
    # logits favour value 7 for R, 200 for G, 42 for B (interleaved layout k % C)
    out = jnp.full((1, 256, 3), -1e9).at[0, 7, 0].set(0).at[0, 200, 1].set(0).at[0, 42, 2].set(0)
    out = out.reshape(1, 768)
    draws = [int(categorical.sample_channel(out, c, 3, jax.random.PRNGKey(c))[0]) for c in range(3)]
    assert draws == [7, 200, 42]


@pytest.mark.parametrize("variant", ["pixelcnn", "gated"])
def test_uniform_model_scores_eight_bits_per_dim(variant):
    method, params = tiny(variant, channels=1)
    zero = jax.tree.map(jnp.zeros_like, params)  # every logit is 0: uniform over 256 values
    batch = {
        "image": jax.random.randint(jax.random.PRNGKey(3), (4, H, W, 1), 0, 256).astype(jnp.uint8)
    }
    result = jax.jit(method.likelihood)(zero, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(result["bits_per_dim"]), 8.0, rtol=1e-6)
    loss, metrics = method.loss(zero, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(loss), math.log(256.0), rtol=1e-6)  # nats per dimension
    np.testing.assert_allclose(float(metrics["bits_per_dim"]), 8.0, rtol=1e-6)


def test_class_label_changes_the_likelihood():
    method, params = tiny("gated", channels=1, num_classes=10)
    images = jax.random.randint(jax.random.PRNGKey(3), (2, H, W, 1), 0, 256).astype(jnp.uint8)
    likelihood = jax.jit(method.likelihood)
    bpd = [
        likelihood(params, {"image": images, "label": jnp.full((2,), k)}, None)["bits_per_dim"]
        for k in (0, 1)
    ]
    assert not np.allclose(bpd[0], bpd[1])


def test_bad_variant_is_a_user_error():
    from jaxgen.errors import UserError

    config = tiny_model_config("pixelcnn")
    config.model.variant = "pixelrnn"
    with pytest.raises(UserError, match="model.variant"):
        build_model(config.model, DataSpec((H, W, 1), 0), 0)
    config = tiny_model_config("gated")
    config.model.scan_blocks = True  # nothing to scan: an error, not silently ignored
    with pytest.raises(UserError, match="model.scan_blocks"):
        build_model(config.model, DataSpec((H, W, 1), 0), 0)


def test_smoke_run_trains_samples_and_evaluates(tmp_path):
    workdir = str(tmp_path / "run")
    result = launch("--config=configs/pixelcnn.py:preset=smoke", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert any("bits_per_dim" in line for line in lines)
    assert os.path.exists(os.path.join(workdir, "samples", "step_4.png"))
    evals = json.load(open(os.path.join(workdir, "eval", "step_4.json")))
    assert 0.0 < evals["bits_per_dim"] < 9.0


def test_scanned_pixelcnn_pp_is_the_unrolled_network():
    """``scan_blocks``: the same function and gradients, given the same (stacked) weights."""
    from jaxgen.models.pixelcnn_pp import PixelCNNPPNet, stack_resnet_params

    shape = dict(num_outputs=10, features=8, num_resnet=3, num_levels=2, dropout=0.0)
    unrolled, scanned = PixelCNNPPNet(**shape), PixelCNNPPNet(**shape, scan_blocks=True)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, H, W, 1), minval=-1, maxval=1)
    shapes = jax.eval_shape(unrolled.init, jax.random.PRNGKey(1), x)["params"]
    rng = np.random.default_rng(0)  # fan-in scaled weights, small random biases
    params = jax.tree.map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]) or 100)),
        shapes,
    )
    stacked = stack_resnet_params(params, num_resnet=3, num_levels=2)
    own = jax.eval_shape(scanned.init, jax.random.PRNGKey(1), x)["params"]
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, own)

    @functools.partial(jax.jit, static_argnums=0)
    def outputs_and_grads(net, p):
        def loss(p):
            out = net.apply({"params": p}, x)
            return jnp.sum(jnp.sin(out)), out

        return jax.grad(loss, has_aux=True)(p)[::-1]

    want_out, want = outputs_and_grads(unrolled, params)
    got_out, got = outputs_and_grads(scanned, stacked)
    np.testing.assert_allclose(got_out, want_out, atol=1e-5)
    want = stack_resnet_params(want, num_resnet=3, num_levels=2)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)
