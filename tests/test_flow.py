"""Flow matching and MeanFlow: known answers on Gaussian data, the samplers, the family."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config

from jaxgen.data.spec import DataSpec
from jaxgen.diffusion import flow as mf
from jaxgen.diffusion.objectives import Preconditioning, q_sample
from jaxgen.diffusion.process import FlowProcess, VPProcess
from jaxgen.diffusion.schedules import make_schedule
from jaxgen.errors import UserError
from jaxgen.methods.flow import FlowMatching
from jaxgen.models.conv import conv_nhwc
from jaxgen.samplers import get_sampler

# Toy data: x_0 ~ N(M, diag(S^2)) in 3 dimensions. On the path z_t = (1 - t) x_0 + t eps the
# ODE moves every dimension affinely: z_t = (1 - t) M + SD(t) w, w = z_1 ~ N(0, 1), with
# SD(t) = sqrt((1 - t)^2 S^2 + t^2), so the noise w goes to the data point M + S w.
M = jnp.array([0.5, -1.0, 2.0])
S = jnp.array([0.3, 1.0, 2.0])


def _sd(t):
    return jnp.sqrt((1 - t) ** 2 * S**2 + t**2)


def exact_velocity(z, t):
    """``v(z, t) = E[eps - x_0 | z_t = z]``; ``t`` broadcasts against ``z`` ``[B, 3]``."""
    slope = (t - (1 - t) * S**2) / _sd(t) ** 2  # Cov(eps - x_0, z_t) / Var(z_t)
    return -M + slope * (z - (1 - t) * M)


def exact_denoiser(x, t, alpha, sigma):
    """``E[x_0 | x]`` for ``x = alpha x_0 + sigma eps`` (any process)."""
    del t
    return M + alpha * S**2 / (alpha**2 * S**2 + sigma**2) * (x - alpha * M)


def exact_average_velocity(z, r, t):
    """``u(z, r, t) = (z_t - z_r) / (t - r)`` along the ODE through ``z`` at ``t``; ``v`` at
    ``r = t``. ``r``, ``t``: ``[B]``."""
    r, t = r[:, None], t[:, None]
    w = (z - (1 - t) * M) / _sd(t)
    gap = t - r
    safe = jnp.where(gap > 0, gap, 1.0)
    average = (z - (1 - r) * M - _sd(r) * w) / safe
    return jnp.where(gap > 0, average, exact_velocity(z, t))


# --- the process and the velocity parameterization -------------------------------------------
def test_flow_process_levels_and_grids():
    proc = FlowProcess("logit_normal", 0.5, 1.5, time_scale=10.0)
    t_model, alpha, sigma = proc.sample_train_levels(jax.random.PRNGKey(0), 20_000)
    t = np.asarray(sigma)
    np.testing.assert_allclose(np.asarray(alpha) + t, 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(t_model), 10 * t, rtol=1e-6)
    logit = np.log(t / (1 - t))
    assert abs(logit.mean() - 0.5) < 0.05 and abs(logit.std() - 1.5) < 0.05
    uniform = np.asarray(FlowProcess("uniform").sample_times(jax.random.PRNGKey(1), (20_000,)))
    assert uniform.min() >= 0 and uniform.max() < 1 and abs(uniform.mean() - 0.5) < 0.01

    grid = proc.grid(4, "uniform")
    np.testing.assert_allclose(np.asarray(grid.sigma), [1, 0.75, 0.5, 0.25, 0], atol=1e-7)
    np.testing.assert_allclose(np.asarray(grid.alpha + grid.sigma), 1.0, atol=1e-7)
    karras = proc.grid(10, "karras")  # in sigma / alpha = t / (1 - t), from 80 to 0.002
    ratio = np.asarray(karras.sigma[:-1] / karras.alpha[:-1])
    assert ratio[0] == pytest.approx(80, rel=1e-4) and ratio[-1] == pytest.approx(0.002, rel=1e-3)
    with pytest.raises(UserError, match="model.flow.time_sampling"):
        FlowProcess("beta")


def test_velocity_parameterization_is_eps_minus_x0_on_the_straight_path():
    pre = Preconditioning("velocity")
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    x0, eps = (jax.random.normal(k, (3, 4)) for k in keys)
    t = jnp.array([0.0, 0.3, 1.0])
    z = q_sample(x0, eps, 1 - t, t)
    target = pre.target(x0, z, 1 - t, t)
    np.testing.assert_allclose(np.asarray(target[1:]), np.asarray((eps - x0)[1:]), atol=1e-5)
    # x0_hat = z - t F: exact at every t, t = 0 (clean) and t = 1 (pure noise) included.
    denoised = pre.denoised(eps - x0, z, 1 - t, t)
    np.testing.assert_allclose(np.asarray(denoised), np.asarray(x0), atol=1e-6)


# --- the flow-matching loss -----------------------------------------------------------------------
def test_flow_matching_loss_is_zero_for_the_exact_velocity_of_a_point_mass():
    """Every image is the same: the velocity field is (z - x_0) / t and the loss vanishes."""
    config = load_config("configs/flow.py:preset=smoke")
    method = FlowMatching(config, DataSpec((8, 8, 1), 10, "none"))
    batch = {"image": jnp.full((64, 8, 8, 1), 200, jnp.uint8), "label": -jnp.ones(64, jnp.int32)}
    x0 = 200 / 127.5 - 1

    def loss_with(offset):
        def velocity(params, z, r, t, cond, train=False, rng=None):
            return (z - x0) / t[:, None, None, None] + offset

        method._velocity = velocity
        return float(jax.jit(method.loss)({}, batch, jax.random.PRNGKey(0))[0])

    assert loss_with(0.0) < 1e-8
    assert loss_with(0.1) == pytest.approx(0.01, rel=1e-3)


def test_flow_matching_loss_of_the_exact_velocity_is_the_conditional_variance():
    """Gaussian data: the loss of the exact velocity is E_t Var(eps - x_0 | z_t), the least a
    velocity field can reach; a shifted field pays the squared shift on top."""

    @jax.jit
    def losses(rng):
        n = 200_000
        keys = jax.random.split(rng, 3)
        t = FlowProcess("uniform").sample_times(keys[0], (n,))[:, None]
        x0 = M + S * jax.random.normal(keys[1], (n, 3))
        eps = jax.random.normal(keys[2], (n, 3))
        z = q_sample(x0, eps, 1 - t[:, 0], t[:, 0])
        target = Preconditioning("velocity").target(x0, z, 1 - t[:, 0], t[:, 0])
        v = exact_velocity(z, t)
        cov = t - (1 - t) * S**2  # Cov(eps - x_0, z_t) per dimension
        expected = jnp.mean(jnp.sum(1 + S**2 - cov**2 / _sd(t) ** 2, axis=1))
        loss, shifted = (jnp.mean(jnp.sum((f - target) ** 2, axis=1)) for f in (v, v + 0.2))
        return loss, shifted, expected

    loss, shifted, expected = (float(x) for x in losses(jax.random.PRNGKey(0)))
    assert loss == pytest.approx(expected, rel=0.02)
    assert shifted - loss == pytest.approx(3 * 0.2**2, rel=0.05)


# --- samplers ----------------------------------------------------------------------------------
def _noise(n=2000):
    return jax.random.normal(jax.random.PRNGKey(3), (n, 3))


@pytest.mark.parametrize("name,steps,tol", [("euler", 200, 0.08), ("flow_heun", 20, 0.03)])
def test_ode_samplers_with_the_exact_velocity_transport_noise_to_the_data(name, steps, tol):
    """On the uniform flow grid each noise vector w must land on M + S w (the ODE's map)."""
    w = _noise()
    spec = get_sampler(name)
    out = spec.fn(exact_denoiser, w, FlowProcess().grid(steps, spec.spacing), None)
    err = np.abs(np.asarray(out - (M + S * w))).max()
    assert err < tol, f"{name}: max error {err:.4f}"
    np.testing.assert_allclose(np.asarray(out.mean(0)), np.asarray(M), atol=0.1)
    np.testing.assert_allclose(np.asarray(out.std(0)), np.asarray(S), rtol=0.05)


def test_heun_beats_euler_at_equal_evaluations():
    w = _noise(200)
    grid = FlowProcess().grid
    euler = get_sampler("euler").fn(exact_denoiser, w, grid(9, "uniform"), None)
    heun = get_sampler("flow_heun").fn(exact_denoiser, w, grid(5, "uniform"), None)  # NFE 9
    exact = M + S * w
    assert np.abs(np.asarray(heun - exact)).max() < 0.3 * np.abs(np.asarray(euler - exact)).max()
    assert get_sampler("euler").nfe(10) == 10 and get_sampler("flow_heun").nfe(10) == 19


@pytest.mark.parametrize("process", ["flow", "vp"])
def test_euler_is_ddim_with_eta_zero_and_one_step_is_the_closed_form(process):
    proc = FlowProcess() if process == "flow" else VPProcess(make_schedule("linear", 1000))
    grid = proc.grid(7, "uniform")
    x = grid.sigma[0] * _noise(64)
    euler = get_sampler("euler").fn(exact_denoiser, x, grid, None)
    ddim = get_sampler("ddim").fn(exact_denoiser, x, grid, jax.random.PRNGKey(0), eta=0.0)
    np.testing.assert_allclose(np.asarray(euler), np.asarray(ddim), atol=2e-5)
    if process == "flow":  # one step from t = 1 to 6/7: z + (s - t) v(z, t)
        one = get_sampler("euler").fn(exact_denoiser, x, proc.grid(1, "uniform"), None)
        np.testing.assert_allclose(
            np.asarray(one), np.asarray(x - exact_velocity(x, 1.0)), atol=1e-5
        )


# --- MeanFlow ---------------------------------------------------------------------------------
def _times(n=512):
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    a, b = (jax.random.uniform(k, (n,), minval=0.02, maxval=1.0) for k in keys)
    return jnp.minimum(a, b), jnp.maximum(a, b)


def test_meanflow_identity_holds_for_the_exact_average_velocity():
    def instantaneous(z, r, t):
        return exact_velocity(z, t[:, None])

    @jax.jit
    def targets(r, t, w):
        z = (1 - t[:, None]) * M + _sd(t[:, None]) * w
        v = exact_velocity(z, t[:, None])
        pairs = [mf.meanflow_target(exact_average_velocity, z, r_, t, v) for r_ in (r, t)]
        pairs.append(mf.meanflow_target(instantaneous, z, r, t, v))
        return pairs, [mf.meanflow_loss(u, u_tgt, power=1.0) for u, u_tgt in pairs]

    pairs, losses = targets(*_times(), _noise(512))
    for (u, u_tgt), (loss, mse) in zip(pairs[:2], losses[:2], strict=True):  # r < t; r = t
        np.testing.assert_allclose(np.asarray(u_tgt), np.asarray(u), atol=2e-4)
        assert float(mse) < 1e-8 and float(loss) < 1e-5
    # The identity can fail: the instantaneous velocity is no average velocity for r < t.
    assert float(losses[2][1]) > 1e-2


def test_one_meanflow_step_with_the_exact_average_velocity_is_the_ode_map():
    w = _noise()
    for steps in (1, 3):
        out = mf.sample(exact_average_velocity, w, FlowProcess().grid(steps, "uniform"), None)
        np.testing.assert_allclose(np.asarray(out), np.asarray(M + S * w), atol=1e-4)


def test_total_derivative_passes_custom_vjp_convolutions():
    """jaxgen's CPU convolution has no forward mode; the transposed VJP gives the same JVP."""
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x, dx = (jax.random.normal(k, (2, 5, 5, 3)) for k in keys[:2])
    w, dw = (jax.random.normal(k, (3, 3, 3, 4)) for k in keys[2:])

    def plain(x, w):
        dn = ("NHWC", "HWIO", "NHWC")
        return jnp.tanh(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn))

    def custom(x, w):
        return jnp.tanh(conv_nhwc(x, w, (1, 1), "SAME"))

    ref_out, ref_tangent = jax.jvp(plain, (x, w), (dx, dw))
    out, tangent = jax.jit(lambda *a: mf.total_derivative(custom, a[:2], a[2:]))(x, w, dx, dw)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=1e-5)
    np.testing.assert_allclose(np.asarray(tangent), np.asarray(ref_tangent), rtol=1e-4, atol=1e-4)


