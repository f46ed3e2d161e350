"""A PixelCNN conditioned on k-means clusters of its training pixels (``model.clusters``), and
the fit of a fresh run's centroids to the training images (PixelCNN and GAN)."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import clusters
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.pixelcnn import PixelCNN
from tests.test_pixelcnn import H, W, tiny_model_config

K = 3


def _method(k: int = K, cond: str = "none", batch_size: int = 8) -> PixelCNN:
    config = tiny_model_config("gated", cond=cond)
    config.model.clusters, config.train.batch_size = k, batch_size
    return PixelCNN(config, DataSpec((H, W, 1), 4 if cond == "class" else 0, cond))


def _images(n: int, seed: int = 0, kind=None) -> jnp.ndarray:
    """``n`` uint8 images of three kinds (dark, bright, left half bright), unevenly many, or
    of the kinds ``kind`` (``[n]``)."""
    if kind is None:
        kind = np.random.default_rng(seed).choice(3, size=n, p=[0.6, 0.3, 0.1])
    kind = np.asarray(kind)
    images = np.zeros((n, H, W, 1), np.uint8)
    images[kind == 1] = 230
    images[kind == 2, :, : W // 2] = 230
    noise = np.random.default_rng(seed + 1).integers(0, 20, images.shape)
    return jnp.asarray(images + noise.astype(np.uint8))


def test_clusters_for_labelled_data_are_refused():
    expected = "model.clusters=3: for data without labels or text (cond=none)"
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        _method(3, "class")


def test_the_fit_takes_at_most_its_cap_and_refuses_more_clusters_than_images():
    assert clusters.fit_count((28, 28, 1), 60_000, 10, "model.clusters") == clusters.FIT_EXAMPLES
    assert clusters.fit_count((28, 28, 1), 500, 10, "model.clusters") == 500
    # 1024 x 1024 RGB: as many float32 images as fit in FIT_BYTES
    assert clusters.fit_count((1024, 1024, 3), 60_000, 10, "gan.clusters") == 85
    with pytest.raises(UserError, match="model.clusters=9: more clusters than the 5 training"):
        clusters.fit_count((8, 8, 1), 5, 9, "model.clusters")


def test_training_labels_each_batch_by_its_nearest_centroid_and_moves_them():
    import optax

    method = _method()
    tx = optax.adam(1e-3)
    state = method.init_state(jax.random.PRNGKey(0), {"image": _images(8)}, tx)
    step = jax.jit(lambda s, b: method.train_step(s, b, tx, 0.9))
    for seed in range(1, 4):
        batch = {"image": _images(8, seed)}
        before = state.model_state[clusters.STATE_KEY]
        state, metrics = step(state, batch)
    after = state.model_state[clusters.STATE_KEY]
    # The last step labelled its batch by the centroids before it, then moved them to it.
    x = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    expected = clusters.update(before, x, clusters.assign(x, before["centroids"]))
    np.testing.assert_allclose(after["centroids"], expected["centroids"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(after["counts"], expected["counts"])
    assert float(np.sum(after["counts"])) == K + 3 * 8  # each image counted once
    share = np.asarray(after["counts"]) / float(np.sum(after["counts"]))
    np.testing.assert_allclose(float(metrics["cluster_min_share"]), share.min(), rtol=1e-6)


def test_samples_draw_their_clusters_by_share_and_a_given_label_is_kept(monkeypatch):
    method = _method()
    params = method.init_params(jax.random.PRNGKey(0), {"image": _images(2)})
    counts = jnp.array([0.0, 1.0, 0.0])  # all of the data in cluster 1
    params = {**params, clusters.STATE_KEY: {"centroids": jnp.zeros((K, H * W)), "counts": counts}}
    drawn = []
    draw = clusters.draw
    monkeypatch.setattr(clusters, "draw", lambda *a: drawn.append(draw(*a)) or drawn[-1])
    images = method.sample(params, jax.random.PRNGKey(1), 4)
    assert images.shape == (4, H, W, 1) and len(drawn) == 1
    np.testing.assert_array_equal(drawn[0], 1)  # every sample drew cluster 1
    method.sample(params, jax.random.PRNGKey(1), 2, {"label": jnp.array([2, 0])})
    assert len(drawn) == 1  # a given label is used, not drawn


def test_likelihood_is_the_nearest_cluster_bound_of_the_cluster_mixture():
    """``bits_per_dim`` is ``-log2 (p(c) p(x | c)) / D`` at the nearest centroid ``c``: at
    least the mixture's exact ``-log2 (sum_c p(c) p(x | c)) / D``."""
    method = _method()
    images = _images(4, kind=[0, 1, 2, 1])
    params = method.init_params(jax.random.PRNGKey(0), {"image": images})
    x = images.astype(jnp.float32) / 127.5 - 1.0
    counts = jnp.array([5.0, 2.0, 1.0])
    state = {**clusters.init_state(x, K, jax.random.PRNGKey(3)), "counts": counts}
    params = {**params, clusters.STATE_KEY: state}
    bits = np.asarray(method.likelihood(params, {"image": images}, None)["bits_per_dim"])
    log_share = np.log(np.asarray(counts) / 8.0)
    per_cluster = np.stack(  # [K, 4]: -log p(x | c) in nats
        [
            np.asarray(
                method._nll(params, {"image": images, "label": jnp.full((4,), c)}, None, False)
            )
            for c in range(K)
        ]
    )
    to_bits = 1.0 / (H * W * np.log(2.0))
    nearest = np.asarray(clusters.assign(x, state["centroids"]))
    own = (per_cluster[nearest, np.arange(4)] - log_share[nearest]) * to_bits
    np.testing.assert_allclose(bits, own, rtol=1e-5)
    exact = -np.asarray(jax.scipy.special.logsumexp(log_share[:, None] - per_cluster, axis=0))
    assert (bits >= exact * to_bits - 1e-6).all()
    assert len(set(nearest.tolist())) > 1  # the images sit in different clusters


