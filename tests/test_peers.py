"""The PyTorch peer UNet matches the Flax UNet; the sampling benchmark runs on a tiny config."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from jaxgen.models.unet import UNet, UNetConfig, count_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = [
    (
        dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(14,), num_groups=4),
        (28, 28, 1),
    ),
    (
        dict(ch=8, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(4,), num_heads=2),
        (8, 8, 3),
    ),
    (dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_classes=5), (8, 8, 3)),
    (dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), context_dim=6), (8, 8, 1)),
]


def _torch_unet(cfg: UNetConfig, shape):
    from benchmarks.peers.torch_unet import TorchUNet

    return TorchUNet(in_channels=shape[2], image_size=shape[0], **dataclasses.asdict(cfg))


@pytest.mark.parametrize("kwargs,shape", TINY)
def test_torch_unet_has_the_flax_parameter_count(kwargs, shape):
    pytest.importorskip("torch")
    from benchmarks.peers.torch_unet import count_params as torch_count

    cfg = UNetConfig(out_channels=shape[2], dropout=0.0, **kwargs)
    assert torch_count(_torch_unet(cfg, shape)) == count_params(cfg, shape)


def test_torch_unet_computes_the_flax_function(torch_one_thread):
    """Flax weights copied into the PyTorch model give the same output (NHWC vs NCHW)."""
    torch = torch_one_thread
    from benchmarks.peers.torch_unet import load_flax_params

    cfg = UNetConfig(
        ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=4,
        num_heads=2, out_channels=3, num_classes=5, context_dim=6, dropout=0.0,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8, 8, 3)).astype(np.float32)
    t = np.array([0.0, 17.0, 999.0], np.float32)
    labels = np.array([1, -1, 4], np.int32)
    context = rng.standard_normal((3, 4, 6)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
    net = UNet(cfg)
    params = net.init(jax.random.PRNGKey(0), x, t, labels, context, mask)["params"]
    # Perturb every leaf so the zero-initialised output layers do not hide mistakes.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(
        tree, [p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    )
    expected = np.asarray(net.apply({"params": params}, x, t, labels, context, mask))

    model = _torch_unet(cfg, x.shape[1:])
    load_flax_params(model, jax.tree.map(np.asarray, params))
    with torch.no_grad():
        got = model(
            torch.from_numpy(x).permute(0, 3, 1, 2),
            torch.from_numpy(t),
            torch.from_numpy(labels).long(),
            torch.from_numpy(context),
            torch.from_numpy(mask),
        )
    got = got.permute(0, 2, 3, 1).numpy()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(expected).max())


def test_torch_train_step_reduces_the_loss_on_a_fixed_batch(torch_one_thread):
    torch = torch_one_thread
    from benchmarks.peers.torch_unet import TrainStep

    torch.manual_seed(0)
    cfg = UNetConfig(
        ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_groups=4,
        out_channels=1, dropout=0.0,
    )  # fmt: skip
    step = TrainStep(_torch_unet(cfg, (8, 8, 1)), learning_rate=3e-3, ema_decay=0.5)
    images = torch.randint(0, 256, (8, 8, 8, 1), dtype=torch.uint8)
    losses = [step.step(images) for _ in range(20)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    ema_before = [e.clone() for e in step.ema]
    step.step(images)
    for ema, old, p in zip(
        step.ema, ema_before, step.params, strict=True
    ):  # decay 0.5: the midpoint
        torch.testing.assert_close(ema, 0.5 * old + 0.5 * p.detach())


def test_sample_benchmark_smoke(tmp_path, capsys):
    from benchmarks import sample

    out = tmp_path / "sample.jsonl"
    sample.main(
        [
            f"--config={ROOT}/configs/ddpm.py:preset=smoke", "--samplers=ddim,heun",
            "--steps=2", "--num=2", "--repeats=1", f"--out={out}",
        ]
    )  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == records
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in records] == [
        ("ddim", 2, 2),
        ("heun", 2, 3),  # Heun: two evaluations per step except the last
    ]
    for r in records:
        assert r["benchmark"] == "sample" and r["family"] == "ddpm"
        assert r["num"] == 2 and r["image_shape"] == [28, 28, 1]
        assert r["finite_in_unit_range"] is True
        assert r["images_per_sec"] == pytest.approx(2 / r["seconds_per_batch"])
        assert r["platform"] == "cpu" and "hardware" in r


def test_sample_benchmark_rejects_an_unknown_sampler(capsys):
    from benchmarks import sample

    with pytest.raises(SystemExit) as exit_info:
        sample.main([f"--config={ROOT}/configs/ddpm.py:preset=smoke", "--samplers=rk45"])
    assert exit_info.value.code == 2
    assert "sample.sampler='rk45'" in capsys.readouterr().err


def test_step_flops_count_every_iteration_of_a_scan():
    """XLA's cost analysis counts a loop body once; the benchmark's count must not."""
    import jax.numpy as jnp

    from benchmarks.train_step import flops_of, step_flops

    def step(w, x):
        h, _ = jax.lax.scan(lambda h, wi: (h @ wi, None), x, w)
        return h.sum()

    fn = jax.jit(step)
    w, x = jnp.ones((4, 64, 64)), jnp.ones((8, 64))
    compiled = fn.lower(w, x).compile()
    matmuls = 4 * 2 * 8 * 64 * 64
    assert flops_of(compiled) < matmuls / 2  # one iteration's worth
    assert matmuls <= step_flops(fn, w, x, compiled) < 1.01 * matmuls
    assert jax.lax.scan.__name__ == "scan"  # restored after counting
