"""carbond and CodeCarbon side by side on this machine: CPU per second, RSS, start-up cost.

    python tests/benchmarks/bench_codecarbon.py [--rounds 3] [--seconds 60] [--warmup 75] [--venv DIR] [--json FILE]

Three monitors watch the same workload — a child process burning about half of one core — at a
1 s interval, one at a time, in an order that rotates every round (A/B/C, B/C/A, C/A/B, ...):

- ``carbond``: ``carbond run --interval 1`` on a temporary SQLite store, no GPUs (``--simulate-gpus
  0``, NVML off: CodeCarbon sees no GPU on this machine either). Every tick journals its device
  and host points; they are flushed into SQLite every 10 s.
- ``carbond+runs``: the same, with the workload tagged ``CARBOND_JOB`` (zero-code tagging): the
  daemon finds it by discovery and attributes energy to it on every tick (``job`` points too).
- ``codecarbon``: ``OfflineEmissionsTracker(measure_power_secs=1, country_iso_code="DEU")`` started
  in a process of its own that then waits in ``signal.pause()`` (so everything it costs is the
  tracker's), CodeCarbon installed in a virtualenv the benchmark creates (``--venv``, default
  ``~/.cache/carbond-bench/codecarbon-venv``; ``python -m venv`` + ``pip install codecarbon``, after
  checking with ``pip download --no-deps`` whether it would pull torch, in which case the pinned CPU
  build ``torch==2.13.0`` goes in first). On a machine without RAPL it models the CPU from its
  load (``cpu_load`` mode), as carbond does.

Each is measured from outside, by the kernel: the process's CPU clock (``clock_getcpuclockid``: all
its threads, short-lived ones included, in ns — per-thread ``/proc/PID/task/*/schedstat`` would miss
CodeCarbon's one-shot timer threads) over ``--seconds`` after ``--warmup`` seconds; ``VmRSS`` and
``VmHWM`` from ``/proc/PID/status`` at the end of the window; start-up cost = wall time from
spawning the process to its first measured interval (carbond: the second record in its write-ahead
journal; CodeCarbon: its first ``_measure_power_and_energy``, wrapped to leave a marker file) and
the CPU it had used by then. Ratios carbond / CodeCarbon are taken per round, reported as medians.
Targets (issue #9): CPU per second <= 0.5x and RSS <= 0.45x CodeCarbon's.

The window starts 75 s after spawning (``--warmup``) for every monitor: carbond's one-off work
ends at about 60 s, when it first refreshes the report rollups of a SQLite store (importing that
module; then every 10 minutes, about 2 ms each time). CodeCarbon's cycle is 8 s. The JSON also
keeps, per monitor, the CPU used before the window (``warmup_cpu_s``), the CPU per second over
its whole life (``cpu_ms_per_s_from_spawn``) and how many processes and threads the machine
created per second meanwhile (``pids_created_per_s``: carbond's run upkeep looks for new
members and tagged processes only when some were created). carbond fails the benchmark unless it
stored a ``host`` point per tick and, in ``carbond+runs``, ``job`` points for the workload.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from benchmarks.bench_daemon import status_kb, thread_cpu_ns  # noqa: E402

DEFAULT_VENV = Path.home() / ".cache" / "carbond-bench" / "codecarbon-venv"
TORCH_PIN = "torch==2.13.0"
try:
    PID_MAX = int(Path("/proc/sys/kernel/pid_max").read_text())
except (OSError, ValueError):
    PID_MAX = 2**22

WORKLOAD = """
import time
while True:
    t = time.monotonic()
    while time.monotonic() - t < 0.05:
        pass
    time.sleep(0.05)
"""

CODECARBON_HOST = """
import os, signal, sys, time
marker, out_dir = sys.argv[1], sys.argv[2]
from codecarbon import OfflineEmissionsTracker
from codecarbon.emissions_tracker import BaseEmissionsTracker

_measure = BaseEmissionsTracker._measure_power_and_energy

