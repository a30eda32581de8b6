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


def scatter(points: list[tuple[str, float, float]], title: str, xlabel: str, ylabel: str) -> str:
    pts = [(n, a, b) for n, a, b in points if math.isfinite(a) and math.isfinite(b)] or [
        ("", 0.0, 0.0)]
    xs, ys = [p[1] for p in pts], [p[2] for p in pts]
    x = _scale(0, max(xs) * 1.1 or 1.0, PAD, W - RIGHT)
    y = _scale(0, max(ys) * 1.15 or 1.0, H - PAD, 30)
    body = "".join(
        f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="5" fill="#59a14f"/>'
        f'<text x="{x(a) + 7:.1f}" y="{y(b) - 6:.1f}" font-size="10">{escape(n)}</text>'
        for n, a, b in pts)
    return _frame(title, xlabel, ylabel, body, _ticks(0, max(xs) * 1.1 or 1.0, "x", x),
                  _ticks(0, max(ys) * 1.15 or 1.0, "y", y))


def bars(items: list[tuple[str, float]], title: str, ylabel: str) -> str:
    items = [(n, v if math.isfinite(v) else 0.0) for n, v in items] or [("", 0.0)]
    top = max(v for _, v in items) or 1.0
    y = _scale(0, top * 1.1, H - PAD, 30)
    width = (W - RIGHT - PAD) / len(items)
    body = "".join(
        f'<rect x="{PAD + i * width + 6:.1f}" y="{y(v):.1f}" width="{width - 12:.1f}" '
        f'height="{H - PAD - y(v):.1f}" fill="#f28e2b"/>'
        f'<text x="{PAD + (i + 0.5) * width:.1f}" y="{H - PAD + 14}" text-anchor="middle" '
        f'font-size="10">{escape(n)}</text>'
        f'<text x="{PAD + (i + 0.5) * width:.1f}" y="{y(v) - 4:.1f}" text-anchor="middle" '
        f'font-size="10">{v:.3g}</text>' for i, (n, v) in enumerate(items))
    return _frame(title, "", ylabel, body, "", _ticks(0, top * 1.1, "y", y))
