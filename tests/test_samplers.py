"""Samplers driven by the exact denoiser of Gaussian data, and their grids."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.diffusion.process import EDMProcess, VPProcess, karras_sigmas
from jaxgen.diffusion.schedules import make_schedule
from jaxgen.errors import UserError
from jaxgen.samplers import SAMPLERS, get_sampler, initial_noise

NUM = 10_000
# Data: x_0 ~ N(MEAN, COV) in 3 dimensions, eigenvalues spread over a factor of ~20.
_A = np.array([[0.6, 0.1, -0.2], [0.0, 0.4, 0.3], [0.1, -0.2, 0.2]])
COV = _A @ _A.T + 0.03 * np.eye(3)
MEAN = np.array([0.5, -0.3, 0.2])
_EIGVALS, _EIGVECS = np.linalg.eigh(COV)


def gaussian_denoiser(x, t, alpha, sigma):
    """``E[x_0 | x_t]`` for ``x_0 ~ N(m, V diag(l) V^T)``.

    ``= m + V diag(a l / (a^2 l + s^2)) V^T (x - a m)``.
    """
    del t
    vecs, vals, mean = (jnp.asarray(a, jnp.float32) for a in (_EIGVECS, _EIGVALS, MEAN))
    gain = alpha * vals / (alpha**2 * vals + sigma**2)
    return mean + ((x - alpha * mean) @ vecs * gain) @ vecs.T


def vp_process():
    return VPProcess(make_schedule("linear", 1000))


def run(name, process, steps, seed=0, **options):
    spec = get_sampler(name)
    grid = process.grid(steps, spec.spacing)
    x = initial_noise(jax.random.PRNGKey(seed), (NUM, 3), grid)
    out = spec.fn(gaussian_denoiser, x, grid, jax.random.PRNGKey(seed + 1), **options)
    return np.asarray(out, np.float64)


# (sampler, process, steps, options). Tolerances: the mean within 0.03 (about 6 standard
# errors of a 10,000-sample mean here) and the covariance within 8% relative Frobenius error
# (sampling error of a 10,000-sample covariance is about 2%; the rest allows the solver's
# discretization error at these step counts, measured at 1-4%).
CASES = [
    ("ddpm", "vp", 1000, {}),  # Ho et al.'s full chain
    ("ddim", "vp", 250, {"eta": 0.0}),
    ("ddim", "vp", 100, {"eta": 1.0}),
    ("dpm_solver_pp", "vp", 20, {}),
    ("dpm_solver_pp", "edm", 25, {}),
    ("dpm_solver_pp", "vp", 50, {"eta": 1.0}),  # the SDE form
    ("dpm_solver_pp", "edm", 50, {"eta": 1.0}),
    ("heun", "vp", 40, {}),
    ("heun", "edm", 40, {}),
]


@pytest.mark.parametrize("name,process,steps,options", CASES)
def test_exact_denoiser_reproduces_the_gaussian(name, process, steps, options):
    proc = vp_process() if process == "vp" else EDMProcess()
    if name == "ddim" and options["eta"] == 1.0:
        steps = 1000  # ancestral steps are exact only on the fine grid
    samples = run(name, proc, steps, **options)
    assert np.all(np.isfinite(samples))
    np.testing.assert_allclose(samples.mean(0), MEAN, atol=0.03)
    cov = np.cov(samples, rowvar=False)
    rel = np.linalg.norm(cov - COV) / np.linalg.norm(COV)
    assert rel < 0.08, f"{name} on {process}: covariance relative error {rel:.3f}"


def test_fewer_steps_are_less_accurate():
    """The check above can fail: 3 DDIM steps visibly shrink the covariance."""
    samples = run("ddim", vp_process(), 3)
    rel = np.linalg.norm(np.cov(samples, rowvar=False) - COV) / np.linalg.norm(COV)
    assert rel > 0.2


@pytest.mark.parametrize("name", ["ddim", "dpm_solver_pp"])
def test_eta0_is_deterministic_and_eta1_is_not(name):
    proc = vp_process()
    grid = proc.grid(20, get_sampler(name).spacing)
    x = initial_noise(jax.random.PRNGKey(0), (64, 3), grid)
    fn = get_sampler(name).fn
    a = fn(gaussian_denoiser, x, grid, jax.random.PRNGKey(1), eta=0.0)
    b = fn(gaussian_denoiser, x, grid, jax.random.PRNGKey(2), eta=0.0)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = fn(gaussian_denoiser, x, grid, jax.random.PRNGKey(1), eta=1.0)
    d = fn(gaussian_denoiser, x, grid, jax.random.PRNGKey(2), eta=1.0)
    assert np.abs(np.asarray(c) - np.asarray(d)).max() > 1e-2


def test_sde_dpm_solver_forgets_the_error_of_its_start():
    """Started off the prior (every coordinate shifted by +1 at the noisiest level), the ODE
    carries the shift into the samples' mean; the SDE replaces most of it with fresh noise."""
    grid = vp_process().grid(50, "logsnr")
    x = initial_noise(jax.random.PRNGKey(0), (NUM, 3), grid) + 1.0
    fn = get_sampler("dpm_solver_pp").fn
    ode = np.asarray(fn(gaussian_denoiser, x, grid, jax.random.PRNGKey(1), eta=0.0))
    sde = np.asarray(fn(gaussian_denoiser, x, grid, jax.random.PRNGKey(1), eta=1.0))
    ode_error = np.abs(ode.mean(0) - MEAN).max()
    sde_error = np.abs(sde.mean(0) - MEAN).max()
    assert ode_error > 0.1 and sde_error < 0.03, (ode_error, sde_error)


