"""Noise schedules against published values and hand-computed examples."""
import math

import pytest
import torch

from samplers.schedules import (SCHEDULES, alphas_cumprod, discrete_sigmas, exponential_sigmas, flow_sigmas, flux_mu,
                                flux_shift, get_sigmas, karras_sigmas, spaced_sigmas)


def test_sd_scaled_linear_table_matches_published_range():
    table = discrete_sigmas("sd_scaled_linear")
    assert table.shape == (1000,) and table.dtype == torch.float32
    assert round(table[0].item(), 4) == 0.0292 and round(table[-1].item(), 4) == 14.6146
    assert bool((table[1:] > table[:-1]).all())  # ascending


def test_ddpm_linear_table_ends():
    table = discrete_sigmas("ddpm_linear")
    assert table[0].item() == pytest.approx(0.0100, abs=1e-4)  # sqrt(1e-4 / (1 - 1e-4))
    assert table[-1].item() == pytest.approx(157.4, abs=0.05)


def test_ddpm_linear_alphas_cumprod_is_product_of_betas():
    ac = alphas_cumprod("ddpm_linear")
    assert ac.dtype == torch.float64
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(3)]
    assert ac[2].item() == pytest.approx((1 - betas[0]) * (1 - betas[1]) * (1 - betas[2]), rel=1e-12)


@pytest.mark.parametrize("t", [1, 10, 250, 500, 900])
def test_cosine_alphas_cumprod_formula(t):
    f = lambda u: math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    assert alphas_cumprod("cosine")[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-9)


def test_cosine_betas_clipped():
    ac = alphas_cumprod("cosine")
    betas = 1 - ac[1:] / ac[:-1]
    assert betas.max().item() == pytest.approx(0.999, abs=1e-9)  # the last beta would be 1 without the clip


def test_karras_endpoints_monotone_and_rho_formula():
    s = karras_sigmas(10, 0.1, 10.0, rho=7.0)
    assert s.shape == (11,) and s[-1].item() == 0.0
    assert s[0].item() == pytest.approx(10.0, rel=1e-5) and s[-2].item() == pytest.approx(0.1, rel=1e-5)
    assert bool((s[1:] < s[:-1]).all())
    i = 4  # sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho
    expect = (10.0 ** (1 / 7) + i / 9 * (0.1 ** (1 / 7) - 10.0 ** (1 / 7))) ** 7
    assert s[i].item() == pytest.approx(expect, rel=1e-5)


def test_exponential_is_log_linear():
    s = exponential_sigmas(5, 0.1, 10.0)
    assert s[-1].item() == 0.0
    ratios = s[1:-1] / s[:-2]
    assert torch.allclose(ratios, torch.full_like(ratios, (0.1 / 10.0) ** (1 / 4)), rtol=1e-5)


def test_flow_sigmas_shift_formula():
    s = flow_sigmas(4, shift=3.0)
    assert s[0].item() == 1.0 and s[-1].item() == 0.0
    t = 0.5  # linear point at i=2
    assert s[2].item() == pytest.approx(3 * t / (1 + 2 * t), rel=1e-6)
    assert torch.allclose(flow_sigmas(4, shift=1.0), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def test_flux_mu_and_shift():
    assert flux_mu(256) == pytest.approx(0.5) and flux_mu(4096) == pytest.approx(1.15)
    assert flux_mu(2176) == pytest.approx(0.825)
    out = flux_shift(torch.tensor([0.0, 0.5, 1.0]), 1.15)
    assert out[0].item() == 0.0 and out[2].item() == pytest.approx(1.0)
    assert out[1].item() == pytest.approx(math.exp(1.15) / (math.exp(1.15) + 1.0))
    flux = get_sigmas("flow_flux", 4, image_tokens=256)
    assert flux[2].item() == pytest.approx(math.exp(0.5) / (math.exp(0.5) + 1.0), rel=1e-6)


def test_spaced_sigmas_matches_comfyui_simple_example():
    table = torch.arange(1.0, 11.0)  # ascending, 10 entries; stride 10/3: indices -1, -(1+3), -(1+6)
    assert spaced_sigmas(table, 3).tolist() == [10.0, 7.0, 4.0, 0.0]
    assert spaced_sigmas(table, 10).tolist() == list(range(10, 0, -1)) + [0.0]


@pytest.mark.parametrize("name", SCHEDULES)
def test_get_sigmas_shape_and_order(name):
    s = get_sigmas(name, 7)
    assert s.shape == (8,) and s.dtype == torch.float32 and s[-1].item() == 0.0
    assert bool((s[1:] < s[:-1]).all())


def test_get_sigmas_karras_defaults_to_sd_range():
    s = get_sigmas("karras", 5)
    assert round(s[0].item(), 4) == 14.6146 and round(s[-2].item(), 4) == 0.0292
    assert get_sigmas("karras", 5, sigma_min=0.002, sigma_max=80.0)[0].item() == pytest.approx(80.0)


def test_get_sigmas_discrete_is_simple_scheduler():
    assert torch.equal(get_sigmas("sd_scaled_linear", 20), spaced_sigmas(discrete_sigmas("sd_scaled_linear"), 20))


def test_denoise_semantics():
    assert torch.equal(get_sigmas("karras", 10, denoise=0.5), get_sigmas("karras", 20)[-11:])
    assert torch.equal(get_sigmas("sd_scaled_linear", 3, denoise=0.4), get_sigmas("sd_scaled_linear", 7)[-4:])
    assert get_sigmas("karras", 10, denoise=0.0).numel() == 0
    assert torch.equal(get_sigmas("flow_sd3", 6, denoise=1.0), get_sigmas("flow_sd3", 6))


def test_value_errors_list_options():
    with pytest.raises(ValueError, match="karras"):
        get_sigmas("nope", 10)
    with pytest.raises(ValueError, match="steps"):
        get_sigmas("karras", 0)
    with pytest.raises(ValueError, match="sd_scaled_linear"):
        alphas_cumprod("karras")
