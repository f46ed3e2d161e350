"""Weight files: the one place jaxgen reads (and writes) them.

Formats, chosen by :func:`read_weight_file` from the file name's extension:
  * ``.safetensors``: read and written through the ``safetensors`` library, which checks
    the header (dtypes, shapes, ``data_offsets`` inside the file and covering it).
  * ``.npz``: numpy's archive, without pickled objects.
  * ``.pth`` / ``.pt``: a PyTorch state dict (the zip format of ``torch.save`` or the legacy
    one), read without torch. Unpickling builds only tensors, storages and (ordered) dicts;
    nothing else in the pickle is looked up or called. Every tensor's storage, offset,
    shape and strides are checked against its storage before any element is read.

Every reader returns ``{name: np.ndarray}`` with the file's dtypes (bfloat16 as
``ml_dtypes.bfloat16``; :func:`as_float32` converts). Anything wrong with a file (missing,
truncated, malformed, out of bounds) is a one-line :class:`UserError` that starts with
``weight file <path>:``.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import lzma
import math
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from jaxgen.errors import UserError

SUFFIXES = (".npz", ".safetensors", ".pth", ".pt")

# A .pth tensor may be a view of part of a storage or share one with another tensor (tied
# weights), but all tensors together may hold at most this many times the elements of all
# storages: a crafted file cannot ask for unbounded memory.
MAX_VIEW_EXPANSION = 4

_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def _error(path: str, reason: object) -> UserError:
    return UserError(f"weight file {path}: {' '.join(str(reason).split())}")


def _require_file(path: str) -> None:
    if not path:
        raise UserError("weight file: no path given")
    if not os.path.isfile(path):
        raise _error(path, "does not exist" if not os.path.exists(path) else "is not a file")


def as_float32(path: str, name: str, value: np.ndarray) -> np.ndarray:
    """``value`` as float32, or a :class:`UserError` naming ``path`` and ``name`` when its
    dtype holds no real numbers (strings, complex, ...)."""
    value = np.asarray(value)
    if value.dtype.kind not in "biuf" and value.dtype != _BFLOAT16:
        raise _error(path, f"tensor {name!r} has dtype {value.dtype}, expected real numbers")
    return value.astype(np.float32)


# --- safetensors --------------------------------------------------------------------------


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file, in the file's dtype.

    Raises:
      UserError: the file is missing, not in the format (bad header, offsets outside the
        data, a truncated body) or holds a dtype numpy cannot represent (float8, ...).
    """
    _require_file(path)
    try:
        handle = safe_open(path, framework="numpy")
    except (SafetensorError, OSError, ValueError) as e:
        detail = str(e).removeprefix("Error while deserializing header: ")
        raise _error(path, f"not a safetensors file ({detail})") from None
    out = {}
    with handle as f:
        for name in f.keys():
            try:
                out[name] = f.get_tensor(name)
            except Exception as e:  # numpy has no type for the dtype (AttributeError, ...)
                dtype = f.get_slice(name).get_dtype()
                raise _error(
                    path, f"tensor {name!r} has dtype {dtype}, which numpy cannot hold ({e})"
                ) from None
    return out


