"""Train the demo VAR transformer (next-scale prediction over the glyph multi-scale VQ tokens), official key layout.

python -m training.train_var [--max-minutes 56] [--threads 2] [--out weights/tn_glyph_var.safetensors]
Tian et al. 2024 (arXiv:2404.02905), Sec. 3 and the official trainer: the bundled multi-scale VQVAE tokenizes a
pool of freshly rendered glyphs once (optionally cached, --cache), the transformer is teacher-forced on the K token
maps (inputs: class token + the area-downsampled running f_hat of the previous scales, `teacher_forcing_input`) under
the block-causal mask, loss = cross-entropy (label smoothing optional, official default 0) averaged uniformly over
all L tokens. Labels are replaced by the null class with probability 0.1 (classifier-free guidance, Ho & Salimans
2022). Initialisation follows the official `init_weights` (trunc-normal std sqrt(1/3C), head x0.02, AdaLN x0.5 with gammas x1e-5,
residual projections / sqrt(2 depth)); AdamW (0.9, 0.95), weight decay 0.05 on matrices, gradient clip 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from demo.glyphs import CLASS_NAMES, IMAGE_SIZE
from models.judge import GlyphJudge, judge_accuracy
from models.var import VAR, VARConfig
from samplers.var import generate_var
from tokenizers.var_vqvae import VARVQVAE
from training.common import EMA, Clock, load_init, lr_at, pick_device, render_batches, save_fp16, train_device_label
from training.train_var_vqvae import PATCH_NUMS, schedule_step

NULL_CLASS = len(CLASS_NAMES)
POOL_SEED = 40_000_000
# default sampling settings of the bundled model (quality benchmark, example workflow)
DEFAULT_SAMPLING = {"cfg_scale": 3.0, "top_k": 0, "top_p": 0.95, "more_smooth": False}


@torch.no_grad()
def token_pool(vq: VARVQVAE, n: int, cache: str | None, chunk: int = 250, workers: int = 0,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [n,L] (all K scales of each image, concatenated coarse to fine) and labels [n] of n glyphs rendered
    from seeds POOL_SEED + i; cached to `cache`, keyed by the tokenizer's codebook so a new tokenizer re-encodes."""
    key = f"{vq.quantize.embedding.weight.double().sum().item():.6f}"
    if cache and os.path.exists(cache):
        data = torch.load(cache, map_location="cpu", weights_only=True)
        if data["tokens"].shape[0] == n and data.get("key") == key:
            return data["tokens"].long(), data["labels"]
    toks, ys = [], []
    vq.to(device)
    for x, y in render_batches([(min(chunk, n - i), POOL_SEED + i) for i in range(0, n, chunk)], workers):
        toks.append(torch.cat([m.flatten(1) for m in vq.encode(x.to(device) * 2 - 1, PATCH_NUMS)], 1).short().cpu())
        ys.append(y)
    vq.cpu()
    tokens, labels = torch.cat(toks), torch.cat(ys)
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        torch.save({"tokens": tokens, "labels": labels, "key": key}, cache)
    return tokens.long(), labels


def split_scales(tokens_BL: torch.Tensor, patch_nums: tuple[int, ...] = PATCH_NUMS) -> list[torch.Tensor]:
    """Concatenated tokens [B,L] -> K token maps [B,pn,pn]."""
    sizes = [pn * pn for pn in patch_nums]
    return [t.view(-1, pn, pn) for t, pn in zip(tokens_BL.split(sizes, dim=1), patch_nums)]


@torch.no_grad()
def init_weights(var: VAR, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02) -> None:
    """The official VAR initialisation (`VAR.init_weights` with init_std = sqrt(1 / (3 C)))."""
    std = math.sqrt(1 / var.cfg.embed_dim / 3)
    for m in var.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.trunc_normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    for p in (var.pos_start, var.pos_1LC):
        torch.nn.init.trunc_normal_(p, std=std)
    var.head.weight.mul_(init_head)
    var.head_nm.ada_lin[-1].weight.mul_(init_adaln)
    C, depth = var.cfg.embed_dim, var.cfg.depth
    for blk in var.blocks:
        blk.attn.proj.weight.div_(math.sqrt(2 * depth))
        blk.ffn.fc2.weight.div_(math.sqrt(2 * depth))
        blk.ada_lin[-1].weight[2 * C:].mul_(init_adaln)
        blk.ada_lin[-1].weight[:2 * C].mul_(init_adaln_gamma)


