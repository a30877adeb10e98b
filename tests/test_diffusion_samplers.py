"""Samplers on a Gaussian data distribution, where the optimal denoiser and the ODE solution are known exactly."""
import math

import pytest
import torch

from samplers.diffusion import (SAMPLERS, default_noise_sampler, get_ancestral_step, sample_ddim, sample_ddpm,
                                sample_dpmpp_2m, sample_euler, sample_euler_ancestral, sample_flow_euler, sample_lcm)
from samplers.schedules import flow_sigmas, karras_sigmas

MU, S = 0.5, 0.7  # x0 ~ N(MU, S^2) per dimension
N = 20000


def ve_denoiser(x, sigma, **kwargs):
    """E[x0 | x] for x = x0 + sigma*eps: MU + S^2/(S^2+sigma^2) (x - MU)."""
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def flow_denoiser(x, sigma, **kwargs):
    """E[x0 | x] for x = (1-sigma) x0 + sigma*eps.

    x ~ N((1-sigma) MU, (1-sigma)^2 S^2 + sigma^2), so E[x0|x] = MU + (1-sigma) S^2 / Var(x) * (x - (1-sigma) MU).
    """
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    a = 1 - sigma
    return MU + a * S ** 2 / (a ** 2 * S ** 2 + sigma ** 2) * (x - a * MU)


def ve_consistency(x, sigma, **kwargs):
    """The consistency function (PF-ODE endpoint) for x = x0 + sigma*eps: MU + (x - MU) S / sqrt(S^2 + sigma^2)."""
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return MU + (x - MU) * S / (S ** 2 + sigma ** 2).sqrt()


def flow_consistency(x, sigma, **kwargs):
    """PF-ODE endpoint for x = (1-sigma) x0 + sigma*eps: MU + S (x - (1-sigma) MU) / sqrt((1-sigma)^2 S^2 + sigma^2)."""
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return MU + S * (x - (1 - sigma) * MU) / ((1 - sigma) ** 2 * S ** 2 + sigma ** 2).sqrt()


VE_SIGMAS = karras_sigmas(100, 0.002, 80.0)
FLOW_SIGMAS = flow_sigmas(100, shift=3.0)


def start_noise(seed=0, n=N):
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(seed))


def assert_gaussian(out):
    # mean within 0.02, std within 3% (20000 samples: standard errors 0.005 and 0.5%)
    assert abs(out.mean().item() - MU) < 0.02, out.mean().item()
    assert abs(out.std().item() / S - 1) < 0.03, out.std().item() / S


# ODE samplers at 200 steps; ancestral ones lose variance at O(1/steps) with a posterior-mean denoiser
# (the reverse step uses E[x0|x] instead of integrating over p(x0|x)), so they get 400 steps.
CASES = [("euler", {}, 200), ("flow_euler", {}, 200), ("ddim", {}, 200), ("dpmpp_2m", {}, 200),
         ("euler_ancestral", {}, 400), ("euler_ancestral", {"eta": 0.5}, 400), ("ddpm", {}, 400),
         ("ddim", {"eta": 0.5}, 400)]


@pytest.mark.parametrize("name,opts,steps", CASES)
def test_ve_samplers_recover_gaussian(name, opts, steps):
    sigmas = karras_sigmas(steps, 0.002, 80.0)
    out = SAMPLERS[name](ve_denoiser, 80.0 * start_noise(), sigmas, extra_args={"seed": 1}, disable=True, **opts)
    assert_gaussian(out)


@pytest.mark.parametrize("name,opts,steps", CASES)
def test_flow_samplers_recover_gaussian(name, opts, steps):
    out = SAMPLERS[name](flow_denoiser, start_noise(), flow_sigmas(steps, 3.0), extra_args={"seed": 1}, disable=True,
                         flow=True, **opts)
    assert_gaussian(out)


def test_lcm_with_consistency_function_is_exact_in_few_steps():
    # A consistency model maps x_sigma to the ODE endpoint, which for Gaussian data is known; re-noising its output to
    # sigma_next then gives the exact marginal again, so 4 steps suffice (the posterior mean would shrink the variance).
    ve = sample_lcm(ve_consistency, 80.0 * start_noise(), karras_sigmas(4, 0.002, 80.0), extra_args={"seed": 1},
                    disable=True)
    assert_gaussian(ve)
    flow = sample_lcm(flow_consistency, start_noise(), flow_sigmas(4, 3.0), extra_args={"seed": 1}, disable=True,
                      flow=True)
    assert_gaussian(flow)


@pytest.mark.parametrize("name", ["euler_ancestral", "ddpm", "ddim", "lcm"])
def test_flow_flag_matters_for_renoising(name):
    # VE re-noising (x0 + sigma*eps) of a flow model's state is wrong, so without flow=True the result is far off
    model = flow_consistency if name == "lcm" else flow_denoiser
    opts = {"eta": 1.0} if name == "ddim" else {}
    out = SAMPLERS[name](model, start_noise(n=5000), flow_sigmas(30, 3.0), extra_args={"seed": 1}, disable=True, **opts)
    assert abs(out.std().item() / S - 1) > 0.1


