"""Diffusion nodes: schedule -> SIGMAS, sampler -> SAMPLER, CFG -> GUIDER, denoiser -> MODEL, class label, sampling."""
from __future__ import annotations

import inspect
import math

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils

from ..models.checkpoint import CheckpointError
from ..models.denoiser import load_denoiser
from ..samplers import guidance, schedules
from ..report.stats import RunStats, Stopwatch, count_forward
from ..samplers.diffusion import SAMPLERS
from .common import (CATEGORY, DENOISER_FOLDER, DTYPES, NodeInputError, Progress, choices, latent_to_rgb, parse_int_list,
                     pick_dtype, resolve)
from .comfy_model import COND_KEY, find_model_sampling, is_flow, wrap_denoiser

CAT = f"{CATEGORY}/diffusion"


class TN_NoiseSchedule:
    TITLE = "TN Noise Schedule"
    DESCRIPTION = ("A fixed noise schedule as SIGMAS (descending, ending in 0) for any SIGMAS-taking sampler node, "
                   "core SamplerCustom / SamplerCustomAdvanced included. Discrete schedules are spaced like core's "
                   "'simple' scheduler; flow schedules run sigma from 1 to 0 with a time shift.")
    CATEGORY = CAT
    FUNCTION = "get_sigmas"
    RETURN_TYPES = ("SIGMAS",)
    OUTPUT_TOOLTIPS = ("Noise levels, steps + 1 values ending in 0.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "schedule": (list(schedules.SCHEDULES), {"default": "ddpm_linear", "tooltip": (
                "ddpm_linear: DDPM betas 1e-4..0.02 (DiT); cosine: Nichol & Dhariwal 2021; sd_scaled_linear: Stable "
                "Diffusion; karras / exponential: continuous between sigma_min and sigma_max; flow_sd3: flow matching with "
                "constant shift; flow_flux: flow matching with a resolution-dependent shift.")}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 10000, "tooltip": "Number of sampling steps."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                "Fraction of the schedule to run, from the low-noise end (1 = from pure noise; < 1 for img2img).")}),
        }, "optional": {
            "sigma_min": ("FLOAT", {"default": 0.0292, "min": 0.0001, "max": 1000.0, "step": 0.0001, "tooltip": "karras / exponential only: smallest nonzero sigma."}),
            "sigma_max": ("FLOAT", {"default": 14.6146, "min": 0.001, "max": 5000.0, "step": 0.001, "tooltip": "karras / exponential only: largest sigma."}),
            "rho": ("FLOAT", {"default": 7.0, "min": 0.1, "max": 100.0, "step": 0.1, "tooltip": "karras only: the rho of Karras et al. 2022."}),
            "shift": ("FLOAT", {"default": 3.0, "min": 0.01, "max": 100.0, "step": 0.01, "tooltip": "flow_sd3 only: time shift s (sigma' = s*sigma / (1 + (s-1)*sigma)); 1 = no shift."}),
            "image_tokens": ("INT", {"default": 4096, "min": 1, "max": 1 << 20, "tooltip": "flow_flux only: number of image tokens (latent patches) that sets Flux's shift mu."}),
        }}

    def get_sigmas(self, schedule, steps, denoise, sigma_min=0.0292, sigma_max=14.6146, rho=7.0, shift=3.0, image_tokens=4096):
        if sigma_min >= sigma_max and schedule in ("karras", "exponential"):
            raise NodeInputError("TN_NoiseSchedule", "sigma_min", f"must be smaller than sigma_max ({sigma_max}), got {sigma_min}")
        sigmas = schedules.get_sigmas(schedule, steps, denoise=denoise, sigma_min=sigma_min, sigma_max=sigma_max,
                                      rho=rho, shift=shift, image_tokens=image_tokens)
        return (sigmas,)


