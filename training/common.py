"""Shared helpers for the demo-model training scripts: seeding, fp16 safetensors export, EMA, logging."""
from __future__ import annotations

import json
import os
import time

import torch
from safetensors.torch import save_file

HELDOUT_SEED = 1_000_000_007  # real samples for evaluation come from seeds never used in training


def save_fp16(model_or_sd: torch.nn.Module | dict[str, torch.Tensor], path: str, metadata: dict[str, object]) -> int:
    """Save float tensors as fp16 (integer buffers unchanged) with string metadata; returns the file size in bytes."""
    sd = model_or_sd.state_dict() if isinstance(model_or_sd, torch.nn.Module) else model_or_sd
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in sd.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(sd, path, metadata=meta)
    return os.path.getsize(path)


def args_json(args, drop: tuple[str, ...] = ("smoke", "out")) -> str:
    """A trainer's parsed arguments as JSON for the file's metadata (`train_args`), less run-only ones."""
    return json.dumps({k: v for k, v in vars(args).items() if k not in drop})


def load_init(model: torch.nn.Module, path: str) -> tuple[int, float, str]:
    """Continue training from a saved checkpoint of the same architecture (fp16 -> the model's dtype, strict keys).

    Returns (train_steps, train_seconds, train_device) recorded in its metadata, to carry into the new file's
    metadata (files from before train_device was recorded were trained on the CPU).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    own = model.state_dict()
    sd = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v for k, v in load_file(path).items()}
    model.load_state_dict(sd)
    return int(meta.get("train_steps", 0)), float(meta.get("train_seconds", 0)), meta.get("train_device", "cpu")


def chroma(images: torch.Tensor) -> torch.Tensor:
    """Colour apart from lightness: each pixel of images (B, 3, H, W) minus its mean over R, G, B."""
    return images - images.mean(1, keepdim=True)


def chroma_ratio(rec: torch.Tensor, x: torch.Tensor) -> float:
    """Colour spread of reconstructions rec over that of the inputs x (both (B, 3, H, W)): 1 = colours kept,
    0 = greyscale."""
    return (chroma(rec).std() / chroma(x).std()).item()


def _render(spec: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    from demo.glyphs import make_batch
    torch.set_num_threads(1)
    return make_batch(*spec)


def render_batches(specs: list[tuple[int, int]], workers: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """make_batch(n, seed) for each (n, seed) in `specs`, in order; `workers` > 1 renders in that many processes.

    The glyphs are the same either way (each batch depends only on its seed). Call it before CUDA is initialised:
    the worker processes are forked.
    """
    if workers <= 1 or len(specs) <= 1:
        from demo.glyphs import make_batch
        return [make_batch(*spec) for spec in specs]
    import multiprocessing as mp
    with mp.get_context("fork").Pool(min(workers, len(specs))) as pool:
        return pool.map(_render, specs)


def pick_device(name: str) -> torch.device:
    """--device argument -> torch.device, with a clear error when CUDA is asked for and absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: this torch has no CUDA device (torch {torch.__version__})")
    return device


def train_device_label(device: torch.device, earlier: str = "") -> str:
    """What a checkpoint was trained on, for its metadata ('cpu', 'NVIDIA H100 80GB HBM3', 'cpu then ...')."""
    here = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return f"{earlier} then {here}" if earlier and earlier != here else here


class EMA:
    """Exponential moving average of a model's floating parameters (decay per step); buffers are copied as they are.

    Buffers are not averaged: they are not trained, and averaging would break some (VAR's block-causal mask holds
    -inf, and lerp(-inf, -inf) is NaN).
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.params = {k for k, v in model.named_parameters() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, decay: float | None = None) -> None:
        d = self.decay if decay is None else decay
        for k, v in model.state_dict().items():
            if k in self.params:
                self.shadow[k].lerp_(v, 1 - d)
            else:
                self.shadow[k].copy_(v)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup to `peak`, then cosine decay to peak / 20 at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item()))


class Clock:
    """Wall time since construction, for logs and the train_seconds metadata."""

    def __init__(self):
        self.start = time.time()

    def __call__(self) -> float:
        return time.time() - self.start
