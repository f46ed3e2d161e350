"""jaxgen's DDPM UNet (``jaxgen/models/unet.py``) in PyTorch, layer for layer, and its train step.

Only the peer benchmark (``benchmarks/peers/compare.py``) and its tests import this module;
PyTorch is an optional dependency. :class:`TorchUNet` takes the fields of
``jaxgen.models.unet.UNetConfig`` as keyword arguments and has exactly the same parameters
(count and shapes, up to layout) as the Flax model:

* Flax ``Conv`` (HWIO, ``SAME`` padding) -> ``Conv2d`` (OIHW, ``padding=1``); the stride-2
  downsampling convolution pads (0, 1) explicitly, as ``SAME`` does on even sizes.
* Flax ``Dense`` on ``[B, H, W, C]`` (the ResBlock shortcut) -> a 1x1 ``Conv2d``.
* Flax ``GroupNorm`` (epsilon 1e-6, groups ``gcd(channels, num_groups)``) -> ``GroupNorm`` with
  the same epsilon and groups.
* Attention: ``scaled_dot_product_attention`` over ``num_heads`` heads (PyTorch's fastest
  kernel), the same q/k/v/out projections as the Flax model.

Tensors are NCHW: ``x`` float32 ``[B, C, H, W]``, ``t`` float32 ``[B]``.
:func:`load_flax_params` copies a Flax parameter tree in, so both compute the same function.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of float times ``t`` ``[B]`` -> ``[B, dim]`` (as the Flax model)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float32, device=t.device)
        / max(half - 1, 1)
    )
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _norm(channels: int, wanted: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, wanted), channels, eps=1e-6)


def _conv3(cin: int, cout: int, stride: int = 1, zero: bool = False) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
    if zero:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    return conv


def _zero_linear(cin: int, cout: int) -> nn.Linear:
    layer = nn.Linear(cin, cout)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class ResBlock(nn.Module):
    """GroupNorm-swish-conv twice, time embedding added in between, dropout before the second."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float, num_groups: int):
        super().__init__()
        self.norm1 = _norm(in_ch, num_groups)
        self.conv1 = _conv3(in_ch, out_ch)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = _norm(out_ch, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3(out_ch, out_ch, zero=True)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.shortcut is not None:
            x = self.shortcut(x)
        return x + h


def _attend(q, k, v, num_heads: int, mask=None):
    """q ``[B, N, C]``, k/v ``[B, L, C]`` -> ``[B, N, C]``; ``mask`` ``[B, L]`` (True: attend)."""
    b, n, c = q.shape
    d = c // num_heads
    q, k, v = (z.reshape(b, -1, num_heads, d).transpose(1, 2) for z in (q, k, v))
    attn_mask = None if mask is None else mask[:, None, None, :]
    if mask is not None:  # rows without any real key attend to nothing (zero output)
        attn_mask = attn_mask | ~mask.any(-1)[:, None, None, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    if mask is not None:
        out = out * mask.any(-1)[:, None, None, None]
    return out.transpose(1, 2).reshape(b, n, c)


class SelfAttention(nn.Module):
    """Residual self-attention over all positions, ``[B, C, H, W]`` -> same."""

    def __init__(self, ch: int, num_heads: int, num_groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(ch, num_groups)
        self.q, self.k, self.v = nn.Linear(ch, ch), nn.Linear(ch, ch), nn.Linear(ch, ch)
        self.proj_out = _zero_linear(ch, ch)

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        out = self.proj_out(_attend(self.q(y), self.k(y), self.v(y), self.num_heads))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class CrossAttention(nn.Module):
    """Residual attention from image positions to a context sequence ``[B, L, D]``."""

    def __init__(self, ch: int, context_dim: int, num_heads: int, num_groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(ch, num_groups)
        self.q = nn.Linear(ch, ch)
        self.k, self.v = nn.Linear(context_dim, ch), nn.Linear(context_dim, ch)
        self.proj_out = _zero_linear(ch, ch)

    def forward(self, x, context, mask):
        b, c, h, w = x.shape
        y = self.norm(x).flatten(2).transpose(1, 2)
        out = _attend(self.q(y), self.k(context), self.v(context), self.num_heads, mask)
        return x + self.proj_out(out).transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution with Flax's ``SAME`` padding on even sizes: (0, 1) per axis."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class TorchUNet(nn.Module):
    """``F(x, t, label, context)``: ``[B, in_channels, H, W]`` -> ``[B, out_channels, H, W]``.

    Keyword arguments are ``jaxgen.models.unet.UNetConfig``'s fields plus ``in_channels`` and
    ``image_size`` (the input's height, which decides where attention goes; it must be divisible
    by ``2 ** (len(ch_mult) - 1)``). ``flax_names`` maps each Flax submodule name to its module.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        ch: int = 128,
        ch_mult=(1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions=(16,),
        dropout: float = 0.1,
        num_heads: int = 1,
        num_groups: int = 32,
        resample_with_conv: bool = True,
        out_channels: int = 3,
        num_classes: int = 0,
        context_dim: int = 0,
    ):
        super().__init__()
        if not resample_with_conv:
            raise NotImplementedError("the peer UNet has only convolutional resampling")
        self.ch, self.num_classes, self.context_dim = ch, num_classes, context_dim
        temb_ch = 4 * ch
        self.flax_names: dict[str, nn.Module] = {}

        def named(name, module):
            self.flax_names[name] = module
            return module

        self.temb_0 = named("temb_0", nn.Linear(ch, temb_ch))
        self.temb_1 = named("temb_1", nn.Linear(temb_ch, temb_ch))
        self.class_emb = (
            named("class_emb", nn.Embedding(num_classes + 1, temb_ch)) if num_classes else None
        )
        self.text_emb = named("text_emb", nn.Linear(context_dim, temb_ch)) if context_dim else None
        self.conv_in = named("conv_in", _conv3(in_channels, ch))

        def res(name, cin, cout):
            return named(name, ResBlock(cin, cout, temb_ch, dropout, num_groups))

        def attention(prefix, c):
            block = nn.ModuleDict(
                {"attn": named(f"{prefix}_attn", SelfAttention(c, num_heads, num_groups))}
            )
            if context_dim:
                block["xattn"] = named(
                    f"{prefix}_xattn", CrossAttention(c, context_dim, num_heads, num_groups)
                )
            return block

        # Each entry of down/up: {"res", optional "attn"} or {"resample"}.
        self.down = nn.ModuleList()
        skips, size, cur = [ch], image_size, ch
        for level, mult in enumerate(ch_mult):
            for i in range(num_res_blocks):
                block = nn.ModuleDict({"res": res(f"down_{level}_block_{i}", cur, ch * mult)})
                cur = ch * mult
                if size in attn_resolutions:
                    block["attn"] = attention(f"down_{level}_{i}", cur)
                self.down.append(block)
                skips.append(cur)
            if level != len(ch_mult) - 1:
                down = named(f"down_{level}_resample", Downsample(cur))
                self.down.append(nn.ModuleDict({"resample": down}))
                skips.append(cur)
                size //= 2
        self.mid_0 = res("mid_block_0", cur, cur)
        self.mid_attn = attention("mid", cur)
        self.mid_1 = res("mid_block_1", cur, cur)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            for i in range(num_res_blocks + 1):
                block = nn.ModuleDict(
                    {"res": res(f"up_{level}_block_{i}", cur + skips.pop(), ch * mult)}
                )
                cur = ch * mult
                if size in attn_resolutions:
                    block["attn"] = attention(f"up_{level}_{i}", cur)
                self.up.append(block)
            if level:
                up = named(f"up_{level}_resample", _conv3(cur, cur))
                self.up.append(nn.ModuleDict({"resample": up}))
                size *= 2
        assert not skips
        self.norm_out = named("norm_out", _norm(cur, num_groups))
        self.conv_out = named("conv_out", _conv3(cur, out_channels, zero=True))

    @staticmethod
    def _attention(block, h, context, mask):
        h = block["attn"](h)
        return block["xattn"](h, context, mask) if "xattn" in block else h

    def forward(self, x, t, label=None, context=None, context_mask=None, pooled=None):
        temb = self.temb_1(F.silu(self.temb_0(timestep_embedding(t, self.ch))))
        if self.class_emb is not None:
            if label is None:
                label = torch.full(
                    (x.shape[0],), self.num_classes, dtype=torch.long, device=x.device
                )
            label = torch.where(label < 0, self.num_classes, label)
            temb = temb + self.class_emb(label)
        if self.context_dim:
            if context is None:
                context = x.new_zeros((x.shape[0], 1, self.context_dim))
                context_mask = torch.zeros((x.shape[0], 1), dtype=torch.bool, device=x.device)
            elif context_mask is None:
                context_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=x.device)
            if pooled is None:
                pooled = x.new_zeros((x.shape[0], self.context_dim))
            temb = temb + self.text_emb(pooled)

        hs = [self.conv_in(x)]
        for block in self.down:
            if "resample" in block:
                hs.append(block["resample"](hs[-1]))
                continue
            h = block["res"](hs[-1], temb)
            if "attn" in block:
                h = self._attention(block["attn"], h, context, context_mask)
            hs.append(h)
        h = self.mid_0(hs[-1], temb)
        h = self._attention(self.mid_attn, h, context, context_mask)
        h = self.mid_1(h, temb)
        for block in self.up:
            if "resample" in block:
                h = block["resample"](F.interpolate(h, scale_factor=2.0, mode="nearest"))
                continue
            h = block["res"](torch.cat([h, hs.pop()], dim=1), temb)
            if "attn" in block:
                h = self._attention(block["attn"], h, context, context_mask)
        assert not hs
        return self.conv_out(F.silu(self.norm_out(h)))


def _copy(target: torch.Tensor, value) -> None:
    value = torch.from_numpy(np.array(value, np.float32))
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(
            f"shape {tuple(value.shape)} for a parameter of shape {tuple(target.shape)}"
        )
    with torch.no_grad():
        target.copy_(value)


def _load_layer(module: nn.Module, p: dict) -> None:
    """One Flax layer's ``{"kernel", "bias"}`` / ``{"scale", "bias"}`` / ``{"embedding"}``."""
    if isinstance(module, nn.Conv2d):  # Conv HWIO, or a Dense [in, out] used as a 1x1 conv
        kernel = np.asarray(p["kernel"])
        kernel = kernel[None, None] if kernel.ndim == 2 else kernel
        _copy(module.weight, kernel.transpose(3, 2, 0, 1))
        _copy(module.bias, p["bias"])
    elif isinstance(module, nn.Linear):
        _copy(module.weight, np.asarray(p["kernel"]).T)
        _copy(module.bias, p["bias"])
    elif isinstance(module, nn.GroupNorm):
        _copy(module.weight, p["scale"])
        _copy(module.bias, p["bias"])
    elif isinstance(module, nn.Embedding):
        _copy(module.weight, p["embedding"])
    else:
        raise TypeError(f"no Flax layer maps to {type(module).__name__}")


def load_flax_params(model: TorchUNet, params: dict) -> None:
    """Copies the Flax UNet's ``params`` (nested dicts of arrays) into ``model`` in place."""
    for name, module in model.flax_names.items():
        p = params[name]
        if isinstance(module, ResBlock):
            pairs = [
                ("GroupNorm_0", module.norm1), ("Conv_0", module.conv1),
                ("Dense_0", module.temb_proj), ("GroupNorm_1", module.norm2),
                ("Conv_1", module.conv2), ("shortcut", module.shortcut),
            ]  # fmt: skip
        elif isinstance(module, (SelfAttention, CrossAttention)):
            pairs = [("GroupNorm_0", module.norm)] + [
                (n, getattr(module, n)) for n in ("q", "k", "v", "proj_out")
            ]
        elif isinstance(module, Downsample):
            pairs = [("Conv_0", module.conv)]
        elif name.startswith("up_") and name.endswith("_resample"):
            pairs = [("Conv_0", module)]
        else:
            _load_layer(module, p)
            continue
        for key, layer in pairs:
            if layer is not None:
                _load_layer(layer, p[key])


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def linear_alphas_cumprod(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """DDPM's linear beta schedule -> ``alpha_bar`` ``[timesteps]`` (float64 then float32)."""
    betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0).float()


class TrainStep:
    """One DDPM training step, as jaxgen's: epsilon-prediction MSE, clipped Adam, EMA.

    ``step(images)`` with ``images`` uint8 ``[B, H, W, C]`` (moved to the model's device and
    converted to NCHW [-1, 1] inside, as jaxgen converts inside its jitted step) returns the
    loss as a Python float.
    """

    def __init__(
        self,
        model: TorchUNet,
        *,
        timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        learning_rate: float = 2e-4,
        grad_clip_norm: float = 1.0,
        ema_decay: float = 0.9999,
        channels_last: bool = False,
        fused_adam: bool = True,
    ):
        self.model = model.train()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.device = next(model.parameters()).device  # the model's: CPU or a GPU
        self.alphas_cumprod = linear_alphas_cumprod(timesteps, beta_start, beta_end).to(self.device)
        self.timesteps = timesteps
        self.grad_clip_norm = grad_clip_norm
        self.ema_decay = ema_decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.params]
        self.opt = torch.optim.Adam(self.params, lr=learning_rate, fused=fused_adam)

    def step(self, images: torch.Tensor) -> float:
        x0 = images.to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x0 = x0.contiguous(memory_format=self.memory_format)
        b = x0.shape[0]
        t = torch.randint(0, self.timesteps, (b,), device=self.device)
        abar = self.alphas_cumprod[t][:, None, None, None]
        eps = torch.randn_like(x0)
        x_t = abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps
        loss = F.mse_loss(self.model(x_t, t.float()), eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip_norm, foreach=True)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, self.params, 1.0 - self.ema_decay)
        return float(loss.detach())
