"""Diffusion samplers with the k-diffusion signature, so ComfyUI's KSAMPLER can wrap them as they are.

`model(x, sigma[B], **extra_args)` returns the denoised x0 estimate D. `sigmas` is a descending [steps+1] tensor
ending in 0. Two state conventions:
  VE (default):        x = x0 + sigma * eps                 (k-diffusion; eps/v models seen through ComfyUI)
  flow (flow=True):    x = (1 - sigma) * x0 + sigma * eps   (ComfyUI's CONST; rectified flow / SiT), sigma in [0, 1]
Both are (alpha, s) Gaussian paths x = alpha*x0 + s*eps; the deterministic ODE step d = (x - D) / sigma is the same
in both, the re-noising differs; every sampler takes `flow` so callers can pass it uniformly. Noise is drawn on the
CPU in float32 from a generator seeded with extra_args["seed"] and then moved to x's device/dtype, so a seed gives
the same picture on every device.
"""
import math
from typing import Callable

import torch

try:
    from tqdm.auto import trange
except ImportError:  # tqdm ships with ComfyUI; without it sampling just runs without a bar
    def trange(n: int, disable=None, **kwargs):
        return range(n)

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Denoiser = Callable[..., torch.Tensor]  # model(x [B, ...], sigma [B], **extra_args) -> D [B, ...]
Callback = Callable[[dict], None]


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append singleton dims so a [B] (or 0-d) tensor broadcasts against an ndim tensor."""
    return v[(...,) + (None,) * (ndim - v.ndim)]


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """Karras ODE derivative dx/dsigma = (x - D) / sigma; in the flow convention this is the velocity eps - x0."""
    return (x - denoised) / append_dims(torch.as_tensor(sigma, device=x.device, dtype=x.dtype), x.ndim)


def get_ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """VE ancestral split of sigma_from -> sigma_to into (sigma_down, sigma_up), sigma_down^2 + sigma_up^2 = sigma_to^2.

    Deterministic Euler to sigma_down, then fresh noise of std sigma_up; eta=0 is plain Euler.
    """
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    return (sigma_to ** 2 - sigma_up ** 2) ** 0.5, sigma_up


def default_noise_sampler(x: torch.Tensor, seed: int | None = None) -> NoiseSampler:
    """noise_sampler(sigma, sigma_next) -> N(0, I) shaped like x, on x's device/dtype.

    Drawn on the CPU in float32 from a generator seeded with `seed` (the global RNG if None), so a seed reproduces
    across devices and dtypes.
    """
    gen = None
    if seed is not None:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int(seed))
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x.device, x.dtype)


def _setup(x, extra_args, noise_sampler):
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None:
        noise_sampler = default_noise_sampler(x, seed=extra_args.get("seed"))
    return extra_args, noise_sampler, x.new_ones([x.shape[0]])


def _alpha_s(sigma: float, flow: bool) -> tuple[float, float]:
    """(alpha, s) of the state x = alpha*x0 + s*eps at noise level sigma."""
    return (1.0 - sigma, sigma) if flow else (1.0, sigma)


def _half_log_snr(sigma: float, flow: bool) -> float:
    """lambda = log(alpha / s), +inf at sigma = 0 and -inf where alpha = 0 (flow sigma = 1)."""
    alpha, s = _alpha_s(sigma, flow)
    if s <= 0:
        return math.inf
    return -math.inf if alpha <= 0 else math.log(alpha / s)


def _posterior(sigma: float, sigma_next: float, flow: bool) -> tuple[float, float, float]:
    """q(x_next | x, x0) = N(a*x + b*x0, c^2) of the forward process between two noise levels -> (a, b, c).

    Ho et al. 2020 eq. 7 written for a general Gaussian path (Kingma et al. 2021, VDM, appendix A):
    alpha_ts = alpha_t/alpha_s, var_ts = s_t^2 - alpha_ts^2 s_s^2, a = alpha_ts s_s^2/s_t^2, b = alpha_s var_ts/s_t^2,
    c^2 = var_ts s_s^2/s_t^2. It depends only on the SNRs, so in VE form it equals eq. 7 applied to x/sqrt(1+sigma^2)
    with alpha_cumprod = 1/(1+sigma^2), and in flow form it is the exact posterior of the CONST path.
    """
    a_t, s_t = _alpha_s(sigma, flow)
    a_s, s_s = _alpha_s(sigma_next, flow)
    a_ts = a_t / a_s
    var_ts = max(s_t ** 2 - a_ts ** 2 * s_s ** 2, 0.0)
    return a_ts * s_s ** 2 / s_t ** 2, a_s * var_ts / s_t ** 2, (var_ts * s_s ** 2) ** 0.5 / s_t


def _step_info(x, i, sigmas, denoised):
    return {"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised}


@torch.no_grad()
def sample_euler(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                 callback: Callback | None = None, disable: bool | None = None, flow: bool = False) -> torch.Tensor:
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn).

    `flow` is accepted so every sampler takes it; the step is the same in both conventions.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback(_step_info(x, i, sigmas, denoised))
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_euler_ancestral(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                           callback: Callback | None = None, disable: bool | None = None, eta: float = 1.0,
                           s_noise: float = 1.0, noise_sampler: NoiseSampler | None = None,
                           flow: bool = False) -> torch.Tensor:
    """Ancestral sampling with Euler steps (k-diffusion); flow=True: the rectified-flow step ComfyUI uses for CONST.

    VE: Euler to sigma_down, add sigma_up noise (get_ancestral_step). Flow: Euler along the ODE to
    sigma_down = sigma_next * (1 + (sigma_next/sigma - 1) * eta), where x = (1-sigma_down) x0 + sigma_down eps; scale by
    (1-sigma_next)/(1-sigma_down) so the x0 coefficient is right, then add fresh noise so the total noise variance
    is sigma_next^2.
    """
    extra_args, noise_sampler, s_in = _setup(x, extra_args, noise_sampler)
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback(_step_info(x, i, sigmas, denoised))
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        if sigma_next == 0:
            x = denoised
            continue
        if flow:
            sigma_down = max(sigma_next * (1 + (sigma_next / sigma - 1) * eta), 0.0)
            x = denoised + (sigma_down / sigma) * (x - denoised)
            scale = (1 - sigma_next) / (1 - sigma_down)
            sigma_up = max(sigma_next ** 2 - (scale * sigma_down) ** 2, 0.0) ** 0.5
            x = scale * x
        else:
            sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
            x = denoised + (sigma_down / sigma) * (x - denoised)
        if sigma_up > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * (s_noise * sigma_up)
    return x


@torch.no_grad()
def sample_ddpm(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                callback: Callback | None = None, disable: bool | None = None,
                noise_sampler: NoiseSampler | None = None, flow: bool = False) -> torch.Tensor:
    """Ancestral sampling from the exact DDPM posterior q(x_{t-1} | x_t, x0 = D) (Ho et al. 2020, Alg. 2 / eq. 7)."""
    extra_args, noise_sampler, s_in = _setup(x, extra_args, noise_sampler)
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback(_step_info(x, i, sigmas, denoised))
        a, b, c = _posterior(float(sigmas[i]), float(sigmas[i + 1]), flow)
        x = a * x + b * denoised
        if c > 0:
            x = x + c * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


@torch.no_grad()
def sample_ddim(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                callback: Callback | None = None, disable: bool | None = None,
                eta: float = 0.0, noise_sampler: NoiseSampler | None = None, flow: bool = False) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) in the sampler's state: x_next = alpha' D + sqrt(s'^2 - c^2) eps_hat + c z.

    c = eta * (DDPM posterior std), capped at s'. In VE form eta=0 is D + sigma_next (x - D)/sigma, i.e. Euler, and
    eta=1 is DDPM (and equals VE euler_ancestral with eta=1).
    """
    extra_args, noise_sampler, s_in = _setup(x, extra_args, noise_sampler)
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback(_step_info(x, i, sigmas, denoised))
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        a_t, s_t = _alpha_s(sigma, flow)
        a_s, s_s = _alpha_s(sigma_next, flow)
        c = min(eta * _posterior(sigma, sigma_next, flow)[2], s_s)
        eps = (x - a_t * denoised) / s_t
        x = a_s * denoised + (s_s ** 2 - c ** 2) ** 0.5 * eps
        if c > 0:
            x = x + c * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                    callback: Callback | None = None, disable: bool | None = None, flow: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) in lambda = log(alpha/s); flow=True uses the CONST lambda."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_denoised, lam_prev = None, None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback(_step_info(x, i, sigmas, denoised))
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        lam, lam_next = _half_log_snr(sigma, flow), _half_log_snr(sigma_next, flow)
        a_s, s_s = _alpha_s(sigma_next, flow)
        h = lam_next - lam
        d = denoised
        # second order only between finite lambdas (the step to sigma=0 and a flow start at sigma=1 are first order)
        if old_denoised is not None and math.isfinite(h) and math.isfinite(lam - lam_prev):
            r = (lam - lam_prev) / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (s_s / _alpha_s(sigma, flow)[1]) * x - a_s * math.expm1(-h) * d
        old_denoised, lam_prev = denoised, lam
    return x


