"""Start a real ComfyUI server with this pack installed and drive it over HTTP.

Used by the `comfy` pytest fixture (tests/conftest.py) and by scripts/run_workflows.py.
Standard library only at import time; `images()` needs Pillow and `progress()` needs
websocket-client, both imported lazily.

Server API used (stable from ComfyUI 2024 to today):
    POST /prompt {"prompt", "client_id", "extra_data"} -> {"prompt_id"} | 400 {"error", "node_errors"}
    GET  /history/<id> -> {id: {"prompt", "outputs", "status": {"status_str", "completed", "messages"}}}
    GET  /view?filename&subfolder&type -> file bytes
    POST /interrupt, GET /object_info, WS /ws?clientId=...
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "comfyui-tokens-and-noise"


class ComfyError(RuntimeError):
    """A prompt was rejected or failed; `.response` holds the server's JSON when there is one."""

    def __init__(self, message: str, response: dict | None = None, prompt_id: str | None = None):
        super().__init__(message)
        self.response = response
        self.prompt_id = prompt_id


class PromptRejected(ComfyError):
    """POST /prompt answered 400 (validation). `.response` = {"error": ..., "node_errors": ...}."""


class ExecutionFailed(ComfyError):
    """The prompt was accepted but a node raised or the run was interrupted.

    `.response` is the /history entry; `.messages` the status messages."""

    @property
    def messages(self) -> list:
        return ((self.response or {}).get("status") or {}).get("messages") or []


