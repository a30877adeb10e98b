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
        "nodes": _class_to_image("tn_glyph_dit.safetensors", "ddpm", "ddpm_linear", 50, 4.0, 7, "tn_dit_ddpm", extra=_trajectory()),
    },
    "dit_ddim_class_to_image": {
        "note": ("The same bundled DiT sampled deterministically with DDIM (eta 0) in 25 steps. " + OFFICIAL_DIT),
        "nodes": _class_to_image("tn_glyph_dit.safetensors", "ddim", "ddpm_linear", 25, 3.0, 7, "tn_dit_ddim", eta=0.0),
    },
    "sit_flow_euler_class_to_image": {
        "note": ("Bundled demo SiT-style flow-matching model (velocity prediction, linear interpolant) sampled with "
                 "rectified-flow Euler from sigma 1 to 0 (flow_sd3 schedule with shift 1 = uniform). " + OFFICIAL_SIT),
        "nodes": _class_to_image("tn_glyph_sit.safetensors", "flow_euler", "flow_sd3", 50, 4.0, 7, "tn_sit_flow_euler",
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
    base = {"model": ("ar", 0), "vq": ("vq", 0), "class_index": 0, "cfg": 4.0, "temperature": 1.0, "top_k": 10, "top_p": 1.0,
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


# ----------------------------------------------------------------------------------------------- hybrids + comparison
def _diffusion_branch(key, den, sampler, schedule, steps, cfg, seed, pos, neg, latent, denoise=1.0, shift=1.0, eta=-1.0):
    """Nodes of one guided diffusion branch named <key>_*: schedule, sampler, CFG, TN Guided Sampler, decode."""
    sched = {"schedule": schedule, "steps": steps, "denoise": denoise}
    if schedule == "flow_sd3":
        sched["shift"] = shift
    return {
        f"{key}_sched": ("TN_NoiseSchedule", sched),
        f"{key}_sampler": ("TN_DiffusionSampler", {"sampler_name": sampler, "eta": eta}),
        f"{key}_cfg": ("TN_CFG", {"model": (den, 0), "positive": pos, "negative": neg, "cfg": cfg,
                                  "guidance_rescale": 0.0, "sigma_low": 0.0, "sigma_high": 10000.0}),
        f"{key}_sample": ("TN_GuidedSampler", {"guider": (f"{key}_cfg", 0), "sampler": (f"{key}_sampler", 0),
                                               "sigmas": (f"{key}_sched", 0), "latent_image": latent,
                                               "noise_seed": seed, "add_noise": True}),
        f"{key}_img": ("TN_VAEDecode", {"vae": ("vae", 0), "samples": (f"{key}_sample", 0)}),
    }


def _labels(den="den"):
    return {
        "pos": ("TN_ClassLabel", {"model": (den, 0), "class_index": 0, "class_name": "", "class_indices": DIGITS}, "Class labels (digits 0-9)"),
        "neg": ("TN_ClassLabel", {"model": (den, 0), "class_index": -1, "class_name": "", "class_indices": ""}, "Unconditional (null class)"),
    }


WORKFLOWS["hybrid_var_draft_diffusion_refine"] = {
    "note": ("AR draft -> diffusion refine. VAR draws digits 0-9 coarse to fine (top row); the drafts are encoded into the "
             "diffusion autoencoder's latent space (TN Autoencoder Encode), re-noised to 60% of the flow schedule "
             "(denoise 0.6) and refined by the flow-matching SiT with the same class labels (bottom row). Lower denoise keeps "
             "more of the draft. To use published checkpoints instead: VAR (var_d16.pth + vae_ch160v4096z32.pth) for the draft, then core "
             "VAE Encode with the SD VAE (sd-vae-ft-ema) and SiT-XL-2-256x256.pt / DiT-XL-2-256x256.pt, ImageNet labels."),
    "nodes": {
        "vq": ("TN_VQLoader", {"vq_name": "tn_glyph_msvq.safetensors", "weight_dtype": "auto"}),
        "ar": ("TN_ARModelLoader", {"model_name": "tn_glyph_var.safetensors", "weight_dtype": "auto"}),
        "den": ("TN_Denoiser", {"denoiser_name": "tn_glyph_sit.safetensors", "prediction": "auto", "weight_dtype": "auto"}),
        **_labels(),
        "draft": _scalewise(class_label=("pos", 0), batch_size=10, seed=5),
        "draft_img": ("TN_VQDecode", {"vq": ("vq", 0), "tokens": ("draft", 0)}),
        "vae": ("TN_VAELoader", {"vae_name": "tn_glyph_ae.safetensors"}),
        "enc": ("TN_VAEEncode", {"vae": ("vae", 0), "image": ("draft_img", 0)}, "Draft -> diffusion latent"),
        **_diffusion_branch("refine", "den", "flow_euler", "flow_sd3", 30, 3.0, 5, ("pos", 0), ("neg", 0), ("enc", 0),
                            denoise=0.6),
        "both": ("ImageBatch", {"image1": ("draft_img", 0), "image2": ("refine_img", 0)}),
        **_save_grid(("both", 0), "tn_hybrid_var_draft_refine"),
    },
}

WORKFLOWS["hybrid_diffusion_to_ar_edit"] = {
    "note": ("Diffusion -> tokens -> AR edit. The SiT flow model draws ten 3s (row 1). Its images are VQ-encoded twice: into "
             "VAR's multi-scale tokens, whose centre is regenerated scale by scale as a 3 (row 2, inpainting) and as an 8 "
             "(row 3, class-conditional editing), and into the raster tokenizer's grid, whose bottom half the raster model "
             "completes as a 3 (row 4). To use published checkpoints instead: DiT/SiT + SD VAE decode, then vae_ch160v4096z32.pth + "
             "var_d16.pth and vq_ds16_c2i.pt + c2i_B_256.pt at 256 px, ImageNet labels."),
    "nodes": {
        "den": ("TN_Denoiser", {"denoiser_name": "tn_glyph_sit.safetensors", "prediction": "auto", "weight_dtype": "auto"}),
        "pos": ("TN_ClassLabel", {"model": ("den", 0), "class_index": 3, "class_name": "", "class_indices": ""}, "Class: three"),
        "neg": ("TN_ClassLabel", {"model": ("den", 0), "class_index": -1, "class_name": "", "class_indices": ""}, "Unconditional (null class)"),
        "empty": ("TN_EmptyLatent", {"model": ("den", 0), "batch_size": 10}),
        "vae": ("TN_VAELoader", {"vae_name": "tn_glyph_ae.safetensors"}),
        **_diffusion_branch("gen", "den", "flow_euler", "flow_sd3", 30, 3.0, 21, ("pos", 0), ("neg", 0), ("empty", 0)),
        "msvq": ("TN_VQLoader", {"vq_name": "tn_glyph_msvq.safetensors", "weight_dtype": "auto"}),
        "var": ("TN_ARModelLoader", {"model_name": "tn_glyph_var.safetensors", "weight_dtype": "auto"}),
        "var_enc": ("TN_VQEncode", {"vq": ("msvq", 0), "image": ("gen_img", 0), "patch_nums": "auto"}),
        "centre": ("TN_RectMask", {"width": 32, "height": 32, "left": 0.25, "top": 0.25, "right": 0.75, "bottom": 0.75}),
        "inpaint": _scalewise(model=("var", 0), vq=("msvq", 0), class_index=3, tokens=("var_enc", 0), mask=("centre", 0), seed=1),
        "edit": _scalewise(model=("var", 0), vq=("msvq", 0), class_index=8, tokens=("var_enc", 0), mask=("centre", 0), seed=1),
        "inpaint_img": ("TN_VQDecode", {"vq": ("msvq", 0), "tokens": ("inpaint", 0)}),
        "edit_img": ("TN_VQDecode", {"vq": ("msvq", 0), "tokens": ("edit", 0)}),
        "rvq": ("TN_VQLoader", {"vq_name": "tn_glyph_vq.safetensors", "weight_dtype": "auto"}),
        "gpt": ("TN_ARModelLoader", {"model_name": "tn_glyph_gpt.safetensors", "weight_dtype": "auto"}),
        "r_enc": ("TN_VQEncode", {"vq": ("rvq", 0), "image": ("gen_img", 0), "patch_nums": "auto"}),
        "bottom": ("TN_RectMask", {"width": 32, "height": 32, "left": 0.0, "top": 0.5, "right": 1.0, "bottom": 1.0}),
        "complete": _raster(model=("gpt", 0), vq=("rvq", 0), class_index=3, tokens=("r_enc", 0), mask=("bottom", 0), seed=2),
        "complete_img": ("TN_VQDecode", {"vq": ("rvq", 0), "tokens": ("complete", 0)}),
        "b1": ("ImageBatch", {"image1": ("gen_img", 0), "image2": ("inpaint_img", 0)}),
        "b2": ("ImageBatch", {"image1": ("b1", 0), "image2": ("edit_img", 0)}),
        "b3": ("ImageBatch", {"image1": ("b2", 0), "image2": ("complete_img", 0)}),
        **_save_grid(("b3", 0), "tn_hybrid_diffusion_to_ar_edit"),
    },
}



WORKFLOWS["compare_every_paradigm"] = {
    "note": ("Same classes, every paradigm. One TN Class Label (digits 0-9) drives six branches: DDPM (DiT, 50 ancestral "
             "steps), DDIM (DiT, 25 steps), flow matching (SiT, 25 Euler steps), few-step consistency-style sampling (LCM "
             "sampler, 4 steps, on the same DiT: it is not distilled, so expect worse images), raster AR (LlamaGen-style "
             "GPT, 64 tokens one at a time) and VAR (6 scales). TN Compare lays out one row per paradigm with real glyphs "
             "on top, and tabulates what each node measured: network evaluations per image, sequential passes, steps or "
             "tokens, wall time and the judge's accuracy. To use published checkpoints instead, load them as the other "
             "example workflows' notes describe (the judge only scores the demo classes)."),
    "nodes": {
        "den": ("TN_Denoiser", {"denoiser_name": "tn_glyph_dit.safetensors", "prediction": "auto", "weight_dtype": "auto"}),
        "sit": ("TN_Denoiser", {"denoiser_name": "tn_glyph_sit.safetensors", "prediction": "auto", "weight_dtype": "auto"}),
        "pos": ("TN_ClassLabel", {"model": ("den", 0), "class_index": 0, "class_name": "", "class_indices": DIGITS},
                "Class labels (digits 0-9), shared by all branches"),
        "neg": ("TN_ClassLabel", {"model": ("den", 0), "class_index": -1, "class_name": "", "class_indices": ""}, "Unconditional (null class)"),
        "empty": ("TN_EmptyLatent", {"model": ("den", 0), "batch_size": 20}),
        "vae": ("TN_VAELoader", {"vae_name": "tn_glyph_ae.safetensors"}),
        **_diffusion_branch("ddpm", "den", "ddpm", "ddpm_linear", 50, 4.0, 7, ("pos", 0), ("neg", 0), ("empty", 0)),
        **_diffusion_branch("ddim", "den", "ddim", "ddpm_linear", 25, 3.0, 7, ("pos", 0), ("neg", 0), ("empty", 0), eta=0.0),
        **_diffusion_branch("flow", "sit", "flow_euler", "flow_sd3", 25, 3.0, 7, ("pos", 0), ("neg", 0), ("empty", 0)),
        **_diffusion_branch("lcm", "den", "lcm", "ddpm_linear", 4, 3.0, 7, ("pos", 0), ("neg", 0), ("empty", 0)),
        "rvq": ("TN_VQLoader", {"vq_name": "tn_glyph_vq.safetensors", "weight_dtype": "auto"}),
        "gpt": ("TN_ARModelLoader", {"model_name": "tn_glyph_gpt.safetensors", "weight_dtype": "auto"}),
        "raster": _raster(model=("gpt", 0), vq=("rvq", 0), class_label=("pos", 0), batch_size=20, seed=7),
        "raster_img": ("TN_VQDecode", {"vq": ("rvq", 0), "tokens": ("raster", 0)}),
        "msvq": ("TN_VQLoader", {"vq_name": "tn_glyph_msvq.safetensors", "weight_dtype": "auto"}),
        "var": ("TN_ARModelLoader", {"model_name": "tn_glyph_var.safetensors", "weight_dtype": "auto"}),
        "scales": _scalewise(model=("var", 0), vq=("msvq", 0), class_label=("pos", 0), batch_size=20, seed=7),
        "scales_img": ("TN_VQDecode", {"vq": ("msvq", 0), "tokens": ("scales", 0)}),
        "real": ("TN_GlyphImages", {"class_indices": DIGITS, "batch_size": 20, "seed": 99}, "Real glyphs (reference row)"),
        "judge": ("TN_JudgeLoader", {"judge_name": "tn_glyph_judge.safetensors"}),
        "compare": ("TN_Compare", {"images_1": ("real", 0), "stats_1": ("real", 1), "columns": 20, "scale": 2,
                                   "images_2": ("ddpm_img", 0), "stats_2": ("ddpm_sample", 3),
                                   "images_3": ("ddim_img", 0), "stats_3": ("ddim_sample", 3),
                                   "images_4": ("flow_img", 0), "stats_4": ("flow_sample", 3),
                                   "images_5": ("lcm_img", 0), "stats_5": ("lcm_sample", 3),
                                   "images_6": ("raster_img", 0), "stats_6": ("raster", 2),
                                   "images_7": ("scales_img", 0), "stats_7": ("scales", 2),
                                   "labels": "", "judge": ("judge", 0)}),
        "save_grid": ("SaveImage", {"images": ("compare", 0), "filename_prefix": "tn_compare_grid"}),
        "save_table": ("SaveImage", {"images": ("compare", 1), "filename_prefix": "tn_compare_table"}),
    },
}

WORKFLOWS["hybrid_var_coarse_scales_diffusion_finish"] = {
    "note": ("VAR's coarse scales as the starting point of diffusion. VAR predicts digits 0-9 scale by scale and returns the "
             "image after every scale; core Image From Batch picks the image after the 4th scale (4x4 tokens: layout and "
             "colour, no detail; row 1). It is encoded to the diffusion latent space, re-noised to 80% of the flow "
             "schedule and finished by the SiT flow model (row 2). Row 3: VAR's own finish (all 6 scales). To use "
             "published checkpoints instead: var_d16.pth + vae_ch160v4096z32.pth (pick an early one of its 10 scales, "
             "e.g. index 4 = 5x5 tokens), core VAE Encode with the SD VAE and SiT-XL-2-256x256.pt, ImageNet labels."),
    "nodes": {
        "vq": ("TN_VQLoader", {"vq_name": "tn_glyph_msvq.safetensors", "weight_dtype": "auto"}),
        "ar": ("TN_ARModelLoader", {"model_name": "tn_glyph_var.safetensors", "weight_dtype": "auto"}),
        "den": ("TN_Denoiser", {"denoiser_name": "tn_glyph_sit.safetensors", "prediction": "auto", "weight_dtype": "auto"}),
        **_labels(),
        "scales": _scalewise(class_label=("pos", 0), batch_size=10, seed=4, return_intermediates=True),
        "coarse": ("ImageFromBatch", {"image": ("scales", 1), "batch_index": 30, "length": 10}, "After scale 4 of 6 (4x4 tokens)"),
        "final": ("ImageFromBatch", {"image": ("scales", 1), "batch_index": 50, "length": 10}, "After scale 6 of 6 (VAR's own finish)"),
        "vae": ("TN_VAELoader", {"vae_name": "tn_glyph_ae.safetensors"}),
        "enc": ("TN_VAEEncode", {"vae": ("vae", 0), "image": ("coarse", 0)}),
        **_diffusion_branch("finish", "den", "flow_euler", "flow_sd3", 30, 3.0, 4, ("pos", 0), ("neg", 0), ("enc", 0),
                            denoise=0.8),
        "b1": ("ImageBatch", {"image1": ("coarse", 0), "image2": ("finish_img", 0)}),
        "b2": ("ImageBatch", {"image1": ("b1", 0), "image2": ("final", 0)}),
        **_save_grid(("b2", 0), "tn_hybrid_var_coarse_diffusion_finish"),
    },
}
