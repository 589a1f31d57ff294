"""A fleet: 100 simulated hosts at 1 s writing to one real InfluxDB 1.6.7 — points lost, delivery lag.

    python tests/benchmarks/bench_fleet.py [--minutes 10] [--hosts 100] [--processes 4] [--gpus 8] [--json FILE]

Each host is a whole :class:`carbond.daemon.Daemon` — the object ``carbond run`` builds — with its
own host name, sensors (real CPU and RAM readings, ``--gpus`` simulated H100s), write-ahead
journal, spool and delivery thread, socket, tick thread and APScheduler jobs, started with
``Daemon.start()`` and stopped with ``Daemon.stop()``: every point takes the production path tick →
journal → flush (every ``store.flush_interval_s``, 10 s by default) → spool → delivery → InfluxDB.
Hosts are spread over ``--processes`` worker processes (25 daemons each by default) because 100
Python processes would not fit the 2-vCPU reference machine; a lighter generator writing straight
into the spool would skip the journal, the flush job and the tick thread, which are where a daemon
could lose or delay points. Start times are staggered over one interval, as a real fleet is.

Measured: points lost — per host, the points the daemon wrote (journal → spool, its own count)
against what InfluxDB holds after the stop (``count()`` per host and measurement), and ``host``
points against the ticks the daemon measured; delivery lag — every 5 s, for each host, now minus
the time of its newest ``host`` point in InfluxDB (what a dashboard sees), reported as the
maximum and the median of the per-sample maxima; the CPU and RSS of the workers and of influxd.
Exit code 1 when a point was lost.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[2]))

S = 1_000_000_000


def process_cpu_s(pid: int) -> float:
    """The kernel's CPU clock of a process (all threads, in ns precision), from outside."""
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9
    except OSError:
        return 0.0


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --- a worker: N daemons in one process -----------------------------------------------------------
def worker(args: argparse.Namespace) -> int:
    from carbond.config import load_settings
    from carbond.daemon import Daemon
    from carbond.sensors import build_sensors
    from carbond.store import open_configured_store

    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s worker{args.worker} %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    root = Path(args.dir) / f"w{args.worker}"
    daemons: list[Daemon] = []
    rng = random.Random(args.worker)
    for i in range(args.hosts_per_worker):
        name = f"fleet-{args.worker:02d}-{i:03d}"
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        settings = load_settings(env={"HOME": str(d), "XDG_DATA_HOME": str(d)}, flags={
            "daemon.host": name, "daemon.interval_s": args.interval, "daemon.simulate_gpus": args.gpus,
            "daemon.socket": str(d / "s.sock"), "sensors.nvml": False, "store.url": args.url,
            "store.spool_path": str(d / "spool.db"), "store.flush_interval_s": args.flush_interval}).settings
        daemon = Daemon(settings, build_sensors(settings), open_configured_store(settings.store), journal_dir=d / "journal")
        daemons.append(daemon)
    Path(args.ready).write_text("")
    for daemon in daemons:  # staggered over one interval, as real hosts are
        daemon.start()
        time.sleep(rng.uniform(0, args.interval / len(daemons)))
    stop.wait()
    hosts = {}
    for daemon in daemons:
        daemon.stop()
        counters = daemon.delivery_counters()
        hosts[daemon.settings.daemon.host] = {"ticks": daemon.stats["ticks"], "points_written": daemon.stats["points_written"],
                                              "pending_points": daemon.stats["pending_points"], **counters}
    Path(args.result).write_text(json.dumps(hosts))
    return 0


# --- the parent ------------------------------------------------------------------------------------
def counts_by_host(server, db: str, measurement: str) -> dict[str, int]:
    """Points per host: the largest per-field count (every point of a measurement has its always-set fields)."""
    return {s["tags"]["host"]: max(int(v) for v in s["values"][0][1:] if v is not None)
            for s in server.series(f'SELECT count(*) FROM "{measurement}" GROUP BY "host"', db)}


def newest_by_host(server, db: str) -> dict[str, int]:
    rows = server.query('SELECT last("energy_j") FROM "host" WHERE time > now() - 10m GROUP BY "host"', db)
    return {s["tags"]["host"]: int(s["values"][0][0]) for s in rows[0].get("series", [])}


