"""``carbond.track``: mark a block or a function as a run, log its work, get its footprint back.

    with carbond.track("bert-ft", project="sentiment", phase="training") as run:
        for batch in loader:
            ...
            run.log(samples=len(batch))      # work units are summed
        run.log(accuracy=0.912)              # anything else is a metric: last value kept
    print(run.result.energy_kwh, run.result.co2_kg)

With a daemon, entering is one ``run.start`` round trip on the Unix socket and leaving one
exchange (the last logs, pipelined with ``run.end``). ``log`` only adds to a local buffer;
the buffer goes out from the caller's thread at most every :data:`FLUSH_EVERY_S` seconds,
and at exit: no thread and no socket work per step. Without a daemon the run is measured
in-process (:mod:`carbond.inprocess`) and written to the embedded store.

Never raises into user code because of carbond: a carbond failure gives one
:class:`CarbondWarning` per process and the run goes on, best effort. Fork-safe: in a
forked child (DataLoader workers) the handle forwards the child's own logs under the same
run id, but leaving the block there neither ends the run nor re-sends the parent's logs.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import re
import socket as _socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

from carbond import ipc
from carbond.errors import CarbondError, DaemonUnavailableError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

FLUSH_EVERY_S = 1.0  # logs reach the daemon at most this often (and at exit)
TIMEOUT_S = 2.0  # one socket exchange
RETRY_S = 5.0  # how long the exit keeps retrying while the socket is gone (a daemon restart)
WORK_UNITS = frozenset({
    "samples", "tokens", "requests", "items", "images", "examples", "sequences", "batches", "steps", "epochs",
    "queries", "inferences", "predictions", "frames", "documents", "words", "characters", "pages", "files", "bytes",
})
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PHASE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
LABEL = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
RESERVED_TAGS = frozenset({"host", "project", "job", "phase", "run", "status"})
MAX_TAGS = 16
MAX_VALUES_PER_MESSAGE = 256
# Set by an ancestor that measures this run in-process (``carbond track`` without a daemon):
# a nested ``track()`` of the same run then only adds its units and metrics, no energy.
INPROCESS_ENV = "CARBOND_INPROCESS_RUN"

_sleep = time.sleep  # patched by tests


class CarbondWarning(RuntimeWarning):
    """carbond could not do something; the user's code carries on."""


_warned = False


def warn_once(message: str) -> None:
    """The first carbond problem of this process is a warning; the rest go to the debug log."""
    global _warned
    if _warned:
        log.debug("%s", message)
        return
    _warned = True
    warnings.warn(f"carbond: {message} (further carbond warnings in this process are only logged at debug level)",
                  CarbondWarning, stacklevel=3)


# --- the result ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """What a run used. ``measured_by``: ``daemon``, ``in-process`` or ``none`` (nothing could measure it)."""

    run_id: str | None
    job: str
    status: str  # running (other processes of the run go on) | finished | failed
    duration_s: float
    energy_kwh: float
    co2_kg: float
    water_l: float
    embodied_kg: float
    measured_by: str
    project: str | None = None
    phase: str | None = None
    sources: dict[str, float] = field(default_factory=dict)  # joules by source: counter, power, model, simulated
    units: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()
    projected_energy_kwh: float | None = None
    projected_co2_kg: float | None = None
    exit_code: int | None = None

    @property
    def energy_j(self) -> float:
        return self.energy_kwh * 3.6e6

    @property
    def co2_g(self) -> float:
        return self.co2_kg * 1000.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_daemon(cls, doc: Mapping[str, Any], *, fallback_job: str = "") -> RunResult:
        """From a run result of the socket protocol (``run.end``, ``run.get``, ``runs``)."""

        def num(key: str) -> float:
            value = doc.get(key)
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0

        def opt(key: str, scale: float) -> float | None:
            value = doc.get(key)
            return float(value) * scale if isinstance(value, int | float) and not isinstance(value, bool) else None

        def floats(key: str) -> dict[str, float]:
            value = doc.get(key)
            return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float)} if isinstance(value, dict) else {}

        exit_code = doc.get("exit_code")
        return cls(
            run_id=doc.get("run"), job=str(doc.get("job") or fallback_job), status=str(doc.get("status") or "finished"),
            duration_s=num("duration_s"), energy_kwh=num("energy_j") / 3.6e6, co2_kg=num("co2_g") / 1000.0,
            water_l=num("water_l"), embodied_kg=num("embodied_g") / 1000.0, measured_by="daemon",
            project=doc.get("project"), phase=doc.get("phase"), sources=floats("sources"), units=floats("units"),
            metrics=floats("metrics"), hosts=tuple(str(h) for h in doc.get("hosts") or ()),
            projected_energy_kwh=opt("projected_energy_j", 1 / 3.6e6), projected_co2_kg=opt("projected_co2_g", 1e-3),
            exit_code=exit_code if isinstance(exit_code, int) else None,
        )