class TN_DiffusionSampler:
    TITLE = "TN Diffusion Sampler"
    DESCRIPTION = ("A SAMPLER (k-diffusion signature) for core SamplerCustom / SamplerCustomAdvanced or TN Guided Sampler. "
                   "Works with any core MODEL; flow-matching models are detected and re-noised in their own convention.")
    CATEGORY = CAT
    FUNCTION = "get_sampler"
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("The sampling algorithm.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "sampler_name": (list(SAMPLERS), {"default": "ddpm", "tooltip": (
                "ddpm: ancestral with the exact DDPM posterior; ddim: Song et al. 2021 (eta 0 = deterministic); euler; "
                "euler_ancestral; dpmpp_2m: DPM-Solver++(2M); flow_euler: rectified-flow Euler; lcm: multistep consistency "
                "(predict x0, re-noise to the next sigma).")}),
            "eta": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1.0, "step": 0.01, "tooltip": (
                "ddim and euler_ancestral only (ignored by the others): fresh noise per step. -1 = the sampler's own "
                "default (ddim 0 = deterministic; euler_ancestral 1); ddim eta 1 matches DDPM's variance.")}),
        }}

    def get_sampler(self, sampler_name, eta):
        fn = SAMPLERS[sampler_name]
        params = inspect.signature(fn).parameters
        opts = {"eta": eta} if "eta" in params and eta >= 0 else {}

        def run(model, x, sigmas, extra_args=None, callback=None, disable=None, **kw):
            if "flow" in params:
                ms = find_model_sampling(model)
                kw["flow"] = ms is not None and is_flow(ms)
            return fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **opts, **kw)

        run.__name__ = f"tn_{sampler_name}"
        return (comfy.samplers.KSAMPLER(run),)


def _combine(x, sigma, d_cond, d_uncond, scale, rescale):
    """Guided denoised estimate from already computed cond/uncond estimates (the interval is checked by the caller)."""
    return guidance.guided_denoise(x, sigma, lambda *_: d_cond, lambda *_: d_uncond, scale, rescale)


_CFGGuider = getattr(comfy.samplers, "CFGGuider", None)


class TNGuider(_CFGGuider or object):
    """Classifier-free guidance with rescale and a sigma interval. In current ComfyUI it is a real CFGGuider
    (core SamplerCustomAdvanced accepts it); in older ComfyUI TN Guided Sampler runs it via a cfg-function patch."""

    def __init__(self, model_patcher, positive, negative, cfg, rescale, sigma_low, sigma_high):
        if _CFGGuider is not None:
            super().__init__(model_patcher)
            self.set_conds(positive, negative)
            self.set_cfg(cfg)
        self.model_patcher = model_patcher
        self.positive, self.negative = positive, negative
        self.cfg, self.rescale, self.sigma_low, self.sigma_high = cfg, rescale, sigma_low, sigma_high

    def active(self, sigma) -> bool:
        s = float(sigma.reshape(-1)[0]) if torch.is_tensor(sigma) else float(sigma)
        return not math.isclose(self.cfg, 1.0) and guidance.in_guidance_interval(s, self.sigma_low, self.sigma_high)

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # current ComfyUI: returns denoised
        pos, neg = self.conds.get("positive"), self.conds.get("negative")
        if not self.active(timestep):
            return comfy.samplers.calc_cond_batch(self.inner_model, [pos], x, timestep, model_options)[0]
        d_cond, d_uncond = comfy.samplers.calc_cond_batch(self.inner_model, [pos, neg], x, timestep, model_options)
        return _combine(x, timestep, d_cond, d_uncond, self.cfg, self.rescale)

    def cfg_function(self, args):  # March-2024 ComfyUI: sampler_cfg_function, returns x - denoised
        x, sigma = args["input"], args["sigma"]
        if not self.active(sigma):
            return args["cond"]
        return x - _combine(x, sigma, args["cond_denoised"], args["uncond_denoised"], self.cfg, self.rescale)

    def run(self, noise, latent, sampler, sigmas, noise_mask, callback, seed):
        disable_pbar = not comfy.utils.PROGRESS_BAR_ENABLED
        if _CFGGuider is not None:
            return self.sample(noise, latent, sampler, sigmas, denoise_mask=noise_mask, callback=callback,
                               disable_pbar=disable_pbar, seed=seed)
        patched = self.model_patcher.clone()
        patched.set_model_sampler_cfg_function(self.cfg_function)
        return comfy.sample.sample_custom(patched, noise, self.cfg, sampler, sigmas, self.positive, self.negative, latent,
                                          noise_mask=noise_mask, callback=callback, disable_pbar=disable_pbar, seed=seed)


