"""``carbond export``: points from any store as CSV, JSON lines or line protocol."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import TextIO

from carbond.store.base import Store
from carbond.store.lineprotocol import encode
from carbond.timeutil import iso

FORMATS = ("csv", "jsonl", "lp")


def export(store: Store, out: TextIO, fmt: str, measurement: str | None, since_ns: int | None,
           until_ns: int | None) -> int:
    """Write the points; returns how many were written."""
    def points() -> Iterator:
        return store.scan(measurement, since_ns, until_ns)

    n = 0
    if fmt == "jsonl":
        for p in points():
            out.write(json.dumps({"measurement": p.measurement, "time": iso(p.time_ns), "time_ns": p.time_ns,
                                  "tags": dict(p.tags), "fields": dict(p.fields)}, separators=(",", ":")) + "\n")
            n += 1
    elif fmt == "lp":
        for p in points():
            line = encode(p)
            if line is not None:
                out.write(line + "\n")
                n += 1
    elif fmt == "csv":
        tag_keys: set[str] = set()
        field_keys: set[str] = set()
        for p in points():  # first pass: the columns
            tag_keys.update(p.tags)
            field_keys.update(p.fields)
        tag_cols, field_cols = sorted(tag_keys), sorted(field_keys - tag_keys)
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["measurement", "time", *tag_cols, *field_cols])
        for p in points():
            writer.writerow([p.measurement, iso(p.time_ns), *(p.tags.get(k, "") for k in tag_cols),
                             *(_num(p.fields.get(k)) for k in field_cols)])
            n += 1
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return n


def _num(v: float | None) -> str:
    return "" if v is None else repr(v)