# --- discovery ----------------------------------------------------------------------------------------


def run_id_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The run id a launcher gave this process: CARBOND_RUN > TORCHELASTIC_RUN_ID > SLURM_JOB_ID[.SLURM_STEP_ID]."""
    env = os.environ if env is None else env
    for key in ("CARBOND_RUN", "TORCHELASTIC_RUN_ID"):
        # torchrun without --rdzv-id sets the literal "none": not an id that tells launches apart
        if env.get(key) and env[key] != "none":
            return env[key]
    if env.get("SLURM_JOB_ID"):
        step = env.get("SLURM_STEP_ID")
        return env["SLURM_JOB_ID"] + (f".{step}" if step else "")
    return None


_socket_cache: dict[tuple[str | None, ...], str] = {}


def socket_path(explicit: str | None = None) -> str:
    """``explicit`` > ``CARBOND_SOCKET`` > the config file's ``[daemon] socket`` > the default path."""
    if explicit:
        return explicit
    key = tuple(os.environ.get(k) for k in ("CARBOND_SOCKET", "CARBOND_DAEMON_SOCKET", "CARBOND_CONFIG",
                                             "RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"))
    path = _socket_cache.get(key)
    if path is None:
        from carbond.config import default_socket_path, load_settings

        try:
            path = load_settings().settings.daemon.socket
        except Exception as exc:  # a broken config file must not stop the user's code
            warn_once(f"config not usable ({exc}); using the default socket path")
            path = default_socket_path()
        _socket_cache[key] = path
    return path


# --- the socket -----------------------------------------------------------------------------------------


class SocketGoneError(DaemonUnavailableError):
    """The socket is not there or refuses connections: nothing was sent (safe to retry)."""


class DaemonRefusedError(CarbondError):
    """The daemon answered with an error."""


def exchange(path: str, messages: list[tuple[str, dict[str, Any]]], timeout_s: float = TIMEOUT_S) -> list[Any]:
    """Send several requests on one connection (pipelined) and return their results in order.

    Raises :class:`SocketGoneError` when nothing could be sent, :class:`DaemonRefusedError` (after reading every
    reply) when the daemon refused one of them, ``OSError`` / ``ValueError`` otherwise.
    """
    data = b"".join(ipc.encode({"v": ipc.PROTOCOL_VERSION, "op": op, **fields}) for op, fields in messages)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
            raise SocketGoneError(f"no carbond daemon on {path}: {exc.strerror}") from exc
        sock.sendall(data)
        replies = []
        with sock.makefile("rb") as fh:
            for _ in messages:
                line = ipc.read_line(fh, limit=ipc.MAX_REPLY_BYTES)
                if line is None:
                    raise OSError(f"carbond daemon on {path} closed the connection without a reply")
                reply = json.loads(line)
                if not isinstance(reply, dict):
                    raise ValueError(f"carbond daemon on {path} sent a reply that is not an object")
                replies.append(reply)
    finally:
        sock.close()
    errors = [f"{op}: {r.get('error')}" for (op, _), r in zip(messages, replies, strict=True) if not r.get("ok")]
    if errors:
        raise DaemonRefusedError("; ".join(errors))
    return [r.get("result") for r in replies]


# --- the handle -----------------------------------------------------------------------------------------

_live: weakref.WeakSet[Run] = weakref.WeakSet()  # handles whose run is active in this process
_joined: dict[str, int] = {}  # run id -> active handles of this process in it (nesting, shared env ids)
_joined_lock = threading.Lock()


