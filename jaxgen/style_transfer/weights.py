"""VGG19 weight files: the export format, its loader, and the torchvision mapping.

The export holds, for each of the 16 convolutions ``convX_Y``, ``convX_Y/kernel`` float32
``[3, 3, C_in, C_out]`` (Flax's HWIO layout) and ``convX_Y/bias`` float32 ``[C_out]``, in a
``.npz`` or ``.safetensors`` file. :func:`load_vgg19` also reads a file in torchvision's layout
(``features.<i>.weight`` ``[C_out, C_in, 3, 3]``, ``features.<i>.bias``; ``classifier.*`` is
ignored), so a ``.safetensors`` copy of ``vgg19-dcbb9e9d.pth`` loads as is. No torch is needed:
files are read by :mod:`jaxgen.weight_files`. Every problem with a file is a one-line
:class:`UserError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxgen.errors import UserError
from jaxgen.models.vgg import VGG19_LAYERS, vgg19_param_shapes
from jaxgen.weight_files import as_float32, read_weight_file, write_safetensors

WEIGHT_SUFFIXES = (".npz", ".safetensors")


def torchvision_indices() -> dict[str, int]:
    """``convX_Y`` -> index ``i`` of ``features.<i>`` in torchvision's ``vgg19().features``.

    torchvision stacks (conv, ReLU) per layer and one max-pool after each block, so the
    convolutions sit at 0, 2, 5, 7, 10, ..., 34.
    """
    indices, i = {}, 0
    for n, name in enumerate(VGG19_LAYERS):
        indices[name] = i
        i += 2
        if n + 1 < len(VGG19_LAYERS) and VGG19_LAYERS[n + 1].endswith("_1"):
            i += 1  # the pooling layer closing the block
    return indices


def torchvision_to_export(
    state_dict: Mapping[str, np.ndarray], source: str = "state dict"
) -> dict[str, np.ndarray]:
    """torchvision VGG19 state dict (numpy arrays) -> the export layout (see module docstring).

    ``features.<i>.weight`` ``[O, I, 3, 3]`` becomes ``convX_Y/kernel`` ``[3, 3, I, O]`` and
    ``features.<i>.bias`` becomes ``convX_Y/bias``; ``classifier.*`` entries are dropped.

    Raises:
      UserError: naming ``source`` (the file) and a missing or unexpected ``features.*``
        name, or the first entry of a wrong shape.
    """
    by_index = {i: name for name, i in torchvision_indices().items()}
    shapes = vgg19_param_shapes()
    export = {}
    for key, value in state_dict.items():
        if key.startswith("classifier."):
            continue
        parts = key.split(".")
        if (
            len(parts) != 3
            or parts[0] != "features"
            or not parts[1].isdigit()
            or int(parts[1]) not in by_index
            or parts[2] not in ("weight", "bias")
        ):
            raise UserError(
                f"VGG19 weights {source}: unexpected entry {key!r} for torchvision's layout"
            )
        name = by_index[int(parts[1])]
        value = as_float32(source, key, value)
        if parts[2] == "weight":
            out, cin = shapes[name]["kernel"][3], shapes[name]["kernel"][2]
            _check_shape(f"{source}: {key}", value.shape, (out, cin, 3, 3))
            export[f"{name}/kernel"] = np.ascontiguousarray(value.transpose(2, 3, 1, 0))
        else:
            _check_shape(f"{source}: {key}", value.shape, shapes[name]["bias"])
            export[f"{name}/bias"] = value
    for name, i in torchvision_indices().items():
        for part, suffix in (("kernel", "weight"), ("bias", "bias")):
            if f"{name}/{part}" not in export:
                raise UserError(
                    f"VGG19 weights {source}: missing entry 'features.{i}.{suffix}' ({name})"
                )
    return export


def export_to_params(arrays: Mapping[str, np.ndarray], source: str) -> dict:
    """Export-layout arrays -> Flax params ``{convX_Y: {"kernel", "bias"}}`` for :class:`VGG19`.

    Raises:
      UserError: naming ``source`` and the first missing, unexpected or misshaped entry.
    """
    shapes = vgg19_param_shapes()
    expected = {f"{n}/{p}" for n in VGG19_LAYERS for p in ("kernel", "bias")}
    unexpected = sorted(set(arrays) - expected)
    if unexpected:
        raise UserError(
            f"VGG19 weights {source}: unexpected entry {unexpected[0]!r}; "
            "expected convX_Y/kernel and convX_Y/bias (conv1_1 ... conv5_4)"
        )
    params = {}
    for name in VGG19_LAYERS:
        params[name] = {}
        for part in ("kernel", "bias"):
            key = f"{name}/{part}"
            if key not in arrays:
                raise UserError(f"VGG19 weights {source}: missing entry {key!r}")
            value = as_float32(source, key, arrays[key])
            _check_shape(f"{source}: {key}", value.shape, shapes[name][part])
            params[name][part] = value
    return params


def load_vgg19(path: str) -> dict:
    """Reads a ``.npz``/``.safetensors`` file (export or torchvision layout) -> Flax params.

    Raises:
      UserError: a missing or unreadable file, an unknown suffix, or wrong names/shapes.
    """
    arrays = read_arrays(path)
    if any(k.startswith("features.") for k in arrays):
        arrays = torchvision_to_export(arrays, path)
    return export_to_params(arrays, path)


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """All arrays of a ``.npz`` or ``.safetensors`` file, by name.

    Raises:
      UserError: another suffix, or a file that is missing or unreadable (see
        :mod:`jaxgen.weight_files`).
    """
    if not path.endswith(WEIGHT_SUFFIXES):
        raise UserError(f"weights file {path!r}: expected a name ending in {WEIGHT_SUFFIXES}")
    return read_weight_file(path)


def write_export(path: str, export: Mapping[str, np.ndarray]) -> None:
    """Writes export-layout arrays to ``path`` (``.npz`` or ``.safetensors``)."""
    if path.endswith(".npz"):
        np.savez(path, **{k: np.asarray(v, np.float32) for k, v in export.items()})
    elif path.endswith(".safetensors"):
        write_safetensors(path, {k: np.asarray(v, np.float32) for k, v in export.items()})
    else:
        raise UserError(f"weights file {path!r}: expected a name ending in {WEIGHT_SUFFIXES}")


def _check_shape(what: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(shape) != tuple(expected):
        raise UserError(f"VGG19 weights {what}: shape {tuple(shape)}, expected {tuple(expected)}")
