#!/usr/bin/env python3
"""After the main job (bash scripts/demo.sh): refresh the template thumbnails and the README gallery from its output.

- workflows/<stem>.jpg: the thumbnail ComfyUI's Templates browser shows next to workflows/<stem>.json
  (current ComfyUI serves it at /api/workflow_templates/<pack folder>/<stem>.jpg).
- docs/gallery/<stem>/*.png: the PNGs the main job wrote, unchanged (they carry the workflow: drag one into ComfyUI).
- README.md, between <!-- gallery:start --> and <!-- gallery:end -->: those images, and TN Compare's table.

    python scripts/update_gallery.py [--out out/workflows]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
THUMB = (400, 300)
SKIP_FOR_THUMB = ("trajectory", "scales", "table")
START, END = "<!-- gallery:start -->", "<!-- gallery:end -->"


def thumbnail(src: Path, dest: Path) -> None:
    """Fit src into THUMB (nearest-neighbour when enlarging, so tiny glyphs stay crisp), on white, as JPEG."""
    img = Image.open(src).convert("RGB")
    s = min(THUMB[0] / img.width, THUMB[1] / img.height)
    size = (max(1, round(img.width * s)), max(1, round(img.height * s)))
    img = img.resize(size, Image.NEAREST if s >= 1 else Image.LANCZOS)
    canvas = Image.new("RGB", THUMB, "white")
    canvas.paste(img, ((THUMB[0] - size[0]) // 2, (THUMB[1] - size[1]) // 2))
    canvas.save(dest, "JPEG", quality=88)


def note_of(stem: str) -> str:
    ui = json.loads((ROOT / "workflows" / f"{stem}.json").read_text())
    notes = [n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "Note"]
    return notes[0].split(". ")[0].rstrip(".") + "." if notes else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "workflows", help="the main job's output folder")
    args = ap.parse_args(argv)
    stems = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    missing = [s for s in stems if not sorted((args.out / s).glob("*.png"))]
    if missing:
        print(f"no main-job images for {missing} in {args.out}: run bash scripts/demo.sh first", file=sys.stderr)
        return 1
    gallery = ROOT / "docs" / "gallery"
    if gallery.exists():
        shutil.rmtree(gallery)
    lines = [START, ""]
    for stem in stems:
        pngs = sorted((args.out / stem).glob("*.png"))
        main_png = next((p for p in pngs if not any(k in p.name for k in SKIP_FOR_THUMB)), pngs[0])
        thumbnail(main_png, ROOT / "workflows" / f"{stem}.jpg")
        (gallery / stem).mkdir(parents=True)
        lines.append(f"**{stem}** ([workflow](workflows/{stem}.json)): {note_of(stem)}\n")
        for p in [main_png] + [p for p in pngs if p != main_png]:
            shutil.copyfile(p, gallery / stem / p.name)
            lines.append(f"![{stem}: {p.stem}](docs/gallery/{stem}/{p.name})\n")
        for table in sorted((args.out / stem).glob("table_*.md")):
            shutil.copyfile(table, gallery / stem / table.name)
            lines.append(table.read_text().strip() + "\n")
    lines.append(END)
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"README.md has no {START} ... {END} section to fill", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    readme.write_text(head + "\n".join(lines) + rest.split(END, 1)[1])
    print(f"thumbnails for {len(stems)} workflows, gallery in {gallery}, README gallery updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
