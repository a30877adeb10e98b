"""Write the example workflows in workflows/ (UI format) and workflows/api/ (API format) from one spec each.

The UI files are what users drag into ComfyUI; the API twins are what the headless main job posts.
Widget order and slot types come from a running ComfyUI's /object_info, so the files match the nodes exactly:

    python scripts/make_workflows.py --server http://127.0.0.1:8188
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workflow_specs import WORKFLOWS  # noqa: E402

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SEED_NAMES = {"seed", "noise_seed"}


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def default_of(spec) -> object:
    """The value the frontend gives a widget the workflow does not set: its declared default, else the first choice."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in opts:
        return opts["default"]
    if isinstance(spec[0], list):
        return spec[0][0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[spec[0]]


def node_inputs(info: dict) -> list[tuple[str, tuple]]:
    out = []
    for section in ("required", "optional"):
        out += list(info["input"].get(section, {}).items())
    return out


def depth_of(nodes: dict) -> dict:
    depth = {}

    def d(key):
        if key not in depth:
            srcs = [v[0] for v in nodes[key][1].values() if isinstance(v, tuple)]
            depth[key] = 1 + max((d(s) for s in srcs), default=-1)
        return depth[key]
    for k in nodes:
        d(k)
    return depth


def build(spec: dict, object_info: dict) -> tuple[dict, dict]:
    """spec: {"nodes": {key: (class_type, {input: value | (src_key, slot)}, title?)}, "note": str} -> (ui, api)."""
    nodes = spec["nodes"]
    ids = {key: i + 1 for i, key in enumerate(nodes)}
    depth = depth_of(nodes)
    api, ui_nodes, links = {}, [], []
    per_column: dict[int, int] = {}
    out_links: dict[tuple, list] = {}
    order = sorted(nodes, key=lambda k: (depth[k], ids[k]))
    for key in order:
        cls, values = nodes[key][0], nodes[key][1]
        info = object_info[cls]
        for name in values:
            if name not in dict(node_inputs(info)):
                raise KeyError(f"{cls} has no input {name!r}")
        api_inputs, ui_inputs, widgets = {}, [], []
        for name, ispec in node_inputs(info):
            if name not in values:
                if is_widget(ispec):  # the frontend fills widgets by position: unset ones still need their default
                    widgets.append(default_of(ispec))
                    if name in SEED_NAMES:
                        widgets.append("fixed")
                continue
            v = values[name]
            if isinstance(v, tuple):
                src, slot = v
                link_id = len(links) + 1
                stype = object_info[nodes[src][0]]["output"][slot]
                links.append([link_id, ids[src], slot, ids[key], len(ui_inputs), stype])
                out_links.setdefault((src, slot), []).append(link_id)
                ui_inputs.append({"name": name, "type": ispec[0] if not isinstance(ispec[0], list) else "COMBO", "link": link_id})
                api_inputs[name] = [str(ids[src]), slot]
            else:
                if not is_widget(ispec):
                    raise TypeError(f"{cls}.{name} is a {ispec[0]} socket; it needs a link, not {v!r}")
                widgets.append(v)
                if name in SEED_NAMES:
                    widgets.append("fixed")  # the frontend's control_after_generate widget
                api_inputs[name] = v
        missing = [n for n, s in info["input"].get("required", {}).items() if n not in values]
        if missing:
            raise KeyError(f"{cls} ({key}) is missing required inputs {missing}")
        col = depth[key]
        row = per_column.get(col, 0)
        per_column[col] = row + 1
        title = nodes[key][2] if len(nodes[key]) > 2 else info.get("display_name", cls)
        api[str(ids[key])] = {"class_type": cls, "inputs": api_inputs, "_meta": {"title": title}}
        ui_nodes.append({
            "id": ids[key], "type": cls, "title": title, "pos": [40 + 340 * col, 40 + 200 * row], "size": [300, 60 + 26 * len(widgets)],
            "flags": {}, "order": len(ui_nodes), "mode": 0, "inputs": ui_inputs,
            "outputs": [{"name": n, "type": t, "links": None, "slot_index": i}
                        for i, (n, t) in enumerate(zip(info["output_name"], info["output"]))],
            "properties": {"Node name for S&R": cls}, "widgets_values": widgets,
        })
    for n in ui_nodes:
        key = next(k for k, i in ids.items() if i == n["id"])
        for o in n["outputs"]:
            o["links"] = out_links.get((key, o["slot_index"]))
    note_id = len(nodes) + 1
    ui_nodes.append({"id": note_id, "type": "Note", "pos": [40, -260], "size": [640, 220], "flags": {}, "order": len(ui_nodes),
                     "mode": 0, "properties": {"text": ""}, "widgets_values": [spec["note"]]})
    ui = {"last_node_id": note_id, "last_link_id": len(links), "nodes": ui_nodes, "links": links, "groups": [],
          "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 300]}}, "version": 0.4}
    return ui, api


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="http://127.0.0.1:8188", help="a running ComfyUI with this pack installed")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows"))
    args = ap.parse_args()
    with urllib.request.urlopen(args.server + "/object_info") as r:
        object_info = json.load(r)
    os.makedirs(os.path.join(args.out, "api"), exist_ok=True)
    for stem, spec in WORKFLOWS.items():
        ui, api = build(spec, object_info)
        for path, data in ((os.path.join(args.out, stem + ".json"), ui), (os.path.join(args.out, "api", stem + ".json"), api)):
            with open(path, "w") as f:
                json.dump(data, f, indent=1)
                f.write("\n")
        print(f"wrote {stem}: {len(api)} nodes")


if __name__ == "__main__":
    main()
