"""The speed benchmarks run (tiny shapes, CPU) and time their contenders alternately."""
import json
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.timing import time_alternating

ROOT = Path(__file__).resolve().parents[1]


def test_contenders_alternate_and_report_medians():
    calls = []
    fns = {"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}
    t = time_alternating(fns, torch.device("cpu"), repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # one warm-up each, then rounds in turn
    assert len(t["a"].runs) == 3 and t["a"].out == 1 and t["b"].out == 2 and t["a"].peak_mib is None
    assert t["a"].seconds == sorted(t["a"].runs)[1]


def _run(module: str, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_llamagen_speed_script_runs():
    out = _run("benchmarks.ar_speed_llamagen", "--preset", "tiny", "--grid", "4", "--vocab", "64", "--batch", "2",
               "--repeats", "2", "--device", "cpu", "--threads", "1")
    assert "ours:" in out and "images/s" in out and "median of 2 alternating runs" in out
    assert "tokens only: ours" in out and "tokens/s" in out  # decoded images by default, token phase on its own
    out = _run("benchmarks.ar_speed_llamagen", "--preset", "tiny", "--grid", "4", "--vocab", "64", "--batch", "1",
               "--repeats", "1", "--device", "cpu", "--threads", "1", "--no-decode")
    assert "tokens/s" in out and "images/s" not in out


def test_var_speed_script_runs():
    out = _run("benchmarks.ar_speed_var", "--preset", "tiny", "--vae-ch", "32", "--batch", "1", "--repeats", "1",
               "--device", "cpu", "--threads", "1")
    assert "ours:" in out and "images/s" in out


def test_node_path_benchmark_runs_comfyui_side(comfyui_dir, tmp_path):
    """benchmarks.node_path_ar end to end on the tiny preset through a real ComfyUI, without the official side."""
    out = tmp_path / "results.json"
    _run("benchmarks.node_path_ar", "--preset", "tiny", "--batch", "1", "2", "--pairs", "1", "--pairs-16", "1",
         "--work", str(tmp_path), "--out", str(out))
    r = json.loads(out.read_text())
    assert r["machine"]["nproc"] >= 1 and r["machine"]["torch"] == torch.__version__ and r["official"] is None
    assert {f["family"] for f in r["results"]} == {"var", "llamagen"}
    for fam in r["results"]:
        assert [b["batch"] for b in fam["batches"]] == [1, 2]
        for b in fam["batches"]:
            assert list(b["seconds_per_image"]) == ["comfy_off"] and len(b["seconds_per_image"]["comfy_off"]) == 1
            assert 0 < b["median_seconds_per_image"]["comfy_off"] < 60 and b["ratios"] == {}
    for kind in ("ar", "vq"):  # the model links are gone again
        assert not list((Path(comfyui_dir) / "models" / kind).glob("tn_bench_*tiny*"))
