"""Small self-contained SVG charts for the HTML report (no plotting library, no network)."""

from __future__ import annotations

import math
from html import escape

W, H, PAD, RIGHT = 540, 260, 64, 28


def _frame(title: str, xlabel: str, ylabel: str, body: str, xticks: str, yticks: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">'
        f'<rect width="{W}" height="{H}" fill="white"/>'
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
        f'{escape(title)}</text>'
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - RIGHT}" y2="{H - PAD}" stroke="#333"/>'
        f'<line x1="{PAD}" y1="28" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>'
        f'{xticks}{yticks}{body}'
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" font-size="12">{escape(xlabel)}</text>'
        f'<text x="12" y="{H / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 12 {H / 2})">{escape(ylabel)}</text></svg>')


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _ticks(lo: float, hi: float, axis: str, to_px) -> str:
    out = []
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        p = to_px(v)
        label = f"{v:.3g}"
        if axis == "x":
            out.append(f'<text x="{p:.1f}" y="{H - PAD + 16}" text-anchor="middle" '
                       f'font-size="10">{label}</text>')
        else:
            out.append(f'<text x="{PAD - 4}" y="{p + 3:.1f}" text-anchor="end" '
                       f'font-size="10">{label}</text>')
    return "".join(out)


def histogram(values: list[float], title: str, xlabel: str, bins: int = 30,
              log_x: bool = False) -> str:
    vals = [math.log10(max(v, 1e-12)) if log_x else v for v in values if math.isfinite(v)]
    if not vals:
        vals = [0.0]
    lo, hi = min(vals), max(vals)
    hi = hi if hi > lo else lo + 1.0
    counts = [0] * bins
    for v in vals:
        counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
    x = _scale(lo, hi, PAD, W - RIGHT)
    y = _scale(0, max(counts), H - PAD, 30)
    width = (W - RIGHT - PAD) / bins
    bars = "".join(
        f'<rect x="{PAD + i * width:.1f}" y="{y(c):.1f}" width="{max(width - 1, 1):.1f}" '
        f'height="{H - PAD - y(c):.1f}" fill="#4e79a7"/>' for i, c in enumerate(counts))
    return _frame(title, f"log10 {xlabel}" if log_x else xlabel, "positions", bars,
                  _ticks(lo, hi, "x", x), _ticks(0, max(counts), "y", y))


def line(values: list[float], title: str, ylabel: str, xlabel: str = "position in text") -> str:
    vals = [v if math.isfinite(v) else 0.0 for v in values] or [0.0]
    x = _scale(0, max(len(vals) - 1, 1), PAD, W - RIGHT)
    top = max(vals) if max(vals) > 0 else 1.0
    y = _scale(0, top, H - PAD, 30)
    pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vals))
    body = f'<polyline points="{pts}" fill="none" stroke="#e15759" stroke-width="1.2"/>'
    return _frame(title, xlabel, ylabel, body,
                  _ticks(0, len(vals) - 1, "x", x), _ticks(0, top, "y", y))


CHAR_W, LINE_H = 5.8, 12  # a 10 px label's advance per character, and its line height


def _free_spot(x: float, y: float, text: str, taken: list[tuple[float, float, float, float]]):
    """Where a label for the point (x, y) overlaps no label placed before it: right of the
    point, then stepping down and up by a line, then the same on the left."""
    width = CHAR_W * len(text)
    for side in (1, -1):
        for step in (0, 1, -1, 2, -2, 3, -3, 4, -4):
            lx = x + 7 if side > 0 else x - 7 - width
            ly = y - 6 + step * LINE_H
            box = (lx, ly - LINE_H + 2, lx + width, ly + 2)
            inside = box[0] >= 2 and box[2] <= W - 2 and box[1] >= 24 and box[3] <= H - PAD
            if inside and not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3]
                                  and b[1] < box[3] for b in taken):
                taken.append(box)
                return lx, ly
    taken.append((x + 7, y - 16, x + 7 + width, y - 4))
    return x + 7, y - 6


def scatter(points: list[tuple[str, float, float]], title: str, xlabel: str, ylabel: str) -> str:
    pts = [(n, a, b) for n, a, b in points if math.isfinite(a) and math.isfinite(b)] or [
        ("", 0.0, 0.0)]
    xs, ys = [p[1] for p in pts], [p[2] for p in pts]
    x = _scale(0, max(xs) * 1.1 or 1.0, PAD, W - RIGHT)
    y = _scale(0, max(ys) * 1.15 or 1.0, H - PAD, 30)
    taken: list = []
    body = []
    for n, a, b in sorted(pts, key=lambda p: y(p[2])):  # top first: labels go down the chart
        lx, ly = _free_spot(x(a), y(b), n, taken)
        body.append(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="5" fill="#59a14f"/>'
                    f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="10">{escape(n)}</text>')
    return _frame(title, xlabel, ylabel, "".join(body), _ticks(0, max(xs) * 1.1 or 1.0, "x", x),
                  _ticks(0, max(ys) * 1.15 or 1.0, "y", y))


SERIES_COLORS = ("#f28e2b", "#4e79a7", "#59a14f")


def bars(rows: list[tuple[str, list[float | None]]], title: str, xlabel: str,
         series: tuple[str, ...] = ("",)) -> str:
    """Horizontal bars, one row per name (its label on its own line, so long artifact names
    never overlap), one bar per series in each row (None: no bar), a legend when > 1 series."""
    rows = [(n, [v if v is not None and math.isfinite(v) else None for v in vals])
            for n, vals in rows] or [("", [None])]
    top = max((v for _, vals in rows for v in vals if v is not None), default=0.0) or 1.0
    label_w = min(220.0, CHAR_W * max(len(n) for n, _ in rows) + 12)
    bar_h = 12.0
    row_h = bar_h * len(series) + 8
    height = int(44 + row_h * len(rows) + (16 if len(series) > 1 else 0))
    x = _scale(0, top * 1.15, label_w, W - RIGHT)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
           f'viewBox="0 0 {W} {height}" role="img" aria-label="{escape(title)}">'
           f'<rect width="{W}" height="{height}" fill="white"/>'
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
           f'{escape(title)}</text>']
    for i, (name, vals) in enumerate(rows):
        top_y = 30 + i * row_h
        out.append(f'<text x="{label_w - 6:.1f}" y="{top_y + row_h / 2 + 2:.1f}" '
                   f'text-anchor="end" font-size="10">{escape(name)}</text>')
        for j, v in enumerate(vals):
            if v is None:
                continue
            by = top_y + 4 + j * bar_h
            out.append(f'<rect x="{label_w:.1f}" y="{by:.1f}" width="{x(v) - label_w:.1f}" '
                       f'height="{bar_h - 2:.1f}" fill="{SERIES_COLORS[j % 3]}"/>'
                       f'<text x="{x(v) + 4:.1f}" y="{by + bar_h - 3:.1f}" font-size="10">'
                       f'{v:.3g}</text>')
    base = 30 + row_h * len(rows)
    out.append(f'<text x="{(label_w + W - RIGHT) / 2:.1f}" y="{base + 14:.1f}" '
               f'text-anchor="middle" font-size="12">{escape(xlabel)}</text>')
    if len(series) > 1:
        for j, name in enumerate(series):
            lx = label_w + j * 170
            out.append(f'<rect x="{lx:.1f}" y="{base + 22:.1f}" width="10" height="10" '
                       f'fill="{SERIES_COLORS[j % 3]}"/><text x="{lx + 14:.1f}" '
                       f'y="{base + 31:.1f}" font-size="10">{escape(name)}</text>')
    return "".join(out) + "</svg>"
