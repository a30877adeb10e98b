"""The autoregressive nodes in a real ComfyUI, on small random-weight checkpoints in the official file layouts:
LlamaGen ({"model": sd} tokenizer, training-checkpoint GPT with argparse args) and VAR (bare state dicts).
"""
from __future__ import annotations

import argparse
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.llamagen_gpt import LlamaGenGPT, LlamaGenGPTConfig
from test_llamagen import _random_state_dict
from test_var import _official_checkpoint

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def ar_files(comfy, comfyui_dir):
    root = Path(comfyui_dir) / "models"
    (root / "vq").mkdir(parents=True, exist_ok=True)
    (root / "ar").mkdir(parents=True, exist_ok=True)
    written = []

    def put(path, obj):
        torch.save(obj, path)
        written.append(path)
        return path.name

    names = {}
    vq_gold = json.loads((GOLDEN / "llamagen_vq.json").read_text())  # ds8, 128 codes: 64 px -> 8x8 tokens
    names["lg_vq"] = put(root / "vq" / "tn_test_vq_ds8_c2i.pt", {"model": _random_state_dict(vq_gold["official_keys"], vq_gold["weights_seed"])})
    torch.manual_seed(0)
    for grid, key in ((8, "lg_gpt"), (32, "lg_gpt_long")):
        gpt = LlamaGenGPT(LlamaGenGPTConfig(dim=256, n_layer=2, n_head=4, n_kv_head=4, ffn_hidden=768, vocab_size=128,
                                            num_classes=10, block_size=grid * grid))
        sd = {k: v for k, v in gpt.state_dict().items() if k != "freqs_cis"}
        args = argparse.Namespace(gpt_model="GPT-tiny", image_size=8 * grid, downsample_size=8, cls_token_num=1, num_classes=10)
        names[key] = put(root / "ar" / f"tn_test_c2i_tiny_{8 * grid}.pt", {"model": sd, "optimizer": {}, "steps": 1, "args": args})
    g = json.loads((GOLDEN / "var_tiny4.json").read_text())  # 64 px, patch_nums (1,2,3,4), 96 codes, 10 classes
    pns = g["config"]["patch_nums"]
    names["var_vq"] = put(root / "vq" / "tn_test_vae_tiny.pth", _official_checkpoint(g["vae_shapes"], 100, pns))
    names["var"] = put(root / "ar" / "tn_test_var_d2.pth", _official_checkpoint(g["var_shapes"], 101, pns))
    # a user who put files in the wrong folder
    names["vq_in_ar"] = put(root / "ar" / "tn_test_misplaced_vae.pth", _official_checkpoint(g["vae_shapes"], 100, pns))
    names["ar_in_vq"] = put(root / "vq" / "tn_test_misplaced_c2i.pt", torch.load(root / "ar" / names["lg_gpt"], weights_only=False))
    names["truncated"] = put(root / "ar" / "tn_test_truncated.pth", {})
    (root / "ar" / names["truncated"]).write_bytes((root / "ar" / names["var"]).read_bytes()[:3000])
    yield names
    for p in written:
        p.unlink(missing_ok=True)


def N(cls, **inputs):
    return {"class_type": cls, "inputs": inputs}


def graph(f, family="llamagen", gpt="lg_gpt", size=64):
    vq, model = ("lg_vq", gpt) if family == "llamagen" else ("var_vq", "var")
    return {
        "vq": N("TN_VQLoader", vq_name=f[vq], weight_dtype="auto"),
        "ar": N("TN_ARModelLoader", model_name=f[model], weight_dtype="auto"),
        "glyphs": N("TN_GlyphImages", class_indices="3,7", batch_size=2, seed=0),
        "img": N("ImageScale", image=["glyphs", 0], upscale_method="nearest-exact", width=size, height=size, crop="disabled"),
        "enc": N("TN_VQEncode", vq=["vq", 0], image=["img", 0], patch_nums="auto" if family == "llamagen" else "1,2,3,4"),
    }


def png_arrays(comfy, outputs, node):
    return [np.asarray(Image.open(io.BytesIO(comfy.view(i)))) for i in outputs[node]["images"]]


