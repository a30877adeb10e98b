"""Run statistics recorded by the generation nodes themselves (TN_STATS), so comparison tables show measured numbers.

Definitions (the same for every paradigm):
- network_evals: forward evaluations of the network per image, counting the conditional and the unconditional
  branch of classifier-free guidance separately (a batched cond+uncond pass counts 2).
- sequential_passes: forward calls that must run one after another (a batched cond+uncond pass counts 1). This is
  the latency-bound depth of the sampler: denoising steps (x evaluations per step), tokens, or scales.
- units / unit: what one sequential step produces: "denoising steps" (diffusion), "tokens" (raster AR: tokens per
  image), "scales" (VAR, with `tokens` = all tokens of all scales).
- wall_seconds: wall time of the generation node for the whole batch (decoding to pixels not included).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class RunStats:
    label: str
    paradigm: str
    batch: int
    network_evals: float = 0.0
    sequential_passes: int = 0
    units: int = 0
    unit: str = ""
    tokens: int | None = None
    wall_seconds: float = 0.0
    class_ids: list[int] | None = None  # per image; None = unknown / unconditional
    class_names: list[str] | None = None  # the model's class list
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class ForwardCounter:
    """Counts forward calls of a module and the rows they processed (rows / batch = branches per call)."""

    def __init__(self):
        self.calls = 0
        self.rows = 0

    def hook(self, module, args, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        self.calls += 1
        self.rows += int(out.shape[0]) if torch.is_tensor(out) and out.ndim else 1

    def evals_per_image(self, batch: int) -> float:
        return self.rows / max(batch, 1)


@contextmanager
def count_forward(module: torch.nn.Module):
    """with count_forward(net.head) as c: ...  -> c.calls, c.rows."""
    counter = ForwardCounter()
    handle = module.register_forward_hook(counter.hook)
    try:
        yield counter
    finally:
        handle.remove()


class Stopwatch:
    """Wall time of a block, synchronising CUDA so asynchronous kernels are included."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else None
        self.seconds = 0.0

    def _sync(self):
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> "Stopwatch":
        self._sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._t0