def test_ddim_eta1_is_ancestral_sampling():
    proc = vp_process()
    grid = proc.grid(30, "uniform")
    x = initial_noise(jax.random.PRNGKey(0), (64, 3), grid)
    rng = jax.random.PRNGKey(3)
    ddim = get_sampler("ddim").fn(gaussian_denoiser, x, grid, rng, eta=1.0)
    ddpm = get_sampler("ddpm").fn(gaussian_denoiser, x, grid, rng, variance="small")
    np.testing.assert_allclose(np.asarray(ddim), np.asarray(ddpm), atol=1e-4)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_last_step_returns_the_denoised_point(name):
    """With a constant denoiser every sampler ends exactly on that constant."""
    grid = vp_process().grid(5, "uniform")
    x = initial_noise(jax.random.PRNGKey(0), (4, 3), grid)
    target = jnp.array([0.25, -0.5, 0.75])
    out = get_sampler(name).fn(
        lambda x, t, a, s: jnp.broadcast_to(target, x.shape), x, grid, jax.random.PRNGKey(1)
    )
    np.testing.assert_allclose(np.asarray(out), np.broadcast_to(target, (4, 3)), atol=1e-5)


def test_nfe_accounting():
    assert get_sampler("heun").nfe(10) == 19
    assert get_sampler("heun").steps_for_nfe(20) == 10
    assert get_sampler("dpm_solver_pp").nfe(20) == 20
    with pytest.raises(UserError, match="sample.sampler"):
        get_sampler("rk45")


def test_vp_grids():
    proc = vp_process()
    sched = proc.schedule
    full = proc.grid(1000, "uniform")
    np.testing.assert_array_equal(np.asarray(full.t), np.arange(999, -1, -1))
    np.testing.assert_allclose(np.asarray(full.alpha[:-1]), sched.alphas[::-1], rtol=1e-6)
    assert float(full.alpha[-1]) == 1.0 and float(full.sigma[-1]) == 0.0
    for spacing in ("logsnr", "karras"):
        grid = proc.grid(10, spacing)
        t = np.asarray(grid.t)
        assert t[0] == pytest.approx(999, abs=1e-3) and t[-1] == pytest.approx(0, abs=1e-3)
        assert np.all(np.diff(t) < 0)
        a, s = np.asarray(grid.alpha[:-1]), np.asarray(grid.sigma[:-1])
        np.testing.assert_allclose(a**2 + s**2, 1.0, rtol=1e-5)
    ratio = np.asarray(proc.grid(10, "karras").sigma[:-1] / proc.grid(10, "karras").alpha[:-1])
    expected = karras_sigmas(
        sched.sigmas[0] / sched.alphas[0], sched.sigmas[-1] / sched.alphas[-1], 10
    )
    np.testing.assert_allclose(ratio, expected, rtol=1e-4)
    with pytest.raises(UserError, match="sample.steps"):
        proc.grid(1001, "uniform")


