"""Train the glyph judge (the classifier that scores generated samples).

python -m training.train_judge [--steps 1500] [--out weights/tn_glyph_judge.safetensors]
Every batch is freshly rendered from a new seed, so there is no overfitting to a fixed set; light
blur / noise augmentation keeps the judge fair to slightly soft decoded samples.
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from demo.glyphs import CLASS_NAMES, IMAGE_SIZE, make_batch
from models.judge import GlyphJudge, judge_accuracy
from training.common import HELDOUT_SEED, Clock, lr_at, save_fp16


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur a third of the batch with a 3x3 box/tent kernel and add mild noise to another third."""
    b = images.shape[0]
    kind = torch.randint(0, 3, (b,), generator=g)
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None]) / 16
    blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3).contiguous(), groups=3)
    noisy = (images + 0.06 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    return torch.where((kind == 1)[:, None, None, None], blurred, torch.where((kind == 2)[:, None, None, None], noisy, images))


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--target", type=float, default=0.995, help="stop early once held-out accuracy reaches this")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--heldout", type=int, default=2000)
    p.add_argument("--smoke", action="store_true", help="3 tiny steps, for CI")
    p.add_argument("--out", default="weights/tn_glyph_judge.safetensors")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.heldout = 3, 16, 50
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    judge = GlyphJudge()
    opt = torch.optim.AdamW(judge.parameters(), lr=args.lr, weight_decay=1e-4)
    held_x, held_y = make_batch(args.heldout, HELDOUT_SEED)
    g, clock = torch.Generator().manual_seed(1), Clock()
    for step in range(args.steps):
        x, y = make_batch(args.batch, seed=step)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup=min(100, args.steps // 10 + 1))
        loss = F.cross_entropy(judge(augment(x, g)), y, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            judge.eval()
            acc = judge_accuracy(judge, held_x, held_y)
            judge.train()
            print(f"step {step} loss {loss.item():.4f} heldout_acc {acc:.4f} t {clock():.0f}s", flush=True)
            if acc >= args.target and step >= 300:
                args.steps = step + 1
                break
    judge.eval()
    acc = judge_accuracy(judge, held_x, held_y)
    size = save_fp16(judge, args.out, {"tn_kind": "judge", "class_names": json.dumps(CLASS_NAMES),
                                        "image_size": str(IMAGE_SIZE), "heldout_accuracy": f"{acc:.4f}",
                                        "train_steps": str(args.steps), "train_seconds": f"{clock():.0f}"})
    print(f"saved {args.out} ({size} bytes): heldout accuracy {acc:.4f} on {args.heldout} samples, {clock():.0f}s")
    return {"heldout_accuracy": acc, "seconds": clock()}


if __name__ == "__main__":
    main()
