"""Every example workflow in the real ComfyUI web frontend, driven by headless Chromium.

For each UI-format workflows/*.json (globbed, so new workflows are covered as they land):
- the frontend loads it with every node type registered, no missing-nodes or error dialog,
  the node and link counts of the file, and no console error;
- the prompt the frontend builds from it is its API twin workflows/api/<stem>.json (inputs the
  twin leaves out at their declared defaults), so users run what the headless job runs;
- queued from the frontend (app.queuePrompt, as the Queue button does), it runs to success
  on the server and its SaveImage nodes write PNGs that carry the frontend's workflow;
- a PNG written the way the main job writes it (scripts/run_workflows.py: API prompt plus
  the UI workflow as extra_pnginfo) has `prompt` and `workflow` tEXt chunks, and dropping
  it on the frontend (app.handleFile, the drag-and-drop path) restores that graph. One
  workflow is enough here: the chunk is the UI file itself (asserted), which the tests above
  load for every workflow, and tests/test_workflows.py checks the chunks of every workflow.

Needs Debian's `chromium` (/usr/bin/chromium, or $TN_CHROMIUM; scripts/setup.sh installs
it) and fails, never skips, without it. One ComfyUI (the session's `comfy`) and one browser
page serve the whole module.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import os
import struct
from collections import Counter
from pathlib import Path

import pytest

from cdp import DEFAULT_CHROMIUM, Chromium, find_chromium
from comfy_harness import PACK_DIR_NAME

pytestmark = pytest.mark.comfy

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
STEMS = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
# The quickest run, mixing core and pack nodes (any workflow would do; see the docstring).
PNG_STEMS = [s for s in ("dit_core_ksampler",) if s in STEMS] or STEMS[:1]
BROWSER_PREFIX = "tn_browser/"  # SaveImage subfolder for runs queued from the browser
# A browser asks every site for /favicon.ico; ComfyUI (2024) has none. Not about our workflows.
BENIGN_ERRORS = ("/favicon.ico",)

# Helpers installed into the page as window.__tn. Written for the legacy frontend of the
# pinned ComfyUI (web/scripts/app.js) and the current one (comfyui-frontend-package):
# graph.links is an object keyed by link id there (with holes) and a Map here.
PAGE_HELPERS = r"""
window.__tn = (() => {
  const nodes = () => app.graph._nodes ?? app.graph.nodes ?? [];
  const links = () => {
    const l = app.graph.links ?? {};
    return (l instanceof Map ? [...l.values()] : Object.values(l)).filter((x) => x != null);
  };
  const registered = () => LiteGraph.registered_node_types;
  // Missing-node, load-error and rejected-prompt messages: legacy .comfy-modal, current PrimeVue dialogs.
  const dialogs = () => [...document.querySelectorAll(".comfy-modal, .p-dialog")]
    .filter((el) => el.checkVisibility()).map((el) => el.innerText.trim());
  const closeDialogs = () => app.ui?.dialog?.close?.();
  const state = () => ({
    nodes: nodes().length,
    links: links().length,
    types: nodes().map((n) => n.type),
    unregistered: nodes().filter((n) => !(n.type in registered())).map((n) => n.type),
    broken: nodes().filter((n) => n.has_errors).map((n) => n.type),
    dialogs: dialogs(),
  });
  return {
    state,
    registeredTypes: () => Object.keys(registered()),
    async load(workflow) {
      closeDialogs();
      const missing = [...new Set(workflow.nodes.map((n) => n.type))].filter((t) => !(t in registered()));
      await app.loadGraphData(workflow);
      const prompt = (await app.graphToPrompt()).output;  // what the Queue button would send
      return { missing, prompt, ...state() };
    },
    async dropPng(b64, name) {
      closeDialogs();
      app.graph.clear();
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      await app.handleFile(new File([bytes], name, { type: "image/png" }));
      return state();
    },
    async queue(prefix) {
      closeDialogs();
      for (const node of nodes().filter((n) => n.type === "SaveImage")) {
        const w = node.widgets.find((w) => w.name === "filename_prefix");
        w.value = prefix + w.value;
      }
      // app.queuePrompt does not return the prompt id: read it from the server's answer.
      const api = app.api ?? (await import("/scripts/api.js")).api;
      const answers = [];
      const queuePrompt = api.queuePrompt;
      api.queuePrompt = async function (...args) {
        const answer = await queuePrompt.apply(this, args);
        answers.push(answer);
        return answer;
      };
      try {
        await app.queuePrompt(0, 1);
      } finally {
        api.queuePrompt = queuePrompt;
      }
      return { answers, dialogs: dialogs() };
    },
  };
})();
true
"""


def js_call(fn: str, *args) -> str:
    """A JavaScript expression calling window.__tn.<fn> with JSON arguments."""
    return f"window.__tn.{fn}({', '.join(json.dumps(a) for a in args)})"


def png_text_chunks(data: bytes) -> dict[str, str]:
    """{keyword: text} of a PNG's tEXt chunks (the only text chunks ComfyUI writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"tEXt":
            key, _, text = body.partition(b"\0")
            chunks[key.decode("latin-1")] = text.decode("latin-1")
        pos += 12 + length  # length, type, data, CRC
    return chunks


