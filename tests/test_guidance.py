"""Classifier-free guidance arithmetic, rescale, interval, and the number of network calls."""
import math

import pytest
import torch

from samplers.guidance import cfg_combine, guided_denoise, in_guidance_interval, rescale_guidance


class Counter:
    """A denoiser (x, sigma) -> D that counts its calls: D = x * k."""

    def __init__(self, k):
        self.k, self.calls = k, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return x * self.k


def test_cfg_combine_arithmetic():
    cond, uncond = torch.tensor([3.0, -1.0]), torch.tensor([1.0, 1.0])
    assert torch.equal(cfg_combine(cond, uncond, 1.0), cond)
    assert torch.equal(cfg_combine(cond, uncond, 0.0), uncond)
    assert torch.equal(cfg_combine(cond, uncond, 4.0), torch.tensor([9.0, -7.0]))


def test_rescale_identity_and_full():
    g = torch.Generator().manual_seed(0)
    cond, guided = torch.randn(3, 4, 5, 5, generator=g), 4.0 * torch.randn(3, 4, 5, 5, generator=g) + 1.0
    assert torch.equal(rescale_guidance(guided, cond, 0.0), guided)
    full = rescale_guidance(guided, cond, 1.0)
    dims = [1, 2, 3]
    assert torch.allclose(full.std(dim=dims), cond.std(dim=dims), rtol=1e-5)  # per sample
    ratio = (cond.std(dim=dims) / guided.std(dim=dims)).reshape(3, 1, 1, 1)
    assert torch.allclose(full, guided * ratio)
    half = rescale_guidance(guided, cond, 0.7)
    assert torch.allclose(half, 0.7 * full + 0.3 * guided, atol=1e-6)


def test_in_guidance_interval_boundaries():
    assert in_guidance_interval(1.0, 0.5, 1.0)  # closed above
    assert not in_guidance_interval(0.5, 0.5, 1.0)  # open below
    assert in_guidance_interval(0.7, 0.5, 1.0) and not in_guidance_interval(1.1, 0.5, 1.0)
    assert in_guidance_interval(1e-3, 0.0, math.inf)


def test_scale_one_costs_one_call():
    cond, uncond = Counter(0.5), Counter(0.0)
    x = torch.randn(2, 3)
    d = guided_denoise(x, 1.0, cond, uncond, scale=1.0)
    assert cond.calls == 1 and uncond.calls == 0 and torch.equal(d, 0.5 * x)


def test_outside_interval_costs_one_call():
    cond, uncond = Counter(0.5), Counter(0.0)
    x = torch.randn(2, 3)
    d = guided_denoise(x, torch.tensor([5.0, 5.0]), cond, uncond, scale=3.0, sigma_low=0.5, sigma_high=2.0)
    assert (cond.calls, uncond.calls) == (1, 0) and torch.equal(d, 0.5 * x)


def test_guided_equals_cfg_in_x0_space_without_rescale():
    # eps = (x - D)/sigma is affine in D, so CFG on eps equals CFG on D when nothing is rescaled
    cond, uncond = Counter(0.5), Counter(0.2)
    x = torch.randn(4, 2, 3, 3)
    d = guided_denoise(x, 2.0, cond, uncond, scale=3.0)
    assert (cond.calls, uncond.calls) == (1, 1)
    assert torch.allclose(d, cfg_combine(0.5 * x, 0.2 * x, 3.0), atol=1e-6)


def test_rescale_acts_on_guided_epsilon():
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    cond = lambda x, s: 0.9 * x
    uncond = lambda x, s: 0.3 * x + 0.1
    sigma = 1.5
    d = guided_denoise(x, sigma, cond, uncond, scale=5.0, rescale=0.7)
    eps_c, eps_u = (x - 0.9 * x) / sigma, (x - (0.3 * x + 0.1)) / sigma
    eps = rescale_guidance(cfg_combine(eps_c, eps_u, 5.0), eps_c, 0.7)
    assert torch.allclose(d, x - sigma * eps, atol=1e-6)
    assert not torch.allclose(d, guided_denoise(x, sigma, cond, uncond, scale=5.0), atol=1e-3)


def test_batch_of_sigmas_guides_only_inside_interval():
    cond, uncond = Counter(0.5), Counter(0.2)
    x = torch.randn(3, 2, 4, 4)
    sigmas = torch.tensor([0.1, 1.0, 10.0])
    d = guided_denoise(x, sigmas, cond, uncond, scale=2.0, sigma_low=0.5, sigma_high=5.0)
    assert (cond.calls, uncond.calls) == (1, 1)
    assert torch.allclose(d[1], cfg_combine(0.5 * x[1], 0.2 * x[1], 2.0), atol=1e-6)  # inside: guided
    assert torch.equal(d[0], 0.5 * x[0]) and torch.equal(d[2], 0.5 * x[2])  # outside: conditional only


def test_batch_of_sigmas_with_rescale_matches_per_sample():
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    cond = lambda x, s: 0.8 * x
    uncond = lambda x, s: 0.1 * x + 0.05
    sigmas = torch.tensor([0.5, 3.0])
    d = guided_denoise(x, sigmas, cond, uncond, scale=4.0, rescale=0.5)
    for i in range(2):
        one = guided_denoise(x[i:i + 1], float(sigmas[i]), cond, uncond, scale=4.0, rescale=0.5)
        assert torch.allclose(d[i:i + 1], one, atol=1e-5)


def test_rescale_of_a_constant_prediction_is_finite():
    # A zero-initialised DiT predicts eps = 0 everywhere: std(guided) = 0 must not give NaN.
    guided = torch.zeros(2, 3, 4, 4)
    cond = torch.zeros(2, 3, 4, 4)
    out = rescale_guidance(guided, cond, 0.7)
    assert torch.isfinite(out).all() and out.abs().max() == 0
