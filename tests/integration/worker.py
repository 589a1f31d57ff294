"""A test workload: registers itself as a run with a daemon (or not), burns CPU, reports its CPU time.

    python worker.py SOCKET JOB RUN_ID DUTY SECONDS OUT.json   (RUN_ID may be "-", SOCKET "-" = no registration)
    python worker.py --wait FILE ...  waits for FILE to exist before burning (to start workers together)

DUTY is the busy fraction of each 10 ms slice (1.0 = a full core). OUT gets the process's own
CPU time (``os.times``) at the end, which is what the daemon attributed energy by.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

args = sys.argv[1:]
go = None
if args[0] == "--wait":
    go, args = Path(args[1]), args[2:]
sock, job, run_id, duty, seconds, out = args[0], args[1], args[2], float(args[3]), float(args[4]), Path(args[5])

run = None
if sock != "-":
    from carbond import ipc

    fields = {"job": job, "project": "tests", "phase": "training"}
    if run_id != "-":
        fields["run"] = run_id
    run = ipc.request(sock, "run.start", **fields)["run"]
Path(str(out) + ".started").write_text(run or "")
while go is not None and not go.exists():
    time.sleep(0.01)
start_cpu = os.times()
end = time.monotonic() + seconds
while time.monotonic() < end:
    slice_end = time.perf_counter() + 0.01 * duty
    while time.perf_counter() < slice_end:
        pass
    if duty < 1.0:
        time.sleep(0.01 * (1.0 - duty))
t = os.times()
cpu_s = (t.user + t.system) - (start_cpu.user + start_cpu.system)
result = None
if run is not None:
    from carbond import ipc

    ipc.request(sock, "run.log", run=run, values={"samples": 1000.0, "accuracy": duty})
    result = ipc.request(sock, "run.end", run=run, status="finished")
out.write_text(json.dumps({"run": run, "cpu_s": cpu_s, "result": result}))