def prompt_differences(api: dict, sent: dict, object_info: dict) -> list[str]:
    """How the frontend's prompt differs from the API twin; inputs the twin leaves out must be
    at the default the node declares (the frontend always sends every widget)."""
    if set(api) != set(sent):
        return [f"node ids: API twin {sorted(api, key=int)}, frontend {sorted(sent, key=int)}"]
    diffs = []
    for node_id in sorted(api, key=int):
        cls, want, got = api[node_id]["class_type"], api[node_id]["inputs"], sent[node_id]["inputs"]
        if sent[node_id]["class_type"] != cls:
            diffs.append(f"node {node_id}: API twin {cls}, frontend {sent[node_id]['class_type']}")
            continue
        spec = object_info[cls]["input"]
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for name in sorted(set(want) | set(got)):
            if name in want:
                expected, source = want[name], "the API twin has"
            else:
                ispec = declared.get(name, [None])
                opts = ispec[1] if len(ispec) > 1 and isinstance(ispec[1], dict) else {}
                expected = opts.get("default", ispec[0][0] if isinstance(ispec[0], list) else None)
                if expected is None:
                    continue  # no declared default to compare with
                source = "the API twin leaves it at the default"
            if got.get(name, "<nothing>") != expected:
                diffs.append(f"node {node_id} ({cls}) {name}: the frontend sends {got.get(name, '<nothing>')!r}, "
                             f"{source} {expected!r}")
    return diffs


def new_errors(browser: Chromium, since: int) -> list[str]:
    """Console errors and exceptions recorded since index `since`, benign ones left out."""
    browser.drain()
    return [e for e in browser.errors[since:] if not any(b in e for b in BENIGN_ERRORS)]


def _main_job():
    """scripts/run_workflows.py as a module: its run_one() is how the main job writes PNGs."""
    spec = importlib.util.spec_from_file_location("tn_run_workflows", ROOT / "scripts" / "run_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        where = os.environ.get("TN_CHROMIUM") or DEFAULT_CHROMIUM
        pytest.fail(f"no Chromium at {where}: the browser test needs Debian's `chromium` package "
                    "(or $TN_CHROMIUM set to a Chromium). Run `bash scripts/setup.sh` as root, or "
                    "`sudo apt-get install -y chromium`.", pytrace=False)
    chromium = Chromium(binary)
    try:
        try:
            chromium.start()
        except Exception as e:  # noqa: BLE001 - a clear failure instead of a fixture error
            pytest.fail(f"could not start {binary}: {e}", pytrace=False)
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, comfy) -> Chromium:
    """The ComfyUI frontend, set up (extensions loaded, node types registered)."""
    # The current frontend greets a new user with its Templates dialog (until Comfy.TutorialCompleted is set);
    # mark the tutorial done, as a returning user has it, so a dialog on load means a problem with a workflow.
    comfy._request("POST", "/settings/Comfy.TutorialCompleted", True)
    browser.navigate(comfy.base_url + "/")
    # The legacy index.html sets window.app after app.setup() finished.
    try:
        browser.wait_for("window.app?.graph != null && 'SaveImage' in (window.LiteGraph?.registered_node_types ?? {})",
                         timeout=120)
    except TimeoutError:
        browser.drain()
        pytest.fail(f"the ComfyUI frontend at {comfy.base_url} did not finish setting up; page errors:\n"
                    + "\n".join(browser.errors), pytrace=False)
    browser.evaluate(PAGE_HELPERS)
    return browser


@pytest.fixture(scope="module")
def object_info(comfy) -> dict:
    return comfy.object_info()


@pytest.fixture(scope="module", params=STEMS)
def stem(request) -> str:
    """Module scope, so pytest runs the tests of one workflow back to back: the main-job run
    then finds the browser run's results in the server's cache where their inputs agree."""
    return request.param


