"""The pure parts of the benchmarks: the soak's statistics and metrics parsing, and the SVG charts.

The benchmarks are scripts in bench/ that import their siblings as top-level modules
(`from common import ...`), so their folder goes on sys.path as when they run.
"""

from __future__ import annotations

import importlib
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))
soak = importlib.import_module("soak")
plot = importlib.import_module("plot")

SVG = "{http://www.w3.org/2000/svg}"


def test_slope_of_a_line_and_of_noise_around_it():
    assert soak.least_squares_slope([(t, 3 + 2 * t) for t in range(10)]) == pytest.approx(2)
    noisy = [(t, 100 + 0.5 * t + (1 if t % 2 else -1)) for t in range(100)]
    assert soak.least_squares_slope(noisy) == pytest.approx(0.5, abs=0.01)
    assert soak.least_squares_slope([(1, 5)]) is None
    assert soak.least_squares_slope([(1, 5), (1, 6)]) is None


def test_series_stats_leaves_out_the_warmup_and_reports_per_hour():
    # 60 MiB flat for the first 120 s (warm-up), then +1 MiB a minute: 60 MiB an hour.
    points = [(float(t), 40.0 if t < 120 else 60 + (t - 120) / 60) for t in range(0, 1800, 5)]
    stats = soak.series_stats(points, warmup=120, window=300)
    assert stats["slope_per_hour"] == pytest.approx(60, abs=0.1)
    assert stats["from_s"] == 120
    assert stats["window_s"] == 300
    assert stats["first_window_mean"] == pytest.approx(62.5, abs=0.1)
    assert stats["last_window_mean"] == pytest.approx(85.42, abs=0.01)  # t 1495..1795
    assert stats["min"] == 60


def test_series_stats_of_a_short_run_halves_the_window():
    stats = soak.series_stats([(float(t), 1.0) for t in range(0, 181, 5)], warmup=60, window=300)
    assert stats["window_s"] == 60
    assert stats["slope_per_hour"] == 0
    assert soak.series_stats([(1.0, 1.0)], warmup=60, window=300) == {"samples": 0}


def test_parse_prometheus_reads_queue_depth_by_kind():
    text = (
        "# HELP vnest_syncer_queue_depth Keys waiting to be reconciled, by kind.\n"
        "# TYPE vnest_syncer_queue_depth gauge\n"
        'vnest_syncer_queue_depth{kind="Pod"} 3\n'
        'vnest_syncer_queue_depth{kind="Service"} 0\n'
        "vnest_dns_tcp_connections 2\n"
        "garbage line\n"
    )
    metrics = soak.parse_prometheus(text)
    depth = {soak.label(k, "kind"): v for k, v in metrics["vnest_syncer_queue_depth"].items()}
    assert depth == {"Pod": 3, "Service": 0}
    assert metrics["vnest_dns_tcp_connections"] == {"": 2}


def test_per_minute_groups_pods_by_creation_minute():
    records = {
        "a": soak.PodRecord(created=100.0, running=100.5),
        "b": soak.PodRecord(created=130.0, running=131.0),
        "c": soak.PodRecord(created=165.0, running=None, deleted=True),
        "d": soak.PodRecord(created=170.0),
    }
    rows = soak.per_minute(records, start=100.0)
    assert [r["minute"] for r in rows] == [0, 1]
    assert rows[0]["created"] == 2 and rows[0]["running"] == 2
    assert rows[0]["latency_s"]["max"] == 1.0
    assert rows[1] == {
        "minute": 1,
        "created": 2,
        "running": 0,
        "deleted_before_running": 1,
        "never_running": 1,
    }


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [(0, 97, (0, 100, 20)), (0, 0.37, (0, 0.4, 0.1)), (5, 5, (4, 6, 0.5)), (0, 1800, (0, 2000, 500))],
)
def test_nice_range(lo, hi, expected):
    assert plot.nice_range(lo, hi) == pytest.approx(expected)


def polylines(svg: str) -> list[tuple[str, list[tuple[float, ...]]]]:
    """(series name, pixel points) of each polyline; parsing also proves the SVG well-formed."""
    root = ET.fromstring(svg)
    return [
        (p.get("data-name", ""), [tuple(map(float, xy.split(","))) for xy in p.get("points", "").split()])
        for p in root.iter(f"{SVG}polyline")
    ]


def test_render_draws_each_series_with_its_legend():
    panel = plot.Panel(
        "t <title>",
        "seconds",
        "MiB",
        [plot.Series("syncer", [(0, 1), (10, 2), (20, 4)]), plot.Series("kine & co", [(0, 3), (20, 3)])],
        markers=[(5.0, "warm-up")],
    )
    svg = plot.render([panel], "caption")
    lines = dict(polylines(svg))
    assert set(lines) == {"syncer", "kine & co"}
    assert len(lines["syncer"]) == 3
    # Larger values are drawn higher (smaller y); a flat series is one horizontal line.
    ys = [y for _, y in lines["syncer"]]
    assert ys[0] > ys[1] > ys[2]
    assert len({y for _, y in lines["kine & co"]}) == 1
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]
    for expected in ("t <title>", "syncer", "kine & co", "warm-up", "seconds", "MiB", "caption"):
        assert expected in texts


def test_sync_panels_take_each_rounds_timelines():
    result = {
        "rounds": {
            "1000": {
                "baseline_host": {"timeline": [[0, 0], [1, 500], [2, 1000]]},
                "virtual": {"timeline": [[0, 0], [2, 400], [4, 1000]]},
            },
            "100": {"baseline_host": {"timeline": [[0, 0], [0.5, 100]]}, "virtual": {}},
            "10": {"error": "failed"},
        }
    }
    panels = plot.sync_panels(result)
    assert [p.title for p in panels] == ["100 pods: Running over time", "1000 pods: Running over time"]
    assert [s.name for s in panels[1].series] == ["virtual cluster", "directly on the host"]
    assert panels[1].series[0].points == [(0, 0), (2, 400), (4, 1000)]
    svg = plot.render(panels)
    assert len(polylines(svg)) == 3


def test_soak_panels_name_the_syncer_wherever_it_runs():
    timeline = [
        {
            "t": 0,
            "rss_mib": {"supervisor": 60, "kine": 50},
            "queue_depth": {"Pod": 0},
            "queue_depth_total": 0,
        },
        {
            "t": 5,
            "rss_mib": {"supervisor": 61, "kine": 50},
            "queue_depth": {"Pod": 2},
            "queue_depth_total": 2,
        },
    ]
    rss, depth, *_ = plot.soak_panels({"timeline": timeline, "warmup_s": 2, "churn_seconds": 5})
    assert [s.name for s in rss.series] == ["supervisor (syncer)", "kine"]
    assert [s.name for s in depth.series] == ["all kinds", "Pod"]
    assert [m for m, _ in rss.markers] == [2, 5]


def test_main_writes_the_svg(tmp_path):
    results = tmp_path / "soak.json"
    results.write_text('{"timeline": [{"t": 0, "rss_mib": {"syncer": 1}, "queue_depth_total": 0}]}')
    out = tmp_path / "soak.svg"
    assert plot.main(["soak", str(results), str(out)]) == 0
    assert out.read_text().startswith("<svg")
    (tmp_path / "sync.json").write_text('{"rounds": {}}')
    assert plot.main(["sync", str(tmp_path / "sync.json"), str(tmp_path / "sync.svg")]) == 1
