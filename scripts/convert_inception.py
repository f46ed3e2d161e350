"""Converts FID Inception weights to the ``.npz`` that jaxgen loads without torch.

  python scripts/convert_inception.py pt_inception-2015-12-05-6726825d.pth inception_fid.npz

The input is pytorch-fid's state dict (``.pth``/``.pt``) or an ``.npz``/``.safetensors``
export of it, all read without torch. Every tensor is mapped by name and shape (see
:mod:`jaxgen.evaluate.inception_weights`); any mismatch is a one-line error with exit
status 2. Use the output with ``evals.<name>.inception_weights=<file>``. The same command
line is ``python -m jaxgen.evaluate.inception_weights INPUT OUTPUT.npz``.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from jaxgen.evaluate import inception_weights  # noqa: E402


def main(argv=None) -> int:
    return inception_weights.main(argv, prog="scripts/convert_inception.py")


if __name__ == "__main__":
    sys.exit(main())