def raster(**kw):
    base = dict(model=["ar", 0], vq=["vq", 0], class_index=3, cfg=4.0, temperature=1.0, top_k=1, top_p=1.0, seed=0, batch_size=2)
    return N("TN_ARTokenDecoder", **{**base, **kw})


def scalewise(**kw):
    base = dict(model=["ar", 0], vq=["vq", 0], class_index=3, cfg=1.5, top_k=1, top_p=0.96, more_smooth=False, seed=0, batch_size=2)
    return N("TN_VARScaleDecoder", **{**base, **kw})


def test_llamagen_nodes_generate_complete_and_round_trip(comfy, ar_files):
    g = graph(ar_files)
    g.update({
        "recon": N("TN_VQDecode", vq=["vq", 0], tokens=["enc", 0]),
        "greedy": raster(),
        "greedy_img": N("TN_VQDecode", vq=["vq", 0], tokens=["greedy", 0]),
        "keep_all": N("SolidMask", value=0.0, width=64, height=64),
        "complete": raster(tokens=["enc", 0], mask=["keep_all", 0], top_k=0, seed=5),
        "complete_img": N("TN_VQDecode", vq=["vq", 0], tokens=["complete", 0]),
        "bottom": N("TN_RectMask", width=64, height=64, left=0.0, top=0.5, right=1.0, bottom=1.0),
        "inpaint": raster(tokens=["enc", 0], mask=["bottom", 0], top_k=0, seed=5, return_intermediates=True),
        "s1": N("SaveImage", images=["recon", 0], filename_prefix="tn_ar_recon"),
        "s2": N("SaveImage", images=["greedy_img", 0], filename_prefix="tn_ar_greedy"),
        "s3": N("SaveImage", images=["complete_img", 0], filename_prefix="tn_ar_complete"),
        "s4": N("SaveImage", images=["inpaint", 1], filename_prefix="tn_ar_inpaint_steps"),
    })
    out, messages = comfy.run_with_messages(g, timeout=600)
    recon, greedy, complete = (png_arrays(comfy, out, s) for s in ("s1", "s2", "s3"))
    assert recon[0].shape == (64, 64, 3)
    assert np.array_equal(greedy[0], greedy[1]), "greedy decoding of one class must give identical images"
    for a, b in zip(recon, complete):  # a mask of zeros keeps every token: the completion is the reconstruction
        assert np.array_equal(a, b)
    assert len(out["s4"]["images"]) == 2 * 16, "16 intermediate snapshots of the batch of 2"
    progress = [m["data"] for m in messages if m["type"] == "progress" and m["data"].get("max") == 64]
    assert progress and progress[-1]["value"] == 64


def test_var_nodes_generate_edit_and_round_trip(comfy, ar_files):
    g = graph(ar_files, "var")
    g.update({
        "recon": N("TN_VQDecode", vq=["vq", 0], tokens=["enc", 0]),
        "greedy": scalewise(return_intermediates=True),
        "greedy_img": N("TN_VQDecode", vq=["vq", 0], tokens=["greedy", 0]),
        "keep_all": N("SolidMask", value=0.0, width=64, height=64),
        "keep": scalewise(tokens=["enc", 0], mask=["keep_all", 0], top_k=0, seed=1),
        "keep_img": N("TN_VQDecode", vq=["vq", 0], tokens=["keep", 0]),
        "smooth": scalewise(more_smooth=True, top_k=0, seed=2),
        "smooth_img": N("TN_VQDecode", vq=["vq", 0], tokens=["smooth", 0]),
        "s1": N("SaveImage", images=["recon", 0], filename_prefix="tn_var_recon"),
        "s2": N("SaveImage", images=["greedy_img", 0], filename_prefix="tn_var_greedy"),
        "s3": N("SaveImage", images=["keep_img", 0], filename_prefix="tn_var_keep"),
        "s4": N("SaveImage", images=["greedy", 1], filename_prefix="tn_var_scales"),
        "s5": N("SaveImage", images=["smooth_img", 0], filename_prefix="tn_var_smooth"),
    })
    out = comfy.run(g, timeout=600)
    recon, greedy, keep = (png_arrays(comfy, out, s) for s in ("s1", "s2", "s3"))
    assert np.array_equal(greedy[0], greedy[1])
    for a, b in zip(recon, keep):
        assert np.array_equal(a, b), "keeping every token of every scale must reproduce the encoded image"
    assert len(out["s4"]["images"]) == 4 * 2, "one image per scale (4 scales) for a batch of 2"
    assert len(out["s5"]["images"]) == 2


