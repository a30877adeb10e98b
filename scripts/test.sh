#!/usr/bin/env bash
# THE test command: set up (idempotent), then run pytest on tests/ with the repo venv.
#   bash scripts/test.sh                 # everything (the `comfy` tests start a real ComfyUI)
#   bash scripts/test.sh -m "not comfy"  # skip the ComfyUI server tests
#   bash scripts/test.sh tests/test_comfy_server.py -x
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

# Run tests/ unless a path to test was given.
targets=(tests)
for a in "$@"; do
    if [[ "$a" != -* && -e "${a%%::*}" ]]; then
        targets=()
        break
    fi
done
exec "$ROOT/.venv/bin/python" -m pytest -q "${targets[@]}" "$@"