def default_comfyui_dir() -> Path:
    """$TN_COMFYUI_DIR if set, else <repo>/.comfyui (made by scripts/setup.sh)."""
    env = os.environ.get("TN_COMFYUI_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".comfyui"


def default_python() -> str:
    """$TN_COMFYUI_PYTHON if set, else the interpreter running this code."""
    return os.environ.get("TN_COMFYUI_PYTHON") or sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the process that started us dies (Linux
    PR_SET_PDEATHSIG), so a killed test run leaves no ComfyUI behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def install_pack(comfyui_dir: Path, pack_dir: Path = REPO_ROOT) -> Path | None:
    """Make sure `custom_nodes/comfyui-tokens-and-noise` in `comfyui_dir` is this pack.

    Returns the symlink it created (the caller removes it later), or None when the pack
    was already installed there (e.g. by scripts/setup.sh). Raises if that name is taken
    by something else, so two copies of the pack never load side by side."""
    custom = comfyui_dir / "custom_nodes"
    if not custom.is_dir():
        raise FileNotFoundError(f"{comfyui_dir} has no custom_nodes/ folder: is it a ComfyUI checkout?")
    link = custom / PACK_DIR_NAME
    if link.exists() or link.is_symlink():
        if link.resolve() == pack_dir.resolve():
            return None
        raise FileExistsError(
            f"{link} exists and is not this checkout ({pack_dir}); move it aside to test this one"
        )
    link.symlink_to(pack_dir.resolve(), target_is_directory=True)
    return link


class ComfyServer:
    """A ComfyUI process started by us (own process group) plus a small HTTP client."""

    def __init__(self, comfyui_dir: Path | str | None = None, python: str | None = None,
                 port: int | None = None, workdir: Path | str | None = None,
                 extra_args: list[str] | None = None):
        self.comfyui_dir = Path(comfyui_dir).resolve() if comfyui_dir else default_comfyui_dir()
        self.python = python or default_python()
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tn-comfy-"))
        self.extra_args = list(extra_args or [])
        self.log_path = self.workdir / "server.log"
        self.output_dir = self.workdir / "output"
        self.input_dir = self.workdir / "input"
        self.temp_dir = self.workdir / "temp"
        self.proc: subprocess.Popen | None = None
        self._created_link: Path | None = None
        self._log_file = None
        self.startup_log = ""  # the server log as it was when /object_info first answered

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> "ComfyServer":
        """Launch `python main.py --cpu ...` and wait until /object_info answers."""
        main_py = self.comfyui_dir / "main.py"
        if not main_py.is_file():
            raise FileNotFoundError(
                f"no ComfyUI at {self.comfyui_dir} (missing main.py): run scripts/setup.sh, "
                "or set TN_COMFYUI_DIR to a ComfyUI checkout"
            )
        self._created_link = install_pack(self.comfyui_dir)
        for d in (self.output_dir, self.input_dir, self.temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.python, str(main_py), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--output-directory", str(self.output_dir),
            "--input-directory", str(self.input_dir), "--temp-directory", str(self.temp_dir),
            *self.extra_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", DO_NOT_TRACK="1")
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=self.comfyui_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"ComfyUI exited with code {self.proc.returncode} during start-up.\n"
                    f"--- server log tail ---\n{self.log_tail()}"
                )
            try:
                info = self._get_json("/object_info", timeout=30)
                if isinstance(info, dict) and info:
                    self.startup_log = self.log()
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise TimeoutError(
                    f"ComfyUI did not answer /object_info within {timeout:.0f}s.\n"
                    f"--- server log tail ---\n{tail}"
                )
            time.sleep(0.5)

    def stop(self, grace: float = 10.0) -> None:
        """Terminate the server's process group (only ours) and undo what start() created."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(grace)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._created_link is not None:
            if self._created_link.is_symlink():
                self._created_link.unlink()
            self._created_link = None

    def cleanup(self) -> None:
        """stop() and delete the temporary work dir (log included) if we made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # ---- HTTP ------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    def _get_json(self, path: str, timeout: float = 30.0) -> Any:
        return json.loads(self._request("GET", path, timeout=timeout))

    def object_info(self, node_class: str | None = None) -> dict:
        """GET /object_info (all nodes) or /object_info/<class> -> {class: info}."""
        path = "/object_info" if node_class is None else "/object_info/" + urllib.parse.quote(node_class)
        return self._get_json(path, timeout=60)

    def queue(self, prompt: dict, extra_data: dict | None = None, client_id: str | None = None) -> str:
        """POST /prompt; returns prompt_id. Raises PromptRejected (with .response) on HTTP 400."""
        body: dict[str, Any] = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            resp = json.loads(self._request("POST", "/prompt", body))
        except urllib.error.HTTPError as e:
            raw = e.read().decode(errors="replace")
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"error": raw, "node_errors": {}}
            raise PromptRejected(f"prompt rejected (HTTP {e.code}): {format_rejection(payload)}",
                                 response=payload) from None
        if resp.get("node_errors"):
            raise PromptRejected(f"prompt rejected: {format_rejection(resp)}", response=resp)
        return resp["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        """The /history entry of one prompt, or None while it is pending or running."""
        return self._get_json("/history/" + urllib.parse.quote(prompt_id)).get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 300.0, poll: float = 0.2) -> dict:
        """Poll /history until the prompt finished; returns its entry.

        Raises ExecutionFailed with the node's exception text when it errored or was
        interrupted, TimeoutError (with the server log tail) when it takes too long."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)
            if entry is not None:
                status = entry.get("status") or {}
                if status.get("status_str", "success") != "success" or status.get("completed") is False:
                    raise ExecutionFailed(format_failure(entry), response=entry, prompt_id=prompt_id)
                return entry
            if self.proc is not None and self.proc.poll() is not None:
                raise ComfyError(f"ComfyUI died while running {prompt_id}.\n{self.log_tail()}",
                                 prompt_id=prompt_id)
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} not done after {timeout:.0f}s.\n"
                                   f"--- server log tail ---\n{self.log_tail()}")
            time.sleep(poll)

    def run(self, prompt: dict, timeout: float = 300.0, extra_data: dict | None = None) -> dict:
        """queue() + wait(); returns the outputs dict {node_id: {"images": [...], ...}}."""
        return self.wait(self.queue(prompt, extra_data), timeout)["outputs"]

    def interrupt(self) -> None:
        """POST /interrupt: stop the prompt that is running now."""
        self._request("POST", "/interrupt", {})

    def queue_state(self) -> dict:
        """GET /queue -> {"queue_running": [...], "queue_pending": [...]}."""
        return self._get_json("/queue")

    def view(self, info: dict) -> bytes:
        """Bytes of one output file described by {"filename", "subfolder", "type"}."""
        q = urllib.parse.urlencode({"filename": info["filename"], "subfolder": info.get("subfolder", ""),
                                    "type": info.get("type", "output")})
        return self._request("GET", "/view?" + q, timeout=60)

    def image_files(self, outputs: dict) -> list[tuple[dict, bytes]]:
        """[(file info, raw bytes)] for every image in `outputs`, in node-id order."""
        files = []
        for node_id in sorted(outputs, key=_node_sort_key):
            for info in outputs[node_id].get("images", []):
                files.append((info, self.view(info)))
        return files

    def images(self, outputs: dict) -> list:
        """Every image in `outputs` as a loaded PIL.Image, fetched through /view."""
        from PIL import Image

        out = []
        for _, raw in self.image_files(outputs):
            img = Image.open(io.BytesIO(raw))
            img.load()
            out.append(img)
        return out

    # ---- websocket ---------------------------------------------------------------------
    def run_with_messages(self, prompt: dict, timeout: float = 300.0,
                          extra_data: dict | None = None) -> tuple[dict, list[dict]]:
        """Run a prompt while listening on /ws; returns (outputs, JSON ws messages for it).

        Messages include {"type": "progress", "data": {"value", "max", ...}} from
        comfy.utils.ProgressBar, and {"type": "binary", "data": {"event", "payload"}} for each binary frame
        (preview images; binary frames carry no prompt id). Needs websocket-client."""
        import websocket

        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        messages: list[dict] = []
        try:
            prompt_id = self.queue(prompt, extra_data, client_id=client_id)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                frame = ws.recv()
                if not isinstance(frame, str):  # a preview image: 4-byte event type, then the payload
                    event = int.from_bytes(frame[:4], "big") if len(frame) >= 4 else -1
                    messages.append({"type": "binary", "data": {"event": event, "payload": frame[4:]}})
                    continue
                msg = json.loads(frame)
                data = msg.get("data") or {}
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                messages.append(msg)
                if msg.get("type") in ("execution_error", "execution_interrupted"):
                    break
                if msg.get("type") == "executing" and data.get("node") is None \
                        and data.get("prompt_id") == prompt_id:
                    break
                if msg.get("type") == "execution_success":
                    break
        finally:
            ws.close()
        return self.wait(prompt_id, timeout)["outputs"], messages


