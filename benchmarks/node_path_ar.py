"""The ComfyUI path of the two autoregressive decoders, timed against the authors' code on the same weights.

Random weights at a released size (VAR-d16 with its ch160 VQ-VAE, LlamaGen GPT-B c2i 256 px with VQ-16), saved in
the published file layouts into the work folder (built once, reused), linked into ComfyUI's models/ar and models/vq
as tn_bench_*. A real ComfyUI (tests/comfy_harness.py) runs loaders -> decoder -> TN VQ Decode -> SaveImage, each
prompt timed from POST /prompt until the websocket reports it finished; a separate process
(benchmarks/official_ar_worker.py) runs the official scripts' loading and sampling on the same files and times
generate + decode + save itself. Both use the authors' default sampling settings; the contenders alternate round by
round (in a rotating order) after one untimed warm-up each. Seconds are per image.

    python -m benchmarks.node_path_ar --official-dir PATH/TO/official               # VAR + LlamaGen, batch 1 and 16
    python -m benchmarks.node_path_ar --family var --batch 1 --pairs 1 --previews both --greedy-check \\
        --official-dir PATH/TO/official
    python -m benchmarks.node_path_ar --preset tiny --pairs 2 --pairs-16 1        # quick, ComfyUI side only
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from comfy_harness import ComfyError, ComfyServer, default_comfyui_dir  # noqa: E402

WORKER = Path(__file__).resolve().parent / "official_ar_worker.py"
FAMILIES = ("var", "llamagen")
CHECKOUTS = {"var": ("VAR", "models/var.py"), "llamagen": ("LlamaGen", "autoregressive/models/generate.py")}
# The authors' defaults: VAR demo_sample.ipynb; LlamaGen sample_c2i.py.
SAMPLING = {"var": dict(cfg=4.0, top_k=900, top_p=0.95, more_smooth=False),
            "llamagen": dict(cfg=4.0, top_k=2000, top_p=1.0, temperature=1.0, cfg_interval=-1)}
# Per family and preset: what to build, the file names (as published for "full") and the worker's arguments.
PRESETS = {
    ("var", "full"): dict(var="d16", depth=16, vae_ch=160, ar="var_d16.pth", vq="vae_ch160v4096z32.pth"),
    ("var", "tiny"): dict(var="tiny", depth=4, vae_ch=32, ar="var_d4_tiny.pth", vq="vae_ch32v4096z32_tiny.pth"),
    ("llamagen", "full"): dict(gpt="GPT-B", grid=16, vocab=16384, vq_ch_mult=None, ar="c2i_B_256.pt",
                               vq="vq_ds16_c2i.pt"),
    ("llamagen", "tiny"): dict(gpt="tiny", grid=8, vocab=1024, vq_ch_mult=(1, 1, 1, 1, 1), ar="c2i_tiny_128.pt",
                               vq="vq_ds16_tiny.pt"),
}
TINY_GPT = (3, 4, 128)  # n_layer, n_head, dim: benchmarks/ar_speed_llamagen.py's tiny preset


def class_labels(batch: int) -> list[int]:
    """The classes of a batch, the same on both sides."""
    return [i * 7 % 1000 for i in range(batch)]


# ---- weights --------------------------------------------------------------------------------------------------------
def _save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".part")
    torch.save(obj, tmp)
    tmp.replace(path)  # a build cut short never leaves a file that looks finished


def build_var(spec: dict, folder: Path) -> None:
    """VAR transformer + multi-scale VQ-VAE as bare state dicts (the layout of var_d16.pth / vae_ch160v4096z32.pth)."""
    from benchmarks.ar_speed_var import _build

    vae, var = _build(SimpleNamespace(preset=spec["var"], vae_ch=spec["vae_ch"]))
    _save(vae.state_dict(), folder / spec["vq"])
    _save(var.state_dict(), folder / spec["ar"])


def build_llamagen(spec: dict, folder: Path) -> None:
    """GPT as a training checkpoint {"model", "args": Namespace} (c2i_B_256.pt) + VQ as {"model": sd}."""
    from benchmarks.ar_speed_llamagen import _build, _build_vq
    from tokenizers.llamagen_vq import LlamaGenVQ, LlamaGenVQConfig

    tiny = spec["gpt"] == "tiny"
    gpt = _build(SimpleNamespace(ckpt=None, preset=spec["gpt"], vocab=spec["vocab"], grid=spec["grid"]))
    sd = gpt.state_dict()
    if tiny:  # a stored RoPE table (as some exports carry) tells our loader the head count of this non-preset size
        sd["freqs_cis"] = gpt.freqs_cis.clone()
    args = argparse.Namespace(gpt_model="GPT-tiny" if tiny else spec["gpt"], gpt_type="c2i",
                              image_size=16 * spec["grid"], downsample_size=16, cls_token_num=1, num_classes=1000,
                              vocab_size=spec["vocab"], codebook_size=spec["vocab"], codebook_embed_dim=8)
    _save({"model": sd, "steps": 0, "args": args}, folder / spec["ar"])
    if spec["vq_ch_mult"] is None:
        vq = _build_vq(spec["vocab"])
    else:  # a narrow VQ-16 (same levels and downsampling, 128 channels throughout), randomized like _build_vq
        torch.manual_seed(1)
        mult = spec["vq_ch_mult"]
        vq = LlamaGenVQ(LlamaGenVQConfig(codebook_size=spec["vocab"], encoder_ch_mult=mult, decoder_ch_mult=mult))
        with torch.no_grad():
            for p in vq.parameters():
                p.copy_(torch.randn_like(p) / max(1, p[0].numel()) ** 0.5 if p.ndim > 1
                        else 1 + 0.1 * torch.randn_like(p))
    _save({"model": vq.state_dict()}, folder / spec["vq"])


def ensure_weights(family: str, preset: str, folder: Path) -> dict[str, Path]:
    """{"ar": path, "vq": path} in `folder`, built unless both files are there already."""
    spec = PRESETS[family, preset]
    paths = {k: folder / spec[k] for k in ("ar", "vq")}
    if not all(p.is_file() for p in paths.values()):
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        print(f"building {family} {preset} weights into {folder} ...", flush=True)
        with torch.no_grad():
            (build_var if family == "var" else build_llamagen)(spec, folder)
        print(f"  built in {time.monotonic() - t0:.0f}s", flush=True)
    return paths


def link_models(comfyui_dir: Path, files: dict[str, dict[str, Path]], stack: contextlib.ExitStack) -> dict:
    """Symlink the files into <comfyui>/models/{ar,vq} as tn_bench_<name>; removed when `stack` closes.

    Returns {family: {"ar": link name, "vq": link name}}."""
    names = {}
    for family, paths in files.items():
        names[family] = {}
        for kind, path in paths.items():
            folder = comfyui_dir / "models" / kind
            if not folder.is_dir():
                folder.mkdir(parents=True)
                stack.callback(lambda f=folder: f.rmdir() if f.is_dir() and not any(f.iterdir()) else None)
            link = folder / f"tn_bench_{path.name}"
            if link.is_symlink() and link.resolve() == path.resolve():
                pass  # left by a run that was killed hard: reuse it, remove it at the end
            elif link.exists() or link.is_symlink():
                raise FileExistsError(f"{link} exists and is not a link to {path}; move it aside")
            else:
                link.symlink_to(path.resolve())
            stack.callback(lambda p=link: p.unlink() if p.is_symlink() else None)
            names[family][kind] = link.name
    return names


# ---- ComfyUI side -----------------------------------------------------------------------------------------------
def graph(family: str, names: dict, batch: int, seed: int, sampling: dict) -> dict:
    """Loaders -> decoder -> TN VQ Decode -> SaveImage, in API format (node ids per family, so both stay cached)."""
    def node(cls, **inputs):
        return {"class_type": cls, "inputs": inputs}

    f = family
    decoder = "TN_VARScaleDecoder" if family == "var" else "TN_ARTokenDecoder"
    return {
        f"{f}_vq": node("TN_VQLoader", vq_name=names["vq"], weight_dtype="auto"),
        f"{f}_ar": node("TN_ARModelLoader", model_name=names["ar"], weight_dtype="auto"),
        f"{f}_gen": node(decoder, model=[f"{f}_ar", 0], vq=[f"{f}_vq", 0], class_index=0, seed=seed,
                         class_indices=",".join(map(str, class_labels(batch))), batch_size=batch, **sampling),
        f"{f}_img": node("TN_VQDecode", vq=[f"{f}_vq", 0], tokens=[f"{f}_gen", 0]),
        f"{f}_save": node("SaveImage", images=[f"{f}_img", 0], filename_prefix=f"tn_bench_{f}"),
    }


class TimedComfy:
    """A ComfyUI server and one websocket kept open on it, to time prompts from POST /prompt to the end message."""

    def __init__(self, label: str, server: ComfyServer):
        import websocket

        self.label, self.server = label, server
        self.client_id = uuid.uuid4().hex
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={self.client_id}")

    def run(self, prompt: dict, timeout: float) -> tuple[float, dict]:
        """(seconds until the websocket said the prompt finished, its outputs). Raises ExecutionFailed."""
        self.ws.settimeout(timeout)
        t0 = time.perf_counter()
        prompt_id = self.server.queue(prompt, client_id=self.client_id)
        while True:
            frame = self.ws.recv()
            if not isinstance(frame, str):
                continue  # a binary preview image
            msg = json.loads(frame)
            data = msg.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            kind = msg.get("type")
            if kind in ("execution_success", "execution_error", "execution_interrupted") or \
                    (kind == "executing" and data.get("node") is None):
                break
        seconds = time.perf_counter() - t0
        return seconds, self.server.wait(prompt_id, timeout=60)["outputs"]

    def close(self) -> None:
        self.ws.close()


def start_servers(mode: str, comfyui_dir: Path, stack: contextlib.ExitStack) -> list[TimedComfy]:
    """"off": ComfyUI's default (no previews); "on": --preview-method auto; "both": two servers."""
    labels = {"off": ["comfy_off"], "on": ["comfy_on"], "both": ["comfy_off", "comfy_on"]}[mode]
    out = []
    for label in labels:
        server = ComfyServer(comfyui_dir, extra_args=["--preview-method", "auto"] if label == "comfy_on" else [])
        stack.callback(server.cleanup)
        t0 = time.monotonic()
        server.start(timeout=300)
        print(f"{label}: ComfyUI up on {server.base_url} in {time.monotonic() - t0:.0f}s "
              f"(extra args {server.extra_args or 'none'})", flush=True)
        client = TimedComfy(label, server)
        stack.callback(client.close)
        out.append(client)
    return out