def test_ode_samplers_follow_exact_ve_flow_map():
    # The probability-flow ODE maps x_T linearly: x0 = MU + (x_T - MU) * S / sqrt(S^2 + sigma_T^2).
    x_t = 80.0 * start_noise(n=64)
    exact = MU + (x_t - MU) * S / math.sqrt(S ** 2 + 80.0 ** 2)

    def err(fn, steps):
        return (fn(ve_denoiser, x_t, karras_sigmas(steps, 0.002, 80.0), disable=True) - exact).abs().max().item()

    assert err(sample_euler, 200) < 0.05  # first order: 0.32 at 20 steps, 0.032 at 200
    assert err(sample_dpmpp_2m, 200) < 2e-3  # second order: 0.11 at 20 steps, 8e-4 at 200
    assert err(sample_dpmpp_2m, 20) < 0.5 * err(sample_euler, 20)  # second order beats first order at equal cost


def test_ode_samplers_follow_exact_flow_map():
    # For Gaussian data the flow ODE is the quantile map from N(0,1) at sigma=1: x0 = MU + S * x_1.
    x_1 = start_noise(n=64)
    exact = MU + S * x_1

    def err(fn, steps, **kw):
        return (fn(flow_denoiser, x_1, flow_sigmas(steps, 3.0), disable=True, **kw) - exact).abs().max().item()

    assert err(sample_flow_euler, 200) < 0.05
    assert err(sample_dpmpp_2m, 200, flow=True) < 5e-3
    assert err(sample_dpmpp_2m, 20, flow=True) < 0.5 * err(sample_flow_euler, 20)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_ddim_eta0_equals_euler(dtype, atol):
    # the same update written two ways (D + sigma_next eps_hat vs x + d dt): equal up to rounding
    x = (80.0 * start_noise(n=256)).to(dtype)
    assert torch.allclose(sample_ddim(ve_denoiser, x, VE_SIGMAS.to(dtype), disable=True),
                          sample_euler(ve_denoiser, x, VE_SIGMAS.to(dtype), disable=True), rtol=0, atol=atol)
    xf = start_noise(n=256).to(dtype)
    assert torch.allclose(sample_ddim(flow_denoiser, xf, FLOW_SIGMAS.to(dtype), disable=True, flow=True),
                          sample_euler(flow_denoiser, xf, FLOW_SIGMAS.to(dtype), disable=True), rtol=0, atol=atol)


def test_flow_euler_is_euler():
    x = start_noise(n=256)
    assert torch.equal(sample_flow_euler(flow_denoiser, x, FLOW_SIGMAS, disable=True),
                       sample_euler(flow_denoiser, x, FLOW_SIGMAS, disable=True))


def fixed_noise(n, steps, seed=5):
    """A noise sampler replaying a fixed list, so two samplers can be fed identical noise."""
    noises = iter(torch.randn(steps, n, 1, generator=torch.Generator().manual_seed(seed)))
    return lambda sigma, sigma_next: next(noises)


def test_ddpm_ve_matches_ho_et_al_eps_form():
    # Ho et al. 2020 Algorithm 2 on z = x / sqrt(1+sigma^2) with alpha_cumprod = 1/(1+sigma^2), written independently:
    # z' = (z - beta/sqrt(1-ac) eps) / sqrt(alpha) + sqrt(beta (1-ac_prev)/(1-ac)) noise.
    sigmas = karras_sigmas(12, 0.05, 20.0).double()
    x0 = (20.0 * start_noise(n=128)).double()
    noise = torch.randn(12, 128, 1, generator=torch.Generator().manual_seed(3)).double()
    x = x0.clone()
    for i in range(12):
        s, sn = sigmas[i].item(), sigmas[i + 1].item()
        ac, ac_prev = 1 / (1 + s * s), 1 / (1 + sn * sn)
        alpha = ac / ac_prev
        eps = (x - ve_denoiser(x, sigmas[i].reshape(1))) / s
        z = (x * math.sqrt(ac) - (1 - alpha) / math.sqrt(1 - ac) * eps) / math.sqrt(alpha)
        if sn > 0:
            z = z + math.sqrt((1 - alpha) * (1 - ac_prev) / (1 - ac)) * noise[i]
        x = z / math.sqrt(ac_prev)
    it = iter(noise)
    out = sample_ddpm(ve_denoiser, x0, sigmas, disable=True, noise_sampler=lambda a, b: next(it))
    assert torch.allclose(out, x, atol=1e-9)


def test_ddim_eta1_is_ddpm_and_ve_euler_ancestral():
    x = 80.0 * start_noise(n=256)
    steps = len(VE_SIGMAS) - 1
    ddpm = sample_ddpm(ve_denoiser, x, VE_SIGMAS, disable=True, noise_sampler=fixed_noise(256, steps))
    ddim = sample_ddim(ve_denoiser, x, VE_SIGMAS, disable=True, eta=1.0, noise_sampler=fixed_noise(256, steps))
    anc = sample_euler_ancestral(ve_denoiser, x, VE_SIGMAS, disable=True, noise_sampler=fixed_noise(256, steps))
    assert torch.allclose(ddim, ddpm, atol=1e-4) and torch.allclose(anc, ddpm, atol=1e-4)
    xf = start_noise(n=256)
    ddpm_f = sample_ddpm(flow_denoiser, xf, FLOW_SIGMAS, disable=True, flow=True, noise_sampler=fixed_noise(256, steps))
    ddim_f = sample_ddim(flow_denoiser, xf, FLOW_SIGMAS, disable=True, flow=True, eta=1.0,
                         noise_sampler=fixed_noise(256, steps))
    assert torch.allclose(ddim_f, ddpm_f, atol=1e-4)