def _clean_label(what: str, value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    if LABEL.match(text):
        return text
    warn_once(f"{what} {text[:40]!r} is not 1–128 printable characters; left out")
    return None


def _clean_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not NAME.match(key) or key in RESERVED_TAGS or len(out) >= MAX_TAGS:
            warn_once(f"tag {key!r} left out: tag names are [A-Za-z_][A-Za-z0-9_]*, at most {MAX_TAGS}, "
                      f"not {', '.join(sorted(RESERVED_TAGS))}")
            continue
        text = _clean_label(f"tag {key}", value)
        if text is not None:
            out[key] = text
    return out


class Run:
    """One run: a context manager, a decorator (each call a new run), and the handle to log to.

    ``run_id`` is known after entering; ``result`` (a :class:`RunResult`) after leaving.
    """

    def __init__(self, job: str, project: str | None = None, phase: str | None = None,
                 tags: Mapping[str, Any] | None = None, *, run: str | None = None, socket: str | None = None,
                 timeout_s: float | None = None) -> None:
        self.job = _clean_label("job", job) or "unnamed"
        self.project = _clean_label("project", project)
        phase_text = None if phase is None else str(phase).lower()
        if phase_text is not None and not PHASE.match(phase_text):
            warn_once(f"phase {phase!r} left out: use development, training, validation, deployment, inference "
                      "or a lower-case name")
            phase_text = None
        self.phase = phase_text
        self.tags = _clean_tags(tags)
        self._spec = (job, project, phase, tags, run, socket, timeout_s)
        self._explicit_run = _clean_label("run", run)
        self._socket = socket
        self._timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.run_id: str | None = None
        self.result: RunResult | None = None
        self.mode = "off"  # daemon | in-process | units-only | off
        self._owner_pid = 0
        self._depth = 0
        self._units: dict[str, float] = {}
        self._metrics: dict[str, float] = {}
        self._progress: tuple[float, float] | None = None
        self._pending_units: dict[str, float] = {}
        self._pending_metrics: dict[str, float] = {}
        self._pending_progress: tuple[float, float] | None = None
        self._sent_at = 0.0
        self._sending = False
        self._t0 = time.monotonic()
        self._meter: Any = None
        self._path = ""

    # --- lifecycle --------------------------------------------------------------------------------------
    def __enter__(self) -> Run:
        if self._depth:
            self._depth += 1  # the same handle entered again: one run
            return self
        if self.result is not None:
            self._reset()  # a handle used again starts a new run
        self._depth = 1
        try:
            self.start()
        except Exception as exc:
            warn_once(f"could not start run {self.job!r}: {exc!r}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._depth > 1:
            self._depth -= 1
            return
        self._depth = 0
        failed = exc_type is not None and not (isinstance(exc, SystemExit) and exc.code in (0, None))
        try:
            self.end("failed" if failed else "finished")
        except Exception as error:  # never raise into the user's code, never mask their exception
            warn_once(f"could not end run {self.run_id or self.job!r}: {error!r}")

    def __call__(self, fn: F) -> F:
        """Decorate ``fn``: each call is a run of its own."""
        import inspect

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def _fresh(self) -> Run:
        job, project, phase, tags, run, socket, timeout_s = self._spec
        return Run(job, project, phase, tags, run=run, socket=socket, timeout_s=timeout_s)

    def start(self) -> str | None:
        """Register the run (daemon) or start measuring it here (no daemon). Returns the run id."""
        self._owner_pid = os.getpid()
        self._t0 = time.monotonic()
        run_id = self._explicit_run or run_id_from_env()
        if run_id and os.environ.get(INPROCESS_ENV) == run_id:
            self.run_id, self.mode = run_id, "units-only"  # an ancestor measures this run's energy
            return run_id
        self._path = socket_path(self._socket)
        fields: dict[str, Any] = {"job": self.job}
        for key, value in (("project", self.project), ("phase", self.phase), ("run", run_id)):
            if value is not None:
                fields[key] = value
        if self.tags:
            fields["tags"] = self.tags
        try:
            (reply,) = exchange(self._path, [("run.start", fields)], self._timeout_s)
            self.run_id, self.mode = str(reply["run"]), "daemon"
            with _joined_lock:
                _joined[self.run_id] = _joined.get(self.run_id, 0) + 1
        except Exception as exc:
            if isinstance(exc, SocketGoneError):
                log.debug("no carbond daemon on %s; measuring run of %r in-process", self._path, self.job)
            else:
                warn_once(f"the daemon on {self._path} did not start the run ({exc}); measuring in-process")
            self._start_inprocess(run_id)
        self._sent_at = time.monotonic()
        _live.add(self)
        return self.run_id

    def _start_inprocess(self, run_id: str | None) -> None:
        from carbond.inprocess import InProcessMeter, new_run_id

        self.run_id = run_id or new_run_id(self.job)
        self.mode = "in-process"
        self._meter = InProcessMeter(job=self.job, project=self.project, phase=self.phase, tags=self.tags,
                                     run_id=self.run_id)
        self._meter.start()

    def end(self, status: str = "finished", exit_code: int | None = None) -> RunResult | None:
        """End this process's part of the run; returns (and keeps in ``result``) what it used.

        In a forked child this only sends the child's own pending logs: the run is the parent's.
        """
        if self.mode == "off" and self._owner_pid == 0:
            return None
        if os.getpid() != self._owner_pid:
            self.flush()
            return None
        _live.discard(self)
        duration_s = time.monotonic() - self._t0
        with self._lock:
            units, metrics, progress = dict(self._units), dict(self._metrics), self._progress
        result: RunResult | None = None
        try:
            if self.mode == "daemon":
                result = self._end_daemon(status, exit_code)
            elif self.mode == "in-process":
                result = self._meter.stop(status, units, metrics, progress, exit_code=exit_code)
            elif self.mode == "units-only":
                from carbond.inprocess import write_units_only

                result = write_units_only(self.job, self.project, self.phase, self.tags, self.run_id or "", status,
                                          duration_s, units, metrics, exit_code=exit_code)
        except Exception as exc:
            warn_once(f"could not measure run {self.run_id or self.job!r} to its end: {exc!r}")
        if result is None:
            result = RunResult(self.run_id, self.job, status, duration_s, 0.0, 0.0, 0.0, 0.0, "none", self.project,
                               self.phase, units=units, metrics=metrics, exit_code=exit_code)
        self.result = result
        self.mode = "off"
        return result

    def _end_daemon(self, status: str, exit_code: int | None) -> RunResult | None:
        assert self.run_id is not None
        with _joined_lock:
            left = _joined.get(self.run_id, 1) - 1
            if left > 0:
                _joined[self.run_id] = left
            else:
                _joined.pop(self.run_id, None)
        messages = self._take_pending()
        if left > 0:  # another handle of this process still runs it: report, do not end
            messages.append(("run.get", {"run": self.run_id}))
        else:
            end: dict[str, Any] = {"run": self.run_id, "status": status, "pid": os.getpid()}
            if exit_code is not None:
                end["exit_code"] = int(exit_code)
            messages.append(("run.end", end))
        deadline = time.monotonic() + RETRY_S
        delay = 0.02
        while True:
            try:
                replies = exchange(self._path, messages, self._timeout_s)
                break
            except SocketGoneError:
                if time.monotonic() + delay > deadline:
                    raise
                _sleep(delay)  # the daemon is restarting: its run registry survives, so try again
                delay = min(delay * 2, 0.25)
        doc = replies[-1]
        result = RunResult.from_daemon(doc, fallback_job=self.job) if isinstance(doc, dict) else None
        if result is not None and exit_code is not None and result.exit_code is None:
            result = replace(result, exit_code=exit_code)
        return result

    def attach(self, pid: int) -> None:
        """Add a process (e.g. a command just started) to the run at once, before the daemon's
        next membership pass would find it; best effort, never raises."""
        if self.mode != "daemon" or self.run_id is None:
            return
        try:
            exchange(self._path, [("run.attach", {"run": self.run_id, "pid": int(pid)})], self._timeout_s)
        except Exception as exc:  # the daemon finds the process on its next pass anyway
            log.debug("attach %d to %s: %r", pid, self.run_id, exc)

    # --- logging ----------------------------------------------------------------------------------------
    def log(self, **values: Any) -> None:
        """Add work units (summed: samples, tokens, …) and metrics (last value kept). Costs no I/O
        except at most once a second, when the buffered values go to the daemon."""
        try:
            due = False
            with self._lock:
                for key, value in values.items():
                    if key not in _NAMES_OK and not _check_name(key):
                        continue
                    try:
                        number = float(value)
                    except (TypeError, ValueError):
                        warn_once(f"log value {key}={value!r} is not a number; left out")
                        continue
                    if not math.isfinite(number):
                        warn_once(f"log value {key}={value!r} is not finite; left out")
                        continue
                    if key in WORK_UNITS:
                        self._units[key] = self._units.get(key, 0.0) + number
                        self._pending_units[key] = self._pending_units.get(key, 0.0) + number
                    else:
                        self._metrics[key] = number
                        self._pending_metrics[key] = number
                due = self.mode == "daemon" and not self._sending and time.monotonic() - self._sent_at >= FLUSH_EVERY_S
            if due:
                self.flush()
        except Exception as exc:
            warn_once(f"log failed: {exc!r}")

    def progress(self, done: float, total: float) -> None:
        """How far the run is (for the projected energy and co2 at completion)."""
        try:
            pair = (float(done), float(total))
            if not (math.isfinite(pair[0]) and math.isfinite(pair[1])) or pair[0] < 0 or pair[1] <= 0:
                warn_once(f"progress needs 0 <= done and total > 0, got done={done!r}, total={total!r}; left out")
                return
            with self._lock:
                self._progress = self._pending_progress = pair
                due = self.mode == "daemon" and not self._sending and time.monotonic() - self._sent_at >= FLUSH_EVERY_S
            if due:
                self.flush()
        except Exception as exc:
            warn_once(f"progress failed: {exc!r}")

    def _take_pending(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            values = {**self._pending_units, **self._pending_metrics}
            progress = self._pending_progress
            self._pending_units, self._pending_metrics, self._pending_progress = {}, {}, None
        messages: list[tuple[str, dict[str, Any]]] = []
        items = list(values.items())
        for i in range(0, len(items), MAX_VALUES_PER_MESSAGE):
            messages.append(("run.log", {"run": self.run_id, "values": dict(items[i:i + MAX_VALUES_PER_MESSAGE])}))
        if progress is not None:
            messages.append(("run.progress", {"run": self.run_id, "done": progress[0], "total": progress[1]}))
        return messages

    def _put_back(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """Nothing was sent: the values wait for the next try (newer metrics win)."""
        with self._lock:
            for op, fields in messages:
                if op == "run.log":
                    for key, value in fields["values"].items():
                        if key in WORK_UNITS:
                            self._pending_units[key] = self._pending_units.get(key, 0.0) + value
                        else:
                            self._pending_metrics.setdefault(key, value)
                elif op == "run.progress" and self._pending_progress is None:
                    self._pending_progress = (fields["done"], fields["total"])

    def flush(self) -> None:
        """Send the buffered logs now (daemon mode; the exit does it anyway)."""
        if self.mode != "daemon":
            return
        with self._lock:
            if self._sending:
                return
            self._sending = True
        try:
            messages = self._take_pending()
            if messages:
                try:
                    exchange(self._path, messages, self._timeout_s)
                except SocketGoneError:
                    self._put_back(messages)  # e.g. the daemon restarts: try again in a second
                except Exception as exc:
                    warn_once(f"sending logs of run {self.run_id} failed: {exc!r}")
        finally:
            self._sent_at = time.monotonic()
            self._sending = False

    def __repr__(self) -> str:
        return f"<carbond run {self.run_id or '?'} job={self.job!r} mode={self.mode}>"


_NAMES_OK: set[str] = set()


def _check_name(key: str) -> bool:
    if NAME.match(key):
        _NAMES_OK.add(key)
        return True
    warn_once(f"log name {key!r} left out: names are [A-Za-z_][A-Za-z0-9_]{{0,63}}")
    return False


def track(job: str, project: str | None = None, phase: str | None = None, tags: Mapping[str, Any] | None = None, *,
          run: str | None = None, socket: str | None = None, timeout_s: float | None = None) -> Run:
    """A run of ``job``: use it as ``with carbond.track(...) as run:`` or as ``@carbond.track(...)``.

    ``run`` joins a run id shared by several processes (default: ``CARBOND_RUN``,
    ``TORCHELASTIC_RUN_ID``, ``SLURM_JOB_ID[.SLURM_STEP_ID]``, else the daemon names it);
    ``socket`` overrides the daemon socket; ``timeout_s`` bounds each socket exchange.
    """
    return Run(job, project, phase, tags, run=run, socket=socket, timeout_s=timeout_s)


# --- fork and exit --------------------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    """A forked child starts with empty buffers: the parent's pending logs are the parent's to send."""
    global _joined_lock
    _joined_lock = threading.Lock()
    _joined.clear()
    for handle in list(_live):
        handle._lock = threading.Lock()
        handle._sending = False
        handle._pending_units, handle._pending_metrics, handle._pending_progress = {}, {}, None
        handle._units, handle._metrics = {}, {}
        handle._meter = None


def _at_exit() -> None:
    """A run entered but never left (no ``with``): end it as finished rather than lose it."""
    for handle in list(_live):
        if handle._owner_pid == os.getpid() and handle.mode != "off":
            try:
                handle.end("finished")
            except Exception:
                pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