def test_frontend_registers_every_node_type_without_errors(page, object_info):
    registered = set(page.evaluate(js_call("registeredTypes")))
    missing = sorted(set(object_info) - registered)
    assert not missing, f"node types the server offers but the frontend did not register: {missing}"
    ours = [e for e in new_errors(page, 0) if "TN_" in e or PACK_DIR_NAME in e]
    assert not ours, "frontend errors about the pack at start-up:\n" + "\n".join(ours)


def test_workflow_loads_and_runs_from_the_frontend(page, comfy, stem):
    workflow = json.loads((WORKFLOWS / f"{stem}.json").read_text())
    since = len(page.errors)

    state = page.evaluate(js_call("load", workflow))
    assert not state["missing"], f"node types unknown to the frontend: {state['missing']}"
    assert not state["unregistered"] and not state["broken"], state
    assert not state["dialogs"], f"the frontend showed a dialog on load: {state['dialogs']}"
    assert (state["nodes"], state["links"]) == (len(workflow["nodes"]), len(workflow["links"]))
    assert Counter(state["types"]) == Counter(n["type"] for n in workflow["nodes"])

    queued = page.evaluate(js_call("queue", BROWSER_PREFIX), timeout=120)
    assert not queued["dialogs"], f"the frontend showed a dialog on queue: {queued['dialogs']}"
    assert len(queued["answers"]) == 1, f"the frontend queued {len(queued['answers'])} prompts"
    answer = queued["answers"][0]
    assert not answer.get("node_errors"), answer

    outputs = comfy.wait(answer["prompt_id"], timeout=600)["outputs"]
    assert comfy.image_files(outputs), "the workflow produced no image"
    for node in (n for n in workflow["nodes"] if n["type"] == "SaveImage"):
        images = outputs.get(str(node["id"]), {}).get("images", [])
        assert images, f"SaveImage node {node['id']} saved nothing"
        for info in images:
            path = comfy.output_dir / info["subfolder"] / info["filename"]
            assert info["subfolder"] == BROWSER_PREFIX.rstrip("/") and path.is_file(), info
            saved = json.loads(png_text_chunks(path.read_bytes())["workflow"])
            assert len(saved["nodes"]) == len(workflow["nodes"]), "the PNG carries another graph"

    errors = new_errors(page, since)
    assert not errors, "frontend errors while loading / running the workflow:\n" + "\n".join(errors)


def test_frontend_prompt_is_the_api_twin(page, object_info, stem):
    workflow = json.loads((WORKFLOWS / f"{stem}.json").read_text())
    api = json.loads((WORKFLOWS / "api" / f"{stem}.json").read_text())
    sent = page.evaluate(js_call("load", workflow))["prompt"]
    diffs = prompt_differences(api, sent, object_info)
    assert not diffs, ("the UI workflow runs something else than its API twin (widgets_values are "
                       "matched to widgets by position):\n" + "\n".join(diffs))


@pytest.mark.parametrize("stem", PNG_STEMS, indirect=True)
def test_main_job_png_restores_the_graph_when_dropped(page, comfy, stem, tmp_path):
    api_path, ui_path = WORKFLOWS / "api" / f"{stem}.json", WORKFLOWS / f"{stem}.json"
    workflow, prompt = json.loads(ui_path.read_text()), json.loads(api_path.read_text())
    files = _main_job().run_one(comfy, stem, api_path, ui_path, tmp_path, timeout=600)
    pngs = [f for f in files if f.suffix == ".png" and not f.name.startswith("preview_")]
    assert pngs, f"the main job saved no PNG: {files}"
    since = len(page.errors)

    for png in pngs:
        chunks = png_text_chunks(png.read_bytes())
        assert {"prompt", "workflow"} <= set(chunks), f"{png.name} has text chunks {sorted(chunks)}"
        assert json.loads(chunks["workflow"]) == workflow, f"{png.name} carries another workflow"
        embedded = json.loads(chunks["prompt"])
        assert {k: (v["class_type"], v["inputs"]) for k, v in embedded.items()} == \
            {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()}, f"{png.name} carries another prompt"

        state = page.evaluate(js_call("dropPng", base64.b64encode(png.read_bytes()).decode(), png.name))
        assert not state["unregistered"] and not state["broken"], state
        assert not state["dialogs"], f"the frontend showed a dialog for {png.name}: {state['dialogs']}"
        assert (state["nodes"], state["links"]) == (len(workflow["nodes"]), len(workflow["links"])), png.name
        assert Counter(state["types"]) == Counter(n["type"] for n in workflow["nodes"])

    errors = new_errors(page, since)
    assert not errors, "frontend errors while loading the PNG:\n" + "\n".join(errors)