class TN_CFG:
    TITLE = "TN CFG Guider"
    DESCRIPTION = ("Classifier-free guidance (Ho & Salimans 2022) as a GUIDER: D = uncond + cfg * (cond - uncond), with "
                   "guidance rescale (Lin et al. 2023) and a guidance interval (Kynkaanniemi et al. 2024). cfg 1, or a sigma "
                   "outside the interval, costs one network evaluation instead of two.")
    CATEGORY = CAT
    FUNCTION = "get_guider"
    RETURN_TYPES = ("GUIDER",)
    OUTPUT_TOOLTIPS = ("The guided denoiser, for TN Guided Sampler or core SamplerCustomAdvanced.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The denoiser (any core MODEL)."}),
            "positive": ("CONDITIONING", {"tooltip": "Conditional branch, e.g. a TN Class Label."}),
            "negative": ("CONDITIONING", {"tooltip": "Unconditional branch, e.g. TN Class Label with class -1 (the null class)."}),
            "cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": "Guidance scale; 1 = no guidance (one evaluation per step)."}),
            "guidance_rescale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "phi of Lin et al. 2023: 0 = off, ~0.7 counters over-saturation at high cfg."}),
            "sigma_low": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10000.0, "step": 0.01, "tooltip": "Guide only while sigma > sigma_low."}),
            "sigma_high": ("FLOAT", {"default": 10000.0, "min": 0.0, "max": 10000.0, "step": 0.01, "tooltip": "Guide only while sigma <= sigma_high (10000 = no upper limit)."}),
        }}

    def get_guider(self, model, positive, negative, cfg, guidance_rescale, sigma_low, sigma_high):
        if sigma_low >= sigma_high:
            raise NodeInputError("TN_CFG", "sigma_low", f"must be below sigma_high ({sigma_high}), got {sigma_low}")
        return (TNGuider(model, positive, negative, cfg, guidance_rescale, sigma_low, sigma_high),)


class TN_GuidedSampler:
    TITLE = "TN Guided Sampler"
    DESCRIPTION = ("Runs a GUIDER with a SAMPLER over SIGMAS from a latent (like core SamplerCustomAdvanced, which the "
                   "March-2024 ComfyUI lacks). Shows a progress bar with previews and also returns every step's x0 "
                   "prediction, so you can watch the image develop.")
    CATEGORY = CAT
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", "LATENT", "LATENT", "TN_STATS")
    RETURN_NAMES = ("output", "denoised_output", "trajectory", "stats")
    OUTPUT_TOOLTIPS = ("The sampled latent.", "The last x0 prediction.",
                       "The x0 prediction at every step, as a latent batch (steps x batch); decode it to see the image develop.",
                       "Measured run statistics (network evaluations, sequential passes, steps, wall time, classes) for TN Compare.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "guider": ("GUIDER", {"tooltip": "From TN CFG Guider (or core guider nodes in current ComfyUI)."}),
            "sampler": ("SAMPLER", {"tooltip": "From TN Diffusion Sampler or core sampler nodes."}),
            "sigmas": ("SIGMAS", {"tooltip": "From TN Noise Schedule or core scheduler nodes."}),
            "latent_image": ("LATENT", {"tooltip": "Start latent (TN Empty Latent for text-free generation, or an encoded image)."}),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "tooltip": "Seed of the initial noise (drawn on the CPU, so it reproduces across devices)."}),
            "add_noise": ("BOOLEAN", {"default": True, "tooltip": "Add the initial noise (turn off to continue from a noisy latent)."}),
        }}

    def sample(self, guider, sampler, sigmas, latent_image, noise_seed, add_noise):
        latent = latent_image["samples"]
        if not torch.isfinite(latent).all():
            raise NodeInputError("TN_GuidedSampler", "latent_image", "contains NaN or Inf values; expected a finite latent")
        if sigmas.numel() < 2:
            raise NodeInputError("TN_GuidedSampler", "sigmas", "needs at least 2 values (1 step); got an empty schedule (denoise 0?)")
        if add_noise:
            noise = comfy.sample.prepare_noise(latent, noise_seed, latent_image.get("batch_index"))
        else:
            noise = torch.zeros_like(latent, device="cpu")
        model = guider.model_patcher.model
        fmt = model.latent_format
        steps = sigmas.numel() - 1
        progress, trajectory = Progress(steps), []

        def callback(step, x0, x, total_steps):
            out = model.process_latent_out(x0.detach().float()).cpu()
            trajectory.append(out)
            progress.update(step + 1, lambda: latent_to_rgb(out * fmt.scale_factor, fmt.latent_rgb_factors,
                                                           getattr(fmt, "latent_rgb_factors_bias", None)))

        net = model.diffusion_model
        with count_forward(net) as calls, Stopwatch(guider.model_patcher.load_device) as clock:
            if hasattr(guider, "run"):
                samples = guider.run(noise, latent, sampler, sigmas, latent_image.get("noise_mask"), callback, noise_seed)
            else:  # a core GUIDER (current ComfyUI)
                samples = guider.sample(noise, latent, sampler, sigmas, denoise_mask=latent_image.get("noise_mask"),
                                        callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=noise_seed)
        samples = samples.to(comfy.model_management.intermediate_device())
        out = {**latent_image, "samples": samples}
        denoised = {**latent_image, "samples": trajectory[-1] if trajectory else samples}
        traj = {"samples": torch.cat(trajectory) if trajectory else samples}
        stats = _diffusion_stats(guider, sampler, steps, latent.shape[0], calls, clock.seconds)
        return (out, denoised, traj, stats)


