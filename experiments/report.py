"""Plain reports for the ablation scripts: a Markdown table and a PIL bar chart (no plotting
dependency)."""

import math
from collections.abc import Sequence
from pathlib import Path

from absl import flags

GREY = (90, 90, 90)

# Shared by the ablation scripts (absl flags are process-global, so each is defined once).
OUT = flags.DEFINE_string("out", None, "Output directory (default: workdir/<script>).")
ONLY = flags.DEFINE_list("only", [], "Restrict to these variant or run names.")


def out_dir(default: str) -> Path:
    return Path(OUT.value or default)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def bar_chart(path: str | Path, labels: Sequence[str],
              panels: Sequence[tuple[str, Sequence, str]],
              colours: Sequence[tuple[int, int, int]] | None = None) -> None:
    """One panel per ``(title, values, format)``, one bar per label (missing values skipped),
    bars scaled to each panel's largest magnitude."""
    from PIL import Image, ImageDraw

    bar_h, label_w, panel_w, pad = 18, 190, 240, 12
    image = Image.new("RGB", (label_w + len(panels) * (panel_w + pad) + pad,
                              24 + len(labels) * bar_h + pad), "white")
    draw = ImageDraw.Draw(image)
    for j, label in enumerate(labels):
        draw.text((pad, 24 + j * bar_h), label, fill="black")
    for m, (title, values, fmt) in enumerate(panels):
        x0 = label_w + m * (panel_w + pad)
        draw.text((x0, 4), title, fill="black")
        top = max((abs(v) for v in values if _finite(v)), default=1.0) or 1.0
        for j, value in enumerate(values):
            if not _finite(value):
                continue
            y0 = 24 + j * bar_h
            width = max(int((panel_w - 60) * abs(value) / top), 1)
            colour = colours[j] if colours else GREY
            draw.rectangle([x0, y0, x0 + width, y0 + bar_h - 5], fill=colour)
            draw.text((x0 + width + 4, y0), fmt.format(value), fill="black")
    image.save(path)
