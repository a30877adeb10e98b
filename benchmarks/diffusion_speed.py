"""Diffusion speed: the pack's sampling overhead against core KSampler, and DiT-XL/2 seconds per step.

    python -m benchmarks.diffusion_speed                   # both parts
    python -m benchmarks.diffusion_speed --part overhead   # needs scripts/setup.sh (a real ComfyUI)
    python -m benchmarks.diffusion_speed --part dit --batches 1 8 --steps 2

Overhead: the same MODEL (a DiT with random weights, official layout), seed, cfg and number of steps, run through
  (a) core KSampler (euler, simple), (b) core SamplerCustom with TN Noise Schedule + TN Euler, and
  (c) TN Guided Sampler with TN CFG + TN Euler, in one real ComfyUI server; each prompt is run `--repeats` times in
  alternation and the median wall time per prompt (queue to finished history entry; the HTTP polling costs the same
  for every path) is compared: ratio = TN / core.
  Goal: <= 1.03.
DiT-XL/2: seconds per sampling step (two network evaluations: cond + uncond, as with cfg > 1) at 256 px
  (32x32x4 latents), batch 1 and 8, fp32 on this machine's CPU (or CUDA if present).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return (f"{platform.platform()} | {platform.processor() or platform.machine()} | {os.cpu_count()} cores | "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads) | device {dev}")


def random_dit_file(path: Path, depth: int, hidden: int, heads: int, input_size: int, seed: int = 0) -> None:
    from models.dit import DiT, DiTConfig
    net = DiT(DiTConfig(input_size=input_size, patch_size=2, in_channels=4, hidden_size=hidden, depth=depth, num_heads=heads))
    g = torch.Generator().manual_seed(seed)
    sd = {k: (v if k == "pos_embed" else torch.randn(v.shape, generator=g) * 0.02) for k, v in net.state_dict().items()}
    torch.save(sd, path)


def overhead(steps: int, repeats: int, model: str) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from comfy_harness import ComfyServer

    sizes = {"S": (12, 384, 6), "B": (12, 768, 12)}
    depth, hidden, heads = sizes[model]
    server = ComfyServer()
    comfy_root = server.comfyui_dir / "models"
    den_dir = comfy_root / ("diffusion_models" if (comfy_root / "diffusion_models").is_dir() else "unet")
    den_dir.mkdir(parents=True, exist_ok=True)
    name = f"tn_bench_DiT-{model}-2-256.pt"
    random_dit_file(den_dir / name, depth, hidden, heads, input_size=32)
    N = lambda cls, **kw: {"class_type": cls, "inputs": kw}  # noqa: E731
    common = {
        "den": N("TN_Denoiser", denoiser_name=name, prediction="auto", weight_dtype="auto"),
        "pos": N("TN_ClassLabel", model=["den", 0], class_index=207),
        "neg": N("TN_ClassLabel", model=["den", 0], class_index=-1),
        "empty": N("TN_EmptyLatent", model=["den", 0], batch_size=1),
        "sched": N("TN_NoiseSchedule", schedule="ddpm_linear", steps=steps, denoise=1.0),
        "euler": N("TN_DiffusionSampler", sampler_name="euler", eta=-1.0),
    }
    prompts = {
        "core KSampler": {**common, "run": N("KSampler", model=["den", 0], seed=1, steps=steps, cfg=4.0, sampler_name="euler",
                                             scheduler="simple", positive=["pos", 0], negative=["neg", 0],
                                             latent_image=["empty", 0], denoise=1.0)},
        "core SamplerCustom + TN schedule/sampler": {**common, "run": N(
            "SamplerCustom", model=["den", 0], add_noise=True, noise_seed=1, cfg=4.0, positive=["pos", 0], negative=["neg", 0],
            sampler=["euler", 0], sigmas=["sched", 0], latent_image=["empty", 0])},
        "TN Guided Sampler + TN CFG": {**common,
            "cfg": N("TN_CFG", model=["den", 0], positive=["pos", 0], negative=["neg", 0], cfg=4.0, guidance_rescale=0.0,
                     sigma_low=0.0, sigma_high=10000.0),
            "run": N("TN_GuidedSampler", guider=["cfg", 0], sampler=["euler", 0], sigmas=["sched", 0],
                     latent_image=["empty", 0], noise_seed=1, add_noise=True)},
    }
    for p in prompts.values():
        p["save"] = N("SaveLatent", samples=["run", 0], filename_prefix="tn_bench")
    times: dict[str, list[float]] = {k: [] for k in prompts}
    try:
        server.start()
        for k, p in prompts.items():  # warm-up: model load, first-call costs
            server.run(p, timeout=3600)
        for r in range(repeats):
            for k, p in prompts.items():
                p["save"]["inputs"]["filename_prefix"] = f"tn_bench_{r}"  # defeat the execution cache
                p["run"]["inputs"]["noise_seed" if "noise_seed" in p["run"]["inputs"] else "seed"] = 100 + r
                t = time.perf_counter()
                server.run(p, timeout=3600)
                times[k].append(time.perf_counter() - t)
    finally:
        server.cleanup()
        (den_dir / name).unlink(missing_ok=True)
    core = statistics.median(times["core KSampler"])
    print(f"\n## Sampling overhead vs core KSampler (DiT-{model}/2 random weights, 256 px, batch 1, cfg 4, {steps} euler steps, "
          f"median of {repeats})\n{machine()}\n")
    print("| path | median s | ratio vs core KSampler |\n|---|---|---|")
    for k, ts in times.items():
        print(f"| {k} | {statistics.median(ts):.3f} | {statistics.median(ts) / core:.3f} |")


def dit_speed(batches: list[int], steps: int) -> None:
    from models.denoiser import DenoiserInfo, DenoiserNet
    from models.dit import DIT_PRESETS, DiT, DiTConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = DiT(DiTConfig(input_size=32, in_channels=4, **DIT_PRESETS["DiT-XL/2"])).to(device).eval().requires_grad_(False)
    for p in net.parameters():  # non-zero outputs, like a trained model
        p.data.normal_(0, 0.02)
    info = DenoiserInfo(family="dit", prediction="eps", num_classes=1000, null_class=1000, latent_channels=4, latent_size=32)
    den = DenoiserNet(net, info)
    print(f"\n## DiT-XL/2 (675M parameters, random weights), 256 px, fp32, one sampling step = cond + uncond evaluations\n{machine()}\n")
    print("| batch | s / step | s / image / step |\n|---|---|---|")
    with torch.inference_mode():
        for b in batches:
            x = torch.randn(2 * b, 4, 32, 32, device=device)
            t = torch.full((2 * b,), 500.0, device=device)
            y = torch.cat([torch.full((b,), 207), torch.full((b,), 1000)]).to(device)
            den(x, t, y)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                den(x, t, y)
            if device == "cuda":
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / steps
            print(f"| {b} | {dt:.2f} | {dt / b:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["all", "overhead", "dit"], default="all")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps for the overhead part")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", choices=["S", "B"], default="S", help="DiT size for the overhead part")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--dit-steps", type=int, default=2, help="timed steps per batch size for DiT-XL/2")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.part in ("all", "overhead"):
        overhead(args.steps, args.repeats, args.model)
    if args.part in ("all", "dit"):
        dit_speed(args.batches, args.dit_steps)


if __name__ == "__main__":
    main()
