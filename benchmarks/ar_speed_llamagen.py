"""LlamaGen raster decoding speed: our generate_raster vs (optionally) the official `generate` on the same weights.

Random weights at an official preset size (or a checkpoint via --ckpt); reports seconds per batch, tokens/s and
peak GPU memory. With --official-dir pointing at a FoundationVision/LlamaGen checkout, the official loop runs on
the same state dict and the greedy tokens are compared. By default each image is also decoded to pixels by a
LlamaGen VQ tokenizer (random weights at the VQ-16 size of `vq_ds16_c2i.pt`; the official VQModel.decode_code for
the official side), so seconds are per finished image; the token phase alone is printed too (--no-decode skips it).

    python -m benchmarks.ar_speed_llamagen --preset GPT-B --grid 16 --batch 8 --cfg 4 --device cuda
    python -m benchmarks.ar_speed_llamagen --preset tiny --grid 8 --device cpu --official-dir PATH/TO/LlamaGen-checkout
"""
import argparse
import statistics
import sys
import time

import torch

from benchmarks.timing import print_comparison, time_alternating
from models.llamagen_gpt import (
    GPT_PRESETS,
    LlamaGenGPT,
    LlamaGenGPTConfig,
    load_llamagen_gpt,
)
from samplers.ar import generate_raster
from tokenizers.llamagen_vq import LlamaGenVQ, LlamaGenVQConfig


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


def _build_vq(vocab: int) -> LlamaGenVQ:
    """The VQ-16 tokenizer shape (ch 128, ch_mult 1,1,2,2,4, z 256, codebook vocab x 8) with random weights."""
    torch.manual_seed(1)
    vq = LlamaGenVQ(LlamaGenVQConfig(codebook_size=vocab))
    with torch.no_grad():
        for p in vq.parameters():
            p.copy_(torch.randn_like(p) / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 1 + 0.1 * torch.randn_like(p))
    return vq.eval()


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
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the untimed first call of each (for minutes-long CPU runs)")
    ap.add_argument("--official-dir", default=None, help="a FoundationVision/LlamaGen checkout to compare against")
    ap.add_argument("--no-decode", dest="decode", action="store_false", help="time the tokens only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_grad_enabled(False)
    gpt = _build(args).to(device=device, dtype=dtype)
    n = args.grid**2
    classes = torch.arange(args.batch, device=device) * 7 % gpt.num_classes
    vq = _build_vq(args.vocab).to(device) if args.decode else None  # the tokenizer stays fp32, as officially
    token_seconds: dict[str, list[float]] = {"ours": [], "official": []}

    def timed(name, make_tokens, decode):
        t0 = time.perf_counter()
        tokens = make_tokens()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        token_seconds[name].append(time.perf_counter() - t0)
        return tokens if vq is None else (tokens, decode(tokens))

    def ours():
        return timed("ours", lambda: generate_raster(gpt, classes, n, cfg_scale=args.cfg, top_k=args.top_k,
                                                     generator=torch.Generator().manual_seed(0)),
                     lambda tok: vq.decode_indices(tok.view(-1, args.grid, args.grid)))

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
        off_vq = None
        if vq is not None:
            from tokenizer.tokenizer_image.vq_model import VQ_models
            off_vq = VQ_models["VQ-16"](codebook_size=args.vocab, codebook_embed_dim=8)
            off_vq.load_state_dict(vq.state_dict(), strict=True)
            off_vq = off_vq.to(device).eval()

        def official():
            return timed("official", lambda: generate(off, classes, n, cfg_scale=args.cfg, top_k=args.top_k,
                                                      sample_logits=True),
                         lambda tok: off_vq.decode_code(tok, (tok.shape[0], 8, args.grid, args.grid)))
        fns["official"] = official

    t = time_alternating(fns, device, args.repeats, warmup=args.warmup)
    c = gpt.config
    print(f"{args.preset} dim {c.dim} x {c.n_layer} layers, {n} tokens, batch {args.batch}, cfg {args.cfg}, "
          f"{args.dtype} on {device}, {torch.get_num_threads()} threads, median of {args.repeats} alternating runs")

    if vq is not None:
        print_comparison(t, args.batch, "images", note="incl. decode; ")
        skip = 1 if args.warmup else 0  # the untimed warm-up call
        tok = {k: statistics.median(v[skip:]) for k, v in token_seconds.items() if v}
        ratio = f" (ours x{tok['official'] / tok['ours']:.2f} faster)" if "official" in tok else ""
        print(f"tokens only: ours {tok['ours']:.3f} s" + (f", official {tok['official']:.3f} s" if ratio else "")
              + f", {args.batch * n / tok['ours']:.1f} tokens/s{ratio}")
    else:
        print_comparison(t, args.batch * n, "tokens")
    if "official" in t and args.top_k == 1:
        (ours_tok, ours_img), (off_tok, off_img) = ((r, None) if vq is None else r
                                                    for r in (t["ours"].out, t["official"].out))
        same = (off_tok.long() == ours_tok).float().mean().item()
        diff = "" if vq is None else f", image max |diff| {(ours_img - off_img).abs().max().item():.2e}"
        print(f"greedy tokens identical: {same * 100:.2f}%{diff}")


if __name__ == "__main__":
    main()