def _expect_failure(comfy, g, *needles):
    with pytest.raises(Exception) as err:
        comfy.run(g, timeout=300)
    text = str(err.value) + json.dumps(getattr(err.value, "response", None) or {}, default=str)
    for n in needles:
        assert n in text, f"{n!r} not in: {text[:1500]}"
    return text


def _decode_graph(f, **kw):
    g = graph(f)
    g["gen"] = raster(**kw)
    g["img_out"] = N("TN_VQDecode", vq=["vq", 0], tokens=["gen", 0])
    g["save"] = N("SaveImage", images=["img_out", 0], filename_prefix="tn_ar_ok")
    return g


def test_ar_bad_input_gives_clear_errors_and_server_keeps_serving(comfy, ar_files):
    # a LlamaGen tokenizer with a VAR transformer
    g = graph(ar_files, "var")
    g["vq"] = N("TN_VQLoader", vq_name=ar_files["lg_vq"], weight_dtype="auto")
    g["gen"] = scalewise()
    g["save"] = N("SaveImage", images=["gen", 1], filename_prefix="tn_bad")
    _expect_failure(comfy, g, "TN_VARScaleDecoder", "'vq'", "LlamaGen")
    # a VAR model in the raster decoder
    g = graph(ar_files, "var")
    g["gen"] = raster()
    g["save"] = N("SaveImage", images=["gen", 1], filename_prefix="tn_bad")
    _expect_failure(comfy, g, "TN_ARTokenDecoder", "'model'", "TN VAR Scale Decoder")
    # a tokenizer file in the model loader, a model file in the tokenizer loader, a truncated file
    for loader, name, needle in (("TN_ARModelLoader", ar_files["vq_in_ar"], "TN VQ Loader"),
                                 ("TN_VQLoader", ar_files["ar_in_vq"], "TN AR Model Loader"),
                                 ("TN_ARModelLoader", ar_files["truncated"], "truncated")):
        g = _decode_graph(ar_files)
        key = "ar" if loader == "TN_ARModelLoader" else "vq"
        g[key] = N(loader, **{("model_name" if key == "ar" else "vq_name"): name, "weight_dtype": "auto"})
        _expect_failure(comfy, g, loader, needle)
    # an unsupported image size for encode says what works
    g = _decode_graph(ar_files)
    g["img"]["inputs"].update(width=60, height=60)
    g["gen"]["inputs"].update(tokens=["enc", 0])
    _expect_failure(comfy, g, "TN_VQEncode", "'image'", "multiples of its downsample factor 8")
    # class index out of range, batch 0
    _expect_failure(comfy, _decode_graph(ar_files, class_index=10), "TN_ARTokenDecoder", "class_index", "0..9")
    _expect_failure(comfy, _decode_graph(ar_files, batch_size=0), "batch_size")
    # the server still serves
    assert "save" in comfy.run(_decode_graph(ar_files), timeout=300)


def test_interrupt_stops_token_decoding_promptly(comfy, ar_files):
    g = graph(ar_files, gpt="lg_gpt_long")
    g["gen"] = raster(batch_size=16, top_k=0)
    g["img_out"] = N("TN_VQDecode", vq=["vq", 0], tokens=["gen", 0])
    g["save"] = N("SaveImage", images=["img_out", 0], filename_prefix="tn_ar_interrupted")
    pid = comfy.queue(g)
    deadline = time.monotonic() + 60
    while comfy.queue_state()["queue_running"] == [] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3.0)
    t0 = time.monotonic()
    comfy.interrupt()
    with pytest.raises(Exception):
        comfy.wait(pid, timeout=60)
    assert time.monotonic() - t0 < 10
    assert "save" in comfy.run(_decode_graph(ar_files), timeout=300)


