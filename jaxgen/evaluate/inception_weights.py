"""FID Inception weights: PyTorch state dict -> Flax variables, and file loaders.

The reference file is pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (the TF
2015-12-05 graph ported to PyTorch). Its state dict names tensors like
``Mixed_5b.branch1x1.conv.weight`` (``[out, in, kh, kw]``), ``...bn.weight/bias/
running_mean/running_var`` and ``fc.weight`` (``[1008, 2048]``). The Flax model
(:class:`jaxgen.models.inception.InceptionV3`) uses the same module names, so the
mapping is by name: convolution kernels become ``[kh, kw, in, out]``, the dense kernel
is transposed, batch-norm scale/bias go to ``params`` and the running statistics to
``batch_stats``. Every tensor must be used and every Flax variable filled, with the
right shape; anything else is a :class:`UserError`.

Files read by :func:`load_inception_variables` (chosen by ``evals.<name>.inception_weights``):
  * ``.npz`` / ``.safetensors`` holding either the PyTorch names above or the Flax
    layout flattened with ``/`` (``params/Mixed_5b/branch1x1/conv/kernel``), as
    written by ``scripts/convert_inception.py``;
  * ``.pth`` / ``.pt``: pytorch-fid's file itself, read without torch (both the zip
    and the legacy ``torch.save`` format; only tensors and dicts are unpickled).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import json
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError

_BN_TORCH_TO_FLAX = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
_IGNORED_SUFFIXES = ("num_batches_tracked",)


@functools.cache
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Flattened Flax variable names (``collection/module/.../leaf``) -> shapes."""
    from jaxgen.models.inception import INPUT_SIZE, InceptionV3

    shapes = jax.eval_shape(
        InceptionV3().init, jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3))
    )
    return {k: tuple(v.shape) for k, v in flatten(shapes).items()}


