"""Train the glyph autoencoder (32x32 RGB <-> 4x8x8 latents) that the demo denoisers live in.

python -m training.train_autoencoder [--steps 2500] [--out weights/tn_glyph_ae.safetensors]
Loss: L1 + MSE on pixels, a small L2 penalty on latents, and decoding from slightly noised
latents (so the decoder tolerates the imperfect latents a denoiser produces). Afterwards it
measures scale_factor = 1/std(latents) and fits the linear latent->RGB preview factors.
"""
from __future__ import annotations

import argparse
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from demo.glyphs import IMAGE_SIZE, make_batch
from models.autoencoder import GlyphAutoencoder
from models.judge import GlyphJudge, judge_accuracy
from training.common import HELDOUT_SEED, Clock, lr_at, save_fp16


@torch.no_grad()
def latent_statistics(ae: GlyphAutoencoder, n: int, seed: int) -> tuple[float, list[list[float]], list[float]]:
    """scale_factor = 1/std of latents, and least-squares RGB preview factors [4][3] + bias [3].

    The preview maps *scaled* latents (what a sampler sees) to RGB in [-1,1], the ComfyUI
    Latent2RGB convention: rgb = scaled_latent @ factors + bias, then (rgb + 1) / 2.
    """
    x, _ = make_batch(n, seed)
    z = torch.cat([ae.encode(x[i:i + 500]) for i in range(0, n, 500)])
    scale = 1.0 / z.std().item()
    target = F.avg_pool2d(x * 2 - 1, ae.downsample)  # (N, 3, 8, 8)
    a = torch.cat([(z * scale).permute(0, 2, 3, 1).reshape(-1, z.shape[1]), torch.ones(z.numel() // z.shape[1], 1)], 1)
    sol = torch.linalg.lstsq(a.double(), target.permute(0, 2, 3, 1).reshape(-1, 3).double()).solution.float()  # (5, 3)
    return scale, sol[:-1].tolist(), sol[-1].tolist()


@torch.no_grad()
def evaluate(ae: GlyphAutoencoder, x: torch.Tensor, y: torch.Tensor, judge: GlyphJudge | None) -> dict[str, float]:
    """Reconstruction PSNR (dB, images in [0,1]) and, if a judge is given, its accuracy on reconstructions."""
    rec = torch.cat([ae.decode(ae.encode(x[i:i + 500])) for i in range(0, x.shape[0], 500)])
    psnr = (10 * torch.log10(1.0 / ((rec - x) ** 2).mean((1, 2, 3)))).mean().item()
    out = {"psnr": psnr}
    if judge is not None:
        out["judge_acc_real"] = judge_accuracy(judge, x, y)
        out["judge_acc_recon"] = judge_accuracy(judge, rec, y)
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--latent-l2", type=float, default=1e-4)
    p.add_argument("--latent-noise", type=float, default=0.1, help="decoder input noise, in latent std units")
    p.add_argument("--heldout", type=int, default=1000)
    p.add_argument("--max-minutes", type=float, default=50.0, help="stop early past this wall time")
    p.add_argument("--judge", default="weights/tn_glyph_judge.safetensors", help="for reporting only")
    p.add_argument("--smoke", action="store_true", help="3 tiny steps, for CI")
    p.add_argument("--out", default="weights/tn_glyph_ae.safetensors")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.heldout = 3, 8, 20
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ae = GlyphAutoencoder()
    opt = torch.optim.AdamW(ae.parameters(), lr=args.lr, weight_decay=0.0)
    held_x, held_y = make_batch(args.heldout, HELDOUT_SEED)
    clock, step = Clock(), 0
    for step in range(args.steps):
        x, _ = make_batch(args.batch, seed=10_000_000 + step)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup=min(100, args.steps // 10 + 1))
        z = ae.encode(x)
        z_in = z + args.latent_noise * z.detach().std() * torch.randn_like(z)
        rec = ae.decode_raw(z_in)
        target = x * 2 - 1
        loss = F.l1_loss(rec, target) + F.mse_loss(rec, target) + args.latent_l2 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            ae.eval()
            m = evaluate(ae, held_x, held_y, None)
            ae.train()
            print(f"step {step} loss {loss.item():.4f} psnr {m['psnr']:.2f} z_std {z.std().item():.3f} t {clock():.0f}s", flush=True)
        if clock() > args.max_minutes * 60:
            print(f"time cap reached at step {step}", flush=True)
            break
    ae.eval()
    judge = GlyphJudge.from_state_dict(load_file(args.judge)) if os.path.exists(args.judge) else None
    metrics = evaluate(ae, held_x, held_y, judge)
    scale, factors, bias = latent_statistics(ae, 200 if args.smoke else 5000, seed=HELDOUT_SEED + 1)
    meta = {"tn_kind": "autoencoder", "scale_factor": f"{scale:.6f}", "latent_rgb_factors": json.dumps(factors),
            "latent_rgb_bias": json.dumps(bias), "image_size": str(IMAGE_SIZE), "latent_channels": "4",
            "downsample": "4", "heldout_psnr": f"{metrics['psnr']:.2f}", "train_steps": str(step + 1),
            "train_seconds": f"{clock():.0f}"}
    if judge is not None:
        meta["judge_accuracy_recon"] = f"{metrics['judge_acc_recon']:.4f}"
    size = save_fp16(ae, args.out, meta)
    print(f"saved {args.out} ({size} bytes) scale_factor {scale:.4f} metrics {json.dumps(metrics)} {clock():.0f}s")
    return {**metrics, "scale_factor": scale, "seconds": clock()}


if __name__ == "__main__":
    main()
