"""Quality benchmark for the bundled demo denoisers: judge accuracy and KID of class-conditional samples.

python -m benchmarks.quality [--samples 200] [--model dit|sit|all] [--steps 50] [--cfg 4.0] [--dit-sampler ddpm]
Defaults are the nodes' defaults (TN_NoiseSchedule ddpm_linear, 50 steps; TN_DiffusionSampler ddpm; TN_CFG 4):
DiT with DDPM ancestral sampling on 50 "simple"-spaced ddpm_linear sigmas, SiT with flow Euler on 50 linear flow
sigmas (shift 1, as its example workflow), both at CFG 4. Samples are decoded with the bundled autoencoder and
scored by the bundled judge (top-1 accuracy against the requested class, overall and per class) and by KID on the
judge's features against the same number of real glyphs (Binkowski et al. 2018).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from demo.glyphs import CLASS_NAMES, make_batch
from models.autoencoder import GlyphAutoencoder
from models.denoiser import DenoiserNet, load_denoiser
from models.judge import GlyphJudge, judge_accuracy, kid
from samplers.diffusion import sample_ddim, sample_ddpm, sample_flow_euler
from samplers.guidance import guided_denoise
from samplers.schedules import discrete_sigmas, flow_sigmas, get_sigmas
from training.common import chroma_ratio

WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
REAL_SEED = 2_000_000_011  # real reference glyphs for KID; never used in training


def k_denoiser(net: DenoiserNet, y: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """k-diffusion view D(x, sigma) of a DenoiserNet for class labels y [B] (None = unconditional).

    eps models (VE state x = x0 + sigma*eps): input x / sqrt(1 + sigma^2), DDPM timestep = nearest entry of the
    ddpm_linear sigma table in log sigma (as ComfyUI's ModelSamplingDiscrete), D = x - sigma*eps.
    Flow models (CONST state x = (1-sigma) x0 + sigma eps): timestep = 1000*sigma, output eps - x0, D = x - sigma*out.
    """
    flow = net.info.prediction == "sit_velocity"
    log_table = discrete_sigmas(net.info.beta_schedule).log()

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        if flow:
            out = net(x, s * 1000.0, y)
        else:
            t = (s.clamp_min(1e-10).log()[:, None] - log_table[None]).abs().argmin(1).float()
            out = net(x / (1 + s[:, None, None, None] ** 2).sqrt(), t, y)
        return x - s[:, None, None, None] * out

    return model


@torch.no_grad()
def generate(net: DenoiserNet, labels: torch.Tensor, steps: int = 50, cfg: float = 4.0, seed: int = 0,
             batch_size: int = 100, eps_sampler: str = "ddpm") -> torch.Tensor:
    """Class-conditional latents [N,C,h,w] (scaled, model space) for labels [N] with the default sampler of the family.

    eps_sampler: "ddpm" (ancestral, exact posterior; TN_DiffusionSampler's default) or "ddim" (eta 0) for DiT.
    """
    if eps_sampler not in ("ddpm", "ddim"):
        raise ValueError(f"eps_sampler must be 'ddpm' or 'ddim', got {eps_sampler!r}")
    flow = net.info.prediction == "sit_velocity"
    sigmas = flow_sigmas(steps, shift=1.0) if flow else get_sigmas(net.info.beta_schedule, steps)
    c, s = net.info.latent_channels, net.info.latent_size
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(labels.shape[0], c, s, s, generator=gen)
    out = []
    for i in range(0, labels.shape[0], batch_size):
        y = labels[i:i + batch_size]
        cond, uncond = k_denoiser(net, y), k_denoiser(net, None)
        model = lambda x, sigma: guided_denoise(x, sigma, cond, uncond, cfg)  # noqa: E731
        if flow:
            out.append(sample_flow_euler(model, noise[i:i + batch_size] * float(sigmas[0]), sigmas, disable=True))
        else:  # VP prior N(0, 1) seen in the VE state: std sqrt(1 + sigma_max^2), as ComfyUI's max_denoise
            x = noise[i:i + batch_size] * math.sqrt(1 + float(sigmas[0]) ** 2)
            if eps_sampler == "ddim":
                out.append(sample_ddim(model, x, sigmas, eta=0.0, disable=True))
            else:  # ancestral noise continues the seeded CPU stream
                out.append(sample_ddpm(model, x, sigmas, disable=True,
                                       noise_sampler=lambda *_, x=x: torch.randn(x.shape, generator=gen)))
    return torch.cat(out)


def load_bundled_ae(path: str = os.path.join(WEIGHTS, "tn_glyph_ae.safetensors")) -> tuple[GlyphAutoencoder, float]:
    """The bundled autoencoder and its latent scale factor."""
    with safe_open(path, "pt") as f:
        scale = float(f.metadata()["scale_factor"])
    return GlyphAutoencoder.from_state_dict(load_file(path)), scale


def load_bundled_judge(path: str = os.path.join(WEIGHTS, "tn_glyph_judge.safetensors")) -> GlyphJudge:
    return GlyphJudge.from_state_dict(load_file(path))


@torch.no_grad()
def score(images: torch.Tensor, labels: torch.Tensor, judge: GlyphJudge, real: torch.Tensor) -> dict[str, object]:
    """Judge accuracy (overall, per class), KID vs real images and colour kept (chroma spread over the real images';
    1 = as colourful as real glyphs, 0 = greyscale), for images [N,3,32,32] in [0,1] with intended labels [N]."""
    preds = judge(images).argmax(-1)
    per_class = {CLASS_NAMES[k]: round((preds[labels == k] == k).float().mean().item(), 3)
                 for k in range(len(CLASS_NAMES)) if (labels == k).any()}
    return {"judge_accuracy": judge_accuracy(judge, images, labels), "per_class": per_class,
            "kid": kid(judge.features(images), judge.features(real)), "chroma_ratio": chroma_ratio(images, real)}


@torch.no_grad()
def evaluate_denoiser(net: DenoiserNet, ae: GlyphAutoencoder, scale: float, judge: GlyphJudge, samples: int,
                      steps: int = 50, cfg: float = 4.0, seed: int = 0, eps_sampler: str = "ddpm") -> dict[str, object]:
    """Generate `samples` class-balanced glyphs and score them."""
    labels = torch.arange(samples) % len(CLASS_NAMES)
    t0 = time.time()
    latents = generate(net, labels, steps=steps, cfg=cfg, seed=seed, eps_sampler=eps_sampler)
    images = torch.cat([ae.decode(latents[i:i + 500] / scale) for i in range(0, samples, 500)])
    seconds = time.time() - t0
    real, _ = make_batch(samples, REAL_SEED)
    return {**score(images, labels, judge, real), "seconds": round(seconds, 1), "images": images}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--model", choices=["dit", "sit", "all"], default="all")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--dit-sampler", choices=["ddpm", "ddim"], default="ddpm", help="DiT's sampler (ddim: eta 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", default="", help="save a PNG grid of the first 100 samples per model to this prefix")
    p.add_argument("--weights-dir", default=WEIGHTS, help="folder holding tn_glyph_{ae,judge,dit,sit}.safetensors")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    ae, scale = load_bundled_ae(os.path.join(args.weights_dir, "tn_glyph_ae.safetensors"))
    judge = load_bundled_judge(os.path.join(args.weights_dir, "tn_glyph_judge.safetensors"))
    real, real_labels = make_batch(args.samples, REAL_SEED)
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"reference: judge accuracy on {args.samples} real glyphs {judge_accuracy(judge, real, real_labels):.3f}, "
          f"KID real vs other real {kid(judge.features(real), judge.features(make_batch(args.samples, REAL_SEED + 1)[0])):.5f}")
    results = {}
    for family in (["dit", "sit"] if args.model == "all" else [args.model]):
        net = load_denoiser(os.path.join(args.weights_dir, f"tn_glyph_{family}.safetensors"))
        r = evaluate_denoiser(net, ae, scale, judge, args.samples, steps=args.steps, cfg=args.cfg, seed=args.seed,
                              eps_sampler=args.dit_sampler)
        images = r.pop("images")
        if args.grid:
            from PIL import Image
            n = min(100, images.shape[0]) // 10 * 10
            grid = images[:n].reshape(n // 10, 10, 3, 32, 32).permute(0, 3, 1, 4, 2).reshape(n // 10 * 32, 320, 3)
            Image.fromarray((grid * 255).round().byte().numpy()).save(f"{args.grid}_{family}.png")
        sampler = "flow_euler, flow_sigmas(shift=1)" if family == "sit" else \
            ("ddim eta=0" if args.dit_sampler == "ddim" else "ddpm ancestral") + ", ddpm_linear simple"
        print(f"{family}: {args.samples} samples, {sampler}, {args.steps} steps, cfg {args.cfg}: "
              f"judge accuracy {r['judge_accuracy']:.3f}, KID {r['kid']:.5f}, "
              f"chroma {r['chroma_ratio']:.2f}, {r['seconds']}s")
        print(f"  per class: {json.dumps(r['per_class'])}")
        results[family] = r
    return results


if __name__ == "__main__":
    main()
