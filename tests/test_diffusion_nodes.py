"""The diffusion nodes in a real ComfyUI: core interop, equivalence with core KSampler, bad input, progress, interrupt.

Checkpoints are written by the tests in the official layouts (DiT: a bare state dict saved with torch.save) into the
server's model folders under names starting with tn_test_, and removed afterwards.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from models.autoencoder import GlyphAutoencoder
from models.dit import DiT, DiTConfig

STEPS = 6


def _randomize(module: torch.nn.Module, seed: int) -> dict:
    """Non-zero random weights (the official init zeroes adaLN and the output layer, which would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in module.state_dict().items():
        sd[k] = v.clone() if k == "pos_embed" else torch.randn(v.shape, generator=g) * (0.5 / max(v.shape[-1], 1) ** 0.5)
    return sd


@pytest.fixture(scope="module")
def models_dir(comfy, comfyui_dir):
    """Write test checkpoints into the server's own model folders; remove them afterwards."""
    root = Path(comfyui_dir) / "models"
    den_dir = root / ("diffusion_models" if (root / "diffusion_models").is_dir() else "unet")
    written = []

    def put(path: Path, writer):
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
        written.append(path)
        return path.name

    names = {}
    # An official-layout DiT: ImageNet-style 1000 classes + null row, learned sigma, bare state dict in a .pt file.
    official = DiT(DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=1))
    names["official"] = put(den_dir / "tn_test_DiT-T-2-64.pt", lambda p: torch.save(_randomize(official, 1), p))
    names["official_sit"] = put(den_dir / "tn_test_SiT-T-2-64.pt", lambda p: torch.save(_randomize(official, 2), p))
    # A demo-style DiT with metadata (10 classes), and a matching autoencoder.
    demo = DiT(DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10, learn_sigma=False))
    meta = {"tn_kind": "denoiser", "family": "dit", "prediction": "eps", "num_classes": "10", "num_heads": "4",
            "class_names": json.dumps([f"digit {i}" for i in range(10)]), "latent_scale_factor": "1.0",
            "autoencoder": "tn_test_ae.safetensors"}
    names["demo"] = put(den_dir / "tn_test_demo_dit.safetensors", lambda p: save_file(_randomize(demo, 3), str(p), metadata=meta))
    ae = GlyphAutoencoder()
    names["ae"] = put(root / "vae" / "tn_test_ae.safetensors",
                      lambda p: save_file(_randomize(ae, 4), str(p), metadata={"tn_kind": "autoencoder", "downsample": "4", "latent_channels": "4", "image_size": "32"}))
    # Bad files.
    names["wrong_family"] = put(den_dir / "tn_test_wrong_family.pt", lambda p: torch.save({"encoder.conv_in.weight": torch.randn(8, 3, 3, 3), "quantize.embedding.weight": torch.randn(16, 8)}, p))
    names["truncated"] = put(den_dir / "tn_test_truncated.pt", lambda p: p.write_bytes((den_dir / names["official"]).read_bytes()[:5000]))
    sd_missing = _randomize(official, 1)
    del sd_missing["final_layer.linear.weight"], sd_missing["blocks.1.attn.qkv.weight"]
    names["missing"] = put(den_dir / "tn_test_missing_keys.pt", lambda p: torch.save(sd_missing, p))
    yield names
    for p in written:
        p.unlink(missing_ok=True)


def N(cls, **inputs):
    return {"class_type": cls, "inputs": inputs}


def base_graph(names, model="demo", batch=2, cls_index=3):
    return {
        "den": N("TN_Denoiser", denoiser_name=names[model], prediction="auto", weight_dtype="auto"),
        "pos": N("TN_ClassLabel", model=["den", 0], class_index=cls_index),
        "neg": N("TN_ClassLabel", model=["den", 0], class_index=-1),
        "empty": N("TN_EmptyLatent", model=["den", 0], batch_size=batch),
        "tn_sched": N("TN_NoiseSchedule", schedule="ddpm_linear", steps=STEPS, denoise=1.0),
    }


def save_latent(src, prefix):
    return N("SaveLatent", samples=src, filename_prefix=prefix)


def latents_of(comfy, outputs, node_id) -> torch.Tensor:
    info = outputs[node_id]["latents"][0]
    return load_safetensors_bytes(comfy.view(info))["latent_tensor"]