def test_meanflow_pairs_follow_the_configured_share():
    r, t = mf.sample_two_times(FlowProcess().sample_times, jax.random.PRNGKey(0), 20_000, 0.25)
    r, t = np.asarray(r), np.asarray(t)
    assert np.all(r <= t) and abs(np.mean(r < t) - 0.25) < 0.02


# --- the family --------------------------------------------------------------------------------
def test_bad_flow_config_is_a_user_error():
    spec = DataSpec((8, 8, 1), 10, "none")
    cases = [
        ({"model.flow": dict(objective="consistency")}, "model.flow.objective"),
        ({"model.flow": dict(meanflow_fraction=1.5)}, "model.flow.meanflow_fraction"),
        ({"model.flow": dict(shortcut=True)}, "model.flow.shortcut"),
        ({"sample.sampler": "meanflow"}, "sample.sampler='meanflow'"),
        ({"sample.sampler": "heun", "sample.spacing": "uniform"}, "flow_heun"),
    ]
    for overrides, message in cases:
        config = load_config("configs/flow.py:preset=smoke")
        for key, value in overrides.items():
            section, name = key.split(".")
            config[section][name] = value
        with pytest.raises(UserError, match=message):
            FlowMatching(config, spec)
    method = FlowMatching(load_config("configs/flow.py:preset=smoke"), spec)
    assert method.resolve_sample_options().sampler == "euler" and not method.has_likelihood


