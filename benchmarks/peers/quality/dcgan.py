"""DCGAN in plain PyTorch (Radford et al. 2016) at 28 x 28, the usual Fashion-MNIST recipe.

  python benchmarks/peers/quality/dcgan.py --minutes 10 --out dcgan.npz

Generator: z (100-d, N(0, I)) -> transposed convolutions 128 (7 x 7), 64 (14 x 14), 1 (28 x 28)
with BatchNorm and ReLU, tanh output. Discriminator: convolutions 64 (14 x 14) and 128 (7 x 7,
BatchNorm) with LeakyReLU 0.2, then one logit. Weights N(0, 0.02). Non-saturating loss (binary
cross-entropy on the logits), one discriminator and one generator step per batch of 128,
Adam 2e-4 (beta1 0.5) for both. Samples come from the raw generator in training mode (batch
statistics, as the PyTorch DCGAN example draws them). Arguments and output: ``common.py``.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

if __package__:
    from . import common
else:
    import common

Z_DIM, BATCH, LR, BETA1 = 100, 128, 2e-4, 0.5


def generator(z_dim: int = Z_DIM) -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (z_dim, 1, 1)),
        nn.ConvTranspose2d(z_dim, 128, 7, 1, 0, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh(),
    )  # fmt: skip


def discriminator() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Conv2d(128, 1, 7, 1, 0), nn.Flatten(),
    )  # fmt: skip


def dcgan_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    g, d = generator(), discriminator()
    g.apply(dcgan_init)
    d.apply(dcgan_init)
    opt_g = torch.optim.Adam(g.parameters(), lr=LR, betas=(BETA1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=LR, betas=(BETA1, 0.999))
    bce = F.binary_cross_entropy_with_logits

    def step(x):
        real = x * 2.0 - 1.0  # [-1, 1], as the tanh output
        fake = g(torch.randn(len(real), Z_DIM))
        logits_real, logits_fake = d(real), d(fake.detach())
        loss_d = bce(logits_real, torch.ones_like(logits_real)) + bce(
            logits_fake, torch.zeros_like(logits_fake)
        )
        loss_d = common.descend(opt_d, loss_d)
        logits = d(fake)
        common.descend(opt_g, bce(logits, torch.ones_like(logits)))  # non-saturating: -log D(G(z))
        return loss_d

    data = common.batches(common.train_images(), BATCH, args.seed)
    steps, minutes = common.train_for(args.minutes, step, data)

    def sample(n):
        return (g(torch.randn(n, Z_DIM)) + 1.0) / 2.0

    images, seconds = common.sample_in_batches(sample, args.num, 500)
    common.write_samples(args, "dcgan", images, seconds, steps, minutes, common.count_params(g))
    return 0


if __name__ == "__main__":
    sys.exit(main())
