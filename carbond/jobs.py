"""The run registry: which processes belong to which run, what each run used, and its state on disk.

Runs come from the socket (``carbond.track``, ``carbond track``) or from the environment of
processes the daemon discovers (``CARBOND_JOB``, ``SLURM_JOB_ID``). A run's processes are
its registered roots and every live descendant. Its CPU time is the sum over them of
``utime+stime+cutime+cstime``: a child that exits and is reaped by a member moves its whole
time into that member's ``cutime``, so short-lived processes are counted even when they
live and die between two ticks; a member reaped elsewhere keeps what it had ("banked").

The registry is saved to ``runs.json`` (two slot files overwritten in turn, so a torn save
leaves the previous one: :mod:`carbond.statefile`) whenever a run starts or ends and at
every flush, and loaded at start: a daemon restart does not lose a run.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from carbond.errors import UsageError
from carbond.procs import CLK_TCK, Proc, read_stat
from carbond.statefile import StateFile, StateFileError

log = logging.getLogger(__name__)

WORK_UNITS = frozenset({
    "samples", "tokens", "requests", "items", "images", "examples", "sequences", "batches", "steps", "epochs",
    "queries", "inferences", "predictions", "frames", "documents", "words", "characters", "pages", "files", "bytes",
})
PHASES = ("development", "training", "validation", "deployment", "inference")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PHASE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
LABEL = re.compile(r"^[^\x00-\x1f]{1,128}$")  # job, project, run ids and tag values: printable, bounded
MAX_TAGS = 16
KEEP_FINISHED = 256


@dataclass
class Member:
    start_ticks: int
    ppid: int
    cpu_ticks: int
    fd: int | None = None  # kept open on /proc/PID/stat while the process lives


@dataclass
class Run:
    run_id: str
    job: str
    project: str
    phase: str
    tags: dict[str, str]
    origin: str  # client | track | env
    uid: int
    started_ns: int
    status: str = "running"
    ended_ns: int | None = None
    exit_code: int | None = None
    failed: bool = False  # a process of the run ended it as failed while others went on
    roots: dict[int, int] = field(default_factory=dict)  # pid -> start_ticks
    members: dict[int, Member] = field(default_factory=dict)
    banked_ticks: int = 0
    last_total_ticks: int | None = None
    energy_j: float = 0.0
    co2_g: float = 0.0
    water_l: float = 0.0
    embodied_g: float = 0.0
    sources: dict[str, float] = field(default_factory=dict)
    units: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    progress: tuple[float, float] | None = None
    # The registry's monotonic clock at start and end (seconds): durations come from these, so a step of
    # the wall clock (NTP, a VM resume) changes the timestamps but not how long a run lasted.
    started_mono: float | None = None
    ended_mono: float | None = None

    @property
    def active(self) -> bool:
        return self.status == "running"

    def duration_s(self, now_ns: int, now_mono: float | None = None) -> float:
        """How long the run has lasted: monotonic time when known, else the wall-clock difference."""
        if self.started_mono is not None:
            end = self.ended_mono if self.ended_mono is not None else now_mono
            if end is not None:
                return max(end - self.started_mono, 0.0)
        return ((self.ended_ns or now_ns) - self.started_ns) / 1e9

    def projected(self) -> tuple[float, float] | None:
        """(energy_j, co2_g) at completion, extrapolated from progress."""
        if self.progress is None:
            return None
        done, total = self.progress
        if not done > 0 or not total > 0:
            return None
        scale = total / done
        return self.energy_j * scale, self.co2_g * scale

    def result(self, host: str, now_ns: int, now_mono: float | None = None) -> dict[str, Any]:
        projected = self.projected()
        return {
            "run": self.run_id, "job": self.job, "project": self.project, "phase": self.phase, "tags": dict(self.tags),
            "status": self.status, "origin": self.origin, "started_ns": self.started_ns, "ended_ns": self.ended_ns,
            "exit_code": self.exit_code, "duration_s": self.duration_s(now_ns, now_mono), "energy_j": self.energy_j,
            "co2_g": self.co2_g, "water_l": self.water_l, "embodied_g": self.embodied_g, "sources": dict(self.sources),
            "units": dict(self.units), "metrics": dict(self.metrics),
            "progress": None if self.progress is None else {"done": self.progress[0], "total": self.progress[1]},
            "projected_energy_j": None if projected is None else projected[0],
            "projected_co2_g": None if projected is None else projected[1],
            "hosts": [host], "pids": sorted(self.members or self.roots),
        }


def check_label(what: str, value: str) -> str:
    if not isinstance(value, str) or not LABEL.match(value):
        raise UsageError(f"{what} must be 1–128 printable characters, got {value!r}")
    return value


def check_phase(phase: str) -> str:
    if not PHASE.match(phase):
        raise UsageError(f"phase {phase!r}: use one of {', '.join(PHASES)} or a lower-case name ([a-z][a-z0-9_-]*)")
    return phase


def check_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise UsageError(f"at most {MAX_TAGS} tags, got {len(tags)}")
    reserved = {"host", "project", "job", "phase", "run", "status"}
    out = {}
    for k, v in tags.items():
        if not NAME.match(k) or k in reserved:
            raise UsageError(f"tag name {k!r}: use [A-Za-z_][A-Za-z0-9_]*, not one of {', '.join(sorted(reserved))}")
        out[k] = check_label(f"tag {k}", v)
    return out


def new_run_id(job: str, now_ns: int) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns / 1e9))
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', job)[:40]}-{stamp}-{uuid.uuid4().hex[:6]}"


class RunRegistry:
    """All state about runs on this host. Thread-safe; the daemon's tick and socket threads share it."""

    def __init__(self, host: str, state_path: Path, proc: Proc | None = None,
                 clock_ns: Callable[[], int] = time.time_ns, mono: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.state_path = state_path
        self._state = StateFile(state_path)
        self.proc = proc or Proc()
        self._clock_ns = clock_ns  # timestamps (started_ns, ended_ns): the wall clock
        self.mono = mono  # durations: a clock no wall-clock step moves (the daemon's tick clock)
        self.lock = threading.RLock()
        self._save_lock = threading.Lock()
        self.runs: dict[str, Run] = {}  # active
        self.finished: dict[str, Run] = {}  # recently ended, for run.get / run.end replies
        self._owner: dict[int, str] = {}  # pid -> run id owning its CPU this tick (the innermost run)
        # Proc.last_pid() at the last full membership refresh and environment scan: while it is unchanged no
        # process was created since, so there is nothing new to find (and the members' liveness is read per tick)
        self._refreshed_at: int | None = None
        self._scanned_at: int | None = None

    # --- membership -----------------------------------------------------------------------
    def _register(self, run: Run, pid: int) -> None:
        st = self.proc.stat(pid)
        if st is None:
            raise UsageError(f"process {pid} does not exist")
        run.roots[pid] = st.start_ticks
        self._refresh_run(run)

    def _refresh_run(self, run: Run) -> None:
        """Find the run's live processes; new ones join with all the CPU time they have."""
        live_roots = {p: s for p, s in run.roots.items() if (st := self.proc.stat(p)) is not None and st.start_ticks == s}
        run.roots = live_roots
        for pid in self.proc.descendants(live_roots):
            if pid not in run.members and (st := self.proc.stat(pid)) is not None:
                run.members[pid] = Member(st.start_ticks, st.ppid, st.cpu_ticks)  # all its CPU time counts
        if run.last_total_ticks is None:  # the baseline at registration
            run.last_total_ticks = sum(m.cpu_ticks for m in run.members.values())

    def refresh_members(self, if_new_processes: bool = False) -> None:
        """Find new processes of the active runs and who owns which pid.

        ``if_new_processes``: skip the walk when no process was created since the last one (the
        periodic refresh); a run starting or a process attaching always walks.
        """
        generation = self.proc.last_pid()  # before the walk: a process born during it triggers the next one
        with self.lock:
            if if_new_processes and generation is not None and generation == self._refreshed_at:
                return
            self._refreshed_at = generation
            for run in self.runs.values():
                self._refresh_run(run)
            self._owner = {}
            for run in sorted(self.runs.values(), key=lambda r: r.started_ns):  # later (inner) runs win
                for pid in run.members:
                    self._owner[pid] = run.run_id

    def owner(self, pid: int) -> str | None:
        return self._owner.get(pid)

    # --- socket ops -----------------------------------------------------------------------
    def start(self, job: str, *, project: str = "", phase: str = "", tags: Mapping[str, Any] | None = None,
              run_id: str | None = None, pid: int, uid: int, origin: str = "client") -> tuple[Run, bool]:
        job = check_label("job", job)
        project = check_label("project", project) if project else "default"
        phase = check_phase(phase) if phase else "development"
        clean_tags = check_tags(tags or {})
        now, now_mono = self._clock_ns(), self.mono()
        with self.lock:
            if run_id:
                check_label("run", run_id)
                run = self.runs.get(run_id)
                if run is not None:  # another rank or host process of the same launch
                    self._register(run, pid)
                    self.refresh_members()
                    return run, True
                run = self.finished.pop(run_id, None)
                if run is not None:  # a later block of a launch that had ended: its totals go on
                    run.status, run.ended_ns, run.last_total_ticks, run.members = "running", None, None, {}
                    run.ended_mono = None
                    self._register(run, pid)
                    self.runs[run_id] = run
                    self.refresh_members()
                    return run, True
            run = Run(run_id or new_run_id(job, now), job, project, phase, clean_tags, origin, uid, now,
                      started_mono=now_mono)
            self._register(run, pid)
            self.runs[run.run_id] = run
            self.refresh_members()
        self.save()
        log.info("run %s started: job %s, project %s, phase %s, pid %d (%s)", run.run_id, job, project, phase, pid, origin)
        return run, False

    def get(self, run_id: str) -> Run:
        with self.lock:
            run = self.runs.get(run_id) or self.finished.get(run_id)
        if run is None:
            raise UsageError(f"no run {run_id!r} on this host")
        return run

    def attach(self, run_id: str, pid: int) -> Run:
        with self.lock:
            run = self.runs.get(run_id)
            if run is None:
                raise UsageError(f"no active run {run_id!r}")
            self._register(run, pid)
            self.refresh_members()
        return run

    def log_values(self, run_id: str, values: Mapping[str, Any]) -> Run:
        for k, v in values.items():
            if not NAME.match(k):
                raise UsageError(f"log name {k!r}: use [A-Za-z_][A-Za-z0-9_]*")
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise UsageError(f"log value {k}={v!r} must be a finite number")
        with self.lock:
            run = self.get(run_id)
            for k, v in values.items():
                if k in WORK_UNITS:
                    run.units[k] = run.units.get(k, 0.0) + float(v)
                else:
                    run.metrics[k] = float(v)
        return run

    def set_progress(self, run_id: str, done: float, total: float) -> Run:
        if not (math.isfinite(done) and math.isfinite(total)) or done < 0 or total <= 0:
            raise UsageError(f"progress needs 0 <= done and total > 0, got done={done!r}, total={total!r}")
        with self.lock:
            run = self.get(run_id)
            run.progress = (float(done), float(total))
        return run

    def end(self, run_id: str, *, status: str = "finished", exit_code: int | None = None,
            pid: int | None = None) -> Run:
        if status not in ("finished", "failed"):
            raise UsageError(f"status must be finished or failed, got {status!r}")
        with self.lock:
            run = self.get(run_id)
            if not run.active:
                return run
            if exit_code is not None:
                run.exit_code = exit_code
            if status == "failed":
                run.failed = True
            alive = {p for p, start in run.roots.items()
                     if (st := self.proc.stat(p)) is not None and st.start_ticks == start}
            others = {p for p in alive if p != pid} if pid is not None else set()
            if others:  # other ranks of the run are still registered: it goes on without this one
                run.roots.pop(pid, None)  # type: ignore[arg-type]
                run.members.pop(pid, None)  # type: ignore[arg-type]
                return run
            self._finish(run, "failed" if status == "failed" or run.failed else "finished")
        self.save()
        return run

    def _finish(self, run: Run, status: str) -> None:
        for member in run.members.values():
            _close(member)
        run.status = status
        run.ended_ns, run.ended_mono = self._clock_ns(), self.mono()
        self.runs.pop(run.run_id, None)
        self.finished[run.run_id] = run
        while len(self.finished) > KEEP_FINISHED:
            self.finished.pop(next(iter(self.finished)))
        self._owner = {p: r for p, r in self._owner.items() if r != run.run_id}
        log.info("run %s %s after %.1f s: %.3f Wh", run.run_id, status, run.duration_s(run.ended_ns), run.energy_j / 3600)

    def end_vanished(self) -> list[Run]:
        """Runs whose processes are all gone are finished."""
        with self.lock:
            gone = [r for r in self.runs.values() if not r.members and not r.roots]
            for run in gone:
                self._finish(run, "finished")
        if gone:
            self.save()
        return gone

    # --- per tick -------------------------------------------------------------------------
    def cpu_and_rss(self) -> tuple[dict[str, float], dict[str, float]]:
        """CPU seconds used by each run since the previous call, and its resident memory now."""
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        with self.lock:
            for run in self.runs.values():
                total, memory, alive = run.banked_ticks, 0, {}
                for pid, m in run.members.items():
                    if m.fd is None:
                        m.fd = self.proc.open_stat(pid)
                    st = read_stat(pid, m.fd) if m.fd is not None else None
                    if st is not None and st.start_ticks == m.start_ticks:
                        m.ppid, m.cpu_ticks = st.ppid, st.cpu_ticks
                        alive[pid] = m
                        if self._owner.get(pid, run.run_id) == run.run_id:
                            total += st.cpu_ticks
                            memory += st.rss_bytes
                for pid, m in run.members.items():
                    if pid in alive:
                        continue
                    _close(m)
                    if m.ppid not in alive:  # reaped outside the run: keep its time
                        run.banked_ticks += m.cpu_ticks
                        total += m.cpu_ticks
                run.members = alive
                run.roots = {p: s for p, s in run.roots.items() if p in alive}
                previous = run.last_total_ticks if run.last_total_ticks is not None else total
                cpu[run.run_id] = max(total - previous, 0) / CLK_TCK
                run.last_total_ticks = total
                rss[run.run_id] = float(memory)
        return cpu, rss

    def add_energy(self, run_id: str, energy_j: float, co2_g: float, water_l: float, embodied_g: float,
                   sources: Mapping[str, float]) -> None:
        with self.lock:
            run = self.runs.get(run_id)
            if run is None:
                return
            run.energy_j += energy_j
            run.co2_g += co2_g
            run.water_l += water_l
            run.embodied_g += embodied_g
            for s, j in sources.items():
                run.sources[s] = run.sources.get(s, 0.0) + j

    # --- zero-code tagging ----------------------------------------------------------------
    def discover(self, seen: dict[int, int], self_pid: int | None = None) -> list[Run]:
        """Start or join runs for processes whose environment carries CARBOND_JOB or SLURM_JOB_ID.

        ``seen`` remembers the pids already looked at, so a scan costs one directory listing
        plus two small reads per new process (a pid reused within one scan interval is not
        looked at again). Processes already in a run (children inherit the environment) are skipped.
        """
        started: list[Run] = []
        candidates = []
        generation = self.proc.last_pid()
        if generation is not None and generation == self._scanned_at:
            return started  # no process created since the last scan
        self._scanned_at = generation
        pids = set(self.proc.pids())
        for gone in [p for p in seen if p not in pids]:
            del seen[gone]
        new = [p for p in pids if p not in seen and p != self_pid]
        if not new:
            return started
        self.refresh_members()  # children of known runs inherit the tagging environment: they are members
        for pid in new:
            st = self.proc.stat(pid)
            seen[pid] = st.start_ticks if st is not None else -1
            if st is not None:
                candidates.append(st)
        for st in sorted(candidates, key=lambda s: s.start_ticks):  # parents before their children
            if self.owner(st.pid) is not None:
                continue
            env = self.proc.environ(st.pid)
            if not env or not ("CARBOND_JOB" in env or "SLURM_JOB_ID" in env):
                continue
            job = env.get("CARBOND_JOB") or env.get("SLURM_JOB_NAME") or f"slurm-{env.get('SLURM_JOB_ID')}"
            torch_id = env.get("TORCHELASTIC_RUN_ID")
            run_id = env.get("CARBOND_RUN") or (torch_id if torch_id not in (None, "", "none") else None) or (
                env["SLURM_JOB_ID"] + (f".{env['SLURM_STEP_ID']}" if env.get("SLURM_STEP_ID") else "")
                if env.get("SLURM_JOB_ID") else None)
            try:
                run, joined = self.start(job, project=env.get("CARBOND_PROJECT", ""), phase=env.get("CARBOND_PHASE", ""),
                                         run_id=run_id, pid=st.pid, uid=self.proc.uid(st.pid) or 0, origin="env")
            except UsageError as exc:
                log.warning("process %d: ignoring its tagging environment: %s", st.pid, exc)
                continue
            if not joined:
                started.append(run)
        return started

    # --- persistence ----------------------------------------------------------------------
    def save(self) -> None:
        """Write the active runs to ``runs.json`` (the older of its two slots); concurrent callers take turns."""
        with self._save_lock:  # one writer at a time, in the order their snapshots were taken
            with self.lock:
                now_mono = self.mono()
                doc = {"version": 1, "host": self.host, "saved_ns": self._clock_ns(),
                       "runs": [_to_json(r, now_mono) for r in self.runs.values()]}
            try:
                self._state.save(doc)
            except OSError as exc:
                log.warning("could not save the run registry to %s: %s", self.state_path, exc)

    def load(self) -> list[Run]:
        """Restore the active runs of an earlier daemon; those whose processes are gone end now."""
        try:
            doc = self._state.load()
        except StateFileError as exc:
            log.warning("run registry %s is unreadable (%s); starting without it", self.state_path, exc)
            return []
        if doc is None:
            return []
        restored = []
        now_ns, now_mono = self._clock_ns(), self.mono()
        # the monotonic clock of an earlier process (or boot) is not this one's: a run's duration goes on from the
        # elapsed time saved with it, plus the wall-clock time since the save (the gap no daemon measured)
        saved_ns = doc.get("saved_ns")
        with self.lock:
            for item in doc.get("runs", []):
                run = _from_json(item)
                elapsed = item.get("elapsed_s")
                if isinstance(elapsed, int | float) and isinstance(saved_ns, int):
                    run.started_mono = now_mono - float(elapsed) - max(now_ns - saved_ns, 0) / 1e9
                else:  # a registry saved by an older carbond: wall-clock time since the start
                    run.started_mono = now_mono - max(now_ns - run.started_ns, 0) / 1e9
                run.last_total_ticks = None  # energy while no daemon ran was not measured: new baseline
                run.banked_ticks = 0
                run.members = {}
                self._refresh_run(run)
                self.runs[run.run_id] = run
                restored.append(run)
            self.refresh_members()
        self.end_vanished()
        return restored


def _close(member: Member) -> None:
    if member.fd is not None:
        try:
            os.close(member.fd)
        except OSError:
            pass
        member.fd = None


_NOT_SAVED = ("members", "started_mono", "ended_mono")  # monotonic readings mean nothing to another process
_SAVED_FIELDS = tuple(f for f in fields(Run) if f.name not in _NOT_SAVED)


def _to_json(run: Run, now_mono: float) -> dict[str, Any]:
    """A snapshot of the run, safe to encode outside the lock: its dicts copied (a shallow copy suffices, their
    values are numbers and strings; ``dataclasses.asdict`` deep-copies and cost half of a save)."""
    doc = {f.name: getattr(run, f.name) for f in _SAVED_FIELDS}
    for key, value in doc.items():
        if isinstance(value, dict):
            doc[key] = dict(value)
    doc["roots"] = {str(k): v for k, v in run.roots.items()}
    doc["members"] = {}
    if run.started_mono is not None:
        doc["elapsed_s"] = max(now_mono - run.started_mono, 0.0)
    return doc


def _from_json(doc: dict[str, Any]) -> Run:
    doc = {k: v for k, v in doc.items() if k not in ("elapsed_s", *_NOT_SAVED[1:])}
    doc["roots"] = {int(k): int(v) for k, v in doc.get("roots", {}).items()}
    doc["members"] = {}
    progress = doc.get("progress")
    doc["progress"] = tuple(progress) if progress else None
    return Run(**doc)