def _node_sort_key(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def format_rejection(payload: dict) -> str:
    """One readable text from a 400 /prompt answer: the error plus every node's errors."""
    err = payload.get("error")
    parts = []
    if isinstance(err, dict):
        parts.append(f"{err.get('message', '')} {err.get('details', '')}".strip())
    elif err:
        parts.append(str(err))
    node_errors = payload.get("node_errors") or {}
    if isinstance(node_errors, dict):
        for node_id, ne in node_errors.items():
            for e in ne.get("errors", []):
                parts.append(f"node {node_id} ({ne.get('class_type', '?')}): "
                             f"{e.get('message', '')}: {e.get('details', '')}")
    return "; ".join(p for p in parts if p) or json.dumps(payload)


def format_failure(entry: dict) -> str:
    """Readable text from a failed /history entry (execution_error / interrupted)."""
    parts = []
    for kind, data in (entry.get("status") or {}).get("messages") or []:
        if kind == "execution_error":
            parts.append(f"node {data.get('node_id')} ({data.get('node_type')}) raised "
                         f"{data.get('exception_type')}: {data.get('exception_message')}\n"
                         + "".join(data.get("traceback") or []))
        elif kind == "execution_interrupted":
            parts.append(f"interrupted at node {data.get('node_id')} ({data.get('node_type')})")
    return "\n".join(parts) or f"prompt failed: {json.dumps(entry.get('status'))}"


def import_failures(log: str, pack_dir_name: str = PACK_DIR_NAME) -> list[str]:
    """Lines of a ComfyUI log that report our pack failing to import."""
    bad = []
    for line in log.splitlines():
        if pack_dir_name in line and ("IMPORT FAILED" in line or "Cannot import" in line):
            bad.append(line.strip())
    return bad


def tracebacks(log: str) -> list[str]:
    """Every Python traceback block printed in a log (header, indented frames, final line)."""
    blocks, cur = [], None
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            if cur:
                blocks.append("\n".join(cur))
            cur = [line]
        elif cur is not None:
            cur.append(line)
            if line and not line[0].isspace():  # the exception line ends the block
                blocks.append("\n".join(cur))
                cur = None
    if cur:
        blocks.append("\n".join(cur))
    return blocks


_INTROSPECT = r"""
import importlib.util, json, os, sys
comfy_dir, pack_dir, out_path, name = sys.argv[1:5]
sys.path.insert(0, comfy_dir)
os.chdir(comfy_dir)
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
spec = importlib.util.spec_from_file_location(name, os.path.join(pack_dir, "__init__.py"))
mod = importlib.util.module_from_spec(spec)
sys.modules[name] = mod
spec.loader.exec_module(mod)
out = {}
for key, cls in mod.NODE_CLASS_MAPPINGS.items():
    out[key] = {
        "class": cls.__name__,
        "category": getattr(cls, "CATEGORY", None),
        "description": getattr(cls, "DESCRIPTION", None),
        "input": cls.INPUT_TYPES(),
        "return_types": list(getattr(cls, "RETURN_TYPES", ())),
        "return_names": list(getattr(cls, "RETURN_NAMES", ()) or []),
        "output_tooltips": (list(cls.OUTPUT_TOOLTIPS) if getattr(cls, "OUTPUT_TOOLTIPS", None) is not None else None),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        "function": getattr(cls, "FUNCTION", None),
    }
with open(out_path, "w") as f:
    json.dump({"nodes": out, "display_names": dict(getattr(mod, "NODE_DISPLAY_NAME_MAPPINGS", {}) or {})}, f, default=repr)
"""


def introspect_pack(comfyui_dir: Path | str | None = None, python: str | None = None,
                    pack_dir: Path = REPO_ROOT, timeout: float = 300.0) -> dict:
    """Import the pack the way ComfyUI does (in a fresh interpreter with ComfyUI on sys.path)
    and return its node classes' metadata: {"nodes": {id: {...}}, "display_names": {...}}.

    Covers class attributes that old ComfyUI does not put into /object_info (OUTPUT_TOOLTIPS)."""
    comfyui_dir = Path(comfyui_dir).resolve() if comfyui_dir else default_comfyui_dir()
    with tempfile.TemporaryDirectory(prefix="tn-introspect-") as td:
        out_path = Path(td) / "nodes.json"
        r = subprocess.run(
            [python or default_python(), "-c", _INTROSPECT, str(comfyui_dir), str(pack_dir.resolve()),
             str(out_path), PACK_DIR_NAME],
            capture_output=True, text=True, timeout=timeout,
            env=dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1"),
        )
        if r.returncode != 0 or not out_path.exists():
            raise RuntimeError(f"importing the pack inside ComfyUI failed (rc={r.returncode}):\n"
                               f"{r.stdout[-4000:]}\n{r.stderr[-8000:]}")
        return json.loads(out_path.read_text())
