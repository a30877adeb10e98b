"""TN Compare and the statistics the generators record, the class-label fan-out to AR decoders and the bad inputs of
hybrid graphs, in a real ComfyUI on the bundled demo models."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from test_ar_nodes import N, _expect_failure


def diffusion(key, cfg, steps, batch=2, sampler="ddim"):
    return {
        f"{key}_cfg": N("TN_CFG", model=["den", 0], positive=["pos", 0], negative=["neg", 0], cfg=cfg, guidance_rescale=0.0,
                        sigma_low=0.0, sigma_high=10000.0),
        f"{key}_sched": N("TN_NoiseSchedule", schedule="ddpm_linear", steps=steps, denoise=1.0),
        f"{key}_sampler": N("TN_DiffusionSampler", sampler_name=sampler, eta=0.0),
        f"{key}_sample": N("TN_GuidedSampler", guider=[f"{key}_cfg", 0], sampler=[f"{key}_sampler", 0],
                           sigmas=[f"{key}_sched", 0], latent_image=["empty", 0], noise_seed=1, add_noise=True),
        f"{key}_img": N("TN_VAEDecode", vae=["vae", 0], samples=[f"{key}_sample", 0]),
    }


def base(batch=2, classes="3,7"):
    return {
        "den": N("TN_Denoiser", denoiser_name="tn_glyph_dit.safetensors", prediction="auto", weight_dtype="auto"),
        "pos": N("TN_ClassLabel", model=["den", 0], class_index=0, class_name="", class_indices=classes),
        "neg": N("TN_ClassLabel", model=["den", 0], class_index=-1, class_name="", class_indices=""),
        "empty": N("TN_EmptyLatent", model=["den", 0], batch_size=batch),
        "vae": N("TN_VAELoader", vae_name="tn_glyph_ae.safetensors"),
        "rvq": N("TN_VQLoader", vq_name="tn_glyph_vq.safetensors", weight_dtype="auto"),
        "gpt": N("TN_ARModelLoader", model_name="tn_glyph_gpt.safetensors", weight_dtype="auto"),
        "msvq": N("TN_VQLoader", vq_name="tn_glyph_msvq.safetensors", weight_dtype="auto"),
        "var": N("TN_ARModelLoader", model_name="tn_glyph_var.safetensors", weight_dtype="auto"),
    }


def raster(batch=2, **kw):
    return N("TN_ARTokenDecoder", **{**dict(model=["gpt", 0], vq=["rvq", 0], class_index=0, cfg=6.0, temperature=1.0,
                                            top_k=10, top_p=1.0, seed=3, batch_size=batch), **kw})


def scalewise(batch=2, **kw):
    return N("TN_VARScaleDecoder", **{**dict(model=["var", 0], vq=["msvq", 0], class_index=0, cfg=3.0, top_k=0, top_p=0.95,
                                             more_smooth=False, seed=3, batch_size=batch), **kw})


def table_rows(outputs, node="compare"):
    text = outputs[node]["text"][0]
    lines = text.splitlines()
    assert lines[0].startswith("| branch | images | network evals / image | sequential passes")
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def arrays(comfy, outputs, node):
    return [np.asarray(Image.open(io.BytesIO(comfy.view(i)))) for i in outputs[node]["images"]]


def test_compare_tabulates_what_every_paradigm_measured(comfy):
    g = base()
    g.update(diffusion("guided", 3.0, 5))
    g.update(diffusion("plain", 1.0, 5))
    g.update({
        "raster": raster(class_label=["pos", 0]),
        "raster_img": N("TN_VQDecode", vq=["rvq", 0], tokens=["raster", 0]),
        "scales": scalewise(class_label=["pos", 0]),
        "scales_img": N("TN_VQDecode", vq=["msvq", 0], tokens=["scales", 0]),
        "judge": N("TN_JudgeLoader", judge_name="tn_glyph_judge.safetensors"),
        "real": N("TN_GlyphImages", class_indices="3,7", batch_size=2, seed=5),
        "compare": N("TN_Compare", images_1=["guided_img", 0], stats_1=["guided_sample", 3], images_2=["plain_img", 0],
                     stats_2=["plain_sample", 3], images_3=["raster_img", 0], stats_3=["raster", 2],
                     images_4=["scales_img", 0], stats_4=["scales", 2], images_5=["real", 0], stats_5=["real", 1],
                     columns=2, scale=2, labels="\ncfg 1 (no guidance)", judge=["judge", 0]),
        "save_grid": N("SaveImage", images=["compare", 0], filename_prefix="tn_cmp_grid"),
        "save_table": N("SaveImage", images=["compare", 1], filename_prefix="tn_cmp_table"),
    })
    out = comfy.run(g, timeout=600)
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["DiT ddim, 5 steps, cfg 3", "cfg 1 (no guidance)",
                                    "raster AR (tn_glyph_gpt), cfg 6", "VAR (tn_glyph_var), cfg 3", "real glyphs (dataset)"]
    # columns: branch, images, network evals / image, sequential passes, steps or tokens, wall s, ms / image, judge
    assert rows[0][1:5] == ["2", "10", "5", "5 denoising steps"], "cfg > 1: cond + uncond per step, batched in one pass"
    assert rows[1][1:5] == ["2", "5", "5", "5 denoising steps"], "cfg 1 skips the unconditional pass"
    assert rows[2][1:5] == ["2", "128", "64", "64 tokens"], "8x8 tokens, one pass each, with the null-class rows"
    assert rows[3][1:5] == ["2", "12", "6", "6 scales (130 tokens)"], "VAR: one pass per scale (1+4+9+16+36+64 tokens)"
    assert rows[4][1:] == ["2", "-", "-", "-", "-", "-", "100%"], "real glyphs of the requested classes: judge 100%"
    for r in rows[:4]:
        assert float(r[5]) > 0 and r[7].endswith("%"), r
    grid, = arrays(comfy, out, "save_grid")
    assert grid.shape[0] == 5 * (2 * 32 + 2 + 2), "5 rows of one line of 64 px tiles, 2 px padding above and below"
    table, = arrays(comfy, out, "save_table")
    assert table.shape[0] > 5 * 14 and table.min() < 60


def test_one_class_label_drives_ar_decoders_like_their_own_class_list(comfy):
    g = base(classes="3,7")
    g.update({
        "from_label": raster(class_label=["pos", 0]),
        "from_list": raster(class_indices="3,7"),
        "var_label": scalewise(class_label=["pos", 0]),
        "var_list": scalewise(class_indices="3,7"),
    })
    for k in ("from_label", "from_list", "var_label", "var_list"):
        vq = "rvq" if k.startswith("from") else "msvq"
        g[f"{k}_img"] = N("TN_VQDecode", vq=[vq, 0], tokens=[k, 0])
        g[f"{k}_save"] = N("SaveImage", images=[f"{k}_img", 0], filename_prefix=f"tn_fan_{k}")
    out = comfy.run(g, timeout=600)
    for a, b in (("from_label", "from_list"), ("var_label", "var_list")):
        for x, y in zip(arrays(comfy, out, f"{a}_save"), arrays(comfy, out, f"{b}_save")):
            assert np.array_equal(x, y), f"{a} and {b} must generate the same tokens"


def _compare_graph(batch_2=2, stats_batch=2):
    g = base()
    g.update({
        "a": raster(batch=2), "a_img": N("TN_VQDecode", vq=["rvq", 0], tokens=["a", 0]),
        "b": raster(batch=stats_batch), "b_img": N("TN_VQDecode", vq=["rvq", 0], tokens=["b", 0]),
        "real": N("TN_GlyphImages", class_indices="1", batch_size=batch_2, seed=0),
        "compare": N("TN_Compare", images_1=["a_img", 0], stats_1=["a", 2],
                     images_2=["real", 0] if stats_batch == 2 else ["a_img", 0], stats_2=["b", 2], columns=4, scale=1),
    })
    return g


def test_hybrid_bad_inputs_give_clear_errors_and_server_keeps_serving(comfy):
    # a comparison of rows with different batch sizes
    _expect_failure(comfy, _compare_graph(batch_2=3), "TN_Compare", "'images_2'", "has 3 images but images_1 has 2")
    # stats that do not belong to the row's images
    _expect_failure(comfy, _compare_graph(stats_batch=3), "TN_Compare", "'stats_2'", "batch of 3")
    # a label that would set a huge image width (a 100,000-character one took 2.6 GB): refused, the limit named
    g = _compare_graph()
    g["compare"]["inputs"]["labels"] = "short\n" + "x" * 100_000
    g["save"] = N("SaveImage", images=["compare", 0], filename_prefix="tn_bad")
    text = _expect_failure(comfy, g, "TN_Compare", "'labels'", "at most 200 characters")
    ours = text[text.index("TN_Compare: input 'labels'"):][:400]
    assert "x" * 100 not in ours  # the label is not echoed back (ComfyUI's own record repeats the prompt)
    # a mask of the wrong size for VAR inpainting / raster completion
    for dec, vq in (("var", "msvq"), ("gpt", "rvq")):
        g = base()
        g.update({
            "real": N("TN_GlyphImages", class_indices="1", batch_size=2, seed=0),
            "enc": N("TN_VQEncode", vq=[vq, 0], image=["real", 0], patch_nums="auto"),
            "mask": N("TN_RectMask", width=64, height=48, left=0.25, top=0.25, right=0.75, bottom=0.75),
            "gen": (scalewise if dec == "var" else raster)(tokens=["enc", 0], mask=["mask", 0]),
            "save": N("SaveImage", images=["gen", 1], filename_prefix="tn_bad"),
        })
        node = "TN_VARScaleDecoder" if dec == "var" else "TN_ARTokenDecoder"
        _expect_failure(comfy, g, node, "'mask'", "64x48", "expected a 32x32 mask")
    # an image with alpha, and an image of odd size, into both encoders
    for enc in (N("TN_VAEEncode", vae=["vae", 0], image=["img", 0]),
                N("TN_VQEncode", vq=["msvq", 0], image=["img", 0], patch_nums="auto")):
        g = base()
        g.update({"real": N("TN_GlyphImages", class_indices="1", batch_size=1, seed=0),
                  "alpha": N("SolidMask", value=1.0, width=32, height=32),
                  "img": N("JoinImageWithAlpha", image=["real", 0], alpha=["alpha", 0]),
                  "enc": enc, "preview": N("PreviewImage", images=["real", 0])})
        g["dec"] = (N("TN_VAEDecode", vae=["vae", 0], samples=["enc", 0]) if enc["class_type"] == "TN_VAEEncode"
                    else N("TN_VQDecode", vq=["msvq", 0], tokens=["enc", 0]))
        g["save"] = N("SaveImage", images=["dec", 0], filename_prefix="tn_bad")
        _expect_failure(comfy, g, enc["class_type"], "'image'", "alpha")
        g["img"] = N("ImageScale", image=["real", 0], upscale_method="nearest-exact", width=30, height=30, crop="disabled")
        _expect_failure(comfy, g, enc["class_type"], "'image'", "30")
    # a workflow that names a model file this machine does not have
    g = base()
    g["den"]["inputs"]["denoiser_name"] = "DiT-XL-2-256x256.pt"
    g.update(diffusion("x", 3.0, 2))
    g["save"] = N("SaveImage", images=["x_img", 0], filename_prefix="tn_bad")
    _expect_failure(comfy, g, "TN_Denoiser", "denoiser_name", "DiT-XL-2-256x256.pt")
    # and the server still serves
    g = base()
    g.update(diffusion("ok", 3.0, 2))
    g["save"] = N("SaveImage", images=["ok_img", 0], filename_prefix="tn_ok")
    assert "save" in comfy.run(g, timeout=300)
