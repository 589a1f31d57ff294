"""Every benchmark, one command: one JSON with all the figures and one markdown table of the headline ones.

    python tests/benchmarks/run_all.py [--quick] [--out DIR] [--only NAME ...] [--skip NAME ...]

Runs, one after the other, each as its own process (so one cannot warm the next one's caches
or memory), with its ``--json``: bench_daemon (daemon CPU per tick and RSS, ``carbond --help``,
RSS on InfluxDB v1/v2 URLs), bench_runs (tick cost with 0/10/50 runs, ``track()`` enter+exit),
bench_delivery (spool append, InfluxDB 1.6.7 delivery and outage replay), bench_reports
(lifecycle report over 30 days of 1 s data, when present), bench_codecarbon (carbond vs
CodeCarbon side by side; creates CodeCarbon's virtualenv on first use), bench_fleet (100
hosts at 1 s into one InfluxDB for 10 minutes) and bench_matrix (daemon CPU and RSS for 0/8/64
GPUs × 0/10/50 runs × SQLite, InfluxDB v1 and v2; about 25 minutes). ``--quick`` shortens each (about 4 minutes in
all instead of about 40 minutes on the reference machine) — good for checking that everything
runs, not for quoting.

Writes ``DIR/results.json`` (every benchmark's own JSON, its arguments, wall time and exit code,
and the machine) and ``DIR/results.md`` (the table, each figure against its target), and each
benchmark's output to ``DIR/NAME.log``. ``DIR`` defaults to ``.cache/bench-results`` in the
repository (ignored by git). Exit code 1 if a benchmark failed or a target with a hard
requirement (points lost = 0) was missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# name: (full arguments, --quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "bench_daemon": (["--seconds", "60", "--influx"], ["--seconds", "20"]),
    "bench_runs": (["--ticks", "60"], ["--ticks", "15"]),
    "bench_delivery": ([], ["--outage-s", "600", "--sustained-points", "100000"]),
    "bench_reports": ([], ["--days", "2", "--repeat", "1"]),
    "bench_codecarbon": ([], ["--rounds", "1", "--seconds", "20", "--warmup", "10"]),
    "bench_fleet": (["--minutes", "10"], ["--minutes", "1"]),
    "bench_matrix": (["--seconds", "30"], ["--seconds", "5", "--gpus", "8", "--runs", "10", "--stores", "sqlite", "v1"]),
}

Row = tuple[str, str, str, str]  # benchmark, figure, measured, target (with "met"/"not met")


def _get(doc: Any, *path: Any) -> Any:
    for key in path:
        if doc is None:
            return None
        doc = doc.get(key) if isinstance(doc, dict) else (doc[key] if isinstance(doc, list) and len(doc) > key else None)
    return doc


def _fmt(v: Any, unit: str = "", digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{unit}"
    if isinstance(v, int):
        return f"{v:,}{unit}"
    return f"{v}{unit}"


def _check(v: Any, ok: Callable[[Any], bool], target: str) -> str:
    if v is None:
        return target
    return f"{target} — {'met' if ok(v) else '**not met**'}"


def rows_daemon(r: dict) -> list[Row]:
    d, h = r.get("daemon", {}), r.get("help", {})
    out = [
        ("daemon", f"CPU per tick, {d.get('gpus')} simulated GPUs, SQLite, 1 s", _fmt(d.get("cpu_ms_per_tick"), " ms", 3),
         _check(d.get("cpu_ms_per_tick"), lambda v: v <= 0.5, "≤ 0.5 ms")),
        ("daemon", "RSS, SQLite", _fmt(d.get("rss_mb"), " MB", 1), _check(d.get("rss_mb"), lambda v: v <= 40, "≤ 40 MB")),
        ("daemon", "`carbond --help`, median wall", _fmt(h.get("median_ms"), " ms", 1),
         _check(h.get("median_ms"), lambda v: v <= 150, "≤ 150 ms")),
        ("daemon", "heavy modules loaded (SQLite)", ", ".join(d.get("heavy_modules_loaded", [])) or "none", "none"),
    ]
    for name, limit in (("influxdb+v1 (influxd 1.6.7)", 40), ("influxdb+v2 (client path)", 64)):
        v = _get(r, "influx", name, "rss_mb")
        if v is not None:
            out.append(("daemon", f"RSS, {name}", _fmt(v, " MB", 1), _check(v, lambda x, lim=limit: x <= lim, f"≤ {limit} MB")))
    return out


def rows_runs(r: dict) -> list[Row]:
    out: list[Row] = []
    for t in r.get("ticks", []):
        target = _check(t["tick_ms_median"], lambda v: v <= 2.0, "≤ 2 ms") if t["runs"] == 50 else ""
        out.append(("runs", f"tick with {t['runs']} runs, {t['gpus']} GPUs (median, tick thread)",
                    _fmt(t["tick_ms_median"], " ms", 3), target))
    tr = r.get("track", {})
    out.append(("runs", "`carbond.track()` enter+exit, median", _fmt(tr.get("median_ms"), " ms"),
                _check(tr.get("median_ms"), lambda v: v <= 5, "≤ 5 ms")))
    return out


def rows_delivery(r: dict) -> list[Row]:
    s, o = r.get("sustained", {}), r.get("outage_replay", {})
    return [
        ("delivery", "sustained delivery to InfluxDB 1.6.7", _fmt(s.get("points_per_s"), " points/s", 0),
         _check(s.get("points_per_s"), lambda v: v >= 50_000, "≥ 50,000 points/s")),
        ("delivery", f"outage replay, {o.get('ticks')} ticks ({_fmt(o.get('points'))} points)", _fmt(o.get("deliver_s"), " s"),
         _check(o.get("deliver_s"), lambda v: v <= 10, "≤ 10 s for 1 h") if o.get("ticks") == 3600 else ""),
        ("delivery", "spool append per tick, CPU", _fmt(o.get("spool_ms_per_tick_cpu"), " ms", 3), ""),
    ]


def rows_reports(r: dict) -> list[Row]:
    s = r.get("sqlite", {})
    out = [("reports", f"rollup first build, {s.get('days')} days", _fmt(s.get("rollup_first_build_s"), " s"), "")]
    for key in ("lifecycle_table", "lifecycle_json_checked", "lifecycle_html", "lifecycle_after_10min_unfolded"):
        v = _get(s, key, "median_s")
        if v is not None:
            out.append(("reports", f"`report lifecycle` ({key.removeprefix('lifecycle_')}), {s.get('days')} days",
                        _fmt(v, " s"), ""))
    return out


def rows_codecarbon(r: dict) -> list[Row]:
    out: list[Row] = []
    med = r.get("median", {})
    for k in ("carbond", "carbond+runs", "codecarbon"):
        m = med.get(k, {})
        out.append(("vs CodeCarbon", f"{k}: CPU per second / RSS / start-up (median)",
                    f"{_fmt(m.get('cpu_ms_per_s'), ' ms/s')} / {_fmt(m.get('rss_mb'), ' MB', 1)} / "
                    f"{_fmt(m.get('startup_s'), ' s')}", ""))
    for k, ratio in r.get("ratio_vs_codecarbon", {}).items():
        out.append(("vs CodeCarbon", f"{k} / CodeCarbon {r.get('codecarbon_version')}: CPU per second",
                    _fmt(ratio["cpu_ms_per_s"], "×"), _check(ratio["cpu_ms_per_s"], lambda v: v <= 0.5, "≤ 0.5×")))
        out.append(("vs CodeCarbon", f"{k} / CodeCarbon: RSS", _fmt(ratio["rss_mb"], "×"),
                    _check(ratio["rss_mb"], lambda v: v <= 0.45, "≤ 0.45×")))
    return out


def rows_fleet(r: dict) -> list[Row]:
    return [
        ("fleet", f"{r.get('hosts')} hosts × {r.get('gpus_per_host')} GPUs at {r.get('interval_s')} s, "
                  f"{r.get('minutes')} min: points lost", _fmt(r.get("points_lost")),
         _check(r.get("points_lost"), lambda v: v == 0, "0")),
        ("fleet", "points written / stored", f"{_fmt(r.get('points_written'))} / {_fmt(r.get('points_stored'))}", ""),
        ("fleet", f"delivery lag, max (flush every {r.get('flush_interval_s')} s)", _fmt(r.get("lag_s_max"), " s"),
         _check(r.get("lag_s_max"), lambda v: v <= r.get("lag_bound_s", 0), f"≤ {r.get('lag_bound_s')} s")),
        ("fleet", "CPU per host-second (workers) / influxd", f"{_fmt(r.get('workers_cpu_ms_per_host_s'), ' ms', 3)} / "
                  f"{_fmt(r.get('influxd_cpu_pct'), '% of a core', 1)}", ""),
    ]


def rows_matrix(r: dict) -> list[Row]:
    return [("matrix", f"{m['store']}, {m['gpus']} GPUs, {m['runs']} runs ({m['runs_attributed']} attributed): CPU / RSS",
             f"{_fmt(m['cpu_ms_per_s'], ' ms/s', 3)} / {_fmt(m['rss_mb'], ' MB', 1)}", "") for m in r.get("rows", [])]


ROWS: dict[str, Callable[[dict], list[Row]]] = {
    "bench_daemon": rows_daemon, "bench_runs": rows_runs, "bench_delivery": rows_delivery, "bench_reports": rows_reports,
    "bench_codecarbon": rows_codecarbon, "bench_fleet": rows_fleet, "bench_matrix": rows_matrix,
}


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "kernel": platform.release(),
            "python": platform.python_version(), "commit": rev, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"# carbond benchmarks — {m['date']}{' (quick)' if results['quick'] else ''}", "",
             f"{m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}, "
             f"commit {m['commit']}. Rerun: `python tests/benchmarks/run_all.py{' --quick' if results['quick'] else ''}`.", "",
             "| benchmark | figure | measured | target |", "|---|---|---|---|"]
    for name, b in results["benchmarks"].items():
        if b["exit"] != 0 and not b.get("result"):
            lines.append(f"| {name} | **failed** (exit {b['exit']}, see {name}.log) | | |")
            continue
        for bench, figure, measured, target in ROWS[name](b.get("result") or {}):
            lines.append(f"| {bench} | {figure} | {measured} | {target} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs: checks everything works (not for quoting)")
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench-results")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    ap.add_argument("--skip", nargs="+", choices=sorted(BENCHMARKS), default=[], help="leave these out")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "benchmarks": {}}
    failed = False
    for name, (full, quick) in BENCHMARKS.items():
        script = HERE / f"{name}.py"
        if (args.only and name not in args.only) or name in args.skip or not script.exists():
            continue
        out_json = args.out / f"{name}.json"
        out_json.unlink(missing_ok=True)
        argv = [sys.executable, str(script), *(quick if args.quick else full), "--json", str(out_json)]
        print(f"== {name} {' '.join(argv[2:])}", flush=True)
        t0 = time.monotonic()
        with (args.out / f"{name}.log").open("w") as log:
            proc = subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wall = time.monotonic() - t0
        result = json.loads(out_json.read_text()) if out_json.exists() else None
        results["benchmarks"][name] = {"args": argv[2:], "exit": proc.returncode, "wall_s": round(wall, 1), "result": result}
        failed |= proc.returncode != 0
        print(f"   exit {proc.returncode} in {wall:.0f} s", flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / "results.md").write_text(table)
    print("\n" + table)
    print(f"written: {args.out / 'results.json'}, {args.out / 'results.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
