"""What `zest eval` writes for people: the confusion-matrix and reliability-diagram PNGs, the failure sheet and
text tables."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PNG_KEY = "zest:confusion"  # the PNG carries its matrix as a text chunk (machines can read what people see)
RELIABILITY_KEY = "zest:reliability"  # the reliability PNG carries its bins the same way


def draw_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """Rows: true class, columns: predicted; each cell shows its count, shaded by its share of the row
    (blue on the diagonal, red off it). The matrix is also stored in the PNG's `zest:confusion` text chunk."""
    from PIL.PngImagePlugin import PngInfo

    m = np.asarray(confusion, dtype=np.int64)
    n = len(classes)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    digits = int(probe.textlength(str(max(int(m.max(initial=0)), 1)), font=font))
    cell = max(14, min(44, digits + 10))
    label_w = int(max([probe.textlength(c, font=font) for c in classes] + [0])) + 10
    top = label_w + (24 if title else 6)
    img = Image.new("RGB", (label_w + n * cell + 12, top + n * cell + 24), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((4, 4), title, fill="black", font=font)
    header = Image.new("RGB", (label_w, max(n * cell, 1)), "white")
    hdraw = ImageDraw.Draw(header)
    for i, name in enumerate(classes):
        draw.text((4, top + i * cell + (cell - 10) // 2), name, fill="black", font=font)
        hdraw.text((4, i * cell + (cell - 10) // 2), name, fill="black", font=font)
    img.paste(header.rotate(90, expand=True), (label_w, top - label_w))
    for i in range(n):
        for j in range(n):
            shade = int(255 * (1 - share[i, j]))
            fill = (shade, shade, 255) if i == j else (255, shade, shade)
            if m[i].sum() == 0:
                fill = (235, 235, 235)
            x, y = label_w + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=fill, outline=(210, 210, 210))
            if m[i, j]:
                text = str(m[i, j])
                colour = "white" if share[i, j] > 0.6 else "black"
                w = probe.textlength(text, font=font)
                draw.text((x + (cell - w) / 2, y + (cell - 10) / 2), text, fill=colour, font=font)
    draw.text((4, top + n * cell + 6), "rows: true class; columns: predicted", fill=(90, 90, 90), font=font)
    info = PngInfo()
    info.add_text(PNG_KEY, json.dumps({"classes": list(classes), "confusion": m.tolist()}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, pnginfo=info)
    return path


def draw_reliability(calibration: dict, path: str | Path, title: str = "") -> Path:
    """The reliability diagram: per confidence bin, a bar as high as the bin's accuracy (blue), the diagonal of
    perfect calibration, and the gap to the bin's mean confidence (red); the ECE in the caption. The bins are
    also stored in the PNG's `zest:reliability` text chunk."""
    from PIL.PngImagePlugin import PngInfo

    font = ImageFont.load_default()
    side, left, top, bottom = 300, 40, 24 if title else 8, 40
    img = Image.new("RGB", (left + side + 16, top + side + bottom), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((4, 4), title, fill="black", font=font)

    def xy(conf: float, acc: float) -> tuple[float, float]:
        return left + conf * side, top + (1 - acc) * side

    for b in calibration["bins"]:
        if not b["count"]:
            continue
        x0, y0 = xy(b["lo"], b["accuracy"])
        x1, y1 = xy(b["hi"], 0.0)
        draw.rectangle([x0 + 1, y0, x1 - 1, y1], fill=(90, 130, 220), outline=(40, 70, 160))
        gy = xy(0, b["confidence"])[1]
        draw.line([(x0 + 1, gy), (x1 - 1, gy)], fill=(220, 40, 40), width=2)
    draw.line([xy(0, 0), xy(1, 1)], fill=(120, 120, 120), width=1)
    draw.rectangle([left, top, left + side, top + side], outline="black")
    for v in (0.0, 0.5, 1.0):
        draw.text((xy(v, 0)[0] - 8, top + side + 4), f"{v:.1f}", fill="black", font=font)
        draw.text((4, xy(0, v)[1] - 5), f"{v:.1f}", fill="black", font=font)
    ece = calibration.get("ece")
    caption = "x: confidence (top-1 probability), y: accuracy; red: mean confidence"
    draw.text((4, top + side + 16), caption, fill=(90, 90, 90), font=font)
    draw.text((4, top + side + 28), f"ECE {ece:.4f}" if ece is not None else "ECE: no images", fill="black",
              font=font)
    info = PngInfo()
    info.add_text(RELIABILITY_KEY, json.dumps(calibration))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, pnginfo=info)
    return path


def read_reliability(path: str | Path) -> dict:
    """The calibration (ECE and bins) stored in a PNG written by `draw_reliability`."""
    with Image.open(path) as img:
        return json.loads(img.info[RELIABILITY_KEY])


def read_confusion(path: str | Path) -> dict:
    """The matrix stored in a PNG written by `draw_confusion`."""
    with Image.open(path) as img:
        return json.loads(img.info[PNG_KEY])  # PNG text chunks are in info too


def _thumbnail(data: bytes, size: int = 160) -> str:
    from ...models.images import decode_image

    img = decode_image(data, max_bytes=len(data) + 1, max_pixels=2 * (Image.MAX_IMAGE_PIXELS or 89_478_485))
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def failure_sheet(failures: Sequence[dict], path: str | Path, title: str, n_wrong: int, n_images: int) -> Path:
    """One self-contained HTML page: each failure's thumbnail, file, true class and top-3 with probabilities.

    `failures`: dicts with path, data (the file's bytes), true, top3 [(class, probability)], most
    confidently wrong first.
    """
    cards = []
    for f in failures:
        top = "".join(
            f'<li class="{"hit" if label == f["true"] else "miss"}">{html.escape(label)} '
            f"<b>{prob:.1%}</b></li>" for label, prob in f["top3"])
        try:
            img = f'<img src="{_thumbnail(f["data"])}" alt="">'
        except Exception:  # noqa: BLE001 - an image that cannot be thumbnailed still gets its row
            img = '<div class="noimg">(no preview)</div>'
        cards.append(
            f'<figure class="failure">{img}<figcaption><div class="file">{html.escape(f["path"])}</div>'
            f'<div class="true">true: <b>{html.escape(f["true"])}</b></div><ol>{top}</ol></figcaption></figure>')
    shown = f"the {len(failures)} most confidently wrong" if len(failures) < n_wrong else "all"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure.failure {{ width: 190px; margin: 0; padding: 8px; border: 1px solid #ddd; border-radius: 6px; }}
figure img {{ max-width: 174px; max-height: 160px; display: block; margin: 0 auto 6px; }}
.file {{ font-size: 11px; color: #666; word-break: break-all; }}
ol {{ padding-left: 1.3em; margin: 4px 0 0; font-size: 13px; }}
li.hit {{ color: #17702a; }} li.miss {{ color: #a11; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p id="summary" data-wrong="{n_wrong}" data-images="{n_images}" data-shown="{len(failures)}">
{n_wrong} of {n_images} images misclassified (top-1); {shown} shown below, each with its top 3.</p>
<div class="grid">
{chr(10).join(cards)}
</div></body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _ece(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def format_eval(report: dict) -> str:
    """The human-readable form of a `zest eval` report."""
    how = f"head {report['head']}" if report.get("head") else f"templates {report['templates']}"
    lines = [f"{report['dir']}: {report['n_classes']} classes, {report['n_images']} images"
             + (f" ({len(report['skipped'])} unreadable, skipped)" if report["skipped"] else "")
             + (f", {report['excluded_training_images']} of the head's training images left out"
                if report.get("excluded_training_images") else ""),
             f"model {report['model']} ({report['mode']}), {how}",
             (f"top-1 {pct(report['top1'])}   top-5 {pct(report['top5'])}   "
              f"balanced accuracy {pct(report['balanced_accuracy'])}   "
              f"expected calibration error {_ece(report.get('calibration', {}).get('ece'))} "
              f"({report.get('scoring', 'softmax')} probabilities)"), ""]
    lines.append(table([[r["class"], num(r["precision"]), num(r["recall"]), num(r["f1"]), str(r["support"])]
                        for r in report["per_class"]], ["class", "precision", "recall", "f1", "support"]))
    if report.get("template_sets"):
        lines += ["", "shipped template sets, zero-shot on this data:"]
        lines.append(table([[t["name"], str(t["count"]), pct(t["top1"]), pct(t["top5"]),
                             "<- best" if t["name"] == report["best_template_set"] else ""]
                            for t in report["template_sets"]], ["set", "templates", "top-1", "top-5", ""]))
    if report.get("confusions"):
        lines += ["", "most frequent confusions (true -> predicted): " + ", ".join(
            f"{c['true']} -> {c['predicted']} ({c['count']})" for c in report["confusions"][:8])]
    if report["skipped"]:
        lines += ["", "unreadable, skipped:"] + [f"  {s['path']}: {s['reason']}" for s in report["skipped"]]
    if report.get("files"):
        lines += ["", "wrote " + ", ".join(report["files"].values())]
    return "\n".join(lines)
