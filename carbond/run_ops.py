"""The socket ops that start, feed and end runs (docs/ipc.md), with their permission checks.

The caller is known from the socket's peer credentials. A process to register defaults to
the caller itself; a ``pid`` the caller names is taken as seen in the caller's PID
namespace and mapped through ``NSpid``. A caller that is not root may only register
processes it owns, and only feed or end runs it started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from carbond import ipc
from carbond.errors import UsageError
from carbond.jobs import Run

if TYPE_CHECKING:
    from carbond.daemon import Daemon

ORIGINS = ("client", "track")


def _peer(args: dict[str, Any]) -> tuple[int, int]:
    pid, uid, _gid = args.get("_peer", (-1, -1, -1))
    return pid, uid


def run_ops(daemon: Daemon) -> dict[str, ipc.Op]:
    registry = daemon.runs
    proc = registry.proc
    host = daemon.settings.daemon.host

    def target_pid(args: dict[str, Any]) -> int:
        peer_pid, peer_uid = _peer(args)
        if "pid" not in args:
            if peer_pid <= 0:
                raise UsageError("cannot tell the caller's process (no peer credentials); send pid")
            return peer_pid
        pid = proc.resolve(int(args["pid"]), peer_pid) if peer_pid > 0 else int(args["pid"])
        if pid is None:
            raise UsageError(f"process {args['pid']} does not exist (as seen by the caller)")
        owner = proc.uid(pid)
        if peer_uid != 0 and owner != peer_uid:
            raise UsageError(f"permission denied: process {args['pid']} belongs to uid {owner}, not to the caller "
                             f"(uid {peer_uid}); only root may register other users' processes")
        return pid

    def owned(args: dict[str, Any]) -> Run:
        run = registry.get(args["run"])
        _, peer_uid = _peer(args)
        if peer_uid not in (0, run.uid):
            raise UsageError(f"permission denied: run {run.run_id} belongs to uid {run.uid}")
        return run

    def result(run: Run) -> dict[str, Any]:
        return run.result(host, daemon.now_ns(), registry.mono())

    def start(args: dict[str, Any]) -> dict[str, Any]:
        origin = args.get("origin", "client")
        if origin not in ORIGINS:
            raise UsageError(f"origin must be one of {', '.join(ORIGINS)}")
        existing = registry.runs.get(args.get("run") or "")
        if existing is not None and _peer(args)[1] not in (0, existing.uid):
            raise UsageError(f"permission denied: run {existing.run_id} belongs to uid {existing.uid}")
        tags = args.get("tags", {})
        if not all(isinstance(v, str) for v in tags.values()):
            raise UsageError("tag values must be strings")
        run, joined = registry.start(args["job"], project=args.get("project", ""), phase=args.get("phase", ""),
                                     tags=tags, run_id=args.get("run") or None, pid=target_pid(args),
                                     uid=_peer(args)[1], origin=origin)
        if not joined:
            daemon._run_point_now(run)
        return {"run": run.run_id, "joined": joined}

    def attach(args: dict[str, Any]) -> dict[str, Any]:
        run = owned(args)
        registry.attach(run.run_id, target_pid(args))
        return {"run": run.run_id, "pids": sorted(run.members)}

    def log_values(args: dict[str, Any]) -> dict[str, Any]:
        run = owned(args)
        registry.log_values(run.run_id, args["values"])
        return {"run": run.run_id}

    def progress(args: dict[str, Any]) -> dict[str, Any]:
        run = owned(args)
        registry.set_progress(run.run_id, float(args["done"]), float(args["total"]))
        projected = run.projected()
        return {"run": run.run_id, "projected_energy_j": None if projected is None else projected[0],
                "projected_co2_g": None if projected is None else projected[1]}

    def end(args: dict[str, Any]) -> dict[str, Any]:
        run = owned(args)
        pid = target_pid(args) if "pid" in args else _peer(args)[0]
        was_active = run.active
        if was_active:
            # measure up to now first: a run shorter than a tick (or one whose last ticks were late)
            # still gets the energy its processes used, instead of none
            daemon.tick_now()
        registry.end(run.run_id, status=args.get("status", "finished"), exit_code=args.get("exit_code"), pid=pid)
        if was_active and not run.active:
            daemon._run_point_now(run)
        return result(run)

    def get(args: dict[str, Any]) -> dict[str, Any]:
        return result(registry.get(args["run"]))

    def active(_args: dict[str, Any]) -> dict[str, Any]:
        with registry.lock:
            return {"runs": [result(r) for r in registry.runs.values()]}

    num = (int, float)
    return {
        "run.start": ipc.Op({"job": str, "project": str, "phase": str, "tags": dict, "run": str, "pid": int,
                             "origin": str}, start, required=("job",)),
        "run.attach": ipc.Op({"run": str, "pid": int}, attach, required=("run",)),
        "run.log": ipc.Op({"run": str, "values": dict}, log_values, required=("run", "values")),
        "run.progress": ipc.Op({"run": str, "done": num, "total": num}, progress, required=("run", "done", "total")),
        "run.end": ipc.Op({"run": str, "status": str, "exit_code": int, "pid": int}, end, required=("run",)),
        "run.get": ipc.Op({"run": str}, get, required=("run",)),
        "runs": ipc.Op({}, active),
    }
