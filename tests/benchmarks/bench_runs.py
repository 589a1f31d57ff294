"""Run attribution overhead: tick CPU with 0/10/50 active runs, and carbond.track() enter+exit.

    python tests/benchmarks/bench_runs.py [--gpus 8] [--ticks 60] [--gap 1.0]

Tick cost: an in-process Daemon (real sensors, simulated GPUs, a temporary SQLite store)
with N real child processes, each registered as its own run; each tick is timed with the
tick thread's CPU clock (``time.thread_time``), ``--gap`` seconds apart like the real
daemon (cold caches included). Enter+exit: a real ``carbond run`` process and a client
process timing ``with carbond.track(...)`` (one socket round-trip each way) 50 times.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tick_cost(n_runs: int, gpus: int, ticks: int, gap_s: float) -> dict:
    from carbond.config import load_settings
    from carbond.daemon import Daemon
    from carbond.sensors import build_sensors
    from carbond.store.sqlite import SqliteStore

    tmp = Path(tempfile.mkdtemp(prefix="carbond-bench-runs-"))
    settings = load_settings(env={"HOME": str(tmp)}, flags={
        "daemon.simulate_gpus": gpus, "sensors.nvml": False, "daemon.socket": str(tmp / "s.sock"),
        "store.url": f"sqlite://{tmp}/c.db"}).settings
    daemon = Daemon(settings, build_sensors(settings), SqliteStore(tmp / "c.db"))
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]) for _ in range(n_runs)]
    try:
        for i, child in enumerate(children):
            daemon.runs.start(f"job{i}", pid=child.pid, uid=os.getuid())
        daemon.runs.refresh_members()
        daemon.tick()
        samples = []
        for _ in range(ticks):
            time.sleep(gap_s)
            t = time.thread_time()
            daemon.tick()
            samples.append((time.thread_time() - t) * 1000)
        daemon.flush()
    finally:
        for child in children:
            child.kill()
            child.wait()
        daemon.journal.close()
        daemon.store.close()
    return {"runs": n_runs, "gpus": gpus, "tick_ms_median": round(statistics.median(samples), 3),
            "tick_ms_p90": round(sorted(samples)[int(0.9 * len(samples))], 3)}


ENTER_EXIT = """
import json, statistics, sys, time
import carbond
samples = []
for i in range(55):
    t = time.perf_counter()
    with carbond.track("bench", phase="inference") as run:
        pass
    samples.append((time.perf_counter() - t) * 1000)
    assert run.result.measured_by == "daemon", run.result
print(json.dumps(samples[5:]))
"""


def enter_exit_ms() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="carbond-bench-track-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBOND_")}
    env.update({"HOME": str(tmp), "XDG_RUNTIME_DIR": str(tmp), "CARBOND_SENSORS_NVML": "false",
                "CARBOND_SOCKET": str(tmp / "carbond.sock")})
    daemon = subprocess.Popen([sys.executable, "-m", "carbond", "run", "--store", f"sqlite://{tmp}/c.db"], env=env,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp / "carbond.sock").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not start")
            time.sleep(0.05)
        out = subprocess.run([sys.executable, "-c", ENTER_EXIT], env=env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        samples = json.loads(out.stdout)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    return {"median_ms": round(statistics.median(samples), 2), "p90_ms": round(sorted(samples)[int(0.9 * len(samples))], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--ticks", type=int, default=60)
    ap.add_argument("--gap", type=float, default=1.0)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    result = {"ticks": [tick_cost(n, args.gpus, args.ticks, args.gap) for n in (0, 10, 50)], "track": enter_exit_ms()}
    for t in result["ticks"]:
        print(f"tick with {t['runs']:2d} runs, {t['gpus']} GPUs: median {t['tick_ms_median']:.3f} ms CPU, "
              f"p90 {t['tick_ms_p90']:.3f} ms")
    print(f"carbond.track() enter+exit with a daemon: median {result['track']['median_ms']} ms, "
          f"p90 {result['track']['p90_ms']} ms (target <= 5 ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