@pytest.fixture(scope="module")
def meanflow_run(tmp_path_factory):
    """One MeanFlow smoke run on 8x8 digits (4 steps, a sample grid, the evaluation). MeanFlow
    exercises all of the family: its network at r = t is the rectified-flow one."""
    from jaxgen.api import train  # not jaxgen.train: once imported, that names the trainer

    workdir = str(tmp_path_factory.mktemp("flow") / "meanflow")
    config = load_config("configs/flow.py:preset=smoke,data=digits,objective=meanflow")
    config.train.checkpoint_every = 4
    config.model.unet.ch_mult, config.model.unet.attn_resolutions = (1,), ()  # one level
    train(config, workdir)
    return workdir


def test_meanflow_smoke_run_trains_samples_and_evaluates(meanflow_run):
    from jaxgen.api import load

    rows = [json.loads(line) for line in open(os.path.join(meanflow_run, "metrics.jsonl"))]
    assert any("loss" in row and np.isfinite(row["mse"]) for row in rows)
    assert os.path.isfile(os.path.join(meanflow_run, "samples", "step_4.png"))
    assert json.load(open(os.path.join(meanflow_run, "eval", "step_4.json")))["params"] > 0
    run = load(meanflow_run)
    assert run.config.sample.sampler == "meanflow" and "temb2_0" in run.state.params
    # The grid above used the meanflow sampler; a registered one uses the velocity at r = t.
    images = run.sample(4, seed=1, sampler="euler", steps=2)
    assert images.shape == (4, 8, 8, 1) and images.dtype == np.uint8
    saved = json.load(open(os.path.join(meanflow_run, "config.json")))
    cells = FlowMatching.describe(saved)
    assert cells.training.startswith("MeanFlow") and cells.likelihood_bound is None
    assert (cells.sampler, cells.sampler_steps) == ("meanflow", "1")
