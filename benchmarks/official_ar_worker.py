"""The authors' side of benchmarks/node_path_ar.py: load a VAR or LlamaGen checkpoint with the official code, then
generate, decode and save PNG grids on request, timing each one inside this process.

Started by the driver as a script (not `-m`, so the official `models` / `utils` packages are not shadowed by ours),
with an official checkout on sys.path; nothing from this repository is imported. Loading and sampling follow the
authors' scripts line for line: FoundationVision/VAR demo_sample.ipynb (build_vae_var, both bare state dicts,
autoregressive_infer_cfg, make_grid + PIL) and FoundationVision/LlamaGen autoregressive/sample/sample_c2i.py
(VQ_models / GPT_models, the "model" entry of each checkpoint, generate, decode_code, save_image). fp32 on the CPU.

Protocol: one JSON line per request on stdin, one JSON line per answer on stdout (the first answer, unasked, says
the models are ready). Request: {"classes": [int], "seed", "out": PNG path, and the sampling settings (VAR: cfg,
top_k, top_p, more_smooth; LlamaGen: cfg, cfg_interval, temperature, top_k, top_p)}; answer: {"seconds": generate +
decode + save, "out"} or {"error": traceback}.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback
from pathlib import Path


def _protocol_stdout():
    """A private line-buffered handle on the real stdout; everything printed (by us or the official code) goes to
    stderr, so stray prints never corrupt the protocol."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def _load_checkpoint(path):
    """torch.load as the authors' scripts call it, but never running pickled code: tensors plus the argparse.Namespace
    that LlamaGen training checkpoints carry (the authors' torch 2.1 unpickled anything by default)."""
    import argparse

    import torch
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_var(args):
    """VAR demo_sample.ipynb, cell 1: build_vae_var with the hard-coded VQVAE hyper-parameters, strict loads."""
    import torch
    setattr(torch.nn.Linear, "reset_parameters", lambda self: None)
    setattr(torch.nn.LayerNorm, "reset_parameters", lambda self: None)
    from models import build_vae_var

    patch_nums = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    vae, var = build_vae_var(V=4096, Cvae=32, ch=args.vae_ch, share_quant_resi=4, device=args.device,
                             patch_nums=patch_nums, num_classes=1000, depth=args.depth, shared_aln=False)
    vae.load_state_dict(_load_checkpoint(args.vae_ckpt), strict=True)
    var.load_state_dict(_load_checkpoint(args.var_ckpt), strict=True)
    vae.eval(), var.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    for p in var.parameters():
        p.requires_grad_(False)
    # cell 2: "run faster" (tf32; a no-op for these CPU kernels unless the CPU has reduced-precision fp32 paths)
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    return var


