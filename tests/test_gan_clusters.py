"""A GAN conditioned on k-means clusters of its training pixels (``gan.clusters``)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import clusters
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.gan import GAN
from tests.conftest import gray_batch, jitted_init, jitted_step, launch, load_config


def test_assign_picks_the_nearest_centroid():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3, 3, 1)).astype(np.float32)
    centroids = rng.normal(size=(4, 9)).astype(np.float32)
    brute = np.linalg.norm(x.reshape(50, 1, 9) - centroids[None], axis=-1).argmin(1)
    np.testing.assert_array_equal(clusters.assign(jnp.asarray(x), jnp.asarray(centroids)), brute)


def test_each_centroid_is_the_mean_of_every_image_assigned_to_it():
    rng = np.random.default_rng(1)
    first = rng.normal(size=(6, 2, 2, 1)).astype(np.float32)
    state = clusters.init_state(jnp.asarray(first), 3, jax.random.PRNGKey(0))
    members = [[np.asarray(state["centroids"][c])] for c in range(3)]
    for _ in range(4):
        x = rng.normal(size=(8, 2, 2, 1)).astype(np.float32)
        labels = clusters.assign(jnp.asarray(x), state["centroids"])
        state = clusters.update(state, jnp.asarray(x), labels)
        for row, c in zip(x.reshape(8, -1), np.asarray(labels), strict=True):
            members[c].append(row)
    for c in range(3):
        np.testing.assert_allclose(state["centroids"][c], np.mean(members[c], 0), atol=1e-5)
        assert float(state["counts"][c]) == len(members[c])


def test_online_k_means_separates_three_distinct_images():
    rng = np.random.default_rng(2)
    prototypes = np.stack([np.full((4, 4, 1), v, np.float32) for v in (-0.8, 0.0, 0.8)])
    state, pairs = None, []
    for _ in range(30):
        which = rng.integers(0, 3, 32)
        x = jnp.asarray(prototypes[which] + 0.05 * rng.normal(size=(32, 4, 4, 1)), jnp.float32)
        if state is None:
            state = clusters.init_state(x, 3, jax.random.PRNGKey(3))
        labels = np.asarray(clusters.assign(x, state["centroids"]))
        state = clusters.update(state, x, jnp.asarray(labels))
        pairs.append({(int(w), int(y)) for w, y in zip(which, labels, strict=True)})
    # each prototype in one cluster, and no cluster shared by two prototypes
    assert len(pairs[-1]) == 3 and len({y for _, y in pairs[-1]}) == 3, pairs[-1]
    np.testing.assert_allclose(np.sort(np.asarray(state["centroids"]).mean(1)), [-0.8, 0, 0.8],
                               atol=0.02)  # fmt: skip


def test_draw_follows_the_counts():
    labels = np.asarray(clusters.draw(jax.random.PRNGKey(0), jnp.array([1.0, 3.0, 6.0]), 20000))
    np.testing.assert_allclose(np.bincount(labels) / 20000, [0.1, 0.3, 0.6], atol=0.015)


@pytest.fixture(scope="module")
def clustered_gan():
    config = load_config("configs/gan.py:preset=smoke")
    config.gan.clusters = 3
    method = GAN(config, DataSpec((8, 8, 1), 10, "none"))
    tx = method.make_optimizer()
    batch = gray_batch(0)
    return method, tx, jitted_init(method, tx, jax.random.PRNGKey(0), batch), batch


def test_a_training_step_moves_the_centroids_and_trains_the_label_embeddings(clustered_gan):
    method, tx, state, batch = clustered_gan
    before = state.model_state[clusters.STATE_KEY]
    assert before["centroids"].shape == (3, 64)
    new, metrics = jitted_step(method, tx, 0.0)(state, batch)
    after = new.model_state[clusters.STATE_KEY]
    assert float(after["counts"].sum()) == 3 + 8
    assert not np.allclose(after["centroids"], before["centroids"])
    assert 0.0 < float(metrics["cluster_min_share"]) <= 1 / 3
    embed = jax.tree.leaves(
        {k: v for k, v in new.params["discriminator"].items() if k.startswith("SNEmbed")}
    )
    assert embed, "the discriminator has no label embedding"
    params = method.sampling_params(new)
    np.testing.assert_array_equal(params["cluster_counts"], after["counts"])
    images = jax.jit(method.sample, static_argnums=2)(params, jax.random.PRNGKey(1), 5)
    assert images.shape == (5, 8, 8, 1)


INFO = {"gan.info_codes": 4}
CLUSTERS = {"gan.clusters": 3}


@pytest.mark.parametrize(
    "args, overrides, expected",
    [
        ("cond=class", INFO, "for unconditional DCGANs (cond=none"),
        ("", {**INFO, "model.arch": "resnet"}, "model.arch='resnet'"),
        ("", {"gan.info_codes": -1}, "gan.info_codes=-1: expected >= 0"),
        ("", {**INFO, "gan.info_weight": -1.0}, "gan.info_weight"),
        ("cond=class", CLUSTERS, "for GANs trained without labels or text (cond=none)"),
        ("", {"gan.clusters": -2}, "gan.clusters=-2: expected >= 0"),
    ],
)
def test_bad_info_code_or_cluster_config_is_a_user_error(args, overrides, expected):
    config = load_config(f"configs/gan.py:preset=smoke,{args}")
    for dotted, value in overrides.items():
        section, name = dotted.split(".")
        config[section][name] = value
    cond = "class" if "cond=class" in args else "none"
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        GAN(config, DataSpec((8, 8, 1), 10, cond))


def test_a_resumed_run_continues_the_clusters_exactly(tmp_path):
    """4 steps in one launch, or 2 then a relaunch to 4: the same losses and cluster shares,
    so the k-means state is checkpointed with the networks."""
    common = ["--config=configs/gan.py:preset=smoke", "--config.gan.clusters=3"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    for args in (
        [f"--workdir={whole}"],
        [f"--workdir={split}", "--config.train.num_steps=2"],
        [f"--workdir={split}", "--config.train.num_steps=4"],
    ):
        result = launch(*common, *args)
        assert result.returncode == 0, result.stderr[-2000:]

    def last_row(workdir):
        rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        row = [r for r in rows if r["step"] == 4 and "loss" in r][0]
        return row["loss"], row["cluster_min_share"]

    assert last_row(whole) == last_row(split)


def test_fit_finds_three_clusters_of_unequal_size_and_counts_them():
    """Three noisy prototypes, 60%, 30% and 10% of 500 images: the fit puts each prototype in
    a cluster of its own, its centroid at the prototype's mean, its count the prototype's."""
    rng = np.random.default_rng(4)
    prototypes = np.stack([np.full((4, 4, 1), v, np.float32) for v in (-0.8, 0.0, 0.8)])
    which = rng.choice(3, size=500, p=[0.6, 0.3, 0.1])
    x = prototypes[which] + 0.05 * rng.normal(size=(500, 4, 4, 1)).astype(np.float32)
    state = clusters.fit(jnp.asarray(x), 3, jax.random.PRNGKey(5))
    labels = np.asarray(clusters.assign(jnp.asarray(x), state["centroids"]))
    pairs = set(zip(which.tolist(), labels.tolist(), strict=True))
    assert len(pairs) == 3 and len({y for _, y in pairs}) == 3, pairs
    for w, y in pairs:
        np.testing.assert_allclose(state["centroids"][y], x[which == w].reshape(-1, 16).mean(0),
                                   atol=1e-5)  # fmt: skip
        assert float(state["counts"][y]) == np.sum(which == w)