# ---- official side ----------------------------------------------------------------------------------------------
def official_checkout(official_dir: Path, family: str) -> Path:
    """DIR/VAR or DIR/LlamaGen, or DIR itself when it is that checkout."""
    name, marker = CHECKOUTS[family]
    for d in (official_dir / name, official_dir):
        if (d / marker).is_file():
            return d
    raise FileNotFoundError(f"no {name} checkout at {official_dir} or {official_dir / name} (looked for {marker})")


class OfficialWorker:
    """benchmarks/official_ar_worker.py in a subprocess (same python), one JSON line each way per request."""

    def __init__(self, family: str, preset: str, files: dict[str, Path], checkout: Path, threads: int,
                 log_path: Path):
        spec = PRESETS[family, preset]
        cmd = [sys.executable, str(WORKER), "--official-dir", str(checkout), "--family", family,
               "--threads", str(threads)]
        if family == "var":
            cmd += ["--var-ckpt", str(files["ar"]), "--vae-ckpt", str(files["vq"]), "--depth", str(spec["depth"]),
                    "--vae-ch", str(spec["vae_ch"])]
        else:
            cmd += ["--gpt-ckpt", str(files["ar"]), "--vq-ckpt", str(files["vq"]), "--codebook-size",
                    str(spec["vocab"]), "--image-size", str(16 * spec["grid"]), "--downsample-size", "16"]
            if spec["gpt"] == "tiny":
                cmd += ["--gpt-dims", ",".join(map(str, TINY_GPT)),
                        "--vq-ch-mult", ",".join(map(str, spec["vq_ch_mult"]))]
            else:
                cmd += ["--gpt-model", spec["gpt"]]
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, cwd=log_path.parent, start_new_session=True)
        self.info = self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"official worker exited (code {self.proc.returncode}):\n{self.log_tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"official worker failed:\n{answer['error']}")
        return answer

    def run(self, **request) -> float:
        """Seconds the worker measured around generate + decode + save."""
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._answer()["seconds"]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # only our own child, by its handle
                self.proc.wait(10)
        self._log.close()