def test_our_schedule_and_euler_in_core_samplers_match_core_ksampler(comfy, models_dir):
    """TN schedule + TN Euler through core SamplerCustom (and SamplerCustomAdvanced where core has it) and through
    TN Guided Sampler give the same latent as core KSampler(euler, simple) for the same seed and cfg."""
    g = base_graph(models_dir)
    g.update({
        "ks": N("KSampler", model=["den", 0], seed=3, steps=STEPS, cfg=3.0, sampler_name="euler", scheduler="simple",
                positive=["pos", 0], negative=["neg", 0], latent_image=["empty", 0], denoise=1.0),
        "tn_euler": N("TN_DiffusionSampler", sampler_name="euler", eta=-1.0),
        "custom": N("SamplerCustom", model=["den", 0], add_noise=True, noise_seed=3, cfg=3.0, positive=["pos", 0],
                    negative=["neg", 0], sampler=["tn_euler", 0], sigmas=["tn_sched", 0], latent_image=["empty", 0]),
        "guider": N("TN_CFG", model=["den", 0], positive=["pos", 0], negative=["neg", 0], cfg=3.0, guidance_rescale=0.0,
                    sigma_low=0.0, sigma_high=10000.0),
        "guided": N("TN_GuidedSampler", guider=["guider", 0], sampler=["tn_euler", 0], sigmas=["tn_sched", 0],
                    latent_image=["empty", 0], noise_seed=3, add_noise=True),
        "s_ks": save_latent(["ks", 0], "tn_eq_ks"),
        "s_custom": save_latent(["custom", 0], "tn_eq_custom"),
        "s_guided": save_latent(["guided", 0], "tn_eq_guided"),
    })
    has_advanced = "SamplerCustomAdvanced" in comfy.object_info()
    if has_advanced:
        g.update({
            "noise": N("RandomNoise", noise_seed=3),
            "adv": N("SamplerCustomAdvanced", noise=["noise", 0], guider=["guider", 0], sampler=["tn_euler", 0],
                     sigmas=["tn_sched", 0], latent_image=["empty", 0]),
            "s_adv": save_latent(["adv", 0], "tn_eq_adv"),
        })
    out = comfy.run(g, timeout=600)
    ref = latents_of(comfy, out, "s_ks")
    assert ref.shape == (2, 4, 8, 8) and ref.abs().max() > 0.1
    # the random test model's latents reach |x| ~ 500, where float32 rounding alone (cond and uncond batched in a
    # different order) moves the result by ~1e-4; the bound is relative to that scale (a wrong sigma, cfg or noise
    # changes the latent by far more)
    tol = 1e-4 + 1e-6 * ref.abs().max().item()
    for node in ["s_custom", "s_guided"] + (["s_adv"] if has_advanced else []):
        diff = (latents_of(comfy, out, node) - ref).abs().max().item()
        assert diff < tol, f"{node} differs from core KSampler by {diff} (tolerance {tol})"


@pytest.mark.parametrize("model", ["demo", "official_sit"])
def test_every_tn_sampler_runs_in_core_sampler_custom(comfy, models_dir, model):
    """Each TN SAMPLER works in core SamplerCustom with an eps model and with a flow (SiT) model."""
    g = base_graph(models_dir, model=model, batch=1, cls_index=1)
    if model == "official_sit":
        g["tn_sched"] = N("TN_NoiseSchedule", schedule="flow_sd3", steps=4, denoise=1.0, shift=1.0)
    samplers = comfy.object_info("TN_DiffusionSampler")["TN_DiffusionSampler"]["input"]["required"]["sampler_name"][0]
    assert set(samplers) >= {"ddpm", "ddim", "euler", "euler_ancestral", "dpmpp_2m", "flow_euler", "lcm"}
    for name in samplers:
        g[f"smp_{name}"] = N("TN_DiffusionSampler", sampler_name=name, eta=-1.0)
        g[f"run_{name}"] = N("SamplerCustom", model=["den", 0], add_noise=True, noise_seed=1, cfg=2.0, positive=["pos", 0],
                             negative=["neg", 0], sampler=[f"smp_{name}", 0], sigmas=["tn_sched", 0], latent_image=["empty", 0])
        g[f"save_{name}"] = save_latent([f"run_{name}", 0], f"tn_all_{name}")
    out = comfy.run(g, timeout=900)
    results = {name: latents_of(comfy, out, f"save_{name}") for name in samplers}
    for name, lat in results.items():
        assert torch.isfinite(lat).all() and lat.abs().max() > 0, name
    # Deterministic samplers agree with each other more closely than with a stochastic one on the same noise.
    assert not torch.equal(results["ddpm"], results["ddim"])


