"""Noise schedules as pure functions returning 1-D sigma tensors (k-diffusion / ComfyUI conventions).

Discrete schedules give a table of T ascending sigmas, sigma_t = sqrt((1 - alphas_cumprod_t) / alphas_cumprod_t)
(the VE view of a VP diffusion: x = x0 + sigma * eps). Sampling schedules are descending, steps+1 long, end in 0.
Flow schedules live in ComfyUI's CONST convention, x = (1 - sigma) * x0 + sigma * eps with sigma in [0, 1].
"""
import math

import torch

SCHEDULES = ("ddpm_linear", "cosine", "sd_scaled_linear", "karras", "exponential", "flow_sd3", "flow_flux")
DISCRETE_SCHEDULES = ("ddpm_linear", "cosine", "sd_scaled_linear")


def alphas_cumprod(name: str, timesteps: int = 1000) -> torch.Tensor:
    """alpha_bar_t for t = 1..T of a discrete beta schedule -> [T] float64."""
    T = timesteps
    if name == "ddpm_linear":  # Ho et al. 2020, sec. 4
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    elif name == "sd_scaled_linear":  # Rombach et al. 2022 (LDM / Stable Diffusion config)
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2
    elif name == "cosine":  # Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = f(t) / f(0), betas clipped at 0.999
        s = 0.008
        f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(0.0, 0.999)
    else:
        raise ValueError(f"unknown discrete schedule {name!r}; expected one of {DISCRETE_SCHEDULES}")
    return torch.cumprod(1.0 - betas, dim=0)


def discrete_sigmas(name: str, timesteps: int = 1000) -> torch.Tensor:
    """Ascending sigma table sqrt((1 - ac) / ac) -> [T] float32 (as ComfyUI's ModelSamplingDiscrete)."""
    ac = alphas_cumprod(name, timesteps)
    return ((1 - ac) / ac).sqrt().float()


def spaced_sigmas(table: torch.Tensor, steps: int) -> torch.Tensor:
    """ComfyUI's "simple" scheduler: `steps` evenly strided entries of an ascending [T] table, high to low, then 0.

    -> [steps+1]; table[-(1 + int(i * T / steps))] for i < steps.
    """
    stride = len(table) / steps
    return torch.tensor([float(table[-(1 + int(i * stride))]) for i in range(steps)] + [0.0], dtype=torch.float32)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 (EDM), eq. 5, then 0 -> [steps+1].

    sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho for i < n = steps.
    """
    ramp = torch.linspace(0, 1, steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1)])


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Sigmas evenly spaced in log sigma from sigma_max to sigma_min, + 0 -> [steps+1]."""
    return torch.cat([torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp(), torch.zeros(1)])


def flow_sigmas(steps: int, shift: float = 1.0) -> torch.Tensor:
    """Rectified-flow sigmas linear 1 -> 0, then the SD3 time shift s*sigma / (1 + (s-1)*sigma) -> [steps+1].

    Esser et al. 2024 (SD3), resolution-dependent timestep shifting; shift=1 leaves the linear schedule.
    """
    sigmas = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * sigmas / (1 + (shift - 1) * sigmas)).float()


def flux_mu(image_tokens: int) -> float:
    """Flux's resolution-dependent shift mu: linear from 0.5 at 256 image tokens to 1.15 at 4096."""
    return 0.5 + (1.15 - 0.5) * (image_tokens - 256) / (4096 - 256)


def flux_shift(sigma: torch.Tensor | float, mu: float) -> torch.Tensor:
    """Flux time shift e^mu / (e^mu + (1/sigma - 1)); sigma=0 stays 0 and sigma=1 stays 1 -> shape of sigma."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    safe = sigma.clamp_min(1e-12)  # avoid 1/0; sigma == 0 is mapped to 0 below
    shifted = math.exp(mu) / (math.exp(mu) + (1 / safe - 1))
    return torch.where(sigma > 0, shifted, torch.zeros_like(sigma))


def _full_sigmas(schedule: str, steps: int, sigma_min: float | None, sigma_max: float | None, rho: float, shift: float,
                 image_tokens: int) -> torch.Tensor:
    if schedule in DISCRETE_SCHEDULES:
        return spaced_sigmas(discrete_sigmas(schedule), steps)
    if schedule in ("karras", "exponential"):
        table = discrete_sigmas("sd_scaled_linear")
        lo = float(table[0]) if sigma_min is None else sigma_min
        hi = float(table[-1]) if sigma_max is None else sigma_max
        return karras_sigmas(steps, lo, hi, rho) if schedule == "karras" else exponential_sigmas(steps, lo, hi)
    if schedule == "flow_sd3":
        return flow_sigmas(steps, shift)
    if schedule == "flow_flux":
        return flux_shift(flow_sigmas(steps, 1.0), flux_mu(image_tokens)).float()
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


def get_sigmas(schedule: str, steps: int, denoise: float = 1.0, sigma_min: float | None = None,
               sigma_max: float | None = None, rho: float = 7.0, shift: float = 3.0,
               image_tokens: int = 4096) -> torch.Tensor:
    """Descending sampling sigmas for a named schedule -> [steps+1] float32 ending in 0.

    denoise < 1 follows ComfyUI's BasicScheduler: build int(steps/denoise) steps and keep the last steps+1 values
    (img2img starts part-way down the schedule); denoise <= 0 gives an empty tensor.
    karras/exponential default to the SD scaled-linear table range (0.0292 .. 14.6146);
    flow_sd3 uses `shift`, flow_flux uses flux_mu(image_tokens).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float32)
    total = steps if denoise >= 1.0 else int(steps / denoise)
    sigmas = _full_sigmas(schedule, total, sigma_min, sigma_max, rho, shift, image_tokens)
    return sigmas[-(steps + 1):].float()
