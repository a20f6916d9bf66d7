"""Line charts of benchmark results, as hand-written SVG (no plotting library).

    python bench/plot.py sync bench/results/sync.json bench/results/sync.svg
        one panel per pod count N: pods Running over time, in the virtual cluster and
        directly on the host (rounds[N]["virtual"|"baseline_host"]["timeline"], a list of
        [seconds, running_count]); rounds without a timeline are left out.
    python bench/plot.py soak bench/results/soak.json bench/results/soak.svg
        the control plane's RSS (syncer, supervisor, API server, kine, controller manager)
        and the syncer's queue depth over the run (the soak's `timeline`), with the end of
        the warm-up and of the churn marked, and the pod populations (virtual, Running,
        host copies).

A chart is one or more panels stacked vertically; each panel has its axes with "nice"
ticks (1, 2 or 5 times a power of ten), axis labels, a title, a legend and one polyline
per series. Everything but main() is pure: data in, SVG text out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
WIDTH = 800
PANEL_HEIGHT = 300
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 220, 34, 46

Point = tuple[float, float]


@dataclass
class Series:
    name: str
    points: list[Point]


@dataclass
class Panel:
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    markers: list[tuple[float, str]] = field(default_factory=list)  # vertical lines at x, labelled


def nice_step(span: float, count: int = 5) -> float:
    """A step of 1, 2 or 5 times a power of ten that cuts ``span`` into about ``count`` parts."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(1, count)
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def nice_range(lo: float, hi: float, count: int = 5) -> tuple[float, float, float]:
    """(lo, hi, step): the data's range widened to whole steps; a zero-width range gets room."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        lo, hi = (lo - 1, hi + 1) if lo != 0 else (0.0, 1.0)
    step = nice_step(hi - lo, count)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step


def ticks(lo: float, hi: float, step: float) -> list[float]:
    n = round((hi - lo) / step)
    return [round(lo + i * step, 10) for i in range(n + 1)]


def tick_label(value: float, step: float) -> str:
    if step >= 1 and float(value).is_integer():
        return f"{int(value)}"
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 2
    return f"{value:.{decimals}f}"


def render_panel(panel: Panel, top: float, width: int = WIDTH, height: int = PANEL_HEIGHT) -> list[str]:
    """The SVG elements of one panel whose box starts ``top`` pixels down."""
    points = [p for s in panel.series for p in s.points]
    xs = [x for x, _ in points] + [x for x, _ in panel.markers]
    ys = [y for _, y in points]
    x0, x1, xstep = nice_range(min([*xs, 0.0]) if xs else 0.0, max(xs) if xs else 1.0)
    y0, y1, ystep = nice_range(min([*ys, 0.0]) if ys else 0.0, max(ys) if ys else 1.0)
    left, right = MARGIN_LEFT, width - MARGIN_RIGHT
    ptop, pbottom = top + MARGIN_TOP, top + height - MARGIN_BOTTOM

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def py(y: float) -> float:
        return pbottom - (y - y0) / (y1 - y0) * (pbottom - ptop)

    out = [
        f'<text x="{width / 2:.0f}" y="{top + 20:.0f}" text-anchor="middle" font-size="15" '
        f'font-weight="bold">{escape(panel.title)}</text>',
    ]
    for x in ticks(x0, x1, xstep):
        out.append(
            f'<line x1="{px(x):.1f}" y1="{ptop:.1f}" x2="{px(x):.1f}" y2="{pbottom:.1f}" stroke="#e4e4e4"/>'
        )
        out.append(
            f'<text x="{px(x):.1f}" y="{pbottom + 16:.1f}" text-anchor="middle">{tick_label(x, xstep)}</text>'
        )
    for y in ticks(y0, y1, ystep):
        out.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{right}" y2="{py(y):.1f}" stroke="#e4e4e4"/>')
        out.append(
            f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{tick_label(y, ystep)}</text>'
        )
    out.append(
        f'<path d="M{left},{ptop:.1f} V{pbottom:.1f} H{right}" fill="none" stroke="#333" stroke-width="1.2"/>'
    )
    out.append(
        f'<text x="{(left + right) / 2:.0f}" y="{pbottom + 36:.1f}" text-anchor="middle">'
        f"{escape(panel.x_label)}</text>"
    )
    mid = (ptop + pbottom) / 2
    out.append(
        f'<text x="16" y="{mid:.0f}" text-anchor="middle" transform="rotate(-90 16 {mid:.0f})">'
        f"{escape(panel.y_label)}</text>"
    )
    for x, text in panel.markers:
        out.append(
            f'<line x1="{px(x):.1f}" y1="{ptop:.1f}" x2="{px(x):.1f}" y2="{pbottom:.1f}" stroke="#888" '
            f'stroke-dasharray="4 3"/>'
        )
        # Near the right edge the label goes left of its line, clear of the legend.
        anchor, dx = ("end", -3) if px(x) > right - 80 else ("start", 3)
        out.append(
            f'<text x="{px(x) + dx:.1f}" y="{ptop + 12:.1f}" text-anchor="{anchor}" fill="#666">'
            f"{escape(text)}</text>"
        )
    for i, series in enumerate(panel.series):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(series.points))
        if len(series.points) == 1:
            (x, y) = series.points[0]
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}"/>')
        elif series.points:
            out.append(
                f'<polyline class="series" data-name="{escape(series.name)}" points="{coords}" '
                f'fill="none" stroke="{color}" stroke-width="1.8"/>'
            )
        ly = ptop + 8 + i * 18
        out.append(
            f'<line x1="{right + 14}" y1="{ly:.1f}" x2="{right + 36}" y2="{ly:.1f}" stroke="{color}" '
            f'stroke-width="3"/>'
        )
        out.append(f'<text x="{right + 42}" y="{ly + 4:.1f}">{escape(series.name)}</text>')
    return out


def render(panels: list[Panel], title: str = "", width: int = WIDTH, height: int = PANEL_HEIGHT) -> str:
    """A whole SVG document: ``panels`` stacked vertically under an optional caption."""
    head = 24 if title else 0
    total = head + height * max(1, len(panels))
    body = []
    if title:
        body.append(f'<text x="8" y="16" fill="#555">{escape(title)}</text>')
    for i, panel in enumerate(panels):
        body.extend(render_panel(panel, head + i * height, width, height))
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" '
            f'viewBox="0 0 {width} {total}" font-family="sans-serif" font-size="12">',
            f'<rect width="{width}" height="{total}" fill="white"/>',
            *body,
            "</svg>",
            "",
        ]
    )


# ---- the benchmarks' results -> panels ----------------------------------------------------------


def timeline_points(timeline: list[list[float]] | None) -> list[Point]:
    return [(float(t), float(v)) for t, v in timeline or []]


def sync_panels(result: dict[str, Any]) -> list[Panel]:
    """bench/sync.py: one panel per N with a timeline on either side."""
    panels = []
    for n, row in sorted(result.get("rounds", {}).items(), key=lambda kv: int(kv[0])):
        series = []
        for key, name in (("virtual", "virtual cluster"), ("baseline_host", "directly on the host")):
            points = timeline_points((row.get(key) or {}).get("timeline"))
            if points:
                series.append(Series(name, points))
        if series:
            panels.append(
                Panel(
                    f"{n} pods: Running over time", "seconds since the first create", "pods Running", series
                )
            )
    return panels


def soak_panels(result: dict[str, Any]) -> list[Panel]:
    """bench/soak.py: RSS per component, then queue depth (total and each kind that was ever queued)."""
    timeline = result.get("timeline", [])
    markers = []
    if result.get("warmup_s"):
        markers.append((float(result["warmup_s"]), "warm-up"))
    if result.get("churn_seconds"):
        markers.append((float(result["churn_seconds"]), "churn ends"))
    components: list[str] = []
    for row in timeline:
        for name in row.get("rss_mib", {}):
            if name not in components:
                components.append(name)
    syncer = "syncer" if "syncer" in components else "supervisor"
    order = [syncer, *(c for c in components if c != syncer)]
    rss = [
        Series(
            f"{c} (syncer)" if c == syncer and c != "syncer" else c,
            [(row["t"], row["rss_mib"][c]) for row in timeline if c in row.get("rss_mib", {})],
        )
        for c in order
    ]
    depth = [
        Series(
            "all kinds",
            [(row["t"], row["queue_depth_total"]) for row in timeline if "queue_depth_total" in row],
        )
    ]
    kinds = sorted({k for row in timeline for k, v in row.get("queue_depth", {}).items() if v})
    for kind in kinds:
        depth.append(
            Series(
                kind,
                [(row["t"], row["queue_depth"].get(kind, 0)) for row in timeline if "queue_depth" in row],
            )
        )
    population = [
        Series(name, [(row["t"], row[key]) for row in timeline if key in row])
        for key, name in (
            ("virtual_pods", "virtual pods"),
            ("virtual_pods_running", "virtual pods Running"),
            ("host_pods", "host copies"),
        )
    ]
    x_label = "seconds since the churn started"
    return [
        Panel("Control-plane RSS", x_label, "MiB", rss, markers),
        Panel("Syncer work-queue depth", x_label, "keys queued", depth, markers),
        Panel("Pods", x_label, "pods", [s for s in population if s.points], markers),
    ]


def caption(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    return f"vnest {result.get('benchmark', '')} benchmark, {m.get('date', '')}, {m.get('nproc', '?')} CPUs"


PLOTS = {"sync": sync_panels, "soak": soak_panels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(PLOTS), help="which benchmark's results")
    parser.add_argument("results", type=Path, help="the benchmark's JSON")
    parser.add_argument("svg", type=Path, help="where to write the chart")
    args = parser.parse_args(argv)
    result = json.loads(args.results.read_text())
    panels = PLOTS[args.kind](result)
    if not panels:
        print(f"{args.results}: nothing to plot (no timelines)", file=sys.stderr)
        return 1
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    args.svg.write_text(render(panels, caption(result)))
    print(f"written to {args.svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
