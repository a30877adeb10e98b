"""Train the demo multi-scale residual VQ-VAE of VAR (32x32 glyphs -> token maps 1,2,3,4,6,8) in the official key layout.

python -m training.train_var_vqvae [--steps 900] [--max-minutes 20] [--out weights/tn_glyph_msvq.safetensors]
The quantizer is trained as VAR's VectorQuantizer2 (Tian et al. 2024, arXiv:2404.02905, Algorithm 1): the encoder
output f is quantized scale by scale on the detached residual (area-downsample -> nearest code -> bicubic-upsample
-> phi), the running sum f_hat keeps gradients to the codebook and phi convs, and at every scale the loss adds the
codebook term ||f_hat - sg(f)||^2 and the commitment term beta ||sg(f_hat) - f||^2 (beta 0.25), averaged over
scales (van den Oord et al. 2017). The decoder sees f + sg(f_hat - f) (straight-through). Reconstruction loss:
L1 + MSE on pixels in [-1,1], plus an optional small feature-matching loss on the glyph judge's penultimate
features (a stand-in for VAR's LPIPS term), plus an MSE on chroma (pixels minus their R,G,B mean, weight 4) that,
with base width 64, keeps the glyphs' hue (width 32 lost most of it). Codes unused for `--dead-every` steps are
re-initialised to random residual vectors of the current batch, so the 512-entry codebook stays in use.
"""
from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from demo.glyphs import CLASS_NAMES, IMAGE_SIZE, make_batch
from models.judge import GlyphJudge, judge_accuracy
from tokenizers.var_vqvae import VARVQVAE, VQVAEConfig
from training.common import HELDOUT_SEED, Clock, args_json, chroma, chroma_ratio, lr_at, save_fp16

PATCH_NUMS = (1, 2, 3, 4, 6, 8)
TRAIN_SEED = 30_000_000


def schedule_step(step: int, total: int, seconds: float, max_minutes: float) -> int:
    """Position in the LR schedule: the step, or further along if the wall-time cap will end training first, so a
    slow machine still finishes with a fully decayed learning rate (a fast one is step-for-step reproducible)."""
    return max(step, int(total * seconds / (60 * max_minutes))) if step >= 100 else step


def make_config(vocab: int, cvae: int, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int) -> VQVAEConfig:
    """The demo VQVAE config: official layout (attention at the lowest level and in the middle, 3x3 quant convs,
    4 partially shared phi convs with quant_resi 0.5, the usage buffer sized by the number of scales)."""
    return VQVAEConfig(vocab_size=vocab, z_channels=cvae, ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                       using_sa=True, using_mid_sa=True, quant_conv_ks=3, quant_resi=0.5, phi_layout="partial",
                       num_phi=4, ema_scales=len(PATCH_NUMS))


