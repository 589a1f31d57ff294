"""Wiring: sensors → sampler → impacts → points → store, on an APScheduler interval job.

The daemon never stops because one sensor, provider or write failed: the failure is
logged (rate-limited), counted in the ``carbond`` self-metrics, and retried. Points
that could not be written stay buffered and go out with the next successful write.
``run`` stops cleanly on SIGTERM/SIGINT or after ``duration_s``: one last tick measures
the interval up to the stop, and every buffered point is flushed.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from carbond import __version__, ipc
from carbond.config import Settings
from carbond.errors import CarbondError
from carbond.impacts import Embodied, Factors
from carbond.intensity import IntensityProvider, StaticProvider, load_table
from carbond.intensity.table import Intensity
from carbond.logutil import Throttled
from carbond.sampler import DeviceEnergy, Sampler, TickContext, tick_points
from carbond.sensors.base import Sensor
from carbond.store.base import Point, Store, make_point

log = logging.getLogger(__name__)

MAX_BUFFERED_POINTS = 1_000_000  # memory bound while a store is failing
SELF_METRICS_EVERY_S = 10.0  # the ``carbond`` measurement: the daemon watching itself


def intensity_provider(settings: Settings) -> IntensityProvider:
    row = load_table().lookup(settings.region.zone)
    override = settings.region.intensity_g_per_kwh
    if override > 0:
        row = Intensity(row.zone, row.name, override, "configured", "region.intensity_g_per_kwh", 0, "config")
    return StaticProvider(row)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        sensors: list[Sensor],
        store: Store,
        provider: IntensityProvider | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.settings = settings
        self.sensors = sensors
        self.store = store
        self.provider = provider or intensity_provider(settings)
        self._clock = clock
        self._wall_ns = wall_ns
        self._sampler = Sampler()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._warn = Throttled(log)
        self._buffer: list[Point] = []
        self._last_mono: float | None = None
        self._last_self_mono = float("-inf")
        self._max_lag_s = 0.0
        self._started_mono = clock()
        self._embodied = Embodied(
            host_kg=settings.impacts.host_embodied_kg,
            host_lifetime_years=settings.impacts.host_lifetime_years,
            gpu_kg=settings.impacts.gpu_embodied_kg,
            gpu_lifetime_years=settings.impacts.gpu_lifetime_years,
        )
        self.stats = {"ticks": 0, "write_errors": 0, "sensor_errors": 0, "dropped_points": 0, "points_written": 0}
        self.totals = {"energy_j": 0.0, "co2_g": 0.0, "water_l": 0.0, "embodied_g": 0.0}
        self._last: dict[str, Any] = {}
        self._scheduler: Any = None
        self._server: Any = None

    # --- one tick -------------------------------------------------------------------------
    def _read_all(self) -> list:
        readings = []
        for sensor in self.sensors:
            try:
                readings.extend(sensor.read())
            except Exception as exc:  # one failing sensor never stops the others
                self.stats["sensor_errors"] += 1
                self._warn.warning(f"sensor:{type(sensor).__name__}", "%s failed: %s", type(sensor).__name__, exc)
        return readings

    def _factors(self, when_ns: int) -> Factors:
        from datetime import UTC, datetime

        i = self.provider.intensity_at(datetime.fromtimestamp(when_ns / 1e9, tz=UTC))
        imp = self.settings.impacts
        return Factors(i.intensity_g_per_kwh, imp.pue, imp.wue_site_l_per_kwh, imp.wue_source_l_per_kwh,
                       zone=i.zone, intensity_source=i.provider, basis=i.basis)

    def tick(self, final: bool = False) -> list[Point]:
        """Read, measure, and write one interval. Returns the points it produced.

        Self-metrics go out on the first tick, every SELF_METRICS_EVERY_S, and on the
        ``final`` tick at stop; ``tick_lag_s`` is the worst lag since the previous one.
        """
        with self._lock:
            started = time.process_time()
            readings = self._read_all()
            now_mono = self._clock()
            now_ns = self._wall_ns()
            devices = self._sampler.step(readings)
            points: list[Point] = []
            if self._last_mono is not None and devices:
                interval_s = now_mono - self._last_mono
                ctx = TickContext(self.settings.daemon.host, self._factors(now_ns), self._embodied,
                                  n_gpus=sum(1 for d in devices if d.kind == "gpu"))
                points = tick_points(devices, interval_s, now_ns, ctx)
                self._account(devices, points, interval_s, ctx)
            if self._last_mono is not None:
                self._max_lag_s = max(self._max_lag_s, now_mono - self._last_mono - self.settings.daemon.interval_s)
            self._last_mono = now_mono
            self.stats["ticks"] += 1
            self._buffer.extend(points)
            if final or now_mono - self._last_self_mono >= SELF_METRICS_EVERY_S:
                self._buffer.append(self._self_point(now_ns, self._max_lag_s))
                self._last_self_mono, self._max_lag_s = now_mono, 0.0
            self._flush_locked()
            self._last["tick_cpu_s"] = time.process_time() - started
            return points

    def _account(self, devices: list[DeviceEnergy], points: list[Point], interval_s: float, ctx: TickContext) -> None:
        host = points[-1].fields
        for key in self.totals:
            self.totals[key] += host.get(key, 0.0)
        self._last = {
            "time_ns": points[-1].time_ns,
            "interval_s": interval_s,
            "power_w": host["power_w"],
            "intensity_g_per_kwh": ctx.factors.intensity_g_per_kwh,
            "intensity_source": ctx.factors.intensity_source,
            "basis": ctx.factors.basis,
            "zone": ctx.factors.zone,
            "pue": ctx.factors.pue,
            "co2_g_per_h": host["co2_g"] / interval_s * 3600.0,
            "devices": [
                {"device": d.device, "kind": d.kind, "model": d.model, "source": d.source,
                 "power_w": d.power_w, "utilization_pct": d.utilization_pct}
                for d in devices
            ],
        }

    def _self_point(self, now_ns: int, lag_s: float) -> Point:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return make_point(
            "carbond",
            {"host": self.settings.daemon.host},
            {
                "spool_points": float(len(self._buffer)),
                "dropped_points": float(self.stats["dropped_points"]),
                "dead_letter_points": 0.0,
                "write_errors": float(self.stats["write_errors"]),
                "tick_lag_s": lag_s,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "rss_bytes": float(_rss_bytes()),
            },
            now_ns,
        )

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        try:
            self.store.write(self._buffer)
        except CarbondError as exc:
            self.stats["write_errors"] += 1
            self._warn.warning("store", "writing %d points to %s failed (kept, will retry): %s",
                               len(self._buffer), self.store.url, exc)
            excess = len(self._buffer) - MAX_BUFFERED_POINTS
            if excess > 0:
                del self._buffer[:excess]
                self.stats["dropped_points"] += excess
                log.error("buffer full: dropped the %d oldest points (%d dropped so far)", excess,
                          self.stats["dropped_points"])
            return
        self.stats["points_written"] += len(self._buffer)
        self._buffer.clear()

    # --- socket ops -----------------------------------------------------------------------
    def status(self, _args: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "host": self.settings.daemon.host,
            "store": self.store.url,
            "interval_s": self.settings.daemon.interval_s,
            "uptime_s": self._clock() - self._started_mono,
            "last_tick": self._last,
            "totals": dict(self.totals),
            "stats": dict(self.stats, buffered_points=len(self._buffer)),
            "runs": [],
        }

    def device_list(self, _args: dict[str, Any] | None = None) -> list[dict[str, str]]:
        return [vars(d) for s in self.sensors for d in s.devices()]

    def ops(self) -> dict[str, ipc.Op]:
        return {
            "ping": ipc.Op({}, lambda a: {"version": __version__}),
            "status": ipc.Op({}, self.status),
            "devices": ipc.Op({}, self.device_list),
        }

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        from apscheduler.executors.debug import DebugExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        from carbond.server import SocketServer

        self._server = SocketServer(self.settings.daemon.socket, self.ops())
        self.tick()  # the baseline reading of every device
        # The tick runs on the scheduler's own thread (DebugExecutor runs a job in place):
        # a thread-pool hand-off would cost a second thread wake-up every tick.
        self._scheduler = BackgroundScheduler(timezone="UTC", executors={"default": DebugExecutor()})
        self._scheduler.add_job(self._safe_tick, IntervalTrigger(seconds=self.settings.daemon.interval_s),
                                id="tick", max_instances=1, coalesce=True, misfire_grace_time=None)
        self._scheduler.start()
        log.info("carbond %s measuring %d devices every %gs into %s; socket %s", __version__,
                 sum(len(s.devices()) for s in self.sensors), self.settings.daemon.interval_s, self.store.url,
                 self.settings.daemon.socket)

    def _safe_tick(self, final: bool = False) -> None:
        try:
            self.tick(final)
        except Exception:  # the scheduler must keep running whatever a tick does
            log.exception("tick failed")

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def run(self, duration_s: float | None = None) -> None:
        """Start, wait for a signal or the duration, then stop cleanly."""

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self._stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self._stop.wait(timeout=duration_s)
        finally:
            self.stop()
            for s, h in previous.items():
                signal.signal(s, h)

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self._server is not None:
            self._server.close()
            self._server = None
        self._safe_tick(final=True)  # measure up to the stop
        with self._lock:
            for attempt in range(3):
                if not self._buffer:
                    break
                self._flush_locked()
                if self._buffer:
                    time.sleep(0.5 * (attempt + 1))
            if self._buffer:
                log.error("stopping with %d points that could not be written to %s", len(self._buffer), self.store.url)
        for sensor in self.sensors:
            try:
                sensor.close()
            except Exception as exc:  # closing must not hide the flush
                log.debug("closing %s: %s", type(sensor).__name__, exc)
        self.store.close()
        log.info("stopped after %d ticks; %d points written", self.stats["ticks"], self.stats["points_written"])


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
