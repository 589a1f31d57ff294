"""A report as a value, and its five renderings: ``table``, ``csv``, ``json``, ``md``, ``html``.

``html`` is one self-contained file: inline CSS, plots embedded as ``data:image/png;base64``
URIs, no scripts and no external URL, so it opens without network. The other formats carry
the table only (``json`` also the metadata and notes). Stdlib only.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from carbond.reports.formats import FORMATS


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: str = "num"  # num | text
    digits: int = 3  # decimals, or significant digits when ``significant``
    significant: bool = False  # for tiny per-unit figures such as joules per item


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    png: bytes


@dataclass(frozen=True)
class Report:
    kind: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Mapping[str, Any], ...]
    notes: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    figures: tuple[Figure, ...] = ()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def cell(column: Column, value: Any) -> str:
    """A value as shown in table, md and html."""
    if _missing(value):
        return "-" if column.kind == "num" else ""
    if column.kind == "num" and isinstance(value, int | float) and not isinstance(value, bool):
        if column.significant or (value != 0 and abs(value) < 0.5 * 10.0 ** -column.digits):
            return f"{value:.{max(column.digits, 3)}g}"  # never show a non-zero figure as 0.000
        return f"{value:,.{column.digits}f}"
    return str(value)


def _plain(value: Any) -> Any:
    """A value for csv/json: numbers at full precision, missing as None."""
    if _missing(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars from pandas
        return value.item()
    return value


def render_table(r: Report) -> str:
    grid = [[cell(c, row.get(c.key)) for c in r.columns] for row in r.rows]
    widths = [max([len(c.title), *(len(g[i]) for g in grid)]) for i, c in enumerate(r.columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if c.kind == "num" else v.ljust(w)
                         for v, w, c in zip(values, widths, r.columns, strict=True)).rstrip()

    out = [r.title, line([c.title for c in r.columns])]
    for row, g in zip(r.rows, grid, strict=True):
        if row.get("_total"):
            out.append("  ".join("-" * w for w in widths))
        out.append(line(g))
    out.extend(f"  {note}" for note in r.notes)
    return "\n".join(out) + "\n"


def render_csv(r: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.key for c in r.columns])
    for row in r.rows:
        w.writerow(["" if (v := _plain(row.get(c.key))) is None else v for c in r.columns])
    return buf.getvalue()


def render_json(r: Report) -> str:
    doc = {"kind": r.kind, "title": r.title, "meta": _plain(dict(r.meta)),
           "columns": [{"key": c.key, "title": c.title} for c in r.columns],
           "rows": [{k: _plain(v) for k, v in row.items() if not k.startswith("_")} for row in r.rows],
           "notes": list(r.notes)}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_md(r: Report) -> str:
    out = [f"# {_md_escape(r.title)}", ""]
    out += [f"- **{_md_escape(str(k))}**: {_md_escape(str(v))}" for k, v in r.meta.items() if not isinstance(v, Mapping)]
    out += ["", "| " + " | ".join(_md_escape(c.title) for c in r.columns) + " |",
            "|" + "|".join("---:" if c.kind == "num" else ":---" for c in r.columns) + "|"]
    for row in r.rows:
        values = [_md_escape(cell(c, row.get(c.key))) for c in r.columns]
        if row.get("_total"):
            values = [f"**{v}**" if v else v for v in values]
        out.append("| " + " | ".join(values) + " |")
    if r.notes:
        out += [""] + [f"- {_md_escape(n)}" for n in r.notes]
    return "\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
th,td{padding:.3em .7em;border-bottom:1px solid #ddd}th{background:#f3f3f3;text-align:left}td.num{text-align:right;
font-variant-numeric:tabular-nums}tr.total td{font-weight:bold;border-top:2px solid #444}.meta{color:#555}
figure{display:inline-block;margin:1em}img{max-width:100%}figcaption{text-align:center;color:#555}"""


def render_html(r: Report) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(r.title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(r.title)}</h1>"]
    meta = [f"<b>{e(str(k))}</b>: {e(str(v))}" for k, v in r.meta.items() if not isinstance(v, Mapping)]
    if meta:
        parts.append('<p class="meta">' + "<br>".join(meta) + "</p>")
    parts.append("<table><thead><tr>" + "".join(f"<th>{e(c.title)}</th>" for c in r.columns) + "</tr></thead><tbody>")
    for row in r.rows:
        cells = "".join(f'<td class="{"num" if c.kind == "num" else "text"}">{e(cell(c, row.get(c.key)))}</td>'
                        for c in r.columns)
        parts.append(f'<tr class="total">{cells}</tr>' if row.get("_total") else f"<tr>{cells}</tr>")
    parts.append("</tbody></table>")
    if r.notes:
        parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in r.notes) + "</ul>")
    for fig in r.figures:
        data = base64.b64encode(fig.png).decode("ascii")
        parts.append(f'<figure id="{e(fig.name)}"><img alt="{e(fig.title)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{e(fig.title)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(report: Report, fmt: str) -> str:
    renderers = {"table": render_table, "csv": render_csv, "json": render_json, "md": render_md, "html": render_html}
    try:
        return renderers[fmt](report)
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}") from None
