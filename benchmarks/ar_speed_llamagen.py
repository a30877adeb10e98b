"""LlamaGen raster decoding speed: our generate_raster vs (optionally) the official `generate` on the same weights.

Random weights at an official preset size (or a checkpoint via --ckpt); reports seconds per batch, tokens/s and
peak GPU memory. With --official-dir pointing at a FoundationVision/LlamaGen checkout, the official loop runs on
the same state dict and the greedy tokens are compared.

    python -m benchmarks.ar_speed_llamagen --preset GPT-B --grid 16 --batch 8 --cfg 4 --device cuda
    python -m benchmarks.ar_speed_llamagen --preset tiny --grid 8 --device cpu --official-dir PATH/TO/LlamaGen-checkout
"""
import argparse
import sys

import torch

from benchmarks.timing import print_comparison, time_alternating
from models.llamagen_gpt import (
    GPT_PRESETS,
    LlamaGenGPT,
    LlamaGenGPTConfig,
    load_llamagen_gpt,
)
from samplers.ar import generate_raster


def _build(args) -> LlamaGenGPT:
    if args.ckpt:
        gpt = load_llamagen_gpt(args.ckpt)
        gpt.set_block_size(args.grid**2)
        return gpt
    n_layer, n_head, dim = (3, 4, 128) if args.preset == "tiny" else GPT_PRESETS[args.preset]
    hidden = int(2 * 4 * dim / 3)
    hidden = -(-hidden // 256) * 256  # SwiGLU hidden: a multiple of 256, as the official FeedForward
    cfg = LlamaGenGPTConfig(dim=dim, n_layer=n_layer, n_head=n_head, n_kv_head=n_head, ffn_hidden=hidden,
                            vocab_size=args.vocab, num_classes=1000, block_size=args.grid**2)
    torch.manual_seed(0)
    gpt = LlamaGenGPT(cfg)
    for name, p in gpt.named_parameters():
        with torch.no_grad():
            p.copy_(1 + 0.1 * torch.randn_like(p) if p.ndim == 1 else torch.randn_like(p) / p.shape[1] ** 0.5)
    return gpt.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="GPT-B", choices=["tiny", *GPT_PRESETS])
    ap.add_argument("--ckpt", default=None, help="an official c2i checkpoint instead of random weights")
    ap.add_argument("--grid", type=int, default=16, help="token grid side (16 for 256 px, 24 for 384 px)")
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--top-k", type=int, default=1, help="1 = greedy, so the official tokens can be compared")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds, ours and official alternating")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    ap.add_argument("--official-dir", default=None, help="a FoundationVision/LlamaGen checkout to compare against")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_grad_enabled(False)
    gpt = _build(args).to(device=device, dtype=dtype)
    n = args.grid**2
    classes = torch.arange(args.batch, device=device) * 7 % gpt.num_classes

    def ours():
        return generate_raster(gpt, classes, n, cfg_scale=args.cfg, top_k=args.top_k,
                               generator=torch.Generator().manual_seed(0))

    fns = {"ours": ours}
    if args.official_dir:
        sys.path.insert(0, args.official_dir)
        # the official loop, imported from the checkout the user points at (never vendored here)
        from autoregressive.models.generate import generate
        from autoregressive.models.gpt import ModelArgs, Transformer

        c = gpt.config
        off = Transformer(ModelArgs(dim=c.dim, n_layer=c.n_layer, n_head=c.n_head, vocab_size=c.vocab_size,
                                    num_classes=c.num_classes, block_size=n, cls_token_num=1,
                                    token_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0))
        off.load_state_dict(gpt.state_dict(), strict=True)
        off = off.to(device=device, dtype=dtype).eval()
        fns["official"] = lambda: generate(off, classes, n, cfg_scale=args.cfg, top_k=args.top_k, sample_logits=True)

    t = time_alternating(fns, device, args.repeats)
    c = gpt.config
    print(f"{args.preset} dim {c.dim} x {c.n_layer} layers, {n} tokens, batch {args.batch}, cfg {args.cfg}, "
          f"{args.dtype} on {device}, {torch.get_num_threads()} threads, median of {args.repeats} alternating runs")

    print_comparison(t, args.batch * n, "tokens")
    if "official" in t and args.top_k == 1:
        same = (t["official"].out.long() == t["ours"].out).float().mean().item()
        print(f"greedy tokens identical: {same * 100:.2f}%")


if __name__ == "__main__":
    main()
