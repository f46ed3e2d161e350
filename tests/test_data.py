import gzip
import os

import numpy as np
import pytest

from jaxgen.data import sources
from jaxgen.data.pipeline import Pipeline, ResizedSource
from jaxgen.errors import UserError


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 12)):
        image_file, label_file = sources.FASHION_MNIST_FILES[split]
        _write_idx(tmp_path / image_file, rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / label_file, np.arange(n) % 10)
    return str(tmp_path)


def test_fashion_mnist_reads_idx_from_config_dir(tiny_fashion):
    source = sources.get_source("fashion_mnist", "train", tiny_fashion)
    assert len(source) == 40 and source.image_shape == (28, 28, 1)
    assert source[3]["label"] == 3 and source.num_classes == 10


def test_missing_fashion_mnist_lists_places_and_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("JAXGEN_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(UserError) as e:
        sources.get_source("fashion_mnist", "train", "")
    text = str(e.value)
    assert str(tmp_path / "nowhere") in text and str(tmp_path / "env" / "fashion_mnist") in text
    assert "apt-get install -y dataset-fashion-mnist" in text and "\n" not in text


def test_missing_fashion_mnist_in_data_dir_names_only_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXGEN_DATA_DIR", str(tmp_path / "env"))
    (tmp_path / "given").mkdir()
    with pytest.raises(UserError) as e:
        sources.get_source("fashion_mnist", "train", str(tmp_path / "given"))
    text = str(e.value)
    assert text.startswith(f"config key data.dir={str(tmp_path / 'given')!r}")
    assert "train-images-idx3-ubyte.gz" in text and str(tmp_path / "env") not in text
    assert "\n" not in text


def test_truncated_idx_is_a_clear_error(tiny_fashion):
    path = os.path.join(tiny_fashion, sources.FASHION_MNIST_FILES["train"][0])
    with gzip.open(path, "rb") as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-10])
    with pytest.raises(UserError, match="truncated"):
        sources.get_source("fashion_mnist", "train", tiny_fashion)


def test_digits_split_is_disjoint_and_complete():
    train, test = sources.get_source("digits", "train"), sources.get_source("digits", "test")
    assert len(train) + len(test) == 1797 and train.image_shape == (8, 8, 1)
    assert train[0]["image"].max() <= 255


def test_tfds_source_through_data_source(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        source = sources.get_source("tfds:mnist", "train", str(tmp_path))
        assert len(source) == 6
        item = source[2]
        assert item["image"].shape == (28, 28, 1) and item["image"].dtype == np.uint8
        assert source.num_classes == 10


def test_resized_source_changes_size_only():
    source = ResizedSource(sources.get_source("digits", "train"), 16)
    assert source[0]["image"].shape == (16, 16, 1) and source.image_shape == (16, 16, 1)


def _labels_of(pipeline, n):
    return [next(pipeline)["label"].tolist() for _ in range(n)]


def test_pipeline_resumes_exactly_from_saved_state():
    source = sources.get_source("digits", "test")
    full = Pipeline(source, 32, seed=3)
    expected = _labels_of(full, 30)  # crosses epoch boundaries (360 examples)
    first = Pipeline(source, 32, seed=3)
    head = _labels_of(first, 12)
    resumed = Pipeline(source, 32, seed=3)
    resumed.set_state(first.get_state())
    assert head + _labels_of(resumed, 18) == expected


def test_pipeline_shards_processes_disjointly():
    source = sources.ArraySource(
        np.zeros((64, 2, 2, 1), np.uint8), np.arange(64), tuple(map(str, range(64)))
    )
    parts = [next(Pipeline(source, 16, seed=0, process_index=i, process_count=2)) for i in (0, 1)]
    seen = np.concatenate([p["label"] for p in parts])
    assert all(len(p["label"]) == 8 for p in parts)
    assert len(set(seen.tolist())) == 16  # the two halves of one global batch never overlap


def test_training_data_identity_sees_a_changed_example_past_the_first_ones():
    from jaxgen.data.description import training_data_identity

    examples = [{"image": np.full((4, 4, 1), i % 251, np.uint8), "label": i} for i in range(500)]
    before = training_data_identity(examples)
    assert before["train_examples"] == 500
    examples[-1] = {"image": np.zeros((4, 4, 1), np.uint8), "label": 3}  # always one of them
    after = training_data_identity(examples)
    assert after["train_fingerprint"] == before["train_fingerprint"]  # the first 8 are the same
    assert after["train_spread_fingerprint"] != before["train_spread_fingerprint"]
    assert training_data_identity(examples[:1])["train_examples"] == 1  # one example: no error
    assert training_data_identity([])["train_examples"] == 0