@pytest.mark.parametrize("fn,opts", [(sample_ddpm, {}), (sample_ddim, {"eta": 0.7})])
def test_flow_posterior_is_ve_posterior_in_other_coordinates(fn, opts):
    # CONST x_f = (1-s) x0 + s eps is the VE state x_v = x_f / (1-s) at sigma_v = s / (1-s): the exact posterior
    # steps must agree once the noise is scaled the same way (VE noise std * (1 - sigma_next) = flow noise std).
    sig_f = flow_sigmas(30, 2.0)[3:].double()  # start below sigma=1 so the VE sigma is finite
    sig_v = sig_f / (1 - sig_f)
    x_f = (start_noise(n=64) * sig_f[0] + (1 - sig_f[0]) * MU).double()
    noise = fixed_noise(64, 30)
    ve_model = lambda x, s: flow_denoiser(x * (1 - s / (1 + s)).reshape(-1, 1), s / (1 + s))
    out_f = fn(flow_denoiser, x_f, sig_f, disable=True, flow=True, noise_sampler=fixed_noise(64, 30), **opts)
    out_v = fn(ve_model, x_f / (1 - sig_f[0]), sig_v, disable=True, noise_sampler=noise, **opts)
    assert torch.allclose(out_f, out_v, atol=1e-9)


def test_get_ancestral_step_conserves_variance():
    down, up = get_ancestral_step(2.0, 1.0, eta=1.0)
    assert down ** 2 + up ** 2 == pytest.approx(1.0)
    assert up == pytest.approx(math.sqrt(1.0 * (4.0 - 1.0) / 4.0))
    assert get_ancestral_step(2.0, 1.0, eta=0.0) == (1.0, 0.0)


STOCHASTIC = [(sample_euler_ancestral, {}), (sample_euler_ancestral, {"flow": True}), (sample_ddpm, {}),
              (sample_ddim, {"eta": 1.0}), (sample_lcm, {}), (sample_lcm, {"flow": True})]


@pytest.mark.parametrize("fn,opts", STOCHASTIC)
def test_seeds_reproduce_and_differ(fn, opts):
    sigmas = FLOW_SIGMAS[::10] if opts.get("flow") else karras_sigmas(10, 0.002, 80.0)
    model = flow_denoiser if opts.get("flow") else ve_denoiser
    x = start_noise(n=32)
    run = lambda seed: fn(model, x, sigmas, extra_args={"seed": seed}, disable=True, **opts)
    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


def test_default_noise_is_cpu_float32_draw_cast_to_x():
    x = torch.zeros(3, 4, dtype=torch.float64)
    noise = default_noise_sampler(x, seed=11)(None, None)
    expect = torch.randn(3, 4, generator=torch.Generator().manual_seed(11), dtype=torch.float32).double()
    assert noise.dtype == torch.float64 and torch.equal(noise, expect)


def test_noise_sampler_option_overrides_seed():
    calls = []

    def noise_sampler(sigma, sigma_next):
        calls.append((float(sigma), float(sigma_next)))
        return torch.zeros(4, 1)

    sigmas = karras_sigmas(5, 0.1, 10.0)
    out = sample_lcm(ve_denoiser, torch.ones(4, 1), sigmas, extra_args={"seed": 1}, disable=True,
                     noise_sampler=noise_sampler)
    assert len(calls) == 4  # no noise drawn for the final step to sigma = 0
    assert calls[0] == pytest.approx((sigmas[0].item(), sigmas[1].item()))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_extra_args_batch_sigma_and_no_grad(name):
    net = torch.nn.Linear(1, 1)
    seen = []

    def model(x, sigma, cond=None, seed=None):
        assert sigma.shape == (x.shape[0],) and cond == "c"
        return net(x) * 0 + ve_denoiser(x, sigma)

    sigmas = karras_sigmas(6, 0.1, 10.0)
    out = SAMPLERS[name](model, torch.randn(5, 1), sigmas, extra_args={"cond": "c", "seed": 0}, disable=True,
                         callback=seen.append)
    assert [d["i"] for d in seen] == list(range(6))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"} and seen[2]["sigma"] == sigmas[2]
    assert not out.requires_grad and out.shape == (5, 1)


def test_samplers_keep_dtype():
    x = start_noise(n=8).double()
    for name, fn in SAMPLERS.items():
        out = fn(ve_denoiser, x, karras_sigmas(4, 0.1, 10.0), extra_args={"seed": 0}, disable=True)
        assert out.dtype == torch.float64, name
