"""Train the demo LlamaGen VQ tokenizer: 32x32 glyphs <-> 8x8 grids of tokens from a 2048 x 8 L2-normalised codebook.

python -m training.train_llamagen_vq [--steps 1000] [--max-minutes 15] [--threads 2]
    [--out weights/tn_glyph_vq.safetensors]
The network is LlamaGen's VQModel (Sun et al. 2024, arXiv:2406.06525, §2.2) at toy size: ch 64, ch_mult (1,1,1),
one res block per level, z_channels 64, so `LlamaGenVQ.from_state_dict` loads the file strictly. Loss: L1 + MSE on
pixels in [-1,1], MSE of 4x4 averages, an MSE on chroma (pixels minus their R,G,B mean, weight 4), and the VQ-VAE
codebook and commitment terms (van den Oord et al. 2017, arXiv:1711.00937, eq. 3; beta 0.25 as LlamaGen) on
L2-normalised latents and codes (Yu et al. 2022, ViT-VQGAN §3.2), with the straight-through estimator. No GAN or
perceptual loss: the judge is the metric, so it is kept out of the loss. The first 25% of steps bypass the quantizer
(a plain autoencoder), then spherical k-means on encoder outputs seeds the codebook; codes unused for a whole window
are re-initialised from current encoder outputs (dead-code restart).
Hue: at base width 32 (every GroupNorm channel normalised on its own) or with 256-1024 codes the codes carry shape and
lightness but little hue and decodes come out near grey; width 64, the chroma term and 2048 codes together keep it
(4096 keep it too, but the small GPT models them worse; see the README). Use --threads 1 on an oversubscribed
machine (two spinning OpenMP threads there ran ~5x slower).
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
from tokenizers.llamagen_vq import LlamaGenVQ, LlamaGenVQConfig
from training.common import HELDOUT_SEED, Clock, args_json, chroma, chroma_ratio, lr_at, save_fp16

TRAIN_SEED0 = 30_000_000  # training batch i is make_batch(batch, TRAIN_SEED0 + i)


def demo_vq_config(codebook_size: int = 2048, codebook_embed_dim: int = 8, ch: int = 64,
                   ch_mult: tuple[int, ...] = (1, 1, 1)) -> LlamaGenVQConfig:
    """The bundled tokenizer's architecture (these defaults): 32x32 -> 8x8 (downsample 4 with three levels), ch 64,
    ch_mult (1, 1, 1); the earlier file used ch 32, ch_mult (1, 1, 2) and 256 codes."""
    return LlamaGenVQConfig(ch=ch, encoder_ch_mult=ch_mult, decoder_ch_mult=ch_mult, num_res_blocks=1,
                            z_channels=64, codebook_size=codebook_size, codebook_embed_dim=codebook_embed_dim,
                            codebook_show_usage=False)


def quantize_st(vq: LlamaGenVQ, images: torch.Tensor, beta: float = 0.25, quantize: bool = True):
    """Training forward. images (B,3,32,32) in [-1,1] -> (reconstruction (B,3,32,32), vq loss, indices (B,8,8),
    normalised latents (B*64, C) detached).

    codebook loss |sg[z] - e|^2 + beta |z - sg[e]|^2 on normalised z and e; the decoder sees z + sg[e - z]
    (or z itself, with a zero vq loss, when quantize is False: the autoencoder warm-up).
    """
    z = F.normalize(vq.quant_conv(vq.encoder(images)), p=2, dim=1)  # (B, C, h, w)
    idx = vq.quantize.nearest(z)  # nearest() re-normalises: a no-op here
    if quantize:
        e = vq.quantize.lookup(idx)  # (B, C, h, w), unit norm
        loss = F.mse_loss(e, z.detach()) + beta * F.mse_loss(z, e.detach())
        z_q = z + (e - z).detach()  # straight-through
    else:
        loss, z_q = z.new_zeros(()), z
    rec = vq.decoder(vq.post_quant_conv(z_q))
    return rec, loss, idx, z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def jittered_latents(latents: torch.Tensor, count: int, g: torch.Generator) -> torch.Tensor:
    """count random rows of latents (N, C), drawn with replacement, plus small noise, back on the unit sphere."""
    pick = torch.randint(0, latents.shape[0], (count,), generator=g)
    return F.normalize(latents[pick] + 0.01 * torch.randn(count, latents.shape[1], generator=g), dim=-1)


@torch.no_grad()
def restart_dead_codes(vq: LlamaGenVQ, counts: torch.Tensor, latents: torch.Tensor, opt: torch.optim.Optimizer,
                       g: torch.Generator) -> int:
    """Set every code with counts == 0 to a random recent latent (+ small noise); clear its Adam moments.

    counts (K,) code usage over the last window, latents (N, C) normalised encoder outputs. Returns how many.
    """
    dead = (counts == 0).nonzero().squeeze(1)
    if dead.numel() == 0:
        return 0
    w = vq.quantize.embedding.weight
    w[dead] = jittered_latents(latents, dead.numel(), g)
    state = opt.state.get(w, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][dead] = 0
    return dead.numel()


@torch.no_grad()
def kmeans_codebook(vq: LlamaGenVQ, latents: torch.Tensor, opt: torch.optim.Optimizer, g: torch.Generator,
                    iters: int = 10) -> None:
    """Spherical k-means of latents (N, C) (unit norm) into the codebook; empty clusters take random latents."""
    w = vq.quantize.embedding.weight
    k = w.shape[0]
    n = latents.shape[0]
    if n >= k:
        centers = latents[torch.randperm(n, generator=g)[:k]].clone()
    else:  # fewer latents than codes (smoke runs): repeat them, jittered
        centers = jittered_latents(latents, k, g)
    for _ in range(iters):
        assign = (latents @ centers.t()).argmax(1)  # nearest on the sphere = largest dot product
        sums = torch.zeros_like(centers).index_add_(0, assign, latents)
        empty = torch.bincount(assign, minlength=k) == 0
        sums[empty] = latents[torch.randint(0, latents.shape[0], (int(empty.sum()),), generator=g)]
        centers = F.normalize(sums, dim=-1)
    w.copy_(centers)
    opt.state.pop(w, None)  # fresh Adam moments for the new codebook


@torch.no_grad()
def evaluate(vq: LlamaGenVQ, x: torch.Tensor, y: torch.Tensor, judge: GlyphJudge | None) -> dict[str, float]:
    """x (N,3,32,32) in [0,1]: reconstruction PSNR (dB, [0,1] range, clamped), codes used, judge accuracy."""
    idx = torch.cat([vq.encode(x[i:i + 250] * 2 - 1) for i in range(0, x.shape[0], 250)])
    rec = torch.cat([vq.decode_indices(idx[i:i + 250]) for i in range(0, x.shape[0], 250)])
    rec = ((rec + 1) / 2).clamp(0, 1)
    psnr = (10 * torch.log10(1.0 / ((rec - x) ** 2).mean((1, 2, 3)).clamp_min(1e-10))).mean().item()
    out = {"psnr": psnr, "codes_used": int(idx.unique().numel()), "chroma_ratio": chroma_ratio(rec, x)}
    if judge is not None:
        out["judge_acc_real"] = judge_accuracy(judge, x, y)
        out["judge_acc_recon"] = judge_accuracy(judge, rec, y)
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--max-minutes", type=float, default=15.0,
                   help="wall-time cap; the LR schedule follows max(step/steps, time/cap), so it always finishes")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--beta", type=float, default=0.25, help="commitment weight")
    p.add_argument("--colour-weight", type=float, default=1.0,
                   help="weight of an extra MSE on 4x4-pooled pixels (low frequencies, colour)")
    p.add_argument("--chroma-weight", type=float, default=4.0,
                   help="weight of an extra MSE on chroma (pixels minus their R,G,B mean); 0 = off")
    p.add_argument("--ae-warmup", type=float, default=0.25,
                   help="fraction of training with the quantizer bypassed; then k-means initialises the codebook")
    p.add_argument("--kmeans-images", type=int, default=1024, help="glyphs whose latents seed the k-means")
    p.add_argument("--codebook-size", type=int, default=2048)
    p.add_argument("--ch", type=int, default=64,
                   help="base channels, a multiple of 32 (GroupNorm has 32 groups; at 32 every channel is normalised "
                        "on its own and the images' hue is lost)")
    p.add_argument("--embed-dim", type=int, default=8, help="codebook vector size (LlamaGen: 8)")
    p.add_argument("--ch-mult", default="1,1,1", help="channel multipliers of the three levels")
    p.add_argument("--restart-every", type=int, default=50, help="dead-code window (steps); 0 = never")
    p.add_argument("--heldout", type=int, default=1000)
    p.add_argument("--judge", default="weights/tn_glyph_judge.safetensors", help="for reporting only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="2 tiny steps, for tests")
    p.add_argument("--out", default="weights/tn_glyph_vq.safetensors")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.heldout, args.restart_every, args.kmeans_images = 2, 4, 20, 1, 8
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    vq = LlamaGenVQ(demo_vq_config(args.codebook_size, args.embed_dim, ch=args.ch,
                                    ch_mult=tuple(int(c) for c in args.ch_mult.split(",")))).train()
    with torch.no_grad():  # unit-norm random codes; dead-code restarts move them onto the data
        w = vq.quantize.embedding.weight
        w.copy_(F.normalize(torch.randn(w.shape, generator=g), dim=-1))
    opt = torch.optim.AdamW(vq.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    held_x, held_y = make_batch(args.heldout, HELDOUT_SEED)
    judge = GlyphJudge.from_state_dict(load_file(args.judge)) if os.path.exists(args.judge) else None
    clock, done, cap = Clock(), 0, args.max_minutes * 60
    counts = torch.zeros(args.codebook_size)
    restart_until = 0.8  # stop restarting codes for the last 20% so the decoder settles on the final codebook
    quantizing = args.ae_warmup <= 0
    for step in range(args.steps):
        progress = max(step / args.steps, clock() / cap)
        if progress >= 1.0:
            print(f"time cap reached at step {step}", flush=True)
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(int(progress * args.steps), args.steps, args.lr, warmup=min(50, args.steps // 10 + 1))
        if not quantizing and progress >= args.ae_warmup:
            # The encoder and decoder first learn without the bottleneck; k-means on the warmed-up latents then
            # places every code on the data instead of relying on dead-code restarts from a random codebook.
            with torch.no_grad():
                xs = make_batch(args.kmeans_images, TRAIN_SEED0 - 1)[0] * 2 - 1
                zs = torch.cat([F.normalize(vq.quant_conv(vq.encoder(xs[i:i + 64])), dim=1)
                                for i in range(0, len(xs), 64)])
                zs = zs.permute(0, 2, 3, 1).reshape(-1, zs.shape[1])  # (N * h * w, C)
            kmeans_codebook(vq, zs, opt, g)
            quantizing = True
            counts.zero_()
            print(f"step {step}: quantizer on, codebook from k-means of {zs.shape[0]} latents", flush=True)
        x, _ = make_batch(args.batch, TRAIN_SEED0 + step)
        target = x * 2 - 1
        rec, vq_loss, idx, latents = quantize_st(vq, target, args.beta, quantizing)
        rec_loss = (F.l1_loss(rec, target) + F.mse_loss(rec, target)
                    + args.colour_weight * F.mse_loss(F.avg_pool2d(rec, 4), F.avg_pool2d(target, 4)))
        if args.chroma_weight:
            rec_loss = rec_loss + args.chroma_weight * F.mse_loss(chroma(rec), chroma(target))
        loss = rec_loss + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vq.parameters(), 1.0)
        opt.step()
        done += 1
        counts += torch.bincount(idx.flatten(), minlength=args.codebook_size).float()
        restarted = 0
        if args.restart_every and (step + 1) % args.restart_every == 0:
            if quantizing and progress < restart_until:
                restarted = restart_dead_codes(vq, counts, latents, opt, g)
            counts.zero_()
        if step % 50 == 0 or step == args.steps - 1 or restarted:
            print(f"step {step} loss {loss.item():.4f} rec {rec_loss.item():.4f} vq {vq_loss.item():.4f} "
                  f"batch_codes {idx.unique().numel()} restarted {restarted} lr {opt.param_groups[0]['lr']:.2e} "
                  f"t {clock():.0f}s", flush=True)
        if step % 200 == 0 and step:
            vq.eval()
            print(f"  heldout[:200] {json.dumps(evaluate(vq, held_x[:200], held_y[:200], None))}", flush=True)
            vq.train()
    train_seconds = clock()
    vq.eval()
    metrics = evaluate(vq, held_x, held_y, judge)
    meta = {"tn_kind": "vq", "family": "llamagen", "class_names": json.dumps(CLASS_NAMES),
            "num_classes": str(len(CLASS_NAMES)), "image_size": str(IMAGE_SIZE), "downsample": str(vq.downsample),
            "codebook_size": str(args.codebook_size), "train_steps": str(done),
            "train_seconds": f"{train_seconds:.0f}", "heldout_psnr": f"{metrics['psnr']:.2f}",
            "codes_used": str(metrics["codes_used"]), "chroma_ratio": f"{metrics['chroma_ratio']:.3f}",
            "train_args": args_json(args)}
    if judge is not None:
        meta["judge_accuracy_recon"] = f"{metrics['judge_acc_recon']:.4f}"
    size = save_fp16(vq, args.out, meta)
    print(f"saved {args.out} ({size} bytes) metrics {json.dumps(metrics)} train {train_seconds:.0f}s "
          f"total {clock():.0f}s", flush=True)
    return {**metrics, "seconds": train_seconds, "bytes": size}


if __name__ == "__main__":
    main()
