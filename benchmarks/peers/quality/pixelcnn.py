"""Gated PixelCNN in plain PyTorch (van den Oord et al. 2016), 256-way softmax per pixel.

  python benchmarks/peers/quality/pixelcnn.py --minutes 10 --out pixelcnn.npz

About the size of jaxgen's ``configs/pixelcnn.py:preset=cpu`` (134k parameters): 32 features,
4 gated layers, a 64-wide output head, 139k parameters. Two stacks without a blind spot, built
from convolutions two rows high whose outputs only see rows above (PixelCNN++'s shifted
convolutions, Salimans et al. 2017):

* vertical stack ``u``: sees the rows strictly above the pixel;
* horizontal stack ``h``: sees the pixels to the left in its row, plus ``u`` through a 1 x 1
  link; residual connections on ``h`` only, gates ``tanh(a) * sigmoid(b)``.

Loss: cross-entropy of the 256 intensity levels (a discretized categorical likelihood; the
printed loss is bits per dimension). Adam 1e-3, gradients clipped to norm 1, batch 32.

Ancestral sampling, pixel by pixel in raster order. Since every convolution is two rows high,
row ``i`` of each layer's output is a function of rows ``i - 1`` and ``i`` of its input
alone: the sampler keeps each layer's input of the previous row and recomputes one row per
new pixel (:meth:`GatedPixelCNN.generate`), which gives exactly the full network's output
(``tests/test_quality_peers.py``) at 1/28 of its cost. Arguments and output: ``common.py``.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

if __package__:
    from . import common
else:
    import common

FEATURES, LAYERS, HEAD, LEVELS = 32, 4, 64, 256
BATCH, LR, CLIP = 32, 1e-3, 1.0


def gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedPixelCNN(nn.Module):
    """Logits ``[B, 256, H, W]`` of every pixel given those before it in raster order.

    Layer inputs carry rows of context on top: ``first_*`` take the image (in [-1, 1]) with
    two rows above the ``R`` output rows, the gated layers take ``R + 1`` rows and return
    ``R``. The full forward pass pads zeros on top; the sampler passes cached rows instead.
    """

    def __init__(self, features: int = FEATURES, layers: int = LAYERS, head: int = HEAD):
        super().__init__()
        f = features
        self.u0 = nn.Conv2d(1, f, (2, 5))  # x rows i-2, i-1; columns j-2 .. j+2
        self.h0_above = nn.Conv2d(1, f, (1, 5))  # x row i-1; columns j-2 .. j+2
        self.h0_left = nn.Conv2d(1, f, (2, 2))  # x rows i-1, i; columns j-2, j-1 (shifted)
        self.vconv = nn.ModuleList(nn.Conv2d(f, 2 * f, (2, 3)) for _ in range(layers))
        self.v2h = nn.ModuleList(nn.Conv2d(2 * f, 2 * f, 1) for _ in range(layers))
        self.hconv = nn.ModuleList(nn.Conv2d(f, 2 * f, (2, 3)) for _ in range(layers))
        self.hout = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(f, head, 1), nn.ReLU(),
                                  nn.Conv2d(head, LEVELS, 1))  # fmt: skip

    def first_u(self, xp: torch.Tensor) -> torch.Tensor:
        """``xp`` [B, 1, R + 2, W] -> u of its last R rows: each sees the two rows above."""
        return self.u0(F.pad(xp[:, :, :-1], (2, 2, 0, 0)))

    def first_h(self, xp: torch.Tensor) -> torch.Tensor:
        above = self.h0_above(F.pad(xp[:, :, 1:-1], (2, 2, 0, 0)))
        left = self.h0_left(F.pad(xp[:, :, 1:], (1, 0, 0, 0)))  # columns j-1, j ...
        return above + F.pad(left, (1, 0, 0, 0))[..., :-1]  # ... shifted right: j-2, j-1

    def vertical(self, layer: int, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u2`` [B, f, R + 1, W] -> (next u, the pre-gate activations for the link) [.., R, W]."""
        v = self.vconv[layer](F.pad(u2, (1, 1, 0, 0)))
        return gate(v), v

    def horizontal(self, layer: int, h2: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``h2`` [B, f, R + 1, W] and the link ``v`` [B, 2f, R, W] -> next h [B, f, R, W]."""
        a = self.hconv[layer](F.pad(h2, (2, 0, 0, 0))) + self.v2h[layer](v)
        return h2[:, :, 1:] + self.hout[layer](gate(a))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, 1, H, W] in [0, 1] -> logits [B, 256, H, W]."""
        xp = F.pad(x * 2.0 - 1.0, (0, 0, 2, 0))
        u, h = self.first_u(xp), self.first_h(xp)
        for layer in range(len(self.vconv)):
            u, v = self.vertical(layer, F.pad(u, (0, 0, 1, 0)))
            h = self.horizontal(layer, F.pad(h, (0, 0, 1, 0)), v)
        return self.head(h)

    @torch.no_grad()
    def generate(self, n: int, size: int = 28, given: torch.Tensor | None = None):
        """Ancestral samples, float ``[n, 1, size, size]`` in [0, 1], and the logits
        ``[n, 256, size, size]`` each pixel was drawn from. With ``given`` ([n, 1, size, size]
        in [0, 1]) its pixels are taken instead of drawn (the logits are then the forward
        pass's)."""
        layers = len(self.vconv)
        xp = torch.zeros(n, 1, size + 2, size)  # two zero rows on top, as in forward
        zeros = torch.zeros(n, self.hout[0].out_channels, 1, size)
        u_prev, h_prev = [zeros] * layers, [zeros] * layers  # layer inputs of the row above
        logits = torch.empty(n, LEVELS, size, size)

        def h_row(window, vs):
            h, inputs = self.first_h(window), []
            for layer in range(layers):
                inputs.append(h)
                h = self.horizontal(layer, torch.cat([h_prev[layer], h], 2), vs[layer])
            return h, inputs

        for i in range(size):
            window = xp[:, :, i : i + 3]  # rows i-2, i-1, i of the image
            u, us, vs = self.first_u(window), [], []
            for layer in range(layers):
                us.append(u)
                u, v = self.vertical(layer, torch.cat([u_prev[layer], u], 2))
                vs.append(v)
            for j in range(size):
                h, _ = h_row(window, vs)
                logits[:, :, i, j] = self.head(h[:, :, :, j : j + 1])[:, :, 0, 0]
                if given is None:
                    level = torch.multinomial(F.softmax(logits[:, :, i, j], 1), 1)[:, 0]
                else:
                    level = (given[:, 0, i, j] * 255.0).round().long()
                xp[:, 0, i + 2, j] = level.float() / 255.0 * 2.0 - 1.0
            _, h_prev = h_row(window, vs)  # the finished row, as the next row's context
            u_prev = us
        return (xp[:, :, 2:] + 1.0) / 2.0, logits


def loss_bits_per_dim(model: GatedPixelCNN, x: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the 256 levels of ``x`` [B, 1, 28, 28] in [0, 1]."""
    levels = (x[:, 0] * 255.0).round().long()
    return F.cross_entropy(model(x), levels) / math.log(2.0)


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    model = GatedPixelCNN()
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(x):
        return common.descend(opt, loss_bits_per_dim(model, x), CLIP)

    data = common.batches(common.train_images(), BATCH, args.seed)
    steps, minutes = common.train_for(args.minutes, step, data)
    model.eval()
    images, seconds = common.sample_in_batches(lambda n: model.generate(n)[0], args.num, 500)
    common.write_samples(args, "pixelcnn", images, seconds, steps, minutes,
                         common.count_params(model))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
