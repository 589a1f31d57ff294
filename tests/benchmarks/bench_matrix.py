"""Daemon CPU per second and RSS across devices, runs and stores (issue #9's matrix).

    python tests/benchmarks/bench_matrix.py [--seconds 40] [--gpus 0 8 64] [--runs 0 10 50]
                                            [--stores sqlite v1 v2] [--json FILE]

For each combination, a real ``carbond run`` at 1 s with N simulated GPUs, on a SQLite file, a
real InfluxDB 1.6.7 (``influxd`` from Debian) or a real ``/api/v2/write`` server
(VictoriaMetrics, built by the test harness and cached in ~/.cache/carbond-tests), with R runs:
R ``sleep`` processes tagged ``CARBOND_JOB`` that the daemon finds by itself and attributes on
every tick (``job`` points for each). CPU is the kernel's per-thread accounting of the daemon
(``/proc/PID/task/*/schedstat``) over ``--seconds`` after a warm-up that covers the first flush
and the run discovery; RSS from ``/proc/PID/status``. The daemon must report every run before
the window opens, or the row says so. Combinations run one after another, in the order given.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.bench_daemon import status_kb, thread_cpu_ns

WARMUP_S = 20.0  # the first flush (10 s) and env discovery (every 5 s) of every tagged process


def _status(sock: Path, env: dict[str, str]) -> dict | None:
    r = subprocess.run([sys.executable, "-m", "carbond", "status", "--json", "--socket", str(sock)], env=env,
                       capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout) if r.returncode == 0 else None


def one(gpus: int, runs: int, store: str, url: str, seconds: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="carbond-matrix-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBOND_")}
    env.update({"XDG_RUNTIME_DIR": str(tmp), "HOME": str(tmp), "CARBOND_SENSORS_NVML": "false"})
    sock = tmp / "carbond.sock"
    url = url or f"sqlite://{tmp}/bench.db"
    tag = f"matrix-{os.getpid()}-{gpus}-{runs}-{store}"
    sleepers = [subprocess.Popen(["sleep", "100000"], env={**env, "CARBOND_JOB": f"{tag}-{i}", "CARBOND_RUN": f"{tag}-{i}"})
                for i in range(runs)]
    proc = subprocess.Popen([sys.executable, "-m", "carbond", "run", "--store", url, "--interval", "1", "--simulate-gpus",
                             str(gpus), "--socket", str(sock)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(WARMUP_S)
        doc = _status(sock, env) or {}
        seen = sum(1 for r in doc.get("runs", []) if str(r.get("job", "")).startswith(tag))
        before, t0 = thread_cpu_ns(proc.pid), time.monotonic()
        time.sleep(seconds)
        after, t1 = thread_cpu_ns(proc.pid), time.monotonic()
        rss_mb = status_kb(proc.pid, "VmRSS") / 1024
        ticks = ((_status(sock, env) or {}).get("stats") or {}).get("ticks")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        for s in sleepers:
            s.kill()
            s.wait()
    cpu_ms = sum(after.get(k, 0) - before.get(k, 0) for k in after) / 1e6
    return {"gpus": gpus, "runs": runs, "store": store, "runs_attributed": seen, "seconds": round(t1 - t0, 1),
            "cpu_ms_per_s": round(cpu_ms / (t1 - t0), 3), "rss_mb": round(rss_mb, 1), "ticks": ticks,
            "exit": proc.returncode, "stderr_tail": err[-300:] if proc.returncode else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--gpus", type=int, nargs="+", default=[0, 8, 64])
    ap.add_argument("--runs", type=int, nargs="+", default=[0, 10, 50])
    ap.add_argument("--stores", nargs="+", choices=("sqlite", "v1", "v2"), default=["sqlite", "v1", "v2"])
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    from fakes.influx_servers import Influxd, VictoriaMetrics, build_victoria_metrics

    servers: list[object] = []
    urls: dict[str, str] = {"sqlite": ""}
    try:
        if "v1" in args.stores:
            influxd = Influxd(Path(tempfile.mkdtemp(prefix="carbond-matrix-influxd-")))
            influxd.start()
            servers.append(influxd)
            influxd.create_database("bench")
            urls["v1"] = influxd.url("bench")
        if "v2" in args.stores:
            vm = VictoriaMetrics(build_victoria_metrics(), Path(tempfile.mkdtemp(prefix="carbond-matrix-vm-")))
            servers.append(vm)
            urls["v2"] = vm.url("bench")
        rows = []
        print(f"{'store':<7} {'gpus':>4} {'runs':>4} {'attributed':>10} {'CPU ms/s':>9} {'RSS MB':>7}", flush=True)
        for store, gpus, runs in itertools.product(args.stores, args.gpus, args.runs):
            row = one(gpus, runs, store, urls[store], args.seconds)
            rows.append(row)
            print(f"{store:<7} {gpus:>4} {runs:>4} {row['runs_attributed']:>10} {row['cpu_ms_per_s']:>9.3f} "
                  f"{row['rss_mb']:>7.1f}" + (f"  exit {row['exit']}" if row["exit"] else ""), flush=True)
    finally:
        for server in servers:
            server.stop()  # type: ignore[attr-defined]
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "seconds": args.seconds}, indent=2))
    return 0 if all(r["exit"] == 0 and r["runs_attributed"] == r["runs"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