def run(args: argparse.Namespace) -> dict:
    from fakes.influx_servers import Influxd

    per_worker = -(-args.hosts // args.processes)
    devices = args.gpus + 2  # gpuN..., cpu0, ram (no RAPL on the reference machine: one cpu0 device)
    with tempfile.TemporaryDirectory(prefix="carbond-fleet-") as tmp_s:
        tmp = Path(tmp_s)
        server = Influxd(tmp / "influxd").start()
        db = server.create_database("fleet")
        procs, results = [], []
        lag_samples: list[float] = []
        lag_p50: list[float] = []
        try:
            for w in range(args.processes):
                n = min(per_worker, args.hosts - w * per_worker)
                if n <= 0:
                    break
                result, ready = tmp / f"result{w}.json", tmp / f"ready{w}"
                cmd = [sys.executable, __file__, "--worker", str(w), "--hosts-per-worker", str(n), "--url", server.url(db),
                       "--dir", str(tmp), "--gpus", str(args.gpus), "--interval", str(args.interval),
                       "--flush-interval", str(args.flush_interval), "--result", str(result), "--ready", str(ready)]
                log = (tmp / f"worker{w}.log").open("wb")
                procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2]),
                              result, log, ready))
            deadline = time.monotonic() + 300
            while not all(r.exists() for *_, r in procs):
                if time.monotonic() > deadline or any(p.poll() is not None for p, *_ in procs):
                    raise SystemExit("a worker did not start; see its log")
                time.sleep(0.1)
            t_start = time.monotonic()
            cpu0 = {p.pid: process_cpu_s(p.pid) for p, *_ in procs}
            influx_cpu0 = process_cpu_s(server.proc.pid)
            end = t_start + args.minutes * 60
            rss_peak = 0.0
            while time.monotonic() < end:
                time.sleep(min(5.0, max(0.0, end - time.monotonic())))
                if time.monotonic() - t_start < args.flush_interval + 5:
                    continue  # every host has delivered its first flush by then
                now_ns = time.time_ns()
                newest = newest_by_host(server, db)
                lags = [(now_ns - newest.get(h, 0)) / S for h in all_hosts(args, per_worker)]
                lag_samples.append(max(lags))
                lag_p50.append(statistics.median(lags))
                rss_peak = max(rss_peak, sum(rss_mb(p.pid) for p, *_ in procs))
            wall = time.monotonic() - t_start
            cpu = sum(process_cpu_s(p.pid) - cpu0[p.pid] for p, *_ in procs)
            influx_cpu = process_cpu_s(server.proc.pid) - influx_cpu0
            influx_rss = rss_mb(server.proc.pid)
            for p, *_ in procs:
                p.send_signal(signal.SIGTERM)
            for p, result, log, _ in procs:
                p.wait(600)
                log.close()
                if p.returncode != 0 or not result.exists():
                    raise SystemExit(f"worker exited with {p.returncode}; see {log.name}")
                results.append(json.loads(result.read_text()))
            hosts = {h: r for part in results for h, r in part.items()}
            measurements = [row[0] for s in server.series("SHOW MEASUREMENTS", db) for row in s["values"]]
            stored = {m: counts_by_host(server, db, m) for m in measurements}  # job/run too if a process on this
            # machine carries CARBOND_JOB or SLURM_JOB_ID: every daemon's discovery finds it
            worker_logs = "".join((tmp / f"worker{w}.log").read_text(errors="replace") for w in range(len(procs)))
        finally:
            for p, *_ in procs:
                if p.poll() is None:
                    p.kill()
            server.stop()
    lost_host = lost_device = lost_points = 0
    per_host_problems = []
    for h, r in hosts.items():
        measured = r["ticks"] - 1
        got_host, got_device = stored.get("host", {}).get(h, 0), stored.get("device", {}).get(h, 0)
        got_all = sum(per_host.get(h, 0) for per_host in stored.values())
        lost_host += measured - got_host
        lost_device += measured * devices - got_device
        lost_points += r["points_written"] - r.get("dropped_points", 0) - r.get("dead_letter_points", 0) - got_all
        if got_host != measured or got_all != r["points_written"] or r.get("spool_points", 0) or r["pending_points"]:
            per_host_problems.append({"host": h, "measured": measured, "stored_host": got_host, "written": r["points_written"],
                                      "stored_all": got_all, **{k: v for k, v in r.items() if k != "ticks"}})
    total_written = sum(r["points_written"] for r in hosts.values())
    return {
        "hosts": len(hosts), "processes": len(results), "gpus_per_host": args.gpus, "interval_s": args.interval,
        "flush_interval_s": args.flush_interval, "minutes": args.minutes, "measured_s": round(wall, 1),
        "points_written": total_written, "points_stored": sum(sum(v.values()) for v in stored.values()),
        "points_stored_by_measurement": {m: sum(v.values()) for m, v in stored.items()},
        "points_per_s": round(total_written / wall, 1),
        "points_lost": lost_points, "host_points_lost": lost_host, "device_points_lost": lost_device,
        "dropped_points": sum(r.get("dropped_points", 0) for r in hosts.values()),
        "dead_letter_points": sum(r.get("dead_letter_points", 0) for r in hosts.values()),
        "write_errors": sum(r.get("write_errors", 0) for r in hosts.values()),
        "lag_s_max": round(max(lag_samples), 2) if lag_samples else None,
        "lag_s_median_of_max": round(statistics.median(lag_samples), 2) if lag_samples else None,
        "lag_s_median": round(statistics.median(lag_p50), 2) if lag_p50 else None,
        "lag_bound_s": args.flush_interval + 2 * args.interval + 5,
        "workers_cpu_ms_per_host_s": round(1e3 * cpu / wall / len(hosts), 3),
        "workers_rss_mb_peak": round(rss_peak, 1),
        "influxd_cpu_pct": round(100 * influx_cpu / wall, 1), "influxd_rss_mb": round(influx_rss, 1),
        "problems": per_host_problems[:10], "tracebacks_in_worker_logs": worker_logs.count("Traceback"),
    }


