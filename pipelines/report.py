"""``saliency report RUN``: any run folder as one HTML page that opens from the file system.

One page per run, a section per stage in the stages' order, each present when that stage's
output is: discovery (RCA against chance, a slider along every direction's shift, the
image-space effects, the h_bg candidates and the chosen one, the ground-truth factors on
``scenes``), synthesis (acceptance, pairs, the mask-area histogram with the filter's bounds, the
vote), the U-Net (loss and held-out curves), evaluation (the metric table with its reference
rows and the paper's figure, the best and the worst images by MAE), a sweep (its table and
chart) and predict's outputs. A whole pipeline folder gives all of them.

Self-contained: pictures are inlined as small JPEG/PNG thumbnails (data URIs), charts are
inline SVG, the sliders a few lines of JavaScript; no server, no network, no fonts. A part that
is missing or damaged is a line on the page, never a traceback; a folder that holds no run is
one error.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import time
from html import escape
from pathlib import Path
from typing import Callable

from PIL import Image

from saliency.core.artifacts import atomic_path
from saliency.core.errors import ConfigError, UserError
from saliency.core.progress import progress_bar

REPORT_NAME = "report.html"
PAPER_ECSSD_MAE = 0.099  # the paper's section 5.1 (BigGAN, ECSSD test)
PAPER_MNIST_RCA = {"unit": 0.88, "random": 0.46, "identity": 0.48}  # Table 2, MNIST column
MAX_PREDICT_THUMBNAILS = 12
DISPLAY_SCALE = 1.6
METRIC_COLUMNS = (("paper_mae", "MAE (paper)"), ("mae", "MAE (PySOD)"), ("max_f", "max F"), ("s_measure", "S"), ("max_e", "max E"), ("iou", "IoU"),
                  ("accuracy", "acc"))


class Page:
    """The HTML being written, with the lines for what could not be shown; ``progress``: a bar
    advanced by one per picture encoded (a pipeline page of 128 direction charts takes a while)."""

    def __init__(self, progress=None) -> None:
        self.parts: list[str] = []
        self.progress = progress

    def add(self, html: str) -> None:
        self.parts.append(html)

    def missing(self, what: str) -> None:
        self.parts.append(f'<p class="missing">{escape(what)}</p>')


# ------------------------------------------------------------------------------ reading
def _json(path: Path, page: Page, label: str) -> dict | None:
    """The JSON at ``path``, or None with a line on the page saying why."""
    if not path.is_file():
        page.missing(f"{label}: {path.name} is missing")
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(value, dict):
            raise ValueError("not an object")
        return value
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        page.missing(f"{label}: {path.name} is damaged ({type(exc).__name__}: {exc})"[:300])
        return None


def _jsonl(path: Path) -> list[dict]:
    """The readable records of a JSON-lines log (a torn last line is skipped)."""
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    except (OSError, UnicodeDecodeError):
        return []
    return records


def _thumbnail(path: Path, page: Page, label: str, max_side: int = 480, quality: int = 80) -> str | None:
    """``path`` as a data URI of at most ``max_side`` pixels a side: the smallest of WebP,
    JPEG and PNG (PNG wins for masks and line charts), or None with a line on the page."""
    if not path.is_file():
        page.missing(f"{label}: {path.name} is missing")
        return None
    try:
        with Image.open(path) as image:
            image.draft("RGB", (max_side, max_side))
            picture = image.convert("RGB")
        picture.thumbnail((max_side, max_side), Image.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        page.missing(f"{label}: {path.name} is not a readable picture ({type(exc).__name__})")
        return None
    if page.progress is not None:
        page.progress.update(1)
    encoded = []
    for kind, options in (("webp", {"quality": quality, "method": 4}), ("jpeg", {"quality": quality, "optimize": True}),
                          ("png", {"optimize": True})):
        buffer = io.BytesIO()
        picture.save(buffer, kind.upper(), **options)
        encoded.append((len(buffer.getvalue()), kind, buffer.getvalue()))
    _, kind, data = min(encoded)
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def _img(uri: str | None, alt: str, css: str = "") -> str:
    return "" if uri is None else f'<img src="{uri}" alt="{escape(alt)}" class="{css}">'


def _number(value, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return escape(str(value))
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else escape(str(value))
    return escape(str(value))


def _cell(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="n">{_number(value)}</td>'
    return f"<td>{value if isinstance(value, Markup) else _number(value)}</td>"


def _table(header: list[str] | None, rows: list[list], classes: list[str] | None = None) -> str:
    """A table; numbers right-aligned; ``header`` None for a two-column list of facts."""
    head = "" if header is None else "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead>"
    body = []
    for i, row in enumerate(rows):
        css = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{css}>" + "".join(_cell(cell) for cell in row) + "</tr>")
    return f'<table>{head}<tbody>{"".join(body)}</tbody></table>'


class Markup(str):
    """HTML that a table cell shows as is."""


# ------------------------------------------------------------------------------ charts
def _line_chart(series: dict[str, list[tuple[float, float]]], title: str, x_label: str,
                lines: dict[str, float] | None = None, width: int = 520, height: int = 220) -> str:
    """An inline SVG line chart: one polyline per series, dashed horizontal reference lines."""
    points = [p for values in series.values() for p in values if all(map(math.isfinite, p))]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points] + list((lines or {}).values())
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(0.0, min(ys)), max(ys) if max(ys) > 0 else 1.0
    y1 = y1 + 0.05 * (y1 - y0 or 1)
    left, right, top, bottom = 48, 12, 24, 32

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)

    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<text x="{left}" y="16" class="title">{escape(title)}</text>',
             f'<line x1="{left}" y1="{sy(y0)}" x2="{width - right}" y2="{sy(y0)}" class="axis"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{sy(y0)}" class="axis"/>']
    for value in (y0, (y0 + y1) / 2, y1):
        parts.append(f'<text x="{left - 4}" y="{sy(value) + 4:.1f}" class="tick" text-anchor="end">{value:.2g}</text>')
    for value in (x0, x1):
        parts.append(f'<text x="{sx(value):.1f}" y="{height - 16}" class="tick" text-anchor="middle">{value:g}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 2}" class="tick" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    for i, (name, value) in enumerate((lines or {}).items()):
        parts.append(f'<line x1="{left}" y1="{sy(value):.1f}" x2="{width - right}" y2="{sy(value):.1f}" '
                     f'class="ref"/><text x="{width - right - 2}" y="{sy(value) - 3:.1f}" class="tick" '
                     f'text-anchor="end">{escape(name)} {value:.2f}</text>')
    for i, (name, values) in enumerate(series.items()):
        colour = colours[i % len(colours)]
        good = [p for p in values if all(map(math.isfinite, p))]
        if len(good) == 1:
            parts.append(f'<circle cx="{sx(good[0][0]):.1f}" cy="{sy(good[0][1]):.1f}" r="3" fill="{colour}"/>')
        else:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        parts.append(f'<text x="{left + 8 + 120 * i}" y="{top + 10}" class="tick" fill="{colour}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _histogram(edges: list[float], series: dict[str, list[int]], bounds: dict[str, float],
               width: int = 520, height: int = 200) -> str:
    """Inline SVG bars (one colour per series, side by side) with dashed vertical bounds."""
    if not edges or not series or not any(sum(v) for v in series.values()):
        return ""
    left, right, top, bottom = 40, 12, 20, 30
    peak = max(max(v) for v in series.values()) or 1
    bins = len(edges) - 1
    slot = (width - left - right) / bins
    colours = ["#9ecae1", "#3182bd"]
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<text x="{left}" y="14" class="title">mask area (fraction of the image)</text>']
    for s, (name, counts) in enumerate(series.items()):
        for b, count in enumerate(counts[:bins]):
            h = count / peak * (height - top - bottom)
            x = left + b * slot + s * slot / len(series)
            parts.append(f'<rect x="{x:.1f}" y="{height - bottom - h:.1f}" width="{slot / len(series) - 1:.1f}" '
                         f'height="{h:.1f}" fill="{colours[s % 2]}"><title>{escape(name)} '
                         f'{edges[b]:.2f}-{edges[b + 1]:.2f}: {count}</title></rect>')
        parts.append(f'<text x="{width - right - 4}" y="{top + 12 + 12 * s}" class="tick" text-anchor="end" '
                     f'fill="{colours[s % 2]}">{escape(name)}</text>')
    for name, value in bounds.items():
        x = left + (value - edges[0]) / (edges[-1] - edges[0]) * (width - left - right)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" class="ref"/>'
                     f'<text x="{x + 3:.1f}" y="{top + 36}" class="tick">{escape(name)} {value:g}</text>')
    for value in (edges[0], edges[len(edges) // 2], edges[-1]):
        x = left + (value - edges[0]) / (edges[-1] - edges[0]) * (width - left - right)
        parts.append(f'<text x="{x:.1f}" y="{height - 14}" class="tick" text-anchor="middle">{value:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------ sections
def discover_section(folder: Path, page: Page) -> None:
    summary = _json(folder / "directions.json", page, "discovery")
    if summary is None:
        return
    k = int(summary.get("num_directions") or 0)
    rca = summary.get("rca")
    rows = [["generator", escape(str(summary.get("generator")))],
            ["directions K, deformator, reconstructor",
             f"{k}, {escape(str(summary.get('deformator')))}, {escape(str(summary.get('reconstructor')))}"],
            ["steps, batch, shift-loss weight",
             f"{summary.get('steps')}, {summary.get('batch_size')}, {summary.get('shift_loss_weight')}"],
            ["RCA (reconstructor accuracy on fresh samples)", Markup(f"<b>{_number(rca)}</b> on "
                                                                    f"{summary.get('rca_samples')} samples")],
            ["chance (1/K)", _number(1 / k) if k else "-"]]
    paper = PAPER_MNIST_RCA.get(str(summary.get("deformator"))) if summary.get("generator") == "sngan-mnist" else None
    if paper is not None:
        rows.append(["the paper (MNIST, Table 2, this deformator)", _number(paper, 2)])
    if summary.get("stopped_early"):
        rows.append(["stopped early", escape(str(summary["stopped_early"].get("rule")))])
    page.add("<h3>Directions</h3>" + _table(None, rows))
    curve = [(float(s), float(r)) for s, r in summary.get("rca_curve") or []]
    log = _jsonl(folder / "metrics.jsonl")
    accuracy = [(float(r["step"]), float(r["accuracy"])) for r in log if "accuracy" in r and "step" in r]
    series = {}
    if accuracy:
        series["R's training accuracy"] = accuracy
    if not curve and isinstance(rca, (int, float)) and summary.get("steps"):
        curve = [(float(summary["steps"]), float(rca))]  # measured once, at the end
    if curve:
        series["RCA (fresh samples)"] = curve
    references = {"chance": 1 / k} if k else {}
    if paper is not None:
        references["paper"] = paper
    chart = _line_chart(series, "accuracy of R", "step", references)
    page.add(chart or '<p class="missing">no training log (metrics.jsonl) to draw</p>')

    effects = summary.get("effects")
    if effects:
        page.add("<h3>What the directions do in image space</h3>" + _table(["measure", "value"], [
            ["mean |cos| between two directions' effects (low: distinct)", effects.get("mean_abs_cos")],
            ["diversity of shifted samples (low: collapse)", effects.get("diversity")],
            ["collapsed directions (diversity < 0.5)", effects.get("collapsed_fraction")],
            ["change per shift (low: the direction does little)", effects.get("change")],
            ["still directions (change < 0.2)", effects.get("still_fraction")]]))
    truth = summary.get("ground_truth") or {}
    factors = {int(r["direction"]): str(r.get("factor")) for r in truth.get("factors") or []
               if isinstance(r, dict) and isinstance(r.get("direction"), int)}
    change = ((effects or {}).get("per_direction") or {}).get("change") or []
    captions = {}
    for index in range(max(k, len(change))):
        parts = [factors.get(index), f"change {change[index]:.2f}" if index < len(change) else None]
        if any(parts):
            captions[index] = ", ".join(part for part in parts if part)
    _direction_viewer(folder, summary, page, captions)
    if truth.get("factors"):
        rows = [[r.get("direction"), escape(str(r.get("factor"))), r.get("cos"), r.get("purity")]
                for r in truth["factors"]]
        page.add("<details><summary>Ground-truth factors (scenes): what each direction moves most</summary>"
                 + _table(["direction", "moves most", "cos", "purity"], rows) + "</details>")
    _background(folder, summary, page)


def _direction_viewer(folder: Path, summary: dict, page: Page, captions: dict[int, str]) -> None:
    """A card per direction chart: the frame at one shift, a slider, and ``captions[k]``."""
    charts = summary.get("charts") or {}
    shifts = [float(s) for s in charts.get("shifts") or []]
    strips = sorted((folder / "charts").glob("direction_*.png")) if (folder / "charts").is_dir() else []
    if not strips:
        page.missing("direction charts: none in charts/ (the run was made with --no-charts, or they were deleted)")
        return
    if not shifts:
        shifts = [0.0]
    columns = len(shifts)
    width = min(40 * columns, 480)  # about 40 px a tile: a pipeline page of 32 directions stays a few hundred KB
    middle = columns // 2
    cards = []
    for path in strips:
        uri = _thumbnail(path, page, f"chart {path.name}", max_side=width, quality=65)
        if uri is None:
            continue
        index = int(path.stem.split("_")[-1]) if path.stem.split("_")[-1].isdigit() else path.stem
        shown = DISPLAY_SCALE * width  # the thumbnail's 40 px tiles, drawn larger
        caption = f" ({escape(captions[index])})" if index in captions else ""
        cards.append(
            f'<figure class="direction"><div class="frame" style="width:{shown / columns:.0f}px">'
            f'<img src="{uri}" alt="direction {index}" class="strip" data-columns="{columns}" '
            f'style="width:{shown:.0f}px;transform:translateX(-{100 * middle / columns:.4f}%)"></div>'
            f'<input type="range" min="0" max="{columns - 1}" value="{middle}" class="shift" '
            f'aria-label="shift along direction {index}"><figcaption>direction {index}{caption}<br>shift '
            f'<span class="value">{shifts[middle]:+g}</span></figcaption></figure>')
    page.add(f'<h3>Every direction, along its shift</h3><p>Each picture shows samples (rows) at one shift; '
             f'the slider moves along the direction ({", ".join(f"{s:+g}" for s in shifts)}). '
             f'<label>all: <input type="range" min="0" max="{columns - 1}" value="{middle}" id="all-shifts"></label>'
             f'</p><script type="application/json" id="shifts">{json.dumps(shifts)}</script>'
             f'<div class="directions">{"".join(cards)}</div>')


def _background(folder: Path, summary: dict, page: Page) -> None:
    chosen = summary.get("bg_direction")
    if not chosen:
        page.add("<h3>h_bg</h3><p>not searched (the generator's profile, or --no-bg-search)</p>")
        return
    page.add(f"<h3>h_bg: the background direction</h3><p>chosen: direction {escape(str(chosen.get('index')))}, "
             f"sign {chosen.get('sign'):+d}, magnitude {_number(chosen.get('magnitude'), 2)}; score "
             f"{_number(chosen.get('score'))} ({'reliable' if chosen.get('reliable') else 'not reliable'})</p>")
    candidates = _json(folder / "bg_candidates.json", page, "h_bg candidates")
    if candidates and isinstance(candidates.get("ranked"), list):
        winner = (candidates.get("winner") or {}).get("index")
        ranked = candidates["ranked"][:10]
        rows = [[escape(str(c.get("index"))), c.get("sign"), c.get("magnitude"), c.get("score"), c.get("turned"),
                 c.get("kept_area"), c.get("change")] for c in ranked]
        page.add(_table(["direction", "sign", "magnitude", "score", "whitened", "kept area", "change in kept part"],
                        rows, ["chosen" if c.get("index") == winner else "" for c in ranked]))
    uri = _thumbnail(folder / "bg_candidates.png", page, "h_bg candidates picture", max_side=640)
    page.add(_img(uri, "the best h_bg candidates on held-out samples", "wide"))


def synthesize_section(folder: Path, page: Page) -> None:
    manifest = _json(folder / "manifest.json", page, "synthesis")
    if manifest is None:
        return
    candidates, kept = manifest.get("candidates") or 0, manifest.get("kept") or 0
    rows = [["pairs", manifest.get("count")], ["candidates rendered", candidates],
            ["acceptance rate", manifest.get("acceptance_rate", kept / candidates if candidates else None)]]
    for reason, count in (manifest.get("rejected") or {}).items():
        rows.append([f"rejected: {reason.replace('_', ' ')}", count])
    truth = manifest.get("ground_truth")
    if truth:
        rows.append(["mask IoU against the generator's true masks", truth.get("mask_iou")])
    page.add("<h3>Pairs</h3>" + _table(None, rows))
    uri = _thumbnail(folder / str(manifest.get("preview") or "preview.png"), page, "pairs preview", max_side=720)
    page.add(_img(uri, "samples, shifted along h_bg, and their masks", "wide"))
    histogram = manifest.get("area_histogram") or {}
    bounds = {k: float(manifest[k]) for k in ("min_area", "max_area") if isinstance(manifest.get(k), (int, float))}
    chart = _histogram(histogram.get("edges") or [], {k: histogram[k] for k in ("all", "kept") if k in histogram},
                       bounds)
    if chart:
        page.add(chart)
    vote = manifest.get("class_vote")
    if isinstance(vote, str):
        record = _json(folder / vote, page, "class vote")
        if record and isinstance(record.get("counts"), dict):
            chosen = {str(c) for c in record.get("classes") or []}
            counts = sorted(record["counts"].items(), key=lambda item: -int(item[1]))[:20]
            page.add(f"<h3>The class vote</h3><p>{escape(str(record.get('classifier')))} on "
                     f"{record.get('images')} images; kept: {', '.join(sorted(chosen, key=int)) or '-'}</p>"
                     + _table(["class", "votes"], [[c, n] for c, n in counts],
                              ["chosen" if c in chosen else "" for c, _ in counts]))
    elif manifest.get("classes") is not None:
        page.add(f"<p>classes: {escape(str(manifest.get('classes')))}</p>")


def unet_section(folder: Path, page: Page) -> None:
    meta = _json(folder / "model.json", page, "U-Net")
    log = _jsonl(folder / "metrics.jsonl")
    if meta is not None:
        validation = meta.get("validation") or {}
        architecture = meta.get("architecture") or {}
        page.add("<h3>Training</h3>" + _table(None, [
            ["encoder", escape(str(architecture.get("encoder")))], ["steps", meta.get("steps")],
            ["seconds", meta.get("seconds")], ["device", escape(str(meta.get("device")))],
            ["held-out pairs", meta.get("val_pairs")],
            *[[f"held out: {k.removeprefix('val_')}", v] for k, v in validation.items()]]))
    series = {"training loss": [(float(r["step"]), float(r["loss"])) for r in log if "loss" in r and "step" in r]}
    held = [(float(r["step"]), float(r["val_mae"])) for r in log if "val_mae" in r]
    if held:
        series["held-out MAE"] = held
    chart = _line_chart(series, "U-Net training", "step")
    page.add(chart or '<p class="missing">no training log (metrics.jsonl) to draw</p>')


def eval_section(folder: Path, page: Page) -> None:
    metrics = _json(folder / "metrics.json", page, "evaluation")
    if metrics is None:
        return
    splits = metrics.get("splits") or {}
    shown = [name for name in splits if name != "train"]
    rows, classes = [], []
    for label, per in ([("U-Net", splits)] + list((metrics.get("references") or {}).items())
                       + ([("U-Net, paper protocol", metrics["paper_protocol"])] if metrics.get("paper_protocol")
                          else [])):
        for name in shown:
            result = (per or {}).get(name)
            if isinstance(result, dict):
                rows.append([f"{label} ({name})", result.get("images"), *[result.get(k) for k, _ in METRIC_COLUMNS]])
                classes.append("ours" if label == "U-Net" else "")
    if metrics.get("dataset") == "ecssd":
        # The paper's 0.099 is its own formula (the raw MAE): in that column alone.
        rows.append(["the paper (BigGAN, ECSSD; its split unpublished)", "", PAPER_ECSSD_MAE,
                     *[""] * len(METRIC_COLUMNS[1:])])
        classes.append("paper")
    page.add(f"<h3>{escape(str(metrics.get('dataset')))}</h3>"
             + _table(["", "images", *[name for _, name in METRIC_COLUMNS]], rows, classes))
    if metrics.get("dataset") == "ecssd":
        page.add("<p>test: ECSSD's 500 even-numbered images (0002, ..., 1000), this project's split. "
                 "MAE (paper) is the paper's formula, the raw mean of |map - mask|: the only column to set beside "
                 "its 0.099. MAE (PySOD) normalises each map to 0-1 first.</p>")
    gallery = folder / "gallery.json"
    if gallery.is_file():
        record = _json(gallery, page, "gallery")
        uri = _thumbnail(folder / "gallery.png", page, "gallery picture", max_side=640)
        if record is not None and uri is not None:
            names = [f"best {e['stem']} (MAE {e['mae']:.3f})" for e in record.get("best", [])]
            names += [f"worst {e['stem']} (MAE {e['mae']:.3f})" for e in record.get("worst", [])]
            page.add("<h4>The best and the worst by MAE (image, prediction, ground truth)</h4>"
                     f'<div class="gallery">{_img(uri, "best and worst predictions")}'
                     f'<ol>{"".join(f"<li>{escape(n)}</li>" for n in names)}</ol></div>')
    else:
        page.missing("gallery: gallery.json is missing (an evaluation made before it existed)")
    uri = _thumbnail(folder / "predictions.png", page, "predictions picture", max_side=720)
    page.add("<h4>The first test images</h4>" + _img(uri, "image, prediction and ground truth", "wide"))


def sweep_section(folder: Path, page: Page) -> None:
    table = folder / "table.csv"
    if not table.is_file():
        page.missing("sweep: table.csv is missing (no cell has finished)")
    else:
        try:
            with open(table, encoding="utf-8", newline="") as handle:
                rows = list(csv.reader(handle))
            page.add(_table(rows[0], [[Markup(escape(cell)) for cell in row] for row in rows[1:]]))
        except (OSError, UnicodeDecodeError, csv.Error, IndexError) as exc:
            page.missing(f"sweep: table.csv is damaged ({type(exc).__name__})")
    uri = _thumbnail(folder / "rca.png", page, "sweep chart", max_side=640)
    page.add(_img(uri, "RCA per cell", "wide"))


PREDICT_KINDS = ("map", "mask", "cutout", "overlay")
MAX_FILES_SCANNED = 20_000  # a predict folder is walked this far, no further


def _predicted(folder: Path) -> tuple[list[Path], bool]:
    """predict's outputs below ``folder`` (``*.map.png`` and the other kinds), in walk order,
    and whether the walk stopped at MAX_FILES_SCANNED."""
    found, seen = [], 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            seen += 1
            if seen > MAX_FILES_SCANNED:
                return found, True
            stem, _, suffix = name.rpartition(".")
            if suffix == "png" and stem.rpartition(".")[2] in PREDICT_KINDS and not name.startswith("."):
                found.append(Path(root) / name)
    return found, False


def predict_section(folder: Path, page: Page) -> None:
    outputs, cut = _predicted(folder)
    count = f"at least {len(outputs)}" if cut else str(len(outputs))
    page.add(f"<p>{count} output file(s); the first {min(len(outputs), MAX_PREDICT_THUMBNAILS)}:</p>")
    cells = []
    for path in outputs[:MAX_PREDICT_THUMBNAILS]:
        uri = _thumbnail(path, page, str(path.relative_to(folder)), max_side=160)
        if uri:
            cells.append(f"<figure>{_img(uri, path.name)}<figcaption>{escape(str(path.relative_to(folder)))}"
                         "</figcaption></figure>")
    page.add(f'<div class="thumbs">{"".join(cells)}</div>')


SECTIONS: dict[str, tuple[str, Callable[[Path, Page], None]]] = {
    "discover": ("Stage 1: discovered directions", discover_section),
    "synthesize": ("Stage 2: synthetic pairs", synthesize_section),
    "unet": ("Stage 3: the U-Net", unet_section),
    "eval": ("Stage 4: evaluation", eval_section),
    "sweep": ("Sweep", sweep_section),
    "predict": ("Predictions", predict_section),
}


def _kind(folder: Path) -> str | None:
    """Which stage wrote ``folder``, by the files it leaves (finished or not)."""
    if (folder / "sweep.json").is_file() or (folder / "cells").is_dir():
        return "sweep"
    if (folder / "directions.json").exists() or (folder / "directions.safetensors").exists():
        return "discover"
    if (folder / "manifest.json").exists() or (folder / "progress.json").exists():
        return "synthesize"
    if (folder / "model.json").exists() or (folder / "model.safetensors").exists():
        return "unet"
    if (folder / "metrics.json").exists() and (folder / "metrics.md").exists() or (folder / "predictions.png").exists():
        return "eval"
    if _predicted(folder)[0]:
        return "predict"
    return None


def plan(folder: Path) -> list[tuple[str, Path]]:
    """The (kind, folder) of every section of ``folder``'s page, in the stages' order: a
    pipeline folder's stages, or the one run it is."""
    if (folder / "pipeline.json").is_file() or any((folder / name).is_dir() for name in ("discover", "synthesize",
                                                                                            "unet")):
        found = [(kind, folder / name) for kind, name in (("discover", "discover"), ("synthesize", "synthesize"),
                                                          ("unet", "unet"))]
        found += [("eval", path) for path in sorted(folder.glob("eval-*")) if path.is_dir()]
        return found
    kind = _kind(folder)
    return [(kind, folder)] if kind else []


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin-top:20px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.chosen td,tr.ours td{background:#eef6ff;font-weight:600}tr.paper td{color:#666;font-style:italic}
.missing{color:#a33}.wide{max-width:100%}img{image-rendering:auto}
.directions{display:flex;flex-wrap:wrap;gap:12px}.direction{margin:0;text-align:center}
.frame{overflow:hidden;display:inline-block;border:1px solid #ccc}.strip{display:block;max-width:none}
.direction input{display:block;width:100%;min-width:90px}figcaption{font-size:12px;color:#555}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}.thumbs figure{margin:0}.gallery{display:flex;gap:16px}
svg.chart{display:block;margin:8px 0;font-size:11px}svg .axis{stroke:#888}svg .ref{stroke:#aaa;stroke-dasharray:4 3}
svg .title{font-size:12px;font-weight:600}svg .tick{font-size:10px}
"""

SCRIPT = """
(function () {
  var node = document.getElementById('shifts');
  var shifts = node ? JSON.parse(node.textContent) : [];
  function show(figure, k) {
    var strip = figure.querySelector('.strip');
    var columns = Number(strip.dataset.columns);
    strip.style.transform = 'translateX(-' + (100 * k / columns) + '%)';
    figure.querySelector('.shift').value = k;
    var label = figure.querySelector('.value');
    if (label && shifts.length) label.textContent = (shifts[k] > 0 ? '+' : '') + shifts[k];
  }
  document.querySelectorAll('figure.direction').forEach(function (figure) {
    figure.querySelector('.shift').addEventListener('input', function (e) { show(figure, Number(e.target.value)); });
  });
  var all = document.getElementById('all-shifts');
  if (all) all.addEventListener('input', function (e) {
    document.querySelectorAll('figure.direction').forEach(function (f) { show(f, Number(e.target.value)); });
  });
})();
"""


def sections_of(folder: Path) -> list[tuple[str, Path]]:
    """``plan(folder)``, or a UserError where there is no run folder to report on."""
    if not folder.exists():
        raise UserError(f"{folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{folder} is a file; give a run folder (discover, synthesize, train-unet, eval, predict, "
                        "sweep or pipeline output)")
    sections = plan(folder)
    if not sections:
        raise UserError(f"{folder} holds no run of any stage (no directions.json, manifest.json, model.json, "
                        "metrics.json, sweep.json, pipeline.json or predicted maps)")
    return sections


def render(folder: str | Path, progress=None) -> str:
    """The page of ``folder`` as HTML; refuses a folder that holds no run. ``progress``: a bar,
    advanced by one per picture."""
    folder = Path(folder)
    sections = sections_of(folder)
    page = Page(progress)
    for kind, path in sections:
        title, write = SECTIONS[kind]
        page.add(f'<section id="{escape(kind)}-{escape(path.name)}"><h2>{escape(title)}'
                 f'{" (" + escape(path.name) + ")" if kind == "eval" else ""}</h2>')
        if not path.is_dir():
            page.missing(f"{path.name}/ is missing: this stage has not run")
        else:
            write(path, page)
        page.add("</section>")
    title = f"Run report: {folder.resolve().name}"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
            # the folder by its name alone: the page moves with it and names no machine
            f"<h1>{escape(title)}</h1><p class=\"meta\">written "
            f"{time.strftime('%Y-%m-%d %H:%M')}</p>{''.join(page.parts)}<script>{SCRIPT}</script></body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None, progress: bool = False) -> Path:
    """Write ``run_dir``'s page (default ``run_dir/report.html``) atomically; returns its path.
    ``progress``: a bar counting the pictures as they are encoded, started once the folder and
    ``out`` have been checked (a refusal is one line, with no bar before it)."""
    target = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    if target.is_dir():
        raise ConfigError(f"`out` {target} is a folder; give a file name (report.html)")
    sections_of(Path(run_dir))
    with atomic_path(target) as tmp:  # its temporary made first: a place that cannot be written is said now
        with progress_bar(None, target.name, enabled=progress, leave=False, unit="picture") as bar:
            html = render(run_dir, bar if progress else None)
        tmp.write_text(html, encoding="utf-8")
    return target
