"""Quality benchmark for the bundled autoregressive demo models: judge accuracy and KID of class-conditional samples.

python -m benchmarks.quality_ar [--model llamagen|var|all] [--samples 200] [--seed 0]
Each family draws `samples` class-balanced glyphs (samples / 10 per class) at its default sampling settings,
decodes them with its bundled tokenizer and scores them with the bundled judge (top-1 accuracy against the
requested class, overall and per class) and by KID on the judge's features against as many real glyphs
(Binkowski et al. 2018), as benchmarks/quality.py does for the denoisers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from safetensors import safe_open

from benchmarks.quality import REAL_SEED, WEIGHTS, load_bundled_judge, score
from demo.glyphs import CLASS_NAMES, make_batch
from models.families import load_tokenizer, load_transformer
from models.llamagen_gpt import LlamaGenGPT
from models.var import VAR
from samplers.ar import generate_raster
from samplers.var import generate_var
from tokenizers.llamagen_vq import LlamaGenVQ
from tokenizers.var_vqvae import VARVQVAE


def var_defaults(path: str = os.path.join(WEIGHTS, "tn_glyph_var.safetensors")) -> dict[str, object]:
    """The default sampling settings stored in the bundled VAR file's metadata."""
    with safe_open(path, "pt") as f:
        return json.loads(f.metadata()["default_sampling"])


def load_bundled_var(path: str = os.path.join(WEIGHTS, "tn_glyph_var.safetensors")) -> tuple[VAR, VARVQVAE]:
    """The bundled VAR and the multi-scale VQ-VAE its metadata names (next to it), as the node loaders load them."""
    var = load_transformer(path)
    return var.net, load_tokenizer(os.path.join(os.path.dirname(path), var.meta["tokenizer"])).net


