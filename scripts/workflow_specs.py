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


# ----------------------------------------------------------------------------------------------- autoregressive
OFFICIAL_LLAMAGEN = ("To use the published LlamaGen instead: put vq_ds16_c2i.pt in models/vq and c2i_B_256.pt (or L/XL/XXL/3B) "
                     "in models/ar, choose them in the two loaders, use ImageNet class indices (e.g. 207 = golden retriever), "
                     "cfg 4.0 and top_k 2000 (the authors' demo) or cfg 1.75-2.0 (their FID settings), and 256x256 images "
                     "(16x16 tokens) for the completion graphs.")
OFFICIAL_VAR = ("To use the published VAR instead: put vae_ch160v4096z32.pth in models/vq and var_d16.pth ... var_d30.pth "
                "(256 px) or var_d36.pth (512 px) in models/ar, choose them in the two loaders, use ImageNet class indices, "
                "cfg 1.5-4, top_k 900, top_p 0.96 as the authors' demo, and 256x256 images for the editing graphs "
                "(TN VQ Encode picks VAR's 10-scale schedule for 256 px).")


def _ar_loaders(vq, model):
    return {
        "vq": ("TN_VQLoader", {"vq_name": vq, "weight_dtype": "auto"}),
        "ar": ("TN_ARModelLoader", {"model_name": model, "weight_dtype": "auto"}),
    }


def _save_grid(src, prefix, key="", columns=10, scale=4):
    return {
        f"grid{key}": ("TN_ImageGrid", {"images": src, "columns": columns, "scale": scale, "padding": 2}),
        f"save{key}": ("SaveImage", {"images": (f"grid{key}", 0), "filename_prefix": prefix}),
    }


def _raster(**kw):
    base = {"model": ("ar", 0), "vq": ("vq", 0), "class_index": 0, "cfg": 6.0, "temperature": 1.0, "top_k": 10, "top_p": 1.0,
            "seed": 3, "batch_size": 10, "class_indices": "", "cfg_interval": -1, "return_intermediates": False}
    return ("TN_ARTokenDecoder", {**base, **kw})


def _scalewise(**kw):
    base = {"model": ("ar", 0), "vq": ("vq", 0), "class_index": 0, "cfg": 3.0, "top_k": 0, "top_p": 0.95, "more_smooth": False,
            "seed": 3, "batch_size": 10, "class_indices": "", "return_intermediates": False}
    return ("TN_VARScaleDecoder", {**base, **kw})


DIGIT_COLUMNS = ",".join(str(d) for d in range(10))

WORKFLOWS["llamagen_raster_class_to_image"] = {
    "note": ("Bundled demo raster AR model (LlamaGen architecture, 8x8 tokens of the bundled VQ tokenizer): 10 samples of "
             "each digit (columns 0-9), generated one token at a time in raster order with classifier-free guidance on the "
             "logits. " + OFFICIAL_LLAMAGEN),
    "nodes": {
        **_ar_loaders("tn_glyph_vq.safetensors", "tn_glyph_gpt.safetensors"),
        "gen": _raster(class_indices=DIGIT_COLUMNS, batch_size=100),
        "img": ("TN_VQDecode", {"vq": ("vq", 0), "tokens": ("gen", 0)}),
        **_save_grid(("img", 0), "tn_llamagen_raster"),
    },
}

WORKFLOWS["var_scalewise_class_to_image"] = {
    "note": ("Bundled demo VAR model (scales 1,2,3,4,6,8 of the bundled multi-scale VQ-VAE): 10 samples of each digit "
             "(columns 0-9), predicted coarse to fine, a whole scale at a time, with VAR's guidance ramp. The second image "
             "shows the first sample of each digit after every scale. " + OFFICIAL_VAR),
    "nodes": {
        **_ar_loaders("tn_glyph_msvq.safetensors", "tn_glyph_var.safetensors"),
        "gen": _scalewise(class_indices=DIGIT_COLUMNS, batch_size=100),
        "img": ("TN_VQDecode", {"vq": ("vq", 0), "tokens": ("gen", 0)}),
        **_save_grid(("img", 0), "tn_var_scalewise"),
        "steps": _scalewise(class_indices=DIGIT_COLUMNS, batch_size=10, return_intermediates=True),
        **_save_grid(("steps", 1), "tn_var_scalewise_scales", key="_scales"),
    },
}

WORKFLOWS["var_inpainting"] = {
    "note": ("VAR zero-shot inpainting (as in the VAR paper): real glyphs are encoded to multi-scale tokens, the centre is "
             "masked and regenerated scale by scale, keeping the tokens outside the mask. Rows: originals, masked area "
             "regenerated for the same class, regenerated as the next digit (class-conditional editing). " + OFFICIAL_VAR),
    "nodes": {
        **_ar_loaders("tn_glyph_msvq.safetensors", "tn_glyph_var.safetensors"),
        "glyphs": ("TN_GlyphImages", {"class_indices": "3", "batch_size": 10, "seed": 11}),
        "enc": ("TN_VQEncode", {"vq": ("vq", 0), "image": ("glyphs", 0), "patch_nums": "auto"}),
        "mask": ("TN_RectMask", {"width": 32, "height": 32, "left": 0.25, "top": 0.25, "right": 0.75, "bottom": 0.75}),
        "inpaint": _scalewise(class_index=3, tokens=("enc", 0), mask=("mask", 0), seed=1),
        "edit": _scalewise(class_index=8, tokens=("enc", 0), mask=("mask", 0), seed=1),
        "img_in": ("TN_VQDecode", {"vq": ("vq", 0), "tokens": ("inpaint", 0)}),
        "img_ed": ("TN_VQDecode", {"vq": ("vq", 0), "tokens": ("edit", 0)}),
        "b1": ("ImageBatch", {"image1": ("glyphs", 0), "image2": ("img_in", 0)}),
        "b2": ("ImageBatch", {"image1": ("b1", 0), "image2": ("img_ed", 0)}),
        **_save_grid(("b2", 0), "tn_var_inpainting"),
    },
}

WORKFLOWS["llamagen_raster_completion"] = {
    "note": ("Raster completion: real glyphs are tokenized, the top half of the tokens is kept and the bottom half is "
             "generated token by token (raster order can only continue an image downwards). Rows: originals, completed "
             "as the same digit, completed as another digit. " + OFFICIAL_LLAMAGEN),
    "nodes": {
        **_ar_loaders("tn_glyph_vq.safetensors", "tn_glyph_gpt.safetensors"),
        "glyphs": ("TN_GlyphImages", {"class_indices": "7", "batch_size": 10, "seed": 12}),
        "enc": ("TN_VQEncode", {"vq": ("vq", 0), "image": ("glyphs", 0), "patch_nums": "auto"}),
        "mask": ("TN_RectMask", {"width": 32, "height": 32, "left": 0.0, "top": 0.5, "right": 1.0, "bottom": 1.0}),
        "same": _raster(class_index=7, tokens=("enc", 0), mask=("mask", 0), seed=2),
        "other": _raster(class_index=1, tokens=("enc", 0), mask=("mask", 0), seed=2),
        "img_s": ("TN_VQDecode", {"vq": ("vq", 0), "tokens": ("same", 0)}),
        "img_o": ("TN_VQDecode", {"vq": ("vq", 0), "tokens": ("other", 0)}),
        "b1": ("ImageBatch", {"image1": ("glyphs", 0), "image2": ("img_s", 0)}),
        "b2": ("ImageBatch", {"image1": ("b1", 0), "image2": ("img_o", 0)}),
        **_save_grid(("b2", 0), "tn_llamagen_completion"),
    },
}
