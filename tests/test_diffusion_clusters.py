"""A diffusion model conditioned on k-means clusters of its training pixels
(``model.clusters`` of ``configs/ddpm.py``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import load_config, random_params

from jaxgen import clusters
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.diffusion import Diffusion
from tests.test_pixelcnn_clusters import _images

K = 3
H = W = 8  # the images of tests.test_pixelcnn_clusters


def _method(k: int = K, cond: str = "none") -> Diffusion:
    config = load_config(f"configs/ddpm.py:preset=smoke,cond={cond}")
    config.model.clusters = k
    return Diffusion(config, DataSpec((H, W, 1), 4 if cond == "class" else 0, cond))


def _fitted_params(method: Diffusion, images, counts) -> dict:
    params = random_params(method.init_params, jax.random.PRNGKey(0), {"image": images})
    x = images.astype(jnp.float32) / 127.5 - 1.0
    state = {**clusters.init_state(x, K, jax.random.PRNGKey(3)), "counts": jnp.asarray(counts)}
    return {**params, clusters.STATE_KEY: state}


def test_clusters_for_labelled_data_are_refused():
    with pytest.raises(UserError, match=r"model.clusters=3: for data without labels or text"):
        _method(3, "class")


def test_training_labels_each_batch_by_its_nearest_centroid_and_trains_its_embedding():
    method = _method()
    tx = optax.adam(1e-2)
    state = method.init_state(jax.random.PRNGKey(0), {"image": _images(8)}, tx)
    # Random parameters: the UNet's zero-initialised output layer would stop every gradient.
    params = random_params(method.init_params, jax.random.PRNGKey(0), {"image": _images(1)})
    state = state.replace(params=params)
    step = jax.jit(lambda s, b: method.train_step(s, b, tx, 0.9))
    batch = {"image": _images(8, 1, kind=[0] * 8)}  # every image in one cluster
    before = state.model_state[clusters.STATE_KEY]
    x = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    used = int(clusters.assign(x, before["centroids"])[0])
    new, metrics = step(state, batch)
    after = new.model_state[clusters.STATE_KEY]
    expected = clusters.update(before, x, jnp.full((8,), used, jnp.int32))
    np.testing.assert_allclose(after["centroids"], expected["centroids"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(after["counts"], expected["counts"])
    assert 0 < float(metrics["cluster_min_share"]) < 1
    # The batch's cluster is the label the network was trained with: of the label embedding
    # ([K + 1, D], the last row the null label) only its row moves, the others getting no
    # gradient (Adam leaves them in place).
    table = lambda p: np.asarray(p["class_emb"]["embedding"])  # noqa: E731
    moved = np.abs(table(new.params) - table(state.params)).max(axis=1)
    assert moved.shape == (K + 1,)
    assert moved[used] > 0 and np.all(np.delete(moved, used) == 0)


def test_samples_draw_their_clusters_by_share_and_a_given_label_is_kept(monkeypatch):
    method = _method()
    images = _images(4, kind=[0, 1, 2, 1])
    params = _fitted_params(method, images, [0.0, 1.0, 0.0])  # all the data in cluster 1
    drawn = []
    draw = clusters.draw
    monkeypatch.setattr(clusters, "draw", lambda *a: drawn.append(draw(*a)) or drawn[-1])
    a = np.asarray(method.sample(params, jax.random.PRNGKey(1), 4))
    assert a.shape == (4, H, W, 1) and len(drawn) == 1
    np.testing.assert_array_equal(drawn[0], 1)  # every sample drew cluster 1
    b = np.asarray(method.sample(params, jax.random.PRNGKey(1), 4, {"label": jnp.ones(4, int)}))
    assert len(drawn) == 1  # a given label is used, not drawn
    c = np.asarray(method.sample(params, jax.random.PRNGKey(1), 4, {"label": jnp.zeros(4, int)}))
    assert np.abs(b - c).max() > 1e-3  # the label conditions the network


def test_likelihood_adds_the_nearest_clusters_share_to_its_conditional_bound():
    """``bits_per_dim`` is ``-log2 (p(c) p(x | c)) / D`` at the nearest centroid ``c``, the
    conditional variational bound of the same timesteps plus ``-log p(c)``."""
    method = _method()
    images = _images(4, kind=[0, 1, 2, 1])
    counts = np.array([5.0, 2.0, 1.0])
    params = _fitted_params(method, images, counts)
    rng = jax.random.PRNGKey(7)
    bits = np.asarray(method.likelihood(params, {"image": images}, rng)["bits_per_dim"])
    x = images.astype(jnp.float32) / 127.5 - 1.0
    nearest = np.asarray(clusters.assign(x, params[clusters.STATE_KEY]["centroids"]))
    assert len(set(nearest.tolist())) > 1  # the images sit in different clusters
    config = load_config("configs/ddpm.py:preset=smoke,cond=class")
    plain = Diffusion(config, DataSpec((H, W, 1), K, "class"))  # the same network, K classes
    conditional = plain.likelihood(params, {"image": images, "label": jnp.asarray(nearest)}, rng)
    log_share = np.log(counts / counts.sum())[nearest]
    expected = np.asarray(conditional["bits_per_dim"]) - log_share / (H * W * np.log(2.0))
    np.testing.assert_allclose(bits, expected, rtol=1e-5)


def test_a_clustered_run_trains_evaluates_and_samples_through_the_launcher(tmp_path):
    """A smoke run with ``model.clusters=3``: its centroids are fitted, checkpointed with the
    network, its final evaluation's bound is finite, and ``--mode=sample`` from the workdir
    alone draws from the checkpoint."""
    import json

    from conftest import launch

    workdir = tmp_path / "run"
    result = launch(
        "--config=configs/ddpm.py:preset=smoke", "--config.model.clusters=3", f"--workdir={workdir}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fitted the model state to" in result.stderr
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any("cluster_min_share" in r for r in rows)
    (evaluation,) = (workdir / "eval").glob("step_*.json")
    assert np.isfinite(json.loads(evaluation.read_text())["bits_per_dim"])
    result = launch(f"--workdir={workdir}", "--mode=sample", "--config.sample.num=6")
    assert result.returncode == 0, result.stderr[-3000:]
    (npz,) = (workdir / "samples").glob("samples_*.npz")
    assert np.load(npz)["images"].shape == (6, 28, 28, 1)