@torch.no_grad()
def eval_var(args: argparse.Namespace) -> dict[str, object]:
    """Sample args.samples glyphs from the bundled VAR (default settings unless overridden) and score them."""
    path = os.path.join(args.weights_dir, "tn_glyph_var.safetensors")
    var, vq = load_bundled_var(path)
    judge = load_bundled_judge(os.path.join(args.weights_dir, "tn_glyph_judge.safetensors"))
    settings = var_defaults(path)
    for k, v in (("cfg_scale", args.var_cfg), ("top_k", args.var_top_k), ("top_p", args.var_top_p)):
        if v is not None:
            settings[k] = v
    if args.var_more_smooth:
        settings["more_smooth"] = True
    labels = torch.arange(args.samples) % len(CLASS_NAMES)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    images = []
    for i in range(0, args.samples, 100):
        res = generate_var(var, vq, labels[i:i + 100], generator=g, **settings)
        images.append((vq.decode_fhat(res.f_hat) + 1) / 2)
    images = torch.cat(images)
    seconds = time.time() - t0
    real, _ = make_batch(args.samples, REAL_SEED)
    r = {**score(images, labels, judge, real), "seconds": round(seconds, 1), "settings": settings}
    print(f"var: {args.samples} samples, {json.dumps(settings)}: judge accuracy {r['judge_accuracy']:.3f}, "
          f"KID {r['kid']:.5f}, chroma {r['chroma_ratio']:.2f}, {r['seconds']}s ({args.samples / seconds:.1f} samples/s)")
    print(f"  per class: {json.dumps(r['per_class'])}")
    if args.grid:
        from PIL import Image
        n = min(100, images.shape[0]) // 10 * 10
        grid = images[:n].reshape(n // 10, 10, 3, 32, 32).permute(0, 3, 1, 4, 2).reshape(n // 10 * 32, 320, 3)
        Image.fromarray((grid * 255).round().byte().numpy()).save(f"{args.grid}_var.png")
    return r


def llamagen_defaults(path: str = os.path.join(WEIGHTS, "tn_glyph_gpt.safetensors")) -> dict[str, object]:
    """The default sampling settings stored in the bundled LlamaGen GPT file's metadata (default_* entries)."""
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    return {"cfg_scale": float(meta["default_cfg_scale"]), "temperature": float(meta["default_temperature"]),
            "top_k": int(meta["default_top_k"]), "top_p": float(meta["default_top_p"])}


def load_bundled_llamagen(path: str = os.path.join(WEIGHTS, "tn_glyph_gpt.safetensors")) -> tuple[LlamaGenGPT, LlamaGenVQ]:
    """The bundled GPT (n_head / block_size from its metadata) and its VQ tokenizer, as the node loaders load them."""
    gpt = load_transformer(path)
    return gpt.net, load_tokenizer(os.path.join(os.path.dirname(path), gpt.meta["tokenizer"])).net


@torch.no_grad()
def eval_llamagen(args: argparse.Namespace) -> dict[str, object]:
    """Sample args.samples glyphs from the bundled LlamaGen GPT (default settings unless overridden), decode, score."""
    path = os.path.join(args.weights_dir, "tn_glyph_gpt.safetensors")
    gpt, vq = load_bundled_llamagen(path)
    judge = load_bundled_judge(os.path.join(args.weights_dir, "tn_glyph_judge.safetensors"))
    settings = llamagen_defaults(path)
    for k, v in (("cfg_scale", args.llamagen_cfg), ("temperature", args.llamagen_temperature),
                 ("top_k", args.llamagen_top_k), ("top_p", args.llamagen_top_p)):
        if v is not None:
            settings[k] = v
    labels = torch.arange(args.samples) % len(CLASS_NAMES)
    g = torch.Generator().manual_seed(args.seed)
    side = int(gpt.config.block_size ** 0.5)
    t0 = time.time()
    images = []
    for i in range(0, args.samples, 100):
        tokens = generate_raster(gpt, labels[i:i + 100], gpt.config.block_size, generator=g, **settings)
        images.append(((vq.decode_indices(tokens.view(-1, side, side)) + 1) / 2).clamp(0, 1))
    images = torch.cat(images)
    seconds = time.time() - t0
    real, _ = make_batch(args.samples, REAL_SEED)
    r = {**score(images, labels, judge, real), "seconds": round(seconds, 1), "settings": settings}
    print(f"llamagen: {args.samples} samples, {json.dumps(settings)}: judge accuracy {r['judge_accuracy']:.3f}, "
          f"KID {r['kid']:.5f}, chroma {r['chroma_ratio']:.2f}, {r['seconds']}s ({args.samples / seconds:.1f} samples/s)")
    print(f"  per class: {json.dumps(r['per_class'])}")
    if args.grid:
        from PIL import Image
        n = min(100, images.shape[0]) // 10 * 10
        grid = images[:n].reshape(n // 10, 10, 3, 32, 32).permute(0, 3, 1, 4, 2).reshape(n // 10 * 32, 320, 3)
        Image.fromarray((grid * 255).round().byte().numpy()).save(f"{args.grid}_llamagen.png")
    return r


EVALUATORS = {"llamagen": eval_llamagen, "var": eval_var}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["llamagen", "var", "all"], default="all")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", default="", help="save a PNG grid of the first 100 samples per model to this prefix")
    p.add_argument("--llamagen-cfg", type=float, default=None, help="override the bundled LlamaGen default cfg_scale")
    p.add_argument("--llamagen-temperature", type=float, default=None)
    p.add_argument("--llamagen-top-k", type=int, default=None)
    p.add_argument("--llamagen-top-p", type=float, default=None)
    p.add_argument("--var-cfg", type=float, default=None, help="override the bundled VAR default cfg_scale")
    p.add_argument("--var-top-k", type=int, default=None)
    p.add_argument("--var-top-p", type=float, default=None)
    p.add_argument("--var-more-smooth", action="store_true")
    p.add_argument("--weights-dir", default=WEIGHTS, help="folder holding the models, their tokenizers and the judge")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    judge = load_bundled_judge(os.path.join(args.weights_dir, "tn_glyph_judge.safetensors"))
    real, real_labels = make_batch(args.samples, REAL_SEED)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"torch threads {torch.get_num_threads()}")
    print(f"reference: judge accuracy on {args.samples} real glyphs {score(real, real_labels, judge, real)['judge_accuracy']:.3f}, "
          f"KID real vs other real {score(real, real_labels, judge, make_batch(args.samples, REAL_SEED + 1)[0])['kid']:.5f}")
    results = {}
    wired = [f for f in ("llamagen", "var") if f in EVALUATORS]
    for family in (wired if args.model == "all" else [args.model]):
        if family not in EVALUATORS:
            raise ValueError(f"no evaluator for {family!r} yet; available: {sorted(EVALUATORS)}")
        results[family] = EVALUATORS[family](args)
    return results


if __name__ == "__main__":
    main()
