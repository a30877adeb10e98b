"""The pack inside a real ComfyUI: it loads, its nodes are documented, the server stays healthy.

Every test here needs a ComfyUI install (scripts/setup.sh or $TN_COMFYUI_DIR) and is
marked `comfy`.
"""
from __future__ import annotations

import io

import pytest
from PIL import Image

from comfy_harness import (PACK_DIR_NAME, ExecutionFailed, PromptRejected, import_failures,
                           introspect_pack, tracebacks)

pytestmark = pytest.mark.comfy

CATEGORY_PREFIX = "Tokens & Noise"


def _tn_nodes(object_info: dict) -> dict:
    return {k: v for k, v in object_info.items() if k.startswith("TN_")}


def _input_tooltip_problems(node_id: str, inputs: dict) -> list[str]:
    """Inputs (required/optional; hidden ones are not shown to users) without a tooltip."""
    problems = []
    for section in ("required", "optional"):
        for name, spec in (inputs.get(section) or {}).items():
            opts = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 else None
            if not isinstance(opts, dict) or not str(opts.get("tooltip") or "").strip():
                problems.append(f"{node_id}.{section}.{name}")
    return problems


@pytest.fixture(scope="module")
def tn_info(comfy) -> dict:
    return _tn_nodes(comfy.object_info())


def test_pack_nodes_are_listed(tn_info):
    assert tn_info, "no TN_ node in /object_info: the pack did not register any node"


def test_pack_imported_without_errors(comfy):
    log = comfy.startup_log
    assert not import_failures(log), "\n".join(import_failures(log))
    ours = [tb for tb in tracebacks(log) if PACK_DIR_NAME in tb or "tokens_and_noise" in tb]
    assert not ours, "traceback from the pack during start-up:\n" + "\n\n".join(ours)
    # Loaded exactly once, and never again through the .comfyui/ folder seen via the symlink.
    timings = [ln for ln in log.splitlines() if "seconds" in ln and PACK_DIR_NAME in ln]
    assert len(timings) == 1, timings
    assert f"{PACK_DIR_NAME}/.comfyui" not in log


def test_every_node_is_categorised_and_described(tn_info):
    bad = [k for k, v in tn_info.items() if not str(v.get("category", "")).startswith(CATEGORY_PREFIX)]
    assert not bad, f"category must start with {CATEGORY_PREFIX!r}: {bad}"
    bad = [k for k, v in tn_info.items() if not str(v.get("description") or "").strip()]
    assert not bad, f"empty description: {bad}"


def test_every_input_has_a_tooltip(tn_info):
    problems = [p for k, v in tn_info.items() for p in _input_tooltip_problems(k, v["input"])]
    assert not problems, f"inputs without tooltip: {problems}"


def test_output_tooltips_where_the_server_serialises_them(tn_info):
    """Current ComfyUI sends OUTPUT_TOOLTIPS as `output_tooltips`; March 2024 does not."""
    served = {k: v["output_tooltips"] for k, v in tn_info.items() if "output_tooltips" in v}
    if not served:
        pytest.skip("this ComfyUI does not serialise output_tooltips; "
                    "test_node_classes_have_output_tooltips checks the class attribute")
    bad = [k for k, tips in served.items()
           if len(tips) != len(tn_info[k]["output"]) or not all(str(t or "").strip() for t in tips)]
    assert not bad, f"missing output tooltips: {bad}"


def test_node_classes_have_output_tooltips(comfyui_dir):
    """Import the pack as ComfyUI does and read OUTPUT_TOOLTIPS off every class."""
    meta = introspect_pack(comfyui_dir)["nodes"]
    assert meta, "NODE_CLASS_MAPPINGS is empty"
    assert all(k.startswith("TN_") for k in meta), f"node ids must start with TN_: {sorted(meta)}"
    bad = []
    for k, m in meta.items():
        tips = m["output_tooltips"]
        if tips is None or len(tips) != len(m["return_types"]) or not all(str(t or "").strip() for t in tips):
            bad.append(f"{k}: RETURN_TYPES={m['return_types']} OUTPUT_TOOLTIPS={tips}")
    assert not bad, "OUTPUT_TOOLTIPS must give one non-empty text per output:\n" + "\n".join(bad)


def _save_image_prompt(width: int, prefix: str = "tn_harness") -> dict:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": 8, "batch_size": 1, "color": 0x336699}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def test_bogus_prompt_is_rejected_and_server_keeps_serving(comfy):
    with pytest.raises(PromptRejected) as exc:
        comfy.queue(_save_image_prompt(width="not a number"))
    resp = exc.value.response
    assert "error" in resp and resp["node_errors"], resp
    assert "1" in resp["node_errors"] or "2" in resp["node_errors"], resp["node_errors"]

    with pytest.raises(PromptRejected) as exc:
        comfy.queue({"1": {"class_type": "TN_NoSuchNode", "inputs": {}}})
    assert "error" in exc.value.response

    # The next valid prompt runs, and its PNG carries the prompt and the UI workflow like
    # a SaveImage from the browser does.
    workflow = {"nodes": [], "links": [], "version": 0.4, "extra": {"tn": "harness"}}
    outputs = comfy.run(_save_image_prompt(width=16), timeout=120,
                        extra_data={"extra_pnginfo": {"workflow": workflow}})
    (info, raw), = comfy.image_files(outputs)
    assert info["type"] == "output" and info["filename"].startswith("tn_harness")
    png = Image.open(io.BytesIO(raw))
    assert png.size == (16, 8)
    assert png.getpixel((0, 0))[:3] == (0x33, 0x66, 0x99)
    assert '"EmptyImage"' in png.info["prompt"]
    assert '"harness"' in png.info["workflow"]
    assert [im.size for im in comfy.images(outputs)] == [(16, 8)]


def test_runtime_error_names_the_node_and_server_recovers(comfy):
    """A node raising during execution surfaces as ExecutionFailed with its message."""
    (comfy.input_dir / "tn_not_an_image.png").write_text("this is not a PNG")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "tn_not_an_image.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "tn_never"}},
    }
    with pytest.raises(ExecutionFailed) as exc:
        comfy.run(prompt, timeout=120)
    assert "node 1 (LoadImage)" in str(exc.value)
    assert any(kind == "execution_error" for kind, _ in exc.value.messages)
    assert comfy.run(_save_image_prompt(width=8), timeout=120)["2"]["images"]


def test_websocket_reports_execution(comfy):
    outputs, messages = comfy.run_with_messages(_save_image_prompt(width=8, prefix="tn_ws"), timeout=120)
    kinds = [m["type"] for m in messages]
    assert "execution_start" in kinds
    executed = [m["data"] for m in messages if m["type"] == "executed"]
    assert [e["node"] for e in executed] == ["2"]
    assert executed[0]["output"]["images"] == outputs["2"]["images"]
    comfy.interrupt()  # nothing running: must be a harmless no-op
    assert comfy.queue_state()["queue_running"] == []
