"""Two carbond source trees side by side: daemon CPU per second on the same tagged workload, at once.

    python tests/benchmarks/bench_ab.py OLD_TREE NEW_TREE [--rounds 3] [--seconds 60] [--warmup 70] [--json FILE]

For judging a change to the daemon's cost on a noisy machine: a ratio taken while both run is
worth more than two figures taken minutes apart. Make the old tree with ``git worktree add
/tmp/old REV``. Each round starts one workload that burns half a core with ``CARBOND_JOB``
set (every daemon finds and attributes it: the ``carbond+runs`` case of bench_codecarbon.py),
then one ``carbond run --interval 1`` per tree (SQLite, no GPUs, NVML off, the tree on
``PYTHONPATH``), in an order that alternates every round; after ``--warmup`` seconds (the first
rollup refresh is at 60 s) each daemon's CPU clock (every thread, by the kernel) is read over
``--seconds``. Prints each tree's CPU ms/s and RSS per round and the median of NEW/OLD.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_codecarbon import WORKLOAD, process_cpu_ns
from benchmarks.bench_daemon import status_kb


def one_round(trees: list[Path], warmup_s: float, seconds: float) -> dict[str, dict[str, float]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CARBOND_")}
    workload = subprocess.Popen([sys.executable, "-c", WORKLOAD], env=dict(base, CARBOND_JOB="bench-ab"))
    daemons: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for tree in trees:
            tmp = Path(tempfile.mkdtemp(prefix="carbond-ab-"))
            env = dict(base, XDG_RUNTIME_DIR=str(tmp), HOME=str(tmp), CARBOND_SENSORS_NVML="false", PYTHONPATH=str(tree))
            daemons[str(tree)] = subprocess.Popen(
                [sys.executable, "-m", "carbond", "run", "--store", f"sqlite://{tmp}/ab.db", "--interval", "1",
                 "--simulate-gpus", "0", "--socket", str(tmp / "carbond.sock")],
                env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(warmup_s)
        before = {t: process_cpu_ns(p.pid) for t, p in daemons.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        after = {t: process_cpu_ns(p.pid) for t, p in daemons.items()}
        elapsed = time.monotonic() - t0
        out = {}
        for t, p in daemons.items():
            if p.poll() is not None:
                raise SystemExit(f"the daemon of {t} exited with {p.returncode}")
            out[t] = {"cpu_ms_per_s": (after[t] - before[t]) / elapsed / 1e6, "rss_mb": status_kb(p.pid, "VmRSS") / 1000}
        return out
    finally:
        for p in daemons.values():
            p.terminate()
            p.wait(timeout=60)
        workload.kill()
        workload.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path, help="the source tree to compare against (a checkout or worktree)")
    ap.add_argument("new", type=Path, help="the source tree with the change")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=70.0)
    ap.add_argument("--json", type=Path, metavar="FILE")
    args = ap.parse_args()
    trees = [args.old.resolve(), args.new.resolve()]
    for tree in trees:
        if not (tree / "carbond" / "__init__.py").is_file():
            ap.error(f"{tree} is not a carbond source tree (no carbond/__init__.py)")
    rounds = []
    for r in range(args.rounds):
        order = trees if r % 2 == 0 else trees[::-1]
        result = one_round(order, args.warmup, args.seconds)
        old, new = result[str(trees[0])], result[str(trees[1])]
        rounds.append({"old": old, "new": new, "ratio": new["cpu_ms_per_s"] / old["cpu_ms_per_s"]})
        print(f"round {r + 1}: old {old['cpu_ms_per_s']:.3f} ms/s {old['rss_mb']:.1f} MB, new {new['cpu_ms_per_s']:.3f} "
              f"ms/s {new['rss_mb']:.1f} MB, new/old {rounds[-1]['ratio']:.2f}", flush=True)
    summary = {
        "old": str(trees[0]), "new": str(trees[1]), "rounds": rounds,
        "median_old_cpu_ms_per_s": statistics.median(r["old"]["cpu_ms_per_s"] for r in rounds),
        "median_new_cpu_ms_per_s": statistics.median(r["new"]["cpu_ms_per_s"] for r in rounds),
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
    }
    print(f"median: old {summary['median_old_cpu_ms_per_s']:.3f} ms/s, new {summary['median_new_cpu_ms_per_s']:.3f} ms/s, "
          f"new/old {summary['median_ratio']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
