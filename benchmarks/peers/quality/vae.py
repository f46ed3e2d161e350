"""A convolutional VAE in plain PyTorch (Kingma & Welling 2014), the usual Fashion-MNIST recipe.

  python benchmarks/peers/quality/vae.py --minutes 10 --out vae.npz

Encoder: conv 32 and 64 channels (stride 2: 28 -> 14 -> 7), dense 256, a Gaussian posterior
over z (16-d). Decoder: the mirror image, Bernoulli likelihood of the pixel intensities in
[0, 1] (binary cross-entropy on the logits). Samples: the decoder means ``sigmoid(logits)``
of ``z ~ N(0, I)``. Adam 1e-3, batch 128. Arguments and the output file: ``common.py``.
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

LATENT, HIDDEN, BATCH, LR = 16, 256, 128, 1e-3


class VAE(nn.Module):
    def __init__(self, latent: int = LATENT, hidden: int = HIDDEN):
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),  # 14 x 14
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),  # 7 x 7
            nn.Flatten(), nn.Linear(64 * 7 * 7, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * latent),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(),
            nn.Linear(hidden, 64 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),  # 14 x 14
            nn.ConvTranspose2d(32, 1, 4, 2, 1),  # 28 x 28 logits
        )  # fmt: skip

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per image (nats), averaged over the batch ``x`` [B, 1, 28, 28]."""
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        logits = self.decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(1).mean()
        return recon + kl

    def sample(self, n: int) -> torch.Tensor:
        return torch.sigmoid(self.decoder(torch.randn(n, self.latent)))


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(x):
        return common.descend(opt, model.loss(x))

    data = common.batches(common.train_images(), BATCH, args.seed)
    steps, minutes = common.train_for(args.minutes, step, data)
    model.eval()
    images, seconds = common.sample_in_batches(model.sample, args.num, 500)
    common.write_samples(args, "vae", images, seconds, steps, minutes, common.count_params(model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
