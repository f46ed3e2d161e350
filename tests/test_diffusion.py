"""Diffusion math (schedules, forward process, parameterizations, bound) and the method."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import launch, load_config, random_params, run_cli, tree_digest

from jaxgen.data.spec import DataSpec
from jaxgen.diffusion.likelihood import VariationalBound, discretized_gaussian_log_prob
from jaxgen.diffusion.objectives import (
    PARAMETERIZATIONS,
    PREDICTIONS,
    Preconditioning,
    convert,
    guided,
    make_prediction,
    min_snr_weight,
    q_sample,
    split_prediction,
)
from jaxgen.diffusion.process import VPProcess
from jaxgen.diffusion.schedules import cosine_betas, make_schedule
from jaxgen.errors import UserError
from jaxgen.methods.diffusion import Diffusion

SPEC = DataSpec((8, 8, 1), 10, "none")  # small images keep the method tests fast


# --- schedules and the forward process ---------------------------------------------------
def test_schedules():
    sched = make_schedule("linear", 1000)
    assert sched.betas[0] == pytest.approx(1e-4) and sched.betas[-1] == pytest.approx(0.02)
    # DDPM's prior mismatch is tiny: alpha_T^2 = prod(1 - beta) ~ 4e-5.
    assert sched.alpha_bar[-1] == pytest.approx(np.prod(1 - np.linspace(1e-4, 0.02, 1000)))
    assert sched.alpha_bar[-1] < 5e-5
    cosine = make_schedule("cosine", 1000).alpha_bar
    s, t = 0.008, np.arange(1, 1001) / 1000
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    np.testing.assert_allclose(cosine[:900], (f(t) / f(0))[:900], rtol=1e-9)
    assert np.all(cosine_betas(1000) <= 0.999)
    with pytest.raises(UserError, match="model.diffusion.schedule"):
        make_schedule("quadratic", 10)


def test_forward_process_matches_q_xt_given_x0():
    """Running the Markov chain q(x_t | x_{t-1}) step by step gives N(alpha_t x_0, sigma_t^2)."""
    process = VPProcess(make_schedule("linear", 1000))
    betas = process.schedule.betas
    rng = np.random.default_rng(0)
    x0 = np.array([-1.0, 0.2, 0.9])
    x = np.broadcast_to(x0, (20_000, 3)).copy()
    checkpoints = {0, 9, 99, 499, 999}
    for t in range(1000):
        x = np.sqrt(1 - betas[t]) * x + np.sqrt(betas[t]) * rng.standard_normal(x.shape)
        if t in checkpoints:
            alpha, sigma = (float(v) for v in process.coefficients(jnp.int32(t)))
            np.testing.assert_allclose(
                x.mean(0), alpha * x0, atol=4 * sigma / np.sqrt(20_000) + 1e-4
            )
            np.testing.assert_allclose(x.var(0), sigma**2, rtol=0.05, atol=1e-6)
            # The one-shot marginal used in training has the same moments.
            eps = jax.random.normal(jax.random.PRNGKey(t), (20_000, 3))
            direct = np.asarray(
                q_sample(
                    jnp.asarray(np.broadcast_to(x0, (20_000, 3))),
                    eps,
                    jnp.full((20_000,), alpha),
                    jnp.full((20_000,), sigma),
                )
            )
            np.testing.assert_allclose(
                direct.mean(0), alpha * x0, atol=4 * sigma / np.sqrt(20_000) + 1e-4
            )
            np.testing.assert_allclose(direct.var(0), sigma**2, rtol=0.05, atol=1e-6)
    t, alpha, sigma = process.sample_train_levels(jax.random.PRNGKey(0), 64)
    idx = np.asarray(t).astype(int)
    np.testing.assert_allclose(np.asarray(alpha), process.schedule.alphas[idx], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(sigma), process.schedule.sigmas[idx], rtol=1e-6)


# --- parameterizations ----------------------------------------------------------------------
@pytest.mark.parametrize("alpha,sigma", [(0.8, 0.6), (0.05, 0.9987), (1.0, 3.0)])
def test_eps_x0_v_conversions_round_trip(alpha, sigma):
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    x0, eps = (jax.random.normal(k, (4, 5)) for k in keys)
    a, s = jnp.full((4,), alpha), jnp.full((4,), sigma)
    x_t = q_sample(x0, eps, a, s)
    for kind in PREDICTIONS:
        pred = make_prediction(kind, x0, eps, a, s)
        got_x0, got_eps = split_prediction(kind, pred, x_t, a, s)
        np.testing.assert_allclose(
            np.asarray(got_x0), np.asarray(x0), atol=2e-4 * max(1, sigma / alpha)
        )
        np.testing.assert_allclose(
            np.asarray(got_eps), np.asarray(eps), atol=2e-4 * max(1, sigma / alpha)
        )
        for other in PREDICTIONS:
            there = convert(pred, kind, other, x_t, a, s)
            np.testing.assert_allclose(
                np.asarray(there),
                np.asarray(make_prediction(other, x0, eps, a, s)),
                atol=5e-4 * max(1, alpha / sigma, sigma / alpha),
            )
            back = convert(there, other, kind, x_t, a, s)
            np.testing.assert_allclose(
                np.asarray(back), np.asarray(pred), atol=5e-4 * max(1, alpha / sigma, sigma / alpha)
            )


@pytest.mark.parametrize("kind", PARAMETERIZATIONS)
def test_preconditioning_targets_give_back_x0(kind):
    pre = Preconditioning(kind)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 1))
    eps = jax.random.normal(jax.random.PRNGKey(1), x0.shape)
    alpha = jnp.ones(3) if kind == "edm" else jnp.array([0.99, 0.6, 0.1])
    sigma = jnp.array([0.02, 1.0, 40.0]) if kind == "edm" else jnp.sqrt(1 - alpha**2)
    x_t = q_sample(x0, eps, alpha, sigma)
    target = pre.target(x0, x_t, alpha, sigma)
    np.testing.assert_allclose(
        np.asarray(pre.denoised(target, x_t, alpha, sigma)), np.asarray(x0), atol=1e-4
    )
    if kind in PREDICTIONS:  # the target is the named prediction
        np.testing.assert_allclose(
            np.asarray(target), np.asarray(make_prediction(kind, x0, eps, alpha, sigma)), atol=1e-4
        )


@pytest.mark.parametrize("kind", PARAMETERIZATIONS)
def test_min_snr_weight_makes_the_x0_error_count_min_snr_gamma_times(kind):
    pre, gamma = Preconditioning(kind), 5.0
    alpha = jnp.ones(4) if kind == "edm" else jnp.array([0.999, 0.95, 0.5, 0.05])
    sigma = jnp.array([0.03, 0.3, 2.0, 30.0]) if kind == "edm" else jnp.sqrt(1 - alpha**2)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 1))
    x_t = q_sample(x0, jax.random.normal(jax.random.PRNGKey(1), x0.shape), alpha, sigma)
    target = pre.target(x0, x_t, alpha, sigma)
    output = target + 0.1 * jax.random.normal(jax.random.PRNGKey(2), x0.shape)  # a wrong F
    output_error = jnp.mean((output - target) ** 2, (1, 2, 3))
    weighted = min_snr_weight(pre, alpha, sigma, gamma) * output_error
    x0_error = jnp.mean((pre.denoised(output, x_t, alpha, sigma) - x0) ** 2, (1, 2, 3))
    snr = (alpha / sigma) ** 2
    np.testing.assert_allclose(weighted, jnp.minimum(snr, gamma) * x0_error, rtol=1e-4)
    assert float(snr[0]) > gamma > float(snr[-1])  # both sides of the cap are exercised
    if kind == "v":
        np.testing.assert_allclose(
            min_snr_weight(pre, alpha, sigma, gamma), jnp.minimum(snr, gamma) / (snr + 1), rtol=1e-5
        )


@pytest.mark.parametrize(
    "key, value", [("loss_weighting", "snr"), ("min_snr_gamma", 0.0), ("min_snr_gamma", "five")]
)
def test_bad_loss_weighting_is_a_one_line_error(key, value):
    from jaxgen.diffusion.config import DiffusionConfig

    with pytest.raises(UserError, match=f"config key model.diffusion.{key}="):
        DiffusionConfig.from_config({key: value})


def test_edm_coefficients_follow_karras_table_1():
    sigma, sd = 1.7, 0.5
    c_in, c_skip, c_out = (float(c) for c in Preconditioning("edm", sd).coefficients(1.0, sigma))
    assert c_skip == pytest.approx(sd**2 / (sigma**2 + sd**2))
    assert c_out == pytest.approx(sigma * sd / np.sqrt(sigma**2 + sd**2))
    assert c_in == pytest.approx(1 / np.sqrt(sigma**2 + sd**2))
    # EDM's weight lambda = (sigma^2 + sd^2) / (sigma sd)^2 makes the loss a plain MSE on F.
    assert (sigma**2 + sd**2) / (sigma * sd) ** 2 * c_out**2 == pytest.approx(1.0)


# --- the variational bound ------------------------------------------------------------------
def test_discretized_gaussian_is_a_distribution_over_256_values():
    x = jnp.arange(256) / 127.5 - 1.0
    for mean, log_scale in [(0.3, -3.0), (0.0, -7.0), (-0.99, -2.0), (0.5, 1.0)]:
        total = float(jnp.exp(discretized_gaussian_log_prob(x, mean, log_scale)).sum())
        assert total == pytest.approx(1.0, abs=1e-5)


def _bound_reference(schedule, variance, x0, x0_hat):
    """The bound in float64 NumPy for a predictor that ignores x_t (so every term is exact)."""
    from scipy.stats import norm

    abar, abar_prev, betas = schedule.alpha_bar, schedule.alpha_bar_prev, schedule.betas
    post = schedule.posterior_variance
    coef_x0 = np.sqrt(abar_prev) * betas / (1 - abar)
    var_p = post if variance == "small" else betas
    total = 0.5 * np.sum(abar[-1] * x0**2 + (1 - abar[-1]) - 1 - np.log(1 - abar[-1]))
    for t in range(1, len(betas)):
        kl = 0.5 * (
            np.log(var_p[t] / post[t])
            + post[t] / var_p[t]
            - 1
            + coef_x0[t] ** 2 * (x0 - x0_hat) ** 2 / var_p[t]
        )
        total += kl.sum()
    std = np.sqrt(post[1])
    upper = np.where(x0 > 0.999, np.inf, x0 + 1 / 255)
    lower = np.where(x0 < -0.999, -np.inf, x0 - 1 / 255)
    total -= np.log(norm.cdf((upper - x0_hat) / std) - norm.cdf((lower - x0_hat) / std)).sum()
    return total


@pytest.mark.parametrize("variance", ["small", "large"])
def test_bound_matches_reference_and_sampled_terms_are_unbiased(variance):
    schedule = make_schedule("linear", 100)
    bound = VariationalBound(schedule, variance)
    x0 = jnp.asarray(np.array([[-1.0, -0.2, 0.4, 1.0]]) * np.ones((2, 1)), jnp.float32)
    x0 = jnp.round((x0 + 1) * 127.5) / 127.5 - 1
    x0_hat_value = x0 * 0.97 + jnp.array([[0.0], [0.01]])

    def x0_fn(x_t, t):
        return x0_hat_value

    exact = bound.nats(x0_fn, x0, jax.random.PRNGKey(0), num_terms=0)["total"]
    ref = [
        _bound_reference(
            schedule,
            variance,
            np.asarray(x0[i], np.float64),
            np.asarray(x0_hat_value[i], np.float64),
        )
        for i in range(2)
    ]
    np.testing.assert_allclose(np.asarray(exact), ref, rtol=2e-4)
    estimates = jax.vmap(lambda k: bound.nats(x0_fn, x0, k, num_terms=5)["total"])(
        jax.random.split(jax.random.PRNGKey(1), 400)
    )
    # Unbiased: the mean of 400 estimates is within 4 standard errors of the exact bound.
    stderr = np.asarray(estimates.std(0)) / np.sqrt(400)
    assert np.all(stderr > 0)
    assert np.all(np.abs(np.asarray(estimates.mean(0)) - ref) < 4 * stderr)


# --- the method ------------------------------------------------------------------------------
def _method(arg="preset=smoke", spec=SPEC, **overrides):
    config = load_config(f"configs/ddpm.py:{arg}")
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    return Diffusion(config, spec)


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.integers(0, 256, (n, 8, 8, 1)), jnp.uint8),
        "label": jnp.arange(n, dtype=jnp.int32) % 10,
    }


def _random_params(method, seed=0):
    return random_params(method.init_params, jax.random.PRNGKey(seed), _batch(), seed=seed + 1)


def test_guidance_zero_and_one_are_the_unconditional_and_conditional_models():
    assert float(guided(jnp.float32(2.0), jnp.float32(5.0), 0.0)) == 2.0
    assert float(guided(jnp.float32(2.0), jnp.float32(5.0), 1.0)) == 5.0
    method = _method("preset=smoke,cond=class", DataSpec((8, 8, 1), 10, "class"))
    params = _random_params(method)
    x = jax.random.normal(jax.random.PRNGKey(5), (4, 8, 8, 1))
    labels = jnp.array([0, 3, 7, 9], jnp.int32)
    method.clip = False  # compare the raw predictions

    def x0(labels, scale):
        return np.asarray(jax.jit(method.denoiser(params, labels, scale))(x, 30.0, 0.8, 0.6))

    uncond, cond = x0(None, 1.0), x0(labels, 1.0)
    assert np.abs(uncond - cond).max() > 1e-3
    np.testing.assert_allclose(x0(labels, 0.0), uncond, atol=1e-5)
    np.testing.assert_allclose(x0(labels, 3.0), uncond + 3.0 * (cond - uncond), atol=1e-4)


def test_condition_dropout_in_training():
    spec = DataSpec((8, 8, 1), 10, "class")
    method = _method("preset=smoke,cond=class", spec)
    params = _random_params(method)
    batch = _batch()
    always = _method("preset=smoke,cond=class", spec, **{"model.cond_drop_prob": 1.0})
    null_batch = dict(batch, label=jnp.full((4,), -1, jnp.int32))
    # With every label dropped the loss equals the loss of unlabelled data (same randomness).
    loss_dropped, _ = jax.jit(always.loss)(params, batch, jax.random.PRNGKey(3))
    loss_null, _ = jax.jit(method.loss)(params, null_batch, jax.random.PRNGKey(3))
    loss_kept, _ = jax.jit(method.loss)(params, batch, jax.random.PRNGKey(3))
    assert float(loss_dropped) == pytest.approx(float(loss_null), rel=1e-6)
    assert abs(float(loss_kept) - float(loss_null)) > 1e-6


def test_likelihood_and_sampling_shapes():
    method = _method()
    params = _random_params(method)
    out = jax.jit(method.likelihood)(params, _batch(), jax.random.PRNGKey(0))
    assert out["bits_per_dim"].shape == (4,)
    assert np.all(np.isfinite(np.asarray(out["bits_per_dim"])))
    assert np.all(np.asarray(out["vlb_prior_bits_per_dim"]) < np.asarray(out["bits_per_dim"]))
    sample = jax.jit(method.sample, static_argnums=2)
    a = np.asarray(sample(params, jax.random.PRNGKey(1), 3))
    b = np.asarray(sample(params, jax.random.PRNGKey(1), 3))
    assert a.shape == (3, 8, 8, 1) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)


def test_bad_diffusion_config_is_a_user_error():
    with pytest.raises(UserError, match="model.diffusion.process"):
        _method(**{"model.diffusion": dict(process="sde")})
    with pytest.raises(UserError, match="sample.sampler"):
        _method(**{"sample.sampler": "rk45"})
    with pytest.raises(UserError, match="model.diffusion.prediction"):
        _method(**{"model.diffusion": dict(prediction="score")})


def test_latent_diffusion_on_a_vae_run(tmp_path):
    from jaxgen.checkpoints import Checkpoints
    from jaxgen.methods.vae import VAE
    from jaxgen.workdir import record_launch

    vae_config = load_config("configs/vae.py:preset=smoke")
    vae_config.model.latent_channels = 2  # spatial latents [2, 2, 2]
    vae = VAE(vae_config, SPEC)
    state = vae.init_state(jax.random.PRNGKey(0), _batch(), vae.make_optimizer())
    workdir = str(tmp_path / "vae")
    record_launch(workdir, vae_config, "train", {}, [])
    checkpoints = Checkpoints(workdir)
    checkpoints.save(1, state, {})
    checkpoints.close()

    unet = dict(
        ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(2,), dropout=0.0, num_groups=4
    )
    method = _method(**{"model.autoencoder": workdir, "model.unet": unet})
    assert method.x_shape == (2, 2, 2)
    params = method.init_params(jax.random.PRNGKey(0), _batch())
    loss, _ = jax.jit(method.loss)(params, _batch(), jax.random.PRNGKey(1))
    assert np.isfinite(float(loss))
    images = jax.jit(method.sample, static_argnums=2)(params, jax.random.PRNGKey(2), 2)
    assert images.shape == (2, 8, 8, 1)
    assert method.likelihood(params, _batch(), jax.random.PRNGKey(3)) is None
    with pytest.raises(UserError, match="model.autoencoder"):
        _method(**{"model.autoencoder": str(tmp_path / "missing")})


def test_smoke_run_end_to_end(tmp_path, capfd):
    workdir = str(tmp_path / "run")
    result = launch("--config=configs/ddpm.py:preset=smoke", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert any("loss" in x and np.isfinite(x["loss"]) for x in lines)
    assert os.path.isfile(os.path.join(workdir, "samples", "step_4.png"))
    evals = json.load(open(os.path.join(workdir, "eval", "step_4.json")))
    assert 0 < evals["bits_per_dim"] < 20 and evals["params"] > 0

    result = run_cli(
        capfd,
        "--config=configs/ddpm.py:preset=smoke,sampler=dpm_solver_pp",
        f"--workdir={workdir}",
        "--mode=sample",
    )
    assert result.code == 0, result.stderr[-2000:]
    with np.load(os.path.join(workdir, "samples", "samples_4.npz")) as f:
        assert f["images"].shape == (8, 28, 28, 1) and f["images"].dtype == np.uint8

    before = tree_digest(workdir)
    bad = run_cli(
        capfd,
        "--config=configs/ddpm.py:preset=smoke",
        f"--workdir={workdir}",
        "--mode=sample",
        "--config.sample.sampler=rk45",
    )
    assert bad.code == 2
    assert "sample.sampler" in bad.stderr.strip().splitlines()[-1]
    assert tree_digest(workdir) == before


def test_min_snr_training_loss_reweights_the_same_draws():
    uniform = _method("preset=smoke,weighting=uniform")
    min_snr = _method("preset=smoke,weighting=min_snr")
    params, batch, rng = _random_params(uniform), _batch(8), jax.random.PRNGKey(3)
    plain, _ = uniform.loss(params, batch, rng)
    weighted, aux = min_snr.loss(params, batch, rng)
    # Same timesteps and noise: the unweighted MSE is reported unchanged; epsilon prediction's
    # min-SNR weights min(1, gamma / SNR) are at most 1, and below 1 on the low-noise steps.
    np.testing.assert_allclose(float(aux["mse"]), float(plain), rtol=1e-5)
    assert float(weighted) < float(plain)


def test_importance_levels_keep_the_min_snr_objective():
    from jaxgen.diffusion.config import importance_levels

    weights = np.random.default_rng(0).uniform(0.0, 5.0, 50)
    per_step_mse = np.random.default_rng(1).uniform(0.0, 1.0, 50)
    log_probs, loss_weight = importance_levels(weights)
    np.testing.assert_allclose(np.exp(log_probs).sum(), 1.0, rtol=1e-6)
    expected = np.sum(np.exp(log_probs) * loss_weight * per_step_mse)
    np.testing.assert_allclose(expected, np.mean(weights * per_step_mse), rtol=1e-6)


def test_importance_sampled_levels_give_the_same_loss_with_less_variance():
    def losses(level_sampling):
        config = load_config("configs/ddpm.py:preset=smoke,weighting=min_snr")
        config.model.diffusion.level_sampling = level_sampling
        method = Diffusion(config, SPEC)
        params, batch = _random_params(method), _batch(8)
        keys = jax.random.split(jax.random.PRNGKey(5), 2048)
        return np.asarray(jax.jit(jax.vmap(lambda k: method.loss(params, batch, k)[0]))(keys))

    uniform, importance = losses("uniform"), losses("importance")
    standard_error = np.std(uniform) / np.sqrt(uniform.size)
    assert abs(importance.mean() - uniform.mean()) < 4 * standard_error
    assert np.std(importance) < 0.7 * np.std(uniform)


def test_input_perturbation_noises_the_network_input_and_keeps_the_target():
    batch, rng = _batch(32), jax.random.PRNGKey(4)
    seen = {}
    for gamma in (0.0, 0.1):
        config = load_config("configs/ddpm.py:preset=smoke,prediction=v")
        config.model.diffusion.input_perturbation = gamma
        method = Diffusion(config, SPEC)
        precond = method.precond

        class RecordingTarget:
            def __getattr__(self, name, precond=precond):
                return getattr(precond, name)

            def target(self, x0, x_t, alpha, sigma, gamma=gamma, precond=precond):
                seen[gamma, "clean"] = x_t
                seen[gamma, "target"] = precond.target(x0, x_t, alpha, sigma)
                return seen[gamma, "target"]

        def network(params, x_t, t, alpha, sigma, *args, gamma=gamma, **kwargs):
            seen[gamma, "input"], seen[gamma, "sigma"] = x_t, sigma
            return jnp.zeros_like(x_t)

        method.precond, method._output = RecordingTarget(), network
        method.loss(_random_params(method), batch, rng)
    # The same draw: the target is the unperturbed one, and so is the input when gamma is 0.
    np.testing.assert_array_equal(seen[0.1, "target"], seen[0.0, "target"])
    np.testing.assert_array_equal(seen[0.0, "input"], seen[0.0, "clean"])
    # With gamma, the input carries sigma * gamma * xi more noise, xi standard normal.
    extra = (seen[0.1, "input"] - seen[0.1, "clean"]) / seen[0.1, "sigma"][:, None, None, None]
    assert 0.09 < float(jnp.std(extra)) < 0.11
    assert abs(float(jnp.mean(extra))) < 0.01


def test_input_perturbation_out_of_range_is_a_config_error():
    config = load_config("configs/ddpm.py:preset=smoke")
    config.model.diffusion.input_perturbation = -0.1
    with pytest.raises(UserError, match=r"model.diffusion.input_perturbation=-0.1: expected in"):
        Diffusion(config, SPEC)


@pytest.mark.parametrize("arg", ["weighting=uniform", "edm=true"])
def test_importance_levels_need_min_snr_on_the_vp_process(arg):
    config = load_config(f"configs/ddpm.py:preset=smoke,{arg}")
    config.model.diffusion.level_sampling = "importance"
    with pytest.raises(UserError, match="model.diffusion.level_sampling='importance': needs"):
        Diffusion(config, SPEC)
