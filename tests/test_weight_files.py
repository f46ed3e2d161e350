"""Weight-file readers: bad files are one-line UserErrors naming the file, never a crash."""

from __future__ import annotations

import base64
import json
import os
import pickle
import struct
import zipfile
import zlib

import ml_collections
import ml_dtypes
import numpy as np
import pytest

from jaxgen.errors import UserError
from jaxgen.evaluate import check_evaluators
from jaxgen.evaluate import inception_weights as iw
from jaxgen.evaluate.features import save_classifier
from jaxgen.style_transfer import weights as vgg_weights
from jaxgen.weight_files import (
    read_npz,
    read_safetensors,
    read_torch_state_dict,
    read_weight_file,
    write_safetensors,
)
from tests.conftest import load_config
from tests.test_inception import _LEGACY_PTH, _ZIP_PTH


def _raises_naming(path, pattern, reader=read_weight_file) -> str:
    """The message of the UserError ``reader(path)`` raises; it names ``path``, on one line."""
    with pytest.raises(UserError, match=pattern) as info:
        reader(str(path))
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    return message


# --- safetensors --------------------------------------------------------------------------


def test_safetensors_round_trip_keeps_dtypes(tmp_path):
    arrays = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f16": np.array([1.5, -2.0, 65504.0], np.float16),
        "bf16": np.array([1.0, -3.5, 2.0**100], ml_dtypes.bfloat16),
        "i64": np.array([[7]], np.int64),
    }
    path = str(tmp_path / "w.safetensors")
    write_safetensors(path, arrays)
    back = read_safetensors(path)
    assert back.keys() == arrays.keys()
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype, name
        np.testing.assert_array_equal(back[name], value)
    assert read_weight_file(path).keys() == arrays.keys()


def _safetensors_bytes(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


_F32_BODY = np.arange(6, dtype=np.float32).tobytes()


@pytest.mark.parametrize(
    "header, body, pattern",
    [
        ({"a": {"dtype": "F32", "shape": [2, 3]}}, _F32_BODY, "missing field `data_offsets`"),
        ({"a": {"dtype": "Q7", "shape": [6], "data_offsets": [0, 24]}}, _F32_BODY, "Q7"),
        ({"a": {"dtype": "F8_E4M3", "shape": [24], "data_offsets": [0, 24]}}, _F32_BODY,
         "tensor 'a' has dtype F8_E4M3, which numpy cannot hold"),
        ({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 48]}}, _F32_BODY,
         "not a safetensors file"),
        ({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}, _F32_BODY[:10],
         "not a safetensors file"),
        ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 24]}}, _F32_BODY,
         "not a safetensors file"),
        ({"a": {"dtype": "F32", "shape": [-2, 3], "data_offsets": [0, 24]}}, _F32_BODY,
         "not a safetensors file"),
    ],
    ids=["no_offsets", "unknown_dtype", "float8", "offsets_past_end", "truncated_body",
         "shape_vs_offsets", "negative_dim"],
)  # fmt: skip
def test_bad_safetensors_files(tmp_path, header, body, pattern):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_safetensors_bytes(header, body))
    _raises_naming(path, pattern)


def test_safetensors_file_shorter_than_its_header(tmp_path):
    good = _safetensors_bytes({"a": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}}, b"")
    for cut in (0, 3, 8, len(good) - 2):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(good[:cut])
        _raises_naming(path, "not a safetensors file")
    huge = tmp_path / "huge_header.safetensors"
    huge.write_bytes(struct.pack("<Q", 10**15) + b"{}")
    _raises_naming(huge, "not a safetensors file")


# --- npz ----------------------------------------------------------------------------------


def test_bad_npz_files(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, a=np.arange(1000, dtype=np.float32), b=np.ones((3, 3)))
    assert read_npz(str(good))["a"][999] == 999
    blob = good.read_bytes()
    for cut in (10, len(blob) // 2, len(blob) - 30):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(blob[:cut])
        _raises_naming(path, "unreadable .npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip archive at all")
    _raises_naming(junk, r"unreadable .npz \(BadZipFile")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, a=np.array([{"x": 1}], dtype=object))
    _raises_naming(pickled, "unreadable .npz.*allow_pickle")
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    _raises_naming(single, "not an archive")
    _raises_naming(tmp_path / "absent.npz", "does not exist")
    (tmp_path / "w.bin").write_bytes(b"x")
    _raises_naming(tmp_path / "w.bin", "expected a name ending in one of .npz")


# --- PyTorch files, built by hand ---------------------------------------------------------


def _int(i: int) -> bytes:
    return pickle.INT + b"%d\n" % i


