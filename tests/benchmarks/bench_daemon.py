"""Daemon overhead: CPU per tick, RSS, and `carbond --help` start-up, on this machine.

    python tests/benchmarks/bench_daemon.py [--seconds 60] [--gpus 8] [--interval 1]

Runs a real ``carbond run`` process on a temporary SQLite store with simulated GPUs and
samples the kernel's own accounting of it: per-thread CPU time from
``/proc/PID/task/*/schedstat`` (nanoseconds), resident memory from ``/proc/PID/status``.
The first 10 s (imports, the first flush) are left out. Also times ``carbond --help``
as a whole process, and checks which heavy modules the daemon imported.
Prints a table and, with ``--json FILE``, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def thread_cpu_ns(pid: int) -> dict[str, int]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            out[f"{tid}:{name}"] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return out


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def daemon_run(seconds: float, gpus: int, interval_s: float, store_url: str | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="carbond-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBOND_")}
    env.update({"XDG_RUNTIME_DIR": str(tmp), "HOME": str(tmp), "CARBOND_SENSORS_NVML": "false"})
    cmd = [sys.executable, "-m", "carbond", "run", "--store", store_url or f"sqlite://{tmp}/bench.db",
           "--interval", str(interval_s), "--simulate-gpus", str(gpus), "--socket", str(tmp / "carbond.sock")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(10.0)
        before, t0 = thread_cpu_ns(proc.pid), time.monotonic()
        time.sleep(seconds)
        after, t1 = thread_cpu_ns(proc.pid), time.monotonic()
        rss_kb, hwm_kb = status_kb(proc.pid, "VmRSS"), status_kb(proc.pid, "VmHWM")
        modules = json.loads(subprocess.run(
            [sys.executable, "-m", "carbond", "status", "--json", "--socket", str(tmp / "carbond.sock")],
            env=env, capture_output=True, text=True, timeout=30).stdout or "{}").get("heavy_modules", [])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    wall = t1 - t0
    ticks = wall / interval_s
    per_thread = {k: (after[k] - before.get(k, 0)) / 1e6 / ticks for k in after}
    total_ms = sum(per_thread.values())
    return {
        "gpus": gpus, "interval_s": interval_s, "seconds": round(wall, 1),
        "cpu_ms_per_tick": round(total_ms, 3),
        "cpu_ms_per_tick_by_thread": {k.split(":", 1)[1] + ":" + k.split(":", 1)[0]: round(v, 3)
                                      for k, v in per_thread.items() if v > 0.0005},
        "rss_mb": round(rss_kb / 1024, 1), "peak_rss_mb": round(hwm_kb / 1024, 1),
        "heavy_modules_loaded": modules,
        "exit": proc.returncode,
    }


def influx_rss(gpus: int, interval_s: float) -> dict:
    """The daemon on an InfluxDB v1 URL (a real local influxd) and on a v2 URL (influxdb-client path)."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from fakes.influx_servers import Influxd, free_port

    server = Influxd(Path(tempfile.mkdtemp(prefix="carbond-bench-influxd-")))
    server.start()
    try:
        server.create_database("bench")
        v1 = daemon_run(30, gpus, interval_s, store_url=server.url("bench"))
        # no InfluxDB 2.x installs here: an unreachable v2 URL still loads the whole influxdb-client write path
        v2 = daemon_run(30, gpus, interval_s, store_url=f"influxdb+v2://127.0.0.1:{free_port()}/bench?org=carbond")
    finally:
        server.stop()
    return {"influxdb+v1 (influxd 1.6.7)": v1, "influxdb+v2 (client path)": v2}


def help_wall_ms(runs: int = 15) -> dict:
    exe = shutil.which("carbond")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "carbond", "--help"]
    samples = []
    for _ in range(runs + 2):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        samples.append((time.perf_counter() - t) * 1000)
    samples = samples[2:]
    return {"command": " ".join(cmd), "median_ms": round(statistics.median(samples), 1),
            "min_ms": round(min(samples), 1), "max_ms": round(max(samples), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--influx", action="store_true",
                    help="also measure RSS on InfluxDB v1 and v2 URLs (starts a local influxd; v2 loads influxdb-client)")
    args = ap.parse_args()
    result = {"daemon": daemon_run(args.seconds, args.gpus, args.interval), "help": help_wall_ms()}
    if args.influx:
        result["influx"] = influx_rss(args.gpus, args.interval)
        for name, r in result["influx"].items():
            print(f"{name:24} RSS {r['rss_mb']:.1f} MB, CPU per tick {r['cpu_ms_per_tick']:.3f} ms, heavy modules: "
                  f"{', '.join(r['heavy_modules_loaded']) or 'none'}")
    d, h = result["daemon"], result["help"]
    print(f"daemon, {d['gpus']} simulated GPUs, SQLite, {d['interval_s']:g} s interval, {d['seconds']} s measured:")
    print(f"  CPU per tick      {d['cpu_ms_per_tick']:.3f} ms   (target <= 0.5 ms)")
    for k, v in d["cpu_ms_per_tick_by_thread"].items():
        print(f"    {k:24} {v:.3f} ms")
    print(f"  RSS               {d['rss_mb']:.1f} MB (peak {d['peak_rss_mb']:.1f} MB; target <= 40 MB)")
    print(f"  heavy modules     {', '.join(d['heavy_modules_loaded']) or 'none'}")
    print(f"carbond --help      median {h['median_ms']} ms (min {h['min_ms']}, max {h['max_ms']}; target <= 150 ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