def _cond_classes(cond) -> list[int] | None:
    """Class ids of a TN Class Label conditioning ([[tensor, {tn_class: ...}]], or current ComfyUI's converted dicts)."""
    if not cond:
        return None
    entry = cond[0]
    opts = entry if isinstance(entry, dict) else entry[1] if len(entry) > 1 else {}
    value = opts.get(COND_KEY)
    if value is None:
        return None
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _diffusion_stats(guider, sampler, steps: int, batch: int, calls, seconds: float) -> dict:
    model = guider.model_patcher.model
    info = getattr(model, "tn_info", None)
    positive = getattr(guider, "positive", None) or getattr(guider, "original_conds", {}).get("positive")
    ids = _cond_classes(positive)
    if ids is not None:
        ids = [ids[i % len(ids)] for i in range(batch)]
    fn = getattr(sampler, "sampler_function", None)
    name = getattr(fn, "__name__", type(sampler).__name__).removeprefix("tn_").removeprefix("sample_")
    family = info.family.upper().replace("DIT", "DiT").replace("SIT", "SiT") if info is not None else type(model).__name__
    cfg = getattr(guider, "cfg", None)
    label = f"{family} {name}, {steps} steps" + (f", cfg {cfg:g}" if isinstance(cfg, (int, float)) else "")
    return RunStats(label=label, paradigm="diffusion", batch=batch, network_evals=calls.evals_per_image(batch),
                    sequential_passes=calls.calls, units=steps, unit="denoising steps", wall_seconds=seconds,
                    class_ids=ids, class_names=list(info.class_names) if info is not None and info.class_names else None,
                    extra={"sampler": name, "cfg": cfg}).as_dict()


class TN_Denoiser:
    TITLE = "TN Denoiser Loader"
    DESCRIPTION = ("Loads a class-conditional DiT (facebookresearch/DiT, e.g. DiT-XL-2-256x256.pt) or SiT file unchanged, or a "
                   "bundled demo denoiser, as a core MODEL (usable by KSampler). The architecture is inferred from the "
                   "tensor shapes. Put files in models/diffusion_models (models/unet in older ComfyUI).")
    CATEGORY = CAT
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The denoiser; its latent space is the SD VAE's for official DiT/SiT, the bundled autoencoder's for demo models.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "denoiser_name": (choices("denoiser", DENOISER_FOLDER), {"tooltip": "Bundled tn_* demo denoisers first, then your files."}),
            "prediction": (["auto", "eps", "sit_velocity"], {"default": "auto", "tooltip": (
                "auto: from the file's metadata, else 'sit' in the file name means SiT velocity; eps: DiT epsilon on the DDPM "
                "linear schedule; sit_velocity: SiT linear-interpolant velocity (flow matching).")}),
            "weight_dtype": (list(DTYPES), {"default": "auto", "tooltip": "auto: fp32 on CPU, bf16/fp16 on GPUs."}),
        }}

    def load(self, denoiser_name, prediction, weight_dtype):
        path = resolve("TN_Denoiser", "denoiser_name", denoiser_name, "denoiser", DENOISER_FOLDER)
        dtype = pick_dtype(weight_dtype, comfy.model_management.get_torch_device())
        try:
            net = load_denoiser(path, prediction=prediction, dtype=dtype)
        except CheckpointError as e:
            raise NodeInputError("TN_Denoiser", "denoiser_name", str(e)) from None
        meta = net.info.metadata
        factors = _json(meta.get("latent_rgb_factors"))
        bias = _json(meta.get("latent_rgb_bias"))
        return (wrap_denoiser(net, factors, bias),)