def _bundled_ar_graph():
    """Both AR decoders on the bundled demo models, each through TN VQ Decode (intermediates unconnected)."""
    return {
        "rvq": N("TN_VQLoader", vq_name="tn_glyph_vq.safetensors", weight_dtype="auto"),
        "gpt": N("TN_ARModelLoader", model_name="tn_glyph_gpt.safetensors", weight_dtype="auto"),
        "msvq": N("TN_VQLoader", vq_name="tn_glyph_msvq.safetensors", weight_dtype="auto"),
        "var": N("TN_ARModelLoader", model_name="tn_glyph_var.safetensors", weight_dtype="auto"),
        "r": raster(model=["gpt", 0], vq=["rvq", 0], batch_size=2, seed=int(time.time())),
        "v": scalewise(model=["var", 0], vq=["msvq", 0], cfg=3.0, batch_size=2, seed=int(time.time())),
        "r_img": N("TN_VQDecode", vq=["rvq", 0], tokens=["r", 0]),
        "v_img": N("TN_VQDecode", vq=["msvq", 0], tokens=["v", 0]),
        "s1": N("SaveImage", images=["r_img", 0], filename_prefix="tn_ar_previews"),
        "s2": N("SaveImage", images=["v_img", 0], filename_prefix="tn_var_previews"),
    }


def _preview_images(messages):
    out = []
    for m in messages:
        if m["type"] == "binary" and m["data"]["event"] == 1:  # PREVIEW_IMAGE: 4-byte format (1 = JPEG), image
            payload = m["data"]["payload"]
            assert int.from_bytes(payload[:4], "big") == 1
            out.append(Image.open(io.BytesIO(payload[4:])))
    return out


@pytest.fixture(scope="module")
def comfy_previews(comfyui_dir):
    """A second ComfyUI, started as a user who turned previews on (--preview-method auto)."""
    from comfy_harness import ComfyServer
    server = ComfyServer(comfyui_dir, extra_args=["--preview-method", "auto"])
    try:
        server.start(timeout=180)
        yield server
    finally:
        server.cleanup()


def test_previews_appear_only_when_the_preview_setting_asks(comfy, comfy_previews):
    """ComfyUI's default (no previews) sends none; with --preview-method auto a cheap preview image comes with the
    progress of every 4th of the raster model's 64 tokens and of every one of VAR's 6 scales."""
    out, messages = comfy.run_with_messages(_bundled_ar_graph(), timeout=300)
    assert len(out["s1"]["images"]) == 2 and len(out["s2"]["images"]) == 2
    assert not [m for m in messages if m["type"] == "binary"]
    last = {m["data"]["max"]: m["data"]["value"] for m in messages if m["type"] == "progress"}
    assert last[64] == 64 and last[6] == 6  # both decoders report their last step
    out, messages = comfy_previews.run_with_messages(_bundled_ar_graph(), timeout=300)
    assert len(out["s1"]["images"]) == 2 and len(out["s2"]["images"]) == 2
    previews = _preview_images(messages)
    assert len(previews) == 16 + 6, len(previews)
    for img in previews:
        img.load()
        assert img.format == "JPEG" and min(img.size) >= 256  # token-grid previews, enlarged to be seen


@pytest.fixture(scope="module")
def gpt_256_files(comfy, comfyui_dir):
    """A VQ-16-shaped tokenizer (narrow) and a 16x16-token GPT, saved with its args and as a bare c2i_*_256.pt."""
    from tokenizers.llamagen_vq import LlamaGenVQ, LlamaGenVQConfig
    root = Path(comfyui_dir) / "models"
    torch.manual_seed(0)
    vq = LlamaGenVQ(LlamaGenVQConfig(ch=32, encoder_ch_mult=(1,) * 5, decoder_ch_mult=(1,) * 5, num_res_blocks=1,
                                     z_channels=32, codebook_size=128))
    gpt = LlamaGenGPT(LlamaGenGPTConfig(dim=128, n_layer=2, n_head=2, n_kv_head=2, ffn_hidden=384, vocab_size=128,
                                        num_classes=10, block_size=256))
    sd = {k: v for k, v in gpt.state_dict().items() if k != "freqs_cis"}
    args = argparse.Namespace(gpt_model="GPT-tiny", image_size=256, downsample_size=16, cls_token_num=1, num_classes=10)
    paths = {"vq": root / "vq" / "tn_test_vq16_narrow.pt", "args": root / "ar" / "tn_test_gpt16_args.pt",
             "bare": root / "ar" / "tn_test_c2i_narrow_256.pt", "bare_noname": root / "ar" / "tn_test_c2i_narrow.pt"}
    torch.save({"model": vq.state_dict()}, paths["vq"])
    torch.save({"model": sd, "args": args}, paths["args"])
    torch.save(sd, paths["bare"])
    torch.save({"model": sd}, paths["bare_noname"])
    yield {k: p.name for k, p in paths.items()}
    for p in paths.values():
        p.unlink(missing_ok=True)


