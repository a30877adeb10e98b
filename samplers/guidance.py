"""Classifier-free guidance (Ho & Salimans 2022) with guidance rescale (Lin et al. 2023) and a guidance interval
(Kynkäänniemi et al. 2024). Denoisers are callables `(x, sigma) -> D` returning the x0 estimate."""
import math
from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance uncond + scale * (cond - uncond); any matching shapes."""
    return uncond + scale * (cond - uncond)


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Guidance rescale, Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"), sec. 3.4.

    guided, cond [B, ...]: x_r = guided * std(cond) / std(guided), std per sample over all non-batch dims;
    returns phi*x_r + (1-phi)*guided [B, ...].
    """
    if phi == 0:
        return guided
    dims = list(range(1, guided.ndim))
    # A constant prediction (std 0, e.g. a zero-initialised network) must not turn into 0/0 = NaN.
    x_r = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-12))
    return phi * x_r + (1 - phi) * guided


def in_guidance_interval(sigma: float, sigma_low: float, sigma_high: float) -> bool:
    """Kynkäänniemi et al. 2024: guide only when sigma_low < sigma <= sigma_high.

    The interval is open below and closed above, as in the paper's (sigma_lo, sigma_hi]: with the defaults
    (0, inf) every sampling step (sigma > 0) is guided, and sigma_high = sigma_max keeps the first step guided.
    """
    return sigma_low < sigma <= sigma_high


def guided_denoise(x: torch.Tensor, sigma: torch.Tensor | float, denoise_cond: Denoiser, denoise_uncond: Denoiser,
                   scale: float, rescale: float = 0.0, sigma_low: float = 0.0,
                   sigma_high: float = math.inf) -> torch.Tensor:
    """CFG-guided denoised estimate D for x [B, ...] at sigma (float, 0-d or [B]) -> [B, ...].

    The guidance is combined on eps = (x - D)/sigma (the flow velocity for CONST models), the guided eps rescaled as
    in diffusers' rescale_noise_cfg, and returned as D = x - sigma*eps. denoise_uncond runs only when scale != 1 and
    some sample's sigma lies in the guidance interval; samples outside it keep the conditional estimate.
    """
    d_cond = denoise_cond(x, sigma)
    sig = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).reshape(-1)
    inside = (sig > sigma_low) & (sig <= sigma_high) & (sig > 0)  # in_guidance_interval per sample; eps needs sigma > 0
    if scale == 1.0 or not bool(inside.any()):
        return d_cond
    d_uncond = denoise_uncond(x, sigma)
    s = sig.reshape(-1, *([1] * (x.ndim - 1)))  # (B or 1, 1, ..., 1)
    eps_cond, eps_uncond = (x - d_cond) / s, (x - d_uncond) / s
    eps = rescale_guidance(cfg_combine(eps_cond, eps_uncond, scale), eps_cond, rescale)
    guided = x - s * eps
    return torch.where(inside.reshape_as(s), guided, d_cond)