def _json(text):
    import json
    return json.loads(text) if text else None


def _model_info(node, input_name, model):
    info = getattr(model.model, "tn_info", None)
    if info is None:
        raise NodeInputError(node, input_name, "expected a MODEL from TN Denoiser Loader (it carries the class list and latent size)")
    return info


class TN_ClassLabel:
    TITLE = "TN Class Label"
    DESCRIPTION = ("Class conditioning for class-conditional denoisers (DiT/SiT: ImageNet-1k classes; demo models: the "
                   "classes they ship). -1 = unconditional (the null class), which is what the CFG negative wants.")
    CATEGORY = CAT
    FUNCTION = "label"
    RETURN_TYPES = ("CONDITIONING", "STRING")
    RETURN_NAMES = ("conditioning", "class_name")
    OUTPUT_TOOLTIPS = ("Conditioning for a sampler's positive/negative input.", "The class name.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The TN denoiser, to check the index against its classes."}),
            "class_index": ("INT", {"default": 0, "min": -1, "max": 100000, "tooltip": "Class index; -1 = unconditional."}),
        }, "optional": {
            "class_name": ("STRING", {"default": "", "tooltip": "If set, overrides class_index: a class name (or a unique part of one) from the model's class list."}),
            "class_indices": ("STRING", {"default": "", "tooltip": "If set, overrides both: comma-separated class indices, one per image of the batch (repeated if shorter), e.g. 0,1,2,3."}),
        }}

    def label(self, model, class_index, class_name="", class_indices=""):
        if class_indices.strip():
            idx = parse_int_list("TN_ClassLabel", "class_indices", class_indices, -1, 1 << 20)
            labels = [self.label(model, i)[0][0][1][COND_KEY] for i in idx]
            names = [self.label(model, i)[1] for i in idx]
            return ([[torch.zeros(1, 1, 1), {COND_KEY: labels}]], ", ".join(names))
        info = _model_info("TN_ClassLabel", "model", model)
        names = info.class_names or imagenet_names(info.num_classes)
        if class_name.strip():
            hits = [i for i, n in enumerate(names) if class_name.strip().lower() in n.lower()]
            exact = [i for i, n in enumerate(names) if class_name.strip().lower() == n.lower()]
            hits = exact or hits
            if len(hits) != 1:
                raise NodeInputError("TN_ClassLabel", "class_name", f"'{class_name}' matches {len(hits)} classes; "
                                     f"expected exactly one of: {', '.join(names[:20])}{'...' if len(names) > 20 else ''}")
            class_index = hits[0]
        if not -1 <= class_index < info.num_classes:
            raise NodeInputError("TN_ClassLabel", "class_index", f"{class_index} is out of range: this model has classes "
                                 f"0..{info.num_classes - 1} (and -1 = unconditional)")
        if class_index == -1 and info.null_class is None:
            raise NodeInputError("TN_ClassLabel", "class_index", "-1 (unconditional) is not available: this model has no null class")
        name = "unconditional" if class_index < 0 else names[class_index]
        return ([[torch.zeros(1, 1, 1), {COND_KEY: class_index}]], name)


def imagenet_names(n: int) -> list[str]:
    if n == 1000:
        try:
            from torchvision.models._meta import _IMAGENET_CATEGORIES
            return list(_IMAGENET_CATEGORIES)
        except ImportError:
            pass
    return [f"class {i}" for i in range(n)]


class TN_EmptyLatent:
    TITLE = "TN Empty Latent"
    DESCRIPTION = "An all-zero LATENT batch of the size a TN denoiser was trained on (e.g. 32x32 latents for DiT-XL/2 at 256 px)."
    CATEGORY = CAT
    FUNCTION = "empty"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Zero latents to start sampling from.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The TN denoiser whose latent size and channels to use."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "Number of images."}),
        }}

    def empty(self, model, batch_size):
        info = _model_info("TN_EmptyLatent", "model", model)
        s = info.latent_size
        return ({"samples": torch.zeros(batch_size, info.latent_channels, s, s)},)


NODES = [TN_NoiseSchedule, TN_DiffusionSampler, TN_CFG, TN_GuidedSampler, TN_Denoiser, TN_ClassLabel, TN_EmptyLatent]
