"""Faster 3x3 convolutions on the CPU for the tokenizers' decoders: NNPACK's Winograd kernels.

A VQ decoder at 256 px spends almost all its CPU time in 3x3, stride-1 convolutions over large feature maps (VAR's
`vae_ch160v4096z32` decoder: ~300 GFLOP per image, 92% of it in oneDNN's direct convolution, which already runs near
this machine's float32 matrix-multiply peak). Winograd's minimal filtering (Lavin & Gray 2016, arXiv:1509.09308,
F(6x6, 3x3) as NNPACK implements it) computes the same convolution with ~4x fewer multiplications. Measured on a
2-core AMD EPYC, one thread: 2.5-3x faster at 64-256 px feature maps, slower below 16x16 (so those stay on oneDNN;
with two threads, below 24x24).

Numerics: the result is the same convolution up to float32 rounding, but Winograd rounds more: against a float64
reference one convolution's largest error is ~1e-5 of its output range (oneDNN's: ~2e-6), and a whole random-weight
256-px VAR decode differs from oneDNN's by ~2e-6 in [-1, 1], far below an 8-bit pixel step (see
tests/test_fast_conv.py). Memory: NNPACK's transform buffers cost extra while a convolution runs (a 512-px VAR
decode, as for var_d36: peak RSS 2.3 GB instead of 1.8 GB, 14.3 s instead of 30.2 s on two threads). Only the
decoders (tokens -> pixels) use it: encoders and quantizers keep torch's kernels, so token ids are still exactly those
of the official code (a nearest-code choice could flip at a near-tie under different rounding).

`Conv2d` below is a drop-in nn.Conv2d (same parameters and state-dict keys); `use_winograd(decoder)` switches the
plain nn.Conv2d layers of a decoder to it. It takes the Winograd route only when all of these hold, and otherwise
runs nn.Conv2d unchanged: a CPU float32 input, no autograd (training is untouched), a 3x3 kernel with stride 1,
dilation 1, groups 1 and zero padding, feature maps at least 16x16 (24x24 when torch runs more than one thread),
a torch whose NNPACK initialised on this CPU, and the switch on. The switch: `TN_WINOGRAD=0` in the environment, or
`set_enabled(False)` / `with exact():`, restores oneDNN everywhere.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

MIN_SIZE = 16  # below this feature-map side NNPACK's transforms cost more than they save (measured; see docstring)
MIN_SIZE_THREADED = 24  # with more than one thread: NNPACK splits a 16x16 map poorly (measured, 2 threads: oneDNN
# 0.8-0.93x NNPACK's time at 160-640 channels on 16x16, NNPACK 1.4-2x faster from 24x24 up)
_state = {"enabled": os.environ.get("TN_WINOGRAD", "1").strip().lower() not in ("0", "false", "no", "off"),
          "available": None}


def min_size() -> int:
    """The smallest feature-map side that takes the Winograd route at the current torch thread count."""
    return MIN_SIZE if torch.get_num_threads() <= 1 else MIN_SIZE_THREADED


def available() -> bool:
    """Whether this torch has NNPACK and it initialised on this CPU (it needs AVX2 on x86; checked once)."""
    if _state["available"] is None:
        try:
            _state["available"] = bool(torch._nnpack_available())
        except (AttributeError, RuntimeError):
            _state["available"] = False
    return _state["available"]


def enabled() -> bool:
    """Whether eligible convolutions take the Winograd route now."""
    return _state["enabled"] and available()


def set_enabled(on: bool) -> None:
    """Turn the Winograd route on or off for the whole process."""
    _state["enabled"] = bool(on)


@contextlib.contextmanager
def exact(on: bool = True) -> Iterator[None]:
    """Inside, every convolution runs through torch's default kernels (when `on`); the switch is restored on exit."""
    before = _state["enabled"]
    _state["enabled"] = before and not on
    try:
        yield
    finally:
        _state["enabled"] = before


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int = 1
                     ) -> torch.Tensor:
    """3x3 stride-1 convolution of x (B, Cin, H, W) with weight (Cout, Cin, 3, 3) via NNPACK -> (B, Cout, H', W').

    NNPACK's single-image inference kernel is several times faster than its batched one, so batches run per image.
    """
    pad = [padding, padding]
    x = x.contiguous()
    if x.shape[0] == 1:
        return torch._nnpack_spatial_convolution(x, weight, bias, pad)
    return torch.cat([torch._nnpack_spatial_convolution(x[i:i + 1], weight, bias, pad) for i in range(x.shape[0])])


def use_winograd(module: nn.Module) -> nn.Module:
    """Switch every plain nn.Conv2d inside `module` to `Conv2d` in place (parameters untouched); returns `module`."""
    for m in module.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = Conv2d
    return module


class Conv2d(nn.Conv2d):
    """nn.Conv2d whose eligible calls (see the module docstring) run through NNPACK's Winograd kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._winograd_ok(x):
            return winograd_conv3x3(x, self.weight, self.bias, self.padding[0])
        return super().forward(x)

    def _winograd_ok(self, x: torch.Tensor) -> bool:
        return (self.kernel_size == (3, 3) and self.stride == (1, 1) and self.dilation == (1, 1)
                and self.groups == 1 and self.padding_mode == "zeros" and isinstance(self.padding, tuple)
                and self.padding[0] == self.padding[1] and x.dim() == 4 and x.shape[0] > 0
                and min(x.shape[-2:]) >= min_size() and x.device.type == "cpu" and x.dtype == torch.float32
                and self.weight.dtype == torch.float32
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
                and enabled())