def test_edm_grid_endpoints():
    grid = EDMProcess().grid(18, "karras")
    sig = np.asarray(grid.sigma)
    assert sig[0] == pytest.approx(80.0, rel=1e-5) and sig[-2] == pytest.approx(0.002, rel=1e-4)
    assert sig[-1] == 0.0 and np.all(np.asarray(grid.alpha) == 1.0)


def _posterior_mean_cov(snr: float) -> np.ndarray:
    """Covariance of ``E[x_0 | x_t]`` at the VP level of signal-to-noise ratio ``snr``:
    ``V diag(l * a^2 l / (a^2 l + s^2)) V^T``."""
    alpha2 = snr / (1.0 + snr)
    sigma2 = 1.0 - alpha2
    shrink = alpha2 * _EIGVALS / (alpha2 * _EIGVALS + sigma2)
    return (_EIGVECS * (_EIGVALS * shrink)) @ _EIGVECS.T


@pytest.mark.parametrize("spacing", ["uniform", "logsnr", "karras"])
def test_final_snr_ends_the_vp_grid_at_that_level(spacing):
    proc = vp_process()
    grid = proc.grid(30, spacing, final_snr=20.0)
    a, s = np.asarray(grid.alpha[:-1], np.float64), np.asarray(grid.sigma[:-1], np.float64)
    snr = a**2 / s**2
    rel = 0.05 if spacing == "uniform" else 1e-3  # uniform: the nearest integer timestep
    assert snr[-1] == pytest.approx(20.0, rel=rel) and np.all(np.diff(snr) > 0)
    assert float(grid.t[0]) == pytest.approx(999, abs=1e-3) and float(grid.sigma[-1]) == 0.0
    assert 55 < float(grid.t[-1]) < 75  # the linear schedule reaches SNR 20 near t = 65
    assert float(proc.grid(30, spacing).t[-1]) == pytest.approx(0.0, abs=1e-3)  # the default


def test_final_snr_sampler_returns_the_posterior_mean_at_that_level():
    """With the exact denoiser, the ODE carries the data to the level of SNR 20 exactly; the
    last step returns ``E[x_0 | x_t]`` there, whose covariance is known in closed form and
    smaller than the data's (the check can fail: it does for ``final_snr=0``)."""
    proc, spec = vp_process(), get_sampler("dpm_solver_pp")
    grid = proc.grid(40, spec.spacing, final_snr=20.0)
    x = initial_noise(jax.random.PRNGKey(0), (NUM, 3), grid)
    out = np.asarray(spec.fn(gaussian_denoiser, x, grid, jax.random.PRNGKey(1)), np.float64)
    np.testing.assert_allclose(out.mean(0), MEAN, atol=0.03)
    cov = np.cov(out, rowvar=False)
    expected = _posterior_mean_cov(20.0)
    assert np.linalg.norm(cov - expected) / np.linalg.norm(expected) < 0.06
    assert np.linalg.norm(cov - COV) / np.linalg.norm(COV) > 0.1


def test_final_snr_outside_the_process_range_is_a_config_error():
    proc = vp_process()
    snrs = proc.schedule.alphas**2 / proc.schedule.sigmas**2
    for bad in (float(snrs[0]) * 2, float(snrs[-1]) / 2, -1.0):
        with pytest.raises(UserError, match=r"sample\.final_snr"):
            proc.grid(30, "logsnr", final_snr=bad)
    with pytest.raises(UserError, match=r"sample\.final_snr"):
        EDMProcess().grid(18, "karras", final_snr=1e9)  # sigma below sigma_min
    with pytest.raises(UserError, match="at most"):
        proc.grid(999, "uniform", final_snr=20.0)


def test_final_snr_ends_the_edm_grid_at_that_sigma():
    grid = EDMProcess().grid(18, "karras", final_snr=25.0)
    sig = np.asarray(grid.sigma)
    assert sig[0] == pytest.approx(80.0, rel=1e-5) and sig[-2] == pytest.approx(0.2, rel=1e-5)
    assert sig[-1] == 0.0
