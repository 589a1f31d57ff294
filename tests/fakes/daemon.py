"""A fake carbond daemon: the real socket server (``carbond.server``) with the run ops of docs/ipc.md.

The ops declare the documented fields and types, so a client that sends an unknown field or
a wrong type gets the same error reply as from the real daemon. Every request is recorded
(op, fields, peer credentials); runs keep units (summed) and metrics (last value) and report a
made-up energy so results can be checked end to end.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from carbond import ipc
from carbond.server import SocketServer

WORK_UNITS = {"samples", "tokens", "requests", "items", "images", "examples", "sequences", "batches", "steps", "epochs",
              "queries", "inferences", "predictions", "frames", "documents", "words", "characters", "pages", "files",
              "bytes"}
ENERGY_J = 7200.0  # what every run reports: 0.002 kWh


class FakeDaemon:
    def __init__(self, path: str, *, delay_s: float = 0.0, host: str = "fakehost") -> None:
        self.path = path
        self.delay_s = delay_s
        self.host = host
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.changed = threading.Condition()
        self._ids = itertools.count(1)
        self.server: SocketServer | None = None
        self.start()

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self.server = SocketServer(self.path, self.ops())

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    # --- queries for tests -----------------------------------------------------------------------------
    def ops_seen(self, op: str) -> list[dict[str, Any]]:
        with self.changed:
            return [args for name, args in self.calls if name == op]

    def wait(self, predicate: Any, timeout_s: float = 30.0) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout_s):
                raise AssertionError(f"fake daemon: condition not met within {timeout_s}s; calls: {self.calls}")

    # --- ops ------------------------------------------------------------------------------------------
    def _record(self, op: str, args: dict[str, Any]) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        with self.changed:
            self.calls.append((op, dict(args)))
            self.changed.notify_all()

    def _result(self, run: dict[str, Any]) -> dict[str, Any]:
        duration_s = (run["ended"] or time.time()) - run["started"]
        return {
            "run": run["run"], "job": run["job"], "project": run["project"], "phase": run["phase"],
            "tags": run["tags"], "status": run["status"], "started_ns": int(run["started"] * 1e9),
            "ended_ns": None if run["ended"] is None else int(run["ended"] * 1e9), "exit_code": run["exit_code"],
            "duration_s": duration_s, "energy_j": ENERGY_J, "co2_g": 1.0, "water_l": 0.5, "embodied_g": 2.0,
            "sources": {"model": ENERGY_J}, "units": dict(run["units"]), "metrics": dict(run["metrics"]),
            "progress": run["progress"], "projected_energy_j": None, "projected_co2_g": None, "hosts": [self.host],
            "pids": sorted(run["pids"]),
        }

    def _get(self, run_id: str) -> dict[str, Any]:
        run = self.runs.get(run_id)
        if run is None:
            raise ValueError(f"no run {run_id!r} on this host")
        return run

    def run_start(self, a: dict[str, Any]) -> dict[str, Any]:
        self._record("run.start", a)
        with self.changed:
            pid = a.get("pid", a["_peer"][0])
            run_id = a.get("run")
            if run_id in self.runs and self.runs[run_id]["status"] == "running":
                self.runs[run_id]["pids"].add(pid)
                return {"run": run_id, "joined": True}
            run_id = run_id or f"{a['job']}-{next(self._ids)}"
            self.runs[run_id] = {"run": run_id, "job": a["job"], "project": a.get("project", "default"),
                                 "phase": a.get("phase", "development"), "tags": a.get("tags", {}), "status": "running",
                                 "started": time.time(), "ended": None, "exit_code": None, "pids": {pid}, "units": {},
                                 "metrics": {}, "progress": None}
            return {"run": run_id, "joined": False}

    def run_log(self, a: dict[str, Any]) -> dict[str, Any]:
        self._record("run.log", a)
        with self.changed:
            run = self._get(a["run"])
            for k, v in a["values"].items():
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise ValueError(f"log value {k}={v!r} must be a finite number")
                if k in WORK_UNITS:
                    run["units"][k] = run["units"].get(k, 0.0) + v
                else:
                    run["metrics"][k] = v
        return {"run": a["run"]}

    def run_progress(self, a: dict[str, Any]) -> dict[str, Any]:
        self._record("run.progress", a)
        with self.changed:
            self._get(a["run"])["progress"] = {"done": a["done"], "total": a["total"]}
        return {"run": a["run"], "projected_energy_j": None, "projected_co2_g": None}

    def run_end(self, a: dict[str, Any]) -> dict[str, Any]:
        self._record("run.end", a)
        with self.changed:
            run = self._get(a["run"])
            run["pids"].discard(a.get("pid", a["_peer"][0]))
            if "exit_code" in a:
                run["exit_code"] = a["exit_code"]
            if a.get("status") == "failed":
                run["failed"] = True
            if not run["pids"] and run["status"] == "running":
                run["status"] = "failed" if run.get("failed") else "finished"
                run["ended"] = time.time()
            return self._result(run)

    def run_get(self, a: dict[str, Any]) -> dict[str, Any]:
        self._record("run.get", a)
        with self.changed:
            return self._result(self._get(a["run"]))

    def list_runs(self, a: dict[str, Any]) -> dict[str, Any]:
        self._record("runs", a)
        with self.changed:
            return {"runs": [self._result(r) for r in self.runs.values() if r["status"] == "running"]}

    def ops(self) -> dict[str, ipc.Op]:
        number = (int, float)
        return {
            "ping": ipc.Op({}, lambda a: {"version": "fake"}),
            "run.start": ipc.Op({"job": str, "project": str, "phase": str, "tags": dict, "run": str, "pid": int},
                                self.run_start, required=("job",)),
            "run.attach": ipc.Op({"run": str, "pid": int}, lambda a: {"run": a["run"], "pids": []}, required=("run",)),
            "run.log": ipc.Op({"run": str, "values": dict}, self.run_log, required=("run", "values")),
            "run.progress": ipc.Op({"run": str, "done": number, "total": number}, self.run_progress,
                                   required=("run", "done", "total")),
            "run.end": ipc.Op({"run": str, "status": str, "exit_code": int, "pid": int}, self.run_end, required=("run",)),
            "run.get": ipc.Op({"run": str}, self.run_get, required=("run",)),
            "runs": ipc.Op({}, self.list_runs),
        }