def _str(s: str) -> bytes:
    raw = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def _tuple(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _tensor(key: str, offset: int, shape, stride, storage_type: str = "FloatStorage") -> bytes:
    """The pickle of ``torch._utils._rebuild_tensor_v2`` as ``torch.save`` writes it."""
    storage = _tuple(
        _str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(0)
    )
    args = _tuple(
        storage + pickle.BINPERSID,
        _int(offset),
        _tuple(*map(_int, shape)),
        _tuple(*map(_int, stride)),
        pickle.NEWFALSE,
        pickle.EMPTY_DICT,
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE


def _state_dict_pickle(tensors: dict[str, bytes]) -> bytes:
    items = b"".join(_str(name) + value for name, value in tensors.items())
    return b"\x80\x02" + pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS + pickle.STOP


def _write_pth(path, pkl: bytes, storages: dict[str, bytes]) -> str:
    """The zip layout of ``torch.save``: ``archive/data.pkl`` and ``archive/data/<key>``."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)
    return str(path)


_STORAGE = {"0": np.arange(6, dtype=np.float32).tobytes()}


def test_hand_built_pth_reads_views_of_a_storage(tmp_path):
    pkl = _state_dict_pickle(
        {
            "w": _tensor("0", 0, (2, 3), (3, 1)),
            "t": _tensor("0", 0, (3, 2), (1, 3)),
            "tail": _tensor("0", 4, (2,), (1,)),
            "scalar": _tensor("0", 5, (), ()),
            "empty": _tensor("0", 6, (0, 4), (4, 1)),
            "bias": _tensor("1", 0, (2,), (1,), "HalfStorage"),
        }
    )
    storages = dict(_STORAGE, **{"1": np.array([1.5, -2.0], np.float16).tobytes()})
    sd = read_torch_state_dict(_write_pth(tmp_path / "ok.pth", pkl, storages))
    base = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(sd["w"], base)
    np.testing.assert_array_equal(sd["t"], base.T)
    np.testing.assert_array_equal(sd["tail"], [4.0, 5.0])
    assert sd["scalar"].shape == () and sd["scalar"] == 5.0
    assert sd["empty"].shape == (0, 4)
    assert sd["bias"].dtype == np.float16 and sd["bias"].tolist() == [1.5, -2.0]
    assert all(v.flags.owndata and v.flags.writeable for v in sd.values())  # copies


@pytest.mark.parametrize(
    "offset, shape, stride, pattern",
    [
        (6, (1,), (1,), "reaches element 6 of a storage of 6"),
        (0, (2, 3), (4, 1), "reaches element 6 of a storage of 6"),
        (0, (3, 3), (3, 1), "reaches element 8 of a storage of 6"),
        (4, (2, 2), (1, 1), "reaches element 6 of a storage of 6"),
        (2**62, (1,), (1,), "reaches element"),
        (0, (2,), (2**61,), "reaches element"),
        (-1, (1,), (1,), "negative offset, size or stride"),
        (5, (2,), (-1,), "negative offset, size or stride"),
        (0, (-1,), (1,), "negative offset, size or stride"),
        (0, (2, 3), (1,), r"shape \(2, 3\) but stride \(1,\)"),
        (0, (10**12,), (0,), r"more elements \(1000000000000\) than its storage"),
    ],
)
def test_pth_tensor_outside_its_storage(tmp_path, offset, shape, stride, pattern):
    pkl = _state_dict_pickle({"ok": _tensor("0", 0, (6,), (1,)), "bad": _tensor("0", *[
        offset, shape, stride])})  # fmt: skip
    path = _write_pth(tmp_path / "bad.pth", pkl, _STORAGE)
    message = _raises_naming(path, pattern, read_torch_state_dict)
    assert "tensor 'bad'" in message


@pytest.mark.parametrize(
    "tensors, storages, pattern",
    [
        ({"w": _tensor("0", 0, (1,), (1,))}, {"0": b"\x00" * 7},
         "storage '0' has 7 bytes, not a multiple of its dtype's 4"),
        ({"w": _tensor("0", 0, (1,), (1,))}, {}, r"storage '0' \(archive/data/0\) is missing"),
        ({"w": _tensor("0", 0, (1,), (1,)), "h": _tensor("0", 0, (1,), (1,), "HalfStorage")},
         _STORAGE, "storage '0' is used with two dtypes"),
        ({"w": _tensor("0", 0, (1,), (1,), "ComplexFloatStorage")}, _STORAGE,
         "refused to load torch.ComplexFloatStorage"),
        ({f"v{i}": _tensor("0", 0, (6,), (1,)) for i in range(5)}, _STORAGE,
         "over 4 times the elements of its storages"),
        ({"n": _int(3)}, _STORAGE, r"entry 'n' is not a tensor \(int\)"),
    ],
    ids=["storage_size", "storage_missing", "two_dtypes", "unknown_storage", "many_views",
         "not_a_tensor"],
)  # fmt: skip
def test_pth_bad_storages(tmp_path, tensors, storages, pattern):
    path = _write_pth(tmp_path / "bad.pth", _state_dict_pickle(tensors), storages)
    _raises_naming(path, pattern, read_torch_state_dict)


@pytest.mark.parametrize(
    "module, name",
    [("os", "system"), ("posix", "system"), ("builtins", "exec"), ("subprocess", "call")],
)
@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_pth_pickle_that_runs_code_is_refused(tmp_path, module, name, layout):
    marker = tmp_path / "pwned"
    command = f"open({str(marker)!r}, 'w')" if name == "exec" else f"touch {marker}"
    arg = _str(command) if name != "call" else _tuple(_str("touch"), _str(str(marker)))
    payload = b"\x80\x02" + _global(module, name) + _tuple(arg) + pickle.REDUCE + pickle.STOP
    path = tmp_path / "evil.pth"
    if layout == "zip":
        _write_pth(path, payload, {})
    else:
        path.write_bytes(payload)
    _raises_naming(path, f"unreadable PyTorch file.*refused to load {module}.{name}",
                   read_torch_state_dict)  # fmt: skip
    assert not marker.exists()


def test_pth_not_a_state_dict(tmp_path):
    path = _write_pth(tmp_path / "list.pth", b"\x80\x02" + pickle.EMPTY_LIST + pickle.STOP, {})
    _raises_naming(path, "holds a list, not a state dict", read_torch_state_dict)
    wrapped = _state_dict_pickle({"state_dict": pickle.EMPTY_DICT + _str("w") + _tensor(
        "0", 0, (6,), (1,)) + pickle.SETITEM})  # fmt: skip
    sd = read_torch_state_dict(_write_pth(tmp_path / "wrapped.pth", wrapped, _STORAGE))
    assert list(sd) == ["w"] and sd["w"].sum() == 15


def _pth_blobs(tmp_path) -> list[bytes]:
    pkl = _state_dict_pickle({"w": _tensor("0", 0, (2, 3), (3, 1))})
    hand = _write_pth(tmp_path / "hand.pth", pkl, _STORAGE)
    with open(hand, "rb") as f:
        built = f.read()
    return [zlib.decompress(base64.b64decode(b)) for b in (_LEGACY_PTH, _ZIP_PTH)] + [built]


def test_truncated_or_corrupted_pth_files_never_crash(tmp_path):
    """Every cut and 200 random byte changes of three valid files: a state dict or a
    UserError naming the file, never another exception."""
    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.pth"
    errors = 0
    for blob in _pth_blobs(tmp_path):
        variants = [blob[:cut] for cut in range(0, len(blob), 5)]
        for _ in range(200):
            damaged = bytearray(blob)
            for i in rng.integers(0, len(blob), rng.integers(1, 4)):
                damaged[i] = int(rng.integers(0, 256))
            variants.append(bytes(damaged))
        for variant in variants:
            path.write_bytes(variant)
            try:
                sd = read_torch_state_dict(str(path))
            except UserError as e:
                errors += 1
                assert str(path) in str(e) and "\n" not in str(e)
            else:
                assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert errors > 100


# --- mis-shaped Inception, VGG19 and classifier weights -----------------------------------


@pytest.fixture(scope="module")
def inception_files(tmp_path_factory):
    """A Flax-layout Inception file that fits (float16 zeros, to keep it small) and one whose
    ``params/fc/bias`` has 1000 entries instead of 1008."""
    folder = tmp_path_factory.mktemp("inception")
    flat = {k: np.zeros(s, np.float16) for k, s in iw.expected_shapes().items()}
    good, bad = str(folder / "good.npz"), str(folder / "misshaped.npz")
    np.savez(good, **flat)
    np.savez(bad, **dict(flat, **{"params/fc/bias": np.zeros(1000, np.float16)}))
    return good, bad


def test_misshaped_inception_weights(inception_files):
    good, bad = inception_files
    assert iw.flatten(iw.load_inception_variables(good)).keys() == iw.expected_shapes().keys()
    _raises_naming(
        bad, r"tensor 'params/fc/bias' has shape \(1000,\), expected \(1008,\)",
        iw.load_inception_variables,
    )  # fmt: skip


def test_misshaped_torch_layout_inception_weights(tmp_path):
    path = tmp_path / "pt.npz"
    np.savez(path, **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 3), np.float32)})
    _raises_naming(path, "'Conv2d_1a_3x3.conv.weight' has shape .*4-d", iw.load_inception_variables)
    np.savez(path, **{"fc.bias": np.array(["a", "b"])})
    _raises_naming(path, "'fc.bias' has dtype <U1, expected real numbers",
                   iw.load_inception_variables)  # fmt: skip


@pytest.mark.parametrize("layout", ["export", "torchvision"])
def test_misshaped_vgg19_weights(tmp_path, layout):
    if layout == "export":
        arrays, pattern = {"conv1_1/kernel": np.zeros((3, 3, 3, 32), np.float32)}, "conv1_1/kernel"
    else:
        arrays, pattern = (
            {"features.0.weight": np.zeros((64, 3, 5, 5), np.float32)},
            "features.0.weight",
        )
    for suffix in (".npz", ".safetensors"):
        path = str(tmp_path / f"vgg{suffix}")
        if suffix == ".npz":
            np.savez(path, **arrays)
        else:
            write_safetensors(path, arrays)
        _raises_naming(path, f"{pattern}: shape", vgg_weights.load_vgg19)


# --- evaluator weights are checked before training ----------------------------------------


def _method(data_name: str = "fashion_mnist") -> dict:
    """The model's side of :func:`check_evaluators`."""
    return dict(family="gan", data_name=data_name, has_likelihood=True)


def _evals(**evaluators) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(evaluators)


def test_check_evaluators_rejects_missing_and_misshaped_inception(tmp_path, inception_files):
    good, bad = inception_files
    check_evaluators(_evals(q=dict(type="quality", features="inception", inception_weights=good)),
                     **_method())  # fmt: skip
    absent = str(tmp_path / "pt_inception.npz")
    for path, pattern in [
        (absent, "does not exist; convert .*scripts/convert_inception.py"),
        (bad, r"tensor 'params/fc/bias' has shape \(1000,\)"),
    ]:
        evals = _evals(q=dict(type="quality", features="inception", inception_weights=path))
        with pytest.raises(UserError, match=pattern) as info:
            check_evaluators(evals, **_method())
        assert str(info.value).startswith("config key evals.q: ") and path in str(info.value)
    with pytest.raises(UserError, match="evals.q: .*needs weights.*convert_inception.py"):
        check_evaluators(_evals(q=dict(type="c2st", features="inception")), **_method())


@pytest.mark.parametrize("config_file", ["configs/gan.py", "configs/ddpm.py"])
def test_published_configs_fail_before_training_without_inception_weights(config_file):
    config = load_config(config_file)
    assert config.evals.quality.features == "inception"
    with pytest.raises(UserError, match=r"evals\.\w+: .*inception.*convert_inception.py"):
        check_evaluators(config.evals, **_method(config.data.name))
    # With the file set (here: one that is not there) the same check names it.
    for cfg in config.evals.values():
        if cfg.get("features") == "inception":
            cfg.inception_weights = "/nonexistent/pt_inception.pth"
    with pytest.raises(UserError, match="/nonexistent/pt_inception.pth does not exist"):
        check_evaluators(config.evals, **_method(config.data.name))


def test_check_evaluators_checks_the_domain_classifier(tmp_path):
    # The committed classifier is found from the data name when no features are named.
    check_evaluators(_evals(c=dict(type="classifier")), **_method("fashion_mnist"))
    with pytest.raises(UserError, match="evals.c: no domain classifier for data 'nowhere'"):
        check_evaluators(_evals(c=dict(type="classifier")), **_method("nowhere"))
    path = str(tmp_path / "clf.npz")
    params = {
        "conv0_a": {"kernel": np.zeros((3, 3, 1, 8), np.float32), "bias": np.zeros(8)},
        "features": {"kernel": np.zeros((8, 16), np.float32), "bias": np.zeros(16)},
        "logits": {"kernel": np.zeros((16, 10), np.float32), "bias": np.zeros(10)},
    }
    meta = dict(num_classes=10, channels=[8], feature_dim=16, image_shape=[28, 28, 1])
    save_classifier(path, params, meta)
    evals = _evals(c=dict(type="diversity", features="domain", classifier_weights=path))
    check_evaluators(evals, **_method())
    params["features"]["kernel"] = np.zeros((9, 16), np.float32)
    save_classifier(path, params, meta)
    with pytest.raises(UserError, match=r"tensor 'features/kernel' has shape \(9, 16\)") as info:
        check_evaluators(evals, **_method())
    assert path in str(info.value) and str(info.value).startswith("config key evals.c: ")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(UserError, match="evals.c: weight file .*unreadable .npz"):
        check_evaluators(evals, **_method())
