"""The example workflows, one compact graph each (see make_workflows.py). Node inputs: a value, or (node_key, output_slot)."""

DIGITS = "0,1,2,3,4,5,6,7,8,9"
OFFICIAL_DIT = ("To use the published DiT instead: put DiT-XL-2-256x256.pt (facebookresearch/DiT) in models/diffusion_models "
                "(models/unet in older ComfyUI) and choose it in TN Denoiser Loader; set the class labels to ImageNet "
                "classes (e.g. 207 = golden retriever); decode with core Load VAE (sd-vae-ft-ema) + VAE Decode instead of "
                "the TN autoencoder nodes; use 250 DDPM steps and cfg 4 as in the paper's samples.")
OFFICIAL_SIT = ("To use the published SiT instead: put SiT-XL-2-256x256.pt (willisma/SiT) in models/diffusion_models and "
                "choose it in TN Denoiser Loader (prediction auto picks sit_velocity from the name); ImageNet class labels; "
                "decode with core Load VAE (sd-vae-ft-ema) + VAE Decode.")


def _class_to_image(model_file, sampler, schedule, steps, cfg, seed, prefix, eta=-1.0, extra=None):
    nodes = {
        "den": ("TN_Denoiser", {"denoiser_name": model_file, "prediction": "auto", "weight_dtype": "auto"}),
        "pos": ("TN_ClassLabel", {"model": ("den", 0), "class_index": 0, "class_name": "", "class_indices": DIGITS}, "Class labels (digits 0-9)"),
        "neg": ("TN_ClassLabel", {"model": ("den", 0), "class_index": -1, "class_name": "", "class_indices": ""}, "Unconditional (null class)"),
        "cfg": ("TN_CFG", {"model": ("den", 0), "positive": ("pos", 0), "negative": ("neg", 0), "cfg": cfg,
                           "guidance_rescale": 0.0, "sigma_low": 0.0, "sigma_high": 10000.0}),
        "sched": ("TN_NoiseSchedule", {"schedule": schedule, "steps": steps, "denoise": 1.0}),
        "sampler": ("TN_DiffusionSampler", {"sampler_name": sampler, "eta": eta}),
        "empty": ("TN_EmptyLatent", {"model": ("den", 0), "batch_size": 10}),
        "sample": ("TN_GuidedSampler", {"guider": ("cfg", 0), "sampler": ("sampler", 0), "sigmas": ("sched", 0),
                                         "latent_image": ("empty", 0), "noise_seed": seed, "add_noise": True}),
        "vae": ("TN_VAELoader", {"vae_name": "tn_glyph_ae.safetensors"}),
        "decode": ("TN_VAEDecode", {"vae": ("vae", 0), "samples": ("sample", 0)}),
        "grid": ("TN_ImageGrid", {"images": ("decode", 0), "columns": 10, "scale": 4, "padding": 2}),
        "save": ("SaveImage", {"images": ("grid", 0), "filename_prefix": prefix}),
    }
    nodes.update(extra or {})
    return nodes


def _trajectory():
    return {
        "traj_decode": ("TN_VAEDecode", {"vae": ("vae", 0), "samples": ("sample", 2)}, "Decode the x0 trajectory"),
        "traj_grid": ("TN_ImageGrid", {"images": ("traj_decode", 0), "columns": 10, "scale": 2, "padding": 1}, "Rows: steps; columns: digits"),
        "traj_save": ("SaveImage", {"images": ("traj_grid", 0), "filename_prefix": "tn_dit_ddpm_trajectory"}),
    }