def write_safetensors(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes ``arrays`` (any numeric dtype, bfloat16 included) as ``.safetensors``.

    Raises:
      UserError: the file cannot be written or an array's dtype has no safetensors name.
    """
    tensors = {str(k): np.ascontiguousarray(v) for k, v in arrays.items()}
    try:
        save_file(tensors, path)
    except (SafetensorError, OSError, ValueError, TypeError, KeyError) as e:
        raise _error(path, f"cannot write ({type(e).__name__}: {e})") from None


# --- npz ----------------------------------------------------------------------------------

# What a damaged zip archive or .npy member raises while being read (RuntimeError: an
# encrypted member; NotImplementedError: an unknown compression method).
_ARCHIVE_ERRORS = (
    OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
    struct.error, MemoryError, OverflowError, RuntimeError, NotImplementedError,
)  # fmt: skip


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` file (pickled objects are refused).

    Raises:
      UserError: the file is missing, not a zip archive, truncated, or holds a member that
        is not a plain array.
    """
    _require_file(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        # np.load tells the formats apart by these bytes, and unpickles anything else.
        if magic == b"\x93NUMPY":
            raise ValueError("a single .npy array, not an archive")
        if not magic.startswith(b"PK"):
            raise zipfile.BadZipFile("not a zip archive")
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except _ARCHIVE_ERRORS as e:
        raise _error(path, f"unreadable .npz ({type(e).__name__}: {e})") from None


# --- PyTorch state dicts ------------------------------------------------------------------

_TORCH_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": _BFLOAT16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}  # fmt: skip
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Malformed(Exception):
    """A structural problem found while parsing; becomes a :class:`UserError`."""


@dataclasses.dataclass
class _StorageType:
    name: str


@dataclasses.dataclass
class _TensorRef:
    """A tensor as pickled: a view ``(offset, shape, stride)`` in elements of a storage."""

    key: object
    offset: object
    shape: object
    stride: object


def _rebuild_tensor(storage, offset, shape, stride, *unused):
    del unused  # requires_grad, backward hooks, metadata
    return _TensorRef(storage, offset, shape, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    del requires_grad, backward_hooks, unused
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict without torch: only tensors, storages and (ordered) dicts.

    ``storages`` maps each storage key met to its dtype.
    """

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, np.dtype] = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _TORCH_STORAGES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise pickle.UnpicklingError("a persistent id that is not a storage")
        kind, key = pid[1], pid[2]
        if not isinstance(key, str | int):
            raise pickle.UnpicklingError(f"a storage key of type {type(key).__name__}")
        key = str(key)
        if not isinstance(kind, _StorageType) or kind.name not in _TORCH_STORAGES:
            raise pickle.UnpicklingError(f"storage {key!r} has no known storage type")
        dtype = np.dtype(_TORCH_STORAGES[kind.name])
        if self.storages.setdefault(key, dtype) != dtype:
            raise pickle.UnpicklingError(f"storage {key!r} is used with two dtypes")
        return key


def _storage_array(raw: bytes, dtype: np.dtype, key: str) -> np.ndarray:
    if len(raw) % dtype.itemsize:
        raise _Malformed(
            f"storage {key!r} has {len(raw)} bytes, not a multiple of its dtype's "
            f"{dtype.itemsize} ({dtype})"
        )
    return np.frombuffer(raw, dtype.newbyteorder("<"))


def _is_index(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _view(ref: _TensorRef, storages: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """A copy of the elements ``ref`` selects, after checking that all lie in its storage."""
    if not isinstance(ref.key, str) or ref.key not in storages:
        raise _Malformed(f"tensor {name!r} refers to a storage that the file does not hold")
    flat = storages[ref.key]
    shape, stride, offset = ref.shape, ref.stride, ref.offset
    if not (
        isinstance(shape, tuple | list)
        and isinstance(stride, tuple | list)
        and _is_index(offset)
        and all(map(_is_index, shape))
        and all(map(_is_index, stride))
    ):
        raise _Malformed(f"tensor {name!r} has a non-integer offset, shape or stride")
    if len(shape) != len(stride):
        raise _Malformed(f"tensor {name!r} has shape {tuple(shape)} but stride {tuple(stride)}")
    if offset < 0 or min(shape, default=0) < 0 or min(stride, default=0) < 0:
        raise _Malformed(
            f"tensor {name!r} has a negative offset, size or stride "
            f"(offset {offset}, shape {tuple(shape)}, stride {tuple(stride)})"
        )
    numel = math.prod(shape)
    if numel > 0:
        last = offset + sum((d - 1) * s for d, s in zip(shape, stride, strict=True))
        if last >= flat.size:
            raise _Malformed(
                f"tensor {name!r} (offset {offset}, shape {tuple(shape)}, stride "
                f"{tuple(stride)}) reaches element {last} of a storage of {flat.size}"
            )
    if numel > max(flat.size, 1):
        raise _Malformed(f"tensor {name!r} has more elements ({numel}) than its storage")
    byte_strides = tuple(s * flat.itemsize for s in stride)
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], tuple(shape), byte_strides, writeable=False
    )
    return np.array(view, dtype=flat.dtype.newbyteorder("="), copy=True)


def _state_dict(obj, storages: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The unpickled object (a state dict, or a dict holding one as ``state_dict``) -> arrays."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise _Malformed(f"holds a {type(obj).__name__}, not a state dict")
    budget = MAX_VIEW_EXPANSION * max(sum(s.size for s in storages.values()), 1)
    out = {}
    for name, ref in obj.items():
        if not isinstance(name, str):
            raise _Malformed(f"has a state dict key of type {type(name).__name__}")
        if not isinstance(ref, _TensorRef):
            raise _Malformed(f"entry {name!r} is not a tensor ({type(ref).__name__})")
        out[name] = _view(ref, storages, name)
        budget -= out[name].size
        if budget < 0:
            raise _Malformed(
                f"its tensors hold over {MAX_VIEW_EXPANSION} times the elements of its storages"
            )
    return out


def _read_pth_zip(path: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        pkl = next((n for n in sorted(names) if n.split("/")[-1] == "data.pkl"), None)
        if pkl is None:
            raise _Malformed("a zip archive without data.pkl, not a PyTorch file")
        prefix = pkl[: -len("data.pkl")]
        if f"{prefix}byteorder" in names and z.read(f"{prefix}byteorder").strip() != b"little":
            raise _Malformed("big-endian storages are not supported")
        unpickler = _StateDictUnpickler(io.BytesIO(z.read(pkl)))
        obj = unpickler.load()
        storages = {}
        for key, dtype in unpickler.storages.items():
            member = f"{prefix}data/{key}"
            if member not in names:
                raise _Malformed(f"storage {key!r} ({member}) is missing from the archive")
            storages[key] = _storage_array(z.read(member), dtype, key)
    return _state_dict(obj, storages)


def _read_pth_legacy(path: str) -> dict[str, np.ndarray]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if _StateDictUnpickler(f).load() != _LEGACY_MAGIC:
            raise _Malformed("not a PyTorch file (neither a zip archive nor the legacy magic)")
        _StateDictUnpickler(f).load()  # protocol version
        _StateDictUnpickler(f).load()  # system info
        unpickler = _StateDictUnpickler(f)
        obj = unpickler.load()
        keys = _StateDictUnpickler(f).load()
        if not isinstance(keys, list):
            raise _Malformed("the list of storages is missing")
        storages = {}
        for key in keys:
            if not isinstance(key, str) or key not in unpickler.storages:
                raise _Malformed("lists a storage that no tensor declared")
            dtype = unpickler.storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            nbytes = numel * dtype.itemsize
            if numel < 0 or nbytes > size - f.tell():
                raise _Malformed(f"storage {key!r} of {numel} elements runs past the file's end")
            storages[key] = _storage_array(f.read(nbytes), dtype, key)
    return _state_dict(obj, storages)


# Everything a malformed pickle or archive can raise while being parsed.
_PARSE_ERRORS = (
    *_ARCHIVE_ERRORS, _Malformed, pickle.UnpicklingError, TypeError, AttributeError,
    IndexError, RecursionError,
)  # fmt: skip


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """A PyTorch state dict (``.pth``/``.pt``, zip or legacy format) as numpy arrays.

    Read without torch and without running pickled code. Each tensor is a copy in its
    storage's dtype; a dict holding the state dict under ``state_dict`` is unwrapped.

    Raises:
      UserError: naming the file (and the tensor or storage) for anything malformed: a
        pickle that asks for another object, a missing storage, a storage whose size is not
        a multiple of its dtype's, a tensor whose offset, shape or stride reaches outside its
        storage.
    """
    _require_file(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_pth_zip(path)
        return _read_pth_legacy(path)
    except _PARSE_ERRORS as e:
        detail = str(e) if isinstance(e, _Malformed) else f"{type(e).__name__}: {e}"
        raise _error(path, f"unreadable PyTorch file ({detail})") from None


# --- any of them --------------------------------------------------------------------------


def read_weight_file(path: str) -> dict[str, np.ndarray]:
    """The named tensors of a ``.npz``, ``.safetensors`` or ``.pth``/``.pt`` file.

    Raises:
      UserError: the file is missing, has another extension, or cannot be read.
    """
    _require_file(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return read_npz(path)
    if ext == ".safetensors":
        return read_safetensors(path)
    if ext in (".pth", ".pt"):
        return read_torch_state_dict(path)
    raise _error(path, f"expected a name ending in one of {', '.join(SUFFIXES)}")


def read_npz_with_meta(
    path: str,
    what: str,
    required_meta: set[str],
    expected_shapes: Callable[[dict], dict[str, tuple[int, ...]]],
) -> tuple[dict[str, np.ndarray], dict]:
    """``(flat parameters, meta)`` of an ``.npz`` holding a JSON ``meta`` entry and
    ``params/<module>/<leaf>`` arrays (the shipped feature extractors' format).

    ``what`` names the file in errors (``"classifier weights"``); ``expected_shapes(meta)``
    gives the ``{"<module>/<leaf>": shape}`` of the model ``meta`` describes (raising
    UserError when it describes none). Every parameter must be present with that shape.

    Raises:
      UserError: naming ``path``: unreadable, no ``meta``, a ``required_meta`` key missing,
        or the first tensor missing, extra or of another shape.
    """
    arrays = read_npz(path)
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, ValueError) as e:
        detail = "no 'meta' entry" if isinstance(e, KeyError) else f"'meta' is not JSON ({e})"
        raise UserError(f"cannot read {what} {path}: {detail}") from None
    if not isinstance(meta, dict):
        raise UserError(f"cannot read {what} {path}: 'meta' is not a JSON object")
    flat = {k[len("params/") :]: v for k, v in arrays.items() if k.startswith("params/")}
    missing = set(required_meta) - set(meta)
    if missing or not flat:
        raise UserError(f"{what} {path} lack {sorted(missing) or 'parameters'}")
    expected = expected_shapes(meta)
    for name in sorted(set(expected) | set(flat)):
        if name not in flat:
            problem = "is missing"
        elif name not in expected:
            problem = "is not part of the model"
        elif tuple(flat[name].shape) != expected[name]:
            problem = f"has shape {tuple(flat[name].shape)}, expected {expected[name]}"
        else:
            continue
        raise UserError(f"{what} {path} do not fit the recorded model: tensor {name!r} {problem}")
    return flat, meta