FIT_RUN = r"""
import logging, sys, jax, numpy as np
sys.path.insert(0, {repo!r})
logging.basicConfig(level=logging.INFO)
from jaxgen import clusters
from jaxgen.cli import load_config_file
from jaxgen.experiment import Experiment
from jaxgen.trainer import Trainer
config = load_config_file({spec!r})
config[{section!r}].clusters = 3
exp = Experiment(config, {workdir!r})
state, _ = Trainer(exp).prepare()
fitted = jax.device_get(state.model_state[clusters.STATE_KEY])
np.savez({out!r}, devices=len(jax.devices()), **fitted)
"""


@pytest.mark.parametrize(
    "spec, section",
    [("configs/pixelcnn.py:preset=smoke", "model"), ("configs/gan.py:preset=smoke", "gan")],
)
def test_a_fresh_run_fits_its_centroids_to_the_training_images(tmp_path, spec, section):
    """The trainer's fresh state holds k-means fitted to images spread over the training split
    (not the all-zeros example batch the state's shapes come from), the same on one device and
    on eight, and nothing is written before the first step."""
    from jaxgen.experiment import FIT_STREAM, Experiment
    from tests.conftest import REPO, load_config, xla_flags_with_devices

    runs = {}
    for devices in (1, 8):
        out, workdir = tmp_path / f"{devices}.npz", tmp_path / f"run{devices}"
        code = FIT_RUN.format(
            repo=REPO, spec=spec, section=section, workdir=str(workdir), out=str(out)
        )
        env = dict(os.environ, XLA_FLAGS=xla_flags_with_devices(devices))
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert "fitted the model state to" in result.stderr
        assert not workdir.exists() or not any(workdir.iterdir())
        runs[devices] = np.load(out)
        assert int(runs[devices]["devices"]) == devices

    config = load_config(spec)
    config[section].clusters = 3
    exp = Experiment(config, str(tmp_path / "direct"))
    source = exp.train_source
    for devices, fitted in runs.items():
        count = min(clusters.FIT_EXAMPLES, len(source))
        count += -count % devices  # rows split evenly over the devices
        index = np.linspace(0, len(source) - 1, count).round().astype(np.int64)
        images = np.stack([source[int(i)]["image"] for i in index]).astype(np.float32)
        rng = jax.random.fold_in(exp.rng, FIT_STREAM)
        expected = clusters.fit(jnp.asarray(images / 127.5 - 1), 3, rng)
        np.testing.assert_allclose(fitted["centroids"], expected["centroids"], atol=1e-4)
        np.testing.assert_array_equal(fitted["counts"], expected["counts"])
        assert float(fitted["counts"].sum()) == count, devices
    gaps = np.linalg.norm(runs[1]["centroids"][:, None] - runs[1]["centroids"][None], axis=-1)
    assert gaps[~np.eye(3, dtype=bool)].min() > 1.0  # three distinct centroids


