"""DDPM in plain PyTorch (Ho et al. 2020) with a small UNet, sampled with DDIM (Song et al. 2021).

  python benchmarks/peers/quality/ddpm.py --minutes 10 --out ddpm.npz

UNet: 32 channels at 28 x 28, 64 at 14 x 14 and 7 x 7, one residual block (GroupNorm, SiLU,
time embedding added) per level on the way down, one per level on the way up (fed the skip
connection), residual blocks and one self-attention block in the middle; downsampling by
strided convolution, upsampling by nearest neighbour. Diffusion: 1000 steps, linear beta
schedule 1e-4 .. 0.02, epsilon prediction, MSE at uniform timesteps. Adam 1e-3 (a short run:
the paper's 2e-4 is for 800k steps), gradients clipped to norm 1, batch 64; samples from an
EMA of the weights with warm-up (decay ``min(0.999, (1 + n) / (10 + n))`` after step n).
Sampling: DDIM, 50 uniformly spaced steps, eta 0, predicted x0 clipped to [-1, 1].
Arguments and the output file: ``common.py``.
"""

from __future__ import annotations

import copy
import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

if __package__:
    from . import common
else:
    import common

T, BETA_START, BETA_END = 1000, 1e-4, 0.02
CH, BATCH, LR, CLIP, EMA_MAX = 32, 64, 1e-3, 1.0, 0.999
DDIM_STEPS = 50


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps ``[B]`` -> ``[B, dim]``."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2) / (dim // 2))
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(temb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class Attention(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.norm, self.attn = nn.GroupNorm(8, ch), nn.MultiheadAttention(ch, 1, batch_first=True)

    def forward(self, x):
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)  # [B, H*W, C]
        out = self.attn(seq, seq, seq, need_weights=False)[0]
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    def __init__(self, ch: int = CH):
        super().__init__()
        tdim, c1, c2 = 4 * ch, ch, 2 * ch
        self.ch = ch
        self.temb = nn.Sequential(nn.Linear(ch, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.conv_in = nn.Conv2d(1, c1, 3, padding=1)
        self.down1, self.pool1 = ResBlock(c1, c1, tdim), nn.Conv2d(c1, c1, 3, 2, 1)  # 28 -> 14
        self.down2, self.pool2 = ResBlock(c1, c2, tdim), nn.Conv2d(c2, c2, 3, 2, 1)  # 14 -> 7
        self.down3 = ResBlock(c2, c2, tdim)
        self.mid1, self.mid_attn, self.mid2 = (
            ResBlock(c2, c2, tdim), Attention(c2), ResBlock(c2, c2, tdim),
        )  # fmt: skip
        self.up3 = ResBlock(2 * c2, c2, tdim)  # 7 x 7
        self.up2 = ResBlock(2 * c2, c2, tdim)  # 14 x 14
        self.up1 = ResBlock(c2 + c1, c1, tdim)  # 28 x 28
        self.out = nn.Sequential(nn.GroupNorm(8, c1), nn.SiLU(), nn.Conv2d(c1, 1, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x, t):
        """Noise prediction for ``x`` [B, 1, 28, 28] at integer timesteps ``t`` [B]."""
        temb = self.temb(timestep_embedding(t, self.ch))
        s1 = self.down1(self.conv_in(x), temb)
        s2 = self.down2(self.pool1(s1), temb)
        s3 = self.down3(self.pool2(s2), temb)
        h = self.mid2(self.mid_attn(self.mid1(s3, temb)), temb)
        h = self.up3(torch.cat([h, s3], 1), temb)
        h = self.up2(torch.cat([F.interpolate(h, scale_factor=2.0), s2], 1), temb)
        h = self.up1(torch.cat([F.interpolate(h, scale_factor=2.0), s1], 1), temb)
        return self.out(h)


ALPHA_BAR = torch.cumprod(1.0 - torch.linspace(BETA_START, BETA_END, T, dtype=torch.float64), 0)


def loss_fn(model: nn.Module, x0: torch.Tensor) -> torch.Tensor:
    """Epsilon-prediction MSE of images ``x0`` in [-1, 1] at uniform timesteps."""
    t = torch.randint(0, T, (len(x0),))
    ab = ALPHA_BAR[t].float()[:, None, None, None]
    eps = torch.randn_like(x0)
    return F.mse_loss(model(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t), eps)


@torch.no_grad()
def ddim_sample(model: nn.Module, n: int, steps: int = DDIM_STEPS) -> torch.Tensor:
    """Deterministic DDIM (eta 0) from pure noise; float ``[n, 1, 28, 28]`` in [0, 1]."""
    x = torch.randn(n, 1, 28, 28)
    ts = list(range(0, T, T // steps))[::-1]  # 980, 960, ..., 0
    for i, t in enumerate(ts):
        ab = ALPHA_BAR[t].float()
        ab_prev = ALPHA_BAR[ts[i + 1]].float() if i + 1 < len(ts) else torch.tensor(1.0)
        eps = model(x, torch.full((n,), t))
        x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0)
        x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
    return (x + 1.0) / 2.0


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    model = UNet()
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    updates = 0

    def step(x):
        nonlocal updates
        loss = common.descend(opt, loss_fn(model, x * 2.0 - 1.0), CLIP)
        updates += 1
        decay = min(EMA_MAX, (1 + updates) / (10 + updates))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p, 1.0 - decay)
        return loss

    data = common.batches(common.train_images(), BATCH, args.seed)
    steps, minutes = common.train_for(args.minutes, step, data)
    ema.eval()
    images, seconds = common.sample_in_batches(lambda n: ddim_sample(ema, n), args.num, 250)
    common.write_samples(args, "ddpm", images, seconds, steps, minutes, common.count_params(ema))
    return 0


if __name__ == "__main__":
    sys.exit(main())