def test_official_layout_dit_loads_and_class_names_resolve(comfy, models_dir):
    """An official-layout DiT .pt (1000 ImageNet classes + null row, learned sigma) samples through core KSampler;
    TN_ClassLabel resolves ImageNet class names."""
    g = base_graph(models_dir, model="official", batch=1)
    g["pos"] = N("TN_ClassLabel", model=["den", 0], class_index=0, class_name="golden retriever")
    g["ks"] = N("KSampler", model=["den", 0], seed=0, steps=3, cfg=4.0, sampler_name="euler", scheduler="normal",
                positive=["pos", 0], negative=["neg", 0], latent_image=["empty", 0], denoise=1.0)
    g["save"] = save_latent(["ks", 0], "tn_official")
    out = comfy.run(g, timeout=300)
    lat = latents_of(comfy, out, "save")
    assert lat.shape == (1, 4, 8, 8) and torch.isfinite(lat).all()


def test_trajectory_and_progress_with_previews(comfy, models_dir):
    """TN Guided Sampler reports one progress message per step and returns steps x batch x0 predictions."""
    g = base_graph(models_dir, batch=2)
    g.update({
        "smp": N("TN_DiffusionSampler", sampler_name="ddpm", eta=-1.0),
        "guider": N("TN_CFG", model=["den", 0], positive=["pos", 0], negative=["neg", 0], cfg=2.0, guidance_rescale=0.7,
                    sigma_low=0.5, sigma_high=50.0),
        "run": N("TN_GuidedSampler", guider=["guider", 0], sampler=["smp", 0], sigmas=["tn_sched", 0],
                 latent_image=["empty", 0], noise_seed=0, add_noise=True),
        "vae": N("TN_VAELoader", vae_name=models_dir["ae"]),
        "dec": N("TN_VAEDecode", vae=["vae", 0], samples=["run", 2]),
        "save": N("SaveImage", images=["dec", 0], filename_prefix="tn_traj"),
    })
    out, messages = comfy.run_with_messages(g, timeout=300)
    progress = [m["data"] for m in messages if m["type"] == "progress" and m["data"].get("max") == STEPS]
    assert [p["value"] for p in progress][-1] == STEPS and len(progress) >= STEPS
    images = comfy.images(out)
    assert len(images) == STEPS * 2 and images[0].size == (32, 32)


def test_interrupt_stops_sampling_promptly_and_server_keeps_serving(comfy, models_dir):
    g = base_graph(models_dir, batch=1)
    g.update({
        "long": N("TN_NoiseSchedule", schedule="ddpm_linear", steps=5000, denoise=1.0),
        "smp": N("TN_DiffusionSampler", sampler_name="euler", eta=-1.0),
        "guider": N("TN_CFG", model=["den", 0], positive=["pos", 0], negative=["neg", 0], cfg=2.0, guidance_rescale=0.0,
                    sigma_low=0.0, sigma_high=10000.0),
        "run": N("TN_GuidedSampler", guider=["guider", 0], sampler=["smp", 0], sigmas=["long", 0],
                 latent_image=["empty", 0], noise_seed=0, add_noise=True),
        "save": save_latent(["run", 0], "tn_interrupted"),
    })
    pid = comfy.queue(g)
    deadline = time.monotonic() + 120
    while comfy.queue_state()["queue_running"] == [] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3.0)  # let it get into the sampling loop
    t0 = time.monotonic()
    comfy.interrupt()
    with pytest.raises(Exception) as err:
        comfy.wait(pid, timeout=60)
    assert time.monotonic() - t0 < 10, "interrupt took longer than a few steps"
    assert "interrupt" in str(err.value).lower() or "Interrupt" in json.dumps(getattr(err.value, "response", {}))
    small = base_graph(models_dir, batch=1)
    small["ks"] = N("KSampler", model=["den", 0], seed=0, steps=2, cfg=1.0, sampler_name="euler", scheduler="simple",
                    positive=["pos", 0], negative=["neg", 0], latent_image=["empty", 0], denoise=1.0)
    small["save"] = save_latent(["ks", 0], "tn_after_interrupt")
    assert "save" in comfy.run(small, timeout=120)


def _expect_failure(comfy, graph, *needles):
    """The prompt fails (400 or execution error) with a message containing every needle; the next prompt runs."""
    with pytest.raises(Exception) as err:
        comfy.run(graph, timeout=300)
    text = str(err.value) + json.dumps(getattr(err.value, "response", None) or {}, default=str)
    for needle in needles:
        assert needle in text, f"{needle!r} not in error: {text[:1500]}"
    return text


