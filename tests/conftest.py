"""Shared pytest setup.

- Puts the repo root on sys.path so tests can `from models.dit import DiT`.
- `comfy` (session fixture): a real ComfyUI server with this pack in custom_nodes, from
  $TN_COMFYUI_DIR (python: $TN_COMFYUI_PYTHON) or <repo>/.comfyui (scripts/setup.sh).
  Tests using it are marked `comfy` automatically: select with `-m comfy`, skip with
  `-m "not comfy"`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
for p in (str(REPO_ROOT), str(TESTS_DIR)):
    if p not in sys.path:
        sys.path.insert(0, p)

from comfy_harness import ComfyServer, default_comfyui_dir  # noqa: E402


class _RepoRootIsNotAPackage:
    """The repo root has the pack's __init__.py (ComfyUI imports it; it needs `comfy`).

    pytest would make the root a Package and import that __init__.py before any test;
    collect the root as a plain directory instead. Registered as a global plugin because
    hooks in this conftest only apply to paths under tests/."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent: pytest.Collector):
        if path == REPO_ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "comfy: starts a real ComfyUI server (slow)")
    if not config.pluginmanager.has_plugin("tn-repo-root-dir"):
        config.pluginmanager.register(_RepoRootIsNotAPackage(), "tn-repo-root-dir")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if {"comfy", "comfyui_dir"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.comfy)


@pytest.fixture(scope="session")
def comfyui_dir() -> Path:
    """The ComfyUI checkout under test; fails (never skips) when it is missing."""
    d = default_comfyui_dir()
    if not (d / "main.py").is_file():
        pytest.fail(
            f"No ComfyUI found at {d}. Run `bash scripts/setup.sh` (installs a pinned ComfyUI "
            "into .comfyui/) or set TN_COMFYUI_DIR to a ComfyUI checkout.",
            pytrace=False,
        )
    return d


@pytest.fixture(scope="session")
def comfy(comfyui_dir: Path):
    """A running ComfyUI server (tests/comfy_harness.ComfyServer), shared by the session."""
    server = ComfyServer(comfyui_dir)
    try:
        server.start(timeout=180)
    except Exception as e:  # noqa: BLE001 - turn any start-up problem into a clear failure
        server.cleanup()
        pytest.fail(f"could not start ComfyUI from {comfyui_dir}: {e}", pytrace=False)
    yield server
    server.cleanup()