def all_hosts(args: argparse.Namespace, per_worker: int) -> list[str]:
    out = []
    for w in range(args.processes):
        n = min(per_worker, args.hosts - w * per_worker)
        out.extend(f"fleet-{w:02d}-{i:03d}" for i in range(max(n, 0)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--flush-interval", type=float, default=10.0, help="store.flush_interval_s of every host (the default)")
    ap.add_argument("--json", metavar="FILE")
    for hidden in ("--worker", "--hosts-per-worker", "--url", "--dir", "--result", "--ready"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        args.worker, args.hosts_per_worker = int(args.worker), int(args.hosts_per_worker)
        return worker(args)
    r = run(args)
    print(f"fleet: {r['hosts']} hosts × ({r['gpus_per_host']} GPUs + cpu0 + ram) at {r['interval_s']:g} s in "
          f"{r['processes']} processes → one InfluxDB 1.6.7, {r['measured_s']:.0f} s measured")
    print(f"  points written {r['points_written']:,} ({r['points_per_s']:,.0f}/s), stored {r['points_stored']:,}; "
          f"LOST {r['points_lost']} (host {r['host_points_lost']}, device {r['device_points_lost']}); dropped "
          f"{r['dropped_points']}, dead letters {r['dead_letter_points']}, write errors {r['write_errors']}")
    print(f"  delivery lag (now − newest host point in InfluxDB, flush every {r['flush_interval_s']:g} s): max "
          f"{r['lag_s_max']} s, median of per-sample max {r['lag_s_median_of_max']} s, median {r['lag_s_median']} s "
          f"(bound {r['lag_bound_s']:g} s)")
    print(f"  cost: {r['workers_cpu_ms_per_host_s']} ms CPU per host-second in the workers, workers' RSS "
          f"{r['workers_rss_mb_peak']} MB; influxd {r['influxd_cpu_pct']}% of a core, {r['influxd_rss_mb']} MB")
    if r["problems"]:
        print("  problems:", json.dumps(r["problems"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0 if r["points_lost"] == 0 and r["host_points_lost"] == 0 and r["device_points_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