def _first_sample_marked(self, *args, **kwargs):
    result = _measure(self, *args, **kwargs)
    if not os.path.exists(marker):
        with open(marker + ".tmp", "w") as fh:
            fh.write(str(time.time()))
        os.replace(marker + ".tmp", marker)
    return result

BaseEmissionsTracker._measure_power_and_energy = _first_sample_marked
tracker = OfflineEmissionsTracker(country_iso_code="DEU", measure_power_secs=1, output_dir=out_dir, save_to_file=True,
                                  log_level="error")
tracker.start()

def _stop(*_):
    tracker.stop()
    sys.exit(0)

signal.signal(signal.SIGTERM, _stop)
while True:
    signal.pause()
"""


# --- measuring a process from outside -------------------------------------------------------------
def process_cpu_ns(pid: int) -> int:
    """The kernel's CPU clock of another process (``clock_getcpuclockid``: every thread, ended ones included, in ns).

    Per-thread ``schedstat`` would miss CodeCarbon's ``threading.Timer`` threads, one new thread per
    measurement that is gone a few milliseconds later; ``/proc/PID/stat`` includes them but in 10 ms ticks.
    """
    return time.clock_gettime_ns(((~pid) << 3) | 2)  # CPUCLOCK_SCHED of the whole thread group


def last_pid() -> int:
    """The pid the kernel handed out last (processes and threads); 0 when unknown."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[4])
    except (OSError, ValueError, IndexError):
        return 0


def codecarbon_venv(venv: Path, version: str) -> tuple[Path, str, list[str]]:
    """The venv's python, CodeCarbon's version and what was installed first; creates the venv if needed."""
    py = venv / "bin" / "python"
    notes: list[str] = []
    probe = [str(py), "-c", "import codecarbon; print(codecarbon.__version__)"]
    if py.exists():
        r = subprocess.run(probe, capture_output=True, text=True)
        if r.returncode == 0 and (not version or r.stdout.strip() == version):
            return py, r.stdout.strip(), ["reused " + str(venv)]
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "--disable-pip-version-check", "-q"]
    spec = f"codecarbon=={version}" if version else "codecarbon"
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([*pip, "download", "--no-deps", "-d", d, spec], check=True)
        requires = []
        for wheel in Path(d).glob("*.whl"):
            with zipfile.ZipFile(wheel) as z:
                meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
                requires = [line.split(":", 1)[1].strip() for line in z.read(meta).decode().splitlines()
                            if line.startswith("Requires-Dist:")]
    needs_torch = any(r.split(";")[0].strip().lower().startswith("torch") and "extra ==" not in r for r in requires)
    notes.append(f"{spec} requires: {', '.join(r for r in requires if 'extra ==' not in r)}")
    if needs_torch:
        subprocess.run([*pip, "install", TORCH_PIN], check=True)
        notes.append(f"installed {TORCH_PIN} first (codecarbon requires torch)")
    subprocess.run([*pip, "install", spec], check=True)
    r = subprocess.run(probe, capture_output=True, text=True, check=True)
    return py, r.stdout.strip(), notes


# --- one measured monitor -------------------------------------------------------------------------
def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBOND_", "CODECARBON_"))}
    env.update({"HOME": str(tmp), "XDG_RUNTIME_DIR": str(tmp), "XDG_DATA_HOME": str(tmp / "data"),
                "CARBOND_SENSORS_NVML": "false", "PYTHONPATH": str(ROOT)})
    return env


def _journal_records(journal: Path) -> int:
    """How many records the daemon's write-ahead journal got (headers walked; flushed segments counted as seen)."""
    n = 0
    for seg in sorted(journal.glob("*.seg")):
        try:
            data = seg.read_bytes()
        except OSError:
            continue
        off = 0
        while off + 8 <= len(data):
            length = int.from_bytes(data[off:off + 4], "little")
            if off + 8 + length > len(data):
                break
            n += 1
            off += 8 + length
    return n


