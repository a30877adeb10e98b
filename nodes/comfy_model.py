"""Our denoisers inside ComfyUI's MODEL type (a ModelPatcher around a comfy.model_base.BaseModel).

Works with the March-2024 ComfyUI (no flow-matching model sampling yet) and current ComfyUI: where
core has CONST + ModelSamplingDiscreteFlow we use them, so core samplers see a real flow model.
"""
from __future__ import annotations

import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.supported_models_base

from ..models.denoiser import FLOW_TIMESTEP_MULTIPLIER, DenoiserNet

COND_KEY = "tn_class"  # conditioning dict key carrying class indices (int or list of ints; -1 = unconditional)


class _Const:
    """Flow-matching parameterisation x = (1 - sigma) x0 + sigma eps, output eps - x0 (as core's CONST)."""

    def calculate_input(self, sigma, noise):
        return noise

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        return model_input - model_output * sigma

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1)) if torch.is_tensor(sigma) and sigma.ndim else sigma
        return sigma * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent / (1.0 - sigma)


class _FlowSchedule(torch.nn.Module):
    """sigma in (0, 1], timestep = 1000 * sigma (core's ModelSamplingDiscreteFlow with shift 1)."""

    def __init__(self, model_config=None):
        super().__init__()
        self.multiplier = FLOW_TIMESTEP_MULTIPLIER
        self.register_buffer("sigmas", torch.arange(1, 1001, dtype=torch.float32) / 1000.0)
        self.register_buffer("log_sigmas", self.sigmas.log())

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        return sigma * self.multiplier

    def sigma(self, timestep):
        return timestep / self.multiplier

    def percent_to_sigma(self, percent):
        return 1.0 if percent <= 0.0 else 0.0 if percent >= 1.0 else 1.0 - percent


def flow_model_sampling():
    ms = comfy.model_sampling
    if hasattr(ms, "CONST") and hasattr(ms, "ModelSamplingDiscreteFlow"):
        class ModelSampling(ms.ModelSamplingDiscreteFlow, ms.CONST):
            pass
        cfg = type("Cfg", (), {"sampling_settings": {"shift": 1.0, "multiplier": FLOW_TIMESTEP_MULTIPLIER}})()
        return ModelSampling(cfg)

    class ModelSampling(_FlowSchedule, _Const):
        pass
    return ModelSampling()


def is_flow(model_sampling) -> bool:
    return any(c.__name__ in ("CONST", "_Const") for c in type(model_sampling).__mro__)


def find_model_sampling(model):
    """The model_sampling behind the k-diffusion model wrapper ComfyUI hands to a SAMPLER function."""
    m = model
    for _ in range(4):
        if hasattr(m, "model_sampling"):
            return m.model_sampling
        m = getattr(m, "inner_model", None)
        if m is None:
            break
    return None


def latent_format(scale_factor: float, channels: int, rgb_factors=None, rgb_bias=None):
    fmt = comfy.latent_formats.LatentFormat()
    fmt.scale_factor = scale_factor
    fmt.latent_channels = channels
    fmt.latent_rgb_factors = rgb_factors
    fmt.latent_rgb_factors_bias = rgb_bias
    return fmt


class _Unet(torch.nn.Module):
    """The diffusion_model ComfyUI calls: (x, timesteps, context, y=..., ...) -> model output."""

    def __init__(self, denoiser: DenoiserNet):
        super().__init__()
        self.denoiser = denoiser

    @property
    def dtype(self):
        return self.denoiser.dtype

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options={}, **kwargs):
        return self.denoiser(x, timesteps, y)


class TNModel(comfy.model_base.BaseModel):
    """BaseModel whose class label comes from CONDITIONING made by TN_ClassLabel (missing = unconditional)."""

    def extra_conds(self, **kwargs):
        info = self.diffusion_model.denoiser.info
        label = kwargs.get(COND_KEY, -1)
        labels = torch.tensor(label if isinstance(label, (list, tuple)) else [label], dtype=torch.long)
        null = info.null_class if info.null_class is not None else -1
        labels = torch.where(labels < 0, torch.full_like(labels, null), labels)
        return {"y": comfy.conds.CONDRegular(labels)}


def wrap_denoiser(denoiser: DenoiserNet, rgb_factors=None, rgb_bias=None) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher holding our network, loaded/offloaded by ComfyUI's model management."""
    info = denoiser.info
    fmt = latent_format(info.latent_scale_factor, info.latent_channels, rgb_factors, rgb_bias)
    if rgb_factors is None and info.latent_channels == 4 and not info.autoencoder:
        fmt = comfy.latent_formats.SD15(scale_factor=info.latent_scale_factor)  # official DiT/SiT: SD VAE latents

    class Config(comfy.supported_models_base.BASE):
        unet_config = {"disable_unet_model_creation": True}
        unet_extra_config = {}
        sampling_settings = {"beta_schedule": "sqrt_linear", "linear_start": 1e-4, "linear_end": 0.02}
        latent_format = comfy.latent_formats.LatentFormat

    config = Config({"disable_unet_model_creation": True})
    config.latent_format = fmt
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    model = TNModel(config, comfy.model_base.ModelType.EPS, device=offload_device)
    if info.prediction == "sit_velocity":
        model.model_sampling = flow_model_sampling()
    model.diffusion_model = _Unet(denoiser)
    model.tn_info = info
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