def msvq_forward(vq: VARVQVAE, f: torch.Tensor, patch_nums: tuple[int, ...], beta: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Differentiable multi-scale residual quantization of encoder features f [B,Cvae,h,w].

    Returns (straight-through f_hat [B,Cvae,h,w], VQ loss (scalar), code hits [V], per-scale residual vectors
    [N_k,Cvae] that were quantized, for dead-code re-initialisation).
    """
    B, C = f.shape[:2]
    f_ng = f.detach()
    f_rest = f_ng.clone()
    f_hat = torch.zeros_like(f)
    hits = torch.zeros(vq.vocab_size)
    loss, rests = f.new_zeros(()), []
    K = len(patch_nums)
    for si, pn in enumerate(patch_nums):
        with torch.no_grad():
            z = f_rest if si == K - 1 else F.interpolate(f_rest, size=(pn, pn), mode="area")
            z_NC = z.permute(0, 2, 3, 1).reshape(-1, C)
            idx = vq.nearest_code(z_NC)
            hits += idx.bincount(minlength=vq.vocab_size).float()
            rests.append(z_NC)
        h = vq.upsample_phi(vq.embed(idx.view(B, pn, pn)), si, patch_nums)  # grads to codebook and phi
        f_hat = f_hat + h
        f_rest = f_rest - h.detach()
        loss = loss + beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_ng)
    return f_ng + (f_hat - f_ng).detach() + (f - f_ng), loss / K, hits, rests


@torch.no_grad()
def reinit_dead_codes(vq: VARVQVAE, usage: torch.Tensor, rests: list[torch.Tensor], g: torch.Generator) -> int:
    """Replace codes with zero usage by random residual vectors of the last batch (all scales); returns how many."""
    dead = (usage == 0).nonzero().flatten()
    if dead.numel() == 0:
        return 0
    pool = torch.cat(rests)
    pick = torch.randint(0, pool.shape[0], (dead.numel(),), generator=g)
    vq.quantize.embedding.weight.data[dead] = pool[pick] + 0.01 * pool.std() * torch.randn(
        dead.numel(), pool.shape[1], generator=g)
    return dead.numel()


@torch.no_grad()
def evaluate(vq: VARVQVAE, x: torch.Tensor, y: torch.Tensor, judge: GlyphJudge | None,
             patch_nums: tuple[int, ...] = PATCH_NUMS) -> dict[str, float]:
    """Token round trip of images x [N,3,32,32] in [0,1]: PSNR (dB), codebook usage, judge accuracy (if judge)."""
    recs, used = [], torch.zeros(vq.vocab_size, dtype=torch.bool)
    for i in range(0, x.shape[0], 250):
        idx = vq.encode(x[i:i + 250] * 2 - 1, patch_nums)
        for m in idx:
            used[m.flatten()] = True
        recs.append((vq.decode_indices(idx) + 1) / 2)
    rec = torch.cat(recs)
    out = {"psnr": (10 * torch.log10(1.0 / ((rec - x) ** 2).mean((1, 2, 3)))).mean().item(),
           "codes_used": used.float().mean().item(), "chroma_ratio": chroma_ratio(rec, x)}
    if judge is not None:
        out["judge_acc_recon"] = judge_accuracy(judge, rec, y)
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=0.25, help="commitment weight (official 0.25)")
    p.add_argument("--judge-loss", type=float, default=0.1, help="weight of the judge feature-matching loss (0: off)")
    p.add_argument("--chroma-weight", type=float, default=4.0,
                   help="weight of an extra MSE on chroma (pixels minus their R,G,B mean); 0 = off")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--cvae", type=int, default=16)
    p.add_argument("--ch", type=int, default=64,
                   help="base channels, a multiple of 32 (GroupNorm has 32 groups; 32 channels lose the images' hue)")
    p.add_argument("--ch-mult", default="1,1,2")
    p.add_argument("--num-res-blocks", type=int, default=1)
    p.add_argument("--dead-every", type=int, default=100, help="re-init codes unused over this many steps")
    p.add_argument("--heldout", type=int, default=500)
    p.add_argument("--max-minutes", type=float, default=20.0, help="stop early past this wall time")
    p.add_argument("--judge", default="weights/tn_glyph_judge.safetensors")
    p.add_argument("--smoke", action="store_true", help="2 tiny steps, for CI")
    p.add_argument("--out", default="weights/tn_glyph_msvq.safetensors")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.heldout = 2, 4, 10
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    cfg = make_config(args.vocab, args.cvae, args.ch, tuple(int(c) for c in args.ch_mult.split(",")),
                      args.num_res_blocks)
    vq = VARVQVAE(cfg).to(memory_format=torch.channels_last)  # faster mkldnn convs on CPU
    if IMAGE_SIZE // vq.downsample != PATCH_NUMS[-1]:
        raise ValueError(f"ch_mult {cfg.ch_mult} downsamples {IMAGE_SIZE} px by {vq.downsample}; "
                         f"patch_nums {PATCH_NUMS} need a {PATCH_NUMS[-1]}x{PATCH_NUMS[-1]} latent")
    judge = GlyphJudge.from_state_dict(load_file(args.judge)).requires_grad_(False) \
        if os.path.exists(args.judge) else None
    params = [q for n, q in vq.named_parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    held_x, held_y = make_batch(args.heldout, HELDOUT_SEED)
    usage = torch.zeros(args.vocab)
    clock, step = Clock(), 0
    for step in range(args.steps):
        x, _ = make_batch(args.batch, seed=TRAIN_SEED + step)
        for group in opt.param_groups:
            group["lr"] = lr_at(schedule_step(step, args.steps, clock(), args.max_minutes), args.steps, args.lr,
                                warmup=min(100, args.steps // 10 + 1))
        x = x.contiguous(memory_format=torch.channels_last)
        f = vq.quant_conv(vq.encoder(x * 2 - 1))
        f_st, vq_loss, hits, rests = msvq_forward(vq, f, PATCH_NUMS, args.beta)
        rec = vq.decoder(vq.post_quant_conv(f_st))
        target = x * 2 - 1
        loss = F.l1_loss(rec, target) + F.mse_loss(rec, target) + vq_loss
        if args.chroma_weight:
            loss = loss + args.chroma_weight * F.mse_loss(chroma(rec), chroma(target))
        if judge is not None and args.judge_loss > 0:
            fx = judge.features(x)
            loss = loss + args.judge_loss * F.mse_loss(judge.features((rec + 1) / 2), fx) / fx.pow(2).mean().clamp_min(1e-6)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        usage += hits
        reinit = 0
        if (step + 1) % args.dead_every == 0 and step + 1 < args.steps * 0.9:
            reinit = reinit_dead_codes(vq, usage, rests, g)
            usage.zero_()
        if step % 100 == 0 or step == args.steps - 1:
            vq.eval()
            m = evaluate(vq, held_x[:200], held_y[:200], None)
            vq.train()
            print(f"step {step} loss {loss.item():.4f} vq {vq_loss.item():.4f} psnr {m['psnr']:.2f} "
                  f"codes_used {m['codes_used']:.3f} chroma {m['chroma_ratio']:.3f} reinit {reinit} t {clock():.0f}s",
                  flush=True)
        if clock() > args.max_minutes * 60:
            print(f"time cap reached at step {step}", flush=True)
            break
    vq.eval()
    metrics = evaluate(vq, held_x, held_y, judge)
    meta = {"tn_kind": "vq", "family": "var", "class_names": json.dumps(CLASS_NAMES),
            "num_classes": str(len(CLASS_NAMES)), "image_size": str(IMAGE_SIZE), "patch_nums": json.dumps(PATCH_NUMS),
            "heldout_psnr": f"{metrics['psnr']:.2f}", "codes_used": f"{metrics['codes_used']:.3f}",
            "chroma_ratio": f"{metrics['chroma_ratio']:.3f}",
            "train_steps": str(step + 1), "train_seconds": f"{clock():.0f}",
            "train_args": args_json(args)}
    if judge is not None:
        meta["judge_accuracy_recon"] = f"{metrics['judge_acc_recon']:.4f}"
    sd = {k: v for k, v in vq.state_dict().items()}
    sd["quantize.ema_vocab_hit_SV"] = sd["quantize.ema_vocab_hit_SV"].zero_()  # unused statistic, kept for layout
    size = save_fp16(sd, args.out, meta)
    print(f"saved {args.out} ({size} bytes) metrics {json.dumps(metrics)} {clock():.0f}s", flush=True)
    return {**metrics, "seconds": clock(), "bytes": size}


if __name__ == "__main__":
    main()