def measure(kind: str, seconds: float, warmup_s: float, cc_python: Path | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"carbond-vs-cc-{kind}-"))
    env = _clean_env(tmp)
    work_env = dict(env, CARBOND_JOB="bench-workload") if kind == "carbond+runs" else env
    workload = subprocess.Popen([sys.executable, "-c", WORKLOAD], env=work_env)
    marker = tmp / "first-sample"
    try:
        t0 = time.monotonic()
        if kind.startswith("carbond"):
            db = tmp / "bench.db"
            cmd = [sys.executable, "-m", "carbond", "run", "--store", f"sqlite://{db}", "--interval", "1",
                   "--simulate-gpus", "0", "--socket", str(tmp / "carbond.sock")]
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            journal = tmp / "bench.db.journal"

            def first() -> bool:
                return _journal_records(journal) >= 2  # the baseline tick's record, then the first measured interval
        else:
            assert cc_python is not None
            host = tmp / "cc_host.py"
            host.write_text(CODECARBON_HOST)
            proc = subprocess.Popen([str(cc_python), str(host), str(marker), str(tmp)], env=env, cwd=tmp,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            first = marker.exists
        while not first():
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f"{kind}: no first sample within 120 s")
            time.sleep(0.005)
        startup_s = time.monotonic() - t0
        startup_cpu_s = process_cpu_ns(proc.pid) / 1e9
        time.sleep(max(0.0, t0 + warmup_s - time.monotonic()))
        c0, w0, t0s, pid0 = process_cpu_ns(proc.pid), time.monotonic(), thread_cpu_ns(proc.pid), last_pid()
        time.sleep(seconds)
        c1, w1, t1s, pid1 = process_cpu_ns(proc.pid), time.monotonic(), thread_cpu_ns(proc.pid), last_pid()
        rss_kb, hwm_kb = status_kb(proc.pid, "VmRSS"), status_kb(proc.pid, "VmHWM")
        n_threads = len(os.listdir(f"/proc/{proc.pid}/task"))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        result = {
            "monitor": kind, "seconds": round(w1 - w0, 2),
            "cpu_ms_per_s": round((c1 - c0) / 1e6 / (w1 - w0), 3),
            "rss_mb": round(rss_kb / 1024, 1), "peak_rss_mb": round(hwm_kb / 1024, 1), "threads": n_threads,
            "startup_s": round(startup_s, 3), "startup_cpu_s": round(startup_cpu_s, 3), "exit": proc.returncode,
            # everything left out before the window, and the figure over the whole life (start-up included)
            "warmup_cpu_s": round(c0 / 1e9, 3), "cpu_ms_per_s_from_spawn": round(c1 / 1e6 / (w1 - t0), 3),
            # processes and threads created on the machine meanwhile: each makes carbond's run upkeep look again
            "pids_created_per_s": round(((pid1 - pid0) % PID_MAX) / (w1 - w0), 2) if pid0 and pid1 else None,
            "cpu_ms_per_s_by_live_thread": {k: round((v - t0s.get(k, 0)) / 1e6 / (w1 - w0), 3) for k, v in t1s.items()
                                            if v - t0s.get(k, 0) > 1000},
        }
        if kind.startswith("carbond"):
            with sqlite3.connect(db) as c:  # what the daemon stored (carbond.store.sqlite's tables)
                result["stored"] = dict(c.execute("SELECT s.measurement, count(*) FROM points p JOIN series s "
                                                  "ON s.id = p.series_id GROUP BY s.measurement").fetchall())
                # runs it attributed: 1 (the workload) unless something else on the machine carries CARBOND_JOB/SLURM_JOB_ID
                result["runs_attributed"] = c.execute("SELECT count(*) FROM series WHERE measurement = 'job'").fetchone()[0]
            # the comparison holds only if carbond did its whole job meanwhile: a host point per tick in the store,
            # and (carbond+runs) the workload found, its run attributed on every tick (job points)
            ticks = result["stored"].get("host", 0)
            if ticks < warmup_s + seconds - 5:
                raise RuntimeError(f"{kind} stored {ticks} host points in {warmup_s + seconds:g} s: {result['stored']}")
            if kind == "carbond+runs" and result["stored"].get("job", 0) < seconds:
                raise RuntimeError(f"{kind}: the workload's run got {result['stored'].get('job', 0)} job points in "
                                   f"{warmup_s + seconds:g} s (discovery or attribution failed): {result['stored']}")
        else:
            csv = tmp / "emissions.csv"
            result["stored"] = {"emissions.csv rows": max(0, len(csv.read_text().splitlines()) - 1) if csv.exists() else 0}
        return result
    finally:
        workload.kill()
        workload.wait()
        if "proc" in locals() and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window per monitor and round")
    ap.add_argument("--warmup", type=float, default=75.0,
                    help="seconds after spawning left out: start-up, imports, the first flush, and (carbond on SQLite) "
                         "the first report-rollup refresh 60 s after start, which imports its module; the same for all")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="CodeCarbon's virtualenv (created when missing)")
    ap.add_argument("--codecarbon-version", default="", help="pin a CodeCarbon version (default: the newest)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    cc_python, cc_version, notes = codecarbon_venv(args.venv, args.codecarbon_version)
    kinds = ["carbond", "carbond+runs", "codecarbon"]
    rounds = []
    for r in range(args.rounds):
        order = kinds[r % 3:] + kinds[:r % 3]
        results = {k: measure(k, args.seconds, args.warmup, cc_python) for k in order}
        rounds.append({"order": order, **results})
        line = "  ".join(f"{k}: {results[k]['cpu_ms_per_s']:.2f} ms/s {results[k]['rss_mb']:.1f} MB"
                         + (f" ({results[k]['runs_attributed']} run)" if k == "carbond+runs" else "") for k in kinds)
        print(f"round {r + 1}: {line}", flush=True)

    def med(kind: str, key: str) -> float:
        return round(statistics.median(x[kind][key] for x in rounds), 3)

    def ratio(kind: str, key: str) -> float:
        return round(statistics.median(x[kind][key] / x["codecarbon"][key] for x in rounds), 3)

    summary = {k: {key: med(k, key) for key in ("cpu_ms_per_s", "rss_mb", "peak_rss_mb", "startup_s", "startup_cpu_s")}
               for k in kinds}
    ratios = {k: {key: ratio(k, key) for key in ("cpu_ms_per_s", "rss_mb", "startup_s", "startup_cpu_s")}
              for k in ("carbond", "carbond+runs")}
    targets = {"cpu_ratio_max": 0.5, "rss_ratio_max": 0.45}
    met = {k: ratios[k]["cpu_ms_per_s"] <= 0.5 and ratios[k]["rss_mb"] <= 0.45 for k in ratios}
    result = {"codecarbon_version": cc_version, "venv": str(args.venv), "install_notes": notes, "rounds": rounds,
              "median": summary, "ratio_vs_codecarbon": ratios, "targets": targets, "targets_met": met,
              "seconds": args.seconds, "warmup_s": args.warmup}
    print(f"\nCodeCarbon {cc_version} (OfflineEmissionsTracker, measure_power_secs=1) vs carbond, interval 1 s, "
          f"{args.rounds} rounds of {args.seconds:g} s, medians:")
    print(f"{'monitor':14} {'CPU ms/s':>9} {'RSS MB':>7} {'start-up s':>11} {'start-up CPU s':>15}")
    for k in kinds:
        s = summary[k]
        print(f"{k:14} {s['cpu_ms_per_s']:9.2f} {s['rss_mb']:7.1f} {s['startup_s']:11.2f} {s['startup_cpu_s']:15.2f}")
    for k, r in ratios.items():
        print(f"{k} / codecarbon: CPU {r['cpu_ms_per_s']:.2f}x (target <= 0.5x), RSS {r['rss_mb']:.2f}x (target <= 0.45x), "
              f"start-up {r['startup_s']:.2f}x wall, {r['startup_cpu_s']:.2f}x CPU — {'met' if met[k] else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
