"""VAR scale-wise decoding speed: our generate_var (+ decode) vs (optionally) the official autoregressive_infer_cfg.

Random weights in the official layout at a released size (d16 ... d30 at 256 px, d36 with shared AdaLN at
512 px) or a small `tiny` model for CPU; reports seconds per batch, images/s and peak GPU memory. With
--official-dir pointing at a FoundationVision/VAR checkout, the official loop runs on the same state dicts
(fp32 parameters, under torch.autocast when --dtype is not float32, as its demo does) and, for greedy
decoding (--top-k 1), the tokens and images are compared.

    python -m benchmarks.ar_speed_var --preset d16 --batch 8 --dtype bfloat16 --device cuda
    python -m benchmarks.ar_speed_var --preset tiny --device cpu --official-dir PATH/TO/VAR-checkout
"""
import argparse
import contextlib
import importlib
import math
import sys

import torch

from benchmarks.timing import print_comparison, time_alternating
from models.var import VAR, VARConfig
from samplers.var import generate_var
from tokenizers.var_vqvae import PATCH_NUMS, VARVQVAE, VQVAEConfig

PRESETS = {"tiny": (4, 256), **{f"d{d}": (d, 64 * d) for d in (16, 20, 24, 30, 36)}}  # depth, width


def _randomize(model: torch.nn.Module) -> None:
    """Scaled Gaussian weights (kept sane through depth); buffers keep their constructed values."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            scale = 1 / math.sqrt(math.prod(p.shape[1:])) if p.ndim >= 2 else 0.1
            p.copy_(torch.randn_like(p) * scale)


def _build(args) -> tuple[VARVQVAE, VAR]:
    depth, width = PRESETS[args.preset]
    pns = PATCH_NUMS[512 if args.preset == "d36" else 256]
    vae = VARVQVAE(VQVAEConfig(ch=args.vae_ch))
    var = VAR(VARConfig(depth=depth, embed_dim=width, num_heads=width // 64, mlp_hidden=4 * width,
                        patch_nums=pns, shared_aln=args.preset == "d36"))
    _randomize(vae)
    _randomize(var)
    return vae.eval(), var.eval()


def _import_official(path: str):
    """The official `models` package, imported without clobbering ours (both are called `models`)."""
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "models" or k.startswith("models.")}
    sys.path.insert(0, path)
    try:
        pkg = importlib.import_module("models")
        var_mod = importlib.import_module("models.var")
    finally:
        for k in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
            sys.modules.pop(k)
        sys.path.remove(path)
        sys.modules.update(ours)
    return pkg, var_mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="d16", choices=list(PRESETS))
    ap.add_argument("--vae-ch", type=int, default=160, help="VQVAE base channels (160 in the released VAE)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cfg", type=float, default=1.5)
    ap.add_argument("--top-k", type=int, default=1, help="1 = greedy, so the official tokens can be compared")
    ap.add_argument("--top-p", type=float, default=0.0)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds, ours and official alternating")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the untimed first call of each (for minutes-long CPU runs)")
    ap.add_argument("--official-dir", default=None, help="a FoundationVision/VAR checkout to compare against")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_grad_enabled(False)
    vae, var = _build(args)
    sd_vae, sd_var = vae.state_dict(), var.state_dict()
    vae.to(device)  # the VAE stays fp32: f_hat and the codebook are fp32 in the official code too
    var.to(device=device, dtype=dtype)
    classes = torch.arange(args.batch, device=device) * 7 % var.num_classes

    def ours():
        out = generate_var(var, vae, classes, cfg_scale=args.cfg, top_k=args.top_k, top_p=args.top_p,
                           generator=torch.Generator().manual_seed(0))
        return out.tokens, vae.decode_fhat(out.f_hat)

    fns = {"ours": ours}
    c = var.cfg
    if args.official_dir:
        pkg, var_mod = _import_official(args.official_dir)
        off_vae = pkg.VQVAE(vocab_size=c.vocab_size, z_channels=c.Cvae, ch=args.vae_ch, test_mode=True,
                            share_quant_resi=4, v_patch_nums=var.patch_nums)
        off_var = pkg.VAR(vae_local=off_vae, num_classes=c.num_classes, depth=c.depth, embed_dim=c.embed_dim,
                          num_heads=c.num_heads, norm_eps=1e-6, shared_aln=c.shared_aln, cond_drop_rate=0.0,
                          attn_l2_norm=True, patch_nums=var.patch_nums)
        off_vae.load_state_dict(sd_vae, strict=True)
        off_var.load_state_dict(sd_var, strict=True)
        off_vae, off_var = off_vae.to(device).eval(), off_var.to(device).eval()
        recorded = []
        sample = var_mod.sample_with_top_k_top_p_

        def record(logits, **kw):
            idx = sample(logits, **kw)
            recorded.append(idx[:, :, 0])
            return idx
        var_mod.sample_with_top_k_top_p_ = record

        def official():
            recorded.clear()
            amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
            with amp:
                img = off_var.autoregressive_infer_cfg(B=args.batch, label_B=classes, g_seed=0, cfg=args.cfg,
                                                       top_k=args.top_k, top_p=args.top_p)
            return list(recorded), img.float() * 2 - 1

        fns["official"] = official

    t = time_alternating(fns, device, args.repeats, warmup=args.warmup)
    print(f"VAR {args.preset}: width {c.embed_dim} x {c.depth} blocks, {var.L} tokens ({len(var.patch_nums)} scales), "
          f"batch {args.batch}, cfg {args.cfg}, {args.dtype} on {device}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} alternating runs")

    print_comparison(t, args.batch, "images", note="incl. decode; ")
    if "official" in t and args.top_k == 1:
        (ours_tokens, ours_img), (off_tokens, off_img) = t["ours"].out, t["official"].out
        same = torch.cat([(a.flatten(1) == b).float().flatten() for a, b in zip(ours_tokens, off_tokens)]).mean()
        print(f"greedy tokens identical: {same.item() * 100:.2f}%, "
              f"image max |diff| {(ours_img - off_img).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
