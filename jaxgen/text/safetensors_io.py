"""Reads ``.safetensors`` files into numpy arrays (no ``safetensors`` package needed).

The format: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets relative to the end of the header), then the raw little-endian data.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from jaxgen.errors import UserError

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}  # fmt: skip


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of the file at ``path``; bfloat16 is widened to float32.

    Raises:
      UserError: when the file is missing, truncated or not in the format.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read weight file {path}: {e.strerror}") from None
    name = os.path.basename(path)
    if len(data) < 8:
        raise UserError(f"{path} is not a safetensors file (only {len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise UserError(f"{path} is not a safetensors file (header length {header_len})")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path} is not a safetensors file (bad JSON header)") from None
    body = memoryview(data)[8 + header_len :]
    tensors = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        dtype, shape = info.get("dtype"), tuple(info.get("shape", ()))
        begin, end = info.get("data_offsets", (0, -1))
        if dtype != "BF16" and dtype not in _DTYPES:
            raise UserError(f"{name}: tensor {key} has unsupported dtype {dtype}")
        itemsize = 2 if dtype == "BF16" else np.dtype(_DTYPES[dtype]).itemsize
        if not 0 <= begin <= end <= len(body) or end - begin != itemsize * int(np.prod(shape)):
            raise UserError(f"{name}: tensor {key} has offsets {begin}..{end} that do not fit")
        if dtype == "BF16":
            raw = np.frombuffer(body[begin:end], "<u2").reshape(shape)
            tensors[key] = _bfloat16_to_float32(raw)
        else:
            dt = np.dtype(_DTYPES[dtype]).newbyteorder("<")
            tensors[key] = (
                np.frombuffer(body[begin:end], dt).reshape(shape).astype(dt.newbyteorder("="))
            )
    return tensors


def write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
    """Writes float32/int tensors in the safetensors format (used to make test models)."""
    names = {np.dtype(v): k for k, v in _DTYPES.items()}
    header, chunks, offset = {}, [], 0
    for key, value in tensors.items():
        value = np.ascontiguousarray(value)
        if value.dtype not in names:
            raise UserError(f"cannot write tensor {key} of dtype {value.dtype}")
        data = value.astype(value.dtype.newbyteorder("<")).tobytes()
        header[key] = {
            "dtype": names[value.dtype],
            "shape": list(value.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))
