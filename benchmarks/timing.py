"""Timing for the speed benchmarks: the contenders run alternately, so drift in the machine's speed (a shared
host's memory bandwidth, clocks) falls on both alike, and each one's median over the repeats is reported."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch


class Timing(NamedTuple):
    seconds: float  # median over the repeats
    runs: list[float]
    out: object  # the last call's result
    peak_mib: float | None  # peak GPU memory of one call (CUDA only)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_alternating(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                     warmup: bool = True) -> dict[str, Timing]:
    """One warm-up call each (unless warmup=False), then `repeats` rounds calling every fn once in turn."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    outs: dict[str, object] = {}
    peaks: dict[str, float | None] = dict.fromkeys(fns)
    if warmup:
        for fn in fns.values():
            fn()
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            t0 = time.perf_counter()
            outs[name] = fn()
            _sync(device)
            runs[name].append(time.perf_counter() - t0)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 2**20
                peaks[name] = max(peaks[name] or 0.0, peak)
    return {name: Timing(statistics.median(runs[name]), runs[name], outs[name], peaks[name]) for name in fns}


def print_comparison(t: dict[str, Timing], per_batch: float, unit: str, note: str = "") -> None:
    """Print ours (and the official loop's, with the speed ratio) as seconds per batch, each run, and `unit`/s
    for `per_batch` units per batch (e.g. tokens or images)."""
    def line(name: str) -> str:
        r = t[name]
        mem = f", peak {r.peak_mib:.0f} MiB" if r.peak_mib is not None else ""
        runs = ", ".join(f"{x:.2f}" for x in r.runs)
        return f"{r.seconds:.3f} s/batch ({note}{runs}), {per_batch / r.seconds:.2f} {unit}/s{mem}"

    print(f"ours:     {line('ours')}")
    if "official" in t:
        print(f"official: {line('official')} (ours x{t['official'].seconds / t['ours'].seconds:.2f} faster)")