@torch.no_grad()
def sample_flow_euler(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                      callback: Callback | None = None, disable: bool | None = None, flow: bool = True) -> torch.Tensor:
    """Rectified-flow Euler (Liu et al. 2023): x += (sigma_next - sigma) v with v = (x - D)/sigma = eps - x0.

    For CONST (flow) models this is exactly sample_euler: the flow velocity is the Karras ODE derivative (on a VE model
    it is VE Euler). `flow` is accepted so every sampler takes it; it changes nothing here.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback(_step_info(x, i, sigmas, denoised))
        v = to_d(x, sigmas[i], denoised)
        x = x + (sigmas[i + 1] - sigmas[i]) * v
    return x


@torch.no_grad()
def sample_lcm(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
               callback: Callback | None = None, disable: bool | None = None,
               noise_sampler: NoiseSampler | None = None, flow: bool = False) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1; LCM, Luo et al. 2023): x = D, re-noise to sigma_next.

    VE re-noises as D + sigma_next*eps, flow as (1-sigma_next)*D + sigma_next*eps.
    """
    extra_args, noise_sampler, s_in = _setup(x, extra_args, noise_sampler)
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback(_step_info(x, i, sigmas, denoised))
        x = denoised
        sigma_next = float(sigmas[i + 1])
        if sigma_next > 0:
            a_s, s_s = _alpha_s(sigma_next, flow)
            x = a_s * denoised + s_s * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


SAMPLERS: dict[str, Callable] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "dpmpp_2m": sample_dpmpp_2m,
    "flow_euler": sample_flow_euler,
    "lcm": sample_lcm,
}