WORKFLOWS = {
    "dit_ddpm_class_to_image": {
        "note": ("Bundled demo DiT (epsilon prediction, DDPM linear schedule) in the bundled glyph autoencoder's latent space: "
                 "digits 0-9 with classifier-free guidance, sampled with the exact DDPM ancestral posterior. The second "
                 "output row shows the x0 prediction at every step (the image 'developing'). " + OFFICIAL_DIT),
        "nodes": _class_to_image("tn_glyph_dit.safetensors", "ddpm", "ddpm_linear", 50, 3.0, 7, "tn_dit_ddpm", extra=_trajectory()),
    },
    "dit_ddim_class_to_image": {
        "note": ("The same bundled DiT sampled deterministically with DDIM (eta 0) in 25 steps. " + OFFICIAL_DIT),
        "nodes": _class_to_image("tn_glyph_dit.safetensors", "ddim", "ddpm_linear", 25, 3.0, 7, "tn_dit_ddim", eta=0.0),
    },
    "sit_flow_euler_class_to_image": {
        "note": ("Bundled demo SiT-style flow-matching model (velocity prediction, linear interpolant) sampled with "
                 "rectified-flow Euler from sigma 1 to 0 (flow_sd3 schedule with shift 1 = uniform). " + OFFICIAL_SIT),
        "nodes": _class_to_image("tn_glyph_sit.safetensors", "flow_euler", "flow_sd3", 50, 3.0, 7, "tn_sit_flow_euler",
                                 extra={"sched": ("TN_NoiseSchedule", {"schedule": "flow_sd3", "steps": 50, "denoise": 1.0, "shift": 1.0})}),
    },
    "dit_core_ksampler": {
        "note": ("The bundled DiT MODEL driven by core KSampler (euler, simple scheduler): our MODEL is ComfyUI's own type, "
                 "so core samplers and schedulers work on it. " + OFFICIAL_DIT),
        "nodes": {
            "den": ("TN_Denoiser", {"denoiser_name": "tn_glyph_dit.safetensors", "prediction": "auto", "weight_dtype": "auto"}),
            "pos": ("TN_ClassLabel", {"model": ("den", 0), "class_index": 0, "class_name": "", "class_indices": DIGITS}, "Class labels (digits 0-9)"),
            "neg": ("TN_ClassLabel", {"model": ("den", 0), "class_index": -1, "class_name": "", "class_indices": ""}, "Unconditional (null class)"),
            "empty": ("TN_EmptyLatent", {"model": ("den", 0), "batch_size": 10}),
            "ks": ("KSampler", {"model": ("den", 0), "seed": 11, "steps": 30, "cfg": 3.0, "sampler_name": "euler",
                                "scheduler": "simple", "positive": ("pos", 0), "negative": ("neg", 0),
                                "latent_image": ("empty", 0), "denoise": 1.0}),
            "vae": ("TN_VAELoader", {"vae_name": "tn_glyph_ae.safetensors"}),
            "decode": ("TN_VAEDecode", {"vae": ("vae", 0), "samples": ("ks", 0)}),
            "grid": ("TN_ImageGrid", {"images": ("decode", 0), "columns": 10, "scale": 4, "padding": 2}),
            "save": ("SaveImage", {"images": ("grid", 0), "filename_prefix": "tn_dit_core_ksampler"}),
        },
    },
    "mixed_core_and_tn": {
        "note": ("Core and Tokens & Noise nodes mixed: core BasicScheduler (karras) + our DPM++ 2M SAMPLER in core SamplerCustom "
                 "(top row), and core KSamplerSelect (euler_ancestral) + our DDPM-linear schedule + our CFG guider "
                 "with guidance rescale and a guidance interval in TN Guided Sampler (bottom row). " + OFFICIAL_DIT),
        "nodes": {
            "den": ("TN_Denoiser", {"denoiser_name": "tn_glyph_dit.safetensors", "prediction": "auto", "weight_dtype": "auto"}),
            "pos": ("TN_ClassLabel", {"model": ("den", 0), "class_index": 0, "class_name": "", "class_indices": DIGITS}, "Class labels (digits 0-9)"),
            "neg": ("TN_ClassLabel", {"model": ("den", 0), "class_index": -1, "class_name": "", "class_indices": ""}, "Unconditional (null class)"),
            "empty": ("TN_EmptyLatent", {"model": ("den", 0), "batch_size": 10}),
            "core_sched": ("BasicScheduler", {"model": ("den", 0), "scheduler": "karras", "steps": 25, "denoise": 1.0}),
            "tn_sampler": ("TN_DiffusionSampler", {"sampler_name": "dpmpp_2m", "eta": -1.0}),
            "core_custom": ("SamplerCustom", {"model": ("den", 0), "add_noise": True, "noise_seed": 5, "cfg": 3.0,
                                              "positive": ("pos", 0), "negative": ("neg", 0), "sampler": ("tn_sampler", 0),
                                              "sigmas": ("core_sched", 0), "latent_image": ("empty", 0)}),
            "core_sampler": ("KSamplerSelect", {"sampler_name": "euler_ancestral"}),
            "tn_sched": ("TN_NoiseSchedule", {"schedule": "ddpm_linear", "steps": 40, "denoise": 1.0}),
            "tn_cfg": ("TN_CFG", {"model": ("den", 0), "positive": ("pos", 0), "negative": ("neg", 0), "cfg": 4.0,
                                  "guidance_rescale": 0.5, "sigma_low": 0.1, "sigma_high": 40.0}),
            "tn_sample": ("TN_GuidedSampler", {"guider": ("tn_cfg", 0), "sampler": ("core_sampler", 0), "sigmas": ("tn_sched", 0),
                                               "latent_image": ("empty", 0), "noise_seed": 5, "add_noise": True}),
            "vae": ("TN_VAELoader", {"vae_name": "tn_glyph_ae.safetensors"}),
            "decode_a": ("TN_VAEDecode", {"vae": ("vae", 0), "samples": ("core_custom", 0)}),
            "decode_b": ("TN_VAEDecode", {"vae": ("vae", 0), "samples": ("tn_sample", 0)}),
            "batch": ("ImageBatch", {"image1": ("decode_a", 0), "image2": ("decode_b", 0)}),
            "grid": ("TN_ImageGrid", {"images": ("batch", 0), "columns": 10, "scale": 4, "padding": 2}),
            "save": ("SaveImage", {"images": ("grid", 0), "filename_prefix": "tn_mixed_core_and_tn"}),
        },
    },
}
