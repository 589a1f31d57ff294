"""Spool → InfluxDB 1.6.7 delivery throughput and outage replay, against a real local ``influxd``.

    python tests/benchmarks/bench_delivery.py [--gpus 8] [--outage-s 3600] [--sustained-points 500000] [--json FILE]

1. Spool cost on the tick side: one ``SpooledStore.write`` (encode + one SQLite commit) per
   tick of ``gpus + 4`` points (device × (gpus + cpu + ram), host, job), like the daemon.
2. Outage replay: ``--outage-s`` ticks at 1 s are spooled with delivery stopped (the outage),
   then delivery starts and the time until the spool is empty is measured.
3. Sustained delivery: ``--sustained-points`` points in the spool, delivered to an empty database.

Each phase writes to a fresh database of a fresh ``influxd`` (the harness of the tests);
points/s is points delivered over wall time until the spool is empty.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[2]))

from fakes.influx_servers import Influxd

from carbond.store.base import Point, make_point
from carbond.store.delivery import SpooledStore, SpoolOptions
from carbond.store.influx import InfluxStore

S = 1_000_000_000


def tick(i: int, gpus: int, t0_ns: int) -> list[Point]:
    t = t0_ns + i * S
    out = [make_point("device", {"host": "bench", "device": f"gpu{g}", "kind": "gpu", "model": "NVIDIA H100 80GB HBM3",
                                 "source": "counter"},
                      {"power_w": 300.0 + g + (i % 50), "energy_j": 300.5 + g, "utilization_pct": 87.0 + g % 3,
                       "memory_used_bytes": 6.4e10 + i, "temperature_c": 61.0 + g % 5}, t) for g in range(gpus)]
    out.append(make_point("device", {"host": "bench", "device": "cpu0", "kind": "cpu", "model": "AMD EPYC 9654",
                                     "source": "counter"}, {"power_w": 210.0, "energy_j": 210.3, "utilization_pct": 41.0}, t))
    out.append(make_point("device", {"host": "bench", "device": "ram", "kind": "ram", "model": "ram", "source": "model"},
                          {"power_w": 60.0, "energy_j": 60.1, "utilization_pct": 35.0}, t))
    out.append(make_point("host", {"host": "bench", "region": "DE", "intensity_source": "table"},
                          {"power_w": 2700.0, "energy_j": 2700.1, "intensity_g_per_kwh": 366.0, "pue": 1.2, "co2_g": 0.33,
                           "water_l": 0.004, "embodied_g": 0.02}, t))
    out.append(make_point("job", {"host": "bench", "project": "bert", "job": "bert-ft", "phase": "training", "run": "r1"},
                          {"power_w": 2400.0, "energy_j": 2400.1, "co2_g": 0.29, "water_l": 0.003, "embodied_g": 0.02}, t))
    return out


def phase(server: Influxd, tmp: Path, name: str, ticks: int, gpus: int) -> dict[str, float]:
    db = server.create_database(name)
    store = SpooledStore.open(InfluxStore(server.url(db)), SpoolOptions(tmp / f"{name}.db"), start=False)
    t0_ns = (time.time_ns() // S - ticks - 60) * S
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(ticks):
        store.write(tick(i, gpus, t0_ns))
    spool_cpu_s, spool_wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    n = len(store.spool)
    wall0 = time.perf_counter()
    store.delivery.start()
    if not store.wait_empty(600):
        raise SystemExit(f"{name}: the spool did not empty within 600 s")
    deliver_s = time.perf_counter() - wall0
    stored = server.count(db, "device") + server.count(db, "host") + server.count(db, "job")
    store.close()
    if stored != n:
        raise SystemExit(f"{name}: {stored} points stored, {n} spooled")
    return {"points": n, "ticks": ticks, "spool_ms_per_tick_cpu": 1e3 * spool_cpu_s / ticks,
            "spool_ms_per_tick_wall": 1e3 * spool_wall_s / ticks, "deliver_s": deliver_s, "points_per_s": n / deliver_s,
            "requests": store.delivery.requests, "spool_bytes_per_point": (tmp / f"{name}.db").stat().st_size / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--outage-s", type=int, default=3600)
    ap.add_argument("--sustained-points", type=int, default=500_000)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    per_tick = args.gpus + 4
    with tempfile.TemporaryDirectory(prefix="carbond-bench-") as d:
        tmp = Path(d)
        server = Influxd(tmp / "influxd").start()
        try:
            results = {
                "outage_replay": phase(server, tmp, "replay", args.outage_s, args.gpus),
                "sustained": phase(server, tmp, "sustained", -(-args.sustained_points // per_tick), args.gpus),
            }
        finally:
            server.stop()
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r, s = results["outage_replay"], results["sustained"]
    print(f"spool append per tick ({per_tick} points): {r['spool_ms_per_tick_cpu']:.3f} ms CPU, "
          f"{r['spool_ms_per_tick_wall']:.3f} ms wall")
    print(f"outage replay: {r['points']:,} points ({args.outage_s} s at 1 s, {args.gpus} GPUs) delivered in "
          f"{r['deliver_s']:.2f} s = {r['points_per_s']:,.0f} points/s in {r['requests']} requests")
    print(f"sustained: {s['points']:,} points in {s['deliver_s']:.2f} s = {s['points_per_s']:,.0f} points/s; "
          f"spool file {s['spool_bytes_per_point']:.0f} bytes/point")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
