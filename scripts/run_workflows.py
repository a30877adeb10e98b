#!/usr/bin/env python3
"""Run the example workflows headless through a real ComfyUI and save their images.

For every workflows/api/<stem>.json (API format) it posts the prompt to ComfyUI's /prompt
together with the UI twin workflows/<stem>.json as extra_pnginfo.workflow, so the saved PNGs
carry both `prompt` and `workflow` chunks exactly like SaveImage from the browser (drag one
back into ComfyUI to get the graph). Images land in <out>/<stem>/.

    python scripts/run_workflows.py                       # start .comfyui, run all, stop it
    python scripts/run_workflows.py --only dit_ddim_class_to_image --out out/workflows
    python scripts/run_workflows.py --comfyui ~/ComfyUI --python ~/ComfyUI/venv/bin/python
    python scripts/run_workflows.py --server http://127.0.0.1:8188   # use a running server

Standard library only (the server client lives in tests/comfy_harness.py).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from comfy_harness import ComfyError, ComfyServer, default_comfyui_dir  # noqa: E402


class _RunningServer(ComfyServer):
    """Client for a server someone else started (nothing to start or stop)."""

    def __init__(self, url: str):
        super().__init__(comfyui_dir=ROOT, port=1)
        parts = urllib.parse.urlsplit(url)
        self.base_url = f"{parts.scheme or 'http'}://{parts.netloc}"
        self.port = parts.port or 80

    def start(self, timeout: float = 30.0) -> "_RunningServer":
        self.object_info("SaveImage")
        return self

    def stop(self, grace: float = 0.0) -> None:
        pass


def find_workflows(root: Path, only: list[str] | None) -> list[tuple[str, Path, Path | None]]:
    """[(stem, api json, UI json or None)] for <root>/api/*.json, filtered by --only."""
    api_dir = root / "api"
    found = {p.stem: p for p in sorted(api_dir.glob("*.json"))}
    if only:
        missing = [s for s in only if s not in found]
        if missing:
            raise SystemExit(f"unknown workflow(s) {missing}; available: {sorted(found)}")
        found = {s: found[s] for s in only}
    out = []
    for stem, api in found.items():
        ui = root / f"{stem}.json"
        out.append((stem, api, ui if ui.is_file() else None))
    return out


def run_one(server: ComfyServer, stem: str, api_path: Path, ui_path: Path | None,
            out_dir: Path, timeout: float) -> list[Path]:
    """Queue one workflow, wait for it and write its images to out_dir/<stem>/; returns the files."""
    prompt = json.loads(api_path.read_text())
    extra = {"extra_pnginfo": {"workflow": json.loads(ui_path.read_text())}} if ui_path else None
    outputs = server.wait(server.queue(prompt, extra_data=extra), timeout=timeout)["outputs"]
    dest = out_dir / stem
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    written = []
    for info, raw in server.image_files(outputs):
        name = info["filename"] if info.get("type", "output") == "output" else f"preview_{info['filename']}"
        path = dest / name
        path.write_bytes(raw)
        written.append(path)
    for node_id, out in outputs.items():  # text outputs (TN Compare's table) next to the images
        for i, text in enumerate(out.get("text") or []):
            path = dest / f"table_{node_id}{f'_{i}' if i else ''}.md"
            path.write_text(text + "\n")
            print(f"[{stem}] table of node {node_id}:\n{text}", flush=True)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", type=Path, default=None,
                    help="ComfyUI folder to start (default: $TN_COMFYUI_DIR or <repo>/.comfyui)")
    ap.add_argument("--python", default=None,
                    help="python that runs ComfyUI (default: $TN_COMFYUI_PYTHON or this interpreter)")
    ap.add_argument("--port", type=int, default=None, help="port for the server we start (default: a free one)")
    ap.add_argument("--server", default=None, help="URL of an already running ComfyUI to use instead")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "workflows", help="where <stem>/ folders go")
    ap.add_argument("--workflows", type=Path, default=ROOT / "workflows",
                    help="folder with api/<stem>.json and UI twins <stem>.json (default: <repo>/workflows)")
    ap.add_argument("--only", action="append", metavar="STEM", help="run only this workflow (repeatable)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per workflow")
    ap.add_argument("--keep-log", action="store_true", help="copy the server log to <out>/server.log")
    args = ap.parse_args(argv)

    workflows = find_workflows(args.workflows, args.only)
    if not workflows:
        print(f"no workflows found in {args.workflows / 'api'}", file=sys.stderr)
        return 1
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)

    if args.server:
        server: ComfyServer = _RunningServer(args.server)
    else:
        comfyui = args.comfyui.resolve() if args.comfyui else default_comfyui_dir()
        server = ComfyServer(comfyui, python=args.python, port=args.port)
        print(f"starting ComfyUI from {comfyui} on {server.base_url} ...", flush=True)
    t0 = time.monotonic()
    try:
        server.start(timeout=300)
    except Exception as e:  # noqa: BLE001
        print(f"ComfyUI did not start: {e}", file=sys.stderr)
        server.cleanup()
        return 1
    print(f"ComfyUI ready in {time.monotonic() - t0:.0f}s", flush=True)

    failures = []
    try:
        for stem, api, ui in workflows:
            t = time.monotonic()
            print(f"[{stem}] running{'' if ui else ' (no UI twin: PNGs get no workflow chunk)'} ...",
                  flush=True)
            try:
                files = run_one(server, stem, api, ui, args.out, args.timeout)
            except (ComfyError, TimeoutError) as e:
                failures.append(stem)
                print(f"[{stem}] FAILED after {time.monotonic() - t:.0f}s:\n{e}", file=sys.stderr, flush=True)
                continue
            print(f"[{stem}] {len(files)} image(s) in {time.monotonic() - t:.0f}s -> {args.out / stem}",
                  flush=True)
            if not files:
                failures.append(stem)
                print(f"[{stem}] FAILED: the workflow produced no image", file=sys.stderr)
    finally:
        if args.keep_log and not args.server:
            shutil.copyfile(server.log_path, args.out / "server.log")
        if failures and not args.server:
            print(f"--- server log tail ---\n{server.log_tail(40)}", file=sys.stderr)
        server.cleanup()

    ok = len(workflows) - len(failures)
    print(f"{ok}/{len(workflows)} workflows ran; images in {args.out}")
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
