"""What the AR decoder nodes compute, counted inside a real ComfyUI process (the pack imported as ComfyUI imports it):
each image decoded once on the path loader -> decoder -> TN VQ Decode, nothing decoded for an unconnected output,
and previews made only when ComfyUI's preview setting asks (--preview-method), then cheap (no decoder pass)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from comfy_harness import REPO_ROOT, default_python

SCRIPT = r"""
import importlib.util, json, os, sys
comfy_dir, pack_dir, previews = sys.argv[1:4]
sys.path.insert(0, comfy_dir)
os.chdir(comfy_dir)
sys.argv = [sys.argv[0], "--cpu"] + (["--preview-method", "auto"] if previews == "on" else [])
import comfy.options
comfy.options.enable_args_parsing()
spec = importlib.util.spec_from_file_location("tn_pack", os.path.join(pack_dir, "__init__.py"))
pack = importlib.util.module_from_spec(spec)
sys.modules["tn_pack"] = pack
spec.loader.exec_module(pack)
import torch
import comfy.utils
ar = sys.modules["tn_pack.nodes.autoregressive"]
nodes = pack.NODE_CLASS_MAPPINGS
sent = []
comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, *a, **k: sent.append((value, total, preview is not None)))
fits = []
for name in ("llamagen_rgb_projection", "var_rgb_projection"):
    def counted(*a, _f=getattr(ar, name), **k):
        fits.append(1)
        n = len(decoded)
        proj = _f(*a, **k)
        del decoded[n:]  # the fit's own decode is counted in "fits", not as an image decode
        return proj
    setattr(ar, name, counted)
decoded = []
def counting(vq, method):
    orig = getattr(vq.net, method)
    def f(x, *a, **k):
        decoded.append(x.shape[0] if torch.is_tensor(x) else x[0].shape[0])
        return orig(x, *a, **k)
    setattr(vq.net, method, f)

out = {}
for family, vq_name, model_name, decoder, kw in (
        ("llamagen", "tn_glyph_vq.safetensors", "tn_glyph_gpt.safetensors", "TN_ARTokenDecoder",
         dict(class_index=3, cfg=4.0, temperature=1.0, top_k=1, top_p=1.0, seed=0, batch_size=3)),
        ("var", "tn_glyph_msvq.safetensors", "tn_glyph_var.safetensors", "TN_VARScaleDecoder",
         dict(class_index=3, cfg=3.0, top_k=1, top_p=0.0, more_smooth=False, seed=0, batch_size=3))):
    vq = nodes["TN_VQLoader"]().load(vq_name, "auto")[0]
    model = nodes["TN_ARModelLoader"]().load(model_name, "auto")[0]
    counting(vq, "decode_indices" if family == "llamagen" else "decode_fhat")
    dec, vqdec = nodes[decoder](), nodes["TN_VQDecode"]()
    res = {}
    for case, graph in (("unused", {"9": {"inputs": {"tokens": ["4", 0]}}}),
                        ("used", {"9": {"inputs": {"tokens": ["4", 0]}}, "8": {"inputs": {"images": ["4", 1]}}}),
                        ("unknown", None), ("intermediates", {"8": {"inputs": {"images": ["4", 1]}}})):
        decoded.clear(); sent.clear(); fits.clear()
        tokens, images, _ = dec.decode(model, vq, **kw, return_intermediates=case == "intermediates", prompt=graph,
                                       unique_id="4")
        in_decoder = sum(decoded)
        final = vqdec.decode(vq, tokens)[0]
        res[case] = {"decoder_decodes": in_decoder, "total_decodes": sum(decoded), "previews": sum(p for *_, p in sent),
                     "updates": len(sent), "last": sent[-1][:2], "fits": len(fits), "images": list(images.shape),
                     "same_as_vq_decode": bool(images.shape == final.shape and torch.equal(images, final))}
    out[family] = res
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module", params=["off", "on"])
def counts(request, comfyui_dir):
    r = subprocess.run([default_python(), "-c", SCRIPT, str(comfyui_dir), str(REPO_ROOT), request.param],
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1"))
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert r.returncode == 0 and line, f"rc={r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return request.param, json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("family,steps", [("llamagen", 64), ("var", 6)])
def test_each_image_is_decoded_once_and_previews_follow_the_setting(counts, family, steps):
    previews, res = counts
    r = res[family]
    # loader -> decoder -> TN VQ Decode with the decoder's image output unconnected: decoded once, by TN VQ Decode
    assert r["unused"]["decoder_decodes"] == 0 and r["unused"]["total_decodes"] == 3
    assert r["unused"]["images"] == [1, 1, 1, 3]  # the placeholder nobody reads
    # both outputs connected: the decoder decodes, TN VQ Decode reuses the image
    assert r["used"]["decoder_decodes"] == 3 and r["used"]["total_decodes"] == 3 and r["used"]["same_as_vq_decode"]
    # called without a prompt graph (not through ComfyUI's executor): decode, to be safe
    assert r["unknown"]["decoder_decodes"] == 3 and r["unknown"]["same_as_vq_decode"]
    # return_intermediates: full decodes of every snapshot, as asked (16 snapshots for raster, one per scale for VAR)
    snapshots = 16 if family == "llamagen" else steps
    assert r["intermediates"]["decoder_decodes"] == 3 * snapshots
    assert r["intermediates"]["images"][0] == 3 * snapshots
    for case in r.values():  # progress messages at most every 0.1 s unless they carry a preview; the last one always
        assert case["last"] == [steps, steps] and 1 <= case["updates"] <= steps
    if previews == "off":
        assert all(c["previews"] == 0 and c["fits"] == 0 for c in r.values())
    else:
        assert r["unused"]["previews"] == snapshots  # raster: every 4th of 64 tokens; VAR: every scale
        assert r["unused"]["fits"] == 1 and r["used"]["fits"] == 0  # fitted once per tokenizer, then cached
        assert r["intermediates"]["previews"] == snapshots and r["intermediates"]["fits"] == 0