# ---- the benchmark ----------------------------------------------------------------------------------------------
def _png(path_or_bytes) -> np.ndarray:
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    return np.asarray(Image.open(src).convert("RGB")).astype(np.int16)


def compare_pngs(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Max |difference| in 8-bit levels, the share of pixels (any channel) that differ, and how often each signed
    difference (ours - official) occurs: ComfyUI's SaveImage truncates to 8 bits, LlamaGen's save_image rounds, so
    identical tokens leave -1 / 0 there."""
    if ours.shape != theirs.shape:
        return {"shape_ours": list(ours.shape), "shape_official": list(theirs.shape), "match": False}
    diff = ours - theirs
    values, counts = np.unique(diff, return_counts=True)
    return {"max_abs_diff_levels": int(np.abs(diff).max()),
            "pct_pixels_differing": float((diff != 0).any(-1).mean() * 100),
            "signed_diff_counts": {str(v): int(c) for v, c in zip(values, counts)}}


def run_family(family: str, names: dict, clients: list[TimedComfy], worker: OfficialWorker | None, args,
               png_dir: Path, seeds) -> dict:
    """Warm-ups, then for each batch `pairs` rounds of every ComfyUI server and the worker in turn; greedy check."""
    sampling = SAMPLING[family]
    warm = min(args.batch)

    def comfy(client, batch, overrides=None):
        seconds, outputs = client.run(graph(family, names, batch, next(seeds), {**sampling, **(overrides or {})}),
                                      args.timeout)
        images = outputs[f"{family}_save"]["images"]
        if len(images) != batch:
            raise RuntimeError(f"{client.label}: expected {batch} images, got {len(images)}")
        return seconds, images

    def official(batch, overrides=None, out=None):
        out = out or png_dir / f"official_{family}_b{batch}.png"
        return worker.run(classes=class_labels(batch), seed=next(seeds), out=str(out),
                          **{**sampling, **(overrides or {})})

    for client in clients:
        t0 = time.monotonic()
        comfy(client, warm)
        print(f"  warm-up {client.label} (batch {warm}): {time.monotonic() - t0:.1f}s", flush=True)
    if worker:
        print(f"  warm-up official (batch {warm}): {official(warm):.1f}s", flush=True)

    result = {"family": family, "sampling": sampling, "batches": []}
    for batch in args.batch:
        pairs = args.pairs if batch == 1 else args.pairs_16
        runs: dict[str, list[float]] = {c.label: [] for c in clients}
        if worker:
            runs["official"] = []
        contenders = [(c.label, lambda b, c=c: comfy(c, b)[0]) for c in clients]
        if worker:
            contenders.append(("official", official))
        for r in range(pairs):  # the order rotates round by round, so no contender always follows the same one
            k = r % len(contenders)
            for label, run in contenders[k:] + contenders[:k]:
                runs[label].append(run(batch) / batch)
            print(f"  {family} batch {batch} round {r + 1}/{pairs}: "
                  + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()) + " s/image", flush=True)
        med = {k: statistics.median(v) for k, v in runs.items()}
        ratios = {f"official/{k}": med["official"] / med[k] for k in med if k != "official" and "official" in med}
        if "comfy_on" in med and "comfy_off" in med:
            ratios["comfy_on/comfy_off"] = med["comfy_on"] / med["comfy_off"]
        result["batches"].append({"batch": batch, "pairs": pairs, "seconds_per_image": runs,
                                  "median_seconds_per_image": med, "ratios": ratios})

    if args.greedy_check:
        client = clients[0]
        _, images = comfy(client, 1, {"top_k": 1})
        ours = _png(client.server.view(images[0]))
        Image.fromarray(ours.astype(np.uint8)).save(png_dir / f"{client.label}_{family}_greedy.png")
        result["greedy_check"] = {"skipped": "no --official-dir"}
        if worker:
            out = png_dir / f"official_{family}_greedy.png"
            official(1, {"top_k": 1}, out)
            result["greedy_check"] = compare_pngs(ours, _png(out))
    return result


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or platform.machine())


def _comfyui_version(comfyui_dir: Path) -> str | None:
    """comfyui_version.py of newer ComfyUI, else the source setup.sh unpacked the pinned one from."""
    version_py, source = comfyui_dir / "comfyui_version.py", comfyui_dir / ".tn-comfyui-source"
    if version_py.is_file():
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_py.read_text())
        return m.group(1) if m else None
    return source.read_text().strip() if source.is_file() else None


def machine_info(comfyui_dir: Path, threads: int, worker_info: dict) -> dict:
    return {"cpu": _cpu_model(), "nproc": len(os.sched_getaffinity(0)), "torch": torch.__version__,
            "torch_threads_comfyui": torch.get_num_threads(),  # torch's default here is ComfyUI's (same torch, env)
            "torch_threads_official": {k: v.get("threads") for k, v in worker_info.items()} or None,
            "requested_threads_official": threads or "torch default", "python": platform.python_version(),
            "comfyui_dir": str(comfyui_dir), "comfyui_version": _comfyui_version(comfyui_dir)}


def _commit(path: Path) -> str | None:
    r = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                       check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def print_summary(results: list[dict]) -> None:
    for fam in results:
        for b in fam["batches"]:
            print(f"{fam['family']} batch {b['batch']}, median of {b['pairs']} (s/image): " + "; ".join(
                f"{k} {b['median_seconds_per_image'][k]:.2f} [{', '.join(f'{x:.2f}' for x in v)}]"
                for k, v in b["seconds_per_image"].items()))
            if b["ratios"]:
                print("    " + ", ".join(f"{k} x{v:.2f}" for k, v in b["ratios"].items())
                      + "  (official/ours > 1: ours faster)")
        if "greedy_check" in fam:
            print(f"{fam['family']} greedy (top_k 1, batch 1) ComfyUI vs official PNG: {fam['greedy_check']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--pairs", type=int, default=5, help="rounds at batch 1")
    ap.add_argument("--pairs-16", type=int, default=2, help="rounds at larger batches")
    ap.add_argument("--previews", default="off", choices=["off", "on", "both"],
                    help="off: ComfyUI's default; on: --preview-method auto; both: two servers, alternated")
    ap.add_argument("--official-dir", type=Path, default=None,
                    help="folder with the VAR and LlamaGen checkouts (or one checkout); omitted: ComfyUI side only")
    ap.add_argument("--preset", default="full", choices=["full", "tiny"],
                    help="full: VAR-d16 + GPT-B c2i 256 px at the published sizes; tiny: small models for checks")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the official worker (0 = torch default)")
    ap.add_argument("--greedy-check", action="store_true", help="also compare one top_k=1 image of both sides")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "node_path_ar", help="weights and PNGs go here")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: <work>/results.json)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per prompt")
    args = ap.parse_args(argv)
    args.batch = sorted(set(args.batch))
    args.work = args.work.resolve()
    out_path = (args.out or args.work / "results.json").resolve()
    comfyui_dir = default_comfyui_dir()
    torch.set_grad_enabled(False)

    files = {f: ensure_weights(f, args.preset, args.work / args.preset) for f in args.family}
    png_dir = args.work / "png"
    png_dir.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()
    atexit.register(stack.close)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below runs
    seeds = iter(range(1, 1 << 30))
    results, worker_info, checkouts = [], {}, {}
    try:
        names = link_models(comfyui_dir, files, stack)
        clients = start_servers(args.previews, comfyui_dir, stack)
        for family in args.family:
            worker = None
            if args.official_dir:
                checkout = official_checkout(args.official_dir.resolve(), family)
                checkouts[family] = {"path": str(checkout), "commit": _commit(checkout)}
                t0 = time.monotonic()
                worker = OfficialWorker(family, args.preset, files[family], checkout, args.threads,
                                        args.work / f"worker_{family}.log")
                stack.callback(worker.close)
                worker_info[family] = worker.info
                print(f"official {family} worker ready in {time.monotonic() - t0:.0f}s ({worker.info})", flush=True)
            print(f"{family}: timing {', '.join(c.label for c in clients)}"
                  + (", official" if worker else "") + f" at batch {args.batch}", flush=True)
            results.append(run_family(family, names[family], clients, worker, args, png_dir, seeds))
            if worker:
                worker.close()
    except ComfyError as e:
        print(f"ComfyUI prompt failed:\n{e}", file=sys.stderr)
        return 1
    finally:
        stack.close()

    machine = machine_info(comfyui_dir, args.threads, worker_info)
    print(f"machine: {machine['cpu']}, nproc {machine['nproc']}, torch {machine['torch']} "
          f"({machine['torch_threads_comfyui']} threads in ComfyUI = torch default; official "
          f"{machine['torch_threads_official'] or '-'}), ComfyUI {machine['comfyui_version']} at {comfyui_dir}")
    print_summary(results)
    report = {"machine": machine, "preset": args.preset, "previews": args.previews, "official": checkouts or None,
              "class_labels": "i * 7 % 1000 for image i", "results": results,
              "argv": sys.argv[1:] if argv is None else argv}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
