"""Converts torchvision's VGG19 checkpoint to the export jaxgen's style transfer loads.

    python scripts/convert_vgg19.py vgg19-dcbb9e9d.pth vgg19.npz
    python launch.py --config=configs/style_transfer.py:weights=vgg19.npz --workdir=/tmp/style

The input is the state dict of ``torchvision.models.vgg19`` (``features.<i>.weight``
``[C_out, C_in, 3, 3]``, ``features.<i>.bias``; the ``classifier.*`` head is dropped). The
output (``.npz`` or ``.safetensors``, by its suffix) holds ``convX_Y/kernel``
``[3, 3, C_in, C_out]`` and ``convX_Y/bias``; see ``jaxgen/style_transfer/weights.py``.
Only this script needs torch (to unpickle the ``.pth``); running style transfer does not.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxgen.errors import UserError  # noqa: E402
from jaxgen.style_transfer import weights  # noqa: E402


def convert(state_dict) -> dict[str, np.ndarray]:
    """A torchvision VGG19 state dict (torch tensors or numpy arrays) -> the export arrays."""
    arrays = {k: np.asarray(_to_numpy(v), np.float32) for k, v in state_dict.items()}
    return weights.torchvision_to_export(arrays)


def _to_numpy(value):
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def load_pth(path: str) -> dict:
    try:
        import torch
    except ImportError:
        raise UserError("reading a .pth file needs torch: pip install torch") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="torchvision vgg19 state dict (.pth)")
    parser.add_argument("output", help="export to write (.npz or .safetensors)")
    args = parser.parse_args(argv)
    try:
        if not os.path.isfile(args.input):
            raise UserError(f"{args.input!r} does not exist")
        export = convert(load_pth(args.input))
        weights.write_export(args.output, export)
        weights.load_vgg19(args.output)  # the file must load back as it will at run time
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {len(export) // 2} convolutions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
