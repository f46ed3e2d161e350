"""Converts FID Inception weights to the ``.npz`` that jaxgen loads without torch.

  python scripts/convert_inception.py pt_inception-2015-12-05-6726825d.pth inception_fid.npz

The input is pytorch-fid's state dict (``.pth``/``.pt``) or an ``.npz``/``.safetensors``
export of it, all read without torch. Every tensor is mapped by name and shape (see
:mod:`jaxgen.evaluate.inception_weights`); any mismatch is a one-line error with exit
status 2. Use the output with ``evals.<name>.inception_weights=<file>``.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from jaxgen.errors import UserError  # noqa: E402
from jaxgen.evaluate import inception_weights  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help=".pth, .pt, .npz or .safetensors")
    parser.add_argument("output", help="the .npz to write (Flax layout)")
    args = parser.parse_args(argv)
    if not args.output.endswith(".npz"):
        print(f"error: output {args.output} must end in .npz", file=sys.stderr)
        return 2
    try:
        variables = inception_weights.load_inception_variables(args.input)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    inception_weights.save_npz(variables, args.output)
    flat = inception_weights.flatten(variables)
    total = sum(v.size for v in flat.values())
    print(f"wrote {args.output}: {len(flat)} arrays, {total:,} values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
