"""Train a demo latent denoiser on glyph latents: DiT (eps, DDPM) or SiT (Linear-path velocity).

python -m training.train_denoiser --kind dit|sit [--max-minutes 55] [--out weights/tn_glyph_<kind>.safetensors]
Latents are encode(x) * scale_factor from the bundled autoencoder, encoded once into a pool (cached under runs/).
Training runs until --steps or the wall-time cap (pool included), whichever comes first; the learning rate decays
by whichever is further along, so a slow machine still ends with a fully decayed learning rate.
- dit: Ho et al. 2020. Linear betas 1e-4..0.02, T=1000, integer t ~ U{0..999},
  x_t = sqrt(ac_t) x0 + sqrt(1 - ac_t) eps, loss ||eps_theta(x_t, t, y) - eps||^2, by default weighted per sample
  with Min-SNR-5 (Hang et al. 2023; --snr-gamma 0 for the plain loss).
- sit: Ma et al. 2024 (willisma/SiT, Linear path, velocity): t in (0, 1) with t = 1 the data end, by default
  logit-normal (Esser et al. 2024; --t-sampling uniform for U[0, 1]),
  x_t = t x1 + (1 - t) x0 (x1 data, x0 noise), loss ||v_theta(x_t, t, y) - (x1 - x0)||^2.
Both drop the class label to the null class (index 10) with probability 0.1 for classifier-free guidance
and save the EMA weights in the official DiT key layout.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from demo.glyphs import CLASS_NAMES, IMAGE_SIZE
from models.autoencoder import GlyphAutoencoder
from models.denoiser import DenoiserInfo, DenoiserNet
from models.dit import DiT, DiTConfig
from samplers.schedules import alphas_cumprod
from training.common import (
    EMA,
    Clock,
    load_init,
    lr_at,
    pick_device,
    render_batches,
    save_fp16,
    train_device_label,
)
from training.train_var_vqvae import schedule_step

NULL_CLASS = len(CLASS_NAMES)
POOL_SEED = 20_000_000


@torch.no_grad()
def latent_pool(ae: GlyphAutoencoder, scale: float, n: int, cache: str | None, workers: int = 0,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """n scaled latents [n,4,8,8] with labels [n] (on the CPU), encoded from glyph seeds POOL_SEED + i (cached to
    `cache`); glyphs render in `workers` processes and encode on `device`."""
    if cache and os.path.exists(cache):
        data = torch.load(cache, map_location="cpu", weights_only=True)
        if data["latents"].shape[0] == n:
            return data["latents"], data["labels"]
    zs, ys = [], []
    ae = ae.to(device)
    for x, y in render_batches([(min(1000, n - i), POOL_SEED + i) for i in range(0, n, 1000)], workers):
        zs.append((ae.encode(x.to(device)) * scale).cpu())
        ys.append(y)
    ae.cpu()
    latents, labels = torch.cat(zs), torch.cat(ys)
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        torch.save({"latents": latents, "labels": labels}, cache + ".tmp")
        os.replace(cache + ".tmp", cache)  # atomic: a second run may be waiting for this file
    return latents, labels


def denoiser_loss(model: DiT, x1: torch.Tensor, y: torch.Tensor, kind: str, ac: torch.Tensor,
                  snr_gamma: float = 0.0, logit_normal: bool = False) -> torch.Tensor:
    """Training loss for clean scaled latents x1 [B,4,8,8] and (already dropped-out) labels y [B].

    snr_gamma > 0 (dit): Min-SNR-gamma weighting (Hang et al. 2023), per-sample weight min(SNR_t, gamma) / SNR_t
    for the eps loss, SNR_t = ac_t / (1 - ac_t); it stops the many nearly clean timesteps from dominating.
    logit_normal (sit): t = sigmoid(n), n ~ N(0, 1) (Esser et al. 2024, SD3) instead of U[0, 1], which spends the
    updates on the middle of the path where the class and layout are decided."""
    b = x1.shape[0]
    noise = torch.randn_like(x1)
    if kind == "dit":
        t = torch.randint(0, ac.shape[0], (b,), device=x1.device)
        a = ac[t].view(b, 1, 1, 1)
        xt = a.sqrt() * x1 + (1 - a).sqrt() * noise
        if snr_gamma <= 0:
            return F.mse_loss(model(xt, t.float(), y), noise)
        snr = ac[t] / (1 - ac[t])
        weight = snr.clamp(max=snr_gamma) / snr
        return ((model(xt, t.float(), y) - noise).square().mean(dim=(1, 2, 3)) * weight).mean()
    t = torch.sigmoid(torch.randn(b, device=x1.device)) if logit_normal else torch.rand(b, device=x1.device)
    tt = t.view(b, 1, 1, 1)
    xt = tt * x1 + (1 - tt) * noise
    return F.mse_loss(model(xt, t, y), x1 - noise)


def as_denoiser(model: DiT, kind: str, scale: float) -> DenoiserNet:
    """Wrap a training DiT the way load_denoiser wraps the saved file, for in-training evaluation."""
    cfg = model.config
    info = DenoiserInfo(family=kind, prediction="eps" if kind == "dit" else "sit_velocity", num_classes=cfg.num_classes,
                        null_class=NULL_CLASS, latent_channels=cfg.in_channels, latent_size=cfg.input_size,
                        class_names=CLASS_NAMES, latent_scale_factor=scale)
    return DenoiserNet(model, info)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=["dit", "sit"], required=True)
    p.add_argument("--steps", type=int, default=100_000, help="at most this many steps (the time cap usually ends first)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--class-init", type=float, default=0.5, help="std of the initial class embeddings")
    p.add_argument("--pool", type=int, default=100_000, help="number of glyphs encoded once into the latent pool")
    p.add_argument("--cache", default="runs/glyph_latents.pt", help="latent pool cache ('' to disable)")
    p.add_argument("--ae", default="weights/tn_glyph_ae.safetensors")
    p.add_argument("--judge", default="weights/tn_glyph_judge.safetensors", help="for the periodic evaluation")
    p.add_argument("--eval-every", type=int, default=2000)
    p.add_argument("--eval-samples", type=int, default=100)
    p.add_argument("--eval-cfg", type=float, default=4.0, help="the periodic evaluation samples 50 steps at this cfg "
                   "with the nodes' default sampler (DDPM ancestral for dit, flow Euler for sit)")
    p.add_argument("--snr-gamma", type=float, default=5.0, help="dit: Min-SNR-gamma loss weighting (0: plain eps loss)")
    p.add_argument("--t-sampling", choices=["logit_normal", "uniform"], default="logit_normal",
                   help="sit: how training draws t in (0, 1)")
    p.add_argument("--max-minutes", type=float, default=55.0, help="stop (and save) past this wall time")
    p.add_argument("--smoke", action="store_true", help="a tiny model for 3 steps on a tiny pool, for CI")
    p.add_argument("--init", default="", help="continue from this checkpoint (steps and seconds are accumulated)")
    p.add_argument("--out", default="")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (training only; the periodic evaluation runs on the CPU)")
    p.add_argument("--workers", type=int, default=0, help="processes that render the glyph pool (0: this one)")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.hidden, args.depth, args.pool, args.eval_every = 3, 8, 32, 1, 16, 0
        args.cache = ""
    args.out = args.out or f"weights/tn_glyph_{args.kind}.safetensors"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if os.path.exists(args.ae):
        ae = GlyphAutoencoder.from_state_dict(load_file(args.ae))
        with safe_open(args.ae, "pt") as f:
            scale = float(f.metadata()["scale_factor"])
        with open(args.ae, "rb") as f:
            ae_tag = hashlib.sha256(f.read()).hexdigest()[:10]
    elif args.smoke:
        ae, scale, ae_tag = GlyphAutoencoder().eval(), 1.0, "untrained"
    else:
        raise ValueError(f"autoencoder file {args.ae} not found: train it first (python -m training.train_autoencoder)")
    cache = args.cache.replace(".pt", f"_{args.pool}_{ae_tag}.pt") if args.cache else None
    clock = Clock()
    device = pick_device(args.device)
    latents, labels = latent_pool(ae, scale, args.pool, cache, args.workers, device)
    print(f"latent pool {tuple(latents.shape)} std {latents.std().item():.3f} ready at {clock():.0f}s", flush=True)

    cfg = DiTConfig(input_size=latents.shape[-1], patch_size=args.patch, in_channels=latents.shape[1],
                    hidden_size=args.hidden, depth=args.depth, num_heads=args.heads, num_classes=len(CLASS_NAMES),
                    class_dropout_prob=0.1, learn_sigma=False)
    model = DiT(cfg)
    with torch.no_grad():
        # The DiT paper inits the class table and timestep MLP at std 0.02 (tuned for 400k-step ImageNet runs).
        # At this budget that leaves the label unused: the adaLN-Zero layers see a near-constant condition and
        # the table barely moves under Adam. O(1) class and time embeddings make both usable from step 1.
        nn.init.normal_(model.y_embedder.embedding_table.weight, std=args.class_init)
        for lin in (model.t_embedder.mlp[0], model.t_embedder.mlp[2]):
            nn.init.xavier_uniform_(lin.weight)
    done_steps, done_seconds, init_device = 0, 0.0, ""
    if args.init:  # continue from a saved (EMA) checkpoint of the same architecture
        done_steps, done_seconds, init_device = load_init(model, args.init)
    model.to(device)
    latents, labels = latents.to(device), labels.to(device)
    ema = EMA(model, args.ema)
    ema_model = DiT(cfg).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    ac = alphas_cumprod("ddpm_linear").float().to(device)
    print(f"{args.kind}: {sum(q.numel() for q in model.parameters()) / 1e6:.2f}M params, {cfg}", flush=True)
    judge = None
    if args.eval_every and os.path.exists(args.judge):
        from models.judge import GlyphJudge
        judge = GlyphJudge.from_state_dict(load_file(args.judge))

    def save(step: int) -> int:
        meta = {"tn_kind": "denoiser", "family": args.kind, "prediction": "eps" if args.kind == "dit" else "sit_velocity",
                "class_names": json.dumps(CLASS_NAMES), "num_classes": str(len(CLASS_NAMES)),
                "num_heads": str(cfg.num_heads), "autoencoder": os.path.basename(args.ae),
                "latent_scale_factor": f"{scale:.6f}", "image_size": str(IMAGE_SIZE), "train_steps": str(done_steps + step),
                "train_seconds": f"{done_seconds + clock():.0f}"}
        if args.init:
            meta["continued_from_steps"] = str(done_steps)
        if args.kind == "dit":
            meta["beta_schedule"] = "ddpm_linear"
        meta["train_device"] = train_device_label(device, init_device)
        meta["train_args"] = json.dumps({k: getattr(args, k) for k in ("batch", "lr", "ema", "pool", "snr_gamma",
                                                                         "t_sampling", "threads", "max_minutes")})
        return save_fp16(ema.shadow, args.out, meta)

    g = torch.Generator().manual_seed(1)
    step = 0
    loop, pool_minutes = Clock(), clock() / 60  # the LR schedule ends when the steps or the time cap run out
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, latents.shape[0], (args.batch,), generator=g).to(device)
        drop = (torch.rand(args.batch, generator=g) < cfg.class_dropout_prob).to(device)
        y = torch.where(drop, NULL_CLASS, labels[idx])
        for group in opt.param_groups:
            group["lr"] = lr_at(schedule_step(step, args.steps, loop(), args.max_minutes - pool_minutes), args.steps,
                                args.lr, warmup=min(100, args.steps // 10 + 1))
        loss = denoiser_loss(model, latents[idx], y, args.kind, ac, args.snr_gamma,
                              args.t_sampling == "logit_normal")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model, min(args.ema, (1 + step) / (10 + step)))
        if step % 100 == 0 or step == 1:
            y_std = model.y_embedder.embedding_table.weight.std().item()
            print(f"step {step} loss {loss.item():.4f} class_emb_std {y_std:.3f} t {clock():.0f}s", flush=True)
        if judge is not None and step % args.eval_every == 0:
            from benchmarks.quality import evaluate_denoiser
            save(step)
            ema_model.load_state_dict(ema.shadow)
            r = evaluate_denoiser(as_denoiser(ema_model, args.kind, scale), ae, scale, judge, args.eval_samples,
                                  steps=50, cfg=args.eval_cfg)
            print(f"eval step {step}: judge accuracy {r['judge_accuracy']:.3f} KID {r['kid']:.4f} "
                  f"({args.eval_samples} samples, 50 steps, cfg {args.eval_cfg:g}) t {clock():.0f}s", flush=True)
        if clock() > args.max_minutes * 60:
            print(f"time cap reached at step {step}", flush=True)
            break
    size = save(step)
    print(f"saved {args.out} ({size} bytes) after {step} steps, {clock():.0f}s")
    return {"steps": step, "seconds": clock(), "loss": loss.item()}


if __name__ == "__main__":
    main()
