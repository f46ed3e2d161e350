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
All are read by :mod:`jaxgen.weight_files`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError
from jaxgen.weight_files import as_float32, read_weight_file

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


def torch_name_to_flax(
    name: str, value: np.ndarray, source: str = "state dict"
) -> tuple[str, np.ndarray] | None:
    """Maps one state-dict tensor to its flattened Flax name and layout (None: ignored).

    Raises:
      UserError: naming ``source`` and the tensor, for a name that is not part of the FID
        Inception layout or a kernel of the wrong rank.
    """
    parts = name.split(".")
    if parts[-1] in _IGNORED_SUFFIXES:
        return None
    is_conv = len(parts) >= 2 and parts[-2] == "conv" and parts[-1] == "weight"
    if (is_conv and value.ndim != 4) or (parts == ["fc", "weight"] and value.ndim != 2):
        raise UserError(
            f"Inception weights {source}: tensor {name!r} has shape {tuple(value.shape)}, "
            f"expected a {4 if is_conv else 2}-d kernel"
        )
    if is_conv:
        return "/".join(["params", *parts[:-1], "kernel"]), np.transpose(value, (2, 3, 1, 0))
    if len(parts) >= 2 and parts[-2] == "bn" and parts[-1] in _BN_TORCH_TO_FLAX:
        collection, leaf = _BN_TORCH_TO_FLAX[parts[-1]]
        return "/".join([collection, *parts[:-1], leaf]), value
    if parts == ["fc", "weight"]:
        return "params/fc/kernel", value.T
    if parts == ["fc", "bias"]:
        return "params/fc/bias", value
    raise UserError(f"Inception weights {source}: unexpected tensor {name!r} {tuple(value.shape)}")


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
        mapped = torch_name_to_flax(name, np.asarray(value), source)
        if mapped is not None:
            flat[mapped[0]] = as_float32(source, name, mapped[1])
    _check_complete(flat, source)
    return unflatten(flat)


def from_flat(flat: Mapping[str, np.ndarray], source: str) -> dict:
    """Either layout (PyTorch names or flattened Flax names) -> Flax variables.

    Raises:
      UserError: naming ``source`` and the first unexpected, missing or misshaped tensor.
    """
    if any(name.startswith(("params/", "batch_stats/")) for name in flat):
        flat = {k: as_float32(source, k, v) for k, v in flat.items()}
        _check_complete(flat, source)
        return unflatten(flat)
    return convert_state_dict(flat, source)


def require_file(path: str) -> None:
    """Checks that ``path`` (``evals.<name>.inception_weights``) names an existing file.

    Raises:
      UserError: saying how to get the file when it is not set or does not exist.
    """
    how = (
        "convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth (no download here) with "
        "`python scripts/convert_inception.py pt_inception-2015-12-05-6726825d.pth "
        "inception_fid.npz` (docs/fid.md says where to get it)"
    )
    if not path:
        raise UserError(
            "the 'inception' feature extractor needs weights: set "
            f"evals.<name>.inception_weights to the .pth or its .npz export; {how}"
        )
    if not os.path.isfile(path):
        raise UserError(f"Inception weight file {path} does not exist; {how}")


def load_inception_variables(path: str) -> dict:
    """Flax variables ``{"params", "batch_stats"}`` for :class:`InceptionV3` from a file.

    Raises:
      UserError: the file is not set, missing or unreadable, or its tensors do not fit
        (first mismatching name or shape).
    """
    require_file(path)
    return from_flat(read_weight_file(path), path)


def save_npz(variables: Mapping, path: str) -> None:
    """Writes Flax variables flattened with ``/`` (float32) to ``path``."""
    flat = {k: np.asarray(v, np.float32) for k, v in flatten(variables).items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, **flat)


def main(argv=None, prog: str = "python -m jaxgen.evaluate.inception_weights") -> int:
    """The converter's command line (``scripts/convert_inception.py`` and
    ``python -m jaxgen.evaluate.inception_weights INPUT OUTPUT.npz``); 2 on a bad input."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Converts FID Inception weights to the .npz that jaxgen loads without torch.",
    )
    parser.add_argument("input", help=".pth, .pt, .npz or .safetensors")
    parser.add_argument("output", help="the .npz to write (Flax layout)")
    args = parser.parse_args(argv)
    if not args.output.endswith(".npz"):
        print(f"error: output {args.output} must end in .npz", file=sys.stderr)
        return 2
    try:
        variables = load_inception_variables(args.input)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    save_npz(variables, args.output)
    flat = flatten(variables)
    total = sum(v.size for v in flat.values())
    print(f"wrote {args.output}: {len(flat)} arrays, {total:,} values")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
