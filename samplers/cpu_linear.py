"""Faster nn.Linear on the CPU for token-by-token decoding: weights pre-packed once for oneDNN.

Decoding one token (or one small scale) at a time multiplies a handful of rows by every weight matrix. On the CPU,
torch's default route for such skinny products (MKL sgemm on the row-major weight) streams the weights well below
the memory bandwidth; oneDNN with the weight reordered into its blocked layout once up front does the same float32
arithmetic about 1.3-1.8x faster at 2-32 rows (measured on a 2-core AMD EPYC, one thread; see
benchmarks/ar_speed_*.py). The result differs from F.linear only in summation order (float32 rounding).

`packed_linears(module)` is a context manager: inside it, every float32 CPU nn.Linear of the module runs through
the packed weight; on exit the modules run as before. The packing costs one pass over the weights (about 0.1 s per
100 MB; 0.25-0.4 s of a 12-13 s VAR-d16 image on two threads) and as much memory again as the linear weights. With
`keep=True` the packed copies stay with their layers after the context (a plain attribute, never in the state
dict), so the next generation with the same model starts packed; a kept copy is used only while its weight is
unchanged (same storage, version counter, shape, dtype and sampled values, and the same rows hint), is replaced
when the weight changes, and is dropped when the layer is no longer a float32 CPU layer or by
`release_packed(module)`. Packs are kept only while they take at most a quarter of the memory the system reports
available (`KEEP_FRACTION`), so a large model on a small machine repacks per call instead. Anything else (CUDA, half
precision, a torch without oneDNN, or `enabled=False`) runs unchanged.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


def available() -> bool:
    """Whether this torch has the oneDNN packed-linear ops (torch >= 2.0 built with mkldnn)."""
    ops = getattr(torch.ops, "mkldnn", None)
    return (torch.backends.mkldnn.is_available() and ops is not None
            and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise"))


KEEP_FRACTION = 0.25  # kept packs may take at most this share of the memory the system reports available
_KEPT = "_tn_kept_pack"  # attribute of the layer (or the fusing module) holding (key, packed weight)


def _packable(m: nn.Module) -> bool:
    w = m.weight
    return w.device.type == "cpu" and w.dtype == torch.float32 and "forward" not in m.__dict__


def available_memory() -> int | None:
    """Bytes the system reports available (Linux MemAvailable, else psutil), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no psutil or no reading: unknown
        return None


def _weight_key(weights: list[torch.Tensor], rows_hint: int) -> tuple:
    """What a packed copy depends on: the storage, in-place version, shape and dtype of each weight, a sample of its
    values, and the hint. Tensors made under torch.inference_mode (ComfyUI runs its nodes, loaders included, in it)
    track no version, so for them the sample (every 251st value, exact float sum) is what notices an in-place change."""
    def one(w: torch.Tensor) -> tuple:
        version = None if w.is_inference() else w._version
        sample = w.detach().reshape(-1)[::251].double().sum().item()
        return (w.data_ptr(), version, tuple(w.shape), w.dtype, sample)
    return (rows_hint, *(one(w) for w in weights))


class _Packed:
    """The packed state of one weight (or several stacked): packs on call number `pack_at` and runs through the
    packed copy from then on. Single layers pack at their second call: a layer used once per generation (VAR's
    class AdaLN projections) is not worth a reorder pass. `owner` is the module a kept copy is stored on."""

    def __init__(self, weights_fn: Callable[[], list[torch.Tensor]], rows_hint: int, owner: nn.Module,
                 pack_at: int = 2):
        self.weights_fn, self.rows_hint, self.owner, self.pack_at = weights_fn, rows_hint, owner, pack_at
        self.calls, self.weight, self.key, self.new = 0, None, None, False
        kept = owner.__dict__.get(_KEPT)
        if kept is not None:
            if kept[0] == _weight_key(weights_fn(), rows_hint):
                self.key, self.weight = kept
            else:  # stale (the weight changed): free it now
                del owner.__dict__[_KEPT]

    def weight_fn(self) -> torch.Tensor:
        ws = self.weights_fn()
        return ws[0] if len(ws) == 1 else torch.cat(ws)

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        if self.weight is None and self.calls >= self.pack_at:
            try:
                self.key = _weight_key(self.weights_fn(), self.rows_hint)
                self.weight = torch.ops.mkldnn._reorder_linear_weight(self.weight_fn().detach(), self.rows_hint)
                self.new = True
            except RuntimeError:  # an unusual shape or build: keep this layer on the default route
                self.calls = -(2**62)
        if self.weight is None or x.dtype != torch.float32 or x.device.type != "cpu":
            return F.linear(x, self.weight_fn(), bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, bias, "none", [], "")

    def keep(self) -> None:
        self.owner.__dict__[_KEPT] = (self.key, self.weight)


def release_packed(module: nn.Module) -> int:
    """Free the packed copies kept on the layers of `module`; returns how many were freed."""
    n = 0
    for m in module.modules():
        if m.__dict__.pop(_KEPT, None) is not None:
            n += 1
    return n


@contextlib.contextmanager
def packed_linears(module: nn.Module, rows_hint: int = 2, enabled: bool = True, keep: bool = False
                   ) -> Iterator[int]:
    """Run the float32 CPU nn.Linear layers of `module` through oneDNN with pre-packed weights; yields how many.

    rows_hint: the typical number of rows per call (oneDNN picks its blocking from it; results do not depend on it).
    keep: leave the packed copies on the layers for the next call (see the module docstring).
    Only under torch.no_grad() (the packed op has no backward), so training is never affected. Each layer is
    packed at its second call, so layers run once cost nothing extra. A model that calls F.linear on a layer's
    weight itself (with a bias assembled at call time) can use `m._tn_packed(x, bias)` when the layer has one.
    A module that lists bias-free sibling layers reading the same input in `tn_fused_linears` (e.g. ("w1", "w3")
    of a SwiGLU) gets `_tn_fused(x)`: one packed product whose output is their outputs side by side.
    """
    patched: list[nn.Module] = []
    fused: list[nn.Module] = []
    packs: list[_Packed] = []
    if enabled and available() and not torch.is_grad_enabled():
        hint = max(1, int(rows_hint))
        for m in module.modules():
            names = getattr(m, "tn_fused_linears", ())
            parts = [getattr(m, n, None) for n in names]
            if parts and all(isinstance(p, nn.Linear) and p.bias is None and _packable(p) for p in parts):
                m._tn_fused = _Packed(lambda parts=parts: [p.weight for p in parts], hint, m, pack_at=1)
                packs.append(m._tn_fused)
                fused.append(m)
            elif parts:
                m.__dict__.pop(_KEPT, None)
            if isinstance(m, nn.Linear) and _packable(m):
                packed = _Packed(lambda m=m: [m.weight], hint, m)
                m._tn_packed = packed
                m.forward = _forward(packed, m)  # instance attribute shadows nn.Linear.forward
                packs.append(packed)
                patched.append(m)
            elif isinstance(m, nn.Linear):  # moved off the CPU or cast: a kept copy is useless now
                m.__dict__.pop(_KEPT, None)
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward, m._tn_packed
        for m in fused:
            del m._tn_fused
        if keep:
            new_bytes = sum(sum(w.numel() for w in p.weights_fn()) * 4 for p in packs if p.new)
            avail = available_memory()
            if avail is None or new_bytes <= KEEP_FRACTION * avail:
                for p in packs:
                    if p.weight is not None:
                        p.keep()


def _forward(packed: _Packed, m: nn.Linear):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return packed(x, m.bias)
    return forward