def test_a_bare_256_gpt_generates_what_the_same_weights_with_args_do(comfy, gpt_256_files):
    f = gpt_256_files
    g = {"vq": N("TN_VQLoader", vq_name=f["vq"], weight_dtype="auto")}
    for key, name, size in (("args", f["args"], "auto"), ("bare", f["bare"], "auto"),
                            ("noname", f["bare_noname"], "256"), ("noname_auto", f["bare_noname"], "auto")):
        g[f"m_{key}"] = N("TN_ARModelLoader", model_name=name, weight_dtype="auto", image_size=size)
        g[f"g_{key}"] = raster(model=[f"m_{key}", 0], batch_size=1)
        g[f"d_{key}"] = N("TN_VQDecode", vq=["vq", 0], tokens=[f"g_{key}", 0])
        g[f"s_{key}"] = N("SaveImage", images=[f"d_{key}", 0], filename_prefix=f"tn_gpt256_{key}")
    out = comfy.run(g, timeout=600)
    imgs = {k: png_arrays(comfy, out, f"s_{k}")[0] for k in ("args", "bare", "noname", "noname_auto")}
    assert imgs["args"].shape == (256, 256, 3)
    assert np.array_equal(imgs["args"], imgs["bare"]), "the size in the name gives the same grid as the args"
    assert np.array_equal(imgs["args"], imgs["noname"]), "image_size 256 on the loader gives the same grid"
    assert imgs["noname_auto"].shape == (384, 384, 3)  # nothing says 256: the bare releases' 384 px


def test_class_lists_are_parsed_strictly(comfy, ar_files):
    """One strict parser for every list input: '1 2' is not class 12, '1_0' not class 10, ',' not an empty batch that
    crashes later; a long junk input is echoed cut, not whole."""
    junk = "9;" * 100_000
    for text, needle in (("1 2", "'1 2'"), ("1_0", "'1_0'"), (",", "','"), ("3,,4", "'3,,4'"), (junk, "200000 characters")):
        g = _decode_graph(ar_files, class_indices=text)
        with pytest.raises(Exception) as err:
            comfy.run(g, timeout=300)
        msg = str(err.value) + json.dumps(getattr(err.value, "response", None) or {}, default=str)
        assert "TN_ARTokenDecoder" in msg and "'class_indices'" in msg and needle in msg, msg[:600]
        ours = re.search(r"TN_ARTokenDecoder: input 'class_indices': [^\"\n]*", msg).group(0)
        assert len(ours) < 300, ours  # (ComfyUI itself echoes the prompt's inputs in its error record)
    g = _decode_graph(ar_files)
    g["glyphs"] = N("TN_GlyphImages", class_indices="1 2", batch_size=2, seed=0)
    g["gen"]["inputs"].update(tokens=["enc", 0])
    _expect_failure(comfy, g, "TN_GlyphImages", "'class_indices'", "'1 2'")
    g = graph(ar_files, "var")  # patch_nums take the same parser
    g["enc"]["inputs"]["patch_nums"] = "1,2,3 4"
    g["dec"] = N("TN_VQDecode", vq=["vq", 0], tokens=["enc", 0])
    g["save"] = N("SaveImage", images=["dec", 0], filename_prefix="tn_bad")
    _expect_failure(comfy, g, "TN_VQEncode", "'patch_nums'", "'1,2,3 4'")
    ok = _decode_graph(ar_files, class_indices=" 3, 7 ,1")  # spaces around commas are fine
    assert "save" in comfy.run(ok, timeout=300)
