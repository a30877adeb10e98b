"""Faster nn.Linear on the CPU for token-by-token decoding: weights pre-packed once for oneDNN.

Decoding one token (or one small scale) at a time multiplies a handful of rows by every weight matrix. On the CPU,
torch's default route for such skinny products (MKL sgemm on the row-major weight) streams the weights well below
the memory bandwidth; oneDNN with the weight reordered into its blocked layout once up front does the same float32
arithmetic about 1.3-1.8x faster at 2-32 rows (measured on a 2-core AMD EPYC, one thread; see
benchmarks/ar_speed_*.py). The result differs from F.linear only in summation order (float32 rounding).

`packed_linears(module)` is a context manager: inside it, every float32 CPU nn.Linear of the module runs through
the packed weight; on exit the modules are as before and the packed copies are freed. The packing costs one pass
over the weights (about 0.1 s per 100 MB) and as much memory again as the linear weights while it is active.
Anything else (CUDA, half precision, a torch without oneDNN, or `enabled=False`) runs unchanged.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def available() -> bool:
    """Whether this torch has the oneDNN packed-linear ops (torch >= 2.0 built with mkldnn)."""
    ops = getattr(torch.ops, "mkldnn", None)
    return (torch.backends.mkldnn.is_available() and ops is not None
            and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise"))


def _packable(m: nn.Module) -> bool:
    w = m.weight
    return w.device.type == "cpu" and w.dtype == torch.float32 and "forward" not in m.__dict__


class _Packed:
    """The packed state of one weight (or several stacked): packs on call number `pack_at` and runs through the
    packed copy from then on. Single layers pack at their second call: a layer used once per generation (VAR's
    class AdaLN projections) is not worth a reorder pass."""

    def __init__(self, weight_fn, rows_hint: int, pack_at: int = 2):
        self.weight_fn, self.rows_hint, self.pack_at, self.calls, self.weight = weight_fn, rows_hint, pack_at, 0, None

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        if self.weight is None and self.calls >= self.pack_at:
            try:
                self.weight = torch.ops.mkldnn._reorder_linear_weight(self.weight_fn().detach(), self.rows_hint)
            except RuntimeError:  # an unusual shape or build: keep this layer on the default route
                self.calls = -(2**62)
        if self.weight is None or x.dtype != torch.float32 or x.device.type != "cpu":
            return F.linear(x, self.weight_fn(), bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, bias, "none", [], "")


@contextlib.contextmanager
def packed_linears(module: nn.Module, rows_hint: int = 2, enabled: bool = True) -> Iterator[int]:
    """Run the float32 CPU nn.Linear layers of `module` through oneDNN with pre-packed weights; yields how many.

    rows_hint: the typical number of rows per call (oneDNN picks its blocking from it; results do not depend on it).
    Only under torch.no_grad() (the packed op has no backward), so training is never affected. Each layer is
    packed at its second call, so layers run once cost nothing extra. A model that calls F.linear on a layer's
    weight itself (with a bias assembled at call time) can use `m._tn_packed(x, bias)` when the layer has one.
    A module that lists bias-free sibling layers reading the same input in `tn_fused_linears` (e.g. ("w1", "w3")
    of a SwiGLU) gets `_tn_fused(x)`: one packed product whose output is their outputs side by side.
    """
    patched: list[nn.Module] = []
    fused: list[nn.Module] = []
    if enabled and available() and not torch.is_grad_enabled():
        hint = max(1, int(rows_hint))
        for m in module.modules():
            names = getattr(m, "tn_fused_linears", ())
            parts = [getattr(m, n, None) for n in names]
            if parts and all(isinstance(p, nn.Linear) and p.bias is None and _packable(p) for p in parts):
                m._tn_fused = _Packed(lambda parts=parts: torch.cat([p.weight for p in parts]), hint, pack_at=1)
                fused.append(m)
            if isinstance(m, nn.Linear) and _packable(m):
                packed = _Packed(lambda m=m: m.weight, hint)
                m._tn_packed = packed
                m.forward = _forward(packed, m)  # instance attribute shadows nn.Linear.forward
                patched.append(m)
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward, m._tn_packed
        for m in fused:
            del m._tn_fused


def _forward(packed: _Packed, m: nn.Linear):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return packed(x, m.bias)
    return forward
