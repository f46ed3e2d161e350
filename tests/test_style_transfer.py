"""Style transfer: losses, feature networks, weight files, the optimisation and the runner."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs.style_transfer import get_config
from jaxgen.errors import UserError
from jaxgen.models.vgg import VGG19, VGG19_LAYERS, RandomMultiScale
from jaxgen.style_transfer import color, inputs, losses, network, optimize, runner, weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# torchvision's vgg19().features: the conv layers sit at these indices (ReLU/pool between).
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
VGG19_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512)


def _tiny_config(**style):
    """The smoke config with a 16-filter random network; ``style`` overrides ``style.*``."""
    c = get_config("preset=smoke")
    for key, value in style.items():
        c.style[key] = value
    return c


def _synthetic_images():
    """A smooth content image and a striped, coloured style image, uint8 ``[H, W, 3]``."""
    yy, xx = np.mgrid[0:40, 0:48] / 48.0
    content = np.stack([xx, yy, 0.5 + 0.3 * np.sin(6 * xx * yy)], -1)
    style = np.stack([0.5 + 0.5 * np.sin(40 * xx), 0.2 + 0 * xx, 0.5 + 0.5 * np.cos(25 * yy)], -1)
    return (content * 255).astype(np.uint8), (style * 255).astype(np.uint8)


def _torchvision_state_dict(rng: np.random.RandomState) -> dict[str, np.ndarray]:
    state, c_in = {}, 3
    for index, width in zip(TORCHVISION_CONV_INDICES, VGG19_WIDTHS, strict=True):
        state[f"features.{index}.weight"] = rng.randn(width, c_in, 3, 3).astype(np.float32)
        state[f"features.{index}.bias"] = rng.randn(width).astype(np.float32)
        c_in = width
    state["classifier.6.bias"] = rng.randn(1000).astype(np.float32)  # the head: ignored
    return state


def _load_converter():
    spec = importlib.util.spec_from_file_location(
        "convert_vgg19", os.path.join(ROOT, "scripts", "convert_vgg19.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- losses -----------------------------------------------------------------------------------


def test_gram_matrix_matches_direct_computation():
    f = np.random.RandomState(0).randn(2, 3, 4, 5).astype(np.float32)
    direct = np.zeros((2, 5, 5))
    for b in range(2):
        for i in range(5):
            for j in range(5):
                direct[b, i, j] = (
                    sum(
                        float(f[b, y, x, i]) * float(f[b, y, x, j])
                        for y in range(3)
                        for x in range(4)
                    )
                    / 12.0
                )
    np.testing.assert_allclose(losses.gram_matrix(jnp.asarray(f)), direct, rtol=1e-5, atol=1e-6)


def test_content_style_tv_losses_known_values():
    a = {"l": jnp.zeros((1, 2, 2, 3))}
    b = {"l": jnp.full((1, 2, 2, 3), 2.0)}
    assert float(losses.content_loss(a, b, ("l",))) == pytest.approx(4.0)
    # Gram of all-ones features with C=3 is all ones; against zeros: 1/4 * mean(1) = 0.25.
    ones = {"l": jnp.ones((1, 2, 2, 3))}
    target = {"l": jnp.zeros((1, 3, 3))}
    assert float(losses.style_loss(ones, target, {"l": 2.0})) == pytest.approx(0.5)
    ramp = jnp.broadcast_to(jnp.arange(5.0) * 0.1, (1, 4, 5))[..., None]  # dx = 0.1, dy = 0
    assert float(losses.tv_loss(ramp)) == pytest.approx(0.01)


@pytest.mark.parametrize("which", ["random_multiscale", "vgg19"])
def test_style_loss_of_an_image_against_itself_is_zero(which):
    rng = np.random.RandomState(1)
    image = jnp.asarray(rng.rand(1, 32, 32, 3).astype(np.float32))
    other = jnp.asarray(rng.rand(1, 32, 32, 3).astype(np.float32))
    if which == "vgg19":
        module = VGG19(taps=("conv1_1", "conv2_1", "conv3_1"))
        layers = {"conv1_1": 0.5, "conv2_1": 0.3, "conv3_1": 0.2}
    else:
        module = RandomMultiScale(taps=("scale1", "scale2", "scale3"), scales=3, channels=16)
        layers = {"scale1": 0.5, "scale2": 0.3, "scale3": 0.2}
    params = module.init(jax.random.key(0), image)
    feats = module.apply(params, image)
    grams = {n: losses.gram_matrix(feats[n]) for n in layers}
    assert float(losses.style_loss(feats, grams, layers)) == 0.0
    assert float(losses.style_loss(module.apply(params, other), grams, layers)) > 0.0


# --- feature networks -------------------------------------------------------------------------


def test_vgg19_taps_shapes_and_pooling():
    image = jnp.zeros((1, 32, 32, 3))
    for pooling in ("max", "avg"):
        module = VGG19(taps=("conv1_2", "conv3_1", "conv5_4"), pooling=pooling)
        params = module.init(jax.random.key(0), image)
        assert sorted(params["params"]) == sorted(VGG19_LAYERS)
        shapes = {k: v.shape for k, v in module.apply(params, image).items()}
        assert shapes == {
            "conv1_2": (1, 32, 32, 64),
            "conv3_1": (1, 8, 8, 256),
            "conv5_4": (1, 2, 2, 512),
        }
    shallow = VGG19(taps=("conv2_1",)).init(jax.random.key(0), image)
    assert sorted(shallow["params"]) == ["conv1_1", "conv1_2", "conv2_1"]  # stops early


def test_random_network_is_deterministic_and_multiscale():
    image = jnp.asarray(np.random.RandomState(0).rand(1, 32, 24, 3).astype(np.float32))
    module = RandomMultiScale(
        taps=("color", "scale1", "scale3"), scales=3, channels=8, kernel_size=3
    )
    p1 = module.init(jax.random.key(5), image)
    p2 = module.init(jax.random.key(5), image)
    out = module.apply(p1, image)
    assert {k: v.shape for k, v in out.items()} == {
        "color": (1, 32, 24, 8),
        "scale1": (1, 32, 24, 8),
        "scale3": (1, 8, 6, 8),
    }
    # band-pass levels (zero-mean filters, zero bias): a flat image gives no response
    flat = module.apply(p1, jnp.full((1, 32, 24, 3), 0.3))["scale1"]
    np.testing.assert_allclose(flat, np.zeros(flat.shape), atol=1e-5)
    chex_equal = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), p1, p2)
    assert all(jax.tree.leaves(chex_equal))


def test_auto_network_falls_back_to_random_and_says_so(caplog):
    c = get_config("preset=smoke")
    with caplog.at_level("WARNING"):
        net = network.build_network(c.model)
    assert net.name == "random_multiscale"
    assert "random multi-scale" in caplog.text and "no VGG19 weights" in caplog.text
    assert net.metadata["feature_network"] == "random_multiscale"
    assert sum(net.style_weights.values()) == pytest.approx(1.0)


def test_bad_network_settings_are_user_errors():
    c = get_config("preset=smoke")
    c.model.random.style_layers = "scale1,conv4_2"
    with pytest.raises(UserError, match="model.random.style_layers"):
        network.build_network(c.model)
    c = get_config("preset=smoke")
    c.model.network = "vgg19"
    with pytest.raises(UserError, match="model.vgg19.weights"):
        network.build_network(c.model)
    c = get_config("preset=smoke")
    c.model.random.style_layer_weights = "1,2"
    with pytest.raises(UserError, match="4 non-negative numbers"):
        network.build_network(c.model)


# --- weight files -----------------------------------------------------------------------------


def test_converter_maps_torchvision_layout_exactly():
    state = _torchvision_state_dict(np.random.RandomState(0))
    export = _load_converter().convert(state)
    assert set(export) == {f"{n}/{p}" for n in VGG19_LAYERS for p in ("kernel", "bias")}
    for name, index in zip(VGG19_LAYERS, TORCHVISION_CONV_INDICES, strict=True):
        w = state[f"features.{index}.weight"]
        kernel = export[f"{name}/kernel"]
        assert kernel.shape == (3, 3, w.shape[1], w.shape[0])
        for o, i, dy, dx in [(0, 0, 0, 0), (w.shape[0] - 1, w.shape[1] - 1, 2, 1), (3, 1, 1, 2)]:
            assert kernel[dy, dx, i, o] == w[o, i, dy, dx]
        np.testing.assert_array_equal(kernel, w.transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(export[f"{name}/bias"], state[f"features.{index}.bias"])


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_exported_weights_compute_torch_convolution(tmp_path, suffix):
    """conv1_1 of the loaded export equals torch's conv on the torch-layout weights."""
    state = _torchvision_state_dict(np.random.RandomState(1))
    path = str(tmp_path / f"vgg19{suffix}")
    weights.write_export(path, weights.torchvision_to_export(state))
    params = weights.load_vgg19(path)
    image = np.random.RandomState(2).rand(1, 8, 8, 3).astype(np.float32)
    out = VGG19(taps=("conv1_1",)).apply({"params": params}, jnp.asarray(image))["conv1_1"]
    x = (image[0] - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    w, b = state["features.0.weight"], state["features.0.bias"]
    y, xx = 4, 5  # an interior pixel: out[o] = b[o] + sum W[o, i, dy, dx] x[y+dy-1, x+dx-1, i]
    patch = x[y - 1 : y + 2, xx - 1 : xx + 2, :]  # [3, 3, C_in]
    expected = np.maximum(b + np.einsum("oiyx,yxi->o", w, patch), 0.0)
    np.testing.assert_allclose(np.asarray(out[0, y, xx]), expected, rtol=1e-4, atol=1e-4)


def test_torchvision_layout_loads_directly_from_safetensors(tmp_path):
    state = _torchvision_state_dict(np.random.RandomState(3))
    path = str(tmp_path / "vgg19_torchvision.safetensors")
    weights.write_safetensors(path, state)
    params = weights.load_vgg19(path)
    np.testing.assert_array_equal(
        params["conv5_4"]["kernel"], state["features.34.weight"].transpose(2, 3, 1, 0)
    )


def _bad_weight_files(tmp_path):
    good = weights.torchvision_to_export(_torchvision_state_dict(np.random.RandomState(4)))
    missing = dict(good)
    del missing["conv3_2/kernel"]
    wrong_shape = dict(good)
    wrong_shape["conv1_1/kernel"] = np.zeros((3, 3, 3, 32), np.float32)
    unexpected = dict(good, **{"conv6_1/kernel": np.zeros((3, 3, 512, 512), np.float32)})
    torch_missing = _torchvision_state_dict(np.random.RandomState(5))
    del torch_missing["features.34.bias"]
    torch_shape = _torchvision_state_dict(np.random.RandomState(6))
    torch_shape["features.5.weight"] = np.zeros((128, 64, 5, 5), np.float32)
    cases = {}
    for name, arrays, pattern in [
        ("missing.npz", missing, "missing entry 'conv3_2/kernel'"),
        (
            "shape.npz",
            wrong_shape,
            r"conv1_1/kernel: shape \(3, 3, 3, 32\), expected \(3, 3, 3, 64",
        ),
        ("unexpected.safetensors", unexpected, "unexpected entry 'conv6_1/kernel'"),
        ("torch_missing.npz", torch_missing, r"missing entry 'features.34.bias' \(conv5_4\)"),
        ("torch_shape.npz", torch_shape, "features.5.weight: shape"),
    ]:
        path = str(tmp_path / name)
        if name.endswith(".npz"):
            np.savez(path, **arrays)
        else:
            weights.write_safetensors(path, arrays)
        cases[path] = pattern
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    cases[str(corrupt)] = "unreadable"
    cases[str(tmp_path / "absent.npz")] = "does not exist"
    cases[str(tmp_path / "vgg19.pth")] = "expected a name ending in"
    return cases


def test_bad_weight_files_are_one_line_user_errors(tmp_path):
    for path, pattern in _bad_weight_files(tmp_path).items():
        with pytest.raises(UserError, match=pattern) as info:
            weights.load_vgg19(path)
        assert "\n" not in str(info.value), path


def test_bad_weight_file_stops_the_run_before_writing(tmp_path):
    path = next(p for p in _bad_weight_files(tmp_path) if p.endswith("missing.npz"))
    c = get_config(f"preset=smoke,weights={path}")
    workdir = tmp_path / "run"
    with pytest.raises(UserError, match="conv3_2"):
        runner.run(c, str(workdir), "train")
    assert not workdir.exists()


# --- optimisation -----------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_every_loss_decreases_over_the_optimisation(optimizer):
    content, style = _synthetic_images()
    net = network.build_network(get_config("preset=smoke").model)
    net = dataclasses.replace(net, content_weight=1.0, style_weight=1.0, tv_weight=1.0)
    settings = optimize.Settings(
        size=32, num_scales=1, num_steps=25, init="noise", optimizer=optimizer,
        learning_rate=0.03, log_every=1,
    )  # fmt: skip
    logs = []
    result = optimize.stylize(content, style, net, settings, on_log=lambda s, t, _: logs.append(t))
    assert len(logs) == 26 and result.image.shape == (27, 32, 3)  # step 0 (the noise) ... 25
    first, last = logs[0], logs[-1]
    for key in optimize.TERMS:  # from white noise, every term falls at least by half
        assert last[key] < 0.5 * first[key], (key, first[key], last[key])
    losses_seen = [t["loss"] for t in logs]
    if optimizer == "lbfgs":  # the line search only accepts decreasing steps
        assert all(
            b <= a * (1 + 1e-5) for a, b in zip(losses_seen[:-1], losses_seen[1:], strict=True)
        )


def test_coarse_to_fine_schedule():
    settings = optimize.Settings(size=48, num_scales=3, num_steps=8)
    assert settings.scale_steps() == [2, 2, 4]
    assert [optimize.scale_shape((40, 48), k) for k in (2, 1, 0)] == [(10, 12), (20, 24), (40, 48)]


def test_luminance_only_transfer_keeps_the_content_colours():
    rgb = np.random.RandomState(0).rand(5, 7, 3).astype(np.float32)
    np.testing.assert_allclose(color.yiq_to_rgb(color.rgb_to_yiq(rgb)), rgb, atol=1e-5)
    content, style = _synthetic_images()
    net = network.build_network(get_config("preset=smoke").model)
    settings = optimize.Settings(size=32, num_scales=1, num_steps=3, keep_colors=True)
    result = optimize.stylize(content, style, net, settings)
    content_rgb = inputs.resize(content, result.image.shape[:2])
    iq_out = np.asarray(color.rgb_to_yiq(result.image))[..., 1:]
    iq_content = np.asarray(color.rgb_to_yiq(content_rgb))[..., 1:]
    unclipped = np.all((result.image > 0.01) & (result.image < 0.99), axis=-1)
    assert unclipped.mean() > 0.5
    np.testing.assert_allclose(iq_out[unclipped], iq_content[unclipped], atol=1e-4)


def test_too_small_images_are_user_errors():
    content, style = _synthetic_images()
    net = network.build_network(get_config("preset=smoke").model)
    settings = optimize.Settings(size=32, num_scales=3, num_steps=6)
    with pytest.raises(UserError, match="data.image_size"):
        optimize.stylize(content, style, net, settings)


# --- config and runner ------------------------------------------------------------------------


def test_config_has_shared_keys_and_rejects_bad_arguments():
    c = get_config()
    for key in ("seed", "init_from", "data.name", "data.image_size", "train.num_steps",
                "train.batch_size", "train.log_every", "optimizer.learning_rate",
                "sample.num", "style.content", "style.style", "model.vgg19.weights"):  # fmt: skip
        node = c
        for part in key.split("."):
            node = node[part]
    assert c.family == "style_transfer" and c.model.network == "auto"
    assert get_config("preset=cpu").data.image_size == 256
    with pytest.raises(UserError, match="colour"):
        get_config("colour=red")
    with pytest.raises(UserError, match="preset"):
        get_config("preset=huge")


def test_runner_same_seed_same_image(tmp_path):
    c = get_config("preset=smoke")
    c.train.num_steps = 2
    for name in ("a", "b"):
        runner.run(c, str(tmp_path / name), "train")
    a = np.asarray(Image.open(tmp_path / "a" / "stylized.png"))
    b = np.asarray(Image.open(tmp_path / "b" / "stylized.png"))
    np.testing.assert_array_equal(a, b)


def test_runner_bad_image_is_user_error_and_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    c = get_config(f"preset=smoke,content={tmp_path / 'nope.jpg'}")
    with pytest.raises(UserError, match="style.content"):
        runner.run(c, str(workdir), "train")
    c = get_config("preset=smoke,style=skimage:lena")
    with pytest.raises(UserError, match="style.style"):
        runner.run(c, str(workdir), "train")
    assert not workdir.exists()


# --- through the launcher ---------------------------------------------------------------------

SMOKE = "--config=configs/style_transfer.py:preset=smoke"


def test_launch_smoke_end_to_end(tmp_path, capfd):
    """A launched run writes the image, its metadata, the loss curve, samples and TensorBoard
    files; the runner evaluates the saved image; bad input is a one-line error that changes
    nothing."""
    from tests.conftest import launch, run_cli, tree_digest

    workdir = str(tmp_path / "run")
    result = launch(SMOKE, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "random multi-scale filters" in result.stderr  # the fallback is logged
    image = np.asarray(Image.open(os.path.join(workdir, "stylized.png")))
    assert image.shape == (21, 32, 3) and image.dtype == np.uint8  # chelsea is 300 x 451
    meta = json.load(open(os.path.join(workdir, "stylized.json")))
    assert meta["feature_network"] == "random_multiscale" and "no VGG19 weights" in meta["why"]
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    # log_every=2, plus step 0 and each scale's end; 3 steps at 10x16, then 3 at 21x32
    assert [(r["step"], r["height"], r["width"]) for r in rows] == [
        (0, 10, 16), (2, 10, 16), (3, 10, 16), (4, 21, 32), (6, 21, 32)
    ]  # fmt: skip
    for row in rows:
        assert {"content_loss", "style_loss", "tv_loss", "loss"} <= set(row)
        assert ("steps_per_sec" in row) == (row["step"] > 0)
        assert all(np.isfinite(row[k]) for k in ("content_loss", "style_loss", "tv_loss"))
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["step_3.png", "step_6.png"]
    assert json.load(open(os.path.join(workdir, "config.json")))["family"] == "style_transfer"
    assert os.listdir(os.path.join(workdir, "tb"))

    c = get_config("preset=smoke")
    terms = runner.run(c, workdir, "eval")  # the losses of the saved (8-bit) image
    saved = json.load(open(os.path.join(workdir, "eval", "step_6.json")))
    assert saved == pytest.approx(terms)
    assert terms["style_loss"] == pytest.approx(rows[-1]["style_loss"], rel=0.2)

    before = tree_digest(workdir)
    for args, expected in [
        (["--mode=sample"], "--mode=sample does not apply"),
        (["--config.style.init=mean"], "style.init='mean'"),
        (["--config.model.vgg19.weights=/nonexistent/vgg19.npz"], "does not exist"),
    ]:
        bad = run_cli(capfd, SMOKE, f"--workdir={workdir}", *args)
        assert bad.code == 2 and len(bad.lines) == 1 and expected in bad.lines[0], bad.stderr
    assert tree_digest(workdir) == before