TWO_PROCESS_FIT = r"""
import sys, jax, numpy as np
sys.path.insert(0, {repo!r})
from jaxgen import clusters, runtime
runtime.initialize()
from jaxgen.cli import load_config_file
from jaxgen.experiment import Experiment
from jaxgen.trainer import Trainer
config = load_config_file("configs/gan.py:preset=smoke")
config.gan.clusters = 3
exp = Experiment(config, {workdir!r})
state, _ = Trainer(exp).prepare()
fitted = {{k: np.asarray(v.addressable_data(0))
          for k, v in state.model_state[clusters.STATE_KEY].items()}}
np.savez({out!r}.format(jax.process_index()), processes=jax.process_count(), **fitted)
"""


def test_two_processes_fit_the_same_centroids_as_one(tmp_path):
    """Under ``jax.distributed`` (two local processes, one CPU device each) both processes hold
    the fit of the same spread images, and it is the one-process fit over two devices."""
    from jaxgen.experiment import FIT_STREAM, Experiment
    from tests.conftest import REPO, load_config
    from tests.test_parallel import _free_port

    out = str(tmp_path / "fit_{}.npz")
    code = TWO_PROCESS_FIT.format(repo=REPO, workdir=str(tmp_path / "run"), out=out)
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                     JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid), JAX_PLATFORMS="cpu"),
        )
        for pid in range(2)
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    fits = [np.load(out.format(pid)) for pid in range(2)]
    assert int(fits[0]["processes"]) == 2
    np.testing.assert_array_equal(fits[0]["centroids"], fits[1]["centroids"])
    np.testing.assert_array_equal(fits[0]["counts"], fits[1]["counts"])

    config = load_config("configs/gan.py:preset=smoke")
    config.gan.clusters = 3
    exp = Experiment(config, str(tmp_path / "direct"))
    source = exp.train_source
    count = min(clusters.FIT_EXAMPLES, len(source))
    count += count % 2  # rows split evenly over the two devices
    index = np.linspace(0, len(source) - 1, count).round().astype(np.int64)
    images = np.stack([source[int(i)]["image"] for i in index]).astype(np.float32)
    expected = clusters.fit(
        jnp.asarray(images / 127.5 - 1), 3, jax.random.fold_in(exp.rng, FIT_STREAM)
    )
    np.testing.assert_allclose(fits[0]["centroids"], expected["centroids"], atol=1e-4)
    np.testing.assert_array_equal(fits[0]["counts"], expected["counts"])


def test_more_clusters_than_training_images_is_refused_before_anything_is_written(tmp_path, capfd):
    from tests.conftest import assert_refused, run_cli

    workdir = tmp_path / "run"
    result = run_cli(
        capfd,
        "--config=configs/pixelcnn.py:preset=smoke",
        "--config.model.clusters=100000",
        f"--workdir={workdir}",
    )
    assert_refused(result, "model.clusters=100000: more clusters than the", "training images")
    assert not workdir.exists() or not any(workdir.iterdir())