def sample_var(var, req, device):
    """VAR demo_sample.ipynb, cell 2 (seeding, inference_mode, autocast that is off on the CPU), saved as a PNG."""
    import numpy as np
    import PIL.Image as PImage
    import torch
    import torchvision

    seed = req["seed"]
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    label_B = torch.tensor(req["classes"], device=device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        with torch.autocast("cuda", enabled=device == "cuda", dtype=torch.float16, cache_enabled=True):
            recon_B3HW = var.autoregressive_infer_cfg(B=len(req["classes"]), label_B=label_B, cfg=req["cfg"],
                                                      top_k=req["top_k"], top_p=req["top_p"], g_seed=seed,
                                                      more_smooth=req["more_smooth"])
    chw = torchvision.utils.make_grid(recon_B3HW, nrow=8, padding=0, pad_value=1.0)
    # the demo's mul_, out of place: a batch of 1 comes back from make_grid as the (inference-mode) image itself
    chw = chw.permute(1, 2, 0).mul(255).cpu().numpy()
    PImage.fromarray(chw.astype(np.uint8)).save(req["out"])  # the demo's chw.show(), to a file
    return time.perf_counter() - t0


def load_llamagen(args):
    """LlamaGen sample_c2i.py main(): the tokenizer, then the GPT from the checkpoint's "model" entry."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    setattr(torch.nn.Linear, "reset_parameters", lambda self: None)
    setattr(torch.nn.LayerNorm, "reset_parameters", lambda self: None)
    from autoregressive.models.gpt import GPT_models, ModelArgs, Transformer
    from tokenizer.tokenizer_image import vq_model as vq_lib

    torch.set_grad_enabled(False)
    if args.vq_ch_mult:  # the tiny preset: built as VQ_models builds VQ-16, with other channel multipliers
        mult = [int(m) for m in args.vq_ch_mult.split(",")]
        vq_model = vq_lib.VQModel(vq_lib.ModelArgs(codebook_size=args.codebook_size,
                                                   codebook_embed_dim=args.codebook_embed_dim,
                                                   encoder_ch_mult=mult, decoder_ch_mult=mult))
    else:
        vq_model = vq_lib.VQ_models[args.vq_model](codebook_size=args.codebook_size,
                                                   codebook_embed_dim=args.codebook_embed_dim)
    vq_model.to(args.device)
    vq_model.eval()
    checkpoint = _load_checkpoint(args.vq_ckpt)
    vq_model.load_state_dict(checkpoint["model"])
    del checkpoint

    latent_size = args.image_size // args.downsample_size
    kw = dict(vocab_size=args.codebook_size, block_size=latent_size**2, num_classes=args.num_classes,
              cls_token_num=args.cls_token_num, model_type="c2i")
    if args.gpt_dims:  # the tiny preset: not in GPT_models, built as GPT_models builds its presets
        n_layer, n_head, dim = (int(v) for v in args.gpt_dims.split(","))
        gpt_model = Transformer(ModelArgs(n_layer=n_layer, n_head=n_head, dim=dim, **kw))
    else:
        gpt_model = GPT_models[args.gpt_model](**kw)
    gpt_model = gpt_model.to(device=args.device, dtype=torch.float32)
    checkpoint = _load_checkpoint(args.gpt_ckpt)
    gpt_model.load_state_dict(checkpoint["model"], strict=False)
    gpt_model.eval()
    del checkpoint
    return vq_model, gpt_model, latent_size


def sample_llamagen(models, req, device, codebook_embed_dim):
    """LlamaGen sample_c2i.py main() from the labels on: generate, decode_code, save_image (grid of 4 per row)."""
    import torch
    from autoregressive.models.generate import generate
    from torchvision.utils import save_image

    vq_model, gpt_model, latent_size = models
    torch.manual_seed(req["seed"])
    c_indices = torch.tensor(req["classes"], device=device)
    qzshape = [len(req["classes"]), codebook_embed_dim, latent_size, latent_size]
    t0 = time.perf_counter()
    index_sample = generate(gpt_model, c_indices, latent_size**2, cfg_scale=req["cfg"],
                            cfg_interval=req["cfg_interval"], temperature=req["temperature"], top_k=req["top_k"],
                            top_p=req["top_p"], sample_logits=True)
    samples = vq_model.decode_code(index_sample, qzshape)  # output value is between [-1, 1]
    save_image(samples, req["out"], nrow=4, normalize=True, value_range=(-1, 1))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-dir", required=True, help="a FoundationVision/VAR or /LlamaGen checkout")
    ap.add_argument("--family", required=True, choices=["var", "llamagen"])
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch default)")
    ap.add_argument("--device", default="cpu")
    # VAR (demo_sample.ipynb's MODEL_DEPTH and checkpoint names)
    ap.add_argument("--var-ckpt")
    ap.add_argument("--vae-ckpt")
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--vae-ch", type=int, default=160)
    # LlamaGen (sample_c2i.py's arguments)
    ap.add_argument("--gpt-ckpt")
    ap.add_argument("--vq-ckpt")
    ap.add_argument("--gpt-model", default="GPT-B")
    ap.add_argument("--gpt-dims", default="", help="n_layer,n_head,dim for a model outside GPT_models")
    ap.add_argument("--vq-model", default="VQ-16")
    ap.add_argument("--vq-ch-mult", default="", help="encoder/decoder channel multipliers (default: VQ-16's)")
    ap.add_argument("--codebook-size", type=int, default=16384)
    ap.add_argument("--codebook-embed-dim", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--downsample-size", type=int, default=16)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--cls-token-num", type=int, default=1)
    args = ap.parse_args()

    proto = _protocol_stdout()
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, str(Path(args.official_dir).resolve()))
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.family == "var":
        var = load_var(args)

        def run(req):
            return sample_var(var, req, args.device)
    else:
        models = load_llamagen(args)

        def run(req):
            return sample_llamagen(models, req, args.device, args.codebook_embed_dim)

    proto.write(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req.get("quit"):
            break
        try:
            answer = {"seconds": run(req), "out": req["out"]}
        except Exception:  # noqa: BLE001 - reported to the driver, which stops the benchmark
            answer = {"error": traceback.format_exc()}
        proto.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