def _ok_prompt(names):
    g = base_graph(names, batch=1)
    g["ks"] = N("KSampler", model=["den", 0], seed=0, steps=1, cfg=1.0, sampler_name="euler", scheduler="simple",
                positive=["pos", 0], negative=["neg", 0], latent_image=["empty", 0], denoise=1.0)
    g["save"] = save_latent(["ks", 0], "tn_ok")
    return g


@pytest.mark.parametrize("case", ["wrong_family", "truncated", "missing", "not_there"])
def test_bad_checkpoints_give_clear_errors(comfy, models_dir, case):
    g = _ok_prompt(models_dir)
    g["den"]["inputs"]["denoiser_name"] = models_dir.get(case, "tn_test_no_such_file.pt")
    if case == "not_there":
        _expect_failure(comfy, g, "denoiser_name")  # not in the list: ComfyUI's own validation names node and input
    else:
        expected = {"wrong_family": "expected a DiT/SiT", "truncated": "truncated", "missing": "final_layer.linear.weight"}[case]
        _expect_failure(comfy, g, "TN_Denoiser", "denoiser_name", expected)
    assert "save" in comfy.run(_ok_prompt(models_dir), timeout=120)


def test_bad_values_give_clear_errors(comfy, models_dir, comfyui_dir):
    # class index out of range for a 10-class model
    g = _ok_prompt(models_dir)
    g["pos"]["inputs"]["class_index"] = 10
    _expect_failure(comfy, g, "TN_ClassLabel", "class_index", "0..9")
    # steps 0 is refused by validation before anything runs
    g = _ok_prompt(models_dir)
    g["run"] = N("SamplerCustom", model=["den", 0], add_noise=True, noise_seed=0, cfg=1.0, positive=["pos", 0], negative=["neg", 0],
                 sampler=["smp", 0], sigmas=["tn_sched", 0], latent_image=["empty", 0])
    g["smp"] = N("TN_DiffusionSampler", sampler_name="euler", eta=-1.0)
    g["tn_sched"]["inputs"]["steps"] = 0
    g["save"] = save_latent(["run", 0], "tn_bad")
    _expect_failure(comfy, g, "steps", "value_smaller_than_min")
    # unsupported latent size: the DiT was trained on 8x8 latents
    g = _ok_prompt(models_dir)
    g["empty"] = N("EmptyLatentImage", width=128, height=128, batch_size=1)
    _expect_failure(comfy, g, "4x8x8", "got 4x16x16")
    # NaN latents, loaded from a .latent file through core LoadLatent
    nan = torch.full((1, 4, 8, 8), float("nan"))
    input_dir = Path(comfy.input_dir)
    save_file({"latent_tensor": nan, "latent_format_version_0": torch.tensor([])}, str(input_dir / "tn_nan.latent"))
    g = _ok_prompt(models_dir)
    g.update({
        "load": N("LoadLatent", latent="tn_nan.latent"),
        "smp": N("TN_DiffusionSampler", sampler_name="euler", eta=-1.0),
        "guider": N("TN_CFG", model=["den", 0], positive=["pos", 0], negative=["neg", 0], cfg=1.0, guidance_rescale=0.0,
                    sigma_low=0.0, sigma_high=10000.0),
        "run": N("TN_GuidedSampler", guider=["guider", 0], sampler=["smp", 0], sigmas=["tn_sched", 0],
                 latent_image=["load", 0], noise_seed=0, add_noise=True),
        "save": save_latent(["run", 0], "tn_nan"),
    })
    _expect_failure(comfy, g, "TN_GuidedSampler", "latent_image", "NaN")
    # the server still works
    assert "save" in comfy.run(_ok_prompt(models_dir), timeout=120)


def test_class_label_lists_are_strict(comfy, models_dir):
    """TN Class Label shares the pack's one list parser: '1_0' is an error, not class 10; ',' is no classes."""
    for text in ("1_0", ",", "1 2"):
        g = base_graph(models_dir, batch=1)
        g["pos"] = N("TN_ClassLabel", model=["den", 0], class_index=0, class_indices=text)
        g["ks"] = N("KSampler", model=["den", 0], seed=0, steps=2, cfg=2.0, sampler_name="euler", scheduler="simple",
                    positive=["pos", 0], negative=["neg", 0], latent_image=["empty", 0], denoise=1.0)
        g["save"] = save_latent(["ks", 0], "tn_bad_classes")
        _expect_failure(comfy, g, "TN_ClassLabel", "'class_indices'", repr(text))
