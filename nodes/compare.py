"""Side-by-side comparison of branches (any paradigm): labelled grid + a table of the statistics the generators measured."""
from __future__ import annotations

import json
import os

from ..models.checkpoint import CheckpointError, load_state_dict
from ..models.judge import GlyphJudge
from ..report.compare import Row, judge_accuracy, labelled_grid, markdown_table, table_image
from ..report.stats import RunStats
from .common import CATEGORY, NodeInputError, choices, resolve

CAT = f"{CATEGORY}/compare"
MAX_ROWS = 8
MAX_LABEL = 200  # characters per row label: the label strip sets the width of the grid image


class TNJudge:
    def __init__(self, net: GlyphJudge, class_names: list[str], image_size: int, name: str):
        self.net, self.class_names, self.image_size, self.name = net, class_names, image_size, name


class TN_JudgeLoader:
    TITLE = "TN Judge Loader"
    DESCRIPTION = ("Loads a classifier that scores whether generated images show the requested class (the bundled glyph "
                   "judge: 99.9% on held-out real glyphs). TN Compare reports its accuracy for rows whose model has the "
                   "judge's classes.")
    CATEGORY = CAT
    FUNCTION = "load"
    RETURN_TYPES = ("TN_JUDGE",)
    OUTPUT_TOOLTIPS = ("The judge.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"judge_name": (choices("judge", "classifiers"), {"tooltip": "Bundled tn_* judges."})}}

    def load(self, judge_name):
        path = resolve("TN_JudgeLoader", "judge_name", judge_name, "judge", "classifiers")
        try:
            sd, meta = load_state_dict(path)
            net = GlyphJudge.from_state_dict(sd)
        except (CheckpointError, ValueError, KeyError) as e:
            raise NodeInputError("TN_JudgeLoader", "judge_name", f"{os.path.basename(path)} is not a glyph judge: {e}") from None
        names = json.loads(meta.get("class_names", "[]")) or [str(i) for i in range(net.head.out_features)]
        return (TNJudge(net.requires_grad_(False), names, int(meta.get("image_size", 32)), judge_name),)


class TN_Compare:
    TITLE = "TN Compare"
    DESCRIPTION = ("Compares up to 8 branches side by side: one labelled row of images per branch, and a table of what the "
                   "generators measured themselves (network evaluations per image, sequential passes, steps or tokens, wall "
                   "time) plus judge accuracy when a judge knows the model's classes. Connect each branch's images and the "
                   "stats output of its sampler / decoder.")
    CATEGORY = CAT
    FUNCTION = "compare"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("grid", "table_image", "table")
    OUTPUT_TOOLTIPS = ("One row per branch, labelled.", "The statistics table drawn as an image.",
                       "The statistics table as Markdown text.")

    @classmethod
    def INPUT_TYPES(cls):
        optional = {}
        for i in range(1, MAX_ROWS + 1):
            if i > 1:
                optional[f"images_{i}"] = ("IMAGE", {"tooltip": f"Images of branch {i} (same batch size as images_1)."})
            optional[f"stats_{i}"] = ("TN_STATS", {"tooltip": f"Stats output of the sampler / decoder that made branch {i}."})
        optional["labels"] = ("STRING", {"default": "", "multiline": True, "tooltip": (
            f"Row labels, one per line, at most {MAX_LABEL} characters each (empty lines and missing lines: the label "
            "the stats carry, else 'branch N').")})
        optional["judge"] = ("TN_JUDGE", {"tooltip": "Optional: a judge (TN Judge Loader) to score class fidelity."})
        return {"required": {
            "images_1": ("IMAGE", {"tooltip": "Images of branch 1 (one column per sample)."}),
            "columns": ("INT", {"default": 10, "min": 1, "max": 256, "tooltip": "Images per row before wrapping."}),
            "scale": ("INT", {"default": 4, "min": 1, "max": 32, "tooltip": "Integer enlargement of every tile."}),
        }, "optional": optional}

    def compare(self, images_1, columns, scale, labels="", judge=None, **branches):
        node = "TN_Compare"
        given = [l.strip() for l in labels.splitlines()]
        if len(labels) > (MAX_LABEL + 2) * MAX_ROWS * 2 or any(len(l) > MAX_LABEL for l in given):
            longest = max(len(l) for l in given) if given else 0
            raise NodeInputError(node, "labels", f"a label may have at most {MAX_LABEL} characters (they set the image "
                                 f"width); got {longest} characters in one line, {len(labels)} in all")
        rows = []
        batch = images_1.shape[0]
        for i in range(1, MAX_ROWS + 1):
            images = images_1 if i == 1 else branches.get(f"images_{i}")
            stats = branches.get(f"stats_{i}")
            if images is None:
                if stats is not None:
                    raise NodeInputError(node, f"stats_{i}", f"is connected but images_{i} is not; connect the images of that branch")
                continue
            if images.ndim != 4 or images.shape[-1] != 3:
                raise NodeInputError(node, f"images_{i}", f"expected RGB images [B,H,W,3], got {list(images.shape)}")
            if images.shape[0] != batch:
                raise NodeInputError(node, f"images_{i}", f"has {images.shape[0]} images but images_1 has {batch}; expected "
                                     "the same batch size in every row (one column per sample)")
            run = None
            if stats is not None:
                run = RunStats(**stats)
                if run.batch != images.shape[0]:
                    raise NodeInputError(node, f"stats_{i}", f"describe a batch of {run.batch} but images_{i} has "
                                         f"{images.shape[0]}; expected the stats of the node that made these images")
            label = given[i - 1] if i - 1 < len(given) and given[i - 1] else run.label if run else f"branch {i}"
            acc = None
            if judge is not None and run is not None and run.class_ids and run.class_names == judge.class_names:
                acc = judge_accuracy(judge.net, images, run.class_ids, judge.image_size)
            rows.append(Row(label, images, run, acc))
        text = markdown_table(rows)
        grid = labelled_grid(rows, columns=columns, scale=scale)
        return {"ui": {"text": [text]}, "result": (grid, table_image(rows), text)}


NODES = [TN_JudgeLoader, TN_Compare]
