#!/usr/bin/env bash
# THE main job: set up, start the pinned ComfyUI (CPU, 127.0.0.1, a free port), run every
# example workflow in workflows/api/ headless through it, save the PNGs (with the prompt and
# the UI workflow embedded, like SaveImage from the browser) to out/workflows/<stem>/, and stop
# the server again. Extra arguments go to scripts/run_workflows.py, e.g.
#   bash scripts/demo.sh --only dit_ddim_class_to_image
#   bash scripts/demo.sh --comfyui ~/ComfyUI --python ~/ComfyUI/venv/bin/python
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
exec "$ROOT/.venv/bin/python" scripts/run_workflows.py --out "$ROOT/out/workflows" "$@"
