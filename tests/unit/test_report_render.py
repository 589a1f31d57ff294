"""Report formats (table, csv, json, md, self-contained html), plots, and the terminal progress line."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from carbond.reports.progress import Progress
from carbond.reports.render import Column, Figure, Report, render

COLUMNS = (Column("phase", "phase", "text"), Column("energy_kwh", "energy_kwh", digits=3),
           Column("share_pct", "share_%", digits=1))
ROWS = ({"phase": "training", "energy_kwh": 1234.5678, "share_pct": 75.0},
        {"phase": "in|ference <b>", "energy_kwh": 0.5, "share_pct": None},
        {"phase": "TOTAL", "energy_kwh": 1235.0678, "share_pct": 100.0, "_total": True})


def report(figures: tuple[Figure, ...] = ()) -> Report:
    return Report("lifecycle", "Lifecycle — demo", COLUMNS, ROWS, ("a note",), {"project": "demo"}, figures)


def test_table_csv_json_md():
    table = render(report(), "table")
    assert "1,234.568" in table and "TOTAL" in table and "a note" in table and "-" * 10 in table
    rows = list(csv.reader(io.StringIO(render(report(), "csv"))))
    assert rows[0] == ["phase", "energy_kwh", "share_pct"] and rows[1] == ["training", "1234.5678", "75.0"]
    assert rows[2][2] == ""
    doc = json.loads(render(report(), "json"))
    assert doc["rows"][1]["share_pct"] is None and "_total" not in doc["rows"][2] and doc["meta"] == {"project": "demo"}
    md = render(report(), "md")
    assert "| phase | energy_kwh | share_% |" in md and "in\\|ference" in md and "**TOTAL**" in md
    with pytest.raises(ValueError, match="unknown format"):
        render(report(), "pdf")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "action", "srcset", "data")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def png_pixels(png: bytes):
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


def test_html_is_self_contained_and_embeds_its_images():
    pytest.importorskip("matplotlib")
    from carbond.reports import plots

    figs = (Figure("share", "share", plots.share_and_energy(["a", "b"], [1.0, 3.0], [2.0, 5.0])),
            Figure("water", "water", plots.water_by_phase(["a", "b"], [1.0, 2.0])))
    page = render(report(figs), "html")
    p = _Collector()
    p.feed(page)
    p.close()
    assert p.tags.count("img") == 2 and "table" in p.tags and "script" not in p.tags and "link" not in p.tags
    assert all(u.startswith("data:image/png;base64,") for u in p.urls) and len(p.urls) == 2
    assert "http:" not in page and "https:" not in page and "@import" not in page and "url(" not in page
    assert "in|ference <b>" in "".join(p.text)  # escaped text, not markup
    for url in p.urls:
        assert png_pixels(base64.b64decode(url.split(",", 1)[1])).std() > 0.01


def test_every_plot_is_a_non_blank_png():
    pytest.importorskip("matplotlib")
    from carbond.reports import plots

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pngs = [
        plots.share_and_energy(["development (projected)", "training (measured)"], [2.0, 8.0], [3.0, 9.0]),
        plots.share_and_energy(["x"], [0.0], [0.0]),  # nothing measured yet: still a figure
        plots.water_by_phase(["a", "b", "c"], [1.0, 0.0, 4.0]),
        plots.cumulative_co2([t0 + timedelta(hours=h) for h in range(5)], [0.0, 1.0, 1.5, 3.0, 3.2]),
        plots.comparison_bars(["base", "pruned"], [4.0, 2.0], [1.6, None], "energy (kWh)", "CO2e (kg)", baseline=0),
        plots.pareto(["a", "b", "c"], [1.0, 2.0, 3.0], [0.5, 0.9, 0.8], [True, True, False], "energy (kWh)", "accuracy"),
    ]
    for png in pngs:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = png_pixels(png)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0.01


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_only_on_a_terminal():
    quiet = io.StringIO()
    p = Progress("reading", stream=quiet, delay_s=0)
    p.update(1, 2)
    p.draw()
    p.close()
    assert not p.enabled and quiet.getvalue() == ""
    tty = _Tty()
    p = Progress("reading", stream=tty, delay_s=3600)  # the drawing thread waits; draw by hand
    p.update(1, 4)
    assert "[#######-" in p.line() and "25%" in p.line()
    p.draw()
    p.stage("asking InfluxDB")
    assert "asking InfluxDB" in p.line() and "%" not in p.line()  # no total: a spinner and the elapsed time
    p.close()
    assert tty.getvalue().startswith("\r\033[K") and tty.getvalue().endswith("\r\033[K")