@torch.no_grad()
def sample_accuracy(var: VAR, vq: VARVQVAE, judge: GlyphJudge, per_class: int, seed: int = 0,
                    **sampling) -> float:
    """Judge accuracy of per_class x 10 samples drawn at `sampling` (DEFAULT_SAMPLING when empty)."""
    labels = torch.arange(len(CLASS_NAMES)).repeat_interleave(per_class)
    res = generate_var(var, vq, labels, generator=torch.Generator().manual_seed(seed), **(sampling or DEFAULT_SAMPLING))
    return judge_accuracy(judge, ((vq.decode_fhat(res.f_hat) + 1) / 2).cpu(), labels)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100000, help="upper bound; on a CPU the time cap ends training")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=0, help="0: width / 64")
    p.add_argument("--label-smooth", type=float, default=0.0, help="official default 0; 0.1 optional")
    p.add_argument("--cond-drop", type=float, default=0.1)
    p.add_argument("--pool", type=int, default=30000, help="glyphs tokenized once, inside the time cap")
    p.add_argument("--cache", default="", help="optional cache of the tokenized pool, e.g. runs/var_token_pool.pt")
    p.add_argument("--tokenizer", default="weights/tn_glyph_msvq.safetensors")
    p.add_argument("--judge", default="weights/tn_glyph_judge.safetensors", help="for reporting only")
    p.add_argument("--max-minutes", type=float, default=56.0,
                   help="stop past this wall time (pool included); the LR decay is timed to it")
    p.add_argument("--smoke", action="store_true", help="2 tiny steps, for CI")
    p.add_argument("--out", default="weights/tn_glyph_var.safetensors")
    p.add_argument("--init", default="", help="continue from this checkpoint (same --depth/--width; steps accumulate)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--ema", type=float, default=0.998, help="EMA decay of the saved weights (0: save the raw weights)")
    p.add_argument("--workers", type=int, default=0, help="processes that render the glyph pool (0: this one)")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.pool, args.cache, args.depth = 2, 4, 8, "", 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clock = Clock()
    vq = VARVQVAE.from_state_dict(load_file(args.tokenizer))
    device = pick_device(args.device)
    tokens, labels = token_pool(vq, args.pool, args.cache or None, workers=args.workers, device=device)
    vq.to(device)
    tokens, labels = tokens.to(device), labels.to(device)
    print(f"token pool {tuple(tokens.shape)} ready at {clock():.0f}s", flush=True)
    cfg = VARConfig(vocab_size=vq.vocab_size, Cvae=vq.Cvae, num_classes=len(CLASS_NAMES), depth=args.depth,
                    embed_dim=args.width, num_heads=args.heads or max(1, args.width // 64),
                    mlp_hidden=4 * args.width, patch_nums=PATCH_NUMS, shared_aln=False, attn_l2_norm=True)
    var = VAR(cfg)
    init_weights(var)
    prior_steps, prior_seconds, init_device = load_init(var, args.init) if args.init else (0, 0.0, "")
    var.to(device)
    ema = EMA(var, args.ema) if args.ema else None
    decay = [q for n, q in var.named_parameters() if q.ndim >= 2 and "pos_" not in n and not n.endswith(("class_emb.weight", "lvl_embed.weight"))]
    no_decay = [q for n, q in var.named_parameters() if not any(q is d for d in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(0)
    step, n_params = 0, sum(q.numel() for q in var.parameters())
    print(f"VAR {cfg} ({n_params} params)", flush=True)
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(schedule_step(step, args.steps, clock(), args.max_minutes), args.steps, args.lr,
                                warmup=min(100, args.steps // 10 + 1))
        pick = torch.randint(0, tokens.shape[0], (args.batch,), generator=g).to(device)
        gt_BL, y = tokens[pick], labels[pick]
        y = torch.where((torch.rand(args.batch, generator=g) < args.cond_drop).to(device), NULL_CLASS, y)
        with torch.no_grad():
            x_BLCv = vq.teacher_forcing_input(split_scales(gt_BL))
        logits = var(y, x_BLCv)  # (B, L, V)
        loss = F.cross_entropy(logits.view(-1, cfg.vocab_size), gt_BL.view(-1), label_smoothing=args.label_smooth)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt.step()
        if ema is not None:
            ema.update(var, decay=min(args.ema, (1 + step) / (10 + step)))
        if step % 50 == 0 or step == args.steps - 1:
            with torch.no_grad():
                acc = (logits.argmax(-1) == gt_BL).float().mean().item()
            print(f"step {step} loss {loss.item():.4f} token_acc {acc:.3f} lr {opt.param_groups[0]['lr']:.2e} "
                  f"t {clock():.0f}s", flush=True)
        if clock() > args.max_minutes * 60:
            print(f"time cap reached at step {step}", flush=True)
            break
    if ema is not None:
        var.load_state_dict(ema.shadow)
    var.eval()
    train_seconds = clock()
    meta = {"tn_kind": "ar", "family": "var", "class_names": json.dumps(CLASS_NAMES),
            "num_classes": str(len(CLASS_NAMES)), "image_size": str(IMAGE_SIZE), "patch_nums": json.dumps(PATCH_NUMS),
            "tokenizer": os.path.basename(args.tokenizer), "default_sampling": json.dumps(DEFAULT_SAMPLING),
            "train_steps": str(prior_steps + step + 1), "train_seconds": f"{prior_seconds + train_seconds:.0f}",
            "train_device": train_device_label(device, init_device), "ema": str(args.ema)}
    if args.init:
        meta["continued_from_steps"] = str(prior_steps)
    metrics = {"loss": loss.item(), "seconds": train_seconds}
    if os.path.exists(args.judge):
        judge = GlyphJudge.from_state_dict(load_file(args.judge))
        metrics["judge_acc_samples"] = sample_accuracy(var, vq, judge, 1 if args.smoke else 10)
        meta["judge_accuracy_samples_100"] = f"{metrics['judge_acc_samples']:.4f}"
    size = save_fp16(var, args.out, meta)
    print(f"saved {args.out} ({size} bytes, {n_params} params) metrics {json.dumps(metrics)} {clock():.0f}s", flush=True)
    return {**metrics, "bytes": size}


if __name__ == "__main__":
    main()
