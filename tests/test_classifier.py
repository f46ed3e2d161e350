"""The domain classifier: model, method, config presets, export and the committed weights."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.evaluate import features
from jaxgen.methods.classifier import Classifier
from jaxgen.models.classifier import ClassifierNet
from tests.conftest import launch, load_config

COMMITTED = os.path.join(features.WEIGHTS_DIR, "fashion_mnist_classifier.npz")


@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 3), (5, 7, 1)])
def test_net_shapes_for_any_image_size(shape):
    net = ClassifierNet(num_classes=4, channels=(4, 8), feature_dim=6)
    x = jnp.zeros((3, *shape))
    params = net.init(jax.random.key(0), x)
    feats, logits = net.apply(params, x, return_features=True)
    assert feats.shape == (3, 6) and logits.shape == (3, 4)
    np.testing.assert_allclose(net.apply(params, x), logits)


def _toy_batch(n=64):
    """Class c: rows 7c..7c+6 bright; trivially separable."""
    labels = np.arange(n) % 4
    images = np.zeros((n, 28, 28, 1), np.uint8)
    for i, c in enumerate(labels):
        images[i, 7 * c : 7 * c + 7] = 255
    return {"image": jnp.asarray(images), "label": jnp.asarray(labels, jnp.int32)}


def test_method_learns_a_separable_problem():
    config = load_config("configs/classifier.py:preset=smoke")
    method = Classifier(config, DataSpec((28, 28, 1), 4))
    batch = _toy_batch()
    tx = optax.adam(1e-2)
    state = method.init_state(jax.random.key(0), batch, tx)
    step = jax.jit(lambda s, b: method.train_step(s, b, tx, ema_decay=0.0))
    first_loss = None
    for _ in range(40):
        state, metrics = step(state, batch)
        first_loss = first_loss or float(metrics["loss"])
    assert float(metrics["loss"]) < 0.1 * first_loss
    assert float(metrics["accuracy"]) >= 0.9  # measured with dropout
    predicted = method.logits(state.params, batch["image"]).argmax(-1)
    np.testing.assert_array_equal(predicted, batch["label"])
    # Initial loss of a 4-way classifier is about log 4.
    assert first_loss == pytest.approx(np.log(4), rel=0.3)


def test_method_cannot_sample_and_has_no_likelihood():
    config = load_config("configs/classifier.py:preset=smoke")
    method = Classifier(config, DataSpec((28, 28, 1), 10))
    with pytest.raises(UserError, match="cannot sample"):
        method.sample({}, jax.random.key(0), 4)
    assert method.likelihood({}, _toy_batch(4), jax.random.key(0)) is None
    with pytest.raises(UserError, match="needs labelled data"):
        Classifier(config, DataSpec((28, 28, 1), 0))
    config.model.dropout = 1.5
    with pytest.raises(UserError, match="model.dropout"):
        Classifier(config, DataSpec((28, 28, 1), 10))


def test_config_presets():
    for preset in ("smoke", "cpu", "full"):
        c = load_config(f"configs/classifier.py:preset={preset}")
        assert c.family == "classifier" and c.train.sample_every == 0
    assert load_config("configs/classifier.py:preset=cpu").train.num_steps <= 3000
    assert load_config("configs/classifier.py:data=digits").data.image_size == 8
    with pytest.raises(UserError, match="unknown config argument"):
        load_config("configs/classifier.py:colour=red")


def test_train_export_and_use_as_extractor(tmp_path):
    workdir = str(tmp_path / "run")
    run = launch("--config=configs/classifier.py:preset=smoke", f"--workdir={workdir}")
    assert run.returncode == 0, run.stderr[-2000:]
    out = launch(
        "--config=configs/classifier.py:preset=smoke", f"--workdir={workdir}", "--mode=sample"
    )
    assert out.returncode == 2 and "cannot sample" in out.stderr
    assert len(out.stderr.strip().splitlines()[-1]) < 300

    from scripts.export_classifier import export

    path = str(tmp_path / "clf.npz")
    meta = export(workdir, path)
    assert 0.0 <= meta["test_accuracy"] <= 1.0 and meta["num_test"] == 10_000
    params, saved = features.load_classifier(path)
    assert saved["image_shape"] == [28, 28, 1] and saved["num_classes"] == 10
    extractor = features.get_extractor({"features": "domain", "classifier_weights": path}, "x")
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1)).astype(np.uint8)
    got = extractor(images)
    net = ClassifierNet(10, tuple(saved["channels"]), saved["feature_dim"])
    feats, logits = net.apply({"params": params}, images / 255.0, return_features=True)
    np.testing.assert_allclose(got["features"], feats, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=1e-5)
    # Another size is resized to the classifier's input; another channel count is an error.
    small = images[:, ::2, ::2]
    np.testing.assert_array_equal(
        extractor(small)["logits"], extractor(features.fit_to(small, (28, 28, 1)))["logits"]
    )
    assert features.fit_to(small, (28, 28, 1)).shape == (5, 28, 28, 1)
    with pytest.raises(UserError, match="expects images of shape"):
        extractor(np.zeros((2, 28, 28, 3), np.uint8))


def test_bad_classifier_file_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(UserError, match="cannot read classifier weights"):
        features.load_classifier(str(bad))


@pytest.mark.skipif(not os.path.isfile(COMMITTED), reason="no committed classifier weights")
def test_committed_fashion_mnist_classifier_is_accurate():
    _, meta = features.load_classifier(COMMITTED)
    assert meta["data"] == "fashion_mnist" and meta["num_test"] == 10_000
    assert meta["test_accuracy"] >= 0.92
    try:
        from jaxgen.data.sources import fashion_mnist

        test = fashion_mnist("test")
    except UserError:
        pytest.skip("Fashion-MNIST is not installed")
    extractor = features.get_extractor({"features": "domain"}, "fashion_mnist")
    assert extractor.weights == os.path.abspath(COMMITTED)
    logits = extractor(test.images[:2000])["logits"]
    assert (logits.argmax(-1) == test.labels[:2000]).mean() >= 0.9