def flatten(tree: Mapping, prefix: str = "") -> dict:
    """Nested dict -> ``{"a/b/c": leaf}``."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    """``{"a/b/c": leaf}`` -> nested dict."""
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def torch_name_to_flax(name: str, value: np.ndarray) -> tuple[str, np.ndarray] | None:
    """Maps one state-dict tensor to its flattened Flax name and layout (None: ignored).

    Raises:
      UserError: for a name that is not part of the FID Inception layout.
    """
    parts = name.split(".")
    if parts[-1] in _IGNORED_SUFFIXES:
        return None
    if len(parts) >= 2 and parts[-2] == "conv" and parts[-1] == "weight" and value.ndim == 4:
        return "/".join(["params", *parts[:-1], "kernel"]), np.transpose(value, (2, 3, 1, 0))
    if len(parts) >= 2 and parts[-2] == "bn" and parts[-1] in _BN_TORCH_TO_FLAX:
        collection, leaf = _BN_TORCH_TO_FLAX[parts[-1]]
        return "/".join([collection, *parts[:-1], leaf]), value
    if parts == ["fc", "weight"] and value.ndim == 2:
        return "params/fc/kernel", value.T
    if parts == ["fc", "bias"]:
        return "params/fc/bias", value
    raise UserError(f"Inception weights: unexpected tensor {name!r} {tuple(value.shape)}")


def _check_complete(flat: Mapping[str, np.ndarray], source: str) -> None:
    expected = expected_shapes()
    missing = sorted(set(expected) - set(flat))
    extra = sorted(set(flat) - set(expected))
    if extra:
        raise UserError(
            f"Inception weights {source}: unexpected tensor {extra[0]!r} ({len(extra)} in all)"
        )
    if missing:
        raise UserError(
            f"Inception weights {source}: missing tensor {missing[0]!r} ({len(missing)} in all)"
        )
    for name, shape in expected.items():
        if tuple(flat[name].shape) != shape:
            raise UserError(
                f"Inception weights {source}: tensor {name!r} has shape "
                f"{tuple(flat[name].shape)}, expected {shape}"
            )


def convert_state_dict(state_dict: Mapping[str, np.ndarray], source: str = "state dict") -> dict:
    """pytorch-fid state dict (numpy arrays) -> ``{"params": ..., "batch_stats": ...}``."""
    flat = {}
    for name, value in state_dict.items():
        mapped = torch_name_to_flax(name, np.asarray(value))
        if mapped is not None:
            flat[mapped[0]] = np.asarray(mapped[1], np.float32)
    _check_complete(flat, source)
    return unflatten(flat)


def from_flat(flat: Mapping[str, np.ndarray], source: str) -> dict:
    """Either layout (PyTorch names or flattened Flax names) -> Flax variables."""
    if any(name.startswith(("params/", "batch_stats/")) for name in flat):
        flat = {k: np.asarray(v, np.float32) for k, v in flat.items()}
        _check_complete(flat, source)
        return unflatten(flat)
    return convert_state_dict(flat, source)


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Reads a ``.safetensors`` file (8-byte header size, JSON header, raw little-endian data)."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
        (header_size,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8 : 8 + header_size])
    except (OSError, struct.error, ValueError) as e:
        raise UserError(f"cannot read safetensors file {path}: {e}") from None
    data = memoryview(blob)[8 + header_size :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        if dtype == "BF16":
            import ml_dtypes

            np_dtype = np.dtype(ml_dtypes.bfloat16)
        elif dtype in _SAFETENSORS_DTYPES:
            np_dtype = np.dtype(_SAFETENSORS_DTYPES[dtype]).newbyteorder("<")
        else:
            raise UserError(
                f"safetensors file {path}: tensor {name!r} has unsupported dtype {dtype}"
            )
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=np_dtype)
        if array.size != int(np.prod(info["shape"])):
            raise UserError(f"safetensors file {path}: tensor {name!r} is truncated")
        out[name] = array.reshape(info["shape"])
    return out


_TORCH_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}  # fmt: skip
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclasses.dataclass
class _StorageType:
    dtype: np.dtype


@dataclasses.dataclass
class _TensorRef:
    """A tensor of a ``.pth`` before its storage bytes are read."""

    key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage_key, offset, shape, stride, *unused):
    del unused
    return _TensorRef(storage_key, int(offset), tuple(shape), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a PyTorch state dict without torch, allowing only tensors and dicts."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, np.dtype] = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, requires_grad, hooks: data
        if module == "torch" and name in _TORCH_STORAGES:
            return _StorageType(np.dtype(_TORCH_STORAGES[name]))
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unsupported object {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel[, view metadata])
        if not isinstance(pid, tuple) or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        self.storages[str(pid[2])] = pid[1].dtype
        return str(pid[2])


def _materialize(obj, storages: Mapping[str, np.ndarray]):
    if isinstance(obj, _TensorRef):
        flat = storages[obj.key]
        if not obj.shape:
            return flat[obj.offset].copy()
        strides = [s * flat.itemsize for s in obj.stride]
        return np.lib.stride_tricks.as_strided(flat[obj.offset :], obj.shape, strides).copy()
    if isinstance(obj, Mapping):
        return {k: _materialize(v, storages) for k, v in obj.items()}
    return obj


def _read_pth_zip(path: str) -> dict:
    with zipfile.ZipFile(path) as z:
        pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
        prefix = pkl[: -len("data.pkl")]
        unpickler = _StateDictUnpickler(io.BytesIO(z.read(pkl)))
        obj = unpickler.load()
        storages = {
            key: np.frombuffer(z.read(f"{prefix}data/{key}"), dtype.newbyteorder("<"))
            for key, dtype in unpickler.storages.items()
        }
    return _materialize(obj, storages)


def _read_pth_legacy(path: str) -> dict:
    with open(path, "rb") as f:
        if _StateDictUnpickler(f).load() != _LEGACY_MAGIC:
            raise pickle.UnpicklingError("not a PyTorch file (bad magic number)")
        _StateDictUnpickler(f).load()  # protocol version
        _StateDictUnpickler(f).load()  # sys info
        unpickler = _StateDictUnpickler(f)
        obj = unpickler.load()
        storages = {}
        for key in _StateDictUnpickler(f).load():
            dtype = unpickler.storages[key].newbyteorder("<")
            (numel,) = struct.unpack("<q", f.read(8))
            storages[key] = np.frombuffer(f.read(numel * dtype.itemsize), dtype)
    return _materialize(obj, storages)


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """A ``.pth`` state dict (zip or legacy ``torch.save`` format) as numpy arrays.

    Read without torch and without running pickled code: only tensors, storages and
    (ordered) dicts are accepted.
    """
    try:
        state = _read_pth_zip(path) if zipfile.is_zipfile(path) else _read_pth_legacy(path)
    except (OSError, EOFError, KeyError, StopIteration, ValueError, pickle.UnpicklingError) as e:
        raise UserError(f"cannot read PyTorch file {path}: {e or type(e).__name__}") from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise UserError(f"{path} does not hold a state dict")
    return {k: np.asarray(v, np.float32) for k, v in state.items()}


def read_weight_file(path: str) -> dict[str, np.ndarray]:
    """The named tensors of a ``.npz``, ``.safetensors`` or ``.pth``/``.pt`` file."""
    if not path:
        raise UserError(
            "the 'inception' feature extractor needs weights: set evals.<name>.inception_weights"
            " to pt_inception-2015-12-05-6726825d.pth or its .npz export (no download here)"
        )
    if not os.path.isfile(path):
        raise UserError(f"Inception weight file {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read npz file {path}: {e}") from None
    if ext == ".safetensors":
        return read_safetensors(path)
    if ext in (".pth", ".pt"):
        return read_torch_state_dict(path)
    raise UserError(f"Inception weight file {path}: expected .npz, .safetensors, .pth or .pt")


def load_inception_variables(path: str) -> dict:
    """Flax variables ``{"params", "batch_stats"}`` for :class:`InceptionV3` from a file."""
    return from_flat(read_weight_file(path), path)


def save_npz(variables: Mapping, path: str) -> None:
    """Writes Flax variables flattened with ``/`` (float32) to ``path``."""
    flat = {k: np.asarray(v, np.float32) for k, v in flatten(variables).items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, **flat)
